"""HTTP routes: translate requests to Service calls and answers back. No logic of their own."""

import asyncio
import dataclasses
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import version
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect

from serving import webhooks
from serving.auth import Keyring, presented_key, scrub
from serving.direct import prediction_route
from serving.errors import BodyTimeout, BodyTooLarge, KeyRequired, ServingError, Unauthorized
from serving.ids import new_request_id
from serving.protocol import Codec
from serving.service import Outcome, Service
from serving.settings import ServingSettings
from serving.webhooks import BadDelivery

predictions = APIRouter()
"""MLflow's scoring routes."""
router = APIRouter()
"""Every other route of the scoring server, status and admin."""

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
"""An X-Request-ID a client may choose; any other is replaced by a fresh one."""
MAX_HEADER_CHARS = 1000
"""Longest header value built from client input; a cut list ends with the item `*`."""
NO_KEY = "-"
"""The key label of requests without a valid key."""


async def get_service(request: Request) -> Service:
    """The process's Service, created by the lifespan (async: FastAPI runs a plain function
    dependency in its thread pool, a thread hop on every request)."""
    return request.app.state.service  # type: ignore[no-any-return]


async def get_keyring(request: Request) -> Keyring | None:
    """The API keys of the prediction endpoints; None when they are open."""
    return request.app.state.keyring  # type: ignore[no-any-return]


ServiceDep = Annotated[Service, Depends(get_service)]
KeyringDep = Annotated[Keyring | None, Depends(get_keyring)]


async def status_access(request: Request, service: ServiceDep, keyring: KeyringDep) -> None:
    """With `protect_status`, a valid API key or the admin token; else 401."""
    if not service.settings.protect_status:
        return
    presented = presented_key(request.headers)
    if presented is not None:
        if _is_admin_token(service.settings, presented):
            return
        if keyring is not None and await keyring.identify(presented) is not None:
            return
    raise KeyRequired("an API key or the admin token is required here (MODELYARD_PROTECT_STATUS)")


StatusAccess = Depends(status_access)
INVOCATION_DOC: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        }
    }
}


# The prediction routes are called by `serving.direct` (their requests never reach FastAPI's
# routing) and take the Service and keyring from the app's state.


@prediction_route(predictions, "/invocations", openapi_extra=INVOCATION_DOC, tags=["predict"])
async def invocations(request: Request) -> Response:
    """MLflow scoring protocol for the default model, A/B-routed."""
    return await _invoke(request, None, None)


@prediction_route(
    predictions, "/models/{name}/invocations", openapi_extra=INVOCATION_DOC, tags=["predict"]
)
async def model_invocations(request: Request, name: str) -> Response:
    """MLflow scoring protocol for a named model, A/B-routed."""
    return await _invoke(request, name, None)


@prediction_route(
    predictions,
    "/models/{name}/aliases/{alias}/invocations",
    openapi_extra=INVOCATION_DOC,
    tags=["predict"],
)
async def alias_invocations(request: Request, name: str, alias: str) -> Response:
    """MLflow scoring protocol pinned to one alias (bypasses the split)."""
    return await _invoke(request, name, alias)


@router.post("/models/{name}/feedback", status_code=202, tags=["feedback"])
async def post_feedback(
    name: str, request: Request, service: ServiceDep, keyring: KeyringDep
) -> dict[str, int]:
    """Labels for logged predictions: `{"feedback": [{"request_id", "row", "target"}]}`.
    Stored for the experiment report, which joins them to the log on (request_id, row)."""
    allowance = None
    if keyring is not None:
        key = await keyring.authenticate(request.headers)
        allowance = keyring.admit(key, name, None, service.settings.required_alias)
    try:
        settings = service.settings
        body = await _read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        return {"accepted": await service.store_feedback(name, body)}
    finally:
        if allowance is not None:
            allowance.release()


@router.get("/models", tags=["status"], dependencies=[StatusAccess])
async def models(service: ServiceDep) -> dict[str, Any]:
    """Every served model: aliases -> version, state, last error, traffic split (not its salt).
    Credentials in error texts are masked."""
    document = dataclasses.asdict(service.status())
    for model in document["models"].values():
        del model["traffic"]["salt"]  # knowing it, a client could pick keys that reach staging
    return _scrubbed(document)  # type: ignore[no-any-return]


@router.get("/models/{name}/ready", tags=["status"])
async def model_ready(name: str, service: ServiceDep) -> Response:
    """200 when the model's required alias is loaded, else 503 with the reason."""
    readiness = service.model_readiness(name)
    if readiness.ready:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "reason": scrub(readiness.reasons[0])}, status_code=503)


@router.get("/health/live", tags=["status"])
async def live() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "live"}


@router.get("/health/ready", tags=["status"])
async def ready(service: ServiceDep) -> Response:
    """200 only when every required model is loaded; else 503 naming what is missing."""
    readiness = service.readiness()
    body = readiness.document()
    for key in ("reasons", "degraded_reasons"):
        if key in body:
            body[key] = [scrub(str(reason)) for reason in body[key]]  # type: ignore[attr-defined]
    return JSONResponse(body, status_code=200 if readiness.ready else 503)


@router.get("/ping", tags=["mlflow"])
@router.get("/health", tags=["mlflow"])
async def ping(service: ServiceDep) -> Response:
    """MLflow compatibility: 200 when ready."""
    status = 200 if service.readiness().ready else 503
    return Response("\n", status_code=status, media_type="application/json")


@router.get("/version", tags=["mlflow"])
async def mlflow_version() -> Response:
    """MLflow compatibility: the MLflow version, as `mlflow models serve` answers."""
    return Response(version("mlflow"), media_type="application/json")


@router.get(
    "/metrics", tags=["status"], dependencies=[StatusAccess], response_class=PlainTextResponse
)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus exposition (every worker's values in multiprocess mode, read from their
    files: in a thread, off the event loop)."""
    exposition = await asyncio.to_thread(service.metrics.exposition)
    return Response(exposition, media_type="text/plain; version=0.0.4")


@router.post("/admin/refresh", tags=["admin"])
async def refresh(
    service: ServiceDep, authorization: Annotated[str | None, Header()] = None
) -> dict[str, str]:
    """Re-read the registry now (this worker). Needs `Authorization: Bearer <admin token>`."""
    if not service.settings.admin_token or not service.settings.admin_token.get_secret_value():
        raise Unauthorized("no admin token is configured here (MODELYARD_ADMIN_TOKEN)")
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not _is_admin_token(service.settings, given):
        raise Unauthorized("a valid admin token is required (Authorization: Bearer ...)")
    await service.watcher.poll()
    return {"status": "refreshed"}


@router.post("/webhooks/mlflow", tags=["admin"])
async def mlflow_webhook(request: Request, service: ServiceDep) -> dict[str, str]:
    """MLflow registry webhook: verified, then taken as a hint to poll the registry now."""
    if service.webhooks is None:
        raise Unauthorized("webhooks are not configured here (MODELYARD_WEBHOOK_SECRET)")
    body = await _read_body(request, 64 * 1024, service.settings.body_timeout_s)
    headers = request.headers
    try:
        service.webhooks.verify(
            headers.get("x-mlflow-delivery-id"),
            headers.get("x-mlflow-timestamp"),
            headers.get("x-mlflow-signature"),
            body,
        )
    except BadDelivery as problem:
        raise Unauthorized(f"webhook refused: {problem}") from None
    if not webhooks.is_alias_event(body):
        return {"status": "ignored"}
    service.watcher.refresh_now()
    return {"status": "accepted"}


@router.get("/openapi.json", include_in_schema=False, dependencies=[StatusAccess])
async def openapi(request: Request) -> JSONResponse:
    """The OpenAPI schema."""
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False, dependencies=[StatusAccess])
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="modelyard")


async def _invoke(request: Request, name: str | None, alias: str | None) -> Response:
    """MLflow's scoring protocol: the request answered, its outcome as a response."""
    state = request.app.state
    return outcome_response(await prediction(request, state.service, state.keyring, name, alias))


async def prediction(
    request: Request,
    service: Service,
    keyring: Keyring | None,
    name: str | None,
    alias: str | None,
    *,
    codec: Codec | None = None,
    version: str | None = None,
) -> Outcome:
    """Check the request's key (when keys are on), read its body and let Service answer it
    with `codec` (default: MLflow's scoring protocol), routed by the split, pinned to `alias`
    or to the alias serving `version`. A refused request is recorded like any other."""
    started = time.perf_counter()
    request_id = request_id_of(request.headers)
    if keyring is None:
        return await _predict(request, service, name, alias, request_id, started, codec, version)
    key_name = NO_KEY
    try:
        key = await keyring.authenticate(request.headers)
        key_name = key.name
        model = name or service.default_model()
        pinned = alias if version is None else _alias_serving(service, model, version)
        allowance = keyring.admit(key, model, pinned, service.settings.required_alias)
    except ServingError as error:
        outcome = service.refused(
            error, name, alias, request_id=request_id, started=started, key=key_name
        )
    else:
        try:
            outcome = await _predict(
                request, service, name, alias, request_id, started, codec, version, key_name
            )
        finally:
            allowance.release()
    service.metrics.requests_by_key.labels(key_name, str(outcome.status)).inc()
    return outcome


async def _predict(
    request: Request,
    service: Service,
    name: str | None,
    alias: str | None,
    request_id: str,
    started: float,
    codec: Codec | None,
    version: str | None,
    key: str | None = None,
) -> Outcome:
    """Read the body and let Service answer it; `key` names the request's API key."""
    headers = request.headers
    try:
        settings = service.settings
        body = await _read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    except BodyTooLarge as error:
        outcome = service.refused(
            error, name, alias, request_id=request_id, started=started, key=key
        )
    else:
        outcome = await service.invoke(
            name,
            alias,
            body,
            headers.get("content-type"),
            routing_key=headers.get("x-routing-key"),
            request_id=request_id,
            started=started,
            key=key,
            codec=codec,
            version=version,
        )
    return outcome


def _alias_serving(service: Service, name: str, version: str) -> str | None:
    """The alias serving `version` of model `name` now, the one a key pins by asking for that
    version; None when none does (the request then gets its 404 from Service)."""
    served = service.table.models.get(name)
    return served.alias_serving(version) if served is not None else None


def outcome_response(
    outcome: Outcome, render_error: Callable[[ServingError], Response] | None = None
) -> Response:
    """The predictions or the error (as `render_error` writes it; default: MLflow's shape),
    with headers naming the request and the version routed to."""
    if outcome.error is None:
        response: Response = Response(
            outcome.body, media_type=outcome.media_type, headers=dict(outcome.headers)
        )
        if outcome.extra_columns:
            response.headers["X-Ignored-Columns"] = ignored_columns(outcome.extra_columns)
    else:
        response = (render_error or error_response)(outcome.error)
    headers = response.headers
    headers["X-Request-ID"] = outcome.request_id
    ref = outcome.ref
    if ref is not None and outcome.alias is not None:
        headers["X-Model-Name"] = ref.name
        headers["X-Model-Alias"] = outcome.alias
        headers["X-Model-Version"] = ref.version
        headers["X-Model-Run-Id"] = ref.run_id or ""
    return response


def request_id_of(headers: Mapping[str, str]) -> str:
    """The client's X-Request-ID when it is 1..128 of `A-Z a-z 0-9 . _ -`, else a fresh one."""
    given = headers.get("x-request-id")
    if given is not None and REQUEST_ID.fullmatch(given):
        return given
    return new_request_id()


def ignored_columns(names: Iterable[str]) -> str:
    """The X-Ignored-Columns value: each name percent-encoded as in a URL (all but letters,
    digits and `-._~`, as UTF-8), joined by commas, at most MAX_HEADER_CHARS characters; a list
    that does not fit keeps its first whole names and ends with the item `*`."""
    parts: list[str] = []
    length = -1  # of ",".join(parts)
    for name in names:
        part = quote(name[:MAX_HEADER_CHARS], safe="")
        if length + 1 + len(part) > MAX_HEADER_CHARS:
            while parts and length + 2 > MAX_HEADER_CHARS:  # make room for ",*"
                length -= len(parts.pop()) + 1
            return ",".join([*parts, "*"])
        parts.append(part)
        length += 1 + len(part)
    return ",".join(parts)


def error_response(error: ServingError) -> JSONResponse:
    """MLflow's error shape; never a stack trace, never the payload."""
    return JSONResponse(
        {"error_code": error.error_code, "message": str(error)},
        status_code=error.status_code,
        headers=error.headers,
    )


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, refused with 413 before parsing when it is over `limit` bytes, and with 408
    when it has not arrived within `timeout_s`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks, size, more = [], 0, True
    try:
        async with asyncio.timeout(timeout_s):
            while more:  # the ASGI messages themselves: Request.stream() costs a generator
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(timeout_s) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _is_admin_token(settings: ServingSettings, given: str) -> bool:
    """Whether `given` is the admin token, compared in constant time; never when it is unset
    or empty."""
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


def _scrubbed(value: Any) -> Any:
    """`value` with credentials masked in every string it holds."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value
