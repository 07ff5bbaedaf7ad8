"""The adapter over MLflow's internals, pinned on real logged models: an MLflow upgrade that
changes what it relies on fails here first."""

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.pyfunc import PyFuncModel
from sklearn.linear_model import LogisticRegression

from registry import loading
from registry.pyfunc import enforce_params, python_model, sklearn_estimator
from tests.conftest import DemoRegistry
from training.datasets import load_split


@pytest.fixture(scope="module")
def contract_model(
    demo_registry: DemoRegistry, tmp_path_factory: pytest.TempPathFactory
) -> PyFuncModel:
    """The demo classifier as serving loads it: a PythonModel logged as code."""
    return loading.load(
        demo_registry.classifier_sklearn,
        tmp_path_factory.mktemp("cache"),
        demo_registry.tracking_uri,
    )


@pytest.fixture(scope="module")
def sklearn_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LogisticRegression saved with the sklearn flavour, predict_proba, and a params schema."""
    rng = np.random.default_rng(5)
    x = pd.DataFrame(rng.normal(size=(60, 2)), columns=["a", "b"])
    y = (x["a"] > x["b"]).astype("int64")
    estimator = LogisticRegression().fit(x, y)
    path = tmp_path_factory.mktemp("sklearn") / "model"
    mlflow.sklearn.save_model(
        estimator,
        path,
        signature=infer_signature(x, estimator.predict_proba(x), params={"top_k": 3}),
        input_example=x.head(2),
        pyfunc_predict_fn="predict_proba",
    )
    return path


@pytest.fixture
def sklearn_model(sklearn_path: Path, monkeypatch: pytest.MonkeyPatch) -> PyFuncModel:
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # skops, saved here
    return mlflow.pyfunc.load_model(str(sklearn_path))


class HintedModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A PythonModel whose signature MLflow infers from its type hints."""

    def predict(self, context: Any, model_input: list[str], params: Any = None) -> list[str]:
        return [text.upper() for text in model_input]


def test_python_model_calls_as_pyfunc_does(contract_model: PyFuncModel):
    found = python_model(contract_model)
    assert found is not None
    model, context = found
    frame = load_split("breast-cancer").x_holdout.head(4)
    direct = model.predict(context, frame, params=None)
    pd.testing.assert_frame_equal(direct, contract_model.predict(frame))
    assert sklearn_estimator(contract_model) is None


def test_sklearn_estimator_names_the_method_pyfunc_calls(sklearn_model: PyFuncModel):
    found = sklearn_estimator(sklearn_model)
    assert found is not None
    estimator, method = found
    assert isinstance(estimator, LogisticRegression)
    assert method == "predict_proba"
    rows = pd.DataFrame({"a": [0.5, -1.0], "b": [1.0, -2.0]})
    np.testing.assert_array_equal(getattr(estimator, method)(rows), sklearn_model.predict(rows))
    assert python_model(sklearn_model) is None


def test_enforce_params_defaults_and_refuses_as_pyfunc_does(sklearn_model: PyFuncModel):
    schema = sklearn_model.metadata.get_params_schema()
    assert enforce_params(schema, None) == {"top_k": 3}
    assert enforce_params(schema, {"top_k": 5}) == {"top_k": 5}
    with pytest.raises(MlflowException) as refused:
        enforce_params(schema, {"top_k": "many"})
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "top_k" in refused.value.message


def test_python_model_leaves_type_hinted_signatures_to_pyfunc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "hinted"
    mlflow.pyfunc.save_model(path, python_model=HintedModel(), pip_requirements=[])
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # cloudpickle, saved here
    hinted = mlflow.pyfunc.load_model(str(path))
    assert hinted.predict(["a"]) == ["A"]
    assert python_model(hinted) is None
    assert sklearn_estimator(hinted) is None
