"""/metrics of `python -m serving --workers 2`: every worker's values, in-flight predicts summed,
and no series left of a version that was swapped out."""

import threading
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from registry.client import connect
from tests.conftest import wait_until
from tests.sockets import Served, serving_process
from training.datasets import load_split
from training.faults import register_fault_model

pytestmark = pytest.mark.slow

MODEL = "multiprocess-clf"


@pytest.fixture(scope="module")
def served(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Two workers serving a model that takes 2 s a predict."""
    register_fault_model(MODEL, connect(tracking_uri), alias="production", predict_delay_s=2.0)
    settings = {
        "MODELYARD_MODELS": MODEL,
        "MODELYARD_ALIASES": "production",
        "MODELYARD_POLL_INTERVAL_S": "0.5",
    }
    log = tmp_path_factory.mktemp("multiprocess") / "serving.log"
    with serving_process(tracking_uri, settings, log, workers=2) as process:
        # ready answers from one worker: wait until both swapped their version in
        wait_until(lambda: _swaps(process) >= 2, timeout_s=120, what="both workers to load")
        yield process


def _samples(served: Served) -> list[tuple[str, dict[str, str], float]]:
    text = requests.get(f"{served.url}/metrics", timeout=10).text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _swaps(served: Served) -> float:
    return sum(
        value
        for name, labels, value in _samples(served)
        if name == "modelyard_swaps_total" and labels["model"] == MODEL
    )


def _versions(served: Served) -> set[str]:
    """The versions any series of the model is labelled with."""
    return {
        labels["version"]
        for _, labels, _ in _samples(served)
        if labels.get("model") == MODEL and "version" in labels
    }


def _predict(served: Served) -> int:
    frame = load_split("breast-cancer").x_holdout.head(1)
    body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
    url = f"{served.url}/models/{MODEL}/invocations"
    return requests.post(url, json=body, timeout=30).status_code


def _in_flight(served: Served) -> float:
    values = [
        value
        for name, labels, value in _samples(served)
        if name == "modelyard_requests_in_flight" and labels["model"] == MODEL
    ]
    return sum(values)


def test_in_flight_predicts_are_summed_over_workers(served: Served):
    statuses: list[int] = []
    requests_ = [
        threading.Thread(target=lambda: statuses.append(_predict(served))) for _ in range(4)
    ]
    for request in requests_:
        request.start()
    seen = 0.0
    while any(request.is_alive() for request in requests_) and seen < 4:
        seen = max(seen, _in_flight(served))  # each is inside the model for 2 s
        time.sleep(0.1)
    for request in requests_:
        request.join()
    assert statuses == [200] * 4
    assert seen == 4
    assert _in_flight(served) == 0
    names = {name for name, _, _ in _samples(served)}
    assert "modelyard_log_lines_dropped_total" in names


def test_series_of_a_swapped_out_version_disappear(served: Served, tracking_uri: str):
    for _ in range(4):  # on fresh connections: both workers answer some
        assert _predict(served) == 200
    first = _versions(served)
    assert len(first) == 1
    second = register_fault_model(MODEL, connect(tracking_uri), alias="production").version
    wait_until(lambda: _versions(served) == {second}, timeout_s=90, what="only the new version")
