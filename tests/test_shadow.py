"""Shadow mode: staging scores a sample of production traffic; clients never notice."""

import re
import time

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from registry.client import connect
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import wait_until
from training.datasets import load_split
from training.faults import register_fault_model

MODEL = "shadow-clf"
FLIP = 0.3
SHIFTED = "shadow-shifted"
"""Staging labels with another threshold: its disagreement does not depend on batching."""
SLOW = "shadow-slow"
RAISING = "shadow-raising"
RAISE_ON = -7.0
HANGING = "shadow-hanging"
HANG_ON = -9.0


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    holdout: pd.DataFrame = load_split("breast-cancer").x_holdout
    return holdout


@pytest.fixture(scope="module")
def client(tracking_uri: str, frame: pd.DataFrame):
    registry = connect(tracking_uri)
    register_fault_model(MODEL, registry, alias="production")
    register_fault_model(MODEL, registry, alias="staging", flip_fraction=FLIP)
    middle = float(frame.iloc[:, 0].median())
    register_fault_model(SHIFTED, registry, alias="production")
    register_fault_model(SHIFTED, registry, alias="staging", threshold=middle)
    register_fault_model(SLOW, registry, alias="production")
    register_fault_model(SLOW, registry, alias="staging", predict_delay_s=0.2)
    register_fault_model(RAISING, registry, alias="production")
    register_fault_model(RAISING, registry, alias="staging", raise_on=RAISE_ON)
    models = [MODEL, SHIFTED, SLOW, RAISING]
    settings = ServingSettings(
        models=models, poll_interval_s=0.3, shadow=dict.fromkeys(models, 1.0)
    )
    with TestClient(create_app(settings)) as test_client:
        for model in models:
            wait_until(lambda m=model: _states(test_client, m) == ["ready", "ready"], what=model)
        yield test_client


def _states(client: TestClient, model: str) -> list[str]:
    served = client.get("/models").json()["models"].get(model, {"aliases": {}})
    return [slot["state"] for slot in served["aliases"].values()]


def _body(frame: pd.DataFrame) -> dict:
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}


def _invoke(client: TestClient, model: str, frame: pd.DataFrame, alias: str = "production"):
    return client.post(f"/models/{model}/aliases/{alias}/invocations", json=_body(frame))


def _labels(client: TestClient, model: str, frame: pd.DataFrame, alias: str) -> np.ndarray:
    answer = _invoke(client, model, frame, alias)
    assert answer.status_code == 200, answer.text
    return np.array([p["label"] for p in answer.json()["predictions"]])


def _recorded(client: TestClient, model: str) -> dict[str, float]:
    shadow = client.get("/models").json()["models"][model]["shadow"]
    return next(iter(shadow.values()), {"rows": 0})


def _counter(client: TestClient, name: str, model: str) -> float:
    found = re.findall(
        rf'^{name}_total{{[^}}]*model="{model}"[^}}]*}} (\S+)$', _metrics(client), re.M
    )
    return sum(float(value) for value in found)


def _metrics(client: TestClient) -> str:
    return client.get("/metrics").text


def test_shadow_records_disagreement_and_never_changes_the_answer(client, frame):
    answers = [_invoke(client, MODEL, frame) for _ in range(3)]
    assert {a.headers["X-Model-Alias"] for a in answers} == {"production"}
    assert answers[0].json() == answers[1].json() == answers[2].json()
    staging = _invoke(client, MODEL, frame, "staging").json()
    assert staging != answers[0].json()  # the shadow does disagree; the client never sees it

    wait_until(lambda: _recorded(client, MODEL)["rows"] >= 3 * len(frame), what="comparisons")
    agreement = _recorded(client, MODEL)["agreement"]
    assert 1 - FLIP - 0.08 <= agreement <= 1 - FLIP + 0.08
    assert "modelyard_shadow_agreed_rows_total" in _metrics(client)


def test_merged_shadow_scoring_tallies_every_request_exactly(client, frame):
    """Requests of many sizes, scored together, count exactly as if scored one by one."""
    same = _labels(client, SHIFTED, frame, "production") == _labels(
        client, SHIFTED, frame, "staging"
    )
    assert 0 < same.sum() < len(frame)
    wait_until(lambda: _recorded(client, SHIFTED)["rows"] >= len(frame), what="comparisons")
    before = _recorded(client, SHIFTED)
    assert before["rows"] == len(frame)
    sizes = [1, 2, 3, 5, 8, 13, 21, 34, 1, 1, 1]
    chunks, start = [], 0
    for size in sizes:
        chunks.append(range(start, start + size))
        start = (start + size) % (len(frame) - 40)
    for rows in chunks:
        assert _invoke(client, SHIFTED, frame.iloc[list(rows)]).status_code == 200
    expected_rows = before["rows"] + sum(sizes)
    wait_until(lambda: _recorded(client, SHIFTED)["rows"] >= expected_rows, what="comparisons")
    recorded = _recorded(client, SHIFTED)
    expected_agreed = int(same.sum()) + sum(int(same[list(rows)].sum()) for rows in chunks)
    assert recorded["rows"] == expected_rows
    assert round(recorded["agreement"] * recorded["rows"]) == expected_agreed
    assert _counter(client, "modelyard_shadow_agreed_rows", SHIFTED) == expected_agreed


def test_a_slow_shadow_still_scores_a_burst_of_samples(client, frame):
    """A shadow that takes 200 ms a predict keeps up with a burst: samples wait together."""
    burst = 40
    for i in range(burst):
        assert _invoke(client, SLOW, frame.iloc[[i]]).status_code == 200
    wait_until(lambda: _recorded(client, SLOW)["rows"] >= burst, what="comparisons")
    assert _recorded(client, SLOW)["rows"] == burst
    assert _counter(client, "modelyard_shadow_skipped", SLOW) == 0


def test_a_failing_shadow_counts_only_the_requests_it_fails_on(client, frame):
    poisoned = frame.iloc[[0]].copy()
    poisoned.iloc[0, 0] = RAISE_ON
    sent = [frame.iloc[[1]], poisoned, frame.iloc[2:6], poisoned, frame.iloc[[7]]]
    for rows in sent:
        assert _invoke(client, RAISING, rows).status_code == 200  # production never notices
    wait_until(lambda: _recorded(client, RAISING)["rows"] >= 6, what="comparisons")
    wait_until(lambda: _counter(client, "modelyard_shadow_errors", RAISING) >= 2, what="errors")
    assert _recorded(client, RAISING)["rows"] == 6
    assert _counter(client, "modelyard_shadow_errors", RAISING) == 2


def test_a_stuck_shadow_buffers_boundedly_and_counts_what_it_skips(tracking_uri, frame):
    registry = connect(tracking_uri)
    register_fault_model(HANGING, registry, alias="production")
    register_fault_model(HANGING, registry, alias="staging", hang_on=HANG_ON, hang_s=30)
    settings = ServingSettings(models=[HANGING], poll_interval_s=0.3, shadow={HANGING: 1.0})
    stuck = frame.iloc[[0]].copy()
    stuck.iloc[0, 0] = HANG_ON
    big = pd.concat([frame] * (1000 // len(frame) + 1)).head(1000)
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: _states(client, HANGING) == ["ready", "ready"], what=HANGING)
        assert _invoke(client, HANGING, stuck).status_code == 200
        time.sleep(1.0)  # past one scoring interval: the shadow thread hangs on that sample
        answers = [_invoke(client, HANGING, big) for _ in range(12)]
        assert [a.status_code for a in answers] == [200] * 12
        assert _counter(client, "modelyard_shadow_skipped", HANGING) >= 4
        assert _recorded(client, HANGING)["rows"] == 0
