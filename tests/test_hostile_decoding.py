"""Hostile bodies are counted from their structure and refused before anything large is built.

Each body here once took seconds or gigabytes to answer (or was answered at all): a string
bomb in a table of empty strings, a Parquet file that decompresses a thousandfold, a CSV
header of 200,000 columns, records that each name other columns, a tensor of 10^6 values.
"""

import io
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.types import ColSpec, Schema, TensorSpec
from sklearn.datasets import load_breast_cancer

from serving import protocol
from serving.errors import BadRequest, InvalidInput, RequestTooLarge, ServingError
from serving.inputs import InputSpec
from serving.limits import DecodeLimits
from serving.settings import ServingSettings

NAMES = [str(n).replace(" ", "_") for n in load_breast_cancer().feature_names]
DEMO = Schema([ColSpec("double", n) for n in NAMES])  # the demo classifier's signature
TEXT = Schema([ColSpec("double", "x"), ColSpec("string", "note")])
TENSOR = Schema([TensorSpec(np.dtype("float64"), (-1, -1, 1000))])
MIB = 2**20


def _decode(
    body: bytes | str, schema: Schema | None, content_type: str = protocol.JSON, **limits: int
) -> protocol.Decoded:
    data = body.encode() if isinstance(body, str) else body
    spec = InputSpec.from_schema(schema) if schema is not None else None
    return protocol.decode(data, content_type, spec, schema, limits=DecodeLimits(**limits))


def _refused(decode: Callable[[], Any]) -> tuple[ServingError, int]:
    """The error `decode` raises, with the peak bytes it allocated (as tracemalloc sees them)."""
    tracemalloc.start()
    try:
        with pytest.raises(ServingError) as refused:
            decode()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return refused.value, peak


def _string_bomb() -> list[list[str]]:
    """8,000 rows of 30 empty strings, one cell of 20,000 characters: 1.2 MB of JSON."""
    rows = [[""] * 30 for _ in range(8_000)]
    rows[-1][4] = "x" * 20_000
    return rows


def _parquet(table: pa.Table, **options: Any) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


# -- JSON --------------------------------------------------------------------------------------


def test_string_bomb_in_a_split_is_400_naming_column_and_limit_in_bounded_memory():
    body = json.dumps({"dataframe_split": {"columns": NAMES, "data": _string_bomb()}})
    error, peak = _refused(lambda: _decode(body, DEMO))
    assert isinstance(error, BadRequest)
    assert str(error) == (
        "column 'mean_smoothness' row 7999: a string of 20000 characters; "
        "the limit is 10000 (MODELYARD_MAX_STRING_CHARS)"
    )
    assert peak < 128 * MIB


def test_string_bomb_for_a_model_without_signature_never_becomes_a_fixed_width_array():
    # MLflow's parser makes np.array(rows): 8,000 x 30 cells of 20,000 characters, 19 GB
    body = json.dumps({"inputs": _string_bomb()})
    error, peak = _refused(lambda: _decode(body, None))
    assert isinstance(error, BadRequest)
    assert "'inputs' at [7999, 4]: a string of 20000 characters; the limit is 10000" in str(error)
    assert peak < 128 * MIB


def test_short_strings_for_a_model_without_signature_are_bounded_as_fixed_width_text():
    rows = [[""] * 25 for _ in range(8_000)]
    rows[0][0] = "x" * 9_000  # under the string limit; as fixed-width text, 7.2 GB
    error, peak = _refused(lambda: _decode(json.dumps({"instances": rows}), None))
    assert isinstance(error, RequestTooLarge)
    assert error.status_code == 413
    assert error.error_code == "REQUEST_LIMIT_EXCEEDED"
    assert str(error) == (
        "request has 7200000000 bytes once decoded; the limit is 41554432 "
        "(8 x MODELYARD_MAX_CELLS + 32 MiB)"
    )
    assert peak < 128 * MIB


def test_a_million_tiny_cells_decode_and_one_row_more_is_413():
    rows = [[0] * 30 for _ in range(33_333)]  # 999,990 cells in 2 MB
    body = json.dumps({"dataframe_split": {"columns": NAMES, "data": rows}})
    started = time.perf_counter()
    batch = _decode(body, DEMO).batch
    assert time.perf_counter() - started < 2
    assert batch is not None
    assert batch.rows == 33_333
    rows.append([0] * 30)
    with pytest.raises(RequestTooLarge) as refused:
        _decode(json.dumps({"dataframe_split": {"columns": NAMES, "data": rows}}), DEMO)
    assert str(refused.value) == (
        "request has 1000020 cells; the limit is 1000000 (MODELYARD_MAX_CELLS)"
    )


@pytest.mark.parametrize("token", ["0", "NaN"])  # NaN: the fallback parser is tried too
def test_json_nested_100000_deep_is_refused_as_malformed(token: str):
    body = '{"inputs": ' + "[" * 100_000 + token + "]" * 100_000 + "}"
    error, _ = _refused(lambda: _decode(body, None))
    assert isinstance(error, BadRequest)
    assert "malformed JSON" in str(error)


def test_records_that_each_name_other_columns_are_413_before_a_table_is_built():
    row = dict.fromkeys(NAMES, 0.5)
    records = [row | {f"extra_{i}": 0} for i in range(5_000)]  # 5,030 columns in all
    with pytest.raises(RequestTooLarge, match=r"5030 columns; the limit is 4096 \(MODELYARD"):
        _decode(json.dumps({"dataframe_records": records}), DEMO)
    # without a signature pandas would build 5,000 x 5,000 cells
    sparse = [{f"k{i}": 0} for i in range(5_000)]
    error, peak = _refused(lambda: _decode(json.dumps({"dataframe_records": sparse}), None))
    assert str(error) == "request has 5000 columns; the limit is 4096 (MODELYARD_MAX_COLUMNS)"
    assert peak < 128 * MIB


def test_tensor_inputs_are_bounded_by_their_element_count():
    inputs = [[[0.0] * 1000 for _ in range(1001)]]  # one row, 1,001,000 values
    with pytest.raises(RequestTooLarge, match=r"1001000 cells; the limit is 1000000"):
        _decode(json.dumps({"inputs": inputs}), TENSOR)
    decoded = _decode(json.dumps({"inputs": [[[0.0] * 1000 for _ in range(1000)]]}), TENSOR)
    assert np.asarray(decoded.data).shape == (1, 1000, 1000)


def test_limits_come_from_the_settings_and_name_them():
    limits = DecodeLimits.of(ServingSettings(max_rows=10, max_string_chars=5))
    rows = [[0.5, "ok"]] * 11
    body = json.dumps({"dataframe_split": {"columns": ["x", "note"], "data": rows}}).encode()
    spec = InputSpec.from_schema(TEXT)
    with pytest.raises(
        RequestTooLarge, match=r"^request has 11 rows; the limit is 10 \(MODELYARD_MAX_ROWS\)$"
    ):
        protocol.decode(body, protocol.JSON, spec, TEXT, limits=limits)
    body = json.dumps({"dataframe_records": [{"x": 0.5, "note": "too long"}]}).encode()
    with pytest.raises(
        BadRequest, match=r"column 'note' row 0: a string of 8 characters; the limit is 5"
    ):
        protocol.decode(body, protocol.JSON, spec, TEXT, limits=limits)


def test_a_client_column_name_is_quoted_short_and_printable():
    strict = InputSpec(InputSpec.from_schema(DEMO).columns, strict=True)  # type: ignore[union-attr]
    name = "\x1b[31m" + "y" * 100_000
    body = json.dumps({"dataframe_records": [dict.fromkeys(NAMES, 0.5) | {name: 1}]}).encode()
    with pytest.raises(InvalidInput) as refused:
        protocol.decode(body, protocol.JSON, strict, DEMO)
    message = str(refused.value)
    assert message == f"unexpected column(s) '?[31m{'y' * 56}...' (1 in all): model is strict"


# -- CSV ---------------------------------------------------------------------------------------


def test_csv_of_200000_columns_is_413_from_its_header():
    header = ",".join(f"c{i}" for i in range(200_000))
    body = header + "\n" + ",".join(["0"] * 200_000) + "\n"  # 2.5 MB
    started = time.perf_counter()
    with pytest.raises(RequestTooLarge) as refused:
        _decode(body, DEMO, protocol.CSV)  # pandas took 9 s to read it
    assert time.perf_counter() - started < 2
    assert str(refused.value) == (
        "request has 200000 columns; the limit is 4096 (MODELYARD_MAX_COLUMNS)"
    )


def test_csv_rows_are_counted_before_reading():
    body = "x\n" + "0\n" * 250_000
    with pytest.raises(RequestTooLarge) as refused:
        _decode(body, Schema([ColSpec("double", "x")]), protocol.CSV)
    assert str(refused.value) == "request has 250000 rows; the limit is 100000 (MODELYARD_MAX_ROWS)"
    quoted = 'x,note\n0,"a\nb"\n0,"c\nd"\n'  # line breaks inside values are no rows
    assert _decode(quoted, TEXT, protocol.CSV, rows=2).batch.rows == 2  # type: ignore[union-attr]


def test_csv_string_over_the_limit_is_400_naming_column_and_row():
    body = "x,note\n0.5,fine\n0.5," + "z" * 10_001 + "\n"
    with pytest.raises(BadRequest, match=r"^column 'note' row 1: a string of 10001 characters"):
        _decode(body, TEXT, protocol.CSV)


# -- Parquet -----------------------------------------------------------------------------------


def test_parquet_that_decompresses_a_thousandfold_is_413_from_its_footer():
    body = _parquet(pa.table({"x": np.zeros(5_000_000)}), compression="zstd")  # 40 MB of values
    assert len(body) < 100_000
    error, peak = _refused(lambda: _decode(body, DEMO, protocol.PARQUET))
    assert str(error) == "request has 5000000 rows; the limit is 100000 (MODELYARD_MAX_ROWS)"
    assert peak < 16 * MIB


def test_parquet_text_is_bounded_in_bytes_before_it_is_read():
    notes = pa.array(["z" * 9_000] * 5_000)  # 45 MB uncompressed, plain-encoded, compressed
    body = _parquet(pa.table({"x": np.zeros(5_000), "note": notes}), use_dictionary=False)
    with pytest.raises(RequestTooLarge, match=r"^request has \d+ bytes once decoded"):
        _decode(body, TEXT, protocol.PARQUET)
    # a dictionary of one string that 20,000 rows repeat: 180 MB once expanded
    repeated = pa.DictionaryArray.from_arrays(pa.array(np.zeros(20_000, np.int32)), notes[:1])
    body = _parquet(pa.table({"x": np.zeros(20_000), "note": repeated}), store_schema=False)
    error, peak = _refused(lambda: _decode(body, TEXT, protocol.PARQUET))
    assert str(error).startswith("request has 180240000 bytes once decoded")  # with x, offsets
    assert peak < 64 * MIB


def test_parquet_string_over_the_limit_is_400_and_text_still_reads():
    frame = pd.DataFrame({"x": [0.5, 0.5], "note": ["fine", "z" * 10_001]})
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    with pytest.raises(BadRequest, match=r"^column 'note' row 1: a string of 10001 characters"):
        _decode(buffer.getvalue(), TEXT, protocol.PARQUET)
    batch = _decode(buffer.getvalue(), TEXT, protocol.PARQUET, string_chars=20_000).batch
    assert batch is not None
    assert batch.frame()["note"].tolist() == ["fine", "z" * 10_001]
