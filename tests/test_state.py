"""Last known good state: a replica restarted while MLflow is down serves what it served."""

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
from fastapi.testclient import TestClient

from registry.cache import VersionId
from registry.client import connect
from serving.app import create_app
from serving.settings import ServingSettings
from serving.state import LastKnownGood, SavedModel, Storage
from serving.traffic import TrafficSplit
from tests.conftest import wait_until
from tests.servers import restoring_tracking_uri
from training.datasets import load_split
from training.faults import register_fault_model

MODEL = "state-clf"


class Switch:
    """A TCP forwarder to a server that can be cut off: while off it drops every connection."""

    def __init__(self, target: str) -> None:
        parsed = urlparse(target)
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.uri = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.on = True
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def off(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self._lock:
            self.on = False
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def close(self) -> None:
        self.off()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if not self.on:
                    client.close()
                    continue
                upstream = socket.create_connection(self.target)
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def registry(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Switch]:
    """The real MLflow server behind a switch; this process's MLflow pointed at the switch,
    its calls bounded as `modelyard serve` bounds them."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    switch = Switch(tracking_uri)
    with restoring_tracking_uri():
        mlflow.set_tracking_uri(switch.uri)
        yield switch
    switch.close()


def _settings(state_dir: Path, model: str = MODEL, **more: object) -> ServingSettings:
    return ServingSettings(
        models=[model],
        aliases=["production"],
        poll_interval_s=0.3,
        registry_timeout_s=2,
        state_dir=state_dir,
        **more,  # type: ignore[arg-type]
    )


def _body() -> dict[str, object]:
    frame = load_split("breast-cancer").x_holdout.head(2)
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}


def _served(client: TestClient) -> object:
    model = client.get("/models").json()["models"].get(MODEL, {"aliases": {}})
    return model["aliases"].get("production", {}).get("version")


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def test_restart_while_the_registry_is_down_serves_the_last_known_good(
    tracking_uri: str, registry: Switch, tmp_path: Path
):
    first = register_fault_model(MODEL, connect(tracking_uri), alias="production")
    second = register_fault_model(MODEL, connect(tracking_uri), load_delay_s=0.1)
    settings = _settings(tmp_path, stale_after_s=1)
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: _served(client) == first.version, what="the first start")
        service = client.app.state.service  # type: ignore[attr-defined]
        assert not service.readiness().degraded
        registry.off()
        wait_until(lambda: bool(service.readiness().degraded), what="degraded readiness")
        readiness = service.readiness()
        assert readiness.ready, "a registry outage must not take a serving replica out"
        assert readiness.poll_age_s > 1
        assert "registry last read" in readiness.degraded[0]
        assert client.get("/models").json()["poll_age_s"] > 1
        assert _metric(client, "modelyard_registry_poll_age_seconds") > 0

    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="stale start")
        response = client.post(f"/models/{MODEL}/invocations", json=_body())
        assert response.status_code == 200
        assert response.headers["X-Model-Version"] == first.version
        document = client.get("/models").json()
        assert document["stale"] is True
        assert document["registry_error"]
        readiness = client.app.state.service.readiness()  # type: ignore[attr-defined]
        assert readiness.stale
        assert "saved state" in readiness.degraded[0]
        assert _metric(client, "modelyard_serving_stale") == 1

        connect(tracking_uri).set_registered_model_alias(MODEL, "production", second.version)
        registry.on = True
        wait_until(lambda: _served(client) == second.version, what="following again")
        assert client.get("/models").json()["stale"] is False
        wait_until(lambda: _metric(client, "modelyard_serving_stale") == 0, what="stale cleared")


def test_require_fresh_registry_waits_for_the_registry(
    tracking_uri: str, registry: Switch, tmp_path: Path
):
    register_fault_model(MODEL + "-fresh", connect(tracking_uri), alias="production")
    settings = _settings(tmp_path, MODEL + "-fresh")
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="the first start")
    registry.off()
    fresh = settings.model_copy(update={"require_fresh_registry": True})
    with TestClient(create_app(fresh)) as client:
        wait_until(lambda: client.get("/models").json()["registry_error"] is not None)
        assert client.get("/health/ready").status_code == 503
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="stale start")


def test_saved_state_round_trips_and_a_damaged_file_is_ignored(tmp_path: Path):
    storage = Storage.create(_settings(tmp_path))
    version = VersionId("iris", "3", "run-1", "models:/m-1", "m-1")
    split = TrafficSplit({"production": 1.0}, "s", "tag")
    state = LastKnownGood({"iris": SavedModel({"production": version}, split)}, 1700000000.0)
    storage.save(state)
    assert storage.load() == state
    assert storage.state_file is not None
    assert [p.name for p in storage.state_file.parent.iterdir()] == [storage.state_file.name]
    for damaged in ({"iris": {}}, {"iris": []}, {"iris": {"aliases": []}}):
        storage.state_file.write_text(json.dumps({"format": 1, "models": damaged}))
        assert storage.load() is None, damaged
