"""Every route fuzzed from the app's OpenAPI schema: no 5xx, answers that conform to it.

schemathesis drives the ASGI app in-process and runs its lifespan on its own event loop, so
this app is a second one on the demo registry, not the session's `serving` client. Each
operation gets schema-conforming (positive) and schema-violating (negative) examples; every
distinct failure is collected with a curl command that reproduces it.
"""

import sys
import types
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
)
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.python.asgi import shutdown_lifespans

from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import DemoRegistry, wait_until

EXAMPLES = 10
"""Per operation and generation mode: about 30 s for every route together."""
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]
"""No 5xx, and each answer as its schema documents it. Status codes are not among them:
FastAPI documents 200 and 422 only, and the routes answer 400, 401, 404, 413, 503 by design."""
V2_MODEL = "/v2/models/{name}"
V2_ROUTES = (
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    f"GET {V2_MODEL}",
    f"GET {V2_MODEL}/ready",
    f"GET {V2_MODEL}/versions/{{version}}",
    f"GET {V2_MODEL}/versions/{{version}}/ready",
    f"POST {V2_MODEL}/infer",
    f"POST {V2_MODEL}/versions/{{version}}/infer",
)
"""The Open Inference Protocol's routes; those of a model are fuzzed on a served one too."""
MLFLOW_VERBATIM = {"GET /ping", "GET /health", "GET /version"}
"""Routes answering exactly as `mlflow models serve` does: a body that is not JSON (a newline,
the version number) labelled application/json. Clients rely on it; only its parse is exempt."""


@pytest.fixture(scope="module")
def fuzz_schema(demo_registry: DemoRegistry) -> Iterator[schemathesis.BaseSchema]:
    """The OpenAPI schema of an app serving the demo models, with auth on admin and webhooks."""
    app = create_app(
        ServingSettings(
            models=["cancer-classifier", "diabetes-regressor"],
            admin_token="fuzz-admin-token",  # type: ignore[arg-type]
            webhook_secret="fuzz-webhook-secret",  # type: ignore[arg-type]
            strict_models=["diabetes-regressor"],
        )
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the lifespan
    wait_until(lambda: app.state.service.readiness().ready, what="the demo models to load")
    yield schema
    shutdown_lifespans()


def fuzz(
    operation: schemathesis.APIOperation, mode: GenerationMode, model: str | None = None
) -> dict[str, str]:
    """Each distinct failure on `operation` in `mode`, with a curl command reproducing it;
    with `model`, every request names that served model (so its body reaches the decoder)."""
    found: dict[str, str] = {}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        if model is not None:
            case.path_parameters = {**(case.path_parameters or {}), "name": model}
        try:
            case.call_and_validate(checks=CHECKS)
        except (Failure, FailureGroup) as problem:
            failures = problem.exceptions if isinstance(problem, FailureGroup) else [problem]
            for failure in failures:
                if operation.label in MLFLOW_VERBATIM and "JSON" in failure.title:
                    continue
                key = f"{operation.label} ({mode}, {model or 'any model'}): {failure.title}"
                found.setdefault(key, f"{failure.message[:300]}\n    {case.as_curl_command()}")

    try:
        run()
    except Unsatisfiable:
        if mode is not GenerationMode.NEGATIVE:
            raise
        # nothing to violate: no parameters and no body
    return found


@pytest.fixture
def modules_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """sys.modules holding modules only, as hypothesis expects when it scans them: while MLflow
    loads a code-based model it puts a stand-in object under `dbutils`, and a load that never
    ends (a hanging model of an earlier test) leaves it there."""
    for name, module in list(sys.modules.items()):
        if not isinstance(module, types.ModuleType):
            monkeypatch.delitem(sys.modules, name)


@pytest.mark.usefixtures("modules_only")
def test_every_route_never_answers_5xx_or_off_schema(fuzz_schema: schemathesis.BaseSchema) -> None:
    found: dict[str, str] = {}
    labels = []
    for result in fuzz_schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            found |= fuzz(operation, mode)
            if operation.path.startswith(V2_MODEL):
                found |= fuzz(operation, mode, "cancer-classifier")
    assert len(labels) >= 10, labels
    assert set(V2_ROUTES) <= set(labels), labels
    assert not found, "\n".join(f"{key}\n    {detail}" for key, detail in found.items())
