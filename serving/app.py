"""`create_app`: the FastAPI application factory. Nothing is built at import time."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.telemetry import TelemetryConfig

from serving.admission import Admission
from serving.auth import read_keyring
from serving.direct import DECLARED, DirectRoutes
from serving.errors import BadRequest, ServingError
from serving.routes import predictions, router
from serving.service import Service
from serving.settings import ServingSettings
from serving.v2_routes import error_response_for
from serving.v2_routes import router as v2_router

NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's OpenTelemetry off: each request would otherwise look up the global providers."""


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """Build the app for `settings` (default: from the environment). Changes no process-wide
    state: logging and warning filters are the entry point's (`serving.cli.worker_app`).
    Raises `auth.KeyFileError` (a ValueError naming file and entry) for an unusable keys file."""
    settings = settings or ServingSettings()
    keyring = read_keyring(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings)
        app.state.service = service
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    # /docs and /openapi.json are routes of ours, behind MODELYARD_PROTECT_STATUS when it is on
    app = FastAPI(
        title="modelyard",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        telemetry=None if settings.opentelemetry else NO_TELEMETRY,
    )
    app.state.keyring = keyring
    app.include_router(predictions)
    app.include_router(v2_router)
    app.include_router(router)
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    routes = DirectRoutes(DECLARED, error_response_for)
    app.add_middleware(Admission, settings=settings, routes=routes)
    return app


async def _serving_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServingError)
    return error_response_for(request.url.path, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    where = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:3])
    return error_response_for(request.url.path, BadRequest(f"invalid request: {where}"))
