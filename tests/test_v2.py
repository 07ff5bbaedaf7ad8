"""The Open Inference Protocol (KServe V2) on a real `python -m serving` process: Triton's own
client, `tritonclient[http]`, in JSON and binary, against the scikit-learn and PyTorch versions
of the demo classifier, answering as /invocations does; hostile requests refused with a 4xx
that names the problem."""

import struct
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from modelyard.cli import app as modelyard
from registry.contract import Column
from registry.refs import ModelRef
from serving import v2
from serving.app import create_app
from serving.errors import ServingError
from serving.inputs import InputSpec
from serving.limits import DecodeLimits
from serving.settings import ServingSettings
from tests.conftest import DemoRegistry, wait_until
from tests.sockets import Served, serving_process
from training.datasets import load_split

CLASSIFIER = "cancer-classifier"
REGRESSOR = "diabetes-regressor"
INFER = f"/v2/models/{CLASSIFIER}/infer"


@pytest.fixture(scope="module")
def server(
    demo_registry: DemoRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """modelyard serving the demo models, both classifier versions loaded."""
    settings = {
        "MODELYARD_MODELS": f"{CLASSIFIER},{REGRESSOR}",
        "MODELYARD_MAX_STRING_CHARS": "100",
    }
    log = tmp_path_factory.mktemp("v2") / "serving.log"
    with serving_process(demo_registry.tracking_uri, settings, log) as served:
        torch_ready = f"/v2/models/{CLASSIFIER}/versions/{demo_registry.classifier_torch.version}"
        wait_until(
            lambda: httpx.get(f"{served.url}{torch_ready}/ready").status_code == 200,
            120,
            "the PyTorch version to load",
        )
        yield served


@pytest.fixture(scope="module")
def http(server: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


class OwnThread:
    """A tritonclient whose every call runs on one thread of its own. Its HTTP client switches
    greenlets, which on CPython 3.11 leaves the thread's C recursion count off; on the main
    thread a later `ast.parse` (pytest rewriting a lazily imported plugin module, MLflow
    loading a model from code) then fails with "AST constructor recursion depth mismatch"."""

    def __init__(self, url: str) -> None:
        self._thread = ThreadPoolExecutor(1, "tritonclient")
        self._client = self._thread.submit(triton.InferenceServerClient, url).result()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        return lambda *args, **kwargs: self._thread.submit(method, *args, **kwargs).result()

    def shutdown(self) -> None:
        self._thread.submit(self._client.close).result()
        self._thread.shutdown()


@pytest.fixture(scope="module")
def client(server: Served) -> Iterator[Any]:
    """Triton's client of the server, on a thread of its own (see OwnThread)."""
    triton_client = OwnThread(f"127.0.0.1:{server.port}")
    yield triton_client
    triton_client.shutdown()


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return load_split("breast-cancer").x_holdout.head(7)


@pytest.fixture(scope="module")
def regressor_rows() -> pd.DataFrame:
    return load_split("diabetes").x_holdout.head(5)


def _invocations(http: httpx.Client, name: str, alias: str, frame: pd.DataFrame) -> pd.DataFrame:
    body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
    response = http.post(f"/models/{name}/aliases/{alias}/invocations", json=body)
    assert response.status_code == 200, response.text
    return pd.DataFrame(response.json()["predictions"])


def _triton_inputs(frame: pd.DataFrame, binary: bool, datatype: str = "FP64") -> list[Any]:
    tensors = []
    for name in frame.columns:
        tensor = triton.InferInput(str(name), [len(frame)], datatype)
        values = frame[name].to_numpy()
        if datatype == "BYTES":
            values = np.array([repr(float(v)).encode() for v in values], dtype=np.object_)
        tensor.set_data_from_numpy(values, binary_data=binary)
        tensors.append(tensor)
    return tensors


def _v2_body(frame: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    inputs = [
        {"name": str(c), "datatype": "FP64", "shape": [len(frame)], "data": frame[c].tolist()}
        for c in frame.columns
    ]
    return {"inputs": inputs, **extra}


# -- metadata and health -------------------------------------------------------------------------


def test_server_and_model_metadata_through_tritonclient(
    client: Any, demo_registry: DemoRegistry, rows: pd.DataFrame
):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert client.is_model_ready(CLASSIFIER)
    assert client.is_model_ready(CLASSIFIER, demo_registry.classifier_torch.version)
    assert not client.is_model_ready(CLASSIFIER, "999")
    assert not client.is_model_ready("no-such-model")

    metadata = client.get_model_metadata(CLASSIFIER)
    assert metadata["name"] == CLASSIFIER
    assert set(metadata["versions"]) == {
        demo_registry.classifier_sklearn.version,
        demo_registry.classifier_torch.version,
    }
    assert [i["name"] for i in metadata["inputs"]] == list(rows.columns)
    assert {(i["datatype"], tuple(i["shape"])) for i in metadata["inputs"]} == {("FP64", (-1,))}
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [
        ("label", "INT64"),
        ("probability", "FP64"),
    ]
    torch = client.get_model_metadata(CLASSIFIER, demo_registry.classifier_torch.version)
    assert torch["outputs"] == metadata["outputs"]
    with pytest.raises(InferenceServerException, match="serves no version '999'"):
        client.get_model_metadata(CLASSIFIER, "999")


# -- answers equal to /invocations ---------------------------------------------------------------


@pytest.mark.parametrize("framework", ["sklearn", "torch"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_answers_as_invocations_do(
    client: Any,
    http: httpx.Client,
    demo_registry: DemoRegistry,
    rows: pd.DataFrame,
    framework: str,
    binary: bool,
):
    ref = (
        demo_registry.classifier_sklearn
        if framework == "sklearn"
        else demo_registry.classifier_torch
    )
    alias = "production" if framework == "sklearn" else "staging"
    outputs = [
        triton.InferRequestedOutput("label", binary_data=binary),
        triton.InferRequestedOutput("probability", binary_data=binary),
    ]
    result = client.infer(
        CLASSIFIER,
        _triton_inputs(rows, binary),
        model_version=ref.version,
        outputs=outputs,
        request_id="req-7",
    )
    expected = _invocations(http, CLASSIFIER, alias, rows)
    answer = result.get_response()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (
        CLASSIFIER,
        ref.version,
        "req-7",
    )
    assert result.as_numpy("label").dtype == np.int64
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"].to_numpy())
    np.testing.assert_allclose(
        result.as_numpy("probability"), expected["probability"].to_numpy(), rtol=1e-12
    )


def test_tritonclient_defaults_to_every_output_in_binary(
    client: Any, http: httpx.Client, regressor_rows: pd.DataFrame
):
    result = client.infer(REGRESSOR, _triton_inputs(regressor_rows, binary=True))
    assert [o["name"] for o in result.get_response()["outputs"]] == ["prediction"]
    assert "binary_data_size" in result.get_output("prediction")["parameters"]
    expected = _invocations(http, REGRESSOR, "production", regressor_rows)
    np.testing.assert_allclose(
        result.as_numpy("prediction"), expected["prediction"].to_numpy(), rtol=1e-12
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_inputs_are_read_as_mlflow_reads_numeric_text(
    client: Any, http: httpx.Client, rows: pd.DataFrame, binary: bool
):
    result = client.infer(CLASSIFIER, _triton_inputs(rows, binary, "BYTES"), model_version="")
    expected = _invocations(http, CLASSIFIER, "production", rows)
    np.testing.assert_allclose(
        result.as_numpy("probability"), expected["probability"].to_numpy(), rtol=1e-12
    )


def test_infer_is_routed_with_the_model_headers(
    http: httpx.Client, demo_registry: DemoRegistry, rows: pd.DataFrame
):
    body = _v2_body(rows.head(2), id="abc", outputs=[{"name": "probability"}])
    response = http.post(INFER, json=body, headers={"X-Request-ID": "r-1"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["X-Model-Name"] == CLASSIFIER
    assert response.headers["X-Model-Alias"] in ("production", "staging")
    assert response.headers["X-Request-ID"] == "r-1"
    answer = response.json()
    assert answer["model_version"] == response.headers["X-Model-Version"]
    assert answer["id"] == "abc"
    assert [(o["name"], o["datatype"], o["shape"]) for o in answer["outputs"]] == [
        ("probability", "FP64", [2])
    ]


def test_the_schema_documents_both_infer_routes_with_their_header(http: httpx.Client):
    paths = http.get("/openapi.json").json()["paths"]
    for path, names in (
        ("/v2/models/{name}/infer", ["name"]),
        ("/v2/models/{name}/versions/{version}/infer", ["name", "version"]),
    ):
        parameters = paths[path]["post"]["parameters"]
        assert [p["name"] for p in parameters if p["in"] == "path"] == names
        assert [p["name"] for p in parameters if p["in"] == "header"] == [v2.HEADER_LENGTH]


def test_column_tensors_of_shape_n_by_1_and_zero_rows(http: httpx.Client, rows: pd.DataFrame):
    nested = _v2_body(rows.head(3))
    for tensor in nested["inputs"]:
        tensor["shape"] = [3, 1]
        tensor["data"] = [[v] for v in tensor["data"]]
    flat = http.post(INFER, json=_v2_body(rows.head(3))).json()["outputs"]
    assert http.post(INFER, json=nested).json()["outputs"] == flat

    empty = _v2_body(rows.head(0), outputs=[{"name": "label"}])
    response = http.post(INFER, json=empty)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == []


# -- hostile requests ----------------------------------------------------------------------------


def _binary_request(header: dict[str, Any], data: bytes) -> tuple[bytes, dict[str, str]]:
    encoded = orjson.dumps(header)
    return encoded + data, {"Inference-Header-Content-Length": str(len(encoded))}


def _refused(response: httpx.Response, status: int, *phrases: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for phrase in phrases:
        assert phrase in message, message


def _one_binary_input(rows: pd.DataFrame, shape: list[int], size: int) -> dict[str, Any]:
    body = _v2_body(rows.head(1))
    first = body["inputs"][0]
    del first["data"]
    first["shape"] = shape
    first["parameters"] = {"binary_data_size": size}
    for tensor in body["inputs"][1:]:
        tensor["shape"] = shape
        tensor["data"] = tensor["data"] * shape[0]
    return body


def test_a_binary_size_that_lies_is_refused(http: httpx.Client, rows: pd.DataFrame):
    name = rows.columns[0]
    header = _one_binary_input(rows, [1], 800)
    body, headers = _binary_request(header, struct.pack("<d", 1.0))
    _refused(http.post(INFER, content=body, headers=headers), 400, f"'{name}'", "past the end")

    too_few = _one_binary_input(rows, [2], 8)
    body, headers = _binary_request(too_few, struct.pack("<d", 1.0))
    _refused(http.post(INFER, content=body, headers=headers), 400, f"'{name}'", "needs 16 bytes")

    body, headers = _binary_request(_one_binary_input(rows, [1], 8), struct.pack("<dd", 1, 2))
    _refused(http.post(INFER, content=body, headers=headers), 400, "add up to 8")

    body, _ = _binary_request(_one_binary_input(rows, [1], 8), struct.pack("<d", 1.0))
    lying_header = {"Inference-Header-Content-Length": str(len(body) + 1)}
    _refused(http.post(INFER, content=body, headers=lying_header), 400, "Inference-Header")


def test_bytes_elements_that_lie_are_refused(http: httpx.Client, rows: pd.DataFrame):
    header = _one_binary_input(rows, [1], 4 + 3)
    header["inputs"][0]["datatype"] = "BYTES"
    body, headers = _binary_request(header, struct.pack("<I", 1000) + b"1.5")
    _refused(http.post(INFER, content=body, headers=headers), 400, "element 0", "length 1000")

    long_text = b"1" * 200  # over MODELYARD_MAX_STRING_CHARS
    header = _one_binary_input(rows, [1], 4 + len(long_text))
    header["inputs"][0]["datatype"] = "BYTES"
    body, headers = _binary_request(header, struct.pack("<I", len(long_text)) + long_text)
    _refused(http.post(INFER, content=body, headers=headers), 400, "element 0", "limit is 100")


def test_a_shape_that_does_not_match_the_data_is_refused(http: httpx.Client, rows: pd.DataFrame):
    body = _v2_body(rows.head(2))
    body["inputs"][3]["shape"] = [3]
    _refused(http.post(INFER, json=body), 400, f"'{rows.columns[3]}' has 3 rows")

    body = _v2_body(rows.head(2))
    for tensor in body["inputs"]:
        tensor["data"] = tensor["data"][:1]
    _refused(http.post(INFER, json=body), 400, f"'{rows.columns[0]}'", "'data' has 1")

    body = _v2_body(rows.head(2))
    body["inputs"][0]["shape"] = [1, 2]
    _refused(http.post(INFER, json=body), 400, "[n] or [n, 1]")


def test_an_unknown_datatype_is_refused(http: httpx.Client, rows: pd.DataFrame):
    body = _v2_body(rows.head(1))
    body["inputs"][0]["datatype"] = "COMPLEX128"
    _refused(http.post(INFER, json=body), 400, f"'{rows.columns[0]}'", "'COMPLEX128'")


def test_a_missing_input_is_refused_naming_it(client: Any, rows: pd.DataFrame):
    missing = rows.columns[5]
    with pytest.raises(InferenceServerException, match=f"missing required column.*'{missing}'"):
        client.infer(CLASSIFIER, _triton_inputs(rows.drop(columns=[missing]), binary=True))


def test_a_huge_declared_shape_is_refused_before_reading(http: httpx.Client, rows: pd.DataFrame):
    body = _v2_body(rows.head(1))
    body["inputs"][0]["shape"] = [10**12]
    _refused(http.post(INFER, json=body), 413, "rows", "MODELYARD_MAX_ROWS")

    huge = {"shape": [10**12], "parameters": {"binary_data_size": 8 * 10**12}}
    header = {"inputs": [{"name": c, "datatype": "FP64", **huge} for c in rows.columns]}
    body, headers = _binary_request(header, b"")
    _refused(http.post(INFER, content=body, headers=headers), 413, "rows")


def test_values_the_signature_refuses_name_input_and_row(http: httpx.Client, rows: pd.DataFrame):
    body = _v2_body(rows.head(3))
    body["inputs"][2]["data"][1] = "abc"
    _refused(http.post(INFER, json=body), 400, f"column '{rows.columns[2]}' row 1", "not a number")


@pytest.mark.parametrize(
    ("path", "status", "phrase"),
    [
        ("/v2/models/no-such-model/infer", 404, "no-such-model"),
        (f"/v2/models/{CLASSIFIER}/versions/999/infer", 404, "serves no version '999'"),
    ],
)
def test_unknown_models_and_versions_are_404(
    http: httpx.Client, rows: pd.DataFrame, path: str, status: int, phrase: str
):
    _refused(http.post(path, json=_v2_body(rows.head(1))), status, phrase)


def test_bodies_that_are_not_v2_requests_are_refused(http: httpx.Client, rows: pd.DataFrame):
    _refused(http.post(INFER, content=b"{not json"), 400, "malformed JSON")
    _refused(http.post(INFER, json={"instances": [[1.0]]}), 400, "'inputs'")
    _refused(
        http.post(INFER, content=b"a,b\n1,2\n", headers={"Content-Type": "text/csv"}),
        415,
        "text/csv",
    )
    gzipped = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    _refused(http.post(INFER, content=b"\x1f\x8b", headers=gzipped), 415, "gzip")
    body = _v2_body(rows.head(1), outputs=[{"name": "logits"}])
    _refused(http.post(INFER, json=body), 400, "unknown output 'logits'", "'label'")


# -- API keys ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(demo_registry: DemoRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The classifier in-process with API keys on: a key that may pin aliases, one that may not."""
    file = tmp_path_factory.mktemp("v2-keys") / "keys.yaml"
    keys = {name: _issue(file, name, *extra) for name, extra in (("plain", []), ("pin", ["--pin"]))}
    settings = ServingSettings(models=[CLASSIFIER], api_keys_file=file)
    with TestClient(create_app(settings)) as client:
        staging = f"/v2/models/{CLASSIFIER}/versions/{demo_registry.classifier_torch.version}"
        wait_until(lambda: client.get(f"{staging}/ready").status_code == 200, 120, "staging")
        yield client, keys


def _issue(file: Path, name: str, *options: str) -> str:
    result = CliRunner().invoke(modelyard, ["keys", "add", name, *options, "--file", str(file)])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_asking_for_a_version_is_pinning_its_alias(
    keyed: Any, demo_registry: DemoRegistry, rows: pd.DataFrame
):
    client, keys = keyed
    body = _v2_body(rows.head(1))
    production = f"/v2/models/{CLASSIFIER}/versions/{demo_registry.classifier_sklearn.version}"
    staging = f"/v2/models/{CLASSIFIER}/versions/{demo_registry.classifier_torch.version}"

    def infer(path: str, key: str | None) -> httpx.Response:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return client.post(f"{path}/infer", json=body, headers=headers)

    _refused(infer(f"/v2/models/{CLASSIFIER}", None), 401, "key")
    assert infer(f"/v2/models/{CLASSIFIER}", keys["plain"]).status_code == 200
    assert infer(production, keys["plain"]).status_code == 200
    _refused(infer(staging, keys["plain"]), 403, "may not pin alias 'staging'")
    pinned = infer(staging, keys["pin"])
    assert pinned.status_code == 200, pinned.text
    assert pinned.headers["X-Model-Alias"] == "staging"


# -- the codec under generated hostile requests --------------------------------------------------

SPEC = InputSpec(
    (
        Column("x", "double"),
        Column("n", "long"),
        Column("b", "boolean"),
        Column("s", "string", required=False),
    )
)
DOUBLES = InputSpec((Column("x", "double"), Column("y", "double")))
SMALL = DecodeLimits(rows=50, columns=8, cells=200, string_chars=8)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=12)
)
_NUMBERS = st.floats(-1e6, 1e6) | st.integers(-1000, 1000) | st.sampled_from([True, "1.5"])
_VALUES = st.lists(_SCALARS | st.lists(_SCALARS, max_size=2), max_size=6) | _SCALARS
_TENSORS = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", "y", "n", "b", "s", "other"]) | _SCALARS,
        "datatype": st.sampled_from([*v2.INPUT_DATATYPES, "FP16", "UINT8"]) | st.none(),
        "shape": st.lists(st.integers(-1, 4), max_size=3)
        | st.just([10**12])
        | st.just([2, 1])
        | st.text(max_size=2),
    },
    optional={
        "data": _VALUES,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-1, 48) | st.just(2**40) | _SCALARS}
        )
        | _SCALARS,
    },
)
_REQUESTS = st.fixed_dictionaries(
    {"inputs": st.lists(_TENSORS, max_size=5) | _SCALARS},
    optional={
        "id": _SCALARS,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_output": _SCALARS}),
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["label", "probability", "nope"]) | _SCALARS},
                optional={
                    "parameters": st.fixed_dictionaries({}, optional={"binary_data": _SCALARS})
                },
            ),
            max_size=3,
        )
        | _SCALARS,
    },
)


@st.composite
def _near_valid(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """A request for SPEC or DOUBLES that is mostly right: every input named as a column, sizes
    that mostly agree, binary data mostly laid out as declared; then a few things off."""
    names = draw(st.sampled_from([["x", "n", "b"], ["x", "y"], ["x", "n", "b", "s"]]))
    names += draw(st.sampled_from([[], [], [], ["other"], ["s"], ["x"]]))
    rows = draw(st.sampled_from([0, 1, 2, 3, 3, 4, 4, 10**12]))
    inputs, chunks = [], []
    for name in names:
        datatype = draw(st.sampled_from(list(v2.INPUT_DATATYPES)))
        count = rows if rows < 10 else 0
        shape = draw(st.sampled_from([[rows]] * 6 + [[rows, 1]] * 3 + [[draw(st.integers(0, 5))]]))
        values = draw(st.lists(_NUMBERS, min_size=count, max_size=count))
        values += draw(st.sampled_from([[], [], [], [1.0]]))
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if not draw(st.booleans()):
            tensor["data"] = values
        else:
            if datatype == "BYTES":
                texts = [str(v).encode()[: draw(st.integers(0, 12))] for v in values]
                chunk = b"".join(struct.pack("<I", len(t)) + t for t in texts)
            else:
                top = 1 if datatype == "BOOL" and draw(st.booleans()) else 255
                numbers = draw(st.lists(st.integers(0, top), min_size=count, max_size=count))
                dtype = v2.INPUT_DATATYPES[datatype]
                chunk = np.array(numbers).astype(dtype).tobytes()
            chunk = draw(st.sampled_from([chunk, chunk, chunk, chunk[:-1], chunk + b"\x07"]))
            tensor["parameters"] = {
                "binary_data_size": len(chunk) + draw(st.sampled_from([0, 0, 0, 1]))
            }
            chunks.append(chunk)
        inputs.append(tensor)
    outputs = draw(
        st.sampled_from([None, [{"name": "label", "parameters": {"binary_data": True}}]])
    )
    request = {"inputs": inputs} if outputs is None else {"inputs": inputs, "outputs": outputs}
    return request, b"".join(chunks)


@pytest.fixture(scope="module")
def no_stand_in_dbutils() -> Iterator[None]:
    """MLflow puts a stand-in `dbutils` object in sys.modules while it loads a model from code;
    a load still running in a thread an earlier test left behind keeps it there, and
    hypothesis, reading every module's `__file__` for constants, fails on it."""
    with pytest.MonkeyPatch.context() as patch:
        if not isinstance(getattr(sys.modules.get("dbutils"), "__file__", None), str | None):
            patch.delitem(sys.modules, "dbutils")
        yield


@pytest.mark.usefixtures("no_stand_in_dbutils")
@given(
    generated=_near_valid() | st.tuples(_REQUESTS, st.binary(max_size=64)),
    header_length=st.sampled_from(["exact", "exact", "none", "long", "junk"]),
    spec=st.sampled_from([SPEC, DOUBLES, None]),
)
@settings(max_examples=500, deadline=None, derandomize=True, database=None)
def test_the_codec_refuses_any_request_with_a_4xx_never_a_crash(
    generated: tuple[dict[str, Any], bytes], header_length: str, spec: InputSpec | None
):
    request, tail = generated
    header = orjson.dumps(request)
    length = {"exact": str(len(header)), "none": None, "long": str(len(header) + 65), "junk": "1e3"}
    codec = v2.V2Codec(SMALL, length[header_length])
    answer = pd.DataFrame({"label": [1], "probability": [0.5]})
    try:
        decoded = codec.decode(header + tail, None, spec, None)
        codec.encode(answer, ModelRef("fuzzed", "1"))
    except ServingError as error:
        status = error.status_code
    else:
        rows = decoded.batch.rows if decoded.batch is not None else len(decoded.data)
        status = 200 if rows <= SMALL.rows else 500
    assert status == 200 or 400 <= status < 500
