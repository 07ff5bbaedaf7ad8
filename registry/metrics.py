"""The task metrics of the output contract, computed the same way by training and gates."""

from typing import Literal

import numpy as np
import pandas as pd
from sklearn import metrics as sk

Task = Literal["classification", "regression"]

HIGHER_IS_BETTER = {
    "accuracy": True,
    "f1": True,
    "roc_auc": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}
METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1", "roc_auc", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}


def task_of(output: pd.DataFrame) -> Task:
    """The task an output-contract frame answers: classification carries `probability`."""
    return "classification" if "probability" in output.columns else "regression"


def compute(task: Task, y_true: np.ndarray, output: pd.DataFrame) -> dict[str, float]:
    """Every metric of `task` for predictions in the output contract."""
    if task == "classification":
        proba = np.clip(output["probability"].to_numpy(dtype="float64"), 1e-15, 1 - 1e-15)
        label = output["label"].to_numpy()
        return {
            "accuracy": float(sk.accuracy_score(y_true, label)),
            "f1": float(sk.f1_score(y_true, label)),
            "roc_auc": float(sk.roc_auc_score(y_true, proba)),
            "log_loss": float(sk.log_loss(y_true, proba, labels=[0, 1])),
        }
    prediction = output["prediction"].to_numpy(dtype="float64")
    return {
        "rmse": float(np.sqrt(sk.mean_squared_error(y_true, prediction))),
        "mae": float(sk.mean_absolute_error(y_true, prediction)),
        "r2": float(sk.r2_score(y_true, prediction)),
    }
