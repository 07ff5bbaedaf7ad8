"""The rollout guards judged on the prediction log: a pure function of the records.

Each guard ends `pass`, `breach` or `no_data`, with the figures it was judged on:

- `requests`: the candidate answered at least `min_requests_per_step` requests in the step.
- `error_rate`: the candidate's share of requests answered 5xx stays within `max`.
- `latency_p99_ratio`: the candidate's p99 stays within `max` times the baseline's, both
  measured in the same step (not judged where the baseline takes no traffic).
- `agreement`: where the candidate shadow-scored a row the baseline answered (a shadow record
  of the candidate's version with the baseline's record of the same request id and row, logged
  with shadow sampling on), they agree on at least `min` of them.
- a label metric (`accuracy`, `log_loss`, `rmse`, `mae`): candidate - baseline regresses by
  no more than `max_regression`, judged on the experiment report's always-valid 95% confidence
  sequence over the whole rollout once both arms have `min_labels` labelled rows.

A guard breaches on evidence, never on one noisy figure. For the three shares (errors, rows
slower than `max` x the baseline's p99, disagreements) the test is the same: under "within the
bound" the count of bad requests among n is at most Binomial(n, p0), and the average of the
likelihood ratios of a few alternatives p1 > p0 is a nonnegative supermartingale, so by
Ville's inequality it ever reaches 1/alpha (20) with probability at most alpha (5%), however
often it is looked at. Each check therefore takes its highest value over the candidate's
requests in arrival order, as if it had looked after every one: once the log holds the
evidence, every later check finds it, and evidence that later requests dilute is not lost
between two checks. A candidate failing 1 request in 20 against `max: 0.01` reaches it after
about 100 requests; one failing 1 in 200 essentially never does. The p99 ratio is reported,
but the breach is decided by the share of candidate requests slower than `max` x the baseline's
p99 (more than 1% of them means the candidate's p99 is beyond the bound), so a p99 taken from a
hundred requests cannot roll back a healthy candidate on one slow request.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike, NDArray

from gates import experiment, sequential
from gates.rollout_policy import GuardPolicy
from registry import predictionlog
from registry.predictionlog import LogRoot, Window
from registry.quality import HIGHER_IS_BETTER
from registry.refs import ModelRef
from registry.split import Split

Outcome = Literal["pass", "breach", "no_data"]
Figure = float | int | str | None

EVIDENCE = 1 / sequential.ALPHA
"""The evidence (e-value) at which a guard breaches: 20, for a 5% chance of a false breach."""
ALTERNATIVES = (1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)
"""The alternatives mixed by the evidence, as multiples of the bound's share."""
LATENCY_SHARE = 0.01
"""The share of requests a p99 leaves above it."""
COLUMNS = (
    "request_id", "row", "ts", "alias", "version", "assignment", "salt", "status",
    "latency_ms", "label", "probability", "prediction",
)  # fmt: skip
"""The log's columns the guards read."""


@dataclass(frozen=True, slots=True)
class GuardResult:
    """One guard's outcome, the bound, the figures it was judged on, and a line saying so."""

    name: str
    outcome: Outcome
    required: bool
    """Whether `no_data` holds the step back (else the guard is judged once data exists)."""
    bound: str
    summary: str
    figures: Mapping[str, Figure] = field(default_factory=dict)

    def line(self) -> str:
        """`error_rate (max 0.01): BREACH: candidate 5.2% ...`."""
        word = {"pass": "pass", "breach": "BREACH", "no_data": "no data"}[self.outcome]
        bound = f" ({self.bound})" if self.bound else ""
        return f"{self.name}{bound}: {word}: {self.summary}"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Every guard judged over one window of the log."""

    outcome: Outcome
    guards: tuple[GuardResult, ...]
    candidate: ModelRef
    baseline: ModelRef
    since: str | None
    """Where the step's window starts (the label metric looks back to the rollout's start)."""
    rows_read: int
    labels_read: int

    @property
    def breached(self) -> tuple[GuardResult, ...]:
        """The guards that breached."""
        return tuple(g for g in self.guards if g.outcome == "breach")

    @property
    def waiting(self) -> tuple[GuardResult, ...]:
        """The required guards that have no data yet."""
        return tuple(g for g in self.guards if g.outcome == "no_data" and g.required)

    def reason(self) -> str:
        """Why the outcome: the breached guards' lines, else the ones still without data."""
        found = self.breached or self.waiting
        return "; ".join(g.line() for g in found) if found else "every guard passed"

    def metrics(self) -> dict[str, float]:
        """The numeric figures, as `<guard>.<figure>`, and each guard's outcome (1 breach,
        0 pass, -1 no data)."""
        values: dict[str, float] = {}
        code = {"breach": 1.0, "pass": 0.0, "no_data": -1.0}
        for guard in self.guards:
            values[f"{guard.name}.outcome"] = code[guard.outcome]
            for key, value in guard.figures.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    values[f"{guard.name}.{key}"] = float(value)
        return values

    def document(self) -> dict[str, object]:
        """The evaluation as JSON-ready data (undefined numbers as None)."""
        return {
            "outcome": self.outcome,
            "candidate": str(self.candidate),
            "baseline": str(self.baseline),
            "since": self.since,
            "rows_read": self.rows_read,
            "labels_read": self.labels_read,
            "guards": [
                {
                    "name": g.name,
                    "outcome": g.outcome,
                    "required": g.required,
                    "bound": g.bound,
                    "summary": g.summary,
                    "figures": {k: _finite(v) for k, v in g.figures.items()},
                }
                for g in self.guards
            ],
        }


def peak_evidence(bad: NDArray[np.bool_], share: float) -> float:
    """The highest evidence along `bad`, the requests in arrival order, that more than `share`
    of all requests are bad (1 with no requests)."""
    if not bad.size:
        return 1.0
    counts = np.cumsum(bad)
    return float(evidence_many(counts, np.arange(1, bad.size + 1), share).max())


def evidence_many(bad: ArrayLike, n: ArrayLike, share: float) -> NDArray[np.float64]:
    """The evidence that more than `share` of all requests are bad, from `bad` of `n` (arrays
    of counts): the average likelihood ratio of the ALTERNATIVES against `share`."""
    bad = np.asarray(bad, dtype="float64")[..., None]
    n = np.asarray(n, dtype="float64")[..., None]
    alternatives = np.unique(np.minimum(share * np.asarray(ALTERNATIVES), 0.999))
    alternatives = alternatives[alternatives > share]
    logs = bad * np.log(alternatives / share) + (n - bad) * (
        np.log1p(-alternatives) - math.log1p(-share)
    )
    with np.errstate(over="ignore"):
        found = np.mean(np.exp(np.minimum(logs, 700.0)), axis=-1)
    found = np.where(np.max(logs, axis=-1) >= 700.0, np.inf, found)
    return np.where(n[..., 0] > 0, found, 1.0)


def evaluate(
    policy: GuardPolicy,
    predictions: pa.Table,
    feedback: pa.Table,
    candidate: ModelRef,
    baseline: ModelRef,
    since: datetime | None = None,
    *,
    concurrent: bool = True,
) -> Evaluation:
    """Judge every guard: requests, errors, latency and agreement on the records from `since`
    (the step's window), label metrics on all of `predictions` (the rollout's window). Shadow
    records count for agreement only.

    `concurrent` False (a step where the baseline takes no traffic): latency is not judged.
    The baseline's requests in such a step are the few answered before every replica followed
    the split, under another load; comparing with them would roll back a healthy candidate
    for carrying all of the load (the first benchmark run did exactly that)."""
    step = predictions
    if since is not None:
        after = pc.greater_equal(predictions["ts"], pa.scalar(since, pa.timestamp("us", "UTC")))
        step = predictions.filter(after)
    guards = policy.guards
    minimum = policy.min_requests_per_step
    answered = predictionlog.answered(step)
    candidate_step = _arm(answered, candidate)
    results = [_requests(candidate_step, minimum)]
    if guards.error_rate is not None:
        results.append(_error_rate(candidate_step, guards.error_rate.max, minimum))
    if guards.latency_p99_ratio is not None:
        ratio = guards.latency_p99_ratio.max
        if concurrent:
            results.append(_latency(candidate_step, _arm(answered, baseline), ratio, minimum))
        else:
            results.append(_latency_not_judged(ratio))
    if guards.agreement is not None:
        results.append(_agreement(step, candidate, baseline, guards.agreement.min, minimum))
    metrics = guards.metrics()
    if metrics:
        analysis = experiment.analyse(predictions, _typed(feedback), Split(), candidate, baseline)
        for name, bound in metrics.items():
            results.append(
                _label_metric(
                    analysis, name, bound.max_regression, policy.min_labels, policy.require_labels
                )
            )
    outcome: Outcome = "pass"
    if any(r.outcome == "breach" for r in results):
        outcome = "breach"
    elif any(r.outcome == "no_data" and r.required for r in results):
        outcome = "no_data"
    return Evaluation(
        outcome,
        tuple(results),
        candidate,
        baseline,
        since.isoformat() if since else None,
        predictions.num_rows,
        feedback.num_rows,
    )


def read(
    root: LogRoot, model: str, window: Window, labels_since: datetime | None
) -> tuple[pa.Table, pa.Table]:
    """The records the guards read: the window's predictions and the labels since then."""
    predictions = predictionlog.read_predictions(root, model, window, COLUMNS)
    return predictions, predictionlog.read_feedback(root, model, labels_since)


class LogReader:
    """A model's log from `since` on, read as it grows: each file once, kept in memory.

    A controller checks every few seconds while the log grows by a file per replica per flush.
    Files are immutable once visible (written whole, then renamed or put once), so a file read
    is never read again; and a file last modified more than SKEW_S before `since` holds no
    record of the window (a record is answered before its file is written), so it is never
    read at all. Memory grows with the window's records (the guards' columns only).
    """

    SKEW_S = 30.0
    """Clock difference allowed between the replicas, the store and the controller."""

    def __init__(self, root: LogRoot, model: str, since: datetime) -> None:
        self.root = root
        self.model = model
        self.window = Window(since, None)
        self._oldest = since.timestamp() - self.SKEW_S
        """Files last modified before this (Unix time) hold no record of the window."""
        self._seen: set[str] = set()
        self._predictions = PREDICTIONS.empty_table()
        self._feedback = predictionlog.FEEDBACK_SCHEMA.empty_table()

    def read(self, *, labels: bool) -> tuple[pa.Table, pa.Table]:
        """The predictions since `since`, and (with `labels`) the labels that arrived since,
        the latest per (request_id, row); files new since the last call are read."""
        self._predictions = self._add(self._predictions, predictionlog.PREDICTIONS)
        if not labels:
            return self._predictions, predictionlog.FEEDBACK_SCHEMA.empty_table()
        self._feedback = self._add(self._feedback, predictionlog.FEEDBACK)
        return self._predictions, predictionlog.latest_labels(self._feedback)

    def _add(self, table: pa.Table, kind: str) -> pa.Table:
        new = [
            info
            for info in predictionlog.list_files(self.root, kind, self.model, self.window)
            if info.path not in self._seen
            and (info.mtime is None or info.mtime.timestamp() >= self._oldest)
        ]
        if not new:
            return table
        found = predictionlog.read_files(self.root, new, kind, table.schema.names, self.window)
        self._seen.update(info.path for info in new)
        return pa.concat_tables([table, found.cast(table.schema)]).combine_chunks()


PREDICTIONS = pa.schema([predictionlog.PREDICTION_SCHEMA.field(name) for name in COLUMNS])
"""The predictions' columns the guards read."""


@dataclass(frozen=True, slots=True)
class _ArmRecords:
    """One version's requests in a window, in arrival order: which failed, and the answered
    ones' latencies."""

    failed: NDArray[np.bool_]
    answered: NDArray[np.float64]

    @property
    def requests(self) -> int:
        return int(self.failed.size)

    @property
    def errors(self) -> int:
        return int(self.failed.sum())


def _arm(table: pa.Table, ref: ModelRef) -> _ArmRecords:
    mine = pc.and_(
        pc.and_(pc.equal(table["alias"], ref.alias or ""), pc.equal(table["version"], ref.version)),
        pc.equal(table["row"], 0),
    )
    requests = table.filter(mine).sort_by("ts")
    failed = requests["status"].to_numpy().astype("int64") >= 500
    latency = requests["latency_ms"].to_numpy().astype("float64")
    return _ArmRecords(failed, latency[~failed])


def _requests(candidate: _ArmRecords, minimum: int) -> GuardResult:
    enough = candidate.requests >= minimum
    return GuardResult(
        "requests",
        "pass" if enough else "no_data",
        True,
        f"min {minimum} per step",
        f"{candidate.requests} candidate requests in the step",
        {"candidate": candidate.requests, "min": minimum},
    )


def _error_rate(candidate: _ArmRecords, bound: float, minimum: int) -> GuardResult:
    n, bad = candidate.requests, candidate.errors
    found = peak_evidence(candidate.failed, bound)
    rate = bad / n if n else math.nan
    outcome: Outcome = "breach" if found >= EVIDENCE else ("pass" if n >= minimum else "no_data")
    return GuardResult(
        "error_rate",
        outcome,
        True,
        f"max {bound:g}",
        f"candidate {_percent(rate)} ({bad} of {n} requests failed); evidence "
        f"{_evidence(found)} ({'>=' if found >= EVIDENCE else '<'} {EVIDENCE:g})",
        {"rate": rate, "errors": bad, "requests": n, "evidence": found},
    )


def _latency_not_judged(bound: float) -> GuardResult:
    return GuardResult(
        "latency_p99_ratio",
        "no_data",
        False,
        f"max {bound:g}",
        "not judged: the baseline takes no traffic in this step, and the candidate's latency "
        "under all of the load is no match for the baseline's under part of it",
        {},
    )


def _latency(
    candidate: _ArmRecords, baseline: _ArmRecords, bound: float, minimum: int
) -> GuardResult:
    name = "latency_p99_ratio"
    where = "in the step"
    if baseline.answered.size < minimum:
        return GuardResult(
            name,
            "no_data",
            True,
            f"max {bound:g}",
            f"{baseline.answered.size} baseline requests answered {where}, {minimum} needed",
            {"baseline_requests": baseline.answered.size},
        )
    baseline_p99 = float(np.quantile(baseline.answered, 0.99))
    threshold = bound * baseline_p99
    n = candidate.answered.size
    candidate_p99 = float(np.quantile(candidate.answered, 0.99)) if n else math.nan
    is_slower = candidate.answered > threshold
    slower = int(is_slower.sum())
    found = peak_evidence(is_slower, LATENCY_SHARE)
    ratio = candidate_p99 / baseline_p99 if baseline_p99 > 0 else math.nan
    outcome: Outcome = "breach" if found >= EVIDENCE else ("pass" if n >= minimum else "no_data")
    return GuardResult(
        name,
        outcome,
        True,
        f"max {bound:g}",
        f"p99 {_ms(candidate_p99)} vs {_ms(baseline_p99)} ({where}): ratio {_number(ratio)}; "
        f"{slower} of {n} candidate requests slower than {_ms(threshold)}; evidence "
        f"{_evidence(found)} ({'>=' if found >= EVIDENCE else '<'} {EVIDENCE:g})",
        {
            "ratio": ratio,
            "candidate_p99_ms": candidate_p99,
            "baseline_p99_ms": baseline_p99,
            "candidate_requests": n,
            "baseline_requests": int(baseline.answered.size),
            "slower": slower,
            "evidence": found,
        },
    )


def _agreement(
    step: pa.Table, candidate: ModelRef, baseline: ModelRef, bound: float, minimum: int
) -> GuardResult:
    """Rows the baseline answered and the candidate shadow-scored (a shadow record of the
    candidate's version, whatever alias shadowed it, with the same request id and row): the
    share answered alike."""
    shadow = pc.equal(step["assignment"], predictionlog.SHADOW)
    shadowed = pc.and_(shadow, pc.equal(step["version"], candidate.version))
    served = pc.and_(
        pc.and_(pc.invert(shadow), pc.less(step["status"], 400)),
        pc.and_(
            pc.equal(step["alias"], baseline.alias or ""),
            pc.equal(step["version"], baseline.version),
        ),
    )
    columns = ["request_id", "row", "label", "prediction"]
    sides = [
        step.filter(shadowed).select([*columns, "ts"]),
        step.filter(served).select(columns),
    ]
    pairs = sides[0].join(sides[1], ["request_id", "row"], right_suffix="_b", join_type="inner")
    pairs = pairs.sort_by("ts")
    n = pairs.num_rows
    same = _alike(pairs["label"], pairs["label_b"]) & _alike(
        pairs["prediction"], pairs["prediction_b"]
    )
    agreed = int(same.sum())
    found = peak_evidence(~same, 1 - bound)
    share = agreed / n if n else math.nan
    outcome: Outcome = "breach" if found >= EVIDENCE else ("pass" if n >= minimum else "no_data")
    summary = (
        f"{_percent(share)} of {n} shadowed rows alike; evidence {_evidence(found)}"
        if n
        else "no baseline row shadow-scored by the candidate in the log (is shadow sampling on?)"
    )
    return GuardResult(
        "agreement",
        outcome,
        False,
        f"min {bound:g}",
        summary,
        {"share": share, "rows": n, "evidence": found},
    )


def _alike(left: pa.ChunkedArray, right: pa.ChunkedArray) -> NDArray[np.bool_]:
    a = left.to_numpy(zero_copy_only=False).astype("float64")
    b = right.to_numpy(zero_copy_only=False).astype("float64")
    both_null = np.isnan(a) & np.isnan(b)
    return np.asarray(both_null | np.isclose(a, b, rtol=1e-9, atol=1e-12), dtype=bool)


def _label_metric(
    analysis: experiment.Analysis, name: str, bound: float, minimum: int, required: bool
) -> GuardResult:
    arms = {arm.role: arm for arm in analysis.arms if arm.role != "other"}
    labelled = {
        role: arms[role].labelled if role in arms else 0 for role in ("candidate", "baseline")
    }
    figures: dict[str, Figure] = {
        "candidate_labels": labelled["candidate"],
        "baseline_labels": labelled["baseline"],
    }
    found = analysis.differences.get(name)
    if found is None or min(labelled.values()) < minimum:
        return GuardResult(
            name,
            "no_data",
            required,
            f"max_regression {bound:g}",
            f"labelled rows: candidate {labelled['candidate']}, baseline "
            f"{labelled['baseline']}; {minimum} per arm needed",
            figures,
        )
    figures |= {"difference": found.estimate, "low": found.low, "high": found.high, "n": found.n}
    for role in ("candidate", "baseline"):
        figures[role] = arms[role].metrics.get(name, math.nan)
    if HIGHER_IS_BETTER[name]:
        breach = found.high < -bound
        worst_allowed = f"{-bound:+.4f}"
    else:
        breach = found.low > bound
        worst_allowed = f"{bound:+.4f}"
    return GuardResult(
        name,
        "breach" if breach else "pass",
        required,
        f"max_regression {bound:g}",
        f"candidate - baseline {found.estimate:+.4f}, 95% always-valid [{found.low:+.4f}, "
        f"{found.high:+.4f}] over {found.n} labels ({'beyond' if breach else 'not beyond'} "
        f"{worst_allowed})",
        figures,
    )


def _typed(feedback: pa.Table) -> pa.Table:
    if feedback.num_rows == 0 and feedback.num_columns == 0:
        return predictionlog.FEEDBACK_SCHEMA.empty_table()
    return feedback


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}%"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} ms"


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _evidence(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.3g}"


def _finite(value: Figure) -> Figure:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
