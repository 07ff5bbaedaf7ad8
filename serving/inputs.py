"""Checking a request against a named-column signature, once, into a typed batch.

Values are read as MLflow 3's scoring server reads them wherever that keeps their meaning:

| column type   | accepted                                                                        |
| ------------- | ------------------------------------------------------------------------------- |
| double, float | numbers, true/false (1.0/0.0), numeric strings ("1.5"), null or NaN (missing)   |
| long, integer | whole numbers (7 or 7.0), true/false (1/0), integer strings ("7")               |
| boolean       | true/false, and the numbers 0 and 1                                             |
| string        | strings, null or NaN (missing)                                                  |

Missing values reach the model as NaN, as in MLflow, whether the column is required or
optional (in MLflow "required" means the column must be present, not its every value).
Refused here, before the model, with 400 naming column and row: what MLflow refuses too (a
null, "1.5" or "abc" in a long or integer column, text that is no number in a double column)
and what it would change silently or pass on as garbage: an infinity, a fraction in an integer
column (MLflow truncates 7.5 to 7), an integer out of the column's range (MLflow wraps an
int32), a null, a string or another number in a boolean column (MLflow's cast reads null as
False, NaN and "false" as True), a non-string in a string column.

The common case, every column a double, becomes one float64 matrix in numpy's C loop (nulls
and numeric strings included); other columns are converted column by column, vectorised where
the values allow it. Value by value only where strings or nulls make it necessary, and to find
the row an error message names.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
from mlflow.types import Schema

from registry.contract import Column, columns_of
from serving.errors import BadRequest, InvalidInput
from serving.limits import shown

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
class InputSpec:
    """A named-column signature compiled for validation."""

    columns: tuple[Column, ...]
    strict: bool = False
    names: list[str] = field(init=False, compare=False, repr=False)
    """Column names in signature order (computed once: every request reads them)."""
    known: frozenset[str] = field(init=False, compare=False, repr=False)
    """The column names, as a set."""
    all_double: bool = field(init=False, compare=False, repr=False)
    """Every column is a required double: requests can become one float matrix."""

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "known", frozenset(names))
        double = all(c.type == "double" and c.required for c in self.columns)
        object.__setattr__(self, "all_double", double)

    @classmethod
    def from_schema(cls, schema: Schema | None, *, strict: bool = False) -> "InputSpec | None":
        """The spec, or None when the signature is not one this fast path handles."""
        if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
            return None
        columns = columns_of(schema) or ()
        if any(not c.name or c.type not in FAST_TYPES for c in columns):
            return None
        return cls(columns, strict)


@dataclass(frozen=True, slots=True)
class Batch:
    """Validated input: one array per signature column (or one float matrix), plus extras."""

    names: list[str]
    rows: int
    matrix: np.ndarray | None = None
    arrays: tuple[np.ndarray, ...] = ()
    extra: tuple[str, ...] = ()

    @property
    def layout(self) -> tuple[Any, ...]:
        """Batches with equal layouts concatenate row-wise: their names, and one float matrix
        or the dtypes of their arrays."""
        kinds = "matrix" if self.matrix is not None else tuple(a.dtype.str for a in self.arrays)
        return (tuple(self.names), kinds)

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

    def first_missing(self) -> tuple[str, int] | None:
        """The column and row of the first missing value (a null or NaN), if any."""
        if self.matrix is not None:
            found = np.isnan(self.matrix)
            if not found.any():
                return None
            row, column = np.argwhere(found)[0]
            return self.names[column], int(row)
        for name, array in zip(self.names, self.arrays, strict=True):
            if array.dtype.kind in "fO" and (found := pd.isna(array)).any():
                return name, int(np.argmax(found))
        return None

    def with_missing(self) -> "Batch | None":
        """This batch with a missing value in its first row, in every column that may hold one
        (double, float, string); None when it has no such column or no row."""
        if self.rows == 0:
            return None
        if self.matrix is not None:
            matrix = self.matrix.copy()
            matrix[0] = np.nan
            return dataclasses.replace(self, matrix=matrix)
        arrays = []
        for array in self.arrays:
            if array.dtype.kind in "fO":
                array = array.copy()
                array[0] = np.nan if array.dtype.kind == "f" else None
            arrays.append(array)
        if all(a is b for a, b in zip(arrays, self.arrays, strict=True)):
            return None
        return dataclasses.replace(self, arrays=tuple(arrays))


def concatenated(batches: Sequence[Batch]) -> Batch:
    """The rows of `batches`, which share one `layout`, as one batch, in order (no extras)."""
    first = batches[0]
    rows = sum(b.rows for b in batches)
    if first.matrix is not None:
        matrices = [b.matrix for b in batches if b.matrix is not None]
        return Batch(first.names, rows, matrix=np.concatenate(matrices))
    columns = zip(*(b.arrays for b in batches), strict=True)
    return Batch(first.names, rows, arrays=tuple(np.concatenate(c) for c in columns))


def from_rows(spec: InputSpec, columns: Sequence[Any], rows: Sequence[Any]) -> Batch:
    """`dataframe_split`: column names and row lists."""
    if not isinstance(columns, list):
        raise BadRequest("'columns' must be a list of column names")
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise BadRequest("'data' must be a list of rows, each a list of values")
    names = [str(c) for c in columns]
    return _from_rows(spec, names, rows, _extras(spec, names))


def from_records(spec: InputSpec, records: Sequence[Any]) -> Batch:
    """`dataframe_records`, or `instances`/`inputs` as a list of objects.

    A record without a key another record has holds a null there, as in MLflow.
    """
    if not all(isinstance(r, dict) for r in records):
        raise BadRequest("each record must be a JSON object of column -> value")
    seen: set[str] = set().union(*records) if records else set()
    _column_index(spec, list(seen))
    extra = _extras(spec, seen)
    names = [c.name for c in spec.columns if c.name in seen]
    rows: list[Any]
    if not names:
        rows = [() for _ in records]
    else:
        pick = itemgetter(*names)
        try:
            rows = [pick(r) for r in records] if len(names) > 1 else [(pick(r),) for r in records]
        except KeyError:  # some record lacks a key: null there
            rows = [[r.get(n) for n in names] for r in records]
    return _from_rows(spec, names, rows, extra)


def from_columns(spec: InputSpec, columns: Mapping[str, Any]) -> Batch:
    """`inputs`/`instances` as an object of column -> list of values (or DataFrame columns)."""
    extra = _extras(spec, columns)
    _column_index(spec, list(columns))
    lengths = {len(v) if isinstance(v, (list, np.ndarray)) else -1 for v in columns.values()}
    if -1 in lengths or len(lengths) > 1:
        raise BadRequest("every column must be a list of values, all of the same length")
    rows = lengths.pop() if lengths else 0
    present = [c for c in spec.columns if c.name in columns]
    arrays = tuple(_convert(c, columns[c.name]) for c in present)
    return Batch([c.name for c in present], rows, arrays=arrays, extra=extra)


def from_frame(spec: InputSpec, frame: pd.DataFrame) -> Batch:
    """A DataFrame read from CSV or Parquet."""
    return from_columns(spec, {str(c): _values(frame[c]) for c in frame.columns})


# -- helpers -------------------------------------------------------------------------------------


def _values(column: pd.Series) -> np.ndarray:
    """A frame's column as numpy values; pandas' own missing value (pd.NA) as None."""
    values: np.ndarray
    if isinstance(column.dtype, np.dtype):
        values = column.to_numpy()
    else:  # nullable ints and booleans, strings
        values = column.to_numpy(dtype=object, na_value=None)
    return values


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
            raise BadRequest(f"row {number} has {len(row)} values for {len(names)} columns")
    by_column = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    present = [c for c in spec.columns if c.name in index]
    arrays = tuple(_convert(c, by_column[index[c.name]]) for c in present)
    return Batch([c.name for c in present], len(rows), arrays=arrays, extra=extra)


def _column_index(spec: InputSpec, names: Sequence[str]) -> dict[str, int]:
    index = {name: i for i, name in enumerate(names)}
    missing = [c.name for c in spec.columns if c.required and c.name not in index]
    if missing:
        shown = ", ".join(f"'{m}'" for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InvalidInput(f"missing required column(s) {shown} ({len(missing)} in all)")
    return index


def _extras(spec: InputSpec, names: Any) -> tuple[str, ...]:
    known = spec.known
    extra = tuple(sorted(str(n) for n in names if n not in known))
    if extra and spec.strict:
        names = ", ".join(f"'{shown(e)}'" for e in extra[:5])
        raise InvalidInput(f"unexpected column(s) {names} ({len(extra)} in all): model is strict")
    return extra


def _double_matrix(rows: Sequence[Sequence[Any]], width: int) -> np.ndarray | None:
    """Rows as one float64 matrix; None when a value needs a closer look.

    numpy converts in C as MLflow's cast does: a null becomes NaN, true 1.0, "1.5" 1.5. Ragged
    rows, a nested value, text that is not a number or an infinity send the caller column by
    column, for a message naming the value. With the type given, numpy never builds a text
    array first (which one long string would make as wide as itself in every cell).
    """
    try:
        matrix = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    if matrix.ndim != 2 or matrix.shape[1] != width or np.isinf(matrix).any():
        return None
    return matrix


class _Refused(Exception):
    """A value of a column that its type refuses: its row and what is wrong."""

    def __init__(self, row: int, problem: str) -> None:
        super().__init__(problem)
        self.row = row
        self.problem = problem


def _convert(column: Column, values: Any) -> np.ndarray:
    """One column's values as its numpy type, or BadRequest naming column and row."""
    try:
        return _CONVERTERS[column.type](column.type, values)
    except _Refused as refused:
        raise BadRequest(
            f"column '{column.name}' row {refused.row}: {refused.problem} ({column.type} expected)"
        ) from None


def _types(values: Any) -> set[type]:
    """The Python types among the values (a pass in C)."""
    return set(map(type, values))


def _first(values: Any, problem: Callable[[Any], str | None]) -> _Refused:
    """The first value `problem` finds fault with (the caller knows there is one)."""
    for number, value in enumerate(values):
        if isinstance(value, np.generic):
            value = value.item()
        if (found := problem(value)) is not None:
            return _Refused(number, found)
    return _Refused(0, "value out of range")  # a whole column that overflows as one


def _floats(kind: str, values: Any) -> np.ndarray:
    """double, float: numbers, booleans, numeric strings; null and NaN as NaN; no infinity."""
    try:
        array = np.asarray(values, dtype=np.float64)  # numpy parses "1.5" as float() does
    except (ValueError, TypeError, OverflowError):
        raise _first(values, _float_problem) from None
    if array.ndim != 1:
        raise _first(values, _float_problem)
    if np.isinf(array).any():
        raise _Refused(int(np.argmax(np.isinf(array))), "infinite value")
    if kind == "double":
        return array
    with np.errstate(over="ignore"):  # found just below, naming the row
        narrowed = array.astype(np.float32)
    if np.isinf(narrowed).any():
        raise _Refused(int(np.argmax(np.isinf(narrowed))), "out of the float range")
    return narrowed


def _float_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return "not a number: text"
    elif isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            return "number out of range"
    else:
        return f"not a number: {type(value).__name__}"
    return "infinite value" if math.isinf(number) else None


_INTEGER_RANGES = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}
_PLAIN_NUMBERS = frozenset((int, float, bool))


def _integers(kind: str, values: Any) -> np.ndarray:
    """long, integer: whole numbers in range, booleans, integer strings; never a null."""
    low, high = _INTEGER_RANGES[kind]
    dtype = _NUMPY_TYPES[kind]
    array = _plain_array(values)
    if array is not None and array.ndim == 1:
        if array.dtype.kind == "b" or (array.dtype.kind in "iu" and _within(array, low, high)):
            return array.astype(dtype, copy=False)
        if array.dtype.kind == "f" and _within(array, low, high):
            whole = np.trunc(array)
            if (whole == array).all():  # NaN fails this too
                return array.astype(dtype)
    # strings, nulls, fractions, values out of range: value by value
    converted = []
    for number, value in enumerate(values):
        if isinstance(value, np.generic):
            value = value.item()
        integer, problem = _integer(value, low, high)
        if problem is not None:
            raise _Refused(number, problem)
        converted.append(integer)
    return np.asarray(converted, dtype=dtype)


def _plain_array(values: Any) -> np.ndarray | None:
    """`values` as an array when they are one or plain numbers and booleans; else None."""
    if isinstance(values, np.ndarray):
        return values
    if _types(values) <= _PLAIN_NUMBERS:
        try:
            return np.asarray(values)
        except (ValueError, TypeError, OverflowError):
            return None
    return None


def _within(array: np.ndarray, low: int, high: int) -> bool:
    """Every value in [low, high] (floats: only those that convert exactly)."""
    if array.size == 0:
        return True
    if array.dtype.kind == "f":
        # 2**63 - 1 is no float64: compare with 2.0**63, the first value past the range
        return bool(array.min() >= low and array.max() < float(high) + 1)
    return bool(array.min() >= low and array.max() <= high)


def _integer(value: Any, low: int, high: int) -> tuple[int, str | None]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0, "null value"
    if isinstance(value, bool):
        return int(value), None
    if isinstance(value, str):
        try:
            value = int(value)  # " 7 " as MLflow's int(); "7.5" and "7.0" are refused as there
        except ValueError:
            return 0, "not an integer: text"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return 0, "infinite value"
        if not value.is_integer():
            return 0, "not an integer (a fraction would be cut off)"
        value = int(value)
    elif not isinstance(value, int):
        return 0, f"not an integer: {type(value).__name__}"
    return (value, None) if low <= value <= high else (0, "integer out of range")


def _booleans(kind: str, values: Any) -> np.ndarray:
    """boolean: true and false, 0 and 1; never a null, a string or another number."""
    array = _plain_array(values)
    if array is not None and array.ndim == 1:
        if array.dtype.kind == "b":
            return array
        if array.dtype.kind in "iuf" and ((array == 0) | (array == 1)).all():
            return array.astype(np.bool_)
    converted = []
    for number, value in enumerate(values):
        if isinstance(value, np.generic):
            value = value.item()
        if (problem := _boolean_problem(value)) is not None:
            raise _Refused(number, problem)
        converted.append(bool(value))
    return np.asarray(converted, dtype=np.bool_)


def _boolean_problem(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null value"
    if isinstance(value, (int, float)):
        return None if value in (0, 1) else "not a boolean: only true, false, 0 and 1 are"
    return f"not a boolean: {'text' if isinstance(value, str) else type(value).__name__}"


def _strings(kind: str, values: Any) -> np.ndarray:
    """string: text, and null or NaN (missing; None to the model, which pandas shows as NaN)."""
    types = _types(values)
    if types <= {str, type(None)}:
        return _objects(values)
    # NaN: an empty CSV field, a NaN token
    if types <= {str, type(None), float, np.float64} and all(
        not isinstance(v, float) or math.isnan(v) for v in values
    ):
        return _objects([None if isinstance(v, float) else v for v in values])
    raise _first(values, _string_problem)


def _objects(values: Any) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _string_problem(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return f"not a string: {type(value).__name__}"


_CONVERTERS: dict[str, Callable[[str, Any], np.ndarray]] = {
    "double": _floats,
    "float": _floats,
    "long": _integers,
    "integer": _integers,
    "boolean": _booleans,
    "string": _strings,
}
