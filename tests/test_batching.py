"""Adaptive batching: concurrent requests merged into one predict, answered as if alone."""

import asyncio
import io
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.types import ColSpec, Schema
from prometheus_client import Histogram

from registry.client import connect
from registry.refs import ModelRef
from serving import v2
from serving.app import create_app
from serving.batching import Batcher, Choice, Mode, choose
from serving.inputs import InputSpec, from_rows
from serving.model import BatchProfile
from serving.pool import PredictPool
from serving.protocol import Columns, Decoded, encode
from serving.settings import ServingSettings
from tests.conftest import wait_until
from training.datasets import load_split
from training.faults import register_fault_model

RAISE_ON = 12345.0
HANG_ON = 54321.0
DELAY_S = 0.3
"""Each predict of the slow model takes this long: requests sent meanwhile queue and merge."""


def _settings(models: list[str], batching: Mode) -> ServingSettings:
    return ServingSettings(
        models=models,
        aliases=["production"],
        predict_threads=1,
        predict_timeout_s=2.0,
        batching=batching,
    )


@pytest.fixture(scope="module")
def client(tracking_uri: str) -> Iterator[TestClient]:
    client = connect(tracking_uri)
    register_fault_model(
        "batch-slow", client, alias="production", predict_delay_s=DELAY_S, raise_on=RAISE_ON
    )
    register_fault_model(
        "batch-hang", client, alias="production", hang_on=HANG_ON, hang_s=4, predict_delay_s=DELAY_S
    )
    with TestClient(create_app(_settings(["batch-slow", "batch-hang"], "on"))) as test_client:
        wait_until(lambda: test_client.get("/health/ready").status_code == 200, what="ready")
        yield test_client


def _rows(start: int, count: int, first_value: float | None = None) -> dict[str, Any]:
    frame = load_split("breast-cancer").x_holdout.iloc[start : start + count]
    rows = frame.values.tolist()
    if first_value is not None:
        rows[0][0] = first_value
    return {"dataframe_split": {"columns": list(frame.columns), "data": rows}}


def _batching(client: TestClient, model: str) -> dict[str, Any]:
    document = client.get("/models").json()["models"][model]
    return dict(document["aliases"]["production"]["predict"]["batching"])


def _behind_a_busy_thread(
    client: TestClient, model: str, sends: list[Callable[[], httpx.Response]]
) -> list[httpx.Response]:
    """Send `sends` concurrently while one request holds the version's only thread, so they
    queue together; their responses, in order."""
    blocker = threading.Thread(
        target=lambda: client.post(f"/models/{model}/invocations", json=_rows(100, 1))
    )
    blocker.start()
    time.sleep(DELAY_S / 3)
    with ThreadPoolExecutor(len(sends)) as executor:
        futures = [executor.submit(send) for send in sends]
        responses = [f.result() for f in futures]
    blocker.join()
    return responses


def _post(client: TestClient, model: str, body: dict[str, Any]) -> Callable[[], httpx.Response]:
    return lambda: client.post(f"/models/{model}/invocations", json=body)


def test_concurrent_requests_are_merged_and_each_gets_its_own_answer(client: TestClient):
    bodies = [_rows(start, count) for start, count in ((0, 1), (1, 3), (4, 1), (5, 2), (7, 1))]
    alone = [client.post("/models/batch-slow/invocations", json=b).json() for b in bodies]
    before = _batching(client, "batch-slow")

    responses = _behind_a_busy_thread(
        client, "batch-slow", [_post(client, "batch-slow", b) for b in bodies]
    )

    assert [r.status_code for r in responses] == [200] * len(bodies)
    assert [r.json() for r in responses] == alone
    after = _batching(client, "batch-slow")
    batches = after["batches"] - before["batches"]
    requests = after["requests"] - before["requests"]
    assert requests == len(bodies) + 1  # and the blocker
    assert batches < requests  # some predicts answered several requests
    exposition = client.get("/metrics").text
    one_row = _bucket(exposition, "batch-slow", "1.0")
    all_rows = _bucket(exposition, "batch-slow", "+Inf")
    assert all_rows > one_row  # predicts of more than one row were made


def _bucket(exposition: str, model: str, le: str) -> float:
    wanted = {'alias="production"', f'le="{le}"', f'model="{model}"', 'version="1"'}
    for labels, value in re.findall(
        r"^modelyard_batch_rows_bucket\{(.*)\} (\S+)$", exposition, re.M
    ):
        if set(labels.split(",")) == wanted:
            return float(value)
    raise AssertionError(exposition)


def test_a_failing_request_fails_alone_and_its_batch_mates_get_answers(client: TestClient):
    bodies = [_rows(10, 1), _rows(11, 2, first_value=RAISE_ON), _rows(13, 1)]
    expected = [
        client.post("/models/batch-slow/invocations", json=bodies[i]).json() for i in (0, 2)
    ]
    before = _batching(client, "batch-slow")

    responses = _behind_a_busy_thread(
        client, "batch-slow", [_post(client, "batch-slow", b) for b in bodies]
    )

    assert [r.status_code for r in responses] == [200, 500, 200]
    assert responses[1].json()["error_code"] == "INTERNAL_ERROR"
    assert "raise_on" not in responses[1].text
    assert "Traceback" not in responses[1].text
    assert [responses[0].json(), responses[2].json()] == expected
    after = _batching(client, "batch-slow")
    assert after["batches"] - before["batches"] < after["requests"] - before["requests"]


def test_requests_with_params_or_another_layout_go_alone(client: TestClient):
    frame = load_split("breast-cancer").x_holdout.iloc[20:22]
    csv = io.StringIO()
    frame.to_csv(csv, index=False)
    json_body = _rows(20, 2)
    expected = client.post("/models/batch-slow/invocations", json=json_body).json()
    before = _batching(client, "batch-slow")

    responses = _behind_a_busy_thread(
        client,
        "batch-slow",
        [
            _post(client, "batch-slow", json_body),
            lambda: client.post(
                "/models/batch-slow/invocations",
                content=csv.getvalue(),
                headers={"Content-Type": "text/csv"},
            ),
            _post(client, "batch-slow", json_body | {"params": {"anything": 1}}),
            _post(client, "batch-slow", json_body),
        ],
    )

    assert [r.status_code for r in responses] == [200] * 4
    assert all(r.json() == expected for r in responses)
    after = _batching(client, "batch-slow")
    # the blocker, the two JSON bodies (merged), the CSV one (arrays, not a matrix) alone;
    # the one with params never reaches the batcher
    assert after["requests"] - before["requests"] == 4
    assert after["batches"] - before["batches"] == 3


def test_a_hung_batch_answers_504_to_every_member_and_holds_its_thread(client: TestClient):
    before = _batching(client, "batch-hang")
    bodies = [_rows(30, 1), _rows(31, 1, first_value=HANG_ON), _rows(32, 1)]

    responses = _behind_a_busy_thread(
        client, "batch-hang", [_post(client, "batch-hang", b) for b in bodies]
    )

    assert [r.status_code for r in responses] == [504, 504, 504]
    assert {r.json()["error_code"] for r in responses} == {"DEADLINE_EXCEEDED"}
    after = _batching(client, "batch-hang")
    assert after["requests"] - before["requests"] == 4  # the blocker, then the three merged
    assert after["batches"] - before["batches"] == 2
    assert 'modelyard_predict_threads_stuck{model="batch-hang",version="1"} 1.0' in (
        client.get("/metrics").text
    )


def test_models_shows_the_choice_and_why(client: TestClient, serving: TestClient):
    forced = _batching(client, "batch-slow")
    assert forced["enabled"] is True
    assert forced["reason"] == "MODELYARD_BATCHING=on"
    # the demo classifier's warm-up shows 32 rows cost about what one does: auto batches it
    demo = serving.get("/models").json()["models"]["cancer-classifier"]
    for alias in ("production", "staging"):  # scikit-learn and PyTorch
        batching = demo["aliases"][alias]["predict"]["batching"]
        assert batching["enabled"] is True, batching
        assert "cheaper per row batched" in batching["reason"]


def test_demo_classifier_answers_batched_requests_as_alone(serving: TestClient):
    bodies = [_rows(start, 1) for start in range(40, 56)]
    for alias in ("production", "staging"):
        path = f"/models/cancer-classifier/aliases/{alias}/invocations"
        alone = [serving.post(path, json=b).json() for b in bodies]
        with ThreadPoolExecutor(8) as executor:
            together = list(executor.map(partial(_answer, serving, path), bodies))
        # float32 networks may differ in the last digits with the batch size (BLAS kernels)
        assert [_labels(a) for a in together] == [_labels(a) for a in alone]
        assert [p for a in together for p in _probabilities(a)] == pytest.approx(
            [p for a in alone for p in _probabilities(a)], rel=1e-4, abs=1e-9
        )


def test_a_batch_members_answer_is_written_byte_for_byte_as_its_rows_alone():
    """Each request's answer is written from the call's columns converted once; the bytes are
    those its own rows of the DataFrame give, in both protocols."""
    whole = pd.DataFrame(
        {"label": np.arange(6), "probability": np.linspace(0, 1, 6), "sure": [True, False] * 3}
    )
    columns = Columns.of(whole)
    assert columns is not None
    ref = ModelRef("m", "3", alias="staging")
    for start, stop in ((0, 1), (1, 4), (4, 6)):
        mine, rows = columns.rows(start, stop), whole.iloc[start:stop]
        assert encode(mine) == encode(rows)
        assert v2.V2Codec().encode(mine, ref).body == v2.V2Codec().encode(rows, ref).body
    # text or dates are written as before, from the DataFrame
    assert Columns.of(whole.assign(label=["a", "b", "c", "d", "e", "f"])) is None
    assert Columns.of(whole.assign(when=pd.Timestamp("2026-01-01"))) is None
    assert Columns.of(pd.DataFrame(index=range(3))) is None  # rows of no column: [{}, {}, {}]


def _labels(answer: dict[str, Any]) -> list[int]:
    return [row["label"] for row in answer["predictions"]]


def _probabilities(answer: dict[str, Any]) -> list[float]:
    return [row["probability"] for row in answer["predictions"]]


def _answer(client: TestClient, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json=body).json()


@pytest.mark.parametrize(
    ("mode", "profile", "enabled", "reason"),
    [
        ("off", BatchProfile(1.0, 1.0), False, "MODELYARD_BATCHING=off"),
        ("on", BatchProfile(1.0, 32.0), True, "MODELYARD_BATCHING=on"),
        ("on", BatchProfile(problem="no signature"), False, "cannot merge: no signature"),
        ("auto", BatchProfile(1.0, 1.2), True, "26.7x cheaper per row batched"),
        ("auto", BatchProfile(1.0, 16.0), False, "2.0x cheaper per row batched (batching needs"),
    ],
)
def test_choose_follows_the_setting_then_the_warm_up(
    mode: Mode, profile: BatchProfile, enabled: bool, reason: str
):
    choice = choose(mode, profile)
    assert choice.enabled is enabled
    assert reason in choice.reason


def test_batching_off_predicts_every_request_alone(tracking_uri: str):
    register_fault_model(
        "batch-off", connect(tracking_uri), alias="production", predict_delay_s=DELAY_S
    )
    with TestClient(create_app(_settings(["batch-off"], "off"))) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        bodies = [_rows(0, 1), _rows(1, 1), _rows(2, 1)]
        responses = _behind_a_busy_thread(
            client, "batch-off", [_post(client, "batch-off", b) for b in bodies]
        )
        assert [r.status_code for r in responses] == [200] * 3
        batching = _batching(client, "batch-off")
        assert batching["enabled"] is False
        assert batching["reason"] == "MODELYARD_BATCHING=off"
        assert batching["batches"] == 0
        assert _bucket(client.get("/metrics").text, "batch-off", "+Inf") == 0


def test_fast_version_batches_on_the_event_loop_and_isolates_failures(tracking_uri: str):
    register_fault_model(
        "batch-inline", connect(tracking_uri), alias="production", raise_on=RAISE_ON
    )
    settings = _settings(["batch-inline"], "on").model_copy(update={"inline_below_ms": 50.0})
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="ready")
        assert _batching(client, "batch-inline")["on_event_loop"] is True
        bodies = [_rows(start, 1) for start in range(60, 72)]
        bodies[5] = _rows(65, 1, first_value=RAISE_ON)
        path = "/models/batch-inline/invocations"
        alone = [client.post(path, json=b) for b in bodies]
        with ThreadPoolExecutor(6) as executor:
            together = [executor.submit(client.post, path, json=b) for b in bodies]
            responses = [f.result() for f in together]
        assert [r.status_code for r in responses] == [r.status_code for r in alone]
        assert responses[5].status_code == 500
        assert [r.json() for r in responses] == [r.json() for r in alone]


class _Version:
    """What a batcher asks of a loaded version: two predict threads, a predict that answers
    each row's value and records how many rows each call had."""

    inline = False
    inline_rows = 0

    def __init__(self) -> None:
        self.pool = PredictPool(2, "batching-test")
        self.calls: list[int] = []

    def predict(self, request: Decoded) -> Any:
        assert request.batch is not None
        self.calls.append(request.batch.rows)
        return request.batch.as_matrix()[:, 0]


def test_requests_read_in_one_loop_turn_share_one_predict_though_threads_are_idle():
    spec = InputSpec.from_schema(Schema([ColSpec("double", "x")]))
    assert spec is not None
    version = _Version()
    batcher = Batcher(
        Choice(True, "test"),
        max_rows=64,
        threads=2,
        inline_rows=0,
        slow_inline_ms=100.0,
        rows_seen=Histogram("test_batch_rows", "rows", registry=None),
        queue_wait=Histogram("test_batch_wait", "wait", registry=None),
    )

    async def three_requests_in_one_turn() -> list[Any]:
        requests = [Decoded(batch=from_rows(spec, ["x"], [[float(i)]])) for i in range(3)]
        waiting = [batcher.submit(version, request) for request in requests]
        return await asyncio.gather(*(w.future for w in waiting))

    answers = asyncio.run(three_requests_in_one_turn())

    assert version.calls == [3]
    assert [a.predictions.tolist() for a in answers] == [[0.0], [1.0], [2.0]]
