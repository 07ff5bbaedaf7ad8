"""SIGTERM: readiness drops at once, requests in flight finish within the grace period, then
the process exits, also when a predict hangs past it."""

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from registry.client import connect
from tests.sockets import Served, serving_process
from training.datasets import load_split
from training.faults import register_fault_model

pytestmark = pytest.mark.slow

EXIT_MARGIN_S = 5.0
"""The watchdog's margin past the grace period (3 s) and some slack for a loaded machine."""


@contextmanager
def _slow_model_served(
    tracking_uri: str, name: str, predict_delay_s: float, grace_s: float, log: Path
) -> Iterator[Served]:
    register_fault_model(
        name, connect(tracking_uri), alias="production", predict_delay_s=predict_delay_s
    )
    settings = {
        "MODELYARD_MODELS": name,
        "MODELYARD_ALIASES": "production",
        "MODELYARD_SHUTDOWN_GRACE_S": str(grace_s),
        "MODELYARD_PREDICT_TIMEOUT_S": "60",
    }
    with serving_process(tracking_uri, settings, log) as served:
        yield served


def _predict_in_background(served: Served, name: str, answers: list[int]) -> threading.Thread:
    frame = load_split("breast-cancer").x_holdout.head(1)
    body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}

    def post() -> None:
        try:
            url = f"{served.url}/models/{name}/invocations"
            answers.append(requests.post(url, json=body, timeout=60).status_code)
        except requests.ConnectionError:
            answers.append(0)

    request = threading.Thread(target=post)
    request.start()
    time.sleep(1.0)  # the request is inside the model now
    return request


def test_sigterm_drops_readiness_at_once_and_lets_in_flight_requests_finish(
    tracking_uri: str, tmp_path: Path
):
    grace_s = 10.0
    with _slow_model_served(tracking_uri, "drain-clf", 3.0, grace_s, tmp_path / "s.log") as served:
        assert requests.get(f"{served.url}/health/ready", timeout=5).status_code == 200
        answers: list[int] = []
        request = _predict_in_background(served, "drain-clf", answers)
        signalled = time.monotonic()
        served.child.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        ready = requests.get(f"{served.url}/health/ready", timeout=5)
        assert ready.status_code == 503
        assert "shutting down" in ready.text
        request.join()
        assert answers == [200]
        # uvicorn re-raises the signal once its graceful shutdown is done
        assert served.child.process.wait(timeout=grace_s + EXIT_MARGIN_S) in (0, -signal.SIGTERM)
        assert time.monotonic() - signalled < grace_s
        # the lines logged while stopping were written before the process ended
        assert '"prediction"' in (tmp_path / "s.log").read_text()


def test_sigterm_exits_within_the_grace_period_when_a_predict_hangs(
    tracking_uri: str, tmp_path: Path
):
    grace_s = 1.0
    with _slow_model_served(tracking_uri, "hang-clf", 12.0, grace_s, tmp_path / "s.log") as served:
        answers: list[int] = []
        request = _predict_in_background(served, "hang-clf", answers)
        signalled = time.monotonic()
        served.child.process.send_signal(signal.SIGTERM)
        served.child.process.wait(timeout=30)
        assert time.monotonic() - signalled < grace_s + EXIT_MARGIN_S
        request.join()
        assert answers != [200]
