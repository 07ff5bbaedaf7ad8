"""Serving over real HTTP semantics (TestClient with the lifespan) on the demo registry."""

import logging

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import DemoRegistry, wait_until
from training.datasets import load_split

CLASSIFIER = "/models/cancer-classifier"


def _split_body(frame: pd.DataFrame) -> dict[str, object]:
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}


@pytest.fixture(scope="module")
def holdout() -> pd.DataFrame:
    return load_split("breast-cancer").x_holdout


def test_prediction_headers_name_the_version(
    serving: TestClient, demo_registry: DemoRegistry, holdout: pd.DataFrame
):
    response = serving.post(
        f"{CLASSIFIER}/invocations",
        json=_split_body(holdout.head(3)),
        headers={"X-Request-ID": "req-42"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Model-Name"] == "cancer-classifier"
    assert response.headers["X-Model-Alias"] == "production"
    assert response.headers["X-Model-Version"] == demo_registry.classifier_sklearn.version
    assert response.headers["X-Model-Run-Id"] == demo_registry.classifier_sklearn.run_id
    assert response.headers["X-Request-ID"] == "req-42"
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    assert set(predictions[0]) == {"label", "probability"}


def test_pinned_alias_serves_staging_in_the_same_contract(
    serving: TestClient, demo_registry: DemoRegistry, holdout: pd.DataFrame
):
    body = _split_body(holdout.head(5))
    production = serving.post(f"{CLASSIFIER}/aliases/production/invocations", json=body)
    staging = serving.post(f"{CLASSIFIER}/aliases/staging/invocations", json=body)
    assert staging.headers["X-Model-Version"] == demo_registry.classifier_torch.version
    assert staging.headers["X-Request-ID"]
    assert [set(p) for p in staging.json()["predictions"]] == [
        set(p) for p in production.json()["predictions"]
    ]


@pytest.mark.parametrize("form", ["dataframe_split", "inputs"])
def test_zero_rows_get_empty_predictions_without_the_model(
    serving: TestClient, demo_registry: DemoRegistry, holdout: pd.DataFrame, form: str
):
    columns = list(holdout.columns)
    body = (
        {"dataframe_split": {"columns": columns, "data": []}}
        if form == "dataframe_split"
        else {"inputs": {column: [] for column in columns}}
    )
    response = serving.post(f"{CLASSIFIER}/invocations", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": []}
    assert response.headers["X-Model-Version"] == demo_registry.classifier_sklearn.version


def test_errors_after_routing_name_the_version_and_the_request(
    serving: TestClient, demo_registry: DemoRegistry, holdout: pd.DataFrame
):
    rows = holdout.head(1).values.tolist()
    rows[0][0] = "many"
    body = {"dataframe_split": {"columns": list(holdout.columns), "data": rows}}
    response = serving.post(
        f"{CLASSIFIER}/aliases/staging/invocations", json=body, headers={"X-Request-ID": "bad-1"}
    )
    assert response.status_code == 400
    assert response.headers["X-Request-ID"] == "bad-1"
    assert response.headers["X-Model-Name"] == "cancer-classifier"
    assert response.headers["X-Model-Alias"] == "staging"
    assert response.headers["X-Model-Version"] == demo_registry.classifier_torch.version
    assert response.headers["X-Model-Run-Id"] == demo_registry.classifier_torch.run_id


def test_request_log_line_names_request_version_and_outcome(
    serving: TestClient,
    demo_registry: DemoRegistry,
    holdout: pd.DataFrame,
    caplog: pytest.LogCaptureFixture,
):
    with caplog.at_level(logging.INFO, logger="serving.requests"):
        response = serving.post(
            f"{CLASSIFIER}/invocations",
            json=_split_body(holdout.head(1)),
            headers={"X-Request-ID": "log-1"},
        )
    assert response.status_code == 200
    [line] = [r for r in caplog.records if getattr(r, "request_id", None) == "log-1"]
    assert line.getMessage() == "prediction"
    fields = {
        key: getattr(line, key) for key in ("model", "alias", "version", "status", "fallback")
    }
    assert fields == {
        "model": "cancer-classifier",
        "alias": "production",
        "version": demo_registry.classifier_sklearn.version,
        "status": 200,
        "fallback": False,
    }
    assert line.latency_ms > 0


def test_create_app_leaves_process_logging_alone(monkeypatch: pytest.MonkeyPatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    level = root.level
    create_app(ServingSettings(models=["cancer-classifier"]))
    assert root.handlers == []
    assert root.level == level


def test_unknown_model_and_alias_are_404(serving: TestClient, holdout: pd.DataFrame):
    body = _split_body(holdout.head(1))
    unknown = serving.post("/models/nope/invocations", json=body, headers={"X-Request-ID": "r-9"})
    assert unknown.status_code == 404
    assert unknown.headers["X-Request-ID"] == "r-9"
    assert "X-Model-Name" not in unknown.headers
    missing = serving.post(f"{CLASSIFIER}/aliases/canary/invocations", json=body)
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "canary" in missing.json()["message"]


def test_missing_staging_alias_still_serves_production(serving: TestClient):
    models = serving.get("/models").json()["models"]
    regressor = models["diabetes-regressor"]
    assert regressor["aliases"]["staging"]["state"] == "absent"
    assert regressor["ready"] is True
    assert serving.get("/models/diabetes-regressor/ready").status_code == 200
    frame = load_split("diabetes").x_holdout.head(2)
    answer = serving.post("/models/diabetes-regressor/invocations", json=_split_body(frame))
    assert answer.status_code == 200
    assert set(answer.json()["predictions"][0]) == {"prediction"}


def test_extra_columns_are_ignored_but_reported(serving: TestClient, holdout: pd.DataFrame):
    frame = holdout.head(2).assign(customer_id=[7, 8])
    response = serving.post(f"{CLASSIFIER}/invocations", json=_split_body(frame))
    assert response.status_code == 200
    assert response.headers["X-Ignored-Columns"] == "customer_id"
    metrics = serving.get("/metrics").text
    assert 'modelyard_extra_columns_total{model="cancer-classifier"}' in metrics


def test_strict_model_rejects_extra_columns(serving: TestClient):
    frame = load_split("diabetes").x_holdout.head(1).assign(customer_id=[7])
    response = serving.post("/models/diabetes-regressor/invocations", json=_split_body(frame))
    assert response.status_code == 400
    assert "customer_id" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "names"),
    [
        (b'{"dataframe_split": ', "application/json", 400, "malformed JSON"),
        (
            b'{"dataframe_split": {"columns": ["mean_radius"], "data": [[1]]}}',
            "application/json",
            400,
            "mean_texture",
        ),
        (b'{"inputs": {}, "instances": []}', "application/json", 400, "exactly one"),
        (b'{"messages": [{"role": "user"}]}', "application/json", 400, "not supported"),
        (b"a,b\n1,2\n", "text/plain", 415, "text/plain"),
        (b"{}", "application/json; charset=latin-1", 415, "UTF-8"),
        (b"{}", None, 415, "Content-Type"),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    serving: TestClient, body: bytes, content_type: str | None, status: int, names: str
):
    headers = {"Content-Type": content_type} if content_type else {}
    response = serving.post(f"{CLASSIFIER}/invocations", content=body, headers=headers)
    assert response.status_code == status
    assert names in response.json()["message"]
    assert "stack_trace" not in response.json()
    assert "Traceback" not in response.text


def test_wrong_types_are_400_naming_the_column(serving: TestClient, holdout: pd.DataFrame):
    rows = holdout.head(2).values.tolist()
    rows[1][3] = "big"
    body = {"dataframe_split": {"columns": list(holdout.columns), "data": rows}}
    response = serving.post(f"{CLASSIFIER}/invocations", json=body)
    assert response.status_code == 400
    assert "mean_area" in response.json()["message"]


def test_missing_value_is_400_for_a_version_that_cannot_take_it(
    serving: TestClient, holdout: pd.DataFrame
):
    """A null where the signature allows one reaches a version that takes missing values (the
    PyTorch MLP answers); a version whose warm-up showed it raising on them (the scikit-learn
    pipeline) refuses it as the client's mistake, naming column and row, not as a 500."""
    rows = holdout.head(2).values.tolist()
    rows[1][3] = None
    body = {"dataframe_split": {"columns": list(holdout.columns), "data": rows}}
    refused = serving.post(f"{CLASSIFIER}/aliases/production/invocations", json=body)
    assert refused.status_code == 400
    assert refused.json()["error_code"] == "BAD_REQUEST"
    assert "column 'mean_area' row 1: missing value" in refused.json()["message"]
    answered = serving.post(f"{CLASSIFIER}/aliases/staging/invocations", json=body)
    assert answered.status_code == 200
    assert len(answered.json()["predictions"]) == 2
    states = serving.get("/models").json()["models"]["cancer-classifier"]["aliases"]
    assert states["production"]["predict"]["accepts_missing"] is False
    assert states["staging"]["predict"]["accepts_missing"] is True


def test_body_over_limit_is_413(demo_registry: DemoRegistry):
    settings = ServingSettings(
        models=["cancer-classifier"], max_body_bytes=100, aliases=["production"]
    )
    with TestClient(create_app(settings)) as client:
        response = client.post(
            f"{CLASSIFIER}/invocations",
            content=b"x" * 101,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert response.headers["X-Request-ID"]


def test_readiness_is_503_until_loaded(demo_registry: DemoRegistry):
    settings = ServingSettings(
        models=["cancer-classifier", "no-such-model"], aliases=["production"]
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/live").status_code == 200
        not_ready = client.get("/health/ready")
        assert not_ready.status_code == 503
        assert client.get("/ping").status_code == 503
        wait_until(lambda: client.get("/models/cancer-classifier/ready").status_code == 200)
        still = client.get("/health/ready")
        assert still.status_code == 503
        assert any("no-such-model" in r for r in still.json()["reasons"])


def test_default_model_before_any_is_served_is_unavailable_for_now():
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri("http://127.0.0.1:9")  # no registry: nothing is ever served
    try:
        settings = ServingSettings(registry_timeout_s=1)
        with TestClient(create_app(settings)) as client:
            response = client.post("/invocations", json={"inputs": []})
            assert response.status_code == 503
            assert response.headers["Retry-After"]
            assert "no model is served yet" in response.json()["message"]
            assert response.headers["X-Request-ID"]
    finally:
        mlflow.set_tracking_uri(previous)


def test_metrics_name_model_alias_and_version(serving: TestClient, demo_registry: DemoRegistry):
    metrics = serving.get("/metrics").text
    version = demo_registry.classifier_torch.version
    labels = f'alias="staging",model="cancer-classifier",version="{version}"'
    assert f"modelyard_serving_version{{{labels}}} 1.0" in metrics
    assert "modelyard_request_duration_seconds_bucket" in metrics


def test_admin_refresh_needs_the_token(serving: TestClient):
    assert serving.post("/admin/refresh").status_code == 401
    wrong = serving.post("/admin/refresh", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = serving.post("/admin/refresh", headers={"Authorization": "Bearer test-admin-token"})
    assert right.status_code == 200


def test_mlflow_compat_endpoints(serving: TestClient):
    assert serving.get("/ping").status_code == 200
    assert serving.get("/health").status_code == 200
    assert serving.get("/version").text == mlflow.__version__
