"""The live experiment report: read a model's prediction log and feedback over a window,
figure each arm (alias + version), test the split, judge candidate - baseline with an
always-valid confidence sequence, and record it all in MLflow.

`analyse` is a pure function of the records, the split and the two versions compared;
`run` reads, analyses, writes the reports and records the run. Shadow records (the candidate's
answers to the baseline's requests) are left out: counted, they would double count those
requests and tie the arms together.
"""

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from gates import sequential
from gates.sequential import Difference, Srm
from registry import predictionlog, runs, versions
from registry import split as split_tag
from registry.client import Client
from registry.errors import AliasNotFound
from registry.predictionlog import LogRoot, Window
from registry.quality import HIGHER_IS_BETTER, PROBABILITY_CLIP
from registry.refs import ModelRef
from registry.split import Split

logger = logging.getLogger(__name__)

EXPERIMENT = "modelyard-experiments"
"""The MLflow experiment every experiment report is logged in."""
DECISION_TAG = "modelyard.experiment.decision"
"""Model-version tag: the decision of the latest experiment report that compared it."""
RUN_ID_TAG = "modelyard.experiment.run_id"
"""Model-version tag: the MLflow run holding that report."""
TRAFFIC_TAG = split_tag.TAG
"""Registered-model tag holding the split: `{"production": 90, "staging": 10, "salt": "x"}`."""

Decision = Literal[
    "candidate_better", "candidate_worse", "no_difference_yet", "insufficient_data", "srm"
]
Task = Literal["classification", "regression"]
METRICS: dict[Task, tuple[str, ...]] = {
    "classification": ("accuracy", "log_loss"),
    "regression": ("rmse", "mae"),
}
"""Per task, the metrics reported; the first decides."""
ROUTED = ("key", "random")
"""Assignments that follow the weights (pinned and fallback requests do not)."""
_COLUMNS = (
    "request_id", "row", "ts", "alias", "version", "assignment", "salt", "status",
    "latency_ms", "label", "probability", "prediction",
)  # fmt: skip
_TIMELINE_POINTS = 40


@dataclass(frozen=True, slots=True)
class Arm:
    """One alias + version's figures over the window."""

    alias: str
    version: str
    role: str
    """`candidate`, `baseline`, or `other` (e.g. a version an alias named earlier)."""
    requests: int
    rows: int
    share: float
    """Of the requests routed by the split (key or random), the share this arm received."""
    weight: float | None
    """The share the split configures for this arm's alias."""
    errors: int
    latency_ms: Mapping[str, float]
    labelled: int
    answered_rows: int
    metrics: Mapping[str, float]

    @property
    def name(self) -> str:
        """`alias v<version>`."""
        return f"{self.alias} v{self.version}"

    @property
    def error_rate(self) -> float:
        """Share of requests answered with a server error (5xx)."""
        return self.errors / self.requests if self.requests else math.nan

    @property
    def join_rate(self) -> float:
        """Share of answered rows that have a label."""
        return self.labelled / self.answered_rows if self.answered_rows else math.nan


@dataclass(frozen=True, slots=True)
class Timeline:
    """The primary difference's sequence at points in time, and the routed share per alias."""

    times: list[str] = field(default_factory=list)
    estimate: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    traffic_times: list[str] = field(default_factory=list)
    traffic: Mapping[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything the records say about the experiment."""

    task: Task | None
    arms: tuple[Arm, ...]
    srm: Srm | None
    differences: Mapping[str, Difference]
    decision: Decision
    labels_needed: int | None
    """For `no_difference_yet`: more labels (both arms) expected to decide, when estimable."""
    notes: tuple[str, ...]
    timeline: Timeline
    rows_read: int
    """Records analysed (shadow records are not)."""
    labels_read: int

    @property
    def primary(self) -> str | None:
        """The metric the decision is taken on."""
        return METRICS[self.task][0] if self.task else None


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """What to report on: the model, the aliases compared, the window and the options."""

    name: str
    window: Window = field(default_factory=Window)
    candidate: str = "staging"
    baseline: str = "production"
    report_dir: Path = Path("reports")
    min_effect: float | None = None
    """The difference worth detecting, for the labels-needed estimate (default: the observed)."""
    record: bool = True
    """Log an MLflow run and tag both versions (False: reports only)."""


@dataclass(frozen=True, slots=True)
class Report:
    """A finished report: what was compared, over what, the analysis and where it went."""

    model: str
    candidate: ModelRef | None
    baseline: ModelRef | None
    split: Split
    window: Window
    log: str
    analysis: Analysis
    run_id: str | None
    run_url: str | None
    started_at: str
    seconds: float


def configured_split(client: Client, name: str) -> Split:
    """The split the model's traffic tag sets; weights empty (with the reason) without one."""
    return split_tag.read(client, name)


def run(client: Client, root: LogRoot, spec: ExperimentSpec) -> Report:
    """Read, analyse, write the reports and (unless told not to) record the MLflow run."""
    from gates import experiment_reports

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    clock = time.monotonic()
    candidate = _find(client, spec.name, spec.candidate)
    baseline = _find(client, spec.name, spec.baseline)
    split = configured_split(client, spec.name)
    predictions = predictionlog.read_predictions(root, spec.name, spec.window, _COLUMNS)
    feedback = predictionlog.read_feedback(root, spec.name, spec.window.since)
    analysis = analyse(predictions, feedback, split, candidate, baseline, spec.min_effect)
    logger.info("experiment %s: %s", spec.name, analysis.decision)
    report = Report(
        spec.name, candidate, baseline, split, spec.window, root.location, analysis,
        None, None, started_at, time.monotonic() - clock,
    )  # fmt: skip
    if not spec.record:
        experiment_reports.write(report, spec.report_dir)
        return report
    record = runs.start(
        client, EXPERIMENT, _run_name(report), tags=_tags(report), params=_params(report),
        metrics=_metrics(analysis),
    )  # fmt: skip
    try:
        report = Report(
            spec.name, candidate, baseline, split, spec.window, root.location, analysis,
            record.run_id, record.url, started_at, time.monotonic() - clock,
        )  # fmt: skip
        files = experiment_reports.write(report, spec.report_dir)
        plots = experiment_reports.plot(report, spec.report_dir)
        runs.attach(client, record.run_id, files, "experiment")
        runs.attach(client, record.run_id, plots, "experiment/plots")
        for ref in (candidate, baseline):
            if ref is not None:
                versions.tag(
                    client, ref.name, ref.version,
                    {DECISION_TAG: analysis.decision, RUN_ID_TAG: record.run_id},
                )  # fmt: skip
    except BaseException:
        runs.finish(client, record.run_id, succeeded=False)
        raise
    runs.finish(client, record.run_id, succeeded=True)
    return report


def _find(client: Client, name: str, alias: str) -> ModelRef | None:
    """The version an alias (or a version number) names now; None when the alias is unset.
    An unknown model raises ModelNotFound."""
    try:
        return versions.find(client, name, alias)
    except AliasNotFound:
        return None


def analyse(
    predictions: pa.Table,
    feedback: pa.Table,
    split: Split,
    candidate: ModelRef | None,
    baseline: ModelRef | None,
    min_effect: float | None = None,
) -> Analysis:
    """Figure every arm, test the split, judge the difference and decide, on the records of
    answers clients got (shadow records left out)."""
    predictions = predictionlog.answered(predictions)
    notes = [split.problem] if split.problem else []
    frame, names = _joined(predictions, feedback, split.salt)
    task = _task(frame)
    routed = frame[frame["routed"].to_numpy()]
    per_arm = _counts(routed, len(names))
    counts: dict[str, int] = {}
    for (alias, _), found in zip(names, per_arm, strict=True):
        counts[alias] = counts.get(alias, 0) + int(found)
    srm_test = sequential.srm(counts, split.weights) if split.weights else None
    values = _values(frame, task) if task else {}
    arms = _arms(frame, names, routed, split, values, candidate, baseline)
    sides = [_code(names, ref) for ref in (candidate, baseline)]
    differences = _differences(frame, values, task, sides)
    decision, needed = _decide(task, arms, srm_test, differences, min_effect)
    if candidate is None or baseline is None:
        notes.append("the candidate or the baseline alias names no version")
    timeline = _timeline(frame, names, routed, values, task, sides)
    return Analysis(
        task, arms, srm_test, differences, decision, needed, tuple(notes), timeline,
        predictions.num_rows, feedback.num_rows,
    )  # fmt: skip


def _joined(
    predictions: pa.Table, feedback: pa.Table, salt: str
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Prediction rows with their target (NaN where no label arrived), an `arm` code and
    whether the split routed the request (its row 0, by key or at random, under `salt`); and
    the (alias, version) each code stands for."""
    labels = feedback.select(["request_id", "row", "target"])
    joined = predictions.join(labels, keys=["request_id", "row"], join_type="left outer")
    routed = pc.and_(pc.equal(joined["row"], 0), pc.is_in(joined["assignment"], pa.array(ROUTED)))
    if salt:
        same = pc.or_kleene(pc.is_null(joined["salt"]), pc.equal(joined["salt"], salt))
        routed = pc.and_(routed, same)
    joined = joined.drop_columns(["request_id", "assignment", "salt"])
    joined = joined.append_column("routed", pc.fill_null(routed, False))
    pairs = pc.binary_join_element_wise(joined["alias"], joined["version"], "\x00")
    encoded = pairs.combine_chunks().dictionary_encode()
    frame = joined.drop_columns(["alias", "version"]).to_pandas()
    frame["status"] = frame["status"].astype("int64")
    frame["routed"] = frame["routed"].astype(bool)
    frame["arm"] = encoded.indices.to_numpy(zero_copy_only=False).astype("int64")
    names = [tuple(pair.split("\x00", 1)) for pair in encoded.dictionary.to_pylist()]
    return frame, names


def _task(frame: pd.DataFrame) -> Task | None:
    if frame["label"].notna().any():
        return "classification"
    if frame["prediction"].notna().any():
        return "regression"
    return None


def _labelled(frame: pd.DataFrame) -> NDArray[np.bool_]:
    return np.asarray((frame["status"] < 400) & frame["target"].notna(), dtype=bool)


def _counts(frame: pd.DataFrame, arms: int, mask: object = None) -> NDArray[np.int64]:
    codes = frame["arm"].to_numpy()
    return np.bincount(codes if mask is None else codes[mask], minlength=arms)


def _arms(
    frame: pd.DataFrame,
    names: list[tuple[str, str]],
    routed: pd.DataFrame,
    split: Split,
    values: Mapping[str, NDArray[np.float64]],
    candidate: ModelRef | None,
    baseline: ModelRef | None,
) -> tuple[Arm, ...]:
    total_weight = sum(split.weights.values())
    count = len(names)
    request = frame["row"].to_numpy() == 0
    status = frame["status"].to_numpy()
    labelled_mask = _labelled(frame)
    requests = _counts(frame, count, request)
    rows = _counts(frame, count)
    errors = _counts(frame, count, request & (status >= 500))
    answered = _counts(frame, count, status < 400)
    labelled = _counts(frame, count, labelled_mask)
    routed_counts = _counts(routed, count)
    routed_total = int(routed_counts.sum())
    latency = frame["latency_ms"].to_numpy(dtype="float64")
    codes = frame["arm"].to_numpy()
    arms = []
    for code, (alias, version) in enumerate(names):
        in_arm = codes == code
        timed = latency[in_arm & request]
        quantiles = np.quantile(timed, [0.5, 0.95, 0.99]) if timed.size else [math.nan] * 3
        scored = in_arm & labelled_mask
        metrics = {name: float(np.mean(v[scored])) for name, v in values.items() if scored.any()}
        if "rmse" in metrics:
            metrics["rmse"] = math.sqrt(metrics["rmse"])
        arms.append(
            Arm(
                alias=alias,
                version=version,
                role=_role(alias, version, candidate, baseline),
                requests=int(requests[code]),
                rows=int(rows[code]),
                share=int(routed_counts[code]) / routed_total if routed_total else math.nan,
                weight=split.weights.get(alias, 0.0) / total_weight if total_weight else None,
                errors=int(errors[code]),
                latency_ms={"p50": quantiles[0], "p95": quantiles[1], "p99": quantiles[2]},
                labelled=int(labelled[code]),
                answered_rows=int(answered[code]),
                metrics=metrics,
            )
        )
    order = {"candidate": 0, "baseline": 1, "other": 2}
    return tuple(sorted(arms, key=lambda arm: (order[arm.role], arm.alias, arm.version)))


def _role(alias: str, version: str, candidate: ModelRef | None, baseline: ModelRef | None) -> str:
    for role, ref in (("candidate", candidate), ("baseline", baseline)):
        if ref is not None and ref.alias == alias and ref.version == version:
            return role
    return "other"


def _values(frame: pd.DataFrame, task: Task) -> dict[str, NDArray[np.float64]]:
    """Per row, the value whose mean is each metric (squared error for RMSE)."""
    target = frame["target"].to_numpy(dtype="float64", na_value=np.nan)
    if task == "classification":
        label = frame["label"].to_numpy(dtype="float64", na_value=np.nan)
        proba = np.clip(
            frame["probability"].to_numpy(dtype="float64", na_value=np.nan),
            PROBABILITY_CLIP,
            1 - PROBABILITY_CLIP,
        )
        return {
            "accuracy": (label == target).astype("float64"),
            "log_loss": -np.where(target == 1, np.log(proba), np.log1p(-proba)),
        }
    error = frame["prediction"].to_numpy(dtype="float64", na_value=np.nan) - target
    return {"rmse": error * error, "mae": np.abs(error)}


def _code(names: list[tuple[str, str]], ref: ModelRef | None) -> int | None:
    """The arm code of a version reached through its alias; None when it has no records."""
    if ref is None:
        return None
    found = [
        i
        for i, (alias, version) in enumerate(names)
        if (alias, version) == (ref.alias, ref.version)
    ]
    return found[0] if found else None


def _differences(
    frame: pd.DataFrame,
    values: Mapping[str, NDArray[np.float64]],
    task: Task | None,
    sides: list[int | None],
) -> dict[str, Difference]:
    if task is None or None in sides:
        return {}
    labelled = _labelled(frame)
    codes = frame["arm"].to_numpy()
    masks = [labelled & (codes == code) for code in sides]
    if min(int(m.sum()) for m in masks) < 2:
        return {}
    found = {}
    for name, value in values.items():
        sums = [(value[m].sum(), (value[m] ** 2).sum(), int(m.sum())) for m in masks]
        combine = sequential.root_mean_difference if name == "rmse" else sequential.mean_difference
        estimate, width, variance = combine(*sums[0], *sums[1])
        found[name] = sequential.difference(estimate, width, variance, sums[0][2] + sums[1][2])
    return found


def _decide(
    task: Task | None,
    arms: tuple[Arm, ...],
    srm_test: Srm | None,
    differences: Mapping[str, Difference],
    min_effect: float | None,
) -> tuple[Decision, int | None]:
    if srm_test is not None and srm_test.alarm:
        return "srm", None
    sides = {arm.role: arm for arm in arms if arm.role != "other"}
    if task is None or len(sides) < 2 or not differences:
        return "insufficient_data", None
    if min(arm.labelled for arm in sides.values()) < sequential.MIN_LABELS_PER_ARM:
        return "insufficient_data", None
    primary = METRICS[task][0]
    found = differences[primary]
    if found.excludes_zero:
        better = (found.low > 0) == HIGHER_IS_BETTER[primary]
        return ("candidate_better" if better else "candidate_worse"), None
    effect = min_effect if min_effect is not None else found.estimate
    total = sequential.labels_needed(found.variance, effect)
    return "no_difference_yet", (max(total - found.n, 0) if total is not None else None)


def _timeline(
    frame: pd.DataFrame,
    names: list[tuple[str, str]],
    routed: pd.DataFrame,
    values: Mapping[str, NDArray[np.float64]],
    task: Task | None,
    sides: list[int | None],
) -> Timeline:
    """The primary difference's sequence after each of up to 40 points in time, and the
    routed share per alias in as many time buckets."""
    traffic_times, traffic = _traffic(routed, names)
    if task is None or None in sides or frame.empty:
        return Timeline(traffic_times=traffic_times, traffic=traffic)
    primary = METRICS[task][0]
    labelled = _labelled(frame)
    codes = frame["arm"].to_numpy()
    ts = frame["ts"].to_numpy(dtype="datetime64[us]").astype("int64")
    arrays = []
    for code in sides:
        side = labelled & (codes == code)
        order = np.argsort(ts[side], kind="stable")
        value = values[primary][side][order]
        arrays.append((ts[side][order], np.cumsum(value), np.cumsum(value * value)))
    first = sequential.MIN_LABELS_PER_ARM
    if min(len(a[0]) for a in arrays) < first:
        return Timeline(traffic_times=traffic_times, traffic=traffic)
    start = max(a[0][first - 1] for a in arrays)  # where the report starts judging
    end = max(a[0][-1] for a in arrays)
    points = np.unique(np.linspace(start, end, _TIMELINE_POINTS).astype("int64"))
    stats = []
    for moments, cum, cum_sq in arrays:
        n = np.searchsorted(moments, points, side="right")
        stats.append((cum[n - 1], cum_sq[n - 1], n))
    combine = sequential.root_mean_difference if primary == "rmse" else sequential.mean_difference
    estimate, width, _ = combine(*stats[0], *stats[1])
    return Timeline(
        times=[_iso(p) for p in points],
        estimate=[float(e) for e in estimate],
        low=[float(e - w) for e, w in zip(estimate, width, strict=True)],
        high=[float(e + w) for e, w in zip(estimate, width, strict=True)],
        traffic_times=traffic_times,
        traffic=traffic,
    )


def _traffic(
    routed: pd.DataFrame, names: list[tuple[str, str]]
) -> tuple[list[str], dict[str, list[float]]]:
    """The share of routed requests each alias took, in equal time buckets."""
    if routed.empty:
        return [], {}
    aliases = sorted({alias for alias, _ in names})
    alias_of = np.array([aliases.index(alias) for alias, _ in names])
    ts = routed["ts"].to_numpy(dtype="datetime64[us]").astype("int64")
    edges = np.linspace(ts.min(), ts.max() + 1, _TIMELINE_POINTS + 1)
    bucket = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, _TIMELINE_POINTS - 1)
    cells = bucket * len(aliases) + alias_of[routed["arm"].to_numpy()]
    counts = np.bincount(cells, minlength=_TIMELINE_POINTS * len(aliases)).reshape(
        _TIMELINE_POINTS, len(aliases)
    )
    totals = counts.sum(axis=1)
    kept = totals > 0
    shares = counts[kept] / totals[kept, None]
    times = [_iso(int(edge)) for edge in edges[:-1][kept]]
    return times, {alias: [float(v) for v in shares[:, i]] for i, alias in enumerate(aliases)}


def _iso(microseconds: int) -> str:
    return datetime.fromtimestamp(microseconds / 1e6, UTC).isoformat(timespec="seconds")


def _run_name(report: Report) -> str:
    c, b = report.candidate, report.baseline
    return f"experiment {report.model} {_label(c)} vs {_label(b)}"


def _label(ref: ModelRef | None) -> str:
    return f"v{ref.version}" if ref else "none"


def _tags(report: Report) -> dict[str, str]:
    return {
        "modelyard.experiment.model": report.model,
        "modelyard.experiment.candidate": f"{report.model}/{_label(report.candidate)}",
        "modelyard.experiment.baseline": f"{report.model}/{_label(report.baseline)}",
        DECISION_TAG: report.analysis.decision,
    }


def _params(report: Report) -> dict[str, str]:
    c, b, window = report.candidate, report.baseline, report.window
    return {
        "model": report.model,
        "candidate.alias": c.alias or "" if c else "",
        "candidate.version": c.version if c else "none",
        "baseline.alias": b.alias or "" if b else "",
        "baseline.version": b.version if b else "none",
        "weights": json.dumps(dict(report.split.weights), sort_keys=True),
        "salt": report.split.salt,
        "window.since": window.since.isoformat() if window.since else "",
        "window.until": window.until.isoformat() if window.until else "",
        "log": report.log,
    }


def _metrics(analysis: Analysis) -> dict[str, float]:
    values: dict[str, float] = {
        "rows_read": float(analysis.rows_read),
        "labels_read": float(analysis.labels_read),
    }
    for arm in analysis.arms:
        prefix = arm.role if arm.role != "other" else f"{arm.alias}.v{arm.version}"
        values |= {
            f"{prefix}.requests": float(arm.requests),
            f"{prefix}.rows": float(arm.rows),
            f"{prefix}.share": arm.share,
            f"{prefix}.error_rate": arm.error_rate,
            f"{prefix}.labelled": float(arm.labelled),
            f"{prefix}.join_rate": arm.join_rate,
            **{f"{prefix}.latency_{q}_ms": v for q, v in arm.latency_ms.items()},
            **{f"{prefix}.{m}": v for m, v in arm.metrics.items()},
        }
    for name, found in analysis.differences.items():
        values |= {
            f"difference.{name}": found.estimate,
            f"difference.{name}.low": found.low,
            f"difference.{name}.high": found.high,
        }
    if analysis.srm is not None:
        values |= {"srm.chi2": analysis.srm.chi2, "srm.p_value": analysis.srm.p_value}
    if analysis.labels_needed is not None:
        values["labels_needed"] = float(analysis.labels_needed)
    return values
