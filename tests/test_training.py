"""Training: real versions in a real registry, artifacts really in S3, one output contract."""

import hashlib
import io
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as tracking_utils
from typer.testing import CliRunner

from modelyard.cli import app
from registry.client import connect
from registry.contract import (
    HOLDOUT_ARTIFACT,
    HOLDOUT_SHA256_PARAM,
    HOLDOUT_TARGET,
    TRAINING_ROWS_ARTIFACT,
    read_training_rows,
    row_hashes,
)
from tests.conftest import BUCKET, S3, DemoRegistry
from training import models
from training.datasets import load_split
from training.run import TrainSpec, train


def _s3_keys(s3: S3, contains: str) -> list[str]:
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)  # type: ignore[attr-defined]
    return [o["Key"] for page in pages for o in page.get("Contents", []) if contains in o["Key"]]


def _read_s3(s3: S3, key: str) -> bytes:
    return s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()  # type: ignore[attr-defined,no-any-return]


def test_training_model_artifacts_are_in_s3_with_signature(demo_registry: DemoRegistry, s3: S3):
    client = MlflowClient(demo_registry.tracking_uri)
    version = client.get_model_version("cancer-classifier", demo_registry.classifier_torch.version)
    model_id = version.source.removeprefix("models:/")  # MLflow 3: the logged model's id
    mlmodel_key = next(k for k in _s3_keys(s3, model_id) if k.endswith("/MLmodel"))
    mlmodel = yaml.safe_load(_read_s3(s3, mlmodel_key))
    inputs = yaml.safe_load(mlmodel["signature"]["inputs"])
    outputs = yaml.safe_load(mlmodel["signature"]["outputs"])
    assert [c["name"] for c in inputs][:2] == ["mean_radius", "mean_texture"]
    assert [(c["name"], c["type"]) for c in outputs] == [
        ("label", "long"),
        ("probability", "double"),
    ]
    assert any(k.endswith("weights.pt") for k in _s3_keys(s3, model_id))
    assert any(k.endswith("input_example.json") for k in _s3_keys(s3, model_id))


def test_training_logs_holdout_with_target_in_s3(demo_registry: DemoRegistry, s3: S3):
    run_id = demo_registry.classifier_sklearn.run_id
    assert run_id is not None
    (key,) = _s3_keys(s3, f"{run_id}/artifacts/{HOLDOUT_ARTIFACT}")
    holdout = pd.read_parquet(io.BytesIO(_read_s3(s3, key)))
    split = load_split("breast-cancer")
    assert len(holdout) == len(split.x_holdout)
    assert list(holdout.columns) == [*split.features, HOLDOUT_TARGET]


def test_training_pins_its_exam(demo_registry: DemoRegistry, s3: S3, tmp_path: Path):
    """The run records the holdout's sha256 as a param (params cannot change later) and a
    digest of every row it trained on, none of them a holdout row."""
    run_id = demo_registry.classifier_sklearn.run_id
    assert run_id is not None
    params = MlflowClient(demo_registry.tracking_uri).get_run(run_id).data.params
    (holdout_key,) = _s3_keys(s3, f"{run_id}/artifacts/{HOLDOUT_ARTIFACT}")
    assert params[HOLDOUT_SHA256_PARAM] == hashlib.sha256(_read_s3(s3, holdout_key)).hexdigest()
    (rows_key,) = _s3_keys(s3, f"{run_id}/artifacts/{TRAINING_ROWS_ARTIFACT}")
    path = tmp_path / "rows.parquet"
    path.write_bytes(_read_s3(s3, rows_key))
    columns, trained = read_training_rows(path, max_rows=10_000)
    split = load_split("breast-cancer")
    assert columns == sorted(split.features)
    assert set(trained) == set(row_hashes(split.x_train, split.features))
    assert not set(trained) & set(row_hashes(split.x_holdout, split.features))


def test_training_goes_through_its_client_only(tracking_uri: str):
    """With MLflow's process-wide tracking URI pointing nowhere, training still logs and registers
    through the client it was given, and leaves that URI as it found it."""
    previous = tracking_utils._tracking_uri
    mlflow.set_tracking_uri("http://127.0.0.1:9")
    try:
        ref = train(TrainSpec("sklearn", model_name="client-only"), connect(tracking_uri))
        assert tracking_utils._tracking_uri == "http://127.0.0.1:9"
    finally:
        mlflow.set_tracking_uri(previous)
    client = MlflowClient(tracking_uri)
    assert ref.run_id is not None
    run = client.get_run(ref.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["framework"] == "sklearn"
    assert run.data.metrics["holdout_accuracy"] > 0.9
    source = client.get_model_version("client-only", ref.version).source
    logged = client.get_logged_model(source.removeprefix("models:/"))
    assert (logged.source_run_id, str(logged.status)) == (ref.run_id, "READY")
    assert [output.model_id for output in run.outputs.model_outputs] == [logged.model_id]


def test_training_sets_aliases(demo_registry: DemoRegistry):
    client = MlflowClient(demo_registry.tracking_uri)
    aliases = client.get_registered_model("cancer-classifier").aliases
    assert aliases == {
        "production": demo_registry.classifier_sklearn.version,
        "staging": demo_registry.classifier_torch.version,
    }
    assert client.get_model_version_by_alias("diabetes-regressor", "production").status == "READY"


def test_classifier_versions_answer_in_one_contract(demo_registry: DemoRegistry):
    split = load_split("breast-cancer")
    request = split.x_holdout.head(20)
    answers = [
        mlflow.pyfunc.load_model(ref.uri).predict(request)
        for ref in (demo_registry.classifier_sklearn, demo_registry.classifier_torch)
    ]
    for answer in answers:
        assert list(answer.columns) == ["label", "probability"]
        assert answer["label"].dtype == np.int64
        assert answer["probability"].between(0, 1).all()
    agreement = (answers[0]["label"] == answers[1]["label"]).mean()
    assert agreement >= 0.85  # two frameworks, same task: they mostly agree


def test_regressor_answers_prediction_column(demo_registry: DemoRegistry):
    split = load_split("diabetes")
    answer = mlflow.pyfunc.load_model(demo_registry.regressor.uri).predict(split.x_holdout)
    assert list(answer.columns) == ["prediction"]
    residual = answer["prediction"].to_numpy() - split.y_holdout.to_numpy()
    assert np.sqrt(np.mean(residual**2)) < split.y_holdout.std()  # better than the mean


def test_torch_training_is_deterministic_under_a_seed():
    split = load_split("breast-cancer")
    first, second, other = (
        models.fit_torch(split, hidden=8, epochs=20, lr=0.01, seed=seed) for seed in (3, 3, 4)
    )
    weights = "0.weight"  # the first layer of the Sequential
    assert np.array_equal(first["net"][weights].numpy(), second["net"][weights].numpy())
    assert not np.array_equal(first["net"][weights].numpy(), other["net"][weights].numpy())


def test_split_is_fixed_by_its_seed():
    assert load_split("diabetes").x_holdout.index.equals(load_split("diabetes").x_holdout.index)
    assert not load_split("diabetes", split_seed=1).x_holdout.index.equals(
        load_split("diabetes").x_holdout.index
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "sklearn", "--dataset", "mnist"], "--dataset"),
        (["train", "sklearn", "--estimator", "svm"], "--estimator"),
        (["train", "torch", "--epochs", "0"], "--epochs"),
    ],
)
def test_train_bad_option_fails_cleanly(argv: list[str], message: str):
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_train_unreachable_tracking_server_fails_cleanly(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    result = CliRunner().invoke(app, ["train", "sklearn"])
    assert result.exit_code == 1
    assert "not reachable" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
