"""HTTP routes: translate requests to Service calls and answers back. No logic of their own."""

import dataclasses
import hmac
import time
from importlib.metadata import version
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response

from serving import webhooks
from serving.errors import BodyTooLarge, ServingError, Unauthorized
from serving.service import Outcome, Service
from serving.webhooks import BadDelivery

router = APIRouter()


async def get_service(request: Request) -> Service:
    """The process's Service, created by the lifespan (async: FastAPI runs a plain function
    dependency in its thread pool, a thread hop on every request)."""
    return request.app.state.service  # type: ignore[no-any-return]


ServiceDep = Annotated[Service, Depends(get_service)]
INVOCATION_DOC: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        }
    }
}


@router.post("/invocations", openapi_extra=INVOCATION_DOC, tags=["predict"])
async def invocations(request: Request, service: ServiceDep) -> Response:
    """MLflow scoring protocol for the default model, A/B-routed."""
    return await _invoke(request, service, None, None)


@router.post("/models/{name}/invocations", openapi_extra=INVOCATION_DOC, tags=["predict"])
async def model_invocations(name: str, request: Request, service: ServiceDep) -> Response:
    """MLflow scoring protocol for a named model, A/B-routed."""
    return await _invoke(request, service, name, None)


@router.post(
    "/models/{name}/aliases/{alias}/invocations", openapi_extra=INVOCATION_DOC, tags=["predict"]
)
async def alias_invocations(
    name: str, alias: str, request: Request, service: ServiceDep
) -> Response:
    """MLflow scoring protocol pinned to one alias (bypasses the split)."""
    return await _invoke(request, service, name, alias)


@router.get("/models", tags=["status"])
async def models(service: ServiceDep) -> dict[str, Any]:
    """Every served model: aliases -> version, state, last error, traffic split."""
    return dataclasses.asdict(service.status())


@router.get("/models/{name}/ready", tags=["status"])
async def model_ready(name: str, service: ServiceDep) -> Response:
    """200 when the model's required alias is loaded, else 503 with the reason."""
    readiness = service.model_readiness(name)
    if readiness.ready:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "reason": readiness.reasons[0]}, status_code=503)


@router.get("/health/live", tags=["status"])
async def live() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "live"}


@router.get("/health/ready", tags=["status"])
async def ready(service: ServiceDep) -> Response:
    """200 only when every required model is loaded; else 503 naming what is missing."""
    readiness = service.readiness()
    if readiness.ready:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "reasons": list(readiness.reasons)}, status_code=503)


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


@router.get("/metrics", tags=["status"])
async def metrics(service: ServiceDep) -> Response:
    """Prometheus exposition (every worker's values in multiprocess mode)."""
    return Response(service.metrics.exposition(), media_type="text/plain; version=0.0.4")


@router.post("/admin/refresh", tags=["admin"])
async def refresh(
    service: ServiceDep, authorization: Annotated[str | None, Header()] = None
) -> dict[str, str]:
    """Re-read the registry now (this worker). Needs `Authorization: Bearer <admin token>`."""
    token = service.settings.admin_token
    given = (authorization or "").removeprefix("Bearer ").strip()
    if token is None or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise Unauthorized("a valid admin token is required (Authorization: Bearer ...)")
    await service.watcher.poll()
    return {"status": "refreshed"}


@router.post("/webhooks/mlflow", tags=["admin"])
async def mlflow_webhook(request: Request, service: ServiceDep) -> dict[str, str]:
    """MLflow registry webhook: verified, then taken as a hint to poll the registry now."""
    if service.webhooks is None:
        raise Unauthorized("webhooks are not configured here (MODELYARD_WEBHOOK_SECRET)")
    body = await _read_body(request, 64 * 1024)
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


async def _invoke(
    request: Request, service: Service, name: str | None, alias: str | None
) -> Response:
    """Read the request, let Service answer it, and write the outcome as a response."""
    started = time.perf_counter()
    headers = request.headers
    request_id = headers.get("x-request-id")
    try:
        body = await _read_body(request, service.settings.max_body_bytes)
    except BodyTooLarge as error:
        outcome = service.refused(error, name, alias, request_id=request_id, started=started)
    else:
        outcome = await service.invoke(
            name,
            alias,
            body,
            headers.get("content-type"),
            routing_key=headers.get("x-routing-key"),
            request_id=request_id,
            started=started,
        )
    return _response(outcome)


def _response(outcome: Outcome) -> Response:
    """The predictions or the error, with headers naming the request and the version routed to."""
    if outcome.error is None:
        response: Response = Response(outcome.body, media_type="application/json")
        if outcome.extra_columns:
            response.headers["X-Ignored-Columns"] = ",".join(outcome.extra_columns)[:1000]
    else:
        response = error_response(outcome.error)
    headers = response.headers
    headers["X-Request-ID"] = outcome.request_id
    ref = outcome.ref
    if ref is not None and outcome.alias is not None:
        headers["X-Model-Name"] = ref.name
        headers["X-Model-Alias"] = outcome.alias
        headers["X-Model-Version"] = ref.version
        headers["X-Model-Run-Id"] = ref.run_id or ""
    return response


def error_response(error: ServingError) -> JSONResponse:
    """MLflow's error shape; never a stack trace, never the payload."""
    return JSONResponse(
        {"error_code": error.error_code, "message": str(error)},
        status_code=error.status_code,
        headers=error.headers,
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 before parsing when it is over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
