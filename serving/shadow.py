"""Shadow scoring: a sample of production traffic also scored by staging, off the request path.

Agreement is tallied per (production version, staging version) pair: the share of rows with
the same answer (labels, or exact values for other outputs) and, for numeric outputs, the mean
absolute difference. A sample whose production record is in the prediction log gets its shadow
answer logged too (`ShadowLog`), so the log holds both answers to each of its rows.

Sampled requests are buffered, not scored one by one: every SHADOW_INTERVAL_S (or sooner,
once SHADOW_BATCH_ROWS rows wait) one thread merges the buffered requests that share a shadow
version and a validated column layout into one predict call, splits the answer back per
request and tallies each. One predict of a few hundred rows costs about what one row costs,
so the shadow's share of the serving core (and of the GIL) shrinks by the batch size; a 10%
sample scored one request at a time cost production 1.30x its p99 (bench/swap.py, shadow).
"""

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from registry.contract import compared_column
from registry.predictionlog import SHADOW
from registry.refs import ModelRef
from serving.batching import predict_together
from serving.capture import PredictionCapture, Served
from serving.metrics import Metrics
from serving.model import Predicted, rows_of
from serving.protocol import Decoded

if TYPE_CHECKING:
    from serving.model import LoadedModel
    from serving.slots import ServedModel

logger = logging.getLogger(__name__)

SHADOW_INTERVAL_S = 0.5
"""Buffered samples are scored at least this often."""
SHADOW_BATCH_ROWS = 2048
"""Scoring starts early once this many rows are buffered."""
SHADOW_BUFFER_ROWS = 8192
"""Rows buffered at most (waiting or being scored); beyond, a sample is skipped and counted."""


@dataclass
class Agreement:
    """Running agreement between two versions."""

    rows: int = 0
    agreed: int = 0
    abs_diff_sum: float = 0.0

    def add(self, production: Any, staging: Any) -> None:
        """Compare two answers to the same request and add them to the tally."""
        left, right = _column(production), _column(staging)
        if left.shape != right.shape:
            self.rows += len(left)
            return
        self.rows += len(left)
        self.agreed += int(np.sum(left == right))
        if np.issubdtype(left.dtype, np.number) and np.issubdtype(right.dtype, np.number):
            self.abs_diff_sum += float(np.sum(np.abs(left.astype(float) - right.astype(float))))

    def summary(self) -> dict[str, float | int | None]:
        """Rows compared, share agreeing, mean absolute difference."""
        return {
            "rows": self.rows,
            "agreement": self.agreed / self.rows if self.rows else None,
            "mean_abs_diff": self.abs_diff_sum / self.rows if self.rows else None,
        }


def _column(answer: Any) -> np.ndarray:
    """The column compared: the contract's label when there is one, else the first output."""
    if isinstance(answer, pd.DataFrame):
        column: np.ndarray = answer[compared_column(answer)].to_numpy()
        return column
    return np.asarray(answer).reshape(len(answer), -1)[:, 0]


@dataclass(frozen=True, slots=True)
class ShadowLog:
    """Where a sample's shadow answer goes in the prediction log: beside the production record
    of the same request, under its request id and rows."""

    capture: PredictionCapture
    alias: str
    """The shadow alias."""
    request_id: str
    rows: int
    """The production record's rows."""
    sample_rate: float

    def record(self, shadow: ModelRef, predicted: Predicted, latency_ms: float) -> None:
        """Queue the shadow's answer: one `shadow` record per row, without inputs (the
        production record holds them)."""
        self.capture.record(
            shadow.name,
            Served(
                request_id=self.request_id,
                ts_us=time.time_ns() // 1000,
                alias=self.alias,
                version=shadow.version,
                run_id=shadow.run_id,
                assignment=SHADOW,
                salt=None,
                routing_key=None,
                sample_rate=self.sample_rate,
                status=200,
                latency_ms=latency_ms,
                rows=self.rows,
                outputs=predicted,
            ),
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampled production request: what it asked, what production answered, who scores it."""

    served: "ServedModel"
    primary: "LoadedModel"
    shadow: "LoadedModel"
    decoded: Decoded
    answer: Any
    rows: int
    log: ShadowLog | None
    """Where its shadow answer is logged; None: not logged."""

    @property
    def labels(self) -> tuple[str, str, str]:
        """Its metric labels: model, production version, shadow version."""
        return (self.served.name, self.primary.ref.version, self.shadow.ref.version)

    def merge_key(self) -> tuple[Any, ...] | None:
        """Samples with equal keys predict as one call; None: this one predicts alone."""
        batch = self.decoded.batch
        if batch is None or self.decoded.params is not None:
            return None
        return (id(self.shadow), batch.layout)


class ShadowScorer:
    """Scores sampled production requests with the shadow alias in batches, on one thread of
    its own, with a bounded buffer: it never delays or fails a production request, a slow
    shadow cannot pile up work, and one thread tallies."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._buffer: list[Sample] = []
        self._buffered_rows = 0
        """Rows waiting in the buffer or being scored now."""
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def offer(
        self,
        served: "ServedModel",
        primary: "LoadedModel",
        shadow: "LoadedModel",
        decoded: Decoded,
        answer: Any,
        log: ShadowLog | None,
    ) -> None:
        """Score `decoded`, which `primary` answered with `answer`, with `shadow` too, soon;
        tally agreement and, with `log`, log the shadow's answer. Skipped and counted when the
        buffer is full or `shadow` is stuck. Never blocks on scoring."""
        sample = Sample(served, primary, shadow, decoded, answer, max(rows_of(decoded), 1), log)
        with self._wake:
            full = self._buffered_rows + sample.rows > SHADOW_BUFFER_ROWS
            if self._closed or full or shadow.pool.exhausted:
                skipped = not self._closed
            else:
                skipped = False
                self._buffer.append(sample)
                self._buffered_rows += sample.rows
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
                    self._thread.start()
                if len(self._buffer) == 1 or self._buffered_rows >= SHADOW_BATCH_ROWS:
                    self._wake.notify()
        if skipped:
            self.metrics.shadow_skipped.labels(*sample.labels).inc()

    def stop(self) -> None:
        """Take no more samples and drop buffered ones; a running predict ends on its own."""
        with self._wake:
            self._closed = True
            self._buffer = []
            self._wake.notify()

    def _run(self) -> None:
        """The shadow thread: once a sample arrives, wait an interval for more, score them all."""
        while True:
            with self._wake:
                while not self._closed and not self._buffer:
                    self._wake.wait()
                if not self._closed and self._buffered_rows < SHADOW_BATCH_ROWS:
                    self._wake.wait(SHADOW_INTERVAL_S)  # let more samples join this round
                if self._closed:
                    return
                samples, self._buffer = self._buffer, []
            try:
                self._score(samples)
            except Exception:  # the thread must outlive any round; errors are counted inside
                logger.exception("shadow scoring failed on %d samples", len(samples))
            finally:
                with self._wake:
                    self._buffered_rows -= sum(s.rows for s in samples)
            del samples  # hold no released version while idle

    def _score(self, samples: list[Sample]) -> None:
        """Predict each group of samples that can merge as one call (each alone if that call
        raises), then tally per sample: rows, agreement and errors count per request. A sample
        tallied is logged (when it has a log) with the group's predict time as its latency."""
        groups: dict[Any, list[Sample]] = defaultdict(list)
        for i, sample in enumerate(samples):
            groups[sample.merge_key() or ("alone", i)].append(sample)
        for group in groups.values():
            began = time.perf_counter()
            results = predict_together(group[0].shadow, [s.decoded for s in group])
            took_ms = (time.perf_counter() - began) * 1000
            for sample, (staging, _) in zip(group, results, strict=True):
                if staging is None:  # its predict raised
                    self.metrics.shadow_errors.labels(*sample.labels).inc()
                elif self._tally(sample, staging.predictions) and sample.log is not None:
                    sample.log.record(sample.shadow.ref, staging, took_ms)

    def _tally(self, sample: Sample, staging: Any) -> bool:
        """Add one request's comparison to its pair's agreement and metrics; False when the
        answers cannot be compared (counted as an error)."""
        labels = sample.labels
        pair = labels[1:]
        try:
            tally = sample.served.shadow.setdefault(pair, Agreement())
            before = (tally.rows, tally.agreed)
            tally.add(sample.answer, staging)
        except Exception:
            self.metrics.shadow_errors.labels(*labels).inc()
            return False
        self.metrics.shadow_rows.labels(*labels).inc(tally.rows - before[0])
        self.metrics.shadow_agreed.labels(*labels).inc(tally.agreed - before[1])
        return True
