"""A gate's report: the one-screen table for the terminal, and the same in JSON and Markdown.

All three are rendered from the same rows, so the files CI keeps say exactly what the
terminal showed.
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gates import rendering
from gates.verdict import Check, Evidence, Verdict
from registry.refs import ModelRef

COLUMNS = ("check", "candidate", "baseline", "bound", "detail", "result")
_NUMERIC = {1, 2}
"""The columns aligned right: candidate and baseline."""
_DETAIL_WIDTH = 48


@dataclass(frozen=True, slots=True)
class DataSummary:
    """The evaluation data as a report names it."""

    kind: str
    description: str
    rows: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Report:
    """Everything a gate run decided and why."""

    model: str
    candidate: ModelRef
    baseline: ModelRef | None
    baseline_asked: str
    data: DataSummary
    policy_path: str
    policy_sha256: str
    evidence: Evidence
    verdict: Verdict
    run_id: str | None
    run_url: str | None
    promotion: str | None
    started_at: str
    seconds: float
    phases: Mapping[str, float] = field(default_factory=dict)
    """Seconds per phase of the run, in order (loading the models is usually most of it)."""

    @property
    def outcome(self) -> str:
        """PASS or FAIL."""
        return "PASS" if self.verdict.passed else "FAIL"


def rows(report: Report) -> list[tuple[str, ...]]:
    """The verdict table's cells, as every rendering shows them."""
    return [_cells(check) for check in report.verdict.checks]


def summary(report: Report) -> list[str]:
    """The lines above the table: what was compared, on what, and the verdict."""
    baseline = (
        f"baseline {report.baseline}"
        if report.baseline
        else f"no baseline ('{report.baseline_asked}' does not exist)"
    )
    return [
        f"gate {report.model}: candidate {report.candidate} vs {baseline}: {report.outcome}",
        f"data: {report.data.description} ({report.data.rows} rows, "
        f"sha256 {report.data.sha256[:12]})",
        f"policy: {report.policy_path} (sha256 {report.policy_sha256[:12]})",
    ]


def footer(report: Report) -> list[str]:
    """The lines below the table: notes, full problem texts, run and promotion."""
    passed = sum(check.passed for check in report.verdict.checks)
    lines = [f"note: {note}" for note in report.verdict.notes]
    lines += [
        f"problem: {check.name}: {problem}"
        for check in report.verdict.checks
        if not check.passed and len(check.detail) > _DETAIL_WIDTH
        for problem in check.detail.split("; ")
    ]
    lines.append(f"verdict: {report.outcome} ({passed}/{len(report.verdict.checks)} checks passed)")
    if report.run_id:
        lines.append(
            f"mlflow run: {report.run_id}" + (f" ({report.run_url})" if report.run_url else "")
        )
    if report.promotion:
        lines.append(f"promotion: {report.promotion}")
    return lines


def render_text(report: Report) -> str:
    """The one-screen table for stdout."""
    return rendering.text(summary(report), [COLUMNS, *rows(report)], _NUMERIC, footer(report))


def render_markdown(report: Report) -> str:
    """The same report for a pull request or a CI step summary."""
    icon = "✅" if report.verdict.passed else "❌"
    return rendering.markdown(
        f"## {icon} Gate {report.outcome}: {report.model} v{report.candidate.version}",
        summary(report),
        [COLUMNS, *rows(report)],
        _NUMERIC,
        footer(report),
    )


def render_json(report: Report) -> str:
    """Machine-readable report: the table's cells and the raw evidence behind them."""
    evidence = report.evidence
    document: dict[str, Any] = {
        "model": report.model,
        "verdict": "pass" if report.verdict.passed else "fail",
        "candidate": asdict(report.candidate),
        "baseline": asdict(report.baseline) if report.baseline else None,
        "baseline_asked": report.baseline_asked,
        "data": asdict(report.data),
        "policy": {"path": report.policy_path, "sha256": report.policy_sha256},
        "summary": summary(report),
        "table": [dict(zip(COLUMNS, row, strict=True)) for row in rows(report)],
        "footer": footer(report),
        "checks": [asdict(check) for check in report.verdict.checks],
        "notes": list(report.verdict.notes),
        "metrics": {"candidate": evidence.candidate, "baseline": evidence.baseline},
        "candidate_error": evidence.candidate_error,
        "improvements": {k: asdict(v) for k, v in evidence.improvements.items()},
        "latency": asdict(evidence.latency) if evidence.latency else None,
        "compatibility": {
            "input_breaks": evidence.input_breaks,
            "output_breaks": evidence.output_breaks,
        },
        "run": {"id": report.run_id, "url": report.run_url},
        "promotion": report.promotion,
        "started_at": report.started_at,
        "seconds": round(report.seconds, 3),
        "phases": {name: round(seconds, 3) for name, seconds in report.phases.items()},
    }
    return rendering.json_text(document)


def write(report: Report, directory: Path) -> tuple[Path, Path]:
    """Write `gate-<model>-v<version>.json` and `.md` under `directory`; return both paths."""
    stem = f"gate-{rendering.safe_name(report.model)}-v{report.candidate.version}"
    return rendering.write(directory, stem, render_json(report), render_markdown(report))


def _cells(check: Check) -> tuple[str, ...]:
    detail = check.detail
    if len(detail) > _DETAIL_WIDTH:
        detail = detail[: _DETAIL_WIDTH - 3] + "..."
    return (
        check.name,
        _number(check.candidate, check.unit),
        _number(check.baseline, check.unit),
        check.bound,
        detail,
        "pass" if check.passed else "FAIL",
    )


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:.4f}"
