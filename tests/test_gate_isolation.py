"""The gate against hostile candidates and a tampered exam, through the CLI on a real registry.

Each candidate's code runs in a scoring process of its own: whatever it does there (exit,
hang, patch the gate's modules, look for credentials) never yields a pass, and a scoring
process that misbehaves is exit 2. The exam is pinned: a holdout changed after training is
refused, and a candidate trained on the evaluation rows fails.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import Result
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from gates.evaluation import sha256_of
from modelyard.cli import app
from registry import contract, versions
from registry.client import connect
from tests.servers import restoring_tracking_uri
from training.datasets import load_split
from training.run import TrainSpec, train

HOSTILE = "hostile-clf"
EXAM = "exam-clf"
POLICY = "metrics:\n  accuracy: {min: 0.85}\n"

HOSTILE_MODEL = Path(__file__).resolve().parents[1] / "bench" / "hostile_candidate.py"
"""The hostile candidate's code: `on_load` exits, hangs, patches the gate or snoops."""


class Pickled(PythonModel):
    """A model MLflow can only save with cloudpickle."""

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return pd.DataFrame({"label": np.zeros(len(model_input), dtype="int64")})


def _signature() -> ModelSignature:
    features = load_split("breast-cancer").features
    inputs = mlflow.types.Schema([mlflow.types.ColSpec("double", f) for f in features])
    return ModelSignature(inputs=inputs, outputs=contract.output_schema("classification"))


def _log(tracking_uri: str, **config: str) -> str:
    """Log and register a Hostile version configured with `config`; its version number."""
    return _register(tracking_uri, python_model=str(HOSTILE_MODEL), model_config=config)


def _register(tracking_uri: str, **model: object) -> str:
    with restoring_tracking_uri():
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment("gate-isolation-tests")
        with mlflow.start_run() as run:
            info = mlflow.pyfunc.log_model(
                name="model",
                signature=_signature(),
                pip_requirements=["mlflow", "pandas", "numpy"],
                **model,  # type: ignore[arg-type]
            )
    ref = versions.register(
        MlflowClient(tracking_uri),
        info.model_uri,
        HOSTILE,
        run_id=run.info.run_id,
        model_id=info.model_id,
    )
    return ref.version


@dataclass(frozen=True)
class Hostiles:
    """Versions of HOSTILE, by what their code does."""

    by_action: dict[str, str]
    pickled: str


@pytest.fixture(scope="module")
def hostiles(tracking_uri: str) -> Hostiles:
    loads = ("sys.exit", "os._exit", "hang", "patch", "snoop", "nothing")
    by_action = {action: _log(tracking_uri, on_load=action) for action in loads}
    by_action["one row"] = _log(tracking_uri, on_predict="one row")
    return Hostiles(by_action, _register(tracking_uri, python_model=Pickled()))


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy pinning the breast-cancer holdout, so no baseline is needed."""
    tmp = tmp_path_factory.mktemp("pinned")
    data = tmp / "eval.parquet"
    load_split("breast-cancer").holdout_frame().to_parquet(data)
    policy = tmp / "gate.yaml"
    policy.write_text(f"{POLICY}data:\n  uri: eval.parquet\n  sha256: {sha256_of(data)}\n")
    return policy


def _gate(name: str, *argv: str, policy: Path, report_dir: Path) -> Result:
    args = ["gate", name, "--policy", str(policy), "--report-dir", str(report_dir), *argv]
    return CliRunner().invoke(app, args)


def _hostile(hostiles: Hostiles, action: str, policy: Path, tmp: Path, *argv: str) -> Result:
    version = hostiles.by_action[action]
    return _gate(
        HOSTILE, "--candidate", version, "--baseline", "none", *argv, policy=policy, report_dir=tmp
    )


@pytest.mark.parametrize(
    ("action", "words"),
    [
        ("sys.exit", "cannot load the candidate"),
        ("os._exit", "exited with code 0 before it answered"),
        ("one row", "1 rows for 143 evaluation rows"),
    ],
)
def test_gate_candidate_that_exits_or_answers_garbage_exits_2(
    hostiles: Hostiles, pinned: Path, tmp_path: Path, action: str, words: str
):
    result = _hostile(hostiles, action, pinned, tmp_path)
    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert "candidate" in result.stderr
    assert not list(tmp_path.glob("gate-*"))


def test_gate_candidate_that_hangs_is_killed_after_the_timeout(
    hostiles: Hostiles, pinned: Path, tmp_path: Path
):
    result = _hostile(hostiles, "hang", pinned, tmp_path, "--score-timeout", "15")
    assert result.exit_code == 2, result.output
    assert "gave no answer within 15 s (killed)" in result.stderr


def test_gate_candidate_patching_the_gate_is_caught(
    hostiles: Hostiles, pinned: Path, tmp_path: Path
):
    result = _hostile(hostiles, "patch", pinned, tmp_path)
    assert result.exit_code == 2, result.output
    assert "changed the gate's own code" in result.stderr
    assert "gates.verdict.judge" in result.stderr
    assert "registry.quality.compute" in result.stderr
    assert "patched" not in result.stdout


def test_gate_candidate_sees_no_credentials(
    hostiles: Hostiles, pinned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "s3cret-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret-key")
    result = _hostile(hostiles, "snoop", pinned, tmp_path)
    assert result.exit_code == 2, result.output
    seen = re.search(r"env=(\S*) parent=(\w+)", result.stderr)
    assert seen, result.stderr
    names = set(seen[1].split(","))
    assert {"PATH", "HOME", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"} <= names
    assert not [name for name in names if name.startswith(("AWS_", "MLFLOW_TRACKING_"))]
    assert seen[2] == "refused"


def test_gate_refuses_a_pickled_candidate(hostiles: Hostiles, pinned: Path, tmp_path: Path):
    result = _gate(HOSTILE, "--candidate", hostiles.pickled, policy=pinned, report_dir=tmp_path)
    assert result.exit_code == 2, result.output
    assert "pickle is disallowed" in result.stderr


def test_gate_candidate_without_training_rows_fails_when_the_policy_requires_them(
    hostiles: Hostiles, pinned: Path, tmp_path: Path
):
    noted = _hostile(hostiles, "nothing", pinned, tmp_path)
    assert "overlap of training and evaluation rows not checked" in noted.stdout
    policy = tmp_path / "require.yaml"
    policy.write_text(
        pinned.read_text().replace("eval.parquet", str(pinned.parent / "eval.parquet"))
        + "exam: {training_rows: require}\n"
    )
    result = _hostile(hostiles, "nothing", policy, tmp_path)
    assert result.exit_code == 1, result.output
    assert "training rows recorded" in result.stdout
    assert (
        f"candidate {HOSTILE} v{hostiles.by_action['nothing']} records no training rows"
        in result.stdout
    )


@pytest.fixture(scope="module")
def exam_baseline(tracking_uri: str) -> str:
    """A version of EXAM trained on split seed 0, as the demo is."""
    return train(TrainSpec("sklearn", model_name=EXAM), connect(tracking_uri)).version


def test_gate_candidate_trained_on_the_evaluation_rows_fails(
    exam_baseline: str, tracking_uri: str, pinned: Path, tmp_path: Path
):
    spec = TrainSpec("sklearn", model_name=EXAM, split_seed=1)
    candidate = train(spec, connect(tracking_uri)).version
    policy = tmp_path / "gate.yaml"
    policy.write_text(POLICY)
    result = _gate(
        EXAM,
        "--candidate",
        candidate,
        "--baseline",
        exam_baseline,
        policy=policy,
        report_dir=tmp_path,
    )
    assert result.exit_code == 1, result.output
    found = re.search(r"candidate trained on (\d+) of 143 evaluation rows", result.stdout)
    assert found, result.stdout
    assert 90 < int(found[1]) < 143  # about 75% of the baseline's holdout
    assert "the holdout's sha256 is the one the baseline's training run recorded" in result.stdout


def test_gate_refuses_a_holdout_changed_after_training(
    exam_baseline: str, tracking_uri: str, tmp_path: Path
):
    client = MlflowClient(tracking_uri)
    run_id = client.get_model_version(EXAM, exam_baseline).run_id
    holdout = pd.read_parquet(
        client.download_artifacts(run_id, contract.HOLDOUT_ARTIFACT, str(tmp_path))
    )
    easier = tmp_path / "easier" / "holdout.parquet"
    easier.parent.mkdir()
    holdout.iloc[:100].to_parquet(easier)
    client.log_artifact(run_id, str(easier), "holdout")
    policy = tmp_path / "gate.yaml"
    policy.write_text(POLICY)
    result = _gate(
        EXAM,
        "--candidate",
        exam_baseline,
        "--baseline",
        exam_baseline,
        policy=policy,
        report_dir=tmp_path,
    )
    assert result.exit_code == 2, result.output
    assert f"has sha256 {sha256_of(easier)}, but its training run recorded" in result.stderr
    assert "the exam was changed after training" in result.stderr
