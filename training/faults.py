"""Registering the fault-injection model under the demo classifier's signature."""

from importlib import resources
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema

from registry import contract, runs, versions
from registry.client import Client
from registry.refs import ModelRef
from training.datasets import load_split


def register_fault_model(
    name: str, client: Client, *, alias: str | None = None, **faults: Any
) -> ModelRef:
    """Log and register a FaultModel version with `faults` as its switches."""
    split = load_split("breast-cancer")
    config = {"features": split.features, "threshold": float(split.x_train.iloc[:, 0].mean())}
    params = {f"fault_{k}": str(v) for k, v in faults.items()}
    run_id = runs.start(client, "modelyard", f"fault-model-{name}", params=params).run_id

    def save(path: Path, metadata: Model) -> None:
        mlflow.pyfunc.save_model(
            path,
            python_model=str(resources.files("training.pyfunc") / "fault_model.py"),
            model_config=config | faults,
            signature=ModelSignature(
                inputs=Schema([ColSpec("double", f) for f in split.features]),
                outputs=contract.output_schema("classification"),
            ),
            input_example=split.x_train.head(3),
            pip_requirements=["mlflow", "pandas", "numpy"],
            mlflow_model=metadata,
        )

    model_id = runs.log_model(client, run_id, save)
    runs.finish(client, run_id, succeeded=True)
    ref = versions.register(client, f"models:/{model_id}", name, run_id=run_id, model_id=model_id)
    return versions.set_alias(client, ref, alias) if alias else ref
