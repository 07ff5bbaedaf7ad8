"""Judging versions: the offline evaluation gate (policy, evidence, verdict, reports)."""
