"""Task metrics of the output contract, computed the same way by training and gates."""

import numpy as np
import pandas as pd

from registry.contract import LABEL, PREDICTION, PROBABILITY, Task

HIGHER_IS_BETTER = {
    "accuracy": True,
    "f1": True,
    "roc_auc": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}
METRICS_BY_TASK: dict[Task, tuple[str, ...]] = {
    "classification": ("accuracy", "f1", "roc_auc", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
PROBABILITY_CLIP = 1e-15
"""Probabilities are clipped this far from 0 and 1, so that log loss stays finite."""


def compute(task: Task, y_true: np.ndarray, output: pd.DataFrame) -> dict[str, float]:
    """Every metric of `task` for predictions in the output contract."""
    from sklearn import metrics as sk  # imported here: readers of the constants need none

    if task == "classification":
        proba = np.clip(
            output[PROBABILITY].to_numpy(dtype="float64"), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP
        )
        label = output[LABEL].to_numpy()
        return {
            "accuracy": float(sk.accuracy_score(y_true, label)),
            "f1": float(sk.f1_score(y_true, label)),
            "roc_auc": float(sk.roc_auc_score(y_true, proba)),
            "log_loss": float(sk.log_loss(y_true, proba, labels=[0, 1])),
        }
    prediction = output[PREDICTION].to_numpy(dtype="float64")
    return {
        "rmse": float(np.sqrt(sk.mean_squared_error(y_true, prediction))),
        "mae": float(sk.mean_absolute_error(y_true, prediction)),
        "r2": float(sk.r2_score(y_true, prediction)),
    }
