"""The benchmarks' figures as plain-text tables for the terminal (bench/readme.py writes the
README's Markdown from the same analysis)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.analysis import Goal


def medians_table(medians: Iterable[Mapping[str, Any]], servers: Sequence[str]) -> str:
    """req/s, p50, p99, CPU per request and core share per body, concurrency and server."""
    by_key = {(m["server"], m["concurrency"], m["rows"]): m for m in medians}
    keys = sorted({(rows, c) for _, c, rows in by_key})
    width = max(len(s) for s in servers)
    lines = [
        f"{'body':>7s} {'c':>3s}  {'server':<{width}s}  {'req/s':>8s} {'p50 ms':>8s} "
        f"{'p99 ms':>8s} {'cpu us/req':>10s} {'core':>5s}"
    ]
    for rows, c in keys:
        lines.append("")
        for s in servers:
            m = by_key.get((s, c, rows))
            if m:
                lines.append(
                    f"{rows:>3d}-row {c:>3d}  {s:<{width}s}  {m['rps']:8.0f} {m['p50_ms']:8.2f} "
                    f"{m['p99_ms']:8.2f} {m['cpu_us_per_request']:10.0f} "
                    f"{m['server_core_share']:5.0%}"
                )
    return "\n".join(lines)


def ratio_table(ratio_rows: Iterable[Mapping[str, Any]]) -> str:
    """modelyard's medians over each reference's."""
    lines = [
        f"{'':<24s} {'vs':<22s} {'body':>7s} {'c':>3s}  {'req/s':>7s} {'p50':>7s} {'p99':>7s} "
        f"{'cpu/req':>7s}"
    ]
    for r in sorted(
        ratio_rows, key=lambda r: (r["server"], r["reference"], r["rows"], r["concurrency"])
    ):
        lines.append(
            f"{r['server']:<24s} {r['reference']:<22s} {r['rows']:>3d}-row {r['concurrency']:>3d}"
            f"  {r['rps']:6.2f}x {r['p50']:6.2f}x {r['p99']:6.2f}x {r['cpu_per_request']:6.2f}x"
        )
    return "\n".join(lines)


def ratio_goal_lines(verdicts: Iterable[Mapping[str, Any]]) -> str:
    """PASS or FAIL per throughput goal, server, body and concurrency."""
    lines = []
    summary: Counter[bool] = Counter()
    for v in verdicts:
        where = f"{v['rows']}-row c={v['concurrency']}" if v["rows"] else ""
        lines.append(
            f"  {'PASS' if v['met'] else 'FAIL'}  {v['server']:<24s} {where:<13s} "
            f"{v['goal']}: {v['measured']:g}"
        )
        summary[v["met"]] += 1
    lines.append(f"  {summary[True]} met, {summary[False]} not met")
    return "\n".join(lines)


VERDICT_WORDS = {True: "met", False: "NOT MET", None: "info"}


def goal_table(goals: Sequence[Goal], text_width: int = 72) -> str:
    """One line per goal: id, goal, measured, bound, verdict."""
    rows = [("", "goal", "measured", "bound", "")] + [
        (g.id, g.text, g.measured, g.bound, VERDICT_WORDS[g.met]) for g in goals
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    widths[1] = min(widths[1], text_width)
    lines = []
    for row in rows:
        cells = [row[i][: widths[i]].ljust(widths[i]) for i in range(4)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    return "\n".join(lines)


def goal_summary(goals: Sequence[Goal]) -> str:
    """How many goals were met, not met, reported only."""
    met = sum(g.met is True for g in goals)
    not_met = sum(g.met is False for g in goals)
    info = sum(g.met is None for g in goals)
    return f"{met} met, {not_met} not met, {info} reported"
