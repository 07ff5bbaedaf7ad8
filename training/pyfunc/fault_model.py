"""A fault-injection model for tests and benchmarks, logged as code like any other version.

It answers in the classification contract (`label`, `probability`) from its first input
column, and its `model_config` switches inject faults: `load_delay_s`, `fail_load`,
`fail_predict` (so warm-up fails), `predict_delay_s`, `raise_on` (raise when the first
column holds this value), `hang_on` with `hang_s` (sleep that long when the first column
holds this value), `flip_fraction` (disagree with itself on that share of rows).
"""

import time
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel, PythonModelContext


class FaultModel(PythonModel):
    """Deterministic answers, with faults switched on by configuration."""

    def load_context(self, context: PythonModelContext) -> None:
        self.config: dict[str, Any] = dict(context.model_config or {})
        self.features: list[str] = self.config["features"]
        time.sleep(float(self.config.get("load_delay_s", 0)))
        if self.config.get("fail_load"):
            raise RuntimeError("fault model: configured to fail at load")

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Probability rises with the first feature; faults as configured."""
        if self.config.get("fail_predict"):
            raise RuntimeError("fault model: configured to fail every predict")
        time.sleep(float(self.config.get("predict_delay_s", 0)))
        first = model_input[self.features[0]].to_numpy(dtype="float64")
        if "hang_on" in self.config and (first == float(self.config["hang_on"])).any():
            time.sleep(float(self.config["hang_s"]))
        if "raise_on" in self.config and (first == float(self.config["raise_on"])).any():
            raise ValueError("fault model: input holds the configured raise_on value")
        probability = 1.0 / (1.0 + np.exp(-(first - float(self.config.get("threshold", 0)))))
        label = (probability >= 0.5).astype("int64")
        flip = float(self.config.get("flip_fraction", 0))
        if flip:
            rows = np.arange(len(first)) + (first * 1000).astype("int64")
            label = np.where(rows % 100 < round(flip * 100), 1 - label, label)
        return pd.DataFrame({"label": label, "probability": probability})


mlflow.models.set_model(FaultModel())
