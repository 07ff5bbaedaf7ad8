"""Hostile connections against `python -m serving` over real sockets: huge or slow heads, idle
and stalled connections, uploads that hold memory, the connection cap and the in-flight budget.
"""

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import requests

from registry.client import connect
from tests.sockets import Served, read_response, serving_process
from training.datasets import load_split
from training.faults import register_fault_model

pytestmark = pytest.mark.slow

MODEL = "edge-clf"
HEADER_LIMIT = 4096
TIMEOUT_S = 3
"""The body timeout (also the head's) and the keep-alive timeout of the process under test."""
CAP = 20
BUFFERED = 2**20


@pytest.fixture(scope="module")
def served(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One worker serving a model that takes 0.5 s a predict, with small limits."""
    register_fault_model(MODEL, connect(tracking_uri), alias="production", predict_delay_s=0.5)
    settings = {
        "MODELYARD_MODELS": MODEL,
        "MODELYARD_ALIASES": "production",
        "MODELYARD_MAX_HEADER_BYTES": str(HEADER_LIMIT),
        "MODELYARD_BODY_TIMEOUT_S": str(TIMEOUT_S),
        "MODELYARD_KEEP_ALIVE_S": str(TIMEOUT_S),
        "MODELYARD_MAX_CONNECTIONS": str(CAP),
        "MODELYARD_MAX_BUFFERED_BYTES": str(BUFFERED),
        "MODELYARD_MAX_IN_FLIGHT": "1",
        "MODELYARD_PREDICT_TIMEOUT_S": "30",
        "MODELYARD_WEBHOOK_SECRET": "edge-webhook-secret",
    }
    log = tmp_path_factory.mktemp("edge") / "serving.log"
    with serving_process(tracking_uri, settings, log) as process:
        yield process


def _body() -> bytes:
    frame = load_split("breast-cancer").x_holdout.head(1)
    split = {"columns": list(frame.columns), "data": frame.values.tolist()}
    return json.dumps({"dataframe_split": split}).encode()


def _predict(served: Served) -> requests.Response:
    return requests.post(
        f"{served.url}/models/{MODEL}/invocations",
        data=_body(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def _head(served: Served, length: int, path: str = f"/models/{MODEL}/invocations") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _connect(served: Served) -> socket.socket:
    return socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT_S + 10)


def _refused(client: socket.socket, status: int, code: str) -> float:
    """Assert the next answer is `status` with MLflow's `code`, then a close; seconds it took."""
    started = time.monotonic()
    answer, headers, body = read_response(client)
    elapsed = time.monotonic() - started
    assert (answer, json.loads(body)["error_code"]) == (status, code)
    assert headers["content-type"] == "application/json"
    assert client.recv(1) == b""  # closed
    return elapsed


def test_complete_head_over_the_limit_is_431(served: Served):
    with _connect(served) as client:
        client.sendall(
            b"GET /health/live HTTP/1.1\r\nHost: test\r\n"
            + b"X-Request-ID: "
            + b"a" * HEADER_LIMIT
            + b"\r\n\r\n"
        )
        _refused(client, 431, "REQUEST_LIMIT_EXCEEDED")


def test_endless_header_is_refused_before_it_ends(served: Served):
    with _connect(served) as client:
        client.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Request-ID: ")
        sent = 0
        try:
            while sent < 32 * 2**20:
                client.sendall(b"a" * 65536)
                sent += 65536
        except ConnectionError:
            pass  # refused and closed while we still send
        # what the kernel buffered on either side, not what the server kept
        assert sent < 16 * 2**20, f"{sent} bytes of one header were read"


def test_unfinished_head_is_408_after_the_timeout(served: Served):
    with _connect(served) as client:
        client.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n")
        elapsed = _refused(client, 408, "DEADLINE_EXCEEDED")
        assert TIMEOUT_S - 0.5 < elapsed < TIMEOUT_S + 3


def test_connection_that_sends_nothing_is_closed(served: Served):
    with _connect(served) as client:
        started = time.monotonic()
        assert client.recv(1) == b""
        assert time.monotonic() - started < TIMEOUT_S + 3


def test_stalled_body_is_408_after_the_timeout(served: Served):
    with _connect(served) as client:
        client.sendall(_head(served, 1000) + b'{"dataframe_split": ')
        elapsed = _refused(client, 408, "DEADLINE_EXCEEDED")
        assert TIMEOUT_S - 0.5 < elapsed < TIMEOUT_S + 3


def test_stalled_webhook_body_is_408_after_the_timeout(served: Served):
    with _connect(served) as client:
        client.sendall(_head(served, 1000, "/webhooks/mlflow") + b'{"entity": ')
        elapsed = _refused(client, 408, "DEADLINE_EXCEEDED")
        assert TIMEOUT_S - 0.5 < elapsed < TIMEOUT_S + 3


def test_bodies_over_the_buffer_budget_get_a_fast_503_and_small_ones_pass(served: Served):
    large = BUFFERED * 3 // 4
    with _connect(served) as stalled, _connect(served) as second:
        stalled.sendall(_head(served, large) + b" " * 65536)  # and stalls, holding its bytes
        time.sleep(0.3)
        started = time.monotonic()
        second.sendall(_head(served, large))
        assert _refused(second, 503, "TEMPORARILY_UNAVAILABLE") < 1
        # a small body needs no reservation: the stalled upload cannot starve it
        assert _predict(served).status_code == 200
        assert time.monotonic() - started < TIMEOUT_S


def test_connections_beyond_the_cap_get_503_and_health_answers_below_it(served: Served):
    with ExitStack() as held:

        def hold(count: int) -> None:
            for _ in range(count):
                client = held.enter_context(_connect(served))
                client.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
                assert read_response(client)[0] == 200  # accepted, then idle (kept alive)

        hold(CAP - 2)
        assert requests.get(f"{served.url}/health/live", timeout=5).status_code == 200
        hold(1)
        started = time.monotonic()
        assert requests.get(f"{served.url}/health/live", timeout=5).status_code == 503
        assert time.monotonic() - started < 1


def test_stalled_uploads_hold_no_in_flight_slot(served: Served):
    with ExitStack() as held:
        for _ in range(3):  # started, never finished: no slot of MAX_IN_FLIGHT=1 is theirs
            client = held.enter_context(_connect(served))
            client.sendall(_head(served, 1000) + b'{"dataframe_split": ')
        answers: list[int] = []
        first = threading.Thread(target=lambda: answers.append(_predict(served).status_code))
        first.start()
        time.sleep(0.2)  # inside the model for 0.5 s: the one slot is taken
        beyond = _predict(served)
        first.join()
        assert answers == [200]
        assert beyond.status_code == 503
        assert beyond.headers["Retry-After"] == "1"
        assert beyond.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
