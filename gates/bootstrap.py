"""Paired bootstrap intervals on how much better (or worse) a candidate scores than a baseline.

Both models are scored on the same rows; each resample draws rows with replacement and scores
both models on that same draw, so the noise both share cancels out of the difference. A
resample is a vector of row counts (multinomial weights), which lets every metric be computed
for a whole block of resamples at once as a weighted metric over the original rows; with
integer counts that is exactly the metric of the resampled rows.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from registry.contract import LABEL, PREDICTION, PROBABILITY, Task
from registry.quality import HIGHER_IS_BETTER, PROBABILITY_CLIP

_BLOCK_CELLS = 2_000_000
"""Resamples are weighed in blocks of about this many cells, to bound memory."""


@dataclass(frozen=True, slots=True)
class Interval:
    """The candidate's improvement over the baseline on one metric (positive: better).

    `estimate` is the improvement on the evaluation data itself; `low`..`high` the percentile
    bootstrap interval at `confidence`.
    """

    metric: str
    estimate: float
    low: float
    high: float
    confidence: float

    def regresses_beyond(self, margin: float) -> bool:
        """True when even the interval's best case is worse than `margin` allows.

        Sampling noise alone (a retrain with another seed) leaves the interval straddling
        zero, so such a candidate passes; a NaN interval (undefined metric) never passes.
        """
        return not math.isfinite(self.high) or self.high < -margin


def improvements(
    task: Task,
    y_true: np.ndarray,
    candidate: pd.DataFrame,
    baseline: pd.DataFrame,
    metrics: Iterable[str],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Paired bootstrap interval of the improvement on each of `metrics`; the same seed, the same
    intervals.

    `candidate` and `baseline` are output-contract frames for the rows of `y_true`
    (classification: binary labels 0/1, `label` and `probability`; regression: `prediction`).
    """
    names = list(metrics)
    n = len(y_true)
    if n == 0:
        raise ValueError("no rows to resample")
    y = np.asarray(y_true, dtype="float64")
    full = np.ones((1, n))
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    diffs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    done = 0
    while done < resamples:
        size = min(block, resamples - done)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype("float64")
        for name, values in _paired_difference(task, y, candidate, baseline, weights).items():
            if name in diffs:
                diffs[name].append(values)
        done += size
    point = _paired_difference(task, y, candidate, baseline, full)
    tail = (1 - confidence) / 2
    intervals = {}
    for name in names:
        drawn = np.concatenate(diffs[name])
        finite = drawn[np.isfinite(drawn)]
        low, high = (
            (float(np.quantile(finite, tail)), float(np.quantile(finite, 1 - tail)))
            if finite.size
            else (math.nan, math.nan)
        )
        intervals[name] = Interval(name, float(point[name][0]), low, high, confidence)
    return intervals


def _paired_difference(
    task: Task, y: np.ndarray, candidate: pd.DataFrame, baseline: pd.DataFrame, w: np.ndarray
) -> dict[str, np.ndarray]:
    """Per resample (row of `w`), candidate minus baseline, signed so positive is better."""
    ours, theirs = weighted_metrics(task, y, candidate, w), weighted_metrics(task, y, baseline, w)
    return {
        name: (ours[name] - theirs[name]) * (1 if HIGHER_IS_BETTER[name] else -1) for name in ours
    }


def weighted_metrics(
    task: Task, y: np.ndarray, output: pd.DataFrame, w: np.ndarray
) -> dict[str, np.ndarray]:
    """Every metric of `task` once per row of weights `w` (shape resamples x rows).

    With all-ones weights this is registry.quality.compute; with integer counts it is compute
    on the rows repeated that many times.
    """
    total = w.sum(axis=1)
    if task == "classification":
        proba = np.clip(
            output[PROBABILITY].to_numpy(dtype="float64"), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP
        )
        label = output[LABEL].to_numpy(dtype="float64")
        positive = y == 1
        tp = w @ (positive & (label == 1))
        fp = w @ (~positive & (label == 1))
        fn = w @ (positive & (label != 1))
        denominator = 2 * tp + fp + fn
        losses = -(y * np.log(proba) + (1 - y) * np.log(1 - proba))
        return {
            "accuracy": (w @ (label == y)) / total,
            "f1": np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0),
            "roc_auc": _weighted_auc(positive, proba, w),
            "log_loss": (w @ losses) / total,
        }
    prediction = output[PREDICTION].to_numpy(dtype="float64")
    squared = (y - prediction) ** 2
    mean_y = (w @ y) / total
    spread = (w * (y[None, :] - mean_y[:, None]) ** 2).sum(axis=1)
    sse = w @ squared
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1 - sse / spread
    return {
        "rmse": np.sqrt(sse / total),
        "mae": (w @ np.abs(y - prediction)) / total,
        "r2": r2,
    }


def _weighted_auc(positive: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC with row weights: the weighted share of (positive, negative) pairs ranked right,
    ties counting one half (what sklearn's roc_auc_score computes with sample weights)."""
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    w_sorted = w[:, order]
    pos_sorted = positive[order]
    pos_in_group = np.add.reduceat(w_sorted * pos_sorted, starts, axis=1)
    neg_in_group = np.add.reduceat(w_sorted * ~pos_sorted, starts, axis=1)
    neg_below = np.cumsum(neg_in_group, axis=1) - neg_in_group
    ranked_right = (pos_in_group * (neg_below + 0.5 * neg_in_group)).sum(axis=1)
    pairs = pos_in_group.sum(axis=1) * neg_in_group.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pairs > 0, ranked_right / pairs, np.nan)
