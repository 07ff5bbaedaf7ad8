"""A gate candidate whose `load_context` exits, hangs, patches the gate or looks for
credentials, as its `on_load` config says; `on_predict: one row` makes it answer one row.

Its answers, when it gets to give any, are useless: every row label 0 at probability 0.4.
The resilience benchmark and tests/test_gate_isolation.py log it as model code.
"""

import os
import sys
import time
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel, PythonModelContext


def _parent_environment() -> str:
    """Whether this process could read the environment of the process that started it."""
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as stream:
            stream.read()
    except OSError:
        return "refused"
    return "readable"


class Hostile(PythonModel):
    """Does `on_load` when loaded, and answers as `on_predict` says."""

    def load_context(self, context: PythonModelContext) -> None:
        config = context.model_config or {}
        self.on_predict = config.get("on_predict")
        action = config.get("on_load")
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
        if action == "snoop":
            seen = ",".join(sorted(os.environ))
            raise RuntimeError(f"env={seen} parent={_parent_environment()}")

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        rows = 1 if self.on_predict == "one row" else len(model_input)
        return pd.DataFrame({"label": np.zeros(rows, dtype="int64"), "probability": [0.4] * rows})


mlflow.models.set_model(Hostile())
