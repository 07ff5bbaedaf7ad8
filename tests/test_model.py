"""The direct call into a flavour's model answers as MLflow's pyfunc does."""

import json
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from registry.refs import ModelRef
from serving import protocol
from serving.model import prepare


@pytest.fixture(scope="module")
def named_sklearn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LogisticRegression fitted on a named DataFrame, saved with the sklearn flavour."""
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.normal(size=(80, 3)), columns=["a", "b", "c"])
    y = (x["a"] - 2 * x["c"] > 0).astype("int64")
    estimator = LogisticRegression().fit(x, y)
    path = tmp_path_factory.mktemp("named") / "model"
    mlflow.sklearn.save_model(
        estimator,
        path,
        signature=infer_signature(x, estimator.predict_proba(x)),
        input_example=x.head(2),
        pyfunc_predict_fn="predict_proba",
    )
    return path


def test_named_columns_in_any_order_predict_as_pyfunc(
    named_sklearn: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # skops, saved here
    pyfunc = mlflow.pyfunc.load_model(str(named_sklearn))
    ref = ModelRef("named", "1")
    loaded = prepare(ref, pyfunc, strict=False, inline_below_ms=1.0, started=time.monotonic())
    rows = pd.DataFrame({"a": [0.5, -1.0, 2.0], "b": [1.0, 0.0, -3.0], "c": [-0.5, 1.5, 0.25]})
    expected = pyfunc.predict(rows)
    records = [{"note": "x", "c": c, "a": a, "b": b} for a, b, c in rows.to_numpy()]
    bodies = [
        {"dataframe_split": {"columns": ["a", "b", "c"], "data": rows.to_numpy().tolist()}},
        {"dataframe_records": records},  # other key order, one column the model never saw
        {
            "dataframe_split": {
                "columns": ["c", "a", "b"],
                "data": rows[["c", "a", "b"]].values.tolist(),
            }
        },
    ]
    for body in bodies:
        decoded = protocol.decode(
            json.dumps(body).encode(), "application/json", loaded.spec, loaded.schema
        )
        np.testing.assert_allclose(loaded.predict(decoded), expected, rtol=1e-12)


def test_prepare_leaves_warning_filters_alone(
    named_sklearn: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # skops, saved here
    pyfunc = mlflow.pyfunc.load_model(str(named_sklearn))
    with warnings.catch_warnings():
        before = list(warnings.filters)
        loaded = prepare(
            ModelRef("named", "1"), pyfunc, strict=False, inline_below_ms=1.0, started=0.0
        )
        assert loaded.native is not None  # the direct call whose warning the entry point filters
        assert warnings.filters == before
