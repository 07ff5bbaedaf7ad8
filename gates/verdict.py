"""The gate's decision: a pure function of the policy and the evidence gathered."""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from gates.bootstrap import Interval
from gates.latency import Latency
from gates.policy import ExamRule, MetricRule, Policy


@dataclass(frozen=True, slots=True)
class Overlap:
    """Of the `rows` evaluation rows, how many the candidate's training run records having
    trained on; None when it is unknown (`unknown` says why)."""

    rows: int
    trained: int | None
    unknown: str = ""


@dataclass(frozen=True, slots=True)
class Evidence:
    """What scoring both versions showed; None where there was nothing to show.

    `baseline` is None when there is no baseline version; `candidate` is None when the
    candidate gave no usable answer (then `candidate_error` says why). Breaks are None when
    that comparison was not made.
    """

    candidate: Mapping[str, float] | None
    baseline: Mapping[str, float] | None
    candidate_error: str | None = None
    improvements: Mapping[str, Interval] = field(default_factory=dict)
    latency: Latency | None = None
    input_breaks: tuple[str, ...] | None = None
    output_breaks: tuple[str, ...] | None = None
    overlap: Overlap | None = None
    notes: tuple[str, ...] = ()
    """What the gate verified or could not verify about the exam, for the report."""


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the verdict: what was checked, the values seen, the bound, the outcome."""

    name: str
    candidate: float | None
    baseline: float | None
    bound: str
    passed: bool
    detail: str = ""
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """Every check, and notes on what was not checked and why."""

    checks: tuple[Check, ...]
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """True only when there was something to check and every check passed."""
        return bool(self.checks) and all(check.passed for check in self.checks)


def judge(policy: Policy, evidence: Evidence) -> Verdict:
    """Apply the policy to the evidence. Without a baseline only absolute bounds apply."""
    checks: list[Check] = []
    notes: list[str] = list(evidence.notes)
    if evidence.overlap is not None:
        checks.extend(_overlap(policy.exam, evidence.overlap, notes))
    if evidence.candidate_error is not None or evidence.candidate is None:
        error = evidence.candidate_error or "no answer"
        checks.append(Check("candidate answers", None, None, "output contract", False, error))
    for name, rule in policy.metrics.items():
        checks.extend(_bounds(name, rule, evidence))
        if rule.max_regression is not None and evidence.baseline is not None:
            checks.append(_regression(name, rule.max_regression, evidence))
    if evidence.baseline is None:
        notes.append(
            "no baseline: only absolute bounds apply (regression, latency and compatibility "
            "checks skipped)"
        )
    else:
        if policy.latency is not None and evidence.latency is not None:
            checks.extend(_latency(policy.latency.max_ratio, evidence.latency))
        if evidence.input_breaks is not None:
            checks.append(_compatible("inputs accept baseline requests", evidence.input_breaks))
        if evidence.output_breaks is not None:
            checks.append(_compatible("outputs in baseline contract", evidence.output_breaks))
    return Verdict(tuple(checks), tuple(notes))


def _overlap(rule: ExamRule, overlap: Overlap, notes: list[str]) -> list[Check]:
    """A failed exam when the candidate trained on evaluation rows; an unknown overlap is a
    note, or a failed check when the policy requires the record."""
    if overlap.trained is None:
        if rule.training_rows == "require":
            return [Check("training rows recorded", None, None, "required", False, overlap.unknown)]
        notes.append(f"overlap of training and evaluation rows not checked: {overlap.unknown}")
        return []
    allowed = rule.max_overlap * overlap.rows
    detail = f"candidate trained on {overlap.trained} of {overlap.rows} evaluation rows"
    bound = f"<= {rule.max_overlap:.0%} of rows"
    return [
        Check("trained on evaluation rows", None, None, bound, overlap.trained <= allowed, detail)
    ]


def _bounds(name: str, rule: MetricRule, evidence: Evidence) -> list[Check]:
    value = evidence.candidate.get(name) if evidence.candidate else None
    baseline = evidence.baseline.get(name) if evidence.baseline else None
    found = value is not None and math.isfinite(value)
    checks = []
    if rule.min is not None:
        ok = found and value is not None and value >= rule.min
        checks.append(Check(name, value, baseline, f">= {rule.min:g}", ok))
    if rule.max is not None:
        ok = found and value is not None and value <= rule.max
        checks.append(Check(name, value, baseline, f"<= {rule.max:g}", ok))
    return checks


def _regression(name: str, margin: float, evidence: Evidence) -> Check:
    value = evidence.candidate.get(name) if evidence.candidate else None
    baseline = evidence.baseline.get(name) if evidence.baseline else None
    bound = f"worse by <= {margin:g}"
    interval = evidence.improvements.get(name)
    if interval is None:
        return Check(f"{name} vs baseline", value, baseline, bound, False, "not compared")
    detail = (
        f"diff {interval.estimate:+.4f}, {interval.confidence:.0%} CI "
        f"[{interval.low:+.4f}, {interval.high:+.4f}]"
    )
    passed = not interval.regresses_beyond(margin)
    return Check(f"{name} vs baseline", value, baseline, bound, passed, detail)


def _latency(max_ratio: float, latency: Latency) -> list[Check]:
    bound = f"ratio <= {max_ratio:g}"
    return [
        Check(
            "latency p50, 1 row",
            latency.candidate_row_ms,
            latency.baseline_row_ms,
            bound,
            latency.row_ratio <= max_ratio,
            f"ratio {latency.row_ratio:.2f}",
            "ms",
        ),
        Check(
            f"latency p50, {latency.batch_rows} rows",
            latency.candidate_batch_ms,
            latency.baseline_batch_ms,
            bound,
            latency.batch_ratio <= max_ratio,
            f"ratio {latency.batch_ratio:.2f}",
            "ms",
        ),
    ]


def _compatible(name: str, breaks: tuple[str, ...]) -> Check:
    return Check(name, None, None, "no break", not breaks, "; ".join(breaks))
