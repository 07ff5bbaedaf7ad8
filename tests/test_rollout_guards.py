"""The rollout guards on synthetic logs (written and read back through the log's own layout),
the evidence they breach on, and rollout.yaml's validation."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from gates import rollout_guards, rollout_policy
from gates.errors import PolicyError
from gates.rollout_guards import evidence_many, peak_evidence
from gates.rollout_policy import GuardPolicy
from registry import predictionlog
from registry.predictionlog import Window
from registry.refs import ModelRef

ROOT = Path(__file__).resolve().parents[1]
CANDIDATE = ModelRef("m", "2", alias="staging")
BASELINE = ModelRef("m", "1", alias="production")
START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
SHIPPED = rollout_policy.load(ROOT / "rollout.yaml")[0]
"""The rollout.yaml that ships at the top level."""


@dataclass
class Arm:
    """How one version behaves in a synthetic log."""

    error_rate: float = 0.0
    latency_ms: float = 10.0
    accuracy: float = 0.9


@dataclass
class Traffic:
    """A synthetic log: requests over `seconds` from START, split by `share`."""

    requests: int
    share: float
    candidate: Arm = field(default_factory=Arm)
    baseline: Arm = field(default_factory=Arm)
    seconds: float = 60.0
    start: datetime = START
    shadowed: float = 0.0
    """Share of baseline requests the candidate shadow-scored (shadow records, same request id
    and row)."""
    disagree: float = 0.0
    seed: int = 0


def records(traffic: Traffic) -> tuple[pa.Table, pa.Table]:
    """Prediction records (one row per request) and a label for every answered row."""
    rng = np.random.default_rng(traffic.seed)
    n = traffic.requests
    is_candidate = rng.random(n) < traffic.share
    offsets = np.sort(rng.random(n)) * traffic.seconds * 1e6
    ts = np.datetime64(traffic.start.replace(tzinfo=None), "us") + offsets.astype("timedelta64[us]")
    arms = [traffic.candidate if c else traffic.baseline for c in is_candidate]
    failed = np.array([rng.random() < arm.error_rate for arm in arms])
    latency = np.array([arm.latency_ms for arm in arms]) * rng.gamma(8, 1 / 8, n)
    target = rng.integers(0, 2, n)
    correct = np.array([rng.random() < arm.accuracy for arm in arms])
    label = np.where(correct, target, 1 - target)
    ids = [f"r{i}" for i in range(n)]
    columns = {
        "request_id": ids,
        "row": np.zeros(n, "int32"),
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "alias": np.where(is_candidate, "staging", "production"),
        "version": np.where(is_candidate, "2", "1"),
        "run_id": ["run"] * n,
        "assignment": ["key"] * n,
        "salt": ["s"] * n,
        "key_hash": pa.nulls(n, pa.string()),
        "sample_rate": np.ones(n),
        "status": np.where(failed, 500, 200).astype("int16"),
        "latency_ms": latency,
        "label": pa.array(np.where(failed, 0, label), pa.int64(), mask=failed),
        "probability": pa.array(np.where(label == 1, 0.8, 0.2), pa.float64(), mask=failed),
        "prediction": pa.nulls(n, pa.float64()),
    }
    table = pa.table(columns)
    shadow = ~is_candidate & (rng.random(n) < traffic.shadowed) & ~failed
    if shadow.any():
        flip = rng.random(int(shadow.sum())) < traffic.disagree
        copies = table.filter(pa.array(shadow))
        shadow_label = np.where(flip, 1 - label[shadow], label[shadow])
        copies = copies.set_column(3, "alias", pa.array(["staging"] * len(copies)))
        copies = copies.set_column(4, "version", pa.array(["2"] * len(copies)))
        copies = copies.set_column(6, "assignment", pa.array(["shadow"] * len(copies)))
        copies = copies.set_column(12, "label", pa.array(shadow_label, pa.int64()))
        table = pa.concat_tables([table, copies])
    answered = ~failed
    feedback = pa.table(
        {
            "request_id": [i for i, keep in zip(ids, answered, strict=True) if keep],
            "row": np.zeros(int(answered.sum()), "int32"),
            "target": target[answered].astype("float64"),
        }
    )
    return table, feedback


def judged(
    traffic: Traffic,
    tmp_path: Path,
    policy: GuardPolicy = SHIPPED,
    since: datetime | None = None,
) -> rollout_guards.Evaluation:
    """Write the traffic's log under tmp_path, read it back as the guards do, judge it."""
    root = predictionlog.open_root(str(tmp_path / "log"), {})
    table, feedback = records(traffic)
    predictionlog.write_predictions(root, "m", table, "replica-0")
    predictionlog.write_feedback(root, "m", feedback)
    predictions, labels = rollout_guards.read(root, "m", Window(START, None), None)
    return rollout_guards.evaluate(policy, predictions, labels, CANDIDATE, BASELINE, since)


def guard(evaluation: rollout_guards.Evaluation, name: str) -> rollout_guards.GuardResult:
    return next(g for g in evaluation.guards if g.name == name)


def test_guards_healthy_candidate_passes_every_guard(tmp_path: Path) -> None:
    found = judged(Traffic(4000, 0.25), tmp_path)
    assert found.outcome == "pass", found.reason()
    outcomes = {g.name: g.outcome for g in found.guards}
    assert outcomes == {
        "requests": "pass",
        "error_rate": "pass",
        "latency_p99_ratio": "pass",
        "agreement": "no_data",  # nothing shadowed: not required
        "accuracy": "pass",
    }
    assert guard(found, "accuracy").figures["candidate_labels"] > 900


def test_guards_one_failure_in_twenty_breaches_the_shipped_bounds(tmp_path: Path) -> None:
    """rollout.yaml catches a candidate failing 1 request in 20, at a 5% step."""
    found = judged(Traffic(6000, 0.05, candidate=Arm(error_rate=0.05)), tmp_path)
    assert found.outcome == "breach"
    errors = guard(found, "error_rate")
    assert errors.outcome == "breach"
    assert errors.figures["evidence"] >= 20
    assert "BREACH: candidate 4.53% (14 of 309 requests failed)" in errors.line()
    assert "requests failed" in errors.line()
    assert [g.name for g in found.breached] == ["error_rate"]


def test_guards_rare_errors_do_not_breach(tmp_path: Path) -> None:
    found = judged(Traffic(6000, 0.25, candidate=Arm(error_rate=0.002)), tmp_path)
    assert guard(found, "error_rate").outcome == "pass"


def test_guards_triple_latency_breaches_and_a_noisy_p99_does_not(tmp_path: Path) -> None:
    slow = judged(Traffic(3000, 0.1, candidate=Arm(latency_ms=30)), tmp_path / "slow")
    latency = guard(slow, "latency_p99_ratio")
    assert latency.outcome == "breach"
    assert latency.figures["ratio"] > 2
    # same latency, two candidate requests 40x slower: its p99 over ~100 requests jumps, but
    # two slow requests in a hundred are no evidence that the p99 is beyond the bound
    table, feedback = records(Traffic(2000, 0.05))
    latency_ms = table["latency_ms"].to_numpy().copy()
    candidate_rows = np.flatnonzero(table["alias"].to_numpy(zero_copy_only=False) == "staging")
    latency_ms[candidate_rows[[20, 60]]] *= 40
    table = table.set_column(11, "latency_ms", pa.array(latency_ms))
    found = rollout_guards.evaluate(SHIPPED, table, _typed(feedback), CANDIDATE, BASELINE, None)
    noisy = guard(found, "latency_p99_ratio")
    assert noisy.figures["ratio"] > 1.5  # the naive ratio would have rolled it back
    assert noisy.outcome == "pass"


def test_guards_a_burst_of_errors_breaches_after_later_requests_dilute_it(tmp_path: Path) -> None:
    """A check judges every moment of the step, not only its end: a candidate that failed 1
    request in 5 for a while breaches even once hundreds of good requests followed."""
    table, feedback = records(Traffic(6000, 0.25))
    status = table["status"].to_numpy().copy()
    candidate_rows = np.flatnonzero(table["alias"].to_numpy(zero_copy_only=False) == "staging")
    status[candidate_rows[100:200:5]] = 500
    table = table.set_column(table.schema.get_field_index("status"), "status", pa.array(status))
    found = rollout_guards.evaluate(SHIPPED, table, _typed(feedback), CANDIDATE, BASELINE, None)
    errors = guard(found, "error_rate")
    assert errors.outcome == "breach", errors.line()
    assert "20 of 1" in errors.line()  # 20 failed of the ~1,500 requests in the window
    assert evidence_many(20, candidate_rows.size, 0.01) < 1  # the end alone shows nothing


def test_guards_ten_points_less_accurate_breaches_once_labels_flow(tmp_path: Path) -> None:
    worse = Traffic(6000, 0.5, candidate=Arm(accuracy=0.8), baseline=Arm(accuracy=0.9))
    found = judged(worse, tmp_path)
    accuracy = guard(found, "accuracy")
    assert accuracy.outcome == "breach"
    assert accuracy.figures["high"] < -0.02  # type: ignore[operator]
    assert "95% always-valid" in accuracy.summary


def test_guards_labels_wait_unless_required(tmp_path: Path) -> None:
    few = Traffic(300, 0.25)
    table, _ = records(few)
    no_labels = predictionlog.FEEDBACK_SCHEMA.empty_table()
    relaxed = rollout_guards.evaluate(
        _policy(min_requests_per_step=50), table, no_labels, CANDIDATE, BASELINE, None
    )
    assert guard(relaxed, "accuracy").outcome == "no_data"
    assert relaxed.outcome == "pass"
    strict = rollout_guards.evaluate(
        _policy(min_requests_per_step=50, require_labels=True),
        table,
        no_labels,
        CANDIDATE,
        BASELINE,
        None,
    )
    assert strict.outcome == "no_data"
    assert "labelled rows: candidate 0" in strict.reason()


def test_guards_too_few_candidate_requests_is_no_data(tmp_path: Path) -> None:
    found = judged(Traffic(500, 0.05), tmp_path)
    assert guard(found, "requests").outcome == "no_data"
    assert found.outcome == "no_data"
    assert "candidate requests in the step" in found.reason()


def test_guards_shadowed_rows_that_disagree_breach(tmp_path: Path) -> None:
    found = judged(Traffic(3000, 0.2, shadowed=0.5, disagree=0.3), tmp_path)
    agreement = guard(found, "agreement")
    assert agreement.outcome == "breach"
    assert 0.65 < agreement.figures["share"] < 0.75  # type: ignore[operator]
    assert agreement.figures["rows"] > 1000  # type: ignore[operator]
    alike = judged(Traffic(3000, 0.2, shadowed=0.5), tmp_path / "alike")
    assert guard(alike, "agreement").outcome == "pass"
    assert guard(alike, "agreement").figures["share"] == 1.0


def test_guards_shadow_records_count_for_agreement_only(tmp_path: Path) -> None:
    """The candidate's shadow answers to baseline requests, however slow and however wrong,
    change no guard but agreement."""
    plain = judged(Traffic(3000, 0.2), tmp_path / "plain")
    table, feedback = records(Traffic(3000, 0.2, shadowed=0.5, disagree=0.5))
    shadow = np.asarray(table["assignment"].to_numpy(zero_copy_only=False)) == "shadow"
    assert shadow.sum() > 1000
    slow = np.where(shadow, 1e4, table["latency_ms"].to_numpy())
    table = table.set_column(11, "latency_ms", pa.array(slow))
    shadowed = rollout_guards.evaluate(SHIPPED, table, _typed(feedback), CANDIDATE, BASELINE, START)
    for name in ("requests", "error_rate", "latency_p99_ratio", "accuracy"):
        assert guard(shadowed, name) == guard(plain, name), name
    assert guard(plain, "agreement").outcome == "no_data"
    assert guard(shadowed, "agreement").outcome == "breach"


def test_guards_step_window_and_no_latency_judged_without_a_baseline(tmp_path: Path) -> None:
    """At 100% the baseline takes no traffic: latency is not judged (the few baseline requests
    answered before the replicas followed the split were under another load); errors before
    the step do not count against it."""
    earlier = Traffic(3000, 0.5, candidate=Arm(error_rate=0.3), seconds=60)
    later = Traffic(600, 1.0, candidate=Arm(latency_ms=30), start=START + timedelta(seconds=60),
                    seconds=30, seed=1)  # fmt: skip
    straggler = Traffic(200, 0.0, start=START + timedelta(seconds=60), seconds=2, seed=2)
    tables = [records(t)[0] for t in (earlier, later, straggler)]
    tables[2] = tables[2].set_column(0, "request_id", pa.array([f"x{i}" for i in range(200)]))
    table = pa.concat_tables(tables)
    step_start = START + timedelta(seconds=60)
    found = rollout_guards.evaluate(
        _policy(accuracy=None), table, _typed(None), CANDIDATE, BASELINE, step_start,
        concurrent=False,
    )  # fmt: skip
    assert guard(found, "error_rate").outcome == "pass"
    latency = guard(found, "latency_p99_ratio")
    assert (latency.outcome, latency.required) == ("no_data", False)
    assert found.outcome == "pass"
    judged_anyway = rollout_guards.evaluate(
        _policy(accuracy=None), table, _typed(None), CANDIDATE, BASELINE, step_start
    )
    assert guard(judged_anyway, "latency_p99_ratio").outcome == "breach"


def test_guards_empty_log_is_no_data() -> None:
    empty = predictionlog.PREDICTION_SCHEMA.empty_table()
    found = rollout_guards.evaluate(SHIPPED, empty, _typed(None), CANDIDATE, BASELINE, START)
    assert found.outcome == "no_data"


def test_evidence_is_valid_however_often_it_is_looked_at() -> None:
    """A candidate exactly at the bound, looked at after every request up to 2,000 (as each
    check's peak does), is declared in breach in at most 5% of 400 runs; one failing 1 in 20
    breaches by ~200."""
    rng = np.random.default_rng(0)
    failed = np.cumsum(rng.random((400, 2000)) < 0.01, axis=1)
    found = evidence_many(failed, np.arange(1, 2001), 0.01)
    assert (found >= 20).any(axis=1).mean() <= 0.05
    bad = np.cumsum(rng.random((400, 2000)) < 0.05, axis=1)
    detected = np.argmax(evidence_many(bad, np.arange(1, 2001), 0.01) >= 20, axis=1) + 1
    assert 60 < np.median(detected) < 250
    assert evidence_many([10, 2, 0], [200, 200, 0], 0.01).tolist()[2] == 1.0
    assert evidence_many(10, 200, 0.01) >= 20
    assert evidence_many(2, 200, 0.01) < 1
    burst = np.r_[np.ones(3, bool), np.zeros(500, bool)]  # the peak is what was ever seen
    assert peak_evidence(burst, 0.01) >= 20 > evidence_many(3, 503, 0.01)
    assert peak_evidence(np.zeros(0, bool), 0.01) == 1.0


# rollout.yaml


def test_policy_shipped_rollout_yaml_is_for_the_demo_classifier() -> None:
    assert SHIPPED.model == "cancer-classifier"
    assert SHIPPED.guards.error_rate is not None
    assert SHIPPED.guards.error_rate.max == 0.01


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("guards:\n  error_rate: {max: 0.01}\n  latency: {max: 2}\n", 3,
         "guards.latency: unknown key 'latency'; expected one of: error_rate"),
        ("guards: {}\n", 1, "name at least one of"),
        ("guards:\n  error_rate: {max: 5}\n", 2, "guards.error_rate.max: Input should be less"),
        ("guards:\n  error_rate: {max: 0.01}\n  error_rate: {max: 0.02}\n", 3, "duplicate key"),
        ("guards:\n  accuracy: {max_regression: 2}\n", 2, "accuracy only spans 1"),
        ("guards:\n  accuracy: {max_regression: 0.1}\n  rmse: {max_regression: 1}\n", 2,
         "label metrics of one task only"),
        ("guards:\n  error_rate: {max: 0.01}\nrequire_labels: true\n", 3,
         "require_labels: true needs a label-metric guard"),
        ("guards:\n  error_rate: {max: 0.01}\nmin_requests_per_step: 0\n", 3,
         "min_requests_per_step: Input should be greater than or equal to 1"),
        ("guards:\n  error_rate: {max: 0.01\n", 3, "not valid YAML"),
        ("- guards\n", 1, "a mapping with at least `guards:`"),
    ],
)  # fmt: skip
def test_policy_errors_name_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        rollout_policy.parse(text, source="rollout.yaml")
    assert f"rollout.yaml:{line}: " in str(caught.value)
    assert words in str(caught.value)


def test_policy_load_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"missing\.yaml: cannot read the guards"):
        rollout_policy.load(tmp_path / "missing.yaml")


def _policy(**changes: object) -> GuardPolicy:
    data = SHIPPED.model_dump()
    guards = data.pop("guards")
    if "accuracy" in changes:
        guards["accuracy"] = changes.pop("accuracy")
    return GuardPolicy.model_validate(
        data | {"guards": {k: v for k, v in guards.items() if v is not None}} | changes
    )


def _typed(feedback: pa.Table | None) -> pa.Table:
    if feedback is None:
        return predictionlog.FEEDBACK_SCHEMA.empty_table()
    ts = pa.array([START] * feedback.num_rows, pa.timestamp("us", tz="UTC"))
    return feedback.append_column("ts", ts).cast(predictionlog.FEEDBACK_SCHEMA)


def test_log_reader_reads_each_file_once_and_skips_old_ones(tmp_path: Path) -> None:
    import os

    now = datetime.now(UTC).replace(microsecond=0)
    root = predictionlog.open_root(str(tmp_path / "log"), {})
    first, labels = records(Traffic(100, 0.5, start=now - timedelta(seconds=20), seconds=5))
    written = predictionlog.write_predictions(root, "m", first, "replica-0")
    predictionlog.write_feedback(root, "m", labels.slice(0, 10), "labels-0")
    reader = rollout_guards.LogReader(root, "m", now - timedelta(seconds=30))
    predictions, feedback = reader.read(labels=True)
    assert (predictions.num_rows, feedback.num_rows) == (100, 10)
    for path in written:
        os.remove(path)  # read once: kept, never read again
    second, _ = records(Traffic(50, 0.5, start=now - timedelta(seconds=10), seconds=5, seed=1))
    second = second.set_column(0, "request_id", pa.array([f"s{i}" for i in range(50)]))
    predictionlog.write_predictions(root, "m", second, "replica-1")
    relabelled = labels.slice(0, 1).set_column(2, "target", pa.array([7.0]))
    predictionlog.write_feedback(root, "m", relabelled, "labels-1")
    # a file last modified long before the window cannot hold its records: not even opened
    stale = predictionlog.write_predictions(root, "m", second.slice(0, 1), "replica-2")[0]
    Path(stale).write_bytes(b"not parquet")
    old = (now - timedelta(hours=1)).timestamp()
    os.utime(stale, (old, old))
    predictions, feedback = reader.read(labels=True)
    assert predictions.num_rows == 150
    assert feedback.num_rows == 10  # the later label replaced the earlier one
    assert feedback.filter(pa.compute.equal(feedback["request_id"], "r0"))["target"][0].as_py() == 7
    assert reader.read(labels=False)[1].num_rows == 0
