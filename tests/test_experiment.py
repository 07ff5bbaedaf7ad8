"""The experiment report: the analysis on synthetic logs, and `modelyard experiment report` /
`modelyard feedback import` end to end against the session's MLflow server."""

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from gates import experiment, experiment_reports
from gates.experiment import Split
from modelyard.cli import app
from registry import predictionlog
from registry.predictionlog import LogRoot
from registry.refs import ModelRef

START = np.datetime64("2026-11-30T20:00:00", "us")
CANDIDATE = ModelRef("m", "2", alias="staging")
BASELINE = ModelRef("m", "1", alias="production")
SPLIT = Split({"production": 50, "staging": 50}, "exp-1")


def simulated(
    requests: int,
    *,
    accuracy: tuple[float, float] = (0.8, 0.8),
    lost: float = 0.0,
    labelled: float = 1.0,
    regression: bool = False,
    seed: int = 0,
) -> tuple[pa.Table, pa.Table]:
    """A 50/50 experiment's log over six hours and its labels: arm 0 production v1, arm 1
    staging v2, with `accuracy` per arm; `lost` of staging's requests never logged."""
    rng = np.random.default_rng(seed)
    arm = (rng.random(requests) < 0.5).astype(int)
    arm = arm[~((arm == 1) & (rng.random(requests) < lost))]
    n = len(arm)
    ts = START + (np.sort(rng.random(n)) * 6 * 3600e6).astype("timedelta64[us]")
    target = rng.integers(0, 2, n).astype(float)
    correct = rng.random(n) < np.where(arm == 1, accuracy[1], accuracy[0])
    label = np.where(correct, target, 1 - target).astype(int)
    noise = rng.normal(0, np.where(arm == 1, 2.0, 1.0))
    table = pa.table(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "row": np.zeros(n, "int32"),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "alias": np.where(arm == 1, "staging", "production"),
            "version": np.where(arm == 1, "2", "1"),
            "run_id": ["run"] * n,
            "assignment": ["key"] * n,
            "salt": ["exp-1"] * n,
            "key_hash": pa.nulls(n, pa.string()),
            "sample_rate": np.ones(n),
            "status": np.full(n, 200, "int16"),
            "latency_ms": rng.gamma(2, 2, n),
            "label": pa.nulls(n, pa.int64()) if regression else label,
            "probability": pa.nulls(n, pa.float64()) if regression else np.where(label, 0.8, 0.2),
            "prediction": target + noise if regression else pa.nulls(n, pa.float64()),
        }
    )
    keep = rng.random(n) < labelled
    feedback = pa.table(
        {"request_id": table["request_id"].filter(keep), "row": np.zeros(keep.sum(), "int32"),
         "target": target[keep]}
    )  # fmt: skip
    return table, feedback


def analyse(table: pa.Table, feedback: pa.Table, split: Split = SPLIT) -> experiment.Analysis:
    return experiment.analyse(table, _typed(feedback), split, CANDIDATE, BASELINE)


def _typed(feedback: pa.Table) -> pa.Table:
    ts = pa.array([datetime.now(UTC)] * feedback.num_rows, pa.timestamp("us", tz="UTC"))
    return feedback.append_column("ts", ts).cast(predictionlog.FEEDBACK_SCHEMA)


def test_real_accuracy_gap_is_candidate_better_with_its_sequence() -> None:
    analysis = analyse(*simulated(20_000, accuracy=(0.75, 0.85)))
    assert analysis.decision == "candidate_better"
    found = analysis.differences["accuracy"]
    assert 0 < found.low < 0.10 < found.high
    arms = {arm.role: arm for arm in analysis.arms}
    assert arms["candidate"].metrics["accuracy"] == pytest.approx(0.85, abs=0.02)
    assert arms["baseline"].share == pytest.approx(0.5, abs=0.02)
    assert arms["baseline"].join_rate == 1.0
    assert len(analysis.timeline.times) > 10
    assert analysis.timeline.low[-1] == pytest.approx(found.low)


def test_equal_arms_are_no_difference_yet_with_labels_still_needed() -> None:
    analysis = analyse(*simulated(4000, labelled=0.5))
    assert analysis.decision == "no_difference_yet"
    assert analysis.labels_needed is not None
    assert analysis.labels_needed > 0
    assert [arm.join_rate for arm in analysis.arms] == pytest.approx([0.5, 0.5], abs=0.05)


def test_a_lossy_arm_is_srm_whatever_the_metric_says() -> None:
    analysis = analyse(*simulated(120_000, accuracy=(0.7, 0.9), lost=0.03))
    assert analysis.srm is not None
    assert analysis.srm.alarm
    assert analysis.decision == "srm"


def test_pinned_and_fallback_requests_do_not_count_against_the_split() -> None:
    table, feedback = simulated(10_000)
    extra, _ = simulated(3000, seed=1)
    extra = extra.filter(
        pa.array(np.asarray(extra["alias"].to_numpy(zero_copy_only=False)) == "staging")
    )
    kinds = np.where(np.arange(extra.num_rows) % 2 == 0, "pinned", "fallback")
    extra = extra.set_column(6, "assignment", pa.array(kinds))
    extra = extra.set_column(
        0, "request_id", pa.array([f"extra-{i}" for i in range(extra.num_rows)])
    )
    analysis = analyse(pa.concat_tables([table, extra]), feedback)
    assert analysis.srm is not None
    assert not analysis.srm.alarm
    staging = next(arm for arm in analysis.arms if arm.alias == "staging")
    assert staging.requests == staging.rows > analysis.srm.observed["staging"] + 1000


def test_few_labels_are_insufficient_data() -> None:
    analysis = analyse(*simulated(4000, labelled=0.02))
    assert analysis.decision == "insufficient_data"


def test_regressor_is_judged_on_rmse_lower_is_better() -> None:
    analysis = analyse(*simulated(6000, regression=True))
    assert analysis.task == "regression"
    assert analysis.primary == "rmse"
    assert analysis.decision == "candidate_worse"  # staging's errors are twice as large
    assert analysis.differences["rmse"].estimate == pytest.approx(1.0, abs=0.15)


def test_errors_and_latency_per_arm() -> None:
    table, feedback = simulated(2000)
    failed = np.arange(table.num_rows) % 10 == 0
    table = table.set_column(10, "status", pa.array(np.where(failed, 500, 200).astype("int16")))
    for name in ("label", "probability"):
        index = table.schema.get_field_index(name)
        table = table.set_column(
            index, name, pa.array(table[name].to_numpy(zero_copy_only=False), mask=failed)
        )
    analysis = analyse(table, feedback)
    for arm in analysis.arms:
        assert arm.error_rate == pytest.approx(0.1, abs=0.03)
        assert arm.labelled == arm.answered_rows  # error rows are neither answered nor judged
        assert arm.latency_ms["p50"] < arm.latency_ms["p95"] < arm.latency_ms["p99"]


def test_shadow_records_leave_the_report_unchanged() -> None:
    """The candidate's shadow answers to the baseline's requests, labelled through those
    requests, slow and always wrong, change nothing in the report."""
    table, feedback = simulated(6000, accuracy=(0.75, 0.85))
    baseline = table.filter(pa.compute.equal(table["alias"], "production"))
    n = baseline.num_rows
    wrong = 1 - np.asarray(baseline["label"].to_numpy(zero_copy_only=False))
    shadow = baseline
    for name, values in {
        "alias": pa.array(["staging"] * n),
        "version": pa.array(["2"] * n),
        "assignment": pa.array(["shadow"] * n),
        "salt": pa.nulls(n, pa.string()),
        "latency_ms": pa.array(np.full(n, 1e4)),
        "label": pa.array(wrong, pa.int64()),
    }.items():
        shadow = shadow.set_column(shadow.schema.get_field_index(name), name, values)
    plain = _report(analyse(table, feedback))
    with_shadow = analyse(pa.concat_tables([table, shadow]), feedback)
    assert with_shadow.decision == "candidate_better"
    assert _report(with_shadow) == plain


def _report(analysis: experiment.Analysis) -> str:
    report = experiment.Report(
        "m", CANDIDATE, BASELINE, SPLIT, predictionlog.Window(), "log", analysis, None, None,
        "2026-12-01T00:00:00+00:00", 0.0,
    )  # fmt: skip
    return experiment_reports.render_json(report)


# End to end: the command against the session's MLflow server


def register(client: MlflowClient, name: str) -> None:
    """A registered model with versions 1 (@production) and 2 (@staging) and a 50/50 split."""
    client.create_registered_model(name)
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)  # type: ignore[union-attr]
    for version, alias in (("1", "production"), ("2", "staging")):
        created = client.create_model_version(
            name, f"{run.info.artifact_uri}/model", run.info.run_id
        )
        assert str(created.version) == version
        client.set_registered_model_alias(name, alias, version)
    client.set_registered_model_tag(
        name, experiment.TRAFFIC_TAG, json.dumps({"production": 50, "staging": 50, "salt": "exp-1"})
    )


@pytest.fixture
def logged(tracking_uri: str, tmp_path: Path) -> tuple[str, LogRoot]:
    """A model registered under a fresh name, with a 6,000-request log under a local root."""
    name = f"exp-{uuid.uuid4().hex[:8]}"
    register(MlflowClient(tracking_uri), name)
    root = predictionlog.open_root(str(tmp_path / "log"), {})
    table, feedback = simulated(6000, accuracy=(0.75, 0.9))
    predictionlog.write_predictions(root, name, table, "replica-0")
    predictionlog.write_feedback(root, name, feedback)
    return name, root


def invoke(*args: str) -> "object":
    return CliRunner().invoke(app, list(args))


def test_report_without_mlflow_writes_the_reports(
    logged: tuple[str, LogRoot], tmp_path: Path
) -> None:
    name, root = logged
    reports = tmp_path / "reports"
    result = invoke(
        "experiment", "report", name, "--log", root.path, "--no-mlflow", "--report-dir",
        str(reports), "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    printed = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert printed["decision"] == "candidate_better"
    assert printed["run"]["id"] is None
    assert (
        json.loads((reports / f"experiment-{name}.json").read_text())["decision"]
        == "candidate_better"
    )
    markdown = (reports / f"experiment-{name}.md").read_text()
    assert f"## Experiment {name}: candidate_better" in markdown
    assert "| staging v2 | candidate |" in markdown
    client = MlflowClient()
    assert experiment.DECISION_TAG not in client.get_model_version(name, "2").tags


def test_report_records_a_run_and_tags_both_versions(
    logged: tuple[str, LogRoot], tmp_path: Path
) -> None:
    name, root = logged
    result = invoke(
        "experiment", "report", name, "--log", root.path, "--report-dir", str(tmp_path / "r"),
        "--since", "2026-11-30T19:00:00", "--until", "2026-12-01T00:00:00+00:00",
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "decision: candidate_better" in result.stdout  # type: ignore[attr-defined]
    client = MlflowClient()
    run_id = client.get_model_version(name, "2").tags[experiment.RUN_ID_TAG]
    for version in ("1", "2"):
        tags = client.get_model_version(name, version).tags
        assert tags[experiment.DECISION_TAG] == "candidate_better"
        assert tags[experiment.RUN_ID_TAG] == run_id
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "modelyard-experiments"
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (params["candidate.version"], params["baseline.version"]) == ("2", "1")
    assert json.loads(params["weights"]) == {"production": 50, "staging": 50}
    assert params["salt"] == "exp-1"
    assert params["window.until"] == "2026-12-01T00:00:00+00:00"
    metrics = run.data.metrics
    assert metrics["candidate.accuracy"] > metrics["baseline.accuracy"]
    assert metrics["difference.accuracy.low"] > 0
    assert metrics["candidate.requests"] + metrics["baseline.requests"] < 6000  # 4 of 6 hours
    artifacts = {a.path for a in client.list_artifacts(run_id, "experiment")}
    plots = {a.path for a in client.list_artifacts(run_id, "experiment/plots")}
    assert artifacts >= {f"experiment/experiment-{name}.json", f"experiment/experiment-{name}.md"}
    assert plots == {
        f"experiment/plots/experiment-{name}-difference.png",
        f"experiment/plots/experiment-{name}-traffic.png",
    }


def test_report_exit_2_for_an_unknown_model_or_an_unreadable_log(
    logged: tuple[str, LogRoot], tmp_path: Path
) -> None:
    name, root = logged
    unknown = invoke("experiment", "report", "no-such-model", "--log", root.path, "--no-mlflow")
    assert unknown.exit_code == 2
    assert "no registered model named 'no-such-model'" in unknown.output  # type: ignore[attr-defined]
    hour = next(Path(root.path).rglob("hour=*"))
    (hour / "replica-1-0.parquet").write_bytes(b"PAR1 damaged")
    damaged = invoke("experiment", "report", name, "--log", root.path, "--no-mlflow")
    assert damaged.exit_code == 2
    assert "cannot read the log" in damaged.output  # type: ignore[attr-defined]
    assert "Traceback" not in damaged.output  # type: ignore[attr-defined]
    bad_time = invoke("experiment", "report", name, "--log", root.path, "--since", "yesterday")
    assert bad_time.exit_code == 2


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_feedback_import_stores_labels(
    kind: str, logged: tuple[str, LogRoot], tmp_path: Path
) -> None:
    name, root = logged
    labels = pd.DataFrame({"request_id": ["x1", "x2"], "row": [0, 3], "target": [1, 0]})
    path = tmp_path / f"labels.{kind}"
    labels.to_csv(path, index=False) if kind == "csv" else labels.to_parquet(path)
    result = invoke("feedback", "import", name, str(path), "--log", root.path)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "imported 2 labels" in result.stdout  # type: ignore[attr-defined]
    stored = predictionlog.read_feedback(root, name).to_pandas().set_index("request_id")
    assert stored.loc["x2", "row"] == 3
    assert stored.loc["x1", "target"] == 1.0


@pytest.mark.parametrize(("kind", "where"), [("csv", "line 3"), ("parquet", "row 1")])
def test_feedback_import_refuses_a_file_with_bad_rows_naming_them(
    kind: str, where: str, logged: tuple[str, LogRoot], tmp_path: Path
) -> None:
    name, root = logged
    before = predictionlog.read_feedback(root, name).num_rows
    labels = pd.DataFrame(
        {"request_id": ["x1", "x2", "x3"], "row": ["0", "first", "2"], "target": [1, 0, 1]}
    )
    path = tmp_path / f"labels.{kind}"
    labels.to_csv(path, index=False) if kind == "csv" else labels.to_parquet(path)
    result = invoke("feedback", "import", name, str(path), "--log", root.path)
    assert result.exit_code == 2
    assert f"{where}: row must be an integer >= 0" in result.output  # type: ignore[attr-defined]
    assert predictionlog.read_feedback(root, name).num_rows == before


def test_feedback_import_exit_2_for_an_unknown_model(
    logged: tuple[str, LogRoot], tmp_path: Path
) -> None:
    _, root = logged
    path = tmp_path / "labels.csv"
    path.write_text("request_id,row,target\nx,0,1\n")
    result = invoke("feedback", "import", "no-such-model", str(path), "--log", root.path)
    assert result.exit_code == 2
    assert "no registered model named 'no-such-model'" in result.output  # type: ignore[attr-defined]


def test_an_empty_window_is_insufficient_data_not_an_error() -> None:
    table, feedback = simulated(10)
    analysis = analyse(table.slice(0, 0), feedback.slice(0, 0))
    assert analysis.decision == "insufficient_data"
    assert analysis.arms == ()
