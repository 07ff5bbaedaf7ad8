"""MLflow's scoring protocol: content types, the four JSON formats, CSV, Parquet, responses."""

import csv
import json
import re
from dataclasses import dataclass
from io import BytesIO, StringIO
from typing import Any, Protocol

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from mlflow.exceptions import MlflowException
from mlflow.types import Schema

from registry.refs import ModelRef
from serving import inputs
from serving.errors import BadRequest, InvalidInput, UnsupportedMediaType
from serving.inputs import Batch, InputSpec
from serving.limits import DEFAULT_LIMITS, DecodeLimits, extent, holds_text, shown, widest

JSON, CSV, PARQUET = "application/json", "text/csv", "application/vnd.apache.parquet"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
LLM_KEYS = ("messages", "prompt", "input")
"""Keys that make MLflow read a body as chat, completions or embeddings input, not a table."""
SPLIT_KEYS = frozenset(("columns", "data", "index"))
NON_JSON_TOKENS = (b"NaN", b"Infinity")
"""Python's json module writes these for float('nan') and float('inf') (so do clients built on
it, such as requests' `json=`); MLflow reads them. They are not JSON (RFC 8259)."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """A request body read as the scoring protocol says.

    `batch` is set when the input was validated here against a named-column signature;
    otherwise `data` holds MLflow's own parse of it, for the model's pyfunc to check.
    """

    batch: Batch | None = None
    data: Any = None
    params: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Encoded:
    """An answer's body, its media type and the headers that describe it."""

    body: bytes
    media_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


class Codec(Protocol):
    """The two ends of a prediction protocol: a request's body read for a version's
    signature, and predictions written as its answer. One object serves one request."""

    def decode(
        self, body: bytes, content_type: str | None, spec: InputSpec | None, schema: Schema | None
    ) -> Decoded: ...

    def encode(self, predictions: Any, ref: ModelRef) -> Encoded: ...


@dataclass(frozen=True, slots=True)
class Scoring:
    """MLflow's scoring protocol, within `limits`."""

    limits: DecodeLimits = DEFAULT_LIMITS

    def decode(
        self, body: bytes, content_type: str | None, spec: InputSpec | None, schema: Schema | None
    ) -> Decoded:
        return decode(body, content_type, spec, schema, limits=self.limits)

    def encode(self, predictions: Any, ref: ModelRef) -> Encoded:
        return Encoded(encode(predictions))


def decode(
    body: bytes,
    content_type: str | None,
    spec: InputSpec | None,
    schema: Schema | None,
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> Decoded:
    """Read `body` by its content type; raise 415, 413 (over `limits`) or 400 naming the problem.

    Rows, columns, cells and decoded bytes are counted from the body's structure (JSON values,
    a CSV header, a Parquet footer) before any array or DataFrame is built.
    """
    mime = _media_type(content_type)
    if mime == JSON:
        return _decode_json(body, spec, schema, limits)
    if mime == CSV:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the CSV body is not valid UTF-8") from None
        _bound_csv(text, limits)
        frame = _read_table(lambda: _mlflow_csv(text, schema), "CSV with a header row")
    else:
        frame = _read_parquet(body, limits)
    _bound_frame_text(frame, limits)
    if spec is not None:
        return Decoded(batch=inputs.from_frame(spec, frame))
    return Decoded(data=_checked(frame, schema))


@dataclass(frozen=True, slots=True)
class Columns:
    """A DataFrame answer of numbers and booleans as named arrays: what the codecs write from,
    converted once per predict call and sliced per request (a DataFrame slice and its
    conversion cost far more than the writing)."""

    names: list[str]
    arrays: list[np.ndarray]

    @classmethod
    def of(cls, answer: Any) -> "Columns | None":
        """`answer`'s columns, or None when it is no such DataFrame (or has no columns)."""
        if not isinstance(answer, pd.DataFrame) or not len(answer.columns):
            return None
        names, arrays = [], []
        for name, column in answer.items():
            if not isinstance(column.dtype, np.dtype) or column.dtype.kind not in "biuf":
                return None
            names.append(str(name))
            arrays.append(column.to_numpy())
        return cls(names, arrays)

    def rows(self, start: int, stop: int) -> "Columns":
        """Rows `start` to `stop`."""
        return Columns(self.names, [array[start:stop] for array in self.arrays])


def encode(predictions: Any) -> bytes:
    """`{"predictions": ...}` as MLflow writes it (a DataFrame as records)."""
    if isinstance(predictions, Columns):
        values = zip(*(array.tolist() for array in predictions.arrays), strict=True)
        body: Any = [dict(zip(predictions.names, row, strict=True)) for row in values]
    elif isinstance(predictions, pd.DataFrame):
        names = [str(c) for c in predictions.columns.tolist()]
        rows = predictions.to_numpy(dtype=object).tolist()  # half the time of column by column
        body = [dict(zip(names, row, strict=True)) for row in rows]
    elif isinstance(predictions, np.ndarray):
        body = predictions.tolist()
    elif isinstance(predictions, pd.Series):
        body = pd.DataFrame(predictions).to_dict(orient="records")
    else:
        body = predictions
    return orjson.dumps({"predictions": body}, option=orjson.OPT_SERIALIZE_NUMPY)


def _media_type(content_type: str | None) -> str:
    if not content_type:
        raise UnsupportedMediaType(
            f"a Content-Type header is required: one of {JSON}, {CSV}, {PARQUET}"
        )
    mime, *parameters = (part.strip() for part in content_type.split(";"))
    values = {
        key.strip().lower(): value.strip()
        for key, _, value in (p.partition("=") for p in parameters)
    }
    if values.get("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMediaType("the scoring server only supports UTF-8")
    if unknown := set(values) - {"charset"}:
        raise UnsupportedMediaType(
            f"unrecognized content type parameters: {', '.join(sorted(unknown))}"
        )
    if mime.lower() not in (JSON, CSV, PARQUET):
        raise UnsupportedMediaType(
            f"unsupported content type '{mime}': use one of {JSON}, {CSV}, {PARQUET}"
        )
    return mime.lower()


def _decode_json(
    body: bytes, spec: InputSpec | None, schema: Schema | None, limits: DecodeLimits
) -> Decoded:
    document = _json_document(body)
    if not isinstance(document, dict):
        raise BadRequest(f"the body must be a JSON object with exactly one of {', '.join(FORMATS)}")
    if llm := [k for k in LLM_KEYS if k in document]:
        raise InvalidInput(
            f"LLM inputs ({', '.join(map(repr, llm))}) are not supported: send a table as one of "
            + ", ".join(FORMATS)
        )
    keys = [k for k in FORMATS if k in document]
    if len(keys) != 1:
        raise BadRequest(
            f"the body must have exactly one of {', '.join(FORMATS)}; it has {len(keys)}"
        )
    params = document.get("params")
    if params is not None and not isinstance(params, dict):
        raise BadRequest("'params' must be a JSON object of name -> value")
    key = keys[0]
    value = document[key]
    if spec is not None and _is_table(key, value):
        if len(body) > limits.string_chars:  # a shorter body cannot hold a longer string
            _bound_json(key, value, limits, typed=True)
        else:
            limits.check(*_table_shape(key, value, limits))
        return Decoded(batch=_fast_batch(spec, key, value), params=params)
    _bound_json(key, value, limits, typed=False)
    return Decoded(data=_checked(_mlflow_parse({key: value}, schema), schema), params=params)


def _is_table(key: str, value: Any) -> bool:
    """Whether the input is a table this module validates itself (else MLflow's parser reads it)."""
    if key.startswith("dataframe_") or isinstance(value, dict):
        return True
    return isinstance(value, list) and all(isinstance(r, dict) for r in value)


def _table_shape(key: str, value: Any, limits: DecodeLimits) -> tuple[int, int, int]:
    """Rows, columns and cells of a JSON input as the table pandas or numpy would make of it.

    A tensor (lists of lists) counts its first dimension as rows; its cells are its scalars.
    Records count all their keys, an upper bound of their columns, when that is within
    `limits`; their distinct keys only when it is not.
    """
    if key == "dataframe_split" and isinstance(value, dict):
        data, names = value.get("data"), value.get("columns")
        rows = len(data) if isinstance(data, list) else 0
        longest_row = widest(data) if isinstance(data, list) else 0
        columns = max(len(names) if isinstance(names, list) else 0, longest_row)
        return rows, columns, rows * columns
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        keys = sum(map(len, value))
        if keys > limits.columns or len(value) * keys > limits.cells:
            keys = len(set().union(*value))  # a record without a key holds a null there
        return len(value), keys, len(value) * keys
    if isinstance(value, dict):
        rows = widest(value.values())
        return rows, len(value), rows * len(value)
    return len(value) if isinstance(value, list) else 1, 0, 0


def _bound_json(key: str, value: Any, limits: DecodeLimits, *, typed: bool) -> None:
    """413 or 400 from a parsed input's counts and strings, before any array is built.

    Untyped (read by MLflow's parser), text becomes a numpy array as wide as its longest
    string in every cell: that size is bounded too.
    """
    rows, columns, cells = _table_shape(key, value, limits)
    limits.check(rows, columns, cells)
    split = key == "dataframe_split" and isinstance(value, dict)
    values = value.get("data") if split else value  # a split's column names are no values
    if typed and not holds_text(values):  # deeper values are refused by type, not read
        return
    found = extent(values)
    limits.check(rows, columns, max(cells, found.scalars))
    if found.longest > limits.string_chars:
        names = value.get("columns") if split else None
        limits.check_text(found.longest, _where(key, found.path, names))
    if not typed:
        limits.check_bytes(4 * found.scalars * found.longest)  # numpy: 4 bytes a character


def _where(key: str, path: tuple[Any, ...], names: Any) -> str:
    """Where a path into a JSON input leads: column and row of a table, else input and index."""
    if len(path) > 1:
        first, second = path[0], path[1]
        if isinstance(first, str) and isinstance(second, int):  # an object of columns
            return f"column '{shown(first)}' row {second}"
        if isinstance(first, int) and isinstance(second, str):  # records
            return f"column '{shown(second)}' row {first}"
        if isinstance(names, list) and isinstance(second, int) and second < len(names):
            return f"column '{shown(names[second])}' row {first}"  # dataframe_split rows
    return f"'{key}' at {shown(list(path))}"


def _json_document(body: bytes) -> Any:
    """The body parsed; bare NaN and Infinity tokens read as MLflow reads them."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        problem = exc.args[0].split(":")[0]
    if any(token in body for token in NON_JSON_TOKENS):
        # the slower parser only for bodies the strict one refused and that may hold the tokens
        try:
            return json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
            pass
    raise BadRequest(f"malformed JSON: {problem}")


def _fast_batch(spec: InputSpec, key: str, value: Any) -> Batch:
    """Validate a named-column request here.

    A body that cannot be read as a table is BAD_REQUEST, one that lacks a column of the
    signature INVALID_PARAMETER_VALUE: the codes MLflow answers them with.
    """
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise BadRequest("'dataframe_split' must be an object with 'columns' and 'data'")
        if "columns" not in value:
            raise InvalidInput("'dataframe_split' needs 'columns' naming the signature's inputs")
        if not SPLIT_KEYS.issuperset(value):
            raise BadRequest("'dataframe_split' takes only 'columns', 'data' and 'index'")
        return inputs.from_rows(spec, value["columns"], value["data"])
    if isinstance(value, list) and all(isinstance(r, dict) for r in value):
        return inputs.from_records(spec, value)
    if key == "dataframe_records" or not isinstance(value, dict):
        raise BadRequest("'dataframe_records' must be a list of objects of column -> value")
    return inputs.from_columns(spec, value)


def _mlflow_parse(data: dict[str, Any], schema: Schema | None) -> Any:
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    try:
        return infer_and_parse_data(data, schema)  # type: ignore[arg-type]  # None is accepted
    except MlflowException as exc:
        if exc.error_code == "BAD_REQUEST":  # MLflow's code for input it could not read
            raise BadRequest(first_line(exc.message)) from None
        raise InvalidInput(first_line(exc.message)) from None
    except Exception as exc:  # numpy and pandas raise many types for input they cannot read
        raise BadRequest(
            f"the input does not fit the model's signature: {first_line(str(exc))}"
        ) from None


def _checked(data: Any, schema: Schema | None) -> Any:
    """`data` parsed for a tensor signature, refused when it holds an infinity.

    Nulls and NaN go on to the model, as in MLflow (a NaN is how a tensor says "missing");
    an infinity is refused here as in a named column (see serving.inputs).
    """
    if schema is None or not schema.is_tensor_spec():
        return data
    for array in data.values() if isinstance(data, dict) else (data,):
        if isinstance(array, pd.DataFrame):
            array = array.to_numpy()
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "fO":
            continue
        if array.dtype.kind == "O":
            try:
                array = array.astype(np.float64)  # None as NaN; what is no number is pyfunc's
            except (ValueError, TypeError, OverflowError):
                continue
        infinite = np.isinf(array)
        if infinite.any():
            where = [int(i) for i in np.argwhere(infinite)[0]]
            raise BadRequest(f"infinite value at index {where}: finite numbers only")
    return data


def _mlflow_csv(text: str, schema: Schema | None) -> pd.DataFrame:
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return pd.read_csv(StringIO(text))
    types = dict(zip(schema.input_names(), schema.pandas_types(), strict=True))
    return pd.read_csv(StringIO(text), dtype=types)


def _bound_csv(text: str, limits: DecodeLimits) -> None:
    """413 from the header's field count and the record count, before pandas reads a value."""
    records = filter(None, csv.reader(StringIO(text)))  # pandas skips blank lines too
    try:
        columns = len(next(records, []))
        rows = text.count("\n") + text.count("\r")  # at least the records after the header
        if rows > limits.rows:  # quoted line breaks count there too: count records
            rows = sum(1 for _ in records)
    except csv.Error:
        raise BadRequest("could not read the body as CSV with a header row") from None
    limits.check(rows, columns)


_WIDTHS = {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4, "INT64": 8, "DOUBLE": 8, "INT96": 12}
"""Bytes per decoded value of Parquet's fixed-width physical types; BYTE_ARRAY: its offset."""
_OFFSET = 4


def _is_text_type(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_binary(kind))


def _read_parquet(body: bytes, limits: DecodeLimits) -> pd.DataFrame:
    """The body's table, refused from its footer before a page is read.

    The footer gives rows, columns, values and the row groups' uncompressed size (which bounds
    decompression). Decoded, a value can be larger than its encoding (a dictionary index can
    stand for a long string in every row): numbers are bounded by rows x width, text is read as
    dictionaries and measured before it is expanded.
    """
    try:
        file = pq.ParquetFile(BytesIO(body))
        meta, stored = file.metadata, file.schema_arrow
    except Exception:  # pyarrow raises several types for a body that is not Parquet
        raise BadRequest("could not read the body as Parquet matching the signature") from None
    groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
    leaves = [meta.schema.column(c) for c in range(meta.num_columns)]
    values = [_values_of(c, leaf, meta.num_rows, groups) for c, leaf in enumerate(leaves)]
    limits.check(meta.num_rows, meta.num_columns, sum(values))
    limits.check_bytes(sum(g.total_byte_size for g in groups))
    fixed = sum(
        n * _WIDTHS.get(c.physical_type, c.length or _OFFSET)
        for n, c in zip(values, leaves, strict=True)
    )
    limits.check_bytes(fixed)
    for leaf in leaves:
        if leaf.physical_type == "BYTE_ARRAY" and leaf.max_repetition_level > 0:
            raise BadRequest(f"Parquet column '{shown(leaf.path)}': text in a list is not read")
    text = [c.path for c in leaves if c.physical_type == "BYTE_ARRAY" and _is_text(c)]
    try:
        reader = pq.ParquetFile(BytesIO(body), metadata=meta, read_dictionary=text)
        table = reader.read(use_threads=False)
    except Exception:  # a footer that promises what the pages do not hold
        raise BadRequest("could not read the body as Parquet matching the signature") from None
    limits.check_bytes(fixed + sum(_dense_size(table.column(c)) for c in range(table.num_columns)))
    return _read_table(lambda: _expanded(table, stored).to_pandas(), "Parquet")


def _values_of(column: int, leaf: Any, rows: int, groups: list[Any]) -> int:
    """Values of one leaf column: its rows, or (in a list) the count each row group gives."""
    if leaf.max_repetition_level == 0:
        return rows
    return sum(g.column(column).num_values for g in groups)


def _is_text(leaf: Any) -> bool:
    """A byte-array column of strings or bytes (not, say, a decimal)."""
    return str(leaf.logical_type) in ("String", "None", "JSON", "BSON", "Enum")


def _dense_size(column: pa.ChunkedArray) -> int:
    """Bytes of a dictionary-read text column once every index is replaced by its string."""
    kind = column.type
    if not pa.types.is_dictionary(kind) or not _is_text_type(kind.value_type):
        return 0
    sizes = (pc.sum(pc.take(pc.binary_length(c.dictionary), c.indices)) for c in column.chunks)
    return sum(size.as_py() or 0 for size in sizes)


def _expanded(table: pa.Table, stored: pa.Schema) -> pa.Table:
    """`table` with the text read as dictionaries decoded, as the file's own schema has it."""
    for c, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type) and not pa.types.is_dictionary(stored.field(c).type):
            column = table.column(c)
            plain = pa.chunked_array(
                [chunk.dictionary_decode() for chunk in column.chunks], field.type.value_type
            )
            table = table.set_column(c, field.with_type(field.type.value_type), plain)
    return table


def _bound_frame_text(frame: pd.DataFrame, limits: DecodeLimits) -> None:
    """400 naming column and row of the first string over the limit in a CSV or Parquet table."""
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, np.dtype) and column.dtype.kind != "O":
            continue
        for row, value in enumerate(column.to_numpy(dtype=object)):
            if isinstance(value, str):
                limits.check_text(len(value), f"column '{shown(name)}' row {row}")


def _read_table(read: Any, what: str) -> pd.DataFrame:
    try:
        frame = read()
    except Exception:  # pandas and pyarrow raise many types for unreadable input
        raise BadRequest(f"could not read the body as {what} matching the signature") from None
    if not isinstance(frame, pd.DataFrame):
        raise BadRequest(f"could not read the body as {what}")
    return frame


_QUOTES_INPUT = ("Failed to enforce schema of data", "Failed to predict data")
"""MLflow messages that quote the whole input before saying what is wrong with it."""
_QUOTES_VALUE = (
    # an exception's repr, as MLflow quotes it: keep its message
    (re.compile(r"'?\b\w+(?:Error|Exception)\((['\"])(.*)\1\)'?"), r"\2"),
    # MLflow, numpy and pandas quote the value they could not read
    (re.compile(r"Failed to convert data `.*"), "Failed to convert the data to the signature"),
    (re.compile(r"(could not convert string to \w+|invalid literal for [^:]*): .*"), r"\1"),
)


def first_line(message: str, limit: int = 300) -> str:
    """The first line of an error message, cut short: never a payload or a traceback.

    Messages from MLflow, numpy and pandas often quote the input they failed on; those quotes
    are cut out, keeping what was wrong (a shape, a type, a column name).
    """
    if any(marker in message for marker in _QUOTES_INPUT):
        quoted, _, message = message.rpartition("Error: ")
        if not any(marker in quoted for marker in _QUOTES_INPUT):
            message = "the input does not fit the model's signature"
    line = message.strip().splitlines()[0][: limit * 4] if message.strip() else "invalid input"
    for pattern, replacement in _QUOTES_VALUE:
        line = pattern.sub(replacement, line)
    return line if len(line) <= limit else line[: limit - 3] + "..."
