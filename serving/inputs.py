"""Checking a request against a named-column signature, once, into a typed batch.

Values follow MLflow's coercion where it is lossless (an integer widens to a double, a whole
float such as 7.0 reads as an integer) and are rejected here, before the model, where MLflow
would coerce silently or pass garbage on: a null or NaN (except in an optional string or double
column), an infinity, a string in a number column (even "1.5"), a fraction in an integer column,
a number in a boolean or string column.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
from mlflow.types import ColSpec, Schema

from serving.errors import InvalidInput

_NUMPY_TYPES = {
    "double": np.float64,
    "float": np.float32,
    "long": np.int64,
    "integer": np.int32,
    "boolean": np.bool_,
    "string": np.object_,
}
FAST_TYPES = frozenset(_NUMPY_TYPES)


@dataclass(frozen=True, slots=True)
class Column:
    """One input column of the signature."""

    name: str
    type: str
    required: bool


@dataclass(frozen=True, slots=True)
class InputSpec:
    """A named-column signature compiled for validation."""

    columns: tuple[Column, ...]
    strict: bool = False

    @property
    def names(self) -> list[str]:
        """Column names in signature order."""
        return [c.name for c in self.columns]

    @property
    def all_double(self) -> bool:
        """Every column is a required double: requests can become one float matrix."""
        return all(c.type == "double" and c.required for c in self.columns)

    @classmethod
    def from_schema(cls, schema: Schema | None, *, strict: bool = False) -> "InputSpec | None":
        """The spec, or None when the signature is not one this fast path handles."""
        if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
            return None
        specs: list[ColSpec] = schema.inputs  # type: ignore[assignment]
        if any(str(getattr(s.type, "name", s.type)) not in FAST_TYPES for s in specs):
            return None
        return cls(
            tuple(Column(s.name, str(s.type.name), s.required) for s in specs),  # type: ignore[union-attr,arg-type]
            strict,
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """Validated input: one array per signature column (or one float matrix), plus extras."""

    names: list[str]
    rows: int
    matrix: np.ndarray | None = None
    arrays: tuple[np.ndarray, ...] = ()
    extra: tuple[str, ...] = ()

    def frame(self) -> pd.DataFrame:
        """The batch as a DataFrame with the signature's columns, in its order."""
        if self.matrix is not None:
            # an object Index: from a list, pandas builds (and models iterate) Arrow strings
            columns = pd.Index(self.names, dtype=object)
            return pd.DataFrame(self.matrix, columns=columns, copy=False)
        return pd.DataFrame(dict(zip(self.names, self.arrays, strict=True)), copy=False)

    def as_matrix(self) -> np.ndarray:
        """The batch as a 2-D array in signature column order."""
        if self.matrix is not None:
            return self.matrix
        return np.column_stack(self.arrays)


def from_rows(spec: InputSpec, columns: Sequence[Any], rows: Sequence[Any]) -> Batch:
    """`dataframe_split`: column names and row lists."""
    if not isinstance(columns, list):
        raise InvalidInput("'columns' must be a list of column names")
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise InvalidInput("'data' must be a list of rows, each a list of values")
    names = [str(c) for c in columns]
    return _from_rows(spec, names, rows, _extras(spec, names))


def from_records(spec: InputSpec, records: Sequence[Any]) -> Batch:
    """`dataframe_records`, or `instances`/`inputs` as a list of objects."""
    if not all(isinstance(r, dict) for r in records):
        raise InvalidInput("each record must be a JSON object of column -> value")
    seen: set[str] = set().union(*records) if records else set()
    _column_index(spec, list(seen))
    extra = _extras(spec, seen)
    names = [c.name for c in spec.columns if c.required or c.name in seen]
    if not all(c.required for c in spec.columns):
        # an optional column may be absent from some records: null there, as in MLflow
        return _from_rows(spec, names, [[r.get(n) for n in names] for r in records], extra)
    pick = itemgetter(*names)
    try:
        rows = [pick(r) for r in records] if len(names) > 1 else [(pick(r),) for r in records]
    except KeyError as missing:
        number = next(i for i, r in enumerate(records) if missing.args[0] not in r)
        raise InvalidInput(f"record {number} has no value for column '{missing.args[0]}'") from None
    return _from_rows(spec, names, rows, extra)


def from_columns(spec: InputSpec, columns: Mapping[str, Any]) -> Batch:
    """`inputs`/`instances` as an object of column -> list of values (or DataFrame columns)."""
    extra = _extras(spec, columns)
    _column_index(spec, list(columns))
    lengths = {
        len(v) if isinstance(v, (list, np.ndarray, pd.Series)) else -1 for v in columns.values()
    }
    if -1 in lengths or len(lengths) > 1:
        raise InvalidInput("every column must be a list of values, all of the same length")
    rows = lengths.pop() if lengths else 0
    present = [c for c in spec.columns if c.name in columns]
    arrays = tuple(_convert(c, columns[c.name]) for c in present)
    return Batch([c.name for c in present], rows, arrays=arrays, extra=extra)


def from_frame(spec: InputSpec, frame: pd.DataFrame) -> Batch:
    """A DataFrame read from CSV or Parquet."""
    return from_columns(spec, {str(c): frame[c].to_numpy() for c in frame.columns})


# -- helpers -------------------------------------------------------------------------------------


def _from_rows(
    spec: InputSpec, names: list[str], rows: Sequence[Sequence[Any]], extra: tuple[str, ...]
) -> Batch:
    """Rows of values under `names` (the request's columns) into a batch in signature order."""
    index = _column_index(spec, names)
    if spec.all_double and rows and (matrix := _double_matrix(rows, len(names))) is not None:
        if names != spec.names:
            matrix = np.ascontiguousarray(matrix[:, [index[c.name] for c in spec.columns]])
        return Batch(spec.names, len(rows), matrix=matrix, extra=extra)
    for number, row in enumerate(rows):
        if len(row) != len(names):
            raise InvalidInput(f"row {number} has {len(row)} values for {len(names)} columns")
    present = [c for c in spec.columns if c.name in index]
    arrays = tuple(_convert(c, [row[index[c.name]] for row in rows]) for c in present)
    return Batch([c.name for c in present], len(rows), arrays=arrays, extra=extra)


def _column_index(spec: InputSpec, names: Sequence[str]) -> dict[str, int]:
    index = {name: i for i, name in enumerate(names)}
    missing = [c.name for c in spec.columns if c.required and c.name not in index]
    if missing:
        shown = ", ".join(f"'{m}'" for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InvalidInput(f"missing required column(s) {shown} ({len(missing)} in all)")
    return index


def _extras(spec: InputSpec, names: Any) -> tuple[str, ...]:
    known = set(spec.names)
    extra = tuple(sorted(str(n) for n in names if n not in known))
    if extra and spec.strict:
        raise InvalidInput(f"unexpected column(s) {', '.join(extra[:5])}: this model is strict")
    return extra


def _double_matrix(rows: Sequence[Sequence[Any]], width: int) -> np.ndarray | None:
    """Rows of finite numbers as one float64 matrix; None when any value needs a closer look.

    numpy infers the element type in C: a string, null or nested value anywhere makes the
    array text, object or the wrong shape, and the caller then checks column by column.
    """
    try:
        matrix = np.array(rows)
    except (ValueError, TypeError):  # ragged rows
        return None
    if matrix.ndim != 2 or matrix.shape[1] != width or matrix.dtype.kind not in _NUMBERS:
        return None
    matrix = matrix.astype(np.float64, copy=False)
    return matrix if np.isfinite(matrix).all() else None


_NUMBERS = "fiub"
"""numpy kinds a double column accepts as MLflow does (booleans read as 0 and 1)."""
_NULLABLE = frozenset(("string", "double", "float"))
"""Types whose optional columns may hold nulls (None, NaN), as MLflow's casts let them through.

MLflow refuses a null in a long or integer column and turns one in a boolean column into False;
both are refused here, optional or not."""
_INTEGER_RANGES = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}


def _convert(column: Column, values: Any) -> np.ndarray:
    """One column's values as its numpy type, or InvalidInput naming column and row."""
    kind = column.type
    array = _numeric(kind, values)
    if array is not None:
        return array
    raw = values.tolist() if isinstance(values, (np.ndarray, pd.Series)) else list(values)
    nullable = not column.required and kind in _NULLABLE
    for number, value in enumerate(raw):
        if nullable and _is_null(value):
            continue
        problem = _problem(kind, value)
        if problem:
            raise InvalidInput(f"column '{column.name}' row {number}: {problem} ({kind} expected)")
    if kind in _INTEGER_RANGES:
        raw = [int(v) for v in raw]  # whole numbers, some written as floats: checked above
    elif nullable and kind == "string":
        raw = [None if _is_null(v) else v for v in raw]
    return np.asarray(raw, dtype=_NUMPY_TYPES[kind])


def _numeric(kind: str, values: Any) -> np.ndarray | None:
    """The column as a checked numpy array without a Python loop; None to check value by value."""
    if kind == "string":
        return None
    if isinstance(values, pd.Series):
        values = values.to_numpy()
    try:
        array = values if isinstance(values, np.ndarray) else np.array(values)
    except (ValueError, TypeError):
        return None
    if array.ndim != 1:
        return None
    dtype = _NUMPY_TYPES[kind]
    if kind == "boolean":
        return array if array.dtype.kind == "b" else None
    if kind in ("double", "float"):
        if array.dtype.kind not in _NUMBERS or not np.isfinite(array).all():
            return None
        return array.astype(dtype, copy=False)
    if not isinstance(values, np.ndarray):
        return None  # JSON lists: value by value, so that true and false are not read as 1 and 0
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.trunc(array)).all():
        low, high = _INTEGER_RANGES[kind]
        if array.size == 0 or (array.min() >= low and array.max() <= high):
            return array.astype(dtype)
        return None
    if array.dtype.kind in "iu":
        low, high = _INTEGER_RANGES[kind]
        if array.size == 0 or (array.min() >= low and array.max() <= high):
            return array.astype(dtype, copy=False)
    return None


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _problem(kind: str, value: Any) -> str | None:
    if value is None or (kind in ("string", "boolean") and _is_null(value)):
        return "null value"  # NaN: an empty CSV field, a null in Parquet
    if kind in ("double", "float"):
        if isinstance(value, str) or not isinstance(value, (int, float)):
            return f"not a number: {type(value).__name__}"
        if value != value or value in (float("inf"), float("-inf")):
            return "NaN or infinite value"
        return None
    if kind in _INTEGER_RANGES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "not an integer"
        if isinstance(value, float) and not math.isfinite(value):
            return "NaN or infinite value"
        if isinstance(value, float) and not value.is_integer():
            return "not an integer (a fraction would be cut off)"
        low, high = _INTEGER_RANGES[kind]
        return None if low <= value <= high else "integer out of range"
    if kind == "boolean":
        return None if isinstance(value, bool) else "not a boolean"
    return None if isinstance(value, str) else "not a string"
