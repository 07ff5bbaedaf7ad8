"""modelyard as a drop-in for clients of `mlflow models serve`: one corpus, both servers.

Every case of `tests/conformance_cases.py` is sent over HTTP to `mlflow models serve` and to
`python -m serving`, each serving the same registered model version. They must answer with the
same status, the same `error_code`, the same Content-Type and, on success, the same predictions
(numbers within rtol 1e-6). Deliberate differences are listed, with their reasons, in
`tests/conformance_allowlist.yaml`; an entry that stops being a difference fails the test.

One difference holds for every answer: where MLflow writes a bare `NaN` token (not JSON; Python
reads it, most parsers do not), modelyard writes `null`. Its bodies are always strict JSON, and
its errors always MLflow-shaped JSON, without a stack trace and without any value from the
payload.
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
import orjson
import pytest
import requests
import skops.io
import yaml
from mlflow.protos.databricks_pb2 import ErrorCode
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from registry import versions
from registry.client import connect
from registry.refs import ModelRef
from tests.conformance_cases import (
    CASES,
    MARKERS,
    MIXED_MODEL_SOURCE,
    MIXED_SIGNATURE,
    TENSOR_WIDTH,
    Case,
    Inputs,
    Model,
    build_inputs,
)
from tests.conftest import DemoRegistry
from tests.servers import free_port, restoring_tracking_uri, wait_http
from tests.sockets import Served, serving_process
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
PICKLE_ALLOWED = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
"""The tensor model is a scikit-learn flavour model (skops), which MLflow 3.17 loads only where
the operator allows it (`python -m serving` does not by default); both servers run allowing it."""
COMPARED = ("status", "error_code", "content_type")
"""What the two answers must agree on, unless the allowlist says what modelyard answers."""


@dataclass(frozen=True)
class Deliberate:
    """A documented difference: what modelyard answers where MLflow answers otherwise, and why.

    `answer` holds the fields of COMPARED that differ, with modelyard's value (`error_code`
    None: an answer without one); `predictions_differ` marks two 200s with other predictions.
    """

    answer: dict[str, Any]
    predictions_differ: bool
    reason: str


def _allowlist() -> dict[str, Deliberate]:
    entries = yaml.safe_load(ALLOWLIST.read_text()) or {}
    return {
        case: Deliberate(
            {field: entry[field] for field in COMPARED if field in entry},
            entry.get("predictions") == "different",
            str(entry["reason"]),
        )
        for case, entry in entries.items()
    }


@dataclass(frozen=True)
class Answer:
    """What a client sees of a response: status, error code, media type, body."""

    status: int
    error_code: str | None
    content_type: str | None
    text: str

    @classmethod
    def of(cls, response: requests.Response) -> "Answer":
        """The answer of `response`; `error_code` of any JSON error body that has one."""
        code = None
        if response.status_code != 200:
            try:
                document = json.loads(response.text)
            except ValueError:
                document = None
            if isinstance(document, dict):
                code = document.get("error_code")
        return cls(response.status_code, code, response.headers.get("Content-Type"), response.text)

    @property
    def predictions(self) -> Any:
        """The predictions, read as Python reads them (bare NaN tokens included)."""
        return json.loads(self.text)["predictions"]


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
    client = connect(demo_registry.tracking_uri)
    source = tmp_path_factory.mktemp("conformance") / "mixed_model.py"
    source.write_text(MIXED_MODEL_SOURCE)
    requirements = [f"mlflow=={mlflow.__version__}", "scikit-learn", "pandas", "numpy", "skops"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, TENSOR_WIDTH))
    y = (x @ np.array([1.0, -1.0, 0.5, 2.0]) > 0).astype("int64")
    # the imputer lets the tensor model take missing values, so that NaN reaching it is seen
    tensor_model = make_pipeline(SimpleImputer(), LogisticRegression()).fit(x, y)
    with restoring_tracking_uri():
        mlflow.set_tracking_uri(demo_registry.tracking_uri)
        mlflow.set_experiment("conformance")
        with mlflow.start_run() as run:
            tensor = mlflow.sklearn.log_model(
                tensor_model,
                name="tensor",
                input_example=x[:3],
                pyfunc_predict_fn="predict_proba",
                pip_requirements=requirements,
                skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(tensor_model)),
            )
            mixed = mlflow.pyfunc.log_model(
                name="mixed",
                python_model=str(source),
                signature=MIXED_SIGNATURE,
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
def modelyard(
    refs: dict[Model, ModelRef], tracking_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """`python -m serving` on a real socket, serving the same versions (still loading)."""
    settings = {
        "MODELYARD_MODELS": ",".join(NAMES.values()),
        "MODELYARD_ALIASES": ALIAS,
        "MODELYARD_POLL_INTERVAL_S": "5",
        **PICKLE_ALLOWED,
    }
    log = tmp_path_factory.mktemp("modelyard") / "serving.log"
    with serving_process(tracking_uri, settings, log, ready=None) as served:
        yield served


@pytest.fixture(scope="module")
def reference(
    refs: dict[Model, ModelRef],
    tracking_uri: str,
    modelyard: Served,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Reference]:
    """One `mlflow models serve` per model, started together (modelyard loads meanwhile)."""
    logs = tmp_path_factory.mktemp("mlflow-serve")
    env = (
        os.environ
        | PICKLE_ALLOWED
        | {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
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
                wait_http(f"{url}/ping", process, timeout_s=180)
            yield Reference({model: url for model, (url, _) in processes.items()})
        finally:
            for _, process in processes.values():
                os.killpg(process.pid, signal.SIGTERM)
            for _, process in processes.values():
                process.wait(20)


@pytest.fixture(scope="module")
def servers(modelyard: Served, reference: Reference) -> tuple[Reference, Served]:
    """Both servers, ready."""
    modelyard.wait("/health/ready", timeout_s=180)
    return reference, modelyard


@pytest.fixture(scope="module")
def allowlist() -> dict[str, Deliberate]:
    """The checked-in deliberate differences."""
    return _allowlist()


# -- the corpus ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_conformance(
    case: Case,
    servers: tuple[Reference, Served],
    inputs: Inputs,
    refs: dict[Model, ModelRef],
    allowlist: dict[str, Deliberate],
) -> None:
    reference, modelyard = servers
    body = case.body(inputs)
    headers = {"Content-Type": case.content_type} if case.content_type else {}
    expected = Answer.of(reference.post(case.model, body, headers))
    response = requests.post(
        f"{modelyard.url}/models/{NAMES[case.model]}/aliases/{ALIAS}/invocations",
        data=body,
        headers=headers,
        timeout=30,
    )
    actual = Answer.of(response)
    seen = f"\nmlflow    {expected}"[:400] + f"\nmodelyard {actual}"[:400]
    deliberate = allowlist.get(case.id)
    declared = deliberate.answer if deliberate else {}
    for field in COMPARED:
        mine, theirs = getattr(actual, field), getattr(expected, field)
        if field in declared:
            assert mine == declared[field], (
                f"{field}: {mine!r}, allowlisted {declared[field]!r}{seen}"
            )
            assert theirs != declared[field], f"{field}: no longer a difference{seen}"
        else:
            assert mine == theirs, f"{field}: {mine!r} where MLflow has {theirs!r}{seen}"
    orjson.loads(actual.text)  # strict JSON, whatever MLflow wrote
    if actual.status == 200:
        assert response.headers["X-Model-Version"] == refs[case.model].version
    else:
        assert_mlflow_error(actual.text, MARKERS[case.model])
        if case.id.startswith(("chat-", "embeddings-")):
            assert "not supported" in json.loads(actual.text)["message"]
    if actual.status == expected.status == 200:
        if deliberate is not None and deliberate.predictions_differ:
            with pytest.raises(AssertionError):
                assert_close(actual.predictions, expected.predictions)
        else:
            assert_close(actual.predictions, expected.predictions)


def assert_close(actual: Any, expected: Any, where: str = "predictions") -> None:
    """Equal structure and values; numbers within RTOL of MLflow's; its NaN our null."""
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
    elif isinstance(expected, float) and math.isnan(expected):
        assert actual is None, f"{where}: {actual!r} where MLflow wrote NaN"
    elif isinstance(expected, bool) or not isinstance(expected, (int, float)):
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
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


# -- the allowlist and the corpus themselves --------------------------------------------------


def test_conformance_allowlist_names_cases_with_reasons() -> None:
    ids = {case.id for case in CASES}
    entries = yaml.safe_load(ALLOWLIST.read_text()) or {}
    assert set(entries) <= ids, set(entries) - ids
    for case, entry in entries.items():
        assert set(entry) <= {*COMPARED, "predictions", "reason"}, case
        assert set(entry) & {*COMPARED, "predictions"}, f"{case}: names no difference"
        assert entry.get("predictions", "different") == "different", case
        assert entry.get("status", 200) in (200, 400, 415, 500), case
        assert entry.get("error_code") is None or entry["error_code"] in ERROR_CODES, case
        assert len(str(entry["reason"])) > 20, case


def test_conformance_corpus_covers_every_format_and_model() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
    for model in NAMES:
        assert any(c.model == model and c.id.startswith("csv-valid") for c in CASES), model
        assert any(c.model == model and c.id.startswith("parquet-valid") for c in CASES), model
    ids = {case.id for case in CASES}
    for column_type in ("double", "float", "string", "long", "integer", "boolean"):
        assert f"split-null-{column_type}-mixed" in ids, column_type  # a null in every type


def test_assert_close_takes_mlflows_nan_as_null_only() -> None:
    assert_close([{"v": None}], json.loads('[{"v": NaN}]'))
    with pytest.raises(AssertionError):
        assert_close([{"v": 0.0}], json.loads('[{"v": NaN}]'))
    with pytest.raises(AssertionError):
        assert_close([{"v": None}], [{"v": 0.0}])
