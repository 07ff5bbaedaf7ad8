"""A hostile HTTP proxy in front of `mlflow server`: passes calls through, or answers some of
them with garbage, errors or silence, and can throttle artifact downloads.

The resilience benchmark points a serving process at it and switches its behaviour while the
process polls; every answer it made up is counted by kind.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

HOSTILE = {
    "not-json": (200, b"<html>surprise</html>"),
    "json-list": (200, b"[1, 2, 3]"),
    "json-null": (200, b"null"),
    "nan": (200, b'{"registered_model": {"name": NaN, "aliases": NaN}}'),
    "wrong-shape": (200, b'{"registered_model": "[[[[", "model_versions": 7}'),
    "deep": (200, b"[" * 3000 + b"]" * 3000),
    "huge-number": (200, b'{"registered_model": {"name": 1e999999, "tags": 1e308}}'),
    "error-500": (500, b'{"error_code": "INTERNAL_ERROR"}'),
    "error-503": (503, b"upstream unavailable"),
    "truncated": (200, b'{"registered_model": {"name": "'),
}
"""Made-up answers, by kind: status and body."""
HANG = "hang"
ARTIFACTS = "/mlflow-artifacts/"


class RegistryProxy:
    """A threaded proxy on 127.0.0.1 forwarding to `upstream`.

    `hostile_share` of the calls (artifact downloads excepted) get a made-up answer from
    HOSTILE or hang for `hang_s`; `artifact_delay_s` delays each artifact download.
    """

    def __init__(self, upstream: str, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.hostile_share = 0.0
        self.hang_s = 30.0
        self.artifact_delay_s = 0.0
        self.made_up: Counter[str] = Counter()
        self.forwarded = 0
        self.artifact_downloads = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RegistryProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def hostile_answers(self) -> int:
        return sum(self.made_up.values())

    def _pick(self, path: str) -> str | None:
        """The made-up answer for this call, or None to forward it."""
        if ARTIFACTS in path:
            return None
        with self._lock:
            if self._rng.random() >= self.hostile_share:
                return None
            kind = self._rng.choice([*HOSTILE, HANG])
            self.made_up[kind] += 1
            return kind

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                kind = proxy._pick(self.path)
                if kind == HANG:
                    time.sleep(proxy.hang_s)
                    self.close_connection = True
                    return
                if kind is not None:
                    status, made_up = HOSTILE[kind]
                    self._answer(status, made_up, "application/json")
                    return
                if ARTIFACTS in self.path:
                    with proxy._lock:  # handlers run in threads of their own
                        proxy.artifact_downloads += 1
                    time.sleep(proxy.artifact_delay_s)
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                try:
                    answer = requests.request(
                        self.command,
                        proxy.upstream + self.path,
                        data=body,
                        headers=headers,
                        timeout=60,
                    )
                except requests.RequestException:
                    self._answer(502, b"upstream unreachable", "text/plain")
                    return
                with proxy._lock:
                    proxy.forwarded += 1
                kind = answer.headers.get("Content-Type", "application/octet-stream")
                self._answer(answer.status_code, answer.content, kind)

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _any  # noqa: N815

        return Handler
