"""Predict latency of a candidate against its baseline, timed interleaved.

Timing both in the same period, alternating which goes first in each round, exposes them
to the same load, cache and CPU-frequency drift; the ratio of their medians is then a fair
comparison even on a busy CI machine, where absolute milliseconds are not. The gate passes
calls into each version's own scoring process (gates/isolation.py) and times them here, so a
candidate cannot report its own time; the pipe's round trip (tens of microseconds) is in both.

Both are timed with native thread pools limited to one thread (here and, for the gate, in
each scoring process), which measures each model's CPU cost per call: with their default
pools, OpenBLAS threads left spinning after a scikit-learn predict starved torch's threads on
a 2-core machine, and a torch-vs-scikit-learn batch ratio jumped between 0.8 and 6.8 from run
to run; limited, it stayed within 0.73-0.79. Each sample is the best of a few back-to-back
calls, which drops one-off stalls.
"""

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from threadpoolctl import threadpool_limits

Predict = Callable[[pd.DataFrame], object]


@dataclass(frozen=True, slots=True)
class Latency:
    """Median predict times (ms) of both models, for one row and for a batch of `batch_rows`."""

    candidate_row_ms: float
    baseline_row_ms: float
    candidate_batch_ms: float
    baseline_batch_ms: float
    batch_rows: int
    rounds: int

    @property
    def row_ratio(self) -> float:
        """Candidate over baseline median, one row per call."""
        return self.candidate_row_ms / self.baseline_row_ms

    @property
    def batch_ratio(self) -> float:
        """Candidate over baseline median, `batch_rows` rows per call."""
        return self.candidate_batch_ms / self.baseline_batch_ms


def measure(
    candidate: Predict,
    baseline: Predict,
    frame: pd.DataFrame,
    *,
    rounds: int = 30,
    batch_rows: int = 100,
    repeat: int = 3,
    warmup: int = 3,
) -> Latency:
    """Time single-row and batch predicts of both, interleaved, after `warmup` untimed rounds;
    each sample is the fastest of `repeat` consecutive calls."""
    batch = frame.head(batch_rows)
    rows = [frame.iloc[[i % len(frame)]] for i in range(rounds + warmup)]
    times: dict[tuple[int, str], list[float]] = {
        (who, kind): [] for who in (0, 1) for kind in ("row", "batch")
    }
    models = (candidate, baseline)
    gc.collect()
    with threadpool_limits(limits=1):
        _interleave(models, rows, batch, times, repeat=repeat, warmup=warmup)
    median = {key: statistics.median(values) for key, values in times.items()}
    return Latency(
        candidate_row_ms=median[(0, "row")],
        baseline_row_ms=median[(1, "row")],
        candidate_batch_ms=median[(0, "batch")],
        baseline_batch_ms=median[(1, "batch")],
        batch_rows=len(batch),
        rounds=rounds,
    )


def _interleave(
    models: tuple[Predict, Predict],
    rows: list[pd.DataFrame],
    batch: pd.DataFrame,
    times: dict[tuple[int, str], list[float]],
    *,
    repeat: int,
    warmup: int,
) -> None:
    """Fill `times` (ms): per round, each model in turn, the other one first every other round."""
    for round_, row in enumerate(rows):
        order = (0, 1) if round_ % 2 == 0 else (1, 0)
        for who in order:
            for kind, request in (("row", row), ("batch", batch)):
                fastest = min(_seconds(models[who], request) for _ in range(repeat))
                if round_ >= warmup:
                    times[(who, kind)].append(fastest * 1000)


def _seconds(predict: Predict, request: pd.DataFrame) -> float:
    started = time.perf_counter()
    predict(request)
    return time.perf_counter() - started
