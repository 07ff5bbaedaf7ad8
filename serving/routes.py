"""HTTP routes: translate requests to Service calls and answers back. No logic of their own."""

import hmac
import logging
import time
import uuid
from importlib.metadata import version
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response

from serving import webhooks
from serving.errors import BodyTooLarge, ServingError, Unauthorized
from serving.service import Service
from serving.webhooks import BadDelivery

router = APIRouter()
request_log = logging.getLogger("serving.requests")


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
    return await _invoke(request, service, service.default_model(), None)


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
    return {
        "registry_error": service.watcher.registry_error,
        "last_poll": service.watcher.last_poll,
        "models": {
            name: {
                "ready": served.ready,
                "required_alias": served.required_alias,
                "traffic": {
                    "weights": dict(served.split.weights),
                    "salt": served.split.salt,
                    "source": served.split.source,
                    "problem": served.split_problem,
                },
                "shadow": {
                    f"{production}->{shadow}": tally.summary()
                    for (production, shadow), tally in list(served.shadow.items())
                },
                "aliases": {
                    alias: {
                        "state": slot.state,
                        "version": slot.current.ref.version if slot.current else None,
                        "run_id": slot.current.ref.run_id if slot.current else None,
                        "target": slot.loading,
                        "registry_version": slot.wanted,
                        "predict": _predict_mode(slot.current),
                        "last_error": slot.error,
                        "note": slot.note,
                    }
                    for alias, slot in served.slots.items()
                },
            }
            for name, served in service.table.models.items()
        },
    }


@router.get("/models/{name}/ready", tags=["status"])
async def model_ready(name: str, service: ServiceDep) -> Response:
    """200 when the model's required alias is loaded, else 503 with the reason."""
    served = service.table.model(name)
    if served.ready:
        return JSONResponse({"ready": True})
    slot = served.slots[served.required_alias]
    reason = slot.error or slot.note or f"alias '{slot.alias}' is {slot.state}"
    return JSONResponse({"ready": False, "reason": reason}, status_code=503)


@router.get("/health/live", tags=["status"])
async def live() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "live"}


@router.get("/health/ready", tags=["status"])
async def ready(service: ServiceDep) -> Response:
    """200 only when every required model is loaded; else 503 naming what is missing."""
    reasons = _not_ready(service)
    if reasons:
        return JSONResponse({"ready": False, "reasons": reasons}, status_code=503)
    return JSONResponse({"ready": True})


@router.get("/ping", tags=["mlflow"])
@router.get("/health", tags=["mlflow"])
async def ping(service: ServiceDep) -> Response:
    """MLflow compatibility: 200 when ready."""
    return Response(
        "\n", status_code=503 if _not_ready(service) else 200, media_type="application/json"
    )


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


async def _invoke(request: Request, service: Service, name: str, alias: str | None) -> Response:
    started = time.perf_counter()
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    status, served_by = 200, None
    try:
        body = await _read_body(request, service.settings.max_body_bytes)
        answer = await service.invoke(
            name,
            alias,
            request.headers.get("x-routing-key"),
            body,
            request.headers.get("content-type"),
        )
        response = Response(answer.body, media_type="application/json")
        served_by = (answer.model, answer.alias)
        if answer.extra_columns:
            response.headers["X-Ignored-Columns"] = ",".join(answer.extra_columns)[:1000]
    except ServingError as error:
        status, served_by = error.status_code, error.served_by
        response = error_response(error)
    elapsed = time.perf_counter() - started
    headers = response.headers
    headers["X-Request-ID"] = request_id
    version = None
    if served_by is not None:
        loaded, alias = served_by
        ref = loaded.ref
        version = ref.version
        headers["X-Model-Name"] = ref.name
        headers["X-Model-Alias"] = alias
        headers["X-Model-Version"] = ref.version
        headers["X-Model-Run-Id"] = ref.run_id or ""
        service.metrics.requests.labels(ref.name, alias, ref.version, str(status)).inc()
        service.metrics.latency.labels(ref.name, alias, ref.version).observe(elapsed)
    if request_log.isEnabledFor(logging.INFO):
        request_log.info(
            "prediction",
            extra={
                "request_id": request_id,
                "model": name,
                "alias": alias,
                "version": version,
                "status": status,
                "latency_ms": round(elapsed * 1000, 3),
            },
        )
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


def _not_ready(service: Service) -> list[str]:
    s = service.settings
    required = s.required_models if s.required_models is not None else (s.models or [])
    reasons = []
    if not service.table.models and not required:
        reasons.append(service.watcher.registry_error or "no model with a required alias found yet")
    for name in required:
        served = service.table.models.get(name)
        if served is None:
            reasons.append(service.watcher.registry_error or f"model '{name}' not loaded yet")
    for served in service.table.models.values():
        if (s.required_models is None or served.name in s.required_models) and not served.ready:
            slot = served.slots[served.required_alias]
            reasons.append(f"{served.name}@{slot.alias}: {slot.error or slot.note or slot.state}")
    return reasons


def _predict_mode(loaded: Any) -> dict[str, Any] | None:
    if loaded is None:
        return None
    return {
        "inline": loaded.inline,
        "warmup_ms": round(loaded.warmup_ms, 3),
        "validated_here": loaded.spec is not None,
        "direct_call": loaded.native is not None,
        "load_s": round(loaded.load_s, 3),
    }
