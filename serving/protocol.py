"""MLflow's scoring protocol: content types, the four JSON formats, CSV, Parquet, responses."""

import json
import re
from dataclasses import dataclass
from io import BytesIO, StringIO
from typing import Any

import numpy as np
import orjson
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.types import Schema

from serving import inputs
from serving.errors import BadRequest, InvalidInput, UnsupportedMediaType
from serving.inputs import Batch, InputSpec

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


def decode(
    body: bytes, content_type: str | None, spec: InputSpec | None, schema: Schema | None
) -> Decoded:
    """Read `body` by its content type; raise 415 or 400 naming what is wrong."""
    mime = _media_type(content_type)
    if mime == JSON:
        return _decode_json(body, spec, schema)
    if mime == CSV:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the CSV body is not valid UTF-8") from None
        frame = _read_table(lambda: _mlflow_csv(text, schema), "CSV with a header row")
    else:
        frame = _read_table(lambda: pd.read_parquet(BytesIO(body)), "Parquet")
    if spec is not None:
        return Decoded(batch=inputs.from_frame(spec, frame))
    return Decoded(data=_checked(frame, schema))


def encode(predictions: Any) -> bytes:
    """`{"predictions": ...}` as MLflow writes it (a DataFrame as records)."""
    if isinstance(predictions, pd.DataFrame):
        names = [str(c) for c in predictions.columns]
        columns = [column.tolist() for _, column in predictions.items()]
        body: Any = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
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


def _decode_json(body: bytes, spec: InputSpec | None, schema: Schema | None) -> Decoded:
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
    if spec is not None and (batch := _fast_batch(spec, key, value)) is not None:
        return Decoded(batch=batch, params=params)
    return Decoded(data=_checked(_mlflow_parse({key: value}, schema), schema), params=params)


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


def _fast_batch(spec: InputSpec, key: str, value: Any) -> Batch | None:
    """Validate a named-column request here; None for shapes left to MLflow's parser.

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
    if key == "dataframe_records":
        raise BadRequest("'dataframe_records' must be a list of objects of column -> value")
    if isinstance(value, dict):
        return inputs.from_columns(spec, value)
    return None


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
