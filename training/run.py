"""One training run: fit, log to MLflow (params, metrics, holdout, model), register, alias.

The run pins its exam: the holdout's sha256 as a param, and a digest of every training row as
an artifact, so a gate can tell a changed holdout and a candidate trained on its rows.
"""

import hashlib
import logging
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import mlflow
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc.model import PythonModelContext
from mlflow.types import ColSpec, Schema

from registry import contract, quality, runs, versions
from registry.client import Client
from registry.refs import ModelRef
from training import models
from training.datasets import Split, load_split
from training.pyfunc.contract_model import ContractModel

logger = logging.getLogger(__name__)

Framework = Literal["sklearn", "torch"]

DEFAULT_MODEL_NAMES = {"breast-cancer": "cancer-classifier", "diabetes": "diabetes-regressor"}


@dataclass(frozen=True)
class TrainSpec:
    """What to train and where to register it."""

    framework: Framework
    dataset: str = "breast-cancer"
    model_name: str | None = None
    alias: str | None = None
    seed: int = 0
    split_seed: int = 0
    experiment: str = "modelyard"
    shuffle_labels: bool = False
    estimator: models.Estimator = "linear"
    hidden: int = 32
    epochs: int = 300
    lr: float = 0.01

    @property
    def registered_name(self) -> str:
        """The registered model's name: given, or the dataset's default."""
        return self.model_name or DEFAULT_MODEL_NAMES[self.dataset]


def train(spec: TrainSpec, client: Client) -> ModelRef:
    """Train as `spec` says, log and register a version; point `spec.alias` at it if given."""
    split = load_split(spec.dataset, split_seed=spec.split_seed)
    if spec.shuffle_labels:
        split = models.shuffled(split, spec.seed)
    params = {k: str(v) for k, v in asdict(spec).items() if v is not None}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        holdout, training_rows = _write_exam(split, workdir)
        params[contract.HOLDOUT_SHA256_PARAM] = hashlib.sha256(holdout.read_bytes()).hexdigest()
        run_id = runs.start(client, spec.experiment, None, params=params).run_id
        try:
            runs.attach(client, run_id, [holdout], str(Path(contract.HOLDOUT_ARTIFACT).parent))
            runs.attach(
                client, run_id, [training_rows], str(Path(contract.TRAINING_ROWS_ARTIFACT).parent)
            )
            model_id = _fit_and_log(spec, split, client, run_id, workdir)
            ref = versions.register(
                client,
                f"models:/{model_id}",
                spec.registered_name,
                run_id=run_id,
                model_id=model_id,
            )
        except BaseException:
            runs.finish(client, run_id, succeeded=False)
            raise
    runs.finish(client, run_id, succeeded=True)
    if spec.alias:
        ref = versions.set_alias(client, ref, spec.alias)
    return ref


def _write_exam(split: Split, workdir: Path) -> tuple[Path, Path]:
    """The holdout (features and target) and the digests of the training rows, as files."""
    holdout = workdir / Path(contract.HOLDOUT_ARTIFACT).name
    split.holdout_frame().to_parquet(holdout)
    training_rows = workdir / Path(contract.TRAINING_ROWS_ARTIFACT).name
    contract.write_training_rows(training_rows, split.x_train)
    return holdout, training_rows


def _fit_and_log(spec: TrainSpec, split: Split, client: Client, run_id: str, workdir: Path) -> str:
    """Fit, log the holdout metrics and the model; the logged model's id."""
    logger.info("training %s on %s (seed %d)", spec.framework, spec.dataset, spec.seed)
    artifacts, config = _fit(spec, split, workdir)
    holdout_metrics = _evaluate(split, artifacts, config)
    runs.log_metrics(client, run_id, {f"holdout_{k}": v for k, v in holdout_metrics.items()})
    logger.info("holdout metrics: %s", _fmt(holdout_metrics))
    logger.info("logging the model to MLflow (takes a few seconds)")

    def save(path: Path, metadata: Model) -> None:
        mlflow.pyfunc.save_model(
            path,
            python_model=str(resources.files("training.pyfunc") / "contract_model.py"),
            artifacts={k: str(v) for k, v in artifacts.items()},
            model_config=config,
            signature=ModelSignature(
                inputs=Schema([ColSpec("double", f) for f in split.features]),
                outputs=contract.output_schema(split.task),
            ),
            input_example=split.x_train.head(3),
            pip_requirements=_requirements(spec.framework),
            mlflow_model=metadata,
        )

    return runs.log_model(client, run_id, save)


def _fit(spec: TrainSpec, split: Split, workdir: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    config: dict[str, Any] = {
        "task": split.task,
        "features": split.features,
        "framework": spec.framework,
    }
    if spec.framework == "sklearn":
        pipeline = models.fit_sklearn(split, spec.estimator, spec.seed)
        return {"pipeline": models.save_sklearn(pipeline, workdir)}, config
    state = models.fit_torch(
        split, hidden=spec.hidden, epochs=spec.epochs, lr=spec.lr, seed=spec.seed
    )
    return {"weights": models.save_torch(state, workdir)}, config | {"hidden": spec.hidden}


def _evaluate(split: Split, artifacts: dict[str, Path], config: dict[str, Any]) -> dict[str, float]:
    """Holdout metrics of exactly the code that will serve the model."""
    context = PythonModelContext(
        artifacts={k: str(v) for k, v in artifacts.items()}, model_config=config
    )
    model = ContractModel()
    model.load_context(context)
    output = model.predict(None, split.x_holdout)
    return quality.compute(split.task, split.y_holdout.to_numpy(), output)


def _requirements(framework: Framework) -> list[str]:
    packages = ["mlflow", "numpy", "pandas", "scikit-learn", "skops"]
    if framework == "torch":
        packages.append("torch")
    return [f"{p}=={version(p)}" for p in packages]


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in values.items())
