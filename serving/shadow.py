"""Shadow scoring: a sample of production traffic also scored by staging, off the request path.

Only agreement is recorded, per (production version, staging version) pair: the share of
rows with the same answer (labels, or exact values for other outputs) and, for numeric
outputs, the mean absolute difference.
"""

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from registry.contract import compared_column
from serving.metrics import Metrics
from serving.pool import PredictPool
from serving.protocol import Decoded

if TYPE_CHECKING:
    from serving.model import LoadedModel
    from serving.slots import ServedModel

SHADOW_BACKLOG = 16
"""Shadow predictions queued or running at most; beyond that a sample is skipped and counted."""


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


class ShadowScorer:
    """Scores sampled production requests with the shadow alias on a thread of its own, with
    a bounded backlog: it never queues ahead of production predictions, a slow shadow cannot
    pile up work, and one thread tallies."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.pool = PredictPool(1, "shadow")
        self._backlog = threading.BoundedSemaphore(SHADOW_BACKLOG)

    def offer(
        self,
        served: "ServedModel",
        primary: "LoadedModel",
        shadow: "LoadedModel",
        decoded: Decoded,
        answer: Any,
    ) -> None:
        """Score `decoded`, which `primary` answered with `answer`, with `shadow` too; record
        agreement only. Skipped and counted when the backlog is full or `shadow` is stuck."""
        pair = (primary.ref.version, shadow.ref.version)
        labels = (served.name, *pair)
        if shadow.pool.exhausted or not self._backlog.acquire(blocking=False):
            self.metrics.shadow_skipped.labels(*labels).inc()
            return

        def score() -> None:
            """In the shadow thread: predict and tally (one thread: no racing updates)."""
            try:
                staging = shadow.predict(decoded)
                tally = served.shadow.setdefault(pair, Agreement())
                before = (tally.rows, tally.agreed)
                tally.add(answer, staging)
                self.metrics.shadow_rows.labels(*labels).inc(tally.rows - before[0])
                self.metrics.shadow_agreed.labels(*labels).inc(tally.agreed - before[1])
            except Exception:
                self.metrics.shadow_errors.labels(*labels).inc()
            finally:
                self._backlog.release()

        self.pool.submit(score)

    def stop(self) -> None:
        """Take no more samples; a running one ends on its own."""
        self.pool.shutdown()
