"""Admission of prediction requests: a body bounded in time and memory, then an in-flight slot,
then the route's endpoint, called directly (`serving.direct`).

A stalled upload must not hold what a normal client needs. So a request counts against
`max_in_flight` only once its whole body is here, and the bytes of bodies being received are
bounded apart: the first FREE_BYTES of each are its connection's share (bounded by the
connection cap), the rest is reserved from `max_buffered_bytes` shared by all requests: the
declared Content-Length at once, a chunked body as it arrives. Beyond it a request gets a
fast 503 before its body is read, and small bodies, which need no reservation, still pass.
"""

import asyncio
from collections.abc import Awaitable, Callable

from serving.direct import DirectRoutes, Match, Message, Receive, Scope, Send
from serving.errors import BodiesOverBudget, BodyTimeout, Overloaded, ServingError
from serving.settings import ServingSettings

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FREE_BYTES = 64 * 2**10
"""Bytes of each body not reserved from the shared budget (uvicorn's own read-ahead)."""


class Admission:
    """ASGI middleware admitting prediction requests (see the module's docstring)."""

    def __init__(self, app: ASGIApp, *, settings: ServingSettings, routes: DirectRoutes) -> None:
        self.app = app
        self.routes = routes
        self.max_in_flight = settings.max_in_flight
        self.max_body_bytes = settings.max_body_bytes
        self.max_buffered_bytes = settings.max_buffered_bytes
        self.body_timeout_s = settings.body_timeout_s
        self.in_flight = 0
        """Requests whose body has arrived, until their response is sent."""
        self.buffered = 0
        """Bytes reserved from `max_buffered_bytes` by requests being received or answered."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.match(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self.routes.answer(route, scope, receive, send)  # refused unread: 413
            return
        body = _Body(self)
        try:
            await self._admit(route, body, declared, scope, receive, send)
        except ServingError as error:
            await self.routes.refusal(scope, error)(scope, receive, send)
        finally:
            body.release()

    async def _admit(
        self,
        route: Match,
        body: "_Body",
        declared: int | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Receive the body, take an in-flight slot and answer; ServingError if refused."""
        if declared is not None:
            body.reserve(declared)
        try:
            async with asyncio.timeout(self.body_timeout_s):
                complete = await body.read(receive)
        except TimeoutError:
            raise BodyTimeout(self.body_timeout_s) from None
        if complete is None:
            return  # the client went away
        if not complete:  # over max_body_bytes: the route refuses it: 413
            await self.routes.answer(route, scope, body.replay(receive), send)
            return
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(f"more than {self.max_in_flight} requests in flight")
        self.in_flight += 1
        try:
            await self.routes.answer(route, scope, body.replay(receive), send)
        finally:
            self.in_flight -= 1


class _Body:
    """One request's body as it is received, and the bytes it reserved for it."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.chunks: list[bytes] = []
        self.size = 0
        self.reserved = 0

    def reserve(self, size: int) -> None:
        """Reserve what a body of `size` bytes needs beyond FREE_BYTES; BodiesOverBudget."""
        need = size - FREE_BYTES - self.reserved
        if need <= 0:
            return
        admission = self.admission
        if admission.buffered + need > admission.max_buffered_bytes:
            raise BodiesOverBudget(admission.max_buffered_bytes)
        admission.buffered += need
        self.reserved += need

    def release(self) -> None:
        """Return the reservation."""
        self.admission.buffered -= self.reserved
        self.reserved = 0

    async def read(self, receive: Receive) -> bool | None:
        """Receive the body: True once whole, False past max_body_bytes, None on disconnect."""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            self.size += len(chunk)
            self.chunks.append(chunk)
            if self.size > self.admission.max_body_bytes:
                return False
            self.reserve(self.size)
        return True

    def replay(self, receive: Receive) -> Receive:
        """A receive that gives the app what was read here, then what is still to come."""
        pending = [b"".join(self.chunks)]
        self.chunks = []
        complete = self.size <= self.admission.max_body_bytes

        async def replayed() -> Message:
            if pending:
                return {"type": "http.request", "body": pending.pop(), "more_body": not complete}
            return await receive()

        return replayed


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
