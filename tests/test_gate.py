"""The evaluation gate end to end: real versions in a real registry, judged through the CLI."""

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from click.testing import Result
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from typer.testing import CliRunner

from gates.evaluation import sha256_of
from gates.gate import EXPERIMENT, RUN_ID_TAG, VERDICT_TAG, GateSpec, promote_if_passed
from gates.policy import load
from gates.verdict import Check, Verdict
from modelyard.cli import app
from registry import history, versions
from registry.client import connect
from registry.refs import ModelRef
from tests.conftest import DemoRegistry
from tests.servers import restoring_tracking_uri
from training.datasets import load_split
from training.run import TrainSpec, train

MODEL = "gate-clf"
POLICY = """\
metrics:
  accuracy: {min: 0.85, max_regression: 0.03}
  f1:       {min: 0.85}
  roc_auc:  {min: 0.90, max_regression: 0.02}
  log_loss: {max: 0.45, max_regression: 0.05}
latency: {max_ratio: 3.0, rounds: 10, batch_rows: 50}
bootstrap: {resamples: 500}
"""

CONTRACT_POLICY = """\
metrics:
  accuracy: {min: 0.8}
compatibility: {inputs: true, outputs: true}
"""
"""For the contract tests: the probe model is a one-feature stand-in, only its contract counts."""

PROBE_MODEL = '''\
"""A one-feature classifier in the output contract, optionally with an extra output column."""
import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class Probe(PythonModel):
    def load_context(self, context):
        self.extra_output = bool(context.model_config.get("extra_output"))

    def predict(self, context, model_input, params=None):
        radius = model_input["mean_radius"].to_numpy(dtype="float64")
        probability = 1 / (1 + np.exp(2.0 * (radius - 15.0)))
        out = pd.DataFrame(
            {"label": (probability >= 0.5).astype("int64"), "probability": probability}
        )
        if self.extra_output:
            out["explanation"] = "mean_radius"
        return out


mlflow.models.set_model(Probe())
'''


@dataclass(frozen=True)
class GateModels:
    """Versions of MODEL: a baseline, a good and a useless candidate, two contract breakers."""

    baseline: str
    good: str
    useless: str
    new_input: str
    new_output: str


def _log_probe(tmp: Path, tracking_uri: str, *, new_input: bool, new_output: bool) -> str:
    code = tmp / "probe.py"
    code.write_text(PROBE_MODEL)
    features = load_split("breast-cancer").features
    inputs = [ColSpec("double", f) for f in features]
    if new_input:
        inputs.append(ColSpec("double", "patient_age"))  # required by default
    outputs = [ColSpec("long", "label"), ColSpec("double", "probability")]
    if new_output:
        outputs.append(ColSpec("string", "explanation"))
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("gate-tests")
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            model_config={"extra_output": new_output},
            signature=ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs)),
            pip_requirements=["mlflow", "pandas", "numpy"],
        )
    client = MlflowClient(tracking_uri)
    ref = versions.register(
        client, info.model_uri, MODEL, run_id=run.info.run_id, model_id=info.model_id
    )
    return ref.version


def _copy_version(client: MlflowClient, ref: ModelRef) -> str:
    """Register an existing version's logged model again, as a version of MODEL."""
    found = client.get_model_version(ref.name, ref.version)
    model_id = found.source.removeprefix("models:/")  # MLflow 3: the logged model's id
    copied = versions.register(client, found.source, MODEL, run_id=found.run_id, model_id=model_id)
    return copied.version


@pytest.fixture(scope="module")
def models(demo_registry: DemoRegistry, tmp_path_factory: pytest.TempPathFactory) -> GateModels:
    """The demo classifiers (scikit-learn, PyTorch) registered again under MODEL, plus a useless
    retrain and two contract breakers; only MODEL's aliases are ever moved."""
    uri = demo_registry.tracking_uri
    client = MlflowClient(uri)
    baseline = _copy_version(client, demo_registry.classifier_sklearn)
    good = _copy_version(client, demo_registry.classifier_torch)
    spec = TrainSpec("sklearn", model_name=MODEL, experiment="gate-tests", shuffle_labels=True)
    useless = train(spec, connect(uri))
    tmp = tmp_path_factory.mktemp("probe")
    return GateModels(
        baseline,
        good,
        useless.version,
        new_input=_log_probe(tmp, uri, new_input=True, new_output=False),
        new_output=_log_probe(tmp, uri, new_input=False, new_output=True),
    )


@pytest.fixture(scope="module")
def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "gate.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def contract_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "contract.yaml"
    path.write_text(CONTRACT_POLICY)
    return path


def _gate(*argv: str, policy: Path, report_dir: Path) -> Result:
    args = ["gate", MODEL, "--policy", str(policy), "--report-dir", str(report_dir), *argv]
    return CliRunner(env={"MODELYARD_ACTOR": "ci"}).invoke(app, args)


def _fresh_alias(client: MlflowClient, version: str) -> str:
    """An alias of its own pointing at `version`, set as the MLflow UI would."""
    alias = f"champion-{uuid.uuid4().hex[:6]}"
    client.set_registered_model_alias(MODEL, alias, version)
    return alias


def _failed_checks(stdout: str) -> list[str]:
    """Names of the table rows whose result column reads FAIL."""
    return [line.split("  ")[0] for line in stdout.splitlines() if line.endswith("  FAIL")]


@dataclass(frozen=True)
class PassedGate:
    result: Result
    alias: str
    report_dir: Path


@pytest.fixture(scope="module")
def passed_gate(
    models: GateModels, client: MlflowClient, policy: Path, tmp_path_factory: pytest.TempPathFactory
) -> PassedGate:
    """A good candidate gated against the baseline with --promote, once for several tests."""
    alias = _fresh_alias(client, models.baseline)
    report_dir = tmp_path_factory.mktemp("reports")
    result = _gate(
        "--candidate",
        models.good,
        "--baseline",
        alias,
        "--promote",
        alias,
        policy=policy,
        report_dir=report_dir,
    )
    return PassedGate(result, alias, report_dir)


def test_gate_good_candidate_passes_and_takes_the_alias(
    passed_gate: PassedGate, models: GateModels, client: MlflowClient
):
    result = passed_gate.result
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout.splitlines()[0]
    assert _failed_checks(result.stdout) == []
    assert "accuracy vs baseline" in result.stdout
    assert "latency p50, 1 row" in result.stdout
    assert "holdout logged with the baseline's training run" in result.stdout
    assert "candidate trained on 0 of 143 evaluation rows" in result.stdout
    assert "note: the holdout's sha256 is the one the baseline's training run recorded" in (
        result.stdout
    )
    assert client.get_model_version_by_alias(MODEL, passed_gate.alias).version == models.good
    move = history.read(client, MODEL)[1][-1]
    assert (move.alias, move.from_version, move.to_version) == (
        passed_gate.alias,
        models.baseline,
        models.good,
    )
    assert move.reason.startswith("gate passed: run ")
    assert move.actor == "ci"


def test_gate_records_a_run_linked_to_both_versions(
    passed_gate: PassedGate, models: GateModels, client: MlflowClient
):
    tags = client.get_model_version(MODEL, models.good).tags
    assert tags[VERDICT_TAG] == "pass"
    run = client.get_run(tags[RUN_ID_TAG])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == EXPERIMENT
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (params["model"], params["candidate.version"], params["baseline.version"]) == (
        MODEL,
        models.good,
        models.baseline,
    )
    assert run.data.tags[VERDICT_TAG] == "pass"
    assert run.data.tags["modelyard.gate.candidate"] == f"{MODEL}/{models.good}"
    assert run.data.metrics["candidate.accuracy"] > 0.85
    assert "improvement.roc_auc.low" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "gate")}
    assert f"gate/gate-{MODEL}-v{models.good}.json" in artifacts
    assert f"gate/gate-{MODEL}-v{models.good}.md" in artifacts
    assert tags[RUN_ID_TAG] in passed_gate.result.stdout


def test_gate_reports_contain_what_the_terminal_showed(passed_gate: PassedGate, models: GateModels):
    stem = passed_gate.report_dir / f"gate-{MODEL}-v{models.good}"
    markdown = stem.with_suffix(".md").read_text()
    document = json.loads(stem.with_suffix(".json").read_text())
    terminal = passed_gate.result.stdout.splitlines()
    table_start = terminal.index("") + 1
    header = terminal[table_start].split()
    assert header == ["check", "candidate", "baseline", "bound", "detail", "result"]
    table = terminal[table_start + 1 : terminal.index("", table_start)]
    assert len(table) == len(document["table"]) >= 9
    for line, row in zip(table, document["table"], strict=True):
        cells = [cell for cell in row.values() if cell]
        assert all(cell in line for cell in cells), (line, row)
        assert "| " + " | ".join(row.values()) + " |" in markdown
    for line in document["summary"] + document["footer"]:
        assert line in terminal
        assert f"- {line}" in markdown
    assert document["verdict"] == "pass"
    assert document["baseline"]["version"] == models.baseline


def test_gate_useless_candidate_fails_and_the_alias_stays(
    models: GateModels, client: MlflowClient, policy: Path, tmp_path: Path
):
    alias = _fresh_alias(client, models.baseline)
    result = _gate(
        "--candidate",
        models.useless,
        "--baseline",
        alias,
        "--promote",
        alias,
        policy=policy,
        report_dir=tmp_path,
    )
    assert result.exit_code == 1, result.output
    failed = _failed_checks(result.stdout)
    assert {"accuracy", "roc_auc", "accuracy vs baseline", "roc_auc vs baseline"} <= set(failed)
    assert "not moved: the gate failed" in result.stdout
    assert client.get_model_version_by_alias(MODEL, alias).version == models.baseline
    assert client.get_model_version(MODEL, models.useless).tags[VERDICT_TAG] == "fail"


def test_gate_new_required_input_column_fails_compatibility(
    models: GateModels, contract_policy: Path, tmp_path: Path
):
    split = load_split("breast-cancer")
    data = tmp_path / "eval.csv"
    split.holdout_frame().assign(patient_age=50.0).to_csv(data, index=False)
    result = _gate(
        "--candidate",
        models.new_input,
        "--baseline",
        models.baseline,
        "--data",
        str(data),
        policy=contract_policy,
        report_dir=tmp_path,
    )
    assert result.exit_code == 1, result.output
    assert _failed_checks(result.stdout) == ["inputs accept baseline requests"]
    assert "new required input column 'patient_age'" in result.stdout
    assert f"given with --data: {data}" in result.stdout


def test_gate_changed_output_contract_fails(
    models: GateModels, contract_policy: Path, tmp_path: Path
):
    result = _gate(
        "--candidate",
        models.new_output,
        "--baseline",
        models.baseline,
        policy=contract_policy,
        report_dir=tmp_path,
    )
    assert result.exit_code == 1, result.output
    assert _failed_checks(result.stdout) == ["outputs in baseline contract"]
    assert "output signature: extra column 'explanation'" in result.stdout
    assert "output frame: extra column 'explanation'" in result.stdout


def test_gate_without_baseline_applies_absolute_bounds_on_pinned_data(
    models: GateModels, tmp_path: Path
):
    data = tmp_path / "eval.parquet"
    load_split("breast-cancer").holdout_frame().to_parquet(data)
    policy = tmp_path / "pinned.yaml"
    policy.write_text(f"{POLICY}data:\n  uri: eval.parquet\n  sha256: {sha256_of(data)}\n")
    result = _gate(
        "--candidate",
        models.good,
        "--baseline",
        "not-there-yet",
        policy=policy,
        report_dir=tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert "no baseline ('not-there-yet' does not exist)" in result.stdout
    assert "only absolute bounds apply" in result.stdout
    assert f"pinned by the policy: {data}" in result.stdout
    assert "vs baseline" not in result.stdout
    assert "latency p50" not in result.stdout
    document = json.loads((tmp_path / f"gate-{MODEL}-v{models.good}.json").read_text())
    assert document["baseline"] is None
    assert [row["check"] for row in document["table"]] == [
        "trained on evaluation rows",
        "accuracy",
        "f1",
        "roc_auc",
        "log_loss",
    ]


def test_gate_without_baseline_or_data_cannot_evaluate(
    models: GateModels, policy: Path, tmp_path: Path
):
    result = _gate(
        "--candidate",
        models.good,
        "--baseline",
        "not-there-yet",
        policy=policy,
        report_dir=tmp_path,
    )
    assert result.exit_code == 2
    assert "no evaluation data" in result.stderr
    assert result.stdout == ""


def test_gate_pinned_dataset_with_another_sha256_exits_2(models: GateModels, tmp_path: Path):
    data = tmp_path / "eval.parquet"
    load_split("breast-cancer").holdout_frame().to_parquet(data)
    policy = tmp_path / "pinned.yaml"
    policy.write_text(f"{POLICY}data:\n  uri: {data}\n  sha256: '{'0' * 64}'\n")
    result = _gate(
        "--candidate",
        models.good,
        "--baseline",
        models.baseline,
        policy=policy,
        report_dir=tmp_path,
    )
    assert result.exit_code == 2
    assert f"has sha256 {sha256_of(data)}, but the policy pins {'0' * 64}" in result.stderr
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("gate-*"))  # nothing judged, nothing reported


def test_gate_broken_policy_exits_2_naming_the_line(tmp_path: Path):
    policy = tmp_path / "gate.yaml"
    policy.write_text(POLICY.replace("  f1:       {min: 0.85}", "  f1_score: {min: 0.85}"))
    result = _gate("--candidate", "1", "--baseline", "2", policy=policy, report_dir=tmp_path)
    assert result.exit_code == 2
    assert f"{policy}:3: metrics.f1_score: unknown metric 'f1_score'" in result.stderr
    assert "Traceback" not in result.output


def test_gate_unknown_candidate_exits_2(models: GateModels, policy: Path, tmp_path: Path):
    result = _gate("--candidate", "999", "--baseline", "1", policy=policy, report_dir=tmp_path)
    assert result.exit_code == 2
    assert f"model '{MODEL}' has no version 999" in result.stderr


def test_gate_policy_for_another_model_exits_2(models: GateModels, tmp_path: Path):
    policy = tmp_path / "gate.yaml"
    policy.write_text(f"model: cancer-classifier\n{POLICY}")
    result = _gate("--candidate", models.good, policy=policy, report_dir=tmp_path)
    assert result.exit_code == 2
    assert "is for model 'cancer-classifier', not 'gate-clf'" in result.stderr


def test_gate_promote_refuses_when_the_baseline_moved_meanwhile(
    models: GateModels, client: MlflowClient, policy: Path
):
    """Promotion is guarded by the baseline version the gate compared against."""
    alias = _fresh_alias(client, models.useless)  # moved after the gate read models.baseline
    compared = ModelRef(MODEL, models.baseline, alias=alias)
    parsed, digest = load(policy)
    spec = GateSpec(MODEL, models.good, alias, parsed, policy, digest, promote=alias)
    passed = Verdict((Check("accuracy", 0.9, 0.9, ">= 0.8", True),))
    promoted, text = promote_if_passed(
        client, spec, ModelRef(MODEL, models.good), compared, passed, "run-x"
    )
    assert promoted is False
    assert text is not None
    assert "not the expected version" in text
    assert client.get_model_version_by_alias(MODEL, alias).version == models.useless


def test_gate_unreachable_registry_exits_2(
    policy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with restoring_tracking_uri():
        mlflow.set_tracking_uri("http://127.0.0.1:9")  # training set another for this process
        result = _gate("--candidate", "2", policy=policy, report_dir=tmp_path)
    assert result.exit_code == 2
    assert "not reachable" in result.stderr
    assert "Traceback" not in result.output


def test_gate_baseline_without_logged_holdout_exits_2(
    models: GateModels, policy: Path, tmp_path: Path
):
    result = _gate(
        "--candidate",
        models.good,
        "--baseline",
        models.new_output,
        policy=policy,
        report_dir=tmp_path,
    )
    assert result.exit_code == 2
    assert "cannot fetch evaluation data runs:/" in result.stderr
    assert "pin a dataset in the policy or pass --data" in result.stderr
