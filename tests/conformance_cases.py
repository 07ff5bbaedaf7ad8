"""The conformance corpus: requests sent alike to `mlflow models serve` and to modelyard.

Each case names the model it targets and builds its body from `Inputs`, the request data of
that model. Bodies carry a distinctive value (`MARKERS`) so a test can check that no error
message echoes the payload.
"""

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

Model = Literal["classifier", "tensor", "mixed"]

JSON, CSV, PARQUET = "application/json", "text/csv", "application/vnd.apache.parquet"

MARKERS: dict[Model, str] = {
    "classifier": "17.0625",
    "tensor": "0.8125",
    "mixed": "zq-payload-name",
}
"""A value placed in every body of a model, distinctive enough to spot in an error message
(exact in binary, so numpy and pandas print it in full when they quote the input)."""

TENSOR_WIDTH = 4
"""Columns of the tensor model's input: a float64 tensor of shape (-1, 4)."""

MIXED_MODEL_SOURCE = '''\
"""Named columns of every scalar type, optional ones too, and a `scale` param.

It answers with what it was given, so that both servers must hand it the same values: missing
ones (NaN to the model) are counted, and a string without a length is -1.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class MixedModel(PythonModel):
    def predict(self, context, model_input, params=None):
        if (model_input["name"] == "explode").any():
            raise RuntimeError("sentinel reached: internal state at /srv/models/secret-path")
        scale = float((params or {}).get("scale", 1.0))

        def column(name):
            if name in model_input.columns:
                return model_input[name]
            return pd.Series([None] * len(model_input), index=model_input.index, dtype=object)

        def lengths(values):
            return values.map(lambda v: len(v) if isinstance(v, str) else -1).astype("int64")

        return pd.DataFrame(
            {
                "id": model_input["id"].to_numpy(dtype="int64"),
                "value": model_input["score"].to_numpy(dtype="float64") * scale
                + model_input["flag"].to_numpy(dtype="float64"),
                "name_length": lengths(model_input["name"]).to_numpy(),
                "note_length": lengths(column("note")).to_numpy(),
                "weight": column("weight").astype("float64").to_numpy(),
                "count": column("count").fillna(-1).astype("int64").to_numpy(),
                "missing": model_input.isna().sum(axis=1).astype("int64").to_numpy(),
            }
        )


mlflow.models.set_model(MixedModel())
'''
"""Logged as an MLflow model from code; `name == "explode"` makes it raise on valid input."""

MIXED_SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("long", "id"),
            ColSpec("string", "name"),
            ColSpec("boolean", "flag"),
            ColSpec("double", "score"),
            ColSpec("string", "note", required=False),
            ColSpec("float", "weight", required=False),
            ColSpec("integer", "count", required=False),
        ]
    ),
    outputs=Schema(
        [
            ColSpec("long", "id"),
            ColSpec("double", "value"),
            ColSpec("long", "name_length"),
            ColSpec("long", "note_length"),
            ColSpec("double", "weight"),
            ColSpec("long", "count"),
            ColSpec("long", "missing"),
        ]
    ),
    params=ParamSchema([ParamSpec("scale", "double", 1.0)]),
)
"""The mixed model's signature: one column of each scalar type MLflow enforces."""


@dataclass(frozen=True)
class Inputs:
    """Valid request data for each model; cases derive their bodies from it."""

    classifier: pd.DataFrame
    tensor: np.ndarray
    mixed: pd.DataFrame


def build_inputs(classifier_holdout: pd.DataFrame) -> Inputs:
    """Three rows per model, each holding its model's marker value."""
    classifier = classifier_holdout.head(3).copy()
    classifier.iloc[0, 0] = float(MARKERS["classifier"])
    tensor = np.array(
        [
            [float(MARKERS["tensor"]), 1.5, -0.25, 3.0],
            [0.1, -2.0, 0.75, 1.0],
            [2.5, 0.0, -1.25, -0.5],
        ]
    )
    mixed = pd.DataFrame(
        {
            "id": np.array([1, 2, 3], dtype="int64"),
            "name": [MARKERS["mixed"], "beta", "gamma delta"],
            "flag": [True, False, True],
            "score": [0.5, -1.25, 1e-3],
            "note": ["a", "bb", "ccc"],
            "weight": np.array([0.25, 1.5, -2.0], dtype="float32"),
            "count": np.array([10, 20, 30], dtype="int32"),
        }
    )
    return Inputs(classifier, tensor, mixed)


@dataclass(frozen=True)
class Case:
    """One request: the model it targets, how to build its body, and its content type."""

    id: str
    model: Model
    body: Callable[[Inputs], bytes]
    content_type: str | None = JSON


# -- body builders ---------------------------------------------------------------------------


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


def _frame(inputs: Inputs, model: Model) -> pd.DataFrame:
    if model == "tensor":
        return pd.DataFrame(inputs.tensor, columns=[str(i) for i in range(TENSOR_WIDTH)])
    return inputs.classifier if model == "classifier" else inputs.mixed


def _split(frame: pd.DataFrame) -> dict[str, Any]:
    return {"columns": [str(c) for c in frame.columns], "data": frame.values.tolist()}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    names = [str(c) for c in frame.columns]
    return [dict(zip(names, row, strict=True)) for row in frame.values.tolist()]


def _columnar(frame: pd.DataFrame) -> dict[str, list[Any]]:
    return {str(c): frame[c].tolist() for c in frame.columns}


def fmt(key: str, shape: str, model: Model, **extra: Any) -> Callable[[Inputs], bytes]:
    """A JSON body `{key: <the model's valid data in shape>, **extra}`."""

    def build(inputs: Inputs) -> bytes:
        frame = _frame(inputs, model)
        value: Any
        if shape == "split":
            value = _split(frame)
        elif shape == "records":
            value = _records(frame)
        elif shape == "columnar":
            value = _columnar(frame)
        else:
            value = inputs.tensor.tolist()
        return _json({key: value, **extra})

    return build


def split_with(model: Model, change: Callable[[dict[str, Any]], Any]) -> Callable[[Inputs], bytes]:
    """A `dataframe_split` body of the model's valid data, edited by `change`."""

    def build(inputs: Inputs) -> bytes:
        split = _split(_frame(inputs, model))
        change(split)
        return _json({"dataframe_split": split})

    return build


def set_value(column: str, value: Any, row: int = 1) -> Callable[[dict[str, Any]], None]:
    """Set one cell of a split body."""

    def change(split: dict[str, Any]) -> None:
        split["data"][row][split["columns"].index(column)] = value

    return change


def drop_column(column: str) -> Callable[[dict[str, Any]], None]:
    """Remove one column of a split body."""

    def change(split: dict[str, Any]) -> None:
        at = split["columns"].index(column)
        del split["columns"][at]
        for row in split["data"]:
            del row[at]

    return change


def raw(text: str) -> Callable[[Inputs], bytes]:
    """A fixed body."""
    return lambda inputs: text.encode()


def tensor_json(key: str, rows: Any) -> Callable[[Inputs], bytes]:
    """`{key: rows}` for the tensor model, given literally."""
    return lambda inputs: _json({key: rows})


def csv_of(
    model: Model, edit: Callable[[pd.DataFrame], pd.DataFrame] | None = None
) -> Callable[[Inputs], bytes]:
    """The model's valid data as CSV with a header row (optionally edited first)."""

    def build(inputs: Inputs) -> bytes:
        frame = _frame(inputs, model)
        text: str = (edit(frame) if edit else frame).to_csv(index=False)
        return text.encode()

    return build


def parquet_of(
    model: Model, edit: Callable[[pd.DataFrame], pd.DataFrame] | None = None
) -> Callable[[Inputs], bytes]:
    """The model's valid data as Parquet (optionally edited first)."""

    def build(inputs: Inputs) -> bytes:
        frame = _frame(inputs, model)
        buffer = io.BytesIO()
        (edit(frame) if edit else frame).to_parquet(buffer, index=False)
        return buffer.getvalue()

    return build


def _non_json(model: Model, column: str, value: float) -> Callable[[Inputs], bytes]:
    """A split body with a bare `NaN` or `Infinity` token, as Python's json module (and so
    `requests.post(json=...)`) writes float("nan") and float("inf"); JSON has neither."""

    def build(inputs: Inputs) -> bytes:
        split = _split(_frame(inputs, model))
        split["data"][1][split["columns"].index(column)] = value
        return json.dumps({"dataframe_split": split}).encode()

    return build


def _reverse(split: dict[str, Any]) -> None:
    split["columns"].reverse()
    for row in split["data"]:
        row.reverse()


def _add_column(split: dict[str, Any], name: str, value: Any) -> None:
    split["columns"].append(name)
    for row in split["data"]:
        row.append(value)


def _records_without(
    model: Model, column: str, only: int | None = None
) -> Callable[[Inputs], bytes]:
    def build(inputs: Inputs) -> bytes:
        records = _records(_frame(inputs, model))
        for record in records if only is None else records[only : only + 1]:
            del record[column]
        return _json({"dataframe_records": records})

    return build


def _records_edited(model: Model, column: str, value: Any) -> Callable[[Inputs], bytes]:
    def build(inputs: Inputs) -> bytes:
        records = _records(_frame(inputs, model))
        records[1][column] = value
        return _json({"dataframe_records": records})

    return build


def _columnar_edited(model: Model, column: str, value: Any) -> Callable[[Inputs], bytes]:
    def build(inputs: Inputs) -> bytes:
        columns = _columnar(_frame(inputs, model))
        columns[column][1] = value
        return _json({"inputs": columns})

    return build


def _no_rows(key: str, model: Model) -> Callable[[Inputs], bytes]:
    """`{key: {column: [] ...}}`: every column of the model, no rows."""
    return lambda inputs: _json({key: {str(c): [] for c in _frame(inputs, model).columns}})


def _columnar_without(model: Model, column: str) -> Callable[[Inputs], bytes]:
    def build(inputs: Inputs) -> bytes:
        columns = _columnar(_frame(inputs, model))
        del columns[column]
        return _json({"inputs": columns})

    return build


def _blank(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    edited = frame.astype({column: "object"})
    edited.loc[edited.index[1], column] = None
    return edited


def _text(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    edited = frame.astype({column: "object"})
    edited.loc[edited.index[1], column] = "zq-not-a-number"
    return edited


# -- the corpus ------------------------------------------------------------------------------

_C: Model = "classifier"
_T: Model = "tensor"
_M: Model = "mixed"
_PARAMS = {"params": {"scale": 2.0}}
_AREA = "mean_area"

CASES: list[Case] = [
    # named columns, all double: every format, with and without params
    Case("split-valid-columns", _C, fmt("dataframe_split", "split", _C)),
    Case("split-params-columns", _C, fmt("dataframe_split", "split", _C, **_PARAMS)),
    Case("records-valid-columns", _C, fmt("dataframe_records", "records", _C)),
    Case("records-params-columns", _C, fmt("dataframe_records", "records", _C, **_PARAMS)),
    Case("instances-records-columns", _C, fmt("instances", "records", _C)),
    Case("instances-columnar-columns", _C, fmt("instances", "columnar", _C)),
    Case("instances-params-columns", _C, fmt("instances", "records", _C, **_PARAMS)),
    Case("inputs-records-columns", _C, fmt("inputs", "records", _C)),
    Case("inputs-columnar-columns", _C, fmt("inputs", "columnar", _C)),
    Case("inputs-params-columns", _C, fmt("inputs", "columnar", _C, **_PARAMS)),
    Case("csv-valid-columns", _C, csv_of(_C), CSV),
    Case("parquet-valid-columns", _C, parquet_of(_C), PARQUET),
    Case(
        "json-utf8-charset-columns",
        _C,
        fmt("dataframe_split", "split", _C),
        f"{JSON}; charset=UTF-8",
    ),
    Case("split-reordered-columns", _C, split_with(_C, lambda s: _reverse(s))),
    Case(
        "split-extra-column-columns", _C, split_with(_C, lambda s: _add_column(s, "customer_id", 7))
    ),
    Case(
        "split-extra-text-column-columns",
        _C,
        split_with(_C, lambda s: _add_column(s, "customer", "zq-customer")),
    ),
    Case("split-with-index-columns", _C, split_with(_C, lambda s: s.update(index=[10, 11, 12]))),
    Case("split-ignored-top-key-columns", _C, fmt("dataframe_split", "split", _C, extra_key=1)),
    Case("csv-reordered-columns", _C, csv_of(_C, lambda f: f[f.columns[::-1]]), CSV),
    Case("split-integer-values-columns", _C, split_with(_C, set_value(_AREA, 500))),
    # named columns: each class of error
    Case("malformed-json-columns", _C, raw('{"dataframe_split": {"columns": ["17.0625"]')),
    Case("not-an-object-columns", _C, raw("[[17.0625, 1.0]]")),
    Case("unknown-format-key-columns", _C, fmt("data", "split", _C)),
    Case("two-format-keys-columns", _C, fmt("dataframe_split", "split", _C, inputs=[[1.0]])),
    Case("no-format-key-columns", _C, raw('{"params": {"17.0625": 1}}')),
    Case("split-missing-column-columns", _C, split_with(_C, drop_column(_AREA))),
    Case("records-missing-column-columns", _C, _records_without(_C, _AREA)),
    Case("inputs-missing-column-columns", _C, _columnar_without(_C, _AREA)),
    Case("csv-missing-column-columns", _C, csv_of(_C, lambda f: f.drop(columns=_AREA)), CSV),
    Case(
        "parquet-missing-column-columns",
        _C,
        parquet_of(_C, lambda f: f.drop(columns=_AREA)),
        PARQUET,
    ),
    Case("split-no-columns-key-columns", _C, split_with(_C, lambda s: s.pop("columns"))),
    Case("split-unknown-key-columns", _C, split_with(_C, lambda s: s.update(orient="split"))),
    Case("split-not-object-columns", _C, raw('{"dataframe_split": [[17.0625]]}')),
    Case("split-ragged-row-columns", _C, split_with(_C, lambda s: s["data"][1].pop())),
    Case("records-not-list-columns", _C, fmt("dataframe_records", "columnar", _C)),
    Case("split-string-value-columns", _C, split_with(_C, set_value(_AREA, "zq-not-a-number"))),
    Case("split-numeric-string-columns", _C, split_with(_C, set_value(_AREA, "1001.5"))),
    # a null reaches this model as NaN, as in MLflow; its LogisticRegression raises on NaN (the
    # other formats' nulls are in the mixed model's cases below, which takes missing values)
    Case("split-null-value-columns", _C, split_with(_C, set_value(_AREA, None))),
    Case("split-boolean-value-columns", _C, split_with(_C, set_value(_AREA, True))),
    Case("split-nested-value-columns", _C, split_with(_C, set_value(_AREA, [1.0]))),
    Case("csv-text-field-columns", _C, csv_of(_C, lambda f: _text(f, _AREA)), CSV),
    Case("split-zero-rows-columns", _C, split_with(_C, lambda s: s.update(data=[]))),
    Case("params-not-object-columns", _C, fmt("dataframe_split", "split", _C, params=[1, 2])),
    # content types and bodies
    Case("content-type-text-plain-columns", _C, csv_of(_C), "text/plain"),
    Case(
        "content-type-uppercase-columns",
        _C,
        fmt("dataframe_split", "split", _C),
        "Application/JSON",
    ),
    Case(
        "charset-latin1-columns",
        _C,
        fmt("dataframe_split", "split", _C),
        f"{JSON}; charset=latin-1",
    ),
    Case("charset-latin1-csv-columns", _C, csv_of(_C), f"{CSV}; charset=latin-1"),
    Case(
        "content-type-parameter-columns",
        _C,
        fmt("dataframe_split", "split", _C),
        f"{JSON}; format=pandas-split",
    ),
    Case("no-content-type-columns", _C, fmt("dataframe_split", "split", _C), None),
    Case("empty-body-json-columns", _C, raw(""), JSON),
    Case("empty-body-csv-columns", _C, raw(""), CSV),
    Case("empty-body-parquet-columns", _C, raw(""), PARQUET),
    Case("corrupt-parquet-columns", _C, raw("PAR1 17.0625 not parquet"), PARQUET),
    Case("invalid-utf8-json-columns", _C, lambda i: b'{"dataframe_split": "\xff\xfe"}'),
    # LLM inputs
    Case(
        "chat-messages-columns",
        _C,
        raw('{"messages": [{"role": "user", "content": "17.0625"}]}'),
    ),
    Case("chat-prompt-columns", _C, raw('{"prompt": "17.0625"}')),
    Case("chat-prompt-with-format-columns", _C, fmt("dataframe_split", "split", _C, prompt="hi")),
    Case(
        "embeddings-input-with-format-columns", _C, fmt("dataframe_split", "split", _C, input="hi")
    ),
    # tensor signature
    Case("instances-valid-tensor", _T, fmt("instances", "tensor", _T)),
    Case("inputs-valid-tensor", _T, fmt("inputs", "tensor", _T)),
    Case("inputs-params-tensor", _T, fmt("inputs", "tensor", _T, **_PARAMS)),
    Case("instances-params-tensor", _T, fmt("instances", "tensor", _T, **_PARAMS)),
    Case("split-valid-tensor", _T, fmt("dataframe_split", "split", _T)),
    Case("split-params-tensor", _T, fmt("dataframe_split", "split", _T, **_PARAMS)),
    Case("records-valid-tensor", _T, fmt("dataframe_records", "records", _T)),
    Case("csv-valid-tensor", _T, csv_of(_T), CSV),
    Case("parquet-valid-tensor", _T, parquet_of(_T), PARQUET),
    Case("inputs-integers-tensor", _T, tensor_json("inputs", [[1, 2, 3, 4]])),
    Case("inputs-wrong-width-tensor", _T, tensor_json("inputs", [[0.8125, 2.0, 3.0]])),
    Case("inputs-wrong-rank-tensor", _T, tensor_json("inputs", [0.8125, 2.0, 3.0, 4.0])),
    Case("inputs-ragged-tensor", _T, tensor_json("inputs", [[0.8125, 2, 3, 4], [1, 2]])),
    Case("inputs-string-value-tensor", _T, tensor_json("inputs", [[0.8125, "zq", 3, 4]])),
    Case("inputs-null-value-tensor", _T, tensor_json("inputs", [[0.8125, None, 3, 4]])),
    Case("instances-nan-literal-tensor", _T, raw('{"instances": [[0.8125, NaN, 3, 4]]}')),
    Case("instances-infinity-literal-tensor", _T, raw('{"instances": [[0.8125, Infinity, 3, 4]]}')),
    Case("split-null-value-tensor", _T, split_with(_T, set_value("2", None))),
    Case("csv-empty-field-tensor", _T, csv_of(_T, lambda f: _blank(f, "2")), CSV),
    Case("inputs-named-object-tensor", _T, tensor_json("inputs", {"a": [1.0, 2.0]})),
    Case("malformed-json-tensor", _T, raw('{"inputs": [[0.8125, 2.0')),
    Case("no-content-type-tensor", _T, fmt("inputs", "tensor", _T), None),
    Case("chat-messages-tensor", _T, raw('{"messages": [{"role": "user", "content": "hi"}]}')),
    # mixed types: long, string, boolean, double, and a params schema
    Case("split-valid-mixed", _M, fmt("dataframe_split", "split", _M)),
    Case("split-params-mixed", _M, fmt("dataframe_split", "split", _M, **_PARAMS)),
    Case("records-valid-mixed", _M, fmt("dataframe_records", "records", _M)),
    Case("records-params-mixed", _M, fmt("dataframe_records", "records", _M, **_PARAMS)),
    Case("instances-records-mixed", _M, fmt("instances", "records", _M)),
    Case("inputs-columnar-mixed", _M, fmt("inputs", "columnar", _M)),
    Case("inputs-params-mixed", _M, fmt("inputs", "columnar", _M, **_PARAMS)),
    Case("csv-valid-mixed", _M, csv_of(_M), CSV),
    Case("parquet-valid-mixed", _M, parquet_of(_M), PARQUET),
    Case("params-numeric-string-mixed", _M, fmt("inputs", "columnar", _M, params={"scale": "2"})),
    Case("params-wrong-type-mixed", _M, fmt("inputs", "columnar", _M, params={"scale": "zq-big"})),
    Case("params-unknown-name-mixed", _M, fmt("inputs", "columnar", _M, params={"other": 1})),
    # mixed types: how each column type reads each kind of value
    Case("split-integral-float-long-mixed", _M, split_with(_M, set_value("id", 7.0))),
    Case("split-fractional-long-mixed", _M, split_with(_M, set_value("id", 7.5))),
    Case("split-numeric-string-long-mixed", _M, split_with(_M, set_value("id", "7"))),
    Case("split-fractional-string-long-mixed", _M, split_with(_M, set_value("id", "7.5"))),
    Case("split-boolean-long-mixed", _M, split_with(_M, set_value("id", True))),
    Case("split-long-overflow-mixed", _M, split_with(_M, set_value("id", 2**70))),
    Case("split-integer-overflow-mixed", _M, split_with(_M, set_value("count", 2**40))),
    Case("split-numeric-string-integer-mixed", _M, split_with(_M, set_value("count", "-4"))),
    Case("split-integer-double-mixed", _M, split_with(_M, set_value("score", 3))),
    Case("split-numeric-string-double-mixed", _M, split_with(_M, set_value("score", "2.5"))),
    Case("split-numeric-string-float-mixed", _M, split_with(_M, set_value("weight", "0.75"))),
    Case("split-string-double-mixed", _M, split_with(_M, set_value("score", "zq-not-a-number"))),
    Case("split-infinity-literal-mixed", _M, _non_json(_M, "score", float("inf"))),
    Case("split-integer-boolean-mixed", _M, split_with(_M, set_value("flag", 1))),
    Case("split-zero-boolean-mixed", _M, split_with(_M, set_value("flag", 0))),
    Case("split-two-boolean-mixed", _M, split_with(_M, set_value("flag", 2))),
    Case("split-string-boolean-mixed", _M, split_with(_M, set_value("flag", "false"))),
    Case("split-number-string-mixed", _M, split_with(_M, set_value("name", 5))),
    # missing values: NaN to the model where the column's type has one (double, float, string)
    Case("split-null-double-mixed", _M, split_with(_M, set_value("score", None))),
    Case("split-nan-literal-mixed", _M, _non_json(_M, "score", float("nan"))),
    Case("records-null-double-mixed", _M, _records_edited(_M, "score", None)),
    Case("records-missing-key-mixed", _M, _records_without(_M, "score", only=1)),
    Case("inputs-null-double-mixed", _M, _columnar_edited(_M, "score", None)),
    Case("csv-empty-field-mixed", _M, csv_of(_M, lambda f: _blank(f, "score")), CSV),
    Case("parquet-null-double-mixed", _M, parquet_of(_M, lambda f: _blank(f, "score")), PARQUET),
    Case("split-null-float-mixed", _M, split_with(_M, set_value("weight", None))),
    Case("split-null-string-mixed", _M, split_with(_M, set_value("name", None))),
    Case("records-null-string-mixed", _M, _records_edited(_M, "name", None)),
    Case("inputs-null-string-mixed", _M, _columnar_edited(_M, "name", None)),
    Case("split-optional-null-mixed", _M, split_with(_M, set_value("note", None))),
    Case("csv-optional-empty-mixed", _M, csv_of(_M, lambda f: _blank(f, "note")), CSV),
    Case("split-null-long-mixed", _M, split_with(_M, set_value("id", None))),
    Case("records-missing-long-mixed", _M, _records_without(_M, "id", only=1)),
    Case("split-null-integer-mixed", _M, split_with(_M, set_value("count", None))),
    Case("split-null-boolean-mixed", _M, split_with(_M, set_value("flag", None))),
    # columns: missing, optional ones left out
    Case("split-missing-column-mixed", _M, split_with(_M, drop_column("flag"))),
    Case("split-optional-omitted-mixed", _M, split_with(_M, drop_column("note"))),
    Case("records-optional-partial-mixed", _M, _records_without(_M, "note", only=1)),
    # the model failing, and zero rows
    Case("split-model-raises-mixed", _M, split_with(_M, set_value("name", "explode"))),
    Case("split-zero-rows-mixed", _M, split_with(_M, lambda s: s.update(data=[]))),
    Case("inputs-zero-rows-mixed", _M, _no_rows("inputs", _M)),
    Case("records-zero-rows-mixed", _M, raw('{"dataframe_records": []}')),
]
