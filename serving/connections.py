"""Bounds on a connection before the app sees a request: the head's size and the time to send it.

uvicorn's httptools protocol keeps a header value it has not finished parsing in memory
whatever its size, and waits forever for a request on a connection that sends nothing or
stops in the middle of its headers. `BoundedHttpTools` closes such connections.
"""

import asyncio
import socket
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState


class ServerConfig(uvicorn.Config):
    """uvicorn's Config with the bounds `BoundedHttpTools` enforces, and TCP_NODELAY.

    `max_header_bytes` bounds a request's line and headers together (beyond: 431);
    `head_timeout_s` is the time a client has to send them once it started (beyond: 408).
    A connection that sends nothing is closed after `timeout_keep_alive`, as an idle one is.
    """

    def __init__(
        self, app: str, *, max_header_bytes: int, head_timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(app, http=BoundedHttpTools, **kwargs)
        self.max_header_bytes = max_header_bytes
        self.head_timeout_s = head_timeout_s

    def bind_socket(self) -> socket.socket:
        """The listening socket, with TCP_NODELAY, which accepted sockets inherit on Linux.

        uvicorn's multi-worker mode makes its own socket without it, and a response written in
        two pieces then waits ~40 ms for the client's delayed ACK on keep-alive connections.
        """
        listener = super().bind_socket()
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return listener


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a head over the size limit or slower than the
    time limit with an MLflow-shaped error, then closing the connection."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, ServerConfig)
        self.max_header_bytes = config.max_header_bytes
        self.head_timeout_s = config.head_timeout_s
        self.head_bytes = 0
        """Bytes of the current request's URL and complete headers."""
        self.head_read = 0
        """Bytes read while the current request's head was unfinished."""
        self.in_head = True
        self.ended_in_read = False
        """A request ended within the read being parsed."""
        self.head_timer: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """As uvicorn, and closed after the keep-alive timeout unless a request begins."""
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        """As uvicorn, without the head's timer."""
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse as uvicorn; refuse once an unfinished head has grown past the limit (it may
        pass it by at most one read, whose bytes the parser holds until the header ends).

        A read in which a request ended counts nothing: it held that request's body, and at
        most the beginning of the next head."""
        if self.refused:
            return
        self.ended_in_read = False
        super().data_received(data)
        if self.in_head and not self.refused and not self.ended_in_read:
            self.head_read += len(data)
            if self.head_read > self.max_header_bytes:
                self._refuse_head_too_large()

    def on_message_begin(self) -> None:
        """A request starts: its head must be complete within the head timeout."""
        super().on_message_begin()
        self.in_head, self.head_bytes, self.head_read = True, 0, 0
        self._stop_head_timer()
        self.head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        """As uvicorn; the URL counts towards the head."""
        super().on_url(url)
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """As uvicorn; the header counts towards the head."""
        super().on_header(name, value)
        self.head_bytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        """Start the app as uvicorn does, unless the head was over the limit."""
        self._stop_head_timer()
        self.in_head = False
        if self.head_bytes > self.max_header_bytes:
            self._refuse_head_too_large()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """As uvicorn, unless the request was refused."""
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        """As uvicorn, unless the request was refused; the next bytes begin a head."""
        if self.refused:
            return
        super().on_message_complete()
        self.in_head, self.head_read, self.ended_in_read = True, 0, True

    def _refuse_head_too_large(self) -> None:
        self._refuse(
            431,
            "REQUEST_LIMIT_EXCEEDED",
            f"request line and headers are larger than the limit of {self.max_header_bytes} bytes",
        )

    def _head_timed_out(self) -> None:
        self.head_timer = None
        self._refuse(
            408,
            "DEADLINE_EXCEEDED",
            f"request line and headers did not arrive within {self.head_timeout_s:g} s",
        )

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer `status` with an MLflow error and close; the app never sees the request."""
        self.refused = True
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        body = orjson.dumps({"error_code": code, "message": message})
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None


_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}
