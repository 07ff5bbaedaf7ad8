"""Checking a request against a named-column signature, once, into a typed batch.

Values follow MLflow's coercion (numbers widen to the column's type) with one deliberate
difference: a null, NaN or infinite value in a column is rejected here, before the model.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
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
            return pd.DataFrame(self.matrix, columns=self.names, copy=False)
        return pd.DataFrame(dict(zip(self.names, self.arrays, strict=True)), copy=False)

    def as_matrix(self) -> np.ndarray:
        """The batch as a 2-D array in signature column order."""
        if self.matrix is not None:
            return self.matrix
        return np.column_stack(self.arrays)


def from_rows(spec: InputSpec, columns: Sequence[Any], rows: Sequence[Any]) -> Batch:
    """`dataframe_split`: column names and row lists."""
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise InvalidInput("'data' must be a list of rows, each a list of values")
    names = [str(c) for c in columns]
    width = len(names)
    for number, row in enumerate(rows):
        if len(row) != width:
            raise InvalidInput(f"row {number} has {len(row)} values for {width} columns")
    index = _column_index(spec, names)
    extra = _extras(spec, names)
    if spec.all_double and rows:
        matrix = _floats(rows, lambda: _first_bad_row(rows, index, spec))
        if names != spec.names:
            matrix = matrix[:, [index[c.name] for c in spec.columns]]
        return Batch(spec.names, len(rows), matrix=np.ascontiguousarray(matrix), extra=extra)
    arrays = tuple(_convert(c, [row[index[c.name]] for row in rows]) for c in spec.columns)
    return Batch(spec.names, len(rows), arrays=arrays, extra=extra)


def from_records(spec: InputSpec, records: Sequence[Any]) -> Batch:
    """`dataframe_records`, or `instances`/`inputs` as a list of objects."""
    if not all(isinstance(r, dict) for r in records):
        raise InvalidInput("each record must be a JSON object of column -> value")
    seen: set[str] = set().union(*records) if records else set()
    _column_index(spec, list(seen))
    extra = _extras(spec, seen)
    try:
        rows = [[r[name] for name in spec.names] for r in records]
    except KeyError as missing:
        number = next(i for i, r in enumerate(records) if missing.args[0] not in r)
        raise InvalidInput(f"record {number} has no value for column '{missing.args[0]}'") from None
    return replace(from_rows(spec, spec.names, rows), extra=extra)


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
    arrays = tuple(_convert(c, columns[c.name]) for c in spec.columns)
    return Batch(spec.names, rows, arrays=arrays, extra=extra)


def from_frame(spec: InputSpec, frame: pd.DataFrame) -> Batch:
    """A DataFrame read from CSV or Parquet."""
    return from_columns(spec, {str(c): frame[c].to_numpy() for c in frame.columns})


# -- helpers -------------------------------------------------------------------------------------


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


def _floats(rows: Sequence[Any], locate: Any) -> np.ndarray:
    try:
        matrix = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(locate()) from None
    if not np.isfinite(matrix).all():
        raise InvalidInput(locate())
    return matrix


def _first_bad_row(rows: Sequence[Any], index: dict[str, int], spec: InputSpec) -> str:
    for column in spec.columns:
        values = [row[index[column.name]] for row in rows]
        try:
            _convert(column, values)
        except InvalidInput as problem:
            return str(problem)
    return "a value could not be read as a number"  # an extra column, unconvertible


def _convert(column: Column, values: Any) -> np.ndarray:
    """One column's values as its numpy type, or InvalidInput naming column and row."""
    kind = column.type
    raw = values.tolist() if isinstance(values, (np.ndarray, pd.Series)) else list(values)
    for number, value in enumerate(raw):
        problem = _problem(kind, value)
        if problem:
            raise InvalidInput(f"column '{column.name}' row {number}: {problem} ({kind} expected)")
    return np.asarray(raw, dtype=_NUMPY_TYPES[kind])


def _problem(kind: str, value: Any) -> str | None:
    if value is None:
        return "null value"
    if kind in ("double", "float"):
        if isinstance(value, str) or not isinstance(value, (int, float)):
            return f"not a number: {type(value).__name__}"
        if value != value or value in (float("inf"), float("-inf")):
            return "NaN or infinite value"
        return None
    if kind in ("long", "integer"):
        return None if isinstance(value, int) and not isinstance(value, bool) else "not an integer"
    if kind == "boolean":
        return None if isinstance(value, bool) else "not a boolean"
    return None if isinstance(value, str) else "not a string"
