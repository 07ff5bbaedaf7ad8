"""The contract's compatibility rules, and that the gate and the serving swap apply them alike."""

import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import ModelSignature
from mlflow.models.utils import _enforce_mlflow_datatype
from mlflow.pyfunc import PyFuncModel
from mlflow.types import ColSpec, DataType, Schema, TensorSpec

from gates.evaluation import DataSource, EvaluationData
from gates.gate import gather
from gates.policy import parse
from gates.verdict import judge
from registry.contract import (
    OUTPUT_COLUMNS,
    WIDER_TYPES,
    Column,
    Interface,
    Task,
    answer_of,
    columns_of,
    input_breaks,
    interface_of,
    output_breaks,
    output_schema,
)
from registry.refs import ModelRef
from serving.model import LoadedModel, prepare
from serving.watcher import ContractBroken, check_contract
from training.pyfunc.contract_model import to_contract

BASE = (Column("a", "double"), Column("b", "long"), Column("c", "string", required=False))


def test_same_signature_breaks_nothing():
    assert input_breaks(BASE, BASE) == []
    assert _outputs(BASE, BASE) == []


def test_new_optional_column_is_compatible():
    assert input_breaks(BASE, (*BASE, Column("d", "double", required=False))) == []


def test_new_required_column_breaks():
    (problem,) = input_breaks(BASE, (*BASE, Column("d", "double")))
    assert "new required input column 'd'" in problem


def test_optional_column_becoming_required_breaks():
    candidate = (BASE[0], BASE[1], Column("c", "string", required=True))
    (problem,) = input_breaks(BASE, candidate)
    assert "'c' became required" in problem


def test_required_column_becoming_optional_is_compatible():
    candidate = (Column("a", "double", required=False), BASE[1], BASE[2])
    assert input_breaks(BASE, candidate) == []


@pytest.mark.parametrize("dropped", ["b", "c"])
def test_removed_column_breaks(dropped: str):
    (problem,) = input_breaks(BASE, tuple(c for c in BASE if c.name != dropped))
    assert f"input column '{dropped}' removed" in problem


@pytest.mark.parametrize(
    ("old", "new", "breaks"),
    [
        ("long", "integer", True),
        ("double", "float", True),
        ("long", "double", True),  # only 0/1 longs pass as doubles
        ("double", "string", True),
        ("integer", "long", False),
        ("integer", "double", False),
        ("float", "double", False),
    ],
)
def test_type_change(old: str, new: str, breaks: bool):
    problems = input_breaks((Column("x", old),), (Column("x", new),))
    assert bool(problems) is breaks
    if breaks:
        assert f"narrowed from {old} to {new}" in problems[0]


def test_missing_signatures():
    assert input_breaks(BASE, None) == []  # enforces nothing: accepts everything
    assert input_breaks(None, BASE) != []
    assert _outputs(None, None) == []
    assert _outputs(BASE, None) != []


def test_tensor_inputs_must_be_equal():
    tensor = (Column("", "tensor float32 [-1, 30]"),)
    assert input_breaks(tensor, tensor) == []
    assert input_breaks(tensor, (Column("", "tensor float32 [-1, 31]"),)) != []


def _outputs(
    baseline: tuple[Column, ...] | None, candidate: tuple[Column, ...] | None
) -> list[str]:
    return output_breaks(Interface(None, baseline), Interface(None, candidate))


def test_output_signature_any_change_breaks():
    contract = (Column("label", "long"), Column("probability", "double"))
    extra = (*contract, Column("explanation", "string"))
    assert _outputs(contract, extra) == ["output signature: extra column 'explanation'"]
    assert _outputs(contract, contract[:1]) == ["output signature: column 'probability' missing"]
    retyped = (Column("label", "integer"), contract[1])
    assert _outputs(contract, retyped) == ["output signature: column 'label' is integer, was long"]
    assert "reordered" in _outputs(contract, contract[::-1])[0]


def test_output_frames_compared_by_columns_and_dtypes():
    baseline = pd.DataFrame({"label": np.array([1, 0]), "probability": [0.9, 0.2]})

    def frame_breaks(candidate: pd.DataFrame) -> list[str]:
        return output_breaks(
            Interface(None, None, answer_of(baseline)), Interface(None, None, answer_of(candidate))
        )

    assert frame_breaks(baseline.copy()) == []
    narrowed = baseline.astype({"label": "int32"})
    assert frame_breaks(narrowed) == ["output frame: column 'label' is int32, was int64"]
    assert frame_breaks(baseline.assign(extra="x")) == ["output frame: extra column 'extra'"]


def test_columns_of_mlflow_schemas():
    schema = Schema([ColSpec("double", "a"), ColSpec("long", "b", required=False)])
    assert columns_of(schema) == (Column("a", "double"), Column("b", "long", required=False))
    tensors = Schema([TensorSpec(np.dtype("float32"), (-1, 3))])
    assert columns_of(tensors) == (Column("", "tensor float32 [-1, 3]"),)
    assert columns_of(None) is None


_SAMPLES = {
    "bool": pd.Series([True, False]),
    "int8": pd.Series([1, 2], dtype="int8"),
    "int16": pd.Series([1, 2], dtype="int16"),
    "int32": pd.Series([1, 2], dtype="int32"),
    "int64": pd.Series([1, 2], dtype="int64"),
    "uint8": pd.Series([1, 2], dtype="uint8"),
    "uint32": pd.Series([1, 2], dtype="uint32"),
    "float16": pd.Series([1.5, 2], dtype="float16"),
    "float32": pd.Series([1.5, 2], dtype="float32"),
    "float64": pd.Series([1.5, 2], dtype="float64"),
    "datetime": pd.Series(pd.to_datetime(["2020-01-01", "2020-01-02"])),
}
_NUMERIC = ("integer", "long", "float", "double", "boolean", "datetime")


def _accepted(kind: str) -> set[str]:
    accepted = set()
    for name, sample in _SAMPLES.items():
        try:
            _enforce_mlflow_datatype("x", sample.copy(), DataType[kind])
        except Exception:
            continue
        accepted.add(name)
    return accepted


def test_wider_types_match_mlflow_enforcement():
    """A widening allowed by the rules is one MLflow's enforcement actually accepts."""
    for old in _NUMERIC:
        measured = {new for new in _NUMERIC if _accepted(new) >= _accepted(old)}
        assert measured == set(WIDER_TYPES.get(old, {old})), old


# -- one rule for the gate and the serving swap ------------------------------------------------

ECHO_MODEL = '''\
"""Answers every row with the output columns and dtypes its config names."""
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def load_context(self, context):
        self.outputs = context.model_config["outputs"]

    def predict(self, context, model_input, params=None):
        labels = [i % 2 for i in range(len(model_input))]
        return pd.DataFrame({name: pd.Series(labels, dtype=kind) for name, kind in self.outputs})


mlflow.models.set_model(Echo())
'''
CONTRACT_OUTPUTS = (("label", "long", "int64"), ("probability", "double", "float64"))
BASELINE_INPUTS = (("a", "double", True), ("n", "integer", True))
EXAMPLE_VALUES = {"double": 0.0, "integer": 1, "long": 1}
"""Input-example values per column type; 0.0 is also what the gate's evaluation rows hold."""
DTYPES = {"double": "float64", "integer": "int32", "long": "int64"}

CASES = {
    # case: (candidate inputs, candidate outputs, breaks clients?)
    "same contract": (BASELINE_INPUTS, CONTRACT_OUTPUTS, False),
    "added optional column": (
        (*BASELINE_INPUTS, ("note", "double", False)),
        CONTRACT_OUTPUTS,
        False,
    ),
    "reordered columns": (BASELINE_INPUTS[::-1], CONTRACT_OUTPUTS, False),
    "widened integer to long": (
        (("a", "double", True), ("n", "long", True)),
        CONTRACT_OUTPUTS,
        False,
    ),
    "narrowed double to long": (
        (("a", "long", True), ("n", "integer", True)),
        CONTRACT_OUTPUTS,
        True,
    ),
    "removed column": (BASELINE_INPUTS[:1], CONTRACT_OUTPUTS, True),
    "new required column": (
        (*BASELINE_INPUTS, ("extra", "double", True)),
        CONTRACT_OUTPUTS,
        True,
    ),
    "output column retyped": (
        BASELINE_INPUTS,
        (("label", "long", "int64"), ("probability", "float", "float32")),
        True,
    ),
}


def _save_echo(
    directory: Path,
    inputs: tuple[tuple[str, str, bool], ...],
    outputs: tuple[tuple[str, str, str], ...],
) -> PyFuncModel:
    code = directory / "echo.py"
    code.write_text(ECHO_MODEL)
    example = pd.DataFrame(
        {
            name: pd.Series([EXAMPLE_VALUES[kind]] * 3, dtype=DTYPES[kind])
            for name, kind, _ in inputs
        }
    )
    mlflow.pyfunc.save_model(
        directory / "model",
        python_model=str(code),
        model_config={"outputs": [[name, dtype] for name, _, dtype in outputs]},
        signature=ModelSignature(
            inputs=Schema([ColSpec(kind, name, required=req) for name, kind, req in inputs]),
            outputs=Schema([ColSpec(kind, name) for name, kind, _ in outputs]),
        ),
        input_example=example,
        pip_requirements=["mlflow", "pandas"],
    )
    return mlflow.pyfunc.load_model(str(directory / "model"))


@dataclass(frozen=True)
class _Answered:
    """A model loaded here and its answer to the rows, as a scoring process reports both."""

    model: PyFuncModel
    answer: pd.DataFrame | None
    error: str | None
    interface: Interface

    def predict(self, request: pd.DataFrame) -> object:
        return self.model.predict(request)


def _answer(model: PyFuncModel, rows: pd.DataFrame) -> _Answered:
    try:
        output = model.predict(rows)
    except Exception as exc:  # a candidate the rows do not fit answers nothing
        return _Answered(model, None, f"predict failed: {exc}", interface_of(model))
    return _Answered(model, output, None, interface_of(model, output))


@pytest.fixture(scope="module")
def baseline_model(tmp_path_factory: pytest.TempPathFactory) -> PyFuncModel:
    return _save_echo(tmp_path_factory.mktemp("baseline"), BASELINE_INPUTS, CONTRACT_OUTPUTS)


@pytest.mark.parametrize("case", list(CASES))
def test_gate_and_swap_agree_on_compatibility(
    case: str, baseline_model: PyFuncModel, tmp_path: Path
):
    """Each case, through the gate's evidence and the serving swap's check: the same answer."""
    inputs, outputs, broken = CASES[case]
    candidate_model = _save_echo(tmp_path, inputs, outputs)

    policy = parse(
        "metrics:\n  accuracy: {min: 0.0}\ncompatibility: {inputs: true, outputs: true}\n"
    )
    rows = pd.DataFrame({"a": [0.0, 0.0, 0.0, 0.0], "n": np.array([1, 1, 1, 1], dtype="int32")})
    data = EvaluationData(
        DataSource("file", "table.csv", "target"), rows, np.array([0, 1, 0, 1]), "0" * 64
    )
    evidence = gather(policy, data, _answer(candidate_model, rows), _answer(baseline_model, rows))
    gate_breaks = [*(evidence.input_breaks or ()), *(evidence.output_breaks or ())]
    assert bool(gate_breaks) is broken, gate_breaks
    assert judge(policy, evidence).passed is not broken

    def loaded(model: PyFuncModel, version: str) -> LoadedModel:
        ref = ModelRef("table", version)
        return prepare(ref, model, strict=False, inline_below_ms=0, started=time.monotonic())

    current, new = loaded(baseline_model, "1"), loaded(candidate_model, "2")
    if broken:
        with pytest.raises(ContractBroken):
            check_contract(current, new)
    else:
        check_contract(current, new)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_logged_model_code_answers_in_the_contract(task: Task):
    """The model code logged with every version (self-contained, so it spells the columns
    itself) answers with exactly the contract's columns and types."""
    answer = to_contract(task, np.array([0.2, 0.7]))
    expected = columns_of(output_schema(task))
    assert expected is not None
    assert [(c.name, c.type) for c in expected] == [
        (name, kind) for name, kind in OUTPUT_COLUMNS[task]
    ]
    assert answer_of(answer) == tuple(
        (name, {"long": "int64", "double": "float64"}[kind]) for name, kind in OUTPUT_COLUMNS[task]
    )
