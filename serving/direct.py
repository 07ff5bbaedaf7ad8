"""The prediction routes, called straight from ASGI rather than through FastAPI's routing.

Matching a path against every route, solving dependencies and wrapping the endpoint in
exception handlers and exit stacks took about a quarter of the event loop's time per prediction
(py-spy, 32 connections, 1-row bodies). The prediction endpoints use none of it: each takes the
request and its path parameters (strings), and raises only `ServingError`. So they are declared
with `prediction_route`, which registers them with FastAPI (the OpenAPI schema, the docs) and
records them here; `DirectRoutes` matches a request against the recorded paths, compiled as
Starlette compiles them, and calls the endpoint itself.
"""

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.routing import compile_path

from serving.errors import ServingError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Endpoint = Callable[..., Awaitable[Response]]
E = TypeVar("E", bound=Endpoint)

DECLARED: list[tuple[str, Endpoint]] = []
"""Every prediction route's full path and endpoint, in declaration order."""


def prediction_route(router: APIRouter, path: str, **options: Any) -> Callable[[E], E]:
    """Declare a POST prediction route on `router` (FastAPI's keyword `options`) and record it
    for `DirectRoutes`."""

    def declare(endpoint: E) -> E:
        router.post(path, **options)(endpoint)
        DECLARED.append((router.prefix + path, endpoint))
        return endpoint

    return declare


@dataclass(frozen=True, slots=True)
class Match:
    """A request's prediction route: its endpoint and path parameters."""

    endpoint: Endpoint
    params: dict[str, str]


class DirectRoutes:
    """The declared prediction routes, matched and called without FastAPI's routing."""

    def __init__(
        self,
        declared: list[tuple[str, Endpoint]],
        render_error: Callable[[str, ServingError], Response],
    ) -> None:
        self.routes = tuple((compile_path(path)[0], endpoint) for path, endpoint in declared)
        self.render_error = render_error
        """The error response for a route path, as its protocol writes errors."""

    def match(self, scope: Scope) -> Match | None:
        """The prediction route of a POST request, None for any other request."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path = _route_path(scope)
        for pattern, endpoint in self.routes:
            if (found := pattern.match(path)) is not None:
                return Match(endpoint, found.groupdict())
        return None

    async def answer(self, match: Match, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the route's endpoint and send its response, or the error it raised."""
        try:
            response = await match.endpoint(Request(scope, receive), **match.params)
        except ServingError as error:
            response = self.refusal(scope, error)
        await response(scope, receive, send)

    def refusal(self, scope: Scope, error: ServingError) -> Response:
        """`error` answered as the protocol of the request's route writes errors."""
        return self.render_error(_route_path(scope), error)


def _route_path(scope: Scope) -> str:
    """The path without the app's root path, as Starlette's routing matches it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path
