"""A gate candidate whose `load_context` exits, hangs or patches the gate, as configured.

Its answers, when it gets to give any, are useless: every row label 0 at probability 0.4.
"""

import os
import sys
import time
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel, PythonModelContext


class Hostile(PythonModel):
    """Does `on_load` when loaded."""

    def load_context(self, context: PythonModelContext) -> None:
        action = (context.model_config or {}).get("on_load")
        if action == "sys.exit":
            sys.exit(0)
        if action == "os._exit":
            os._exit(0)
        if action == "hang":
            time.sleep(3600)
        if action == "patch":
            import gates.verdict
            import registry.quality

            def passed(policy: Any, evidence: Any) -> Any:
                check = gates.verdict.Check("patched", 1, 1, "", True)
                return gates.verdict.Verdict((check,))

            gates.verdict.judge = passed
            registry.quality.compute = lambda task, y_true, output: {"accuracy": 1.0}

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        rows = len(model_input)
        return pd.DataFrame({"label": np.zeros(rows, dtype="int64"), "probability": [0.4] * rows})


mlflow.models.set_model(Hostile())
