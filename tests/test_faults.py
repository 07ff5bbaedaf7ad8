"""Faulty models: slow ones get 504, raising ones 500 without internals; both keep serving."""

import logging
import re
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from registry.client import connect
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import wait_until
from training.datasets import load_split
from training.faults import register_fault_model

RAISE_ON = 12345.0


@pytest.fixture(scope="module")
def client(tracking_uri: str) -> Iterator[TestClient]:
    register_fault_model("slow-clf", connect(tracking_uri), alias="production", predict_delay_s=0.6)
    register_fault_model(
        "raising-clf", connect(tracking_uri), alias="production", raise_on=RAISE_ON
    )
    settings = ServingSettings(
        models=["slow-clf", "raising-clf"], aliases=["production"], predict_timeout_s=0.2
    )
    with TestClient(create_app(settings)) as test_client:
        wait_until(lambda: test_client.get("/health/ready").status_code == 200, what="ready")
        yield test_client


def _body(first_value: float | None = None) -> dict[str, object]:
    frame = load_split("breast-cancer").x_holdout.head(2)
    rows = frame.values.tolist()
    if first_value is not None:
        rows[1][0] = first_value
    return {"dataframe_split": {"columns": list(frame.columns), "data": rows}}


def test_slow_model_answers_504_and_health_still_answers(client: TestClient):
    response = client.post(
        "/models/slow-clf/invocations", json=_body(), headers={"X-Request-ID": "slow-1"}
    )
    assert response.status_code == 504
    assert response.json()["error_code"] == "DEADLINE_EXCEEDED"
    assert response.headers["X-Model-Version"] == "1"
    assert response.headers["X-Model-Alias"] == "production"
    assert response.headers["X-Request-ID"] == "slow-1"
    assert client.get("/health/live").status_code == 200


def _in_flight(client: TestClient, model: str) -> float | None:
    exposition = client.get("/metrics").text
    found = re.search(
        rf'^modelyard_requests_in_flight\{{model="{model}"\}} (\S+)$', exposition, re.M
    )
    return float(found[1]) if found else None


def test_in_flight_gauge_counts_predictions_per_model(client: TestClient):
    done = threading.Event()

    def request() -> None:
        client.post("/models/slow-clf/invocations", json=_body())
        done.set()

    thread = threading.Thread(target=request)
    thread.start()
    seen = set()
    while not done.is_set():
        seen.add(_in_flight(client, "slow-clf"))
    thread.join()
    assert 1.0 in seen
    assert _in_flight(client, "slow-clf") == 0.0


def test_raising_model_answers_500_without_internals_and_keeps_serving(client: TestClient):
    response = client.post("/models/raising-clf/invocations", json=_body(RAISE_ON))
    assert response.status_code == 500
    assert response.json()["error_code"] == "INTERNAL_ERROR"
    assert "raise_on" not in response.text
    assert "Traceback" not in response.text
    assert str(RAISE_ON) not in response.text
    assert response.headers["X-Model-Version"] == "1"
    assert client.post("/models/raising-clf/invocations", json=_body()).status_code == 200
    metrics = client.get("/metrics").text
    assert 'modelyard_requests_total{alias="production",model="raising-clf",status="500"' in metrics


def test_model_raising_on_every_request_logs_few_tracebacks(
    client: TestClient, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.ERROR, logger="serving.requests")
    for _ in range(12):
        response = client.post("/models/raising-clf/invocations", json=_body(RAISE_ON))
        assert response.status_code == 500
    failures = [r for r in caplog.records if r.getMessage().startswith("model raised")]
    assert len(failures) == 12
    assert len([r for r in failures if r.exc_info]) <= 5
    assert "traceback not logged" in failures[-1].getMessage()
