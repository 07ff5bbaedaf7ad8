"""Registering the fault-injection model under the demo classifier's signature."""

from importlib import resources
from typing import Any

import mlflow
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from registry import versions
from registry.client import connect
from registry.refs import ModelRef
from training.datasets import load_split
from training.run import OUTPUTS


def register_fault_model(
    name: str, tracking_uri: str, *, alias: str | None = None, **faults: Any
) -> ModelRef:
    """Log and register a FaultModel version with `faults` as its switches."""
    client = connect(tracking_uri, timeout_s=30)
    mlflow.set_tracking_uri(client.tracking_uri)
    split = load_split("breast-cancer")
    config = {"features": split.features, "threshold": float(split.x_train.iloc[:, 0].mean())}
    with mlflow.start_run(run_name=f"fault-model-{name}") as run:
        mlflow.log_params({f"fault_{k}": v for k, v in faults.items()})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(resources.files("training.pyfunc") / "fault_model.py"),
            model_config=config | faults,
            signature=ModelSignature(
                inputs=Schema([ColSpec("double", f) for f in split.features]),
                outputs=OUTPUTS["classification"],
            ),
            input_example=split.x_train.head(3),
            pip_requirements=["mlflow", "pandas", "numpy"],
        )
        ref = versions.register(
            client, info.model_uri, name, run_id=run.info.run_id, model_id=info.model_id
        )
    return versions.set_alias(client, ref, alias) if alias else ref
