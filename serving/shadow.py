"""Shadow scoring: a sample of production traffic also scored by staging, off the request path.

Only agreement is recorded, per (production version, staging version) pair: the share of
rows with the same answer (labels, or exact values for other outputs) and, for numeric
outputs, the mean absolute difference.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from registry.contract import compared_column


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
