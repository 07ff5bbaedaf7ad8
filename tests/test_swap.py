"""Live alias following against a real MLflow server: swaps under load, faults, splits."""

import gc
import json
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from registry.client import connect
from registry.refs import ModelRef
from registry.split import TAG
from serving.app import create_app
from serving.settings import ServingSettings
from serving.webhooks import signature
from tests.conftest import wait_until
from training.datasets import load_split
from training.faults import register_fault_model
from training.run import TrainSpec, train

MODEL = "swap-clf"
SECRET = "webhook-secret-for-tests"
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}


@dataclass(frozen=True)
class Versions:
    sklearn: ModelRef
    torch: ModelRef
    corrupt: ModelRef
    fault_ok: ModelRef
    other_contract: ModelRef


@pytest.fixture(scope="module")
def versions(tracking_uri: str) -> Versions:
    return Versions(
        sklearn=train(
            TrainSpec("sklearn", model_name=MODEL, alias="production"), connect(tracking_uri)
        ),
        torch=train(
            TrainSpec("torch", model_name=MODEL, alias="staging", epochs=50), connect(tracking_uri)
        ),
        corrupt=register_fault_model(MODEL, connect(tracking_uri), fail_predict=True),
        fault_ok=register_fault_model(MODEL, connect(tracking_uri), load_delay_s=0.5),
        other_contract=train(
            TrainSpec("sklearn", dataset="diabetes", model_name=MODEL), connect(tracking_uri)
        ),
    )


@pytest.fixture(scope="module")
def registry(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri)


@pytest.fixture(scope="module")
def client(versions: Versions) -> Iterator[TestClient]:
    settings = ServingSettings(
        models=[MODEL],
        poll_interval_s=0.3,
        retry_interval_s=0.5,
        webhook_secret=SECRET,  # type: ignore[arg-type]
        admin_token=ADMIN["Authorization"].removeprefix("Bearer "),  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings)) as test_client:
        wait_until(
            lambda: _served(test_client, "staging") == versions.torch.version, what="staging"
        )
        wait_until(lambda: _served(test_client, "production") == versions.sklearn.version)
        yield test_client


@pytest.fixture(scope="module")
def body() -> dict[str, object]:
    frame = load_split("breast-cancer").x_holdout.head(2)
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}


def _slot(client: TestClient, alias: str) -> dict[str, object]:
    served = client.get("/models").json()["models"].get(MODEL, {"aliases": {}})
    return served["aliases"].get(alias, {})  # type: ignore[no-any-return]


def _served(client: TestClient, alias: str) -> object:
    return _slot(client, alias).get("version")


def _move(registry: MlflowClient, alias: str, ref: ModelRef) -> None:
    registry.set_registered_model_alias(MODEL, alias, ref.version)


def test_alias_move_under_load_fails_no_request(
    client: TestClient, registry: MlflowClient, versions: Versions, body: dict[str, object]
):
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def hammer(path: str) -> None:
        while not stop.is_set():
            response = client.post(path, json=body)
            results.append((response.status_code, response.headers.get("X-Model-Version")))

    paths = [f"/models/{MODEL}/invocations", f"/models/{MODEL}/aliases/production/invocations"]
    threads = [threading.Thread(target=hammer, args=(p,)) for p in paths * 2]
    for thread in threads:
        thread.start()
    try:
        for target in (versions.fault_ok, versions.sklearn):
            _move(registry, "production", target)
            wait_until(lambda t=target: _served(client, "production") == t.version, what="swap")
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    statuses = {status for status, _ in results}
    assert statuses == {200}, f"failed requests: {statuses}"
    seen = {version for _, version in results}
    assert seen == {versions.sklearn.version, versions.fault_ok.version}
    assert len(results) > 50


def test_old_version_is_released_after_a_swap(
    client: TestClient, registry: MlflowClient, versions: Versions
):
    slot = client.app.state.service.table.models[MODEL].slots["production"]  # type: ignore[attr-defined]
    old = weakref.ref(slot.current)
    _move(registry, "production", versions.fault_ok)
    wait_until(lambda: _served(client, "production") == versions.fault_ok.version)
    _move(registry, "production", versions.sklearn)
    wait_until(lambda: _served(client, "production") == versions.sklearn.version)
    gc.collect()
    assert old() is None, "the replaced version is still referenced"


def test_every_swap_exempts_what_is_alive_from_full_collections(
    client: TestClient, registry: MlflowClient, versions: Versions
):
    """What a later load brings (here a pyfunc flavour and its code) would otherwise be scanned
    by every full collection, with the GIL held: pauses of 150-235 ms every few seconds."""
    frozen = gc.get_freeze_count()
    _move(registry, "production", versions.fault_ok)
    wait_until(lambda: _served(client, "production") == versions.fault_ok.version)
    assert gc.get_freeze_count() > frozen
    _move(registry, "production", versions.sklearn)
    wait_until(lambda: _served(client, "production") == versions.sklearn.version)


def test_failing_version_never_serves_and_is_reported(
    client: TestClient, registry: MlflowClient, versions: Versions, body: dict[str, object]
):
    _move(registry, "production", versions.corrupt)
    try:
        wait_until(lambda: bool(_slot(client, "production")["last_error"]), what="the failure")
        slot = _slot(client, "production")
        assert f"version {versions.corrupt.version}" in str(slot["last_error"])
        assert slot["version"] == versions.sklearn.version
        response = client.post(f"/models/{MODEL}/aliases/production/invocations", json=body)
        assert response.status_code == 200
        assert response.headers["X-Model-Version"] == versions.sklearn.version
        metrics = client.get("/metrics").text
        assert f'modelyard_load_failures_total{{alias="production",model="{MODEL}"}}' in metrics
    finally:
        _move(registry, "production", versions.sklearn)
    wait_until(lambda: _slot(client, "production")["last_error"] is None, what="recovery")


def test_version_breaking_the_contract_is_refused(
    client: TestClient, registry: MlflowClient, versions: Versions
):
    _move(registry, "staging", versions.other_contract)
    try:
        wait_until(lambda: bool(_slot(client, "staging")["last_error"]), what="the refusal")
        problem = str(_slot(client, "staging")["last_error"])
        assert f"breaks clients of version {versions.torch.version}" in problem
        assert "new required input column" in problem
        assert _served(client, "staging") == versions.torch.version
    finally:
        _move(registry, "staging", versions.torch)


def test_traffic_tag_moves_the_split(
    client: TestClient, registry: MlflowClient, versions: Versions, body: dict[str, object]
):
    wait_until(lambda: _slot(client, "staging")["last_error"] is None, what="staging healthy")
    registry.set_registered_model_tag(MODEL, TAG, json.dumps({"staging": 100, "production": 0}))
    try:
        wait_until(
            lambda: client.get("/models").json()["models"][MODEL]["traffic"]["source"] == "tag"
        )
        aliases = {
            client.post(f"/models/{MODEL}/invocations", json=body).headers["X-Model-Alias"]
            for _ in range(20)
        }
        assert aliases == {"staging"}
        pinned = client.post(f"/models/{MODEL}/aliases/production/invocations", json=body)
        assert pinned.headers["X-Model-Alias"] == "production"
    finally:
        registry.delete_registered_model_tag(MODEL, TAG)
    wait_until(lambda: client.get("/models").json()["models"][MODEL]["traffic"]["source"] != "tag")


def test_bad_traffic_tag_keeps_the_configured_split(client: TestClient, registry: MlflowClient):
    registry.set_registered_model_tag(MODEL, TAG, "{not json")
    try:
        wait_until(lambda: client.get("/models").json()["models"][MODEL]["traffic"]["problem"])
        split = client.get("/models").json()["models"][MODEL]["traffic"]
        assert split["source"] == "default"
        assert "not valid JSON" in split["problem"]
    finally:
        registry.delete_registered_model_tag(MODEL, TAG)


def test_tag_that_breaks_the_json_parser_never_stops_alias_following(
    client: TestClient, registry: MlflowClient, versions: Versions
):
    registry.set_registered_model_tag(MODEL, TAG, "[" * 3000)  # RecursionError in json.loads
    try:
        refreshed = client.post("/admin/refresh", headers=ADMIN)
        assert refreshed.status_code == 200
        assert client.get("/models").json()["models"][MODEL]["traffic"]["problem"]
        _move(registry, "production", versions.fault_ok)
        wait_until(lambda: _served(client, "production") == versions.fault_ok.version)
        before = client.get("/models").json()["last_poll"]
        wait_until(lambda: client.get("/models").json()["last_poll"] > before, what="a poll")
    finally:
        registry.delete_registered_model_tag(MODEL, TAG)
        _move(registry, "production", versions.sklearn)
    wait_until(lambda: _served(client, "production") == versions.sklearn.version)


def test_model_that_loses_its_alias_is_unloaded_after_the_grace_period(
    registry: MlflowClient, versions: Versions, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="serving.watcher")
    alias = "unload-test"
    settings = ServingSettings(
        aliases=[alias], required_alias=alias, poll_interval_s=0.3, unload_grace_s=1.5
    )
    registry.set_registered_model_alias(MODEL, alias, versions.fault_ok.version)
    with TestClient(create_app(settings)) as test_client:
        wait_until(lambda: test_client.get("/health/ready").status_code == 200, what="ready")
        registry.delete_registered_model_alias(MODEL, alias)
        wait_until(
            lambda: "unloading in" in str(_slot(test_client, alias).get("note")),
            what="the grace period reported",
        )
        assert _served(test_client, alias) == versions.fault_ok.version
        wait_until(lambda: MODEL not in test_client.get("/models").json()["models"])
        assert any("unloaded" in r.getMessage() for r in caplog.records)
        response = test_client.post(f"/models/{MODEL}/invocations", json={})
        assert response.status_code == 404


def test_deleted_alias_keeps_serving_its_last_version(
    client: TestClient, registry: MlflowClient, versions: Versions, body: dict[str, object]
):
    registry.delete_registered_model_alias(MODEL, "staging")
    try:
        wait_until(lambda: "alias deleted" in str(_slot(client, "staging")["note"]))
        response = client.post(f"/models/{MODEL}/aliases/staging/invocations", json=body)
        assert response.status_code == 200
        assert response.headers["X-Model-Version"] == versions.torch.version
    finally:
        _move(registry, "staging", versions.torch)


def _delivery(
    body: bytes, *, secret: str = SECRET, age_s: int = 0, delivery: str = "d-1"
) -> dict[str, str]:
    timestamp = str(int(time.time()) - age_s)
    return {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": signature(secret, delivery, timestamp, body),
        "Content-Type": "application/json",
    }


def test_webhook_verifies_signature_age_and_replay(client: TestClient):
    payload = json.dumps(
        {"entity": "model_version_alias", "action": "created", "data": {"name": MODEL}}
    ).encode()
    url = "/webhooks/mlflow"
    assert (
        client.post(url, content=payload, headers=_delivery(payload, secret="wrong")).status_code
        == 401
    )
    stale = client.post(
        url, content=payload, headers=_delivery(payload, age_s=3600, delivery="d-2")
    )
    assert stale.status_code == 401
    assert "timestamp" in stale.json()["message"]
    good = _delivery(payload, delivery="d-3")
    accepted = client.post(url, content=payload, headers=good)
    assert accepted.status_code == 200
    assert accepted.json()["status"] == "accepted"
    replay = client.post(url, content=payload, headers=good)
    assert replay.status_code == 401
    assert "seen before" in replay.json()["message"]
    tampered = _delivery(payload, delivery="d-4")
    assert client.post(url, content=payload + b" ", headers=tampered).status_code == 401


def test_unreachable_registry_at_start_is_live_not_ready(versions: Versions):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri("http://127.0.0.1:9")
    try:
        settings = ServingSettings(models=[MODEL], poll_interval_s=0.2, registry_timeout_s=1)
        with TestClient(create_app(settings)) as test_client:
            wait_until(lambda: test_client.get("/models").json()["registry_error"] is not None)
            assert test_client.get("/health/live").status_code == 200
            not_ready = test_client.get("/health/ready")
            assert not_ready.status_code == 503
            assert "registry not reachable" in json.dumps(not_ready.json())
    finally:
        mlflow.set_tracking_uri(previous)


def test_predictions_agree_with_pyfunc(
    client: TestClient, versions: Versions, body: dict[str, object]
):
    served = client.post(f"/models/{MODEL}/aliases/staging/invocations", json=body).json()
    split = body["dataframe_split"]
    frame = pd.DataFrame(split["data"], columns=split["columns"])  # type: ignore[index]
    expected = mlflow.pyfunc.load_model(versions.torch.uri).predict(frame)
    assert [p["probability"] for p in served["predictions"]] == pytest.approx(
        expected["probability"].tolist(), rel=1e-9
    )


def test_pickled_model_is_refused_when_pickle_is_off(
    tracking_uri: str, versions: Versions, monkeypatch: pytest.MonkeyPatch
):
    name = "pickled-clf"

    class Pickled(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return model_input

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Pickled())
    version = mlflow.register_model(info.model_uri, name)
    MlflowClient(tracking_uri).set_registered_model_alias(name, "production", version.version)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    settings = ServingSettings(models=[name], aliases=["production"], poll_interval_s=0.3)
    with TestClient(create_app(settings)) as test_client:
        wait_until(
            lambda: (
                test_client.get("/models")
                .json()["models"]
                .get(name, {})
                .get("aliases", {})
                .get("production", {})
                .get("last_error")
            ),
            what="the refusal",
        )
        error = test_client.get("/models").json()["models"][name]["aliases"]["production"]
        assert error["state"] == "failed"
        assert "pickle" in error["last_error"].lower()
        assert test_client.get("/health/ready").status_code == 503
