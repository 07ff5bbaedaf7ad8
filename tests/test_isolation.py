"""Each version predicts on threads of its own: a hung version harms no other, and the process
neither hangs on it at shutdown nor sends it traffic while all its threads are held."""

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from fastapi.testclient import TestClient

import serving.pool
from registry.client import connect
from registry.split import TAG
from serving.app import create_app
from serving.pool import PredictPool
from serving.settings import ServingSettings
from serving.traffic import TrafficSplit, choose
from tests.conftest import wait_until
from training.datasets import load_split
from training.faults import register_fault_model

MODEL = "iso-clf"
INLINE_MODEL = "inline-clf"
HANG = 12345.0
"""A first-column value on which the hanging versions sleep."""
HANG_S = 12.0
TIMEOUT_S = 0.3
STAGING = f"/models/{MODEL}/aliases/staging/invocations"


@pytest.fixture(scope="module")
def registered(tracking_uri: str) -> str:
    """iso-clf: production answers at once, staging hangs HANG_S on HANG, split 90/10;
    inline-clf: fast enough to predict inline, but sleeping 1.5 s on HANG. The staging version."""
    client = connect(tracking_uri)
    register_fault_model(MODEL, client, alias="production")
    staging = register_fault_model(MODEL, client, alias="staging", hang_on=HANG, hang_s=HANG_S)
    client.set_registered_model_tag(MODEL, TAG, json.dumps({"production": 90, "staging": 10}))
    register_fault_model(INLINE_MODEL, client, alias="production", hang_on=HANG, hang_s=1.5)
    return staging.version


def _settings(**overrides: object) -> ServingSettings:
    values: dict[str, object] = {
        "models": [MODEL],
        "predict_timeout_s": TIMEOUT_S,
        "inline_below_ms": 0,  # every predict on the version's threads
        "batching": "off",  # each hanging request holds a thread of its own
        "poll_interval_s": 0.5,
    }
    return ServingSettings(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
def client(registered: str) -> Iterator[TestClient]:
    with TestClient(create_app(_settings())) as test_client:
        wait_until(lambda: _states(test_client) == ["ready", "ready"], what="both aliases")
        yield test_client


def _states(client: TestClient, model: str = MODEL) -> list[str]:
    aliases = client.get("/models").json()["models"].get(model, {}).get("aliases", {})
    return [aliases[a]["state"] for a in ("production", "staging") if a in aliases]


def _alias(client: TestClient, alias: str, model: str = MODEL) -> dict[str, object]:
    alias_status: dict[str, object] = client.get("/models").json()["models"][model]["aliases"][
        alias
    ]
    return alias_status


def _body(rows: int = 1, hang: bool = False) -> dict[str, object]:
    frame = load_split("breast-cancer").x_holdout.head(rows)
    data = frame.values.tolist()
    if hang:
        data[-1][0] = HANG
    return {"dataframe_split": {"columns": list(frame.columns), "data": data}}


def _keys() -> list[str]:
    """Routing keys the 90/10 split sends to staging."""
    split = TrafficSplit({"production": 90, "staging": 10})
    everything = ("production", "staging")
    keys = (f"user-{i}" for i in range(1000))
    return [k for k in keys if choose(split, k, everything, "production").alias == "staging"][:10]


def _hold_staging(client: TestClient, requests: int) -> list[int]:
    """Send `requests` pinned requests that hang staging, all at once; their statuses."""
    statuses: list[int] = []

    def send() -> None:
        statuses.append(client.post(STAGING, json=_body(hang=True)).status_code)

    senders = [threading.Thread(target=send) for _ in range(requests)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    return statuses


def test_hung_version_takes_no_traffic_and_the_others_keep_answering(
    client: TestClient, registered: str
):
    stuck_gauge = f'modelyard_predict_threads_stuck{{model="{MODEL}",version="{registered}"}}'
    assert set(_hold_staging(client, 4)) <= {503, 504}
    staging = _alias(client, "staging")
    assert staging["state"] == "stuck"
    predict = staging["predict"]
    assert isinstance(predict, dict)
    assert predict["threads_stuck"] == predict["threads"] == 2
    assert "predicts that timed out" in predict["stuck"]

    began = time.monotonic()
    pinned = client.post(STAGING, json=_body())
    assert time.monotonic() - began < TIMEOUT_S
    assert pinned.status_code == 503
    assert pinned.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "Retry-After" in pinned.headers

    path = f"/models/{MODEL}/invocations"
    unpinned = [client.post(path, json=_body()) for _ in range(20)]
    unpinned += [client.post(path, json=_body(), headers={"X-Routing-Key": k}) for k in _keys()]
    assert [r.status_code for r in unpinned] == [200] * len(unpinned)
    assert {r.headers["X-Model-Alias"] for r in unpinned} == {"production"}
    assert _alias(client, "staging")["state"] == "stuck"  # still: the requests above saw it
    assert client.get("/health/ready").status_code == 200
    metrics = client.get("/metrics").text
    assert f"{stuck_gauge} 2.0" in metrics
    assert f'modelyard_traffic_fallbacks_total{{alias="production",model="{MODEL}"}}' in metrics

    wait_until(lambda: _states(client) == ["ready", "ready"], timeout_s=HANG_S + 5, what="return")
    assert client.post(STAGING, json=_body()).status_code == 200
    metrics = client.get("/metrics").text
    assert f"{stuck_gauge} 0.0" in metrics


def test_stuck_required_alias_answers_fast_503_and_readiness_says_why(registered: str):
    settings = _settings(required_alias="staging")
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: _states(client) == ["ready", "ready"], what="both aliases")
        _hold_staging(client, 2)
        began = time.monotonic()
        response = client.post(STAGING, json=_body())
        assert time.monotonic() - began < TIMEOUT_S
        assert response.status_code == 503
        assert response.headers["X-Model-Alias"] == "staging"
        readiness = client.get("/health/ready")
        assert readiness.status_code == 503
        assert any("stuck" in reason for reason in readiness.json()["reasons"])
        assert client.get(f"/models/{MODEL}/ready").status_code == 503


def test_drain_drops_readiness_and_stop_never_waits_for_a_hung_predict(registered: str):
    with TestClient(create_app(_settings())) as client:
        wait_until(lambda: _states(client) == ["ready", "ready"], what="both aliases")
        assert client.post(STAGING, json=_body(hang=True)).status_code == 504
        client.app.state.service.drain()  # type: ignore[attr-defined]
        readiness = client.get("/health/ready")
        assert readiness.status_code == 503
        assert readiness.json()["reasons"] == ["shutting down"]
        production = f"/models/{MODEL}/aliases/production/invocations"
        assert client.post(production, json=_body()).status_code == 200
        began = time.monotonic()  # leaving the block ends the lifespan: Service.stop()
    assert time.monotonic() - began < 1.5


def test_by_default_a_predict_that_hangs_on_one_row_gets_504_and_holds_no_other(registered: str):
    settings = ServingSettings(models=[INLINE_MODEL], aliases=["production"], predict_timeout_s=0.5)
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: _states(client, INLINE_MODEL) == ["ready"], what="inline-clf")
        assert not _inline(
            client
        )  # a fast version, yet on its threads: every predict has a deadline
        path = f"/models/{INLINE_MODEL}/invocations"
        hung: list[int] = []
        sender = threading.Thread(
            target=lambda: hung.append(client.post(path, json=_body(hang=True)).status_code)
        )
        sender.start()
        time.sleep(0.1)
        began = time.monotonic()
        assert client.get("/health/live").status_code == 200
        assert client.post(path, json=_body()).status_code == 200
        assert time.monotonic() - began < 0.4
        sender.join()
        assert hung == [504]


@pytest.fixture
def inline_client(registered: str) -> Iterator[TestClient]:
    # inline under 50 ms, even on a busy machine; an inline call over 1 s ends inline predicts
    settings = _settings(models=[INLINE_MODEL], aliases=["production"], inline_below_ms=50)
    with TestClient(create_app(settings)) as test_client:
        wait_until(lambda: _states(test_client, INLINE_MODEL) == ["ready"], what="inline-clf")
        yield test_client


def _inline(client: TestClient) -> bool:
    predict = _alias(client, "production", INLINE_MODEL)["predict"]
    assert isinstance(predict, dict)
    return bool(predict["inline"])


def test_inline_model_predicts_large_requests_in_threads_with_the_deadline(
    inline_client: TestClient,
):
    assert _inline(inline_client)
    began = time.monotonic()
    response = inline_client.post(
        f"/models/{INLINE_MODEL}/invocations", json=_body(rows=10, hang=True)
    )
    assert response.status_code == 504
    assert time.monotonic() - began < 1.5
    assert _inline(inline_client)


def test_inline_predict_far_slower_than_warm_up_ends_inline_predicts(inline_client: TestClient):
    assert _inline(inline_client)
    path = f"/models/{INLINE_MODEL}/invocations"
    assert inline_client.post(path, json=_body(hang=True)).status_code == 200  # inline, slow
    assert not _inline(inline_client)
    assert inline_client.post(path, json=_body(hang=True)).status_code == 504
    assert inline_client.post(path, json=_body()).status_code == 200


def test_a_call_abandoned_as_its_thread_takes_it_up_counts_as_stuck(
    monkeypatch: pytest.MonkeyPatch,
):
    pool = PredictPool(1, "race")

    class Racing(Future[Any]):
        """Abandoned by its caller in the very moment a thread starts running it."""

        def set_running_or_notify_cancel(self) -> bool:
            running = super().set_running_or_notify_cancel()
            caller = threading.Thread(target=pool.abandon, args=(self,))
            caller.start()
            caller.join(0.2)  # the pool may make it wait until the call is listed as running
            return running

    monkeypatch.setattr(serving.pool, "Future", Racing)
    release = threading.Event()
    pool.submit(lambda: release.wait(10))
    wait_until(lambda: pool.stuck == 1, timeout_s=5, what="the thread counted stuck")
    assert pool.exhausted
    release.set()
    wait_until(lambda: pool.stuck == 0, timeout_s=5, what="the thread free again")
