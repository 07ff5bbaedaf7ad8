"""What TCP clients get from `python -m serving` (`modelyard serve`): tested over a real socket.

TestClient never opens one, so these tests start the command in a child process and talk to
it with raw sockets and http.client: TCP_NODELAY on accepted connections (single- and
multi-worker, with and without uvloop), keep-alive across answers and errors, a body over
the limit refused with 413 before it is sent, and headers built from client input (column
names, request ids) that stay valid HTTP.
"""

import http.client
import json
import re
import socket
import time
from collections.abc import Iterator
from urllib.parse import unquote

import pytest

from registry.client import connect
from serving.settings import ServingSettings
from tests.conftest import wait_until
from tests.sockets import (
    Served,
    SocketUnreachable,
    read_response,
    server_side_option,
    serving_process,
)
from training.datasets import load_split
from training.faults import register_fault_model

pytestmark = pytest.mark.slow

MODEL = "http-socket-clf"
LIMIT = 64 * 1024
UNREACHABLE_REGISTRY = "http://127.0.0.1:9"
"""The discard port: nothing answers, so a process started on it serves no model but is live."""


@pytest.fixture(scope="module")
def served(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`python -m serving` (one worker) serving a fault model, body limit LIMIT bytes."""
    register_fault_model(MODEL, connect(tracking_uri), alias="production")
    settings = {
        "MODELYARD_MODELS": MODEL,
        "MODELYARD_ALIASES": "production",
        "MODELYARD_MAX_BODY_BYTES": str(LIMIT),
    }
    log = tmp_path_factory.mktemp("http") / "serving.log"
    with serving_process(tracking_uri, settings, log) as process:
        yield process


def _predict_body(rows: int = 2) -> bytes:
    frame = load_split("breast-cancer").x_holdout.head(rows)
    split = {"columns": list(frame.columns), "data": frame.values.tolist()}
    return json.dumps({"dataframe_split": split}).encode()


# -- keep-alive ------------------------------------------------------------------------------


def test_keep_alive_serves_answers_and_errors_on_one_connection(served: Served):
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    json_type = {"Content-Type": "application/json"}
    requests = [
        ("POST", f"/models/{MODEL}/invocations", _predict_body(), json_type, 200),
        ("POST", f"/models/{MODEL}/invocations", b'{"dataframe_split": ', json_type, 400),
        ("POST", f"/models/{MODEL}/invocations", _predict_body(), {"Content-Type": "x/y"}, 415),
        ("POST", "/models/no-such-model/invocations", _predict_body(), json_type, 404),
        ("GET", "/health/ready", None, {}, 200),
        ("POST", f"/models/{MODEL}/invocations", _predict_body(5), json_type, 200),
    ] * 3
    try:
        connection.connect()
        assert connection.sock is not None
        local = connection.sock.getsockname()
        for method, path, body, headers, status in requests:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.status == status, (method, path)
            assert not response.will_close, f"{path} closed the connection ({status})"
            # http.client reconnects silently; the same socket proves the same connection
            assert connection.sock is not None
            assert connection.sock.getsockname() == local
    finally:
        connection.close()


# -- a body over the limit -------------------------------------------------------------------


@pytest.mark.parametrize("expect_continue", [False, True])
def test_body_over_the_limit_is_413_before_it_is_sent(served: Served, expect_continue: bool):
    head = (
        f"POST /models/{MODEL}/invocations HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{served.port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {100 * 2**20}\r\n"
        + ("Expect: 100-continue\r\n" if expect_continue else "")
        + "\r\n"
    )
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as client:
        started = time.monotonic()
        client.sendall(head.encode())  # and not one byte of the 100 MiB it announces
        status, headers, body = read_response(client)
        elapsed = time.monotonic() - started
        # with Expect, a server about to read the body answers "100 Continue" first; none came
        assert status == 413
        assert elapsed < 5, f"413 after {elapsed:.1f} s"
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error_code"] == "REQUEST_LIMIT_EXCEEDED"
        # the announced body never came: the connection cannot carry another request
        assert client.recv(1) == b""


def test_body_at_the_limit_is_read(served: Served):
    body = _predict_body()
    padded = body[:-1] + b" " * (LIMIT - len(body)) + body[-1:]
    assert len(padded) == LIMIT
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        connection.request(
            "POST",
            f"/models/{MODEL}/invocations",
            body=padded,
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
    finally:
        connection.close()


# -- headers built from client input ---------------------------------------------------------


def _post(
    connection: http.client.HTTPConnection, body: bytes, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    connection.request(
        "POST",
        f"/models/{MODEL}/invocations",
        body=body,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    response = connection.getresponse()
    response.read()
    return response


def _body_with_columns(extra: list[str]) -> bytes:
    frame = load_split("breast-cancer").x_holdout.head(2)
    columns = [*frame.columns, *extra]
    rows = [[*row, *[0.0] * len(extra)] for row in frame.values.tolist()]
    return json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()


def test_ignored_column_names_are_percent_encoded_in_their_header(served: Served):
    names = ["a\nb", "温度", "x,y", "r\r\nSet-Cookie: s=1", "plain_name-1.0~"]
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        response = _post(connection, _body_with_columns(names))
        assert response.status == 200
        header = response.getheader("X-Ignored-Columns")
        assert header is not None
        assert sorted(header.split(",")) == [
            "%E6%B8%A9%E5%BA%A6",
            "a%0Ab",
            "plain_name-1.0~",
            "r%0D%0ASet-Cookie%3A%20s%3D1",
            "x%2Cy",
        ]
        assert sorted(unquote(part) for part in header.split(",")) == sorted(names)
        assert response.getheader("Set-Cookie") is None
        assert not response.will_close
        assert _post(connection, _predict_body()).status == 200  # on the same connection
    finally:
        connection.close()


def test_ignored_columns_header_is_capped_at_whole_names(served: Served):
    names = [f"extra_column_{number:03d}_{'x' * 20}" for number in range(100)]
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        response = _post(connection, _body_with_columns(names))
        assert response.status == 200
        header = response.getheader("X-Ignored-Columns")
        assert header is not None
        assert 950 < len(header) <= 1000
        *kept, marker = header.split(",")
        assert marker == "*"
        assert kept == names[: len(kept)]
    finally:
        connection.close()


@pytest.mark.parametrize("request_id", ["x" * 129, "a b", "id\u00e9", "x" * 10_000, "x" * 100_000])
def test_an_unacceptable_request_id_is_replaced(served: Served, request_id: str):
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        connection.putrequest("POST", f"/models/{MODEL}/invocations")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("X-Request-ID", request_id.encode())
        body = _predict_body()
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        response.read()
        echoed = response.getheader("X-Request-ID")
        assert echoed != request_id
        if response.status == 431:  # over the process's header limit: refused before routing
            assert len(request_id) > ServingSettings().max_header_bytes
            return
        assert response.status == 200
        assert echoed is not None
        assert re.fullmatch("[0-9a-f]{32}", echoed)
        assert not response.will_close
        wait_until(lambda: echoed in served.child.log.read_text(), 10, "the request's log line")
        assert request_id not in served.child.log.read_text()
    finally:
        connection.close()


def test_an_acceptable_request_id_is_kept(served: Served):
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        request_id = "Client-7." + "a" * 119
        response = _post(connection, _predict_body(), {"X-Request-ID": request_id})
        assert response.status == 200
        assert response.getheader("X-Request-ID") == request_id
    finally:
        connection.close()


# -- TCP_NODELAY -----------------------------------------------------------------------------


def _nodelay(served: Served) -> int:
    """TCP_NODELAY of the server's end of a fresh, served keep-alive connection."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as client:
        client.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        status, _, _ = read_response(client)
        assert status == 200
        try:
            return server_side_option(
                served.child.pid,
                served.port,
                client.getsockname()[1],
                socket.IPPROTO_TCP,
                socket.TCP_NODELAY,
            )
        except SocketUnreachable as reason:
            pytest.skip(f"cannot read another process's socket options here: {reason}")


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("uvloop", [True, False])
def test_tcp_nodelay_on_accepted_connections(
    workers: int, uvloop: bool, tmp_path_factory: pytest.TempPathFactory
):
    # uvloop sets TCP_NODELAY on every TCP connection it accepts; asyncio only where the socket
    # says IPPROTO_TCP, and the listening socket uvicorn makes in multi-worker mode says 0
    # (stock `uvicorn --workers 2 --loop asyncio` leaves it off, uvicorn issue #3149), so
    # serving.cli sets it on that socket, whose accepted connections inherit it on Linux.
    directory = tmp_path_factory.mktemp("no-uvloop")
    settings = {"MODELYARD_MODELS": "none"}
    tried = directory / "uvloop-tried"
    if not uvloop:  # as where uvloop is not installed: uvicorn's "auto" loop is then asyncio
        (directory / "uvloop.py").write_text(
            f"open({str(tried)!r}, 'a').close()\nraise ImportError('uvloop hidden by the test')\n"
        )
        settings["PYTHONPATH"] = str(directory)
    with serving_process(
        UNREACHABLE_REGISTRY,
        settings,
        directory / "serving.log",
        workers=workers,
        ready="/health/live",
    ) as served:
        assert _nodelay(served) == 1
    assert tried.exists() != uvloop  # the asyncio loop was the fallback from a failed import
