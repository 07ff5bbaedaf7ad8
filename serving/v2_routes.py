"""HTTP routes of the Open Inference Protocol (KServe V2): server and model metadata,
readiness, and inference answered by Service with the V2 codec (`serving.v2`)."""

import dataclasses
from importlib.metadata import version as package_version
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from serving import v2
from serving.auth import Keyring, scrub
from serving.direct import prediction_route
from serving.errors import ServingError, UnknownVersion
from serving.model import LoadedModel
from serving.routes import (
    ServiceDep,
    StatusAccess,
    error_response,
    outcome_response,
    prediction,
)
from serving.service import Service

PREFIX = "/v2"
router = APIRouter(prefix=PREFIX, tags=["v2"])
"""The protocol's routes."""


class ServerMetadataResponse(BaseModel):
    """`GET /v2`."""

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    """One input or output of a model: -1 where any size goes."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(BaseModel):
    """`GET /v2/models/{name}[/versions/{version}]`."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class LiveResponse(BaseModel):
    """`GET /v2/health/live`."""

    live: bool


class ReadyResponse(BaseModel):
    """A readiness answer; 503 with `error` when not ready."""

    ready: bool
    name: str | None = None


ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_ERROR_CONTENT = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": list(v2.INPUT_DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}
INFER_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": v2.HEADER_LENGTH,
            "in": "header",
            "required": False,
            "description": "Binary tensor data: the length of the JSON header that starts the body",
            "schema": {"type": "string"},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            },
            v2.BINARY: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        "200": {
            "description": "The output tensors; binary ones after the JSON header "
            f"({v2.HEADER_LENGTH} gives its length)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["model_name", "outputs"],
                        "properties": {
                            "model_name": {"type": "string"},
                            "model_version": {"type": "string"},
                            "id": {"type": "string"},
                            "outputs": {"type": "array", "items": {"type": "object"}},
                        },
                    }
                },
                v2.BINARY: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **{
            status: {"description": what, **_ERROR_CONTENT}
            for status, what in (
                ("400", "bad input, naming the input at fault"),
                ("404", "unknown model or version"),
                ("413", "over a size limit"),
                ("415", "unsupported content type"),
                ("500", "the model failed on valid input"),
                ("503", "not ready, or too busy"),
                ("504", "the model did not answer in time"),
            )
        },
    },
}


@prediction_route(router, "/models/{name}/infer", openapi_extra=INFER_DOC)
async def infer(request: Request, name: str) -> Response:
    """Inference, A/B-routed as /models/{name}/invocations (X-Routing-Key for sticky routing)."""
    return await _infer(request, name, None)


@prediction_route(router, "/models/{name}/versions/{version}/infer", openapi_extra=INFER_DOC)
async def version_infer(request: Request, name: str, version: str) -> Response:
    """Inference by the alias serving `version` now; 404 when none does."""
    return await _infer(request, name, version)


@router.get("", response_model=ServerMetadataResponse)
async def server_metadata() -> ServerMetadataResponse:
    """Server name, version and protocol extensions."""
    return ServerMetadataResponse(
        name="modelyard", version=package_version("modelyard"), extensions=list(v2.EXTENSIONS)
    )


@router.get("/health/live", response_model=LiveResponse)
async def live() -> LiveResponse:
    """200 while the process runs."""
    return LiveResponse(live=True)


@router.get(
    "/health/ready",
    response_model=ReadyResponse,
    responses={503: {"description": "not ready", **_ERROR_CONTENT}},
)
async def ready(service: ServiceDep) -> Response:
    """200 when every required model is loaded, else 503 naming what is missing."""
    readiness = service.readiness()
    if readiness.ready:
        return _json({"ready": True})
    return _not_ready(None, str(readiness.reasons[0]))


@router.get(
    "/models/{name}",
    response_model=ModelMetadataResponse,
    dependencies=[StatusAccess],
    responses={404: _ERROR_CONTENT, 503: _ERROR_CONTENT},
)
async def model_metadata(name: str, service: ServiceDep) -> ModelMetadataResponse:
    """The model's inputs and outputs (from the version its required alias serves) and the
    versions it serves."""
    served = service.served(name)
    _, loaded = service.table.loaded(name, served.required_alias)
    return _metadata(service, loaded)


@router.get(
    "/models/{name}/ready",
    response_model=ReadyResponse,
    responses={404: _ERROR_CONTENT, 503: _ERROR_CONTENT},
)
async def model_ready(name: str, service: ServiceDep) -> Response:
    """200 when the model's required alias is loaded, else 503 with the reason."""
    readiness = service.model_readiness(name)
    if readiness.ready:
        return _json({"name": name, "ready": True})
    return _not_ready(name, readiness.reasons[0])


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadataResponse,
    dependencies=[StatusAccess],
    responses={404: _ERROR_CONTENT},
)
async def version_metadata(name: str, version: str, service: ServiceDep) -> ModelMetadataResponse:
    """A loaded version's inputs and outputs; 404 when no alias serves it now."""
    return _metadata(service, _loaded(service, name, version))


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ReadyResponse,
    responses={404: _ERROR_CONTENT},
)
async def version_ready(name: str, version: str, service: ServiceDep) -> Response:
    """200 when the version is loaded and answering; 404 when no alias serves it now."""
    loaded = _loaded(service, name, version)
    if loaded.pool.exhausted:
        return _not_ready(name, f"version {version} is stuck: its predict threads are held")
    return _json({"name": name, "ready": True})


def v2_error_response(error: ServingError) -> Response:
    """The protocol's error shape, `{"error": message}`, with the error's status."""
    return Response(
        v2.error_body(error),
        status_code=error.status_code,
        media_type=v2.JSON,
        headers=error.headers,
    )


def error_response_for(path: str, error: ServingError) -> Response:
    """`error` as the protocol of the route at `path` writes errors."""
    if path == PREFIX or path.startswith(PREFIX + "/"):
        return v2_error_response(error)
    return error_response(error)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    """Like the MLflow routes, the Service and keyring come from the app's state."""
    service: Service = request.app.state.service
    keyring: Keyring | None = request.app.state.keyring
    headers = request.headers
    codec = v2.V2Codec(
        service.limits, headers.get(v2.HEADER_LENGTH), headers.get("content-encoding")
    )
    outcome = await prediction(request, service, keyring, name, None, codec=codec, version=version)
    return outcome_response(outcome, v2_error_response)


def _loaded(service: Service, name: str, version: str) -> LoadedModel:
    """The loaded `version` of model `name` (the required alias's first); 404 otherwise."""
    served = service.table.model(name)
    alias = served.alias_serving(version)
    current = served.slots[alias].current if alias is not None else None
    if current is None:
        raise UnknownVersion(name, version)
    return current


def _metadata(service: Service, loaded: LoadedModel) -> ModelMetadataResponse:
    served = service.table.model(loaded.ref.name)
    versions = {s.current.ref.version for s in served.slots.values() if s.current is not None}
    answer = loaded.interface.answer if loaded.interface is not None else None
    outputs = v2.output_tensors(loaded.pyfunc.metadata.get_output_schema(), answer)
    return ModelMetadataResponse(
        name=loaded.ref.name,
        versions=sorted(versions, key=lambda v: (len(v), v)),
        platform=loaded.pyfunc.loader_module or "mlflow.pyfunc",
        inputs=[TensorMetadata(**dataclasses.asdict(t)) for t in v2.input_tensors(loaded.schema)],
        outputs=[TensorMetadata(**dataclasses.asdict(t)) for t in outputs],
    )


def _json(document: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type=v2.JSON)


def _not_ready(name: str | None, reason: str) -> Response:
    document: dict[str, Any] = {"ready": False, "error": scrub(reason)}
    if name is not None:
        document["name"] = name
    return _json(document, 503)
