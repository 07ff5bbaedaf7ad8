"""Reading request values as MLflow 3.17's scoring server reads them, and refusing the rest.

Each accepted coercion below was measured against `mlflow models serve` (see
tests/test_conformance.py for the same cases end to end); each refusal is either MLflow's own
or a deliberate difference listed in tests/conformance_allowlist.yaml.
"""

import io
import json
import math
import random
import time
import tracemalloc
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.types import ColSpec, Schema, TensorSpec

from registry.contract import Column
from serving import protocol
from serving.errors import BadRequest, InvalidInput, ServingError
from serving.inputs import InputSpec, from_rows

TYPES = ("double", "float", "long", "integer", "boolean", "string")
VALID: dict[str, Any] = {
    "double": 0.5,
    "float": 0.5,
    "long": 3,
    "integer": 3,
    "boolean": True,
    "string": "x",
}
SCHEMA = Schema(
    [ColSpec(t, t) for t in TYPES] + [ColSpec(t, f"optional_{t}", required=False) for t in TYPES]
)
SPEC = InputSpec.from_schema(SCHEMA)
NAMES = SCHEMA.input_names()
DOUBLES = Schema([ColSpec("double", f"x{i}") for i in range(4)])
DOUBLES_SPEC = InputSpec.from_schema(DOUBLES)
TENSOR = Schema([TensorSpec(np.dtype("float64"), (-1, 4))])


def _decode(document: Any, schema: Schema = SCHEMA, text: str | None = None) -> protocol.Decoded:
    body = (text if text is not None else json.dumps(document)).encode()
    return protocol.decode(body, "application/json", InputSpec.from_schema(schema), schema)


def _split_with(column: str, value: Any) -> dict[str, Any]:
    """Two valid rows of every column; row 1 of `column` holds `value`."""
    rows = [[VALID[c.type.name] for c in SCHEMA.inputs] for _ in range(2)]  # type: ignore[union-attr]
    rows[1][NAMES.index(column)] = value
    return {"dataframe_split": {"columns": NAMES, "data": rows}}


def _cell(column: str, value: Any) -> Any:
    """What the model gets in row 1 of `column` when the request holds `value` there."""
    batch = _decode(_split_with(column, value)).batch
    assert batch is not None
    return batch.frame()[column].tolist()[1]


# -- what MLflow coerces, read the same way --------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("double", "1.5", 1.5),  # numeric strings, as MLflow's cast reads them
        ("double", " 2 ", 2.0),
        ("double", "1e3", 1000.0),
        ("double", True, 1.0),
        ("double", 7, 7.0),
        ("float", "1.5", 1.5),
        ("long", "7", 7),
        ("long", 7.0, 7),
        ("long", True, 1),
        ("integer", "-3", -3),
        ("integer", False, 0),
        ("boolean", 1, True),  # 0 and 1 for booleans
        ("boolean", 0, False),
        ("boolean", 1.0, True),
        ("optional_boolean", 0, False),
        ("string", "1.5", "1.5"),
    ],
)
def test_values_mlflow_coerces_are_read_as_it_reads_them(column: str, value: Any, expected: Any):
    got = _cell(column, value)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    "column", ["double", "float", "string", "optional_double", "optional_float", "optional_string"]
)
@pytest.mark.parametrize("missing", [None, "NaN-token"])
def test_missing_values_reach_the_model_as_nan_where_the_type_has_one(column: str, missing: Any):
    document = _split_with(column, None)
    text = json.dumps(document)
    if missing == "NaN-token":  # as Python's json module writes float("nan")
        text = text.replace("null", "NaN")
    batch = _decode(None, text=text).batch
    assert batch is not None
    value = batch.frame()[column].tolist()[1]
    assert isinstance(value, float)
    assert math.isnan(value)


@pytest.mark.parametrize(
    "column",
    ["long", "integer", "boolean", "optional_long", "optional_integer", "optional_boolean"],
)
def test_missing_values_are_refused_where_the_type_has_none(column: str):
    # long and integer: MLflow refuses them too; boolean: MLflow reads null as False, NaN as True
    with pytest.raises(BadRequest) as refused:
        _decode(_split_with(column, None))
    assert refused.value.error_code == "BAD_REQUEST"
    assert f"column '{column}' row 1: null value" in str(refused.value)


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("double", "abc", "not a number"),  # MLflow: 400 as well
        ("double", [1.0], "not a number: list"),
        ("double", float("inf"), "infinite value"),  # MLflow passes it on
        ("float", 1e300, "out of the float range"),  # MLflow: inf
        ("long", 7.5, "a fraction would be cut off"),  # MLflow: 7
        ("long", "7.5", "not an integer"),  # MLflow: 400 as well
        ("long", 2**70, "out of range"),  # MLflow: 400 as well
        ("integer", 2**40, "out of range"),  # MLflow: wraps to 0
        ("boolean", 2, "not a boolean"),  # MLflow: True
        ("boolean", "false", "not a boolean: text"),  # MLflow: True
        ("boolean", "true", "not a boolean: text"),
        ("string", 5, "not a string: int"),  # MLflow passes the number on
        ("string", True, "not a string: bool"),
    ],
)
def test_values_mlflow_would_change_or_refuse_are_400_naming_column_and_row(
    column: str, value: Any, problem: str
):
    with pytest.raises(BadRequest) as refused:
        _decode(None, text=json.dumps(_split_with(column, value)))  # inf: an Infinity token
    message = str(refused.value)
    assert refused.value.error_code == "BAD_REQUEST"
    assert f"column '{column}' row 1" in message
    assert problem in message
    assert not isinstance(value, str) or value not in message  # never the value itself


def test_an_infinity_token_is_refused_and_other_bad_json_still_is():
    text = json.dumps(_split_with("double", float("inf")))
    assert "Infinity" in text
    with pytest.raises(BadRequest, match="infinite value"):
        _decode(None, text=text)
    with pytest.raises(BadRequest, match="malformed JSON"):
        _decode(None, text='{"dataframe_split": {"columns": ["NaN"], "data": [[NaN]')
    with pytest.raises(BadRequest, match="malformed JSON"):
        _decode(None, text="[" * 100_000 + "NaN" + "]" * 100_000)  # too deep for either parser


# -- the all-double fast path ----------------------------------------------------------------


def test_all_double_request_stays_one_matrix_with_nulls_bools_and_numeric_strings():
    body = {
        "dataframe_split": {
            "columns": ["x3", "x2", "x1", "x0"],
            "data": [[1, "2.5", None, True], [0.5, 1e3, -2, False]],
        }
    }
    batch = _decode(body, DOUBLES).batch
    assert batch is not None
    assert batch.matrix is not None  # no per-column Python pass
    expected = np.array([[True, np.nan, "2.5", 1], [False, -2, 1e3, 0.5]], dtype=np.float64)
    np.testing.assert_array_equal(batch.matrix, expected)


def test_all_double_records_with_a_key_missing_hold_nan_there():
    records = [{"x0": 1, "x1": 2, "x2": 3, "x3": 4}, {"x0": 5, "x2": 7, "x3": 8}]
    batch = _decode({"dataframe_records": records}, DOUBLES).batch
    assert batch is not None
    assert batch.matrix is not None
    assert math.isnan(batch.matrix[1, 1])
    assert batch.matrix[1, 2] == 7


def test_record_without_a_key_of_a_column_with_no_missing_value_is_refused():
    records = [{n: VALID[n.removeprefix("optional_")] for n in NAMES} for _ in range(2)]
    del records[1]["long"]
    with pytest.raises(BadRequest, match="column 'long' row 1: null value"):
        _decode({"dataframe_records": records})


def test_long_string_among_numbers_is_refused_without_a_wide_array():
    # numpy left to infer a type would make every cell as wide as the longest string
    rows = [[float(i), 1.0, 2.0, 3.0] for i in range(20_000)]
    rows[-1][2] = "7" * 1_000_000
    body = json.dumps({"dataframe_split": {"columns": ["x0", "x1", "x2", "x3"], "data": rows}})
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(BadRequest, match="column 'x2' row 19999: a string of 1000000 char"):
            _decode(None, DOUBLES, text=body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20
    assert time.perf_counter() - started < 5


# -- every format, zero rows, error codes ------------------------------------------------------


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"dataframe_split": {"columns": ["x0", "x1", "x2", "x3"], "data": []}}', protocol.JSON),
        (b'{"inputs": {"x0": [], "x1": [], "x2": [], "x3": []}}', protocol.JSON),
        (b"x0,x1,x2,x3\n", protocol.CSV),
        (
            _parquet(pd.DataFrame({f"x{i}": pd.Series([], dtype="float64") for i in range(4)})),
            protocol.PARQUET,
        ),
    ],
)
def test_zero_rows_are_a_valid_batch_in_every_format(body: bytes, content_type: str):
    decoded = protocol.decode(body, content_type, DOUBLES_SPEC, DOUBLES)
    assert decoded.batch is not None
    assert decoded.batch.rows == 0
    assert decoded.batch.frame().shape == (0, 4)


def test_csv_and_parquet_nulls_follow_the_column_type():
    frame = pd.DataFrame({n: [VALID[n.removeprefix("optional_")]] * 2 for n in NAMES})
    with_nulls = frame.astype({"double": "float64", "string": "object"})
    with_nulls.loc[1, "double"] = None
    with_nulls.loc[1, "string"] = None
    for body, content_type in [
        (_csv(with_nulls), protocol.CSV),
        (_parquet(with_nulls), protocol.PARQUET),
    ]:
        batch = protocol.decode(body, content_type, SPEC, SCHEMA).batch
        assert batch is not None
        values = batch.frame()
        assert math.isnan(values["double"][1])
        assert pd.isna(values["string"][1])
    nullable = frame.astype({"long": "Int64", "boolean": "boolean"})
    batch = protocol.decode(_parquet(nullable), protocol.PARQUET, SPEC, SCHEMA).batch
    assert batch is not None
    assert batch.frame()["long"].tolist() == [3, 3]
    nullable.loc[1, "boolean"] = None
    with pytest.raises(BadRequest, match="column 'boolean' row 1: null value"):
        protocol.decode(_parquet(nullable), protocol.PARQUET, SPEC, SCHEMA)


@pytest.mark.parametrize(
    ("document", "error", "code"),
    [
        ({"dataframe_split": [[1.0]]}, BadRequest, "BAD_REQUEST"),
        (
            {"dataframe_split": {"columns": ["x0"], "data": [], "orient": 1}},
            BadRequest,
            "BAD_REQUEST",
        ),
        (
            {"dataframe_split": {"columns": ["x0", "x1", "x2", "x3"], "data": [[1, 2]]}},
            BadRequest,
            "BAD_REQUEST",
        ),
        ({"dataframe_records": {"x0": [1]}}, BadRequest, "BAD_REQUEST"),
        (
            {"dataframe_split": {"columns": ["x0"], "data": [[1.0]]}},
            InvalidInput,
            "INVALID_PARAMETER_VALUE",
        ),
        ({"dataframe_split": {"data": [[1.0, 2, 3, 4]]}}, InvalidInput, "INVALID_PARAMETER_VALUE"),
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            InvalidInput,
            "INVALID_PARAMETER_VALUE",
        ),
    ],
)
def test_error_codes_are_mlflows(document: Any, error: type[ServingError], code: str):
    with pytest.raises(error) as refused:
        _decode(document, DOUBLES)
    assert refused.type is error
    assert refused.value.error_code == code


# -- tensor signatures -------------------------------------------------------------------------


def test_tensor_nulls_go_on_to_the_model_and_infinities_are_refused():
    decoded = _decode(None, TENSOR, text='{"inputs": [[0.5, NaN, 3, 4], [1, null, 2, 3]]}')
    data = np.asarray(decoded.data, dtype=np.float64)
    assert data.shape == (2, 4)
    assert np.isnan(data[:, 1]).all()
    with pytest.raises(BadRequest, match=r"infinite value at index \[0, 1\]"):
        _decode(None, TENSOR, text='{"inputs": [[0.5, Infinity, 3, 4]]}')
    with pytest.raises(BadRequest) as unreadable:
        _decode({"inputs": [[0.5, "zq", 3, 4]]}, TENSOR)
    assert unreadable.value.error_code == "BAD_REQUEST"


# -- never anything but a 4xx for a client's values -------------------------------------------


def test_random_values_in_every_column_are_read_or_refused_never_raise_otherwise():
    rng = random.Random(7)
    pool: list[Any] = [
        None, True, False, 0, 1, -1, 2, 7.5, 2**53, 2**63, 2**64, -(2**63) - 1, 2**70, 1e308,
        -1e308, 1e-310, "", "0", "1", "1.5", " 7 ", "1_0", "nan", "inf", "-Infinity", "true",
        "\u0661", "x" * 1000, [], [1], {}, {"a": 1}, [[1.0]],
    ]  # fmt: skip
    statuses: list[int] = []
    for _ in range(400):
        rows = [
            [rng.choice(pool) if rng.random() < 0.3 else VALID[c.type.name] for c in SCHEMA.inputs]  # type: ignore[union-attr]
            for _ in range(rng.randint(0, 4))
        ]
        body = json.dumps({"dataframe_split": {"columns": NAMES, "data": rows}})
        try:
            batch = _decode(None, text=body).batch
        except ServingError as error:
            statuses.append(error.status_code)
            continue
        statuses.append(200)
        assert batch is not None
        assert batch.rows == len(rows)
        batch.frame()
    assert set(statuses) == {200, 400}


def test_first_missing_names_column_and_row():
    spec = InputSpec((Column("a", "double", True), Column("s", "string", False)))
    batch = from_rows(spec, ["a", "s"], [[1.0, "x"], [2.0, None]])
    assert batch.first_missing() == ("s", 1)
    matrix = from_rows(InputSpec((Column("a", "double", True),)), ["a"], [[1.0], [None]])
    assert matrix.first_missing() == ("a", 1)
    assert from_rows(spec, ["a", "s"], [[1.0, "x"]]).first_missing() is None


def test_with_missing_blanks_the_first_row_of_nullable_columns_only():
    spec = InputSpec((Column("a", "double", True), Column("n", "long", True)))
    probe = from_rows(spec, ["a", "n"], [[1.0, 2], [3.0, 4]]).with_missing()
    assert probe is not None
    assert probe.first_missing() == ("a", 0)
    assert probe.frame()["n"].tolist() == [2, 4]
    longs = InputSpec((Column("n", "long", True),))
    assert from_rows(longs, ["n"], [[1]]).with_missing() is None
    assert from_rows(spec, ["a", "n"], []).with_missing() is None
