"""An experiment's report: the terminal table, the same in JSON and Markdown (in the gate's
style: one set of rows rendered three ways), and the plots a data scientist looks at."""

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from gates import rendering
from gates.experiment import Arm, Report

COLUMNS = (
    "arm", "role", "requests", "rows", "share", "weight", "errors", "p50 ms", "p95 ms",
    "p99 ms", "labelled", "join",
)  # fmt: skip


def rows(report: Report) -> list[tuple[str, ...]]:
    """The arms table's cells, as every rendering shows them."""
    metrics = _metric_names(report)
    return [_cells(arm, metrics) for arm in report.analysis.arms]


def header(report: Report) -> tuple[str, ...]:
    """The table's column names: the fixed ones, then the task's metrics."""
    return (*COLUMNS, *_metric_names(report))


def _metric_names(report: Report) -> tuple[str, ...]:
    from gates.experiment import METRICS

    task = report.analysis.task
    return METRICS[task] if task else ()


def summary(report: Report) -> list[str]:
    """The lines above the table: what is compared, over which window, and the split."""
    window = report.window
    since = window.since.isoformat() if window.since else "the start"
    until = window.until.isoformat() if window.until else "now"
    split = report.split
    weights = ", ".join(f"{a} {w:g}" for a, w in split.weights.items()) or "unknown"
    salt = f", salt '{split.salt}'" if split.salt else ""
    return [
        f"experiment {report.model}: candidate {_ref(report.candidate)} vs baseline "
        f"{_ref(report.baseline)}",
        f"log: {report.log}, from {since} to {until} ({report.analysis.rows_read} rows, "
        f"{report.analysis.labels_read} labels)",
        f"split: {weights}{salt}",
    ]


def footer(report: Report) -> list[str]:
    """The lines below the table: SRM, the differences, notes, the decision and the run."""
    analysis = report.analysis
    lines = []
    if analysis.srm is not None:
        test = analysis.srm
        verdict = "MISMATCH" if test.alarm else "ok"
        lines.append(f"sample ratio: chi2 {test.chi2:.2f}, p {test.p_value:.4g} ({verdict})")
    for name, found in analysis.differences.items():
        marker = " (decides)" if name == analysis.primary else ""
        lines.append(
            f"{name} candidate - baseline: {found.estimate:+.4f}, 95% always-valid "
            f"[{found.low:+.4f}, {found.high:+.4f}] over {found.n} labels{marker}"
        )
    lines += [f"note: {note}" for note in analysis.notes]
    decision = f"decision: {analysis.decision}"
    if analysis.decision == "no_difference_yet":
        needed = analysis.labels_needed
        decision += (
            f" (about {needed} more labels needed)" if needed is not None
            else " (labels needed: not estimable yet)"
        )  # fmt: skip
    lines.append(decision)
    if report.run_id:
        lines.append(
            f"mlflow run: {report.run_id}" + (f" ({report.run_url})" if report.run_url else "")
        )
    return lines


def render_text(report: Report) -> str:
    """The one-screen table for stdout."""
    table = [header(report), *rows(report)]
    return rendering.text(summary(report), table, _numeric(table), footer(report))


def render_markdown(report: Report) -> str:
    """The same report for a pull request or a wiki page."""
    table = [header(report), *rows(report)]
    return rendering.markdown(
        f"## Experiment {report.model}: {report.analysis.decision}",
        summary(report),
        table,
        _numeric(table),
        footer(report),
    )


def render_json(report: Report) -> str:
    """Machine-readable report: the table's cells and the figures behind them."""
    analysis = report.analysis
    document: dict[str, Any] = {
        "model": report.model,
        "decision": analysis.decision,
        "labels_needed": analysis.labels_needed,
        "candidate": asdict(report.candidate) if report.candidate else None,
        "baseline": asdict(report.baseline) if report.baseline else None,
        "split": {"weights": dict(report.split.weights), "salt": report.split.salt},
        "window": {
            "since": report.window.since.isoformat() if report.window.since else None,
            "until": report.window.until.isoformat() if report.window.until else None,
        },
        "log": report.log,
        "task": analysis.task,
        "primary_metric": analysis.primary,
        "summary": summary(report),
        "table": [dict(zip(header(report), row, strict=True)) for row in rows(report)],
        "footer": footer(report),
        "arms": [
            asdict(arm) | {"error_rate": arm.error_rate, "join_rate": arm.join_rate}
            for arm in analysis.arms
        ],
        "srm": (asdict(analysis.srm) | {"alarm": analysis.srm.alarm} if analysis.srm else None),
        "differences": {k: asdict(v) for k, v in analysis.differences.items()},
        "notes": list(analysis.notes),
        "rows_read": analysis.rows_read,
        "labels_read": analysis.labels_read,
        "timeline": asdict(analysis.timeline),
        "run": {"id": report.run_id, "url": report.run_url},
        "started_at": report.started_at,
        "seconds": round(report.seconds, 3),
    }
    return rendering.json_text(document)


def write(report: Report, directory: Path) -> tuple[Path, Path]:
    """Write `experiment-<model>.json` and `.md` under `directory`; return both paths."""
    stem = f"experiment-{rendering.safe_name(report.model)}"
    return rendering.write(directory, stem, render_json(report), render_markdown(report))


def plot(report: Report, directory: Path) -> list[Path]:
    """PNGs: the primary difference with its confidence band over time, and the traffic share
    per alias over time against its configured weight. None when there is nothing to draw."""
    from matplotlib.figure import Figure  # no pyplot: no process-wide figure state

    timeline = report.analysis.timeline
    stem = directory / f"experiment-{rendering.safe_name(report.model)}"
    written = []
    if timeline.times:
        figure = Figure(figsize=(8, 4.5))
        axes = figure.subplots()
        times = _datetimes(timeline.times)
        axes.fill_between(times, timeline.low, timeline.high, alpha=0.3, label="95% always-valid")
        axes.plot(times, timeline.estimate, label="candidate - baseline")
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_title(f"{report.model}: {report.analysis.primary} difference over time")
        axes.set_ylabel(str(report.analysis.primary))
        figure.autofmt_xdate()
        axes.legend(loc="best")
        path = stem.with_name(stem.name + "-difference.png")
        figure.savefig(path, dpi=100, bbox_inches="tight")
        written.append(path)
    if timeline.traffic_times:
        figure = Figure(figsize=(8, 4.5))
        axes = figure.subplots()
        times = _datetimes(timeline.traffic_times)
        total = sum(report.split.weights.values())
        for alias, shares in timeline.traffic.items():
            (line,) = axes.plot(times, shares, label=alias)
            if total:
                weight = report.split.weights.get(alias, 0.0) / total
                axes.axhline(weight, color=line.get_color(), linestyle="--", linewidth=0.8)
        axes.set_ylim(0, 1)
        axes.set_title(f"{report.model}: traffic share over time (dashed: configured)")
        axes.set_ylabel("share of routed requests")
        figure.autofmt_xdate()
        axes.legend(loc="best")
        path = stem.with_name(stem.name + "-traffic.png")
        figure.savefig(path, dpi=100, bbox_inches="tight")
        written.append(path)
    return written


def _datetimes(times: list[str]) -> "np.ndarray[Any, np.dtype[np.datetime64]]":
    """ISO times in UTC as numpy datetimes (which matplotlib draws on a time axis)."""
    return np.array([t[:19] for t in times], dtype="datetime64[s]")


def _cells(arm: Arm, metrics: tuple[str, ...]) -> tuple[str, ...]:
    return (
        arm.name,
        arm.role,
        str(arm.requests),
        str(arm.rows),
        _share(arm.share),
        _share(arm.weight),
        f"{arm.errors} ({_share(arm.error_rate)})",
        *(_number(arm.latency_ms[q], 2) for q in ("p50", "p95", "p99")),
        str(arm.labelled),
        _share(arm.join_rate),
        *(_number(arm.metrics.get(m), 4) for m in metrics),
    )


def _share(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _numeric(table: rendering.Table) -> range:
    """The columns aligned right: all but arm and role."""
    return range(2, len(table[0]))


def _ref(ref: object) -> str:
    return str(ref) if ref is not None else "none (alias not set)"
