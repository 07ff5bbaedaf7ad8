"""Hostile requests for the hostile benchmark: bodies that expand in memory, and raw sockets
that send huge headers, stall a body, or hold many connections half-open.

The body builders are pure; the socket senders speak just enough HTTP/1.1 to read a status
line, and time everything with time.monotonic().
"""

from __future__ import annotations

import io
import json
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

# -- bodies --------------------------------------------------------------------------------------


def long_string_split(features: list[str], rows: int = 8_000, long_chars: int = 20_000) -> bytes:
    """`dataframe_split` of empty strings, but for one cell holding a `long_chars` string."""
    data: list[list[Any]] = [[""] * len(features) for _ in range(rows)]
    data[0][0] = "x" * long_chars
    return json.dumps({"dataframe_split": {"columns": features, "data": data}}).encode()


def parquet_bomb(column: str, rows_per_group: int = 20_000_000, groups: int = 1) -> bytes:
    """Parquet, zstd: `groups` row groups of `rows_per_group` zero doubles (8 bytes a row)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({column: np.zeros(rows_per_group)})
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, table.schema, compression="zstd", use_dictionary=False) as writer:
        for _ in range(groups):
            writer.write_table(table, row_group_size=rows_per_group)
    return sink.getvalue()


def wide_csv(columns: int = 200_000) -> bytes:
    """CSV of a header with `columns` names and one row of zeros."""
    header = ",".join(f"c{i}" for i in range(columns))
    return f"{header}\n{','.join(['0'] * columns)}\n".encode()


FOREIGN_COLUMN = "列名\nX-Injected: yes"
"""A column name outside Latin-1 holding a newline and a header line after it."""


def with_foreign_column(features: list[str], row: list[float]) -> bytes:
    """One valid row plus an extra column named FOREIGN_COLUMN (ignored, and echoed back)."""
    split = {"columns": [*features, FOREIGN_COLUMN], "data": [[*row, 1.0]]}
    return json.dumps({"dataframe_split": split}, ensure_ascii=False).encode()


def many_cells(features: list[str], cells: int = 1_000_000) -> bytes:
    """`dataframe_split` of zeros with at most `cells` cells: the request-size bound's edge."""
    rows = cells // len(features)
    data = "[" + ",".join(["[" + ",".join(["0"] * len(features)) + "]"] * rows) + "]"
    return f'{{"dataframe_split":{{"columns":{json.dumps(features)},"data":{data}}}}}'.encode()


def nested(depth: int = 100_000) -> bytes:
    """A `dataframe_split` whose data is `depth` nested lists."""
    return b'{"dataframe_split":{"columns":["a"],"data":' + b"[" * depth + b"]" * depth + b"}}"


# -- raw sockets ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """What a raw-socket attack got back: a status, the connection closed, or nothing."""

    status: int | None
    closed: bool
    seconds: float
    """From the first byte sent to the answer (or to giving up)."""
    sent_bytes: int
    head: str = ""


def _status(data: bytes) -> int | None:
    found = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(found[1]) if found else None


def _read_answer(sock: socket.socket) -> tuple[int | None, bool, bytes]:
    """(status, closed, bytes) from a socket that select() found readable."""
    try:
        data = sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return None, True, b""
    if not data:
        return None, True, b""
    return _status(data), False, data


def _connect(host: str, port: int, timeout_s: float = 5) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def trickle(
    host: str,
    port: int,
    head: bytes,
    filler: bytes,
    total_bytes: int,
    every_s: float,
    give_up_s: float,
) -> Answer:
    """Send `head`, then `filler` every `every_s` until `total_bytes`, an answer or `give_up_s`.

    An answer is a status line or the server closing the connection.
    """
    sock = _connect(host, port)
    sock.setblocking(False)
    started = time.monotonic()
    sent = 0
    pending = head
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while time.monotonic() - started < give_up_s:
                if selector.select(timeout=0):
                    status, closed, data = _read_answer(sock)
                    if status is not None or closed:
                        elapsed = time.monotonic() - started
                        return Answer(status, closed, elapsed, sent, data[:200].decode("latin-1"))
                if not pending and sent < total_bytes:
                    pending = filler[: total_bytes - sent]
                if pending:
                    try:
                        written = sock.send(pending)
                    except BlockingIOError:
                        written = 0
                    except (BrokenPipeError, ConnectionResetError):
                        return Answer(None, True, time.monotonic() - started, sent)
                    sent += written
                    pending = pending[written:]
                selector.select(timeout=every_s)
    finally:
        sock.close()
    return Answer(None, False, time.monotonic() - started, sent)


def huge_header(host: str, port: int, path: str, total_bytes: int, give_up_s: float) -> Answer:
    """An X-Request-ID header of `total_bytes`, streamed as fast as the server takes it."""
    head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Request-ID: ".encode()
    return trickle(host, port, head, b"a" * 2**16, total_bytes, 0, give_up_s)


def stalled_body(
    host: str, port: int, path: str, length: int, rate_bytes_s: int, give_up_s: float
) -> Answer:
    """A JSON body announced as `length` bytes, sent at `rate_bytes_s` (100 sends a second)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    chunk = b" " * max(1, rate_bytes_s // 100)
    return trickle(host, port, head, chunk, length, 0.01, give_up_s)


STALL_KINDS = ("idle", "partial-headers", "partial-body")


def _stall_opening(kind: str, host: str, path: str) -> bytes:
    if kind == "idle":
        return b""
    if kind == "partial-headers":
        return f"POST {path} HTTP/1.1\r\nHost: {host}\r\n".encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 4096\r\n\r\n{{"
    ).encode()


class Stalled:
    """`count` connections, kinds in turn from STALL_KINDS, each sending its opening and then
    nothing; a connection the server closes is opened again (an attacker reconnects)."""

    def __init__(self, host: str, port: int, path: str, count: int) -> None:
        self.host, self.port, self.path, self.count = host, port, path, count
        self.opened = 0
        self.closed_by_server = 0
        self.answered: dict[str, int] = {}
        """Status lines received on stalled connections, by status."""
        self.connect_errors = 0
        self._selector = selectors.DefaultSelector()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="stalled")

    def __enter__(self) -> Stalled:
        for i in range(self.count):
            self._open(STALL_KINDS[i % len(STALL_KINDS)])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def record(self) -> dict[str, Any]:
        """What happened to the stalled connections."""
        return {
            "count": self.count,
            "kinds": list(STALL_KINDS),
            "opened": self.opened,
            "closed_by_server": self.closed_by_server,
            "answered": dict(self.answered),
            "connect_errors": self.connect_errors,
        }

    def _open(self, kind: str) -> None:
        try:
            sock = _connect(self.host, self.port)
            sock.sendall(_stall_opening(kind, self.host, self.path))
        except OSError:
            self.connect_errors += 1
            return
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, kind)
        self.opened += 1

    def _run(self) -> None:
        while not self._halt.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                status, closed, _ = _read_answer(sock)
                if status is not None:
                    self.answered[str(status)] = self.answered.get(str(status), 0) + 1
                if status is not None or closed:
                    self.closed_by_server += 1
                    self._selector.unregister(sock)
                    sock.close()
                    if not self._halt.is_set():
                        self._open(key.data)
