"""Whether a candidate version can replace a baseline without breaking the baseline's clients.

Inputs, under MLflow's schema enforcement (extra columns are dropped before the model sees
them): the candidate must accept every request the baseline accepts and use every field
those requests carry. So it breaks clients by requiring a column the baseline did not
require, by dropping a column clients send (required or optional: it would be silently
discarded), or by narrowing a column's type. Outputs: the same columns with the same types,
in the same order, in the signature and in the frames the models actually return.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from mlflow.types import ColSpec, DataType, Schema, TensorSpec

WIDER_TYPES: dict[str, frozenset[str]] = {
    "integer": frozenset({"integer", "long", "double"}),
    "float": frozenset({"float", "double"}),
}
"""For an input type, the types whose enforcement accepts every value it accepts (measured
against MLflow's `_enforce_mlflow_datatype`); any other type accepts only itself."""


@dataclass(frozen=True, slots=True)
class Column:
    """One field of a signature: a named column of an MLflow type, or an unnamed tensor."""

    name: str | None
    type: str
    required: bool = True

    def __str__(self) -> str:
        optional = "" if self.required else " (optional)"
        return f"{self.name or '<unnamed>'}: {self.type}{optional}"


Signature = tuple[Column, ...]


def columns_of(schema: Schema | None) -> Signature | None:
    """A model signature's inputs or outputs as Columns (None: the model declares none)."""
    if schema is None:
        return None
    return tuple(Column(spec.name, _type_name(spec), spec.required) for spec in schema.inputs)


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
    breaks = []
    for name, column in new.items():
        before = old.get(name)
        if column.required and before is None:
            breaks.append(f"new required input column '{name}': requests without it fail")
        elif column.required and before is not None and not before.required:
            breaks.append(f"input column '{name}' became required: requests without it fail")
    for name, column in old.items():
        after = new.get(name)
        if after is None:
            kind = "required" if column.required else "optional"
            breaks.append(
                f"{kind} input column '{name}' removed: clients still send it and it would be "
                "silently discarded"
            )
        elif after.type != column.type and after.type not in WIDER_TYPES.get(column.type, ()):
            breaks.append(
                f"input column '{name}' narrowed from {column.type} to {after.type}: "
                f"{column.type} values may be refused"
            )
    return breaks


def output_breaks(baseline: Signature | None, candidate: Signature | None) -> list[str]:
    """How the candidate's output signature differs from the baseline's (any change breaks)."""
    if baseline is None and candidate is None:
        return []
    if baseline is None or candidate is None:
        which = "baseline" if baseline is None else "candidate"
        return [f"the {which} declares no output signature"]
    return _differences("output signature", _typed(baseline), _typed(candidate))


def frame_breaks(baseline: pd.DataFrame, candidate: pd.DataFrame) -> list[str]:
    """How the frames the candidate actually returned differ from the baseline's."""
    return _differences(
        "output frame",
        [(str(name), str(dtype)) for name, dtype in baseline.dtypes.items()],
        [(str(name), str(dtype)) for name, dtype in candidate.dtypes.items()],
    )


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
    return all(c.name is not None and not c.type.startswith("tensor ") for c in signature)


def _show(signature: Signature) -> str:
    return "[" + ", ".join(str(c) for c in signature) + "]"
