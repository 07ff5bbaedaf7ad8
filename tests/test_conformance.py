"""modelyard as a drop-in for clients of `mlflow models serve`: one corpus, both servers.

Every case of `tests/conformance_cases.py` is sent to `mlflow models serve` and to modelyard,
each serving the same registered model version. They must answer with the same status and,
on success, the same predictions (numbers within rtol 1e-6). Deliberate differences are listed,
with their reasons, in `tests/conformance_allowlist.yaml`. Errors from modelyard are always
MLflow-shaped JSON, without a stack trace and without any value from the payload.
"""

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import requests
import yaml
from fastapi.testclient import TestClient
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import ErrorCode
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from sklearn.linear_model import LogisticRegression

from registry import versions
from registry.client import connect
from registry.refs import ModelRef
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conformance_cases import (
    CASES,
    MARKERS,
    MIXED_MODEL_SOURCE,
    TENSOR_WIDTH,
    Case,
    Inputs,
    Model,
    build_inputs,
)
from tests.conftest import DemoRegistry, wait_until
from tests.servers import free_port, wait_http
from training.datasets import load_split

pytestmark = pytest.mark.slow

ALLOWLIST = Path(__file__).with_name("conformance_allowlist.yaml")
ALIAS = "production"
NAMES: dict[Model, str] = {
    "classifier": "cancer-classifier",
    "tensor": "conformance-tensor",
    "mixed": "conformance-mixed",
}
RTOL = 1e-6
ERROR_CODES = frozenset(ErrorCode.keys())
"""MLflow's error-code names."""
INTERNALS = ("stack_trace", "Traceback", "secret-path", "sentinel", "RuntimeError")
"""Text that would reveal a model's internals; never in a modelyard error body."""


@dataclass(frozen=True)
class Deliberate:
    """A documented difference: the status modelyard answers instead of MLflow's, and why."""

    status: int
    reason: str


def _allowlist() -> dict[str, Deliberate]:
    entries = yaml.safe_load(ALLOWLIST.read_text()) or {}
    return {case: Deliberate(int(e["status"]), str(e["reason"])) for case, e in entries.items()}


# -- models ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs() -> Inputs:
    """Valid request data per model."""
    return build_inputs(load_split("breast-cancer").x_holdout)


@pytest.fixture(scope="module")
def refs(
    demo_registry: DemoRegistry, inputs: Inputs, tmp_path_factory: pytest.TempPathFactory
) -> dict[Model, ModelRef]:
    """The exact version per model; `production` points at it (the demo's alias is not moved)."""
    client = connect(demo_registry.tracking_uri, timeout_s=30)
    mlflow.set_tracking_uri(demo_registry.tracking_uri)
    mlflow.set_experiment("conformance")
    source = tmp_path_factory.mktemp("conformance") / "mixed_model.py"
    source.write_text(MIXED_MODEL_SOURCE)
    requirements = [f"mlflow=={mlflow.__version__}", "scikit-learn", "pandas", "numpy"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, TENSOR_WIDTH))
    y = (x @ np.array([1.0, -1.0, 0.5, 2.0]) > 0).astype("int64")
    signature = ModelSignature(
        inputs=Schema(
            [
                ColSpec("long", "id"),
                ColSpec("string", "name"),
                ColSpec("boolean", "flag"),
                ColSpec("double", "score"),
                ColSpec("string", "note", required=False),
            ]
        ),
        outputs=Schema(
            [
                ColSpec("long", "id"),
                ColSpec("double", "value"),
                ColSpec("long", "name_length"),
                ColSpec("long", "note_length"),
            ]
        ),
        params=ParamSchema([ParamSpec("scale", "double", 1.0)]),
    )
    with mlflow.start_run() as run:
        tensor = mlflow.sklearn.log_model(
            LogisticRegression().fit(x, y),
            name="tensor",
            input_example=x[:3],
            pyfunc_predict_fn="predict_proba",
            pip_requirements=requirements,
        )
        mixed = mlflow.pyfunc.log_model(
            name="mixed",
            python_model=str(source),
            signature=signature,
            input_example=inputs.mixed,
            pip_requirements=requirements,
        )
    logged: dict[Model, Any] = {"tensor": tensor, "mixed": mixed}
    registered: dict[Model, ModelRef] = {"classifier": demo_registry.classifier_sklearn}
    for model, info in logged.items():
        ref = versions.register(
            client, info.model_uri, NAMES[model], run_id=run.info.run_id, model_id=info.model_id
        )
        registered[model] = versions.set_alias(client, ref, ALIAS)
    return registered


# -- the two servers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """`mlflow models serve` processes, one per model."""

    urls: dict[Model, str]

    def post(self, model: Model, body: bytes, headers: dict[str, str]) -> requests.Response:
        """POST /invocations of the model's server."""
        url = f"{self.urls[model]}/invocations"
        return requests.post(url, data=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def reference(
    refs: dict[Model, ModelRef], tracking_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reference]:
    """One `mlflow models serve` per model, started together, stopped at module end."""
    logs = tmp_path_factory.mktemp("mlflow-serve")
    env = os.environ | {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    processes: dict[Model, tuple[str, subprocess.Popen[bytes]]] = {}
    with ExitStack() as files:
        try:
            for model, ref in refs.items():
                port = free_port()
                command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", ref.uri]
                command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
                log = files.enter_context((logs / f"{model}.log").open("wb"))
                process = subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
                processes[model] = (f"http://127.0.0.1:{port}", process)
            for url, process in processes.values():
                wait_http(f"{url}/ping", process, timeout_s=120)
            yield Reference({model: url for model, (url, _) in processes.items()})
        finally:
            for _, process in processes.values():
                os.killpg(process.pid, signal.SIGTERM)
            for _, process in processes.values():
                process.wait(20)


@pytest.fixture(scope="module")
def modelyard(refs: dict[Model, ModelRef]) -> Iterator[TestClient]:
    """modelyard serving the same versions under `production` (loading in the background)."""
    settings = ServingSettings(models=list(NAMES.values()), aliases=[ALIAS], poll_interval_s=5)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def servers(modelyard: TestClient, reference: Reference) -> tuple[Reference, TestClient]:
    """Both servers, ready: modelyard loads while the reference processes start."""
    wait_until(
        lambda: modelyard.get("/health/ready").status_code == 200,
        timeout_s=120,
        what="the conformance models to load",
    )
    return reference, modelyard


@pytest.fixture(scope="module")
def allowlist() -> dict[str, Deliberate]:
    """The checked-in deliberate differences."""
    return _allowlist()


# -- the corpus ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_conformance(
    case: Case,
    servers: tuple[Reference, TestClient],
    inputs: Inputs,
    refs: dict[Model, ModelRef],
    allowlist: dict[str, Deliberate],
) -> None:
    reference, modelyard = servers
    body = case.body(inputs)
    headers = {"Content-Type": case.content_type} if case.content_type else {}
    expected = reference.post(case.model, body, headers)
    actual = modelyard.post(
        f"/models/{NAMES[case.model]}/aliases/{ALIAS}/invocations", content=body, headers=headers
    )
    seen = f"mlflow {expected.status_code}: {expected.text[:300]!r}\n" + (
        f"modelyard {actual.status_code}: {actual.text[:300]!r}"
    )
    deliberate = allowlist.get(case.id)
    if deliberate is None:
        assert actual.status_code == expected.status_code, seen
    else:
        assert actual.status_code == deliberate.status, seen
        assert expected.status_code != deliberate.status, f"no longer a difference\n{seen}"
    if actual.status_code == 200:
        assert actual.headers["X-Model-Version"] == refs[case.model].version
        if expected.status_code == 200:
            assert_close(
                json.loads(actual.text)["predictions"], json.loads(expected.text)["predictions"]
            )
    else:
        assert_mlflow_error(actual.text, MARKERS[case.model])
        if actual.status_code == 500:
            assert actual.json()["error_code"] == "INTERNAL_ERROR"
        if case.id.startswith(("chat-", "embeddings-")):
            assert "not supported" in actual.json()["message"]


def assert_close(actual: Any, expected: Any, where: str = "predictions") -> None:
    """Equal structure and values; numbers within RTOL of MLflow's."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert actual.keys() == expected.keys(), where
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), where
        assert len(actual) == len(expected), where
        for number, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close(a, e, f"{where}[{number}]")
    elif isinstance(expected, bool) or not isinstance(expected, (int, float)):
        assert actual == expected, where
    else:
        assert isinstance(actual, (int, float)), where
        assert not isinstance(actual, bool), where
        assert math.isclose(actual, expected, rel_tol=RTOL, abs_tol=1e-12), (
            f"{where}: {actual} != {expected}"
        )


def assert_mlflow_error(text: str, marker: str) -> None:
    """MLflow's error shape and names; nothing from the payload, nothing internal."""
    error = json.loads(text)
    assert isinstance(error, dict)
    assert set(error) == {"error_code", "message"}, error
    assert error["error_code"] in ERROR_CODES, error
    assert error["message"]
    for leaked in (marker, *INTERNALS):
        assert leaked not in text, f"{leaked!r} in {text!r}"


# -- the allowlist itself --------------------------------------------------------------------


def test_conformance_allowlist_names_cases_with_reasons() -> None:
    ids = {case.id for case in CASES}
    entries = _allowlist()
    assert set(entries) <= ids, set(entries) - ids
    for case, entry in entries.items():
        assert entry.status in (200, 400, 415, 500), case
        assert len(entry.reason) > 20, case


def test_conformance_corpus_covers_every_format_and_model() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
    for model in NAMES:
        assert any(c.model == model and c.id.startswith("csv-valid") for c in CASES), model
        assert any(c.model == model and c.id.startswith("parquet-valid") for c in CASES), model
