"""The model contract every version of a registered model keeps, in one place.

Training writes it, the gate judges it and the serving swap enforces it, all through this module:
- tasks and their output columns (classification: `label`, `probability`; regression:
  `prediction`), whatever framework trained the version;
- where a training run logs its holdout and the name of its target column;
- whether a candidate's interface can replace a baseline's without breaking the baseline's
  clients.

Inputs, under MLflow's schema enforcement (extra columns are dropped before the model sees
them): the candidate must accept every request the baseline accepts and use every field those
requests carry. So it breaks clients by requiring a column the baseline did not require, by
dropping a column clients send (required or optional: it would be silently discarded), or by
narrowing a column's type. Reordering columns or adding an optional one breaks nothing.
Outputs: the same columns with the same types, in the same order, in the signature and in the
frames the versions actually answer with.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.models import Model
from mlflow.pyfunc import PyFuncModel
from mlflow.types import ColSpec, DataType, Schema, TensorSpec

Task = Literal["classification", "regression"]
TASKS: tuple[Task, ...] = ("classification", "regression")

LABEL, PROBABILITY, PREDICTION = "label", "probability", "prediction"
OUTPUT_COLUMNS: dict[Task, tuple[tuple[str, str], ...]] = {
    "classification": ((LABEL, "long"), (PROBABILITY, "double")),
    "regression": ((PREDICTION, "double"),),
}
"""Per task, the (column, MLflow type) of every version's answer, in order. `label` is 0 or 1,
`probability` that of class 1."""

HOLDOUT_ARTIFACT = "holdout/holdout.parquet"
"""Where a training run logs its holdout rows (features and target); gates read it there."""
HOLDOUT_TARGET = "target"
"""The target column of a logged holdout."""
HOLDOUT_SHA256_PARAM = "holdout_sha256"
"""Training-run param: the sha256 of the holdout artifact's bytes (params cannot be changed
later, so the gate can tell the exam it downloads from the one training logged)."""
TRAINING_ROWS_ARTIFACT = "training/rows.parquet"
"""Where a training run logs a digest of every row it trained on (see `write_training_rows`)."""
_ROW_HASH, _ROW_COLUMNS = "row_hash", b"modelyard.columns"

WIDER_TYPES: dict[str, frozenset[str]] = {
    "integer": frozenset({"integer", "long", "double"}),
    "float": frozenset({"float", "double"}),
}
"""For an input type, the types whose enforcement accepts every value it accepts (measured
against MLflow's `_enforce_mlflow_datatype`); any other type accepts only itself."""


def output_schema(task: Task) -> Schema:
    """The output signature every version of a `task` model is logged with."""
    return Schema([ColSpec(kind, name) for name, kind in OUTPUT_COLUMNS[task]])


def compared_column(output: pd.DataFrame) -> str:
    """The column two answers are compared on: `label` when there is one, else the first."""
    return LABEL if LABEL in output.columns else str(output.columns[0])


def row_hashes(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """A 64-bit digest per row of `frame`'s `columns` (taken in sorted order, as float32, so
    column order and a CSV round trip's last-digit noise do not matter); ValueError when a
    column is missing or not numeric."""
    names = sorted(columns)
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise ValueError(f"no column {', '.join(map(repr, missing[:3]))}")
    values = np.ascontiguousarray(frame[names].to_numpy(dtype="float32") + np.float32(0))
    values[np.isnan(values)] = np.nan  # one NaN bit pattern
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest()) for row in values),
        dtype="uint64",
        count=len(values),
    )


def write_training_rows(path: Path, features: pd.DataFrame) -> None:
    """Write the digests of the rows a version was trained on, with the columns they cover."""
    table = pa.table({_ROW_HASH: row_hashes(features, list(features.columns))})
    names = json.dumps(sorted(map(str, features.columns))).encode()
    pq.write_table(table.replace_schema_metadata({_ROW_COLUMNS: names}), path)


def read_training_rows(path: Path, max_rows: int) -> tuple[list[str], np.ndarray]:
    """The columns and row digests `write_training_rows` wrote; ValueError for anything else
    (or more than `max_rows` rows, counted from the footer before reading)."""
    try:
        found = pq.ParquetFile(path)
        names = json.loads((found.schema_arrow.metadata or {})[_ROW_COLUMNS])
        if found.metadata.num_rows > max_rows:
            raise ValueError(f"{found.metadata.num_rows} rows, more than {max_rows}")
        hashes = found.read(columns=[_ROW_HASH]).column(0).to_numpy()
    except (OSError, KeyError, pa.ArrowException) as exc:
        raise ValueError(f"not a training-rows file: {exc}") from exc
    if hashes.dtype != np.uint64 or not all(isinstance(n, str) for n in names) or not names:
        raise ValueError("not a training-rows file: unexpected columns or types")
    return names, hashes


@dataclass(frozen=True, slots=True)
class Column:
    """One field of a signature: a named column of an MLflow type, or an unnamed tensor (name
    "")."""

    name: str
    type: str
    required: bool = True

    def __str__(self) -> str:
        optional = "" if self.required else " (optional)"
        return f"{self.name or '<unnamed>'}: {self.type}{optional}"


Signature = tuple[Column, ...]
Answer = tuple[tuple[str, str], ...]
"""(column, dtype) of a frame a version actually answered with."""


@dataclass(frozen=True, slots=True)
class Interface:
    """What a version promises its clients: input and output signatures (None where it declares
    none) and, once it has answered, the columns and dtypes of its answer."""

    inputs: Signature | None
    outputs: Signature | None
    answer: Answer | None = None


def columns_of(schema: Schema | None) -> Signature | None:
    """A model signature's inputs or outputs as Columns (None: the model declares none)."""
    if schema is None:
        return None
    return tuple(Column(spec.name or "", _type_name(spec), spec.required) for spec in schema.inputs)


def interface_of(model: PyFuncModel, answer: object = None) -> Interface:
    """A loaded version's interface, from its signature and (when given) one of its answers."""
    return _interface(model.metadata, answer)


def interface_in(model_dir: Path, answer: object = None) -> Interface:
    """A downloaded version's interface, read from its MLmodel file (no model code runs)."""
    return _interface(Model.load(str(model_dir)), answer)


def _interface(metadata: Model, answer: object) -> Interface:
    signature = metadata.signature
    if signature is None:
        return Interface(None, None, answer_of(answer))
    return Interface(columns_of(signature.inputs), columns_of(signature.outputs), answer_of(answer))


def answer_of(output: object) -> Answer | None:
    """The columns and dtypes of an answer, when it is a DataFrame."""
    if not isinstance(output, pd.DataFrame):
        return None
    return tuple((str(name), str(dtype)) for name, dtype in output.dtypes.items())


def breaks(baseline: Interface, candidate: Interface) -> list[str]:
    """Every way the candidate would break the baseline's clients (empty: it may replace it)."""
    return input_breaks(baseline.inputs, candidate.inputs) + output_breaks(baseline, candidate)


def input_breaks(baseline: Signature | None, candidate: Signature | None) -> list[str]:
    """How clients of the baseline's input signature would break on the candidate's."""
    if candidate is None:
        return []  # no signature: MLflow enforces nothing, every request is accepted
    if baseline is None:
        return ["the baseline declares no input signature; the candidate enforces one"]
    if not _all_named(baseline) or not _all_named(candidate):
        if baseline == candidate:
            return []
        return [f"unnamed (tensor) inputs differ: {_show(baseline)} -> {_show(candidate)}"]
    old = {c.name: c for c in baseline}
    new = {c.name: c for c in candidate}
    problems = []
    for name, column in new.items():
        before = old.get(name)
        if column.required and before is None:
            problems.append(f"new required input column '{name}': requests without it fail")
        elif column.required and before is not None and not before.required:
            problems.append(f"input column '{name}' became required: requests without it fail")
    for name, column in old.items():
        after = new.get(name)
        if after is None:
            kind = "required" if column.required else "optional"
            problems.append(
                f"{kind} input column '{name}' removed: clients still send it and it would be "
                "silently discarded"
            )
        elif after.type != column.type and after.type not in WIDER_TYPES.get(column.type, ()):
            problems.append(
                f"input column '{name}' narrowed from {column.type} to {after.type}: "
                f"{column.type} values may be refused"
            )
    return problems


def output_breaks(baseline: Interface, candidate: Interface) -> list[str]:
    """How the candidate's outputs differ from the baseline's (any change breaks): in the
    signature, and in the answers both gave when both have answered."""
    problems = _signature_output_breaks(baseline.outputs, candidate.outputs)
    if baseline.answer is not None and candidate.answer is not None:
        problems += _differences("output frame", baseline.answer, candidate.answer)
    return problems


def _signature_output_breaks(baseline: Signature | None, candidate: Signature | None) -> list[str]:
    if baseline is None and candidate is None:
        return []
    if baseline is None or candidate is None:
        which = "baseline" if baseline is None else "candidate"
        return [f"the {which} declares no output signature"]
    return _differences("output signature", _typed(baseline), _typed(candidate))


def _differences(
    what: str, baseline: Sequence[tuple[str, str]], candidate: Sequence[tuple[str, str]]
) -> list[str]:
    old, new = dict(baseline), dict(candidate)
    problems = [f"{what}: column '{name}' missing" for name in old if name not in new]
    problems += [f"{what}: extra column '{name}'" for name in new if name not in old]
    problems += [
        f"{what}: column '{name}' is {new[name]}, was {kind}"
        for name, kind in old.items()
        if name in new and new[name] != kind
    ]
    if not problems and list(old) != list(new):
        problems.append(f"{what}: columns reordered: {list(old)} -> {list(new)}")
    return problems


def _typed(signature: Signature) -> list[tuple[str, str]]:
    return [(column.name or f"<{i}>", column.type) for i, column in enumerate(signature)]


def _type_name(spec: object) -> str:
    if isinstance(spec, ColSpec):
        kind = spec.type
        return kind.name if isinstance(kind, DataType) else str(kind)
    if isinstance(spec, TensorSpec):
        return f"tensor {spec.type} {list(spec.shape)}"
    return str(spec)


def _all_named(signature: Signature) -> bool:
    return all(c.name and not c.type.startswith("tensor ") for c in signature)


def _show(signature: Signature) -> str:
    return "[" + ", ".join(str(c) for c in signature) + "]"
