"""The rollout controller and its commands against the session's real MLflow server, with steps
of a second or two. A simulator stands in for serving and its log writer: it follows the
split in the registry as a replica's poll does and logs each tick's requests under a local
log root, one file per tick."""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import Result
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from gates import rollout, rollout_policy
from gates.rollout import Controller, RolloutSpec
from modelyard.cli import app
from registry import history, predictionlog, rollouts
from registry import split as traffic
from registry.predictionlog import LogRoot
from tests.conftest import wait_until

GUARDS = """\
guards:
  error_rate: {max: 0.01}
  latency_p99_ratio: {max: 1.5}
  accuracy: {max_regression: 0.02}
min_requests_per_step: 20
min_labels: 50
"""
FAST = ("--step-seconds", "1.5", "--check-seconds", "0.5", "--data-wait-seconds", "3")


@dataclass
class Behaviour:
    """How one version answers in the simulation."""

    error_rate: float = 0.0
    latency_ms: float = 5.0
    accuracy: float = 0.9


@dataclass
class Model:
    """A registered model of its own: v1 @production, v2 @staging, v3 spare."""

    name: str
    root: LogRoot
    guard: Path
    client: MlflowClient
    behaviour: dict[str, Behaviour] = field(default_factory=dict)


class Simulator(threading.Thread):
    """Serving and its log writer, simulated: requests split by the registry's split."""

    def __init__(self, model: Model, rate: float = 200, tick_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.model = model
        self.rate = rate
        self.tick_s = tick_s
        self.stopped = threading.Event()
        self.rng = np.random.default_rng(0)
        self.seq = 0

    def run(self) -> None:
        polled = 0.0
        aliases: dict[str, str] = {}
        weights: dict[str, float] = {}
        while not self.stopped.wait(self.tick_s):
            if time.monotonic() - polled > 0.5:  # a replica's poll
                snap = rollouts.snapshot(self.model.client, self.model.name)
                aliases = dict(snap.aliases)
                found = traffic.of_tags(snap.tags)
                weights = dict(found.weights) or {"production": 1.0}
                polled = time.monotonic()
            self._log(aliases, weights)

    def _log(self, aliases: dict[str, str], weights: dict[str, float]) -> None:
        routed = [a for a, w in weights.items() if w > 0 and a in aliases]
        if not routed:
            return
        n = max(int(self.rate * self.tick_s), 1)
        share = np.array([weights[a] for a in routed]) / sum(weights[a] for a in routed)
        chosen = self.rng.choice(len(routed), n, p=share)
        alias = np.array(routed)[chosen]
        version = np.array([aliases[a] for a in alias])
        behaviour = [self.model.behaviour.get(v, Behaviour()) for v in version]
        failed = np.array([self.rng.random() < b.error_rate for b in behaviour])
        latency = np.array([b.latency_ms for b in behaviour]) * self.rng.gamma(8, 1 / 8, n)
        target = self.rng.integers(0, 2, n)
        correct = np.array([self.rng.random() < b.accuracy for b in behaviour])
        label = np.where(correct, target, 1 - target)
        now = datetime.now(UTC)
        ids = [f"{self.seq}-{i}" for i in range(n)]
        table = pa.table(
            {
                "request_id": ids,
                "row": np.zeros(n, "int32"),
                "ts": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
                "alias": alias,
                "version": version,
                "run_id": ["run"] * n,
                "assignment": ["key"] * n,
                "salt": ["s"] * n,
                "key_hash": pa.nulls(n, pa.string()),
                "sample_rate": np.ones(n),
                "status": np.where(failed, 500, 200).astype("int16"),
                "latency_ms": latency,
                "label": pa.array(label, pa.int64(), mask=failed),
                "probability": pa.array(np.where(label == 1, 0.8, 0.2), mask=failed),
                "prediction": pa.nulls(n, pa.float64()),
            }
        )
        predictionlog.write_predictions(self.model.root, self.model.name, table, f"sim-{self.seq}")
        answered = ~failed
        labels = pa.table(
            {
                "request_id": [i for i, keep in zip(ids, answered, strict=True) if keep],
                "row": np.zeros(int(answered.sum()), "int32"),
                "target": target[answered].astype("float64"),
            }
        )
        predictionlog.write_feedback(self.model.root, self.model.name, labels, f"sim-{self.seq}")
        self.seq += 1

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


@pytest.fixture
def model(tracking_uri: str, tmp_path: Path) -> Model:
    client = MlflowClient(tracking_uri)
    name = f"rollout-{uuid.uuid4().hex[:8]}"
    experiment = client.get_experiment_by_name("Default")
    assert experiment is not None
    run = client.create_run(experiment.experiment_id)
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(name, "production", "1")
    client.set_registered_model_alias(name, "staging", "2")
    guard = tmp_path / "rollout.yaml"
    guard.write_text(GUARDS)
    root = predictionlog.open_root(str(tmp_path / "log"), {})
    return Model(name, root, guard, client)


@pytest.fixture
def simulated(model: Model) -> Iterator[Simulator]:
    simulator = Simulator(model)
    simulator.start()
    yield simulator
    simulator.stop()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"MODELYARD_ACTOR": "alice"})


def start(model: Model, *args: str) -> Result:
    return invoke(
        "rollout", model.name, "--log", model.root.path, "--guard", str(model.guard), *args
    )


def split_of(model: Model) -> traffic.Split:
    return traffic.read(model.client, model.name)


def aliases(model: Model) -> dict[str, str]:
    return dict(rollouts.snapshot(model.client, model.name).aliases)


def events(model: Model) -> list[history.Move]:
    return history.read(model.client, model.name)[1]


def recorded(model: Model) -> rollouts.Rollout:
    found = rollout.status(model.client, model.name)[0]
    assert found is not None
    return found


def test_rollout_healthy_candidate_is_promoted_with_every_step_in_history(
    model: Model, simulated: Simulator
) -> None:
    result = start(model, "--steps", "50,100", *FAST)
    assert result.exit_code == 0, result.output
    assert "step 1/2: staging takes 50%" in result.output
    assert "passed: every step passed; production -> v2" in result.output
    assert aliases(model) == {"production": "2", "staging": "2"}
    split = split_of(model)
    assert {a: w for a, w in split.weights.items() if w > 0} == {"production": 100}
    assert split.salt.startswith("rollout-")  # there was no split: a fresh salt
    done = recorded(model)
    assert (done.status, done.step) == ("passed", 1)
    kinds = [(m.kind, m.alias, m.reason.split(":")[0]) for m in events(model)]
    assert kinds == [
        ("rollout", "staging", f"rollout {done.id} step 1/2"),
        ("rollout", "staging", f"rollout {done.id} step 2/2"),
        ("outside", "production", "noticed by alice"),  # `production` was set without history
        ("promote", "production", "rollout passed"),
        ("rollout", "staging", f"rollout {done.id} passed after step 2/2; production -> v2, "
                               "split reset to production alone"),
    ]  # fmt: skip
    promote = events(model)[3]
    assert (promote.from_version, promote.to_version, promote.actor) == ("1", "2", "alice")
    assert promote.reason == f"rollout passed: {done.run_id}"
    assert "; step 1 passed (" in events(model)[1].reason
    assert "errors 0/" in events(model)[1].reason
    # the run in modelyard-experiments holds every check and each step's evidence
    assert done.run_id is not None
    run = model.client.get_run(done.run_id)
    assert model.client.get_experiment(run.info.experiment_id).name == "modelyard-experiments"
    assert run.info.status == "FINISHED"
    assert run.data.tags["modelyard.rollout.outcome"] == "passed"
    assert run.data.params["steps"] == "50,100"
    checks = model.client.get_metric_history(done.run_id, "error_rate.rate")
    assert len(checks) == done.checks
    files = {a.path for a in model.client.list_artifacts(done.run_id, "rollout")}
    assert files == {"rollout/step-1.json", "rollout/step-2.json", "rollout/outcome.json"}
    # status reads it all back from the registry
    shown = invoke("rollout", "status", model.name)
    assert shown.exit_code == 0
    assert f"rollout {done.id}: passed at step 2/2 (100%)" in shown.output
    assert "split now  production 100, staging 0 (salt 'rollout-" in shown.output


def test_rollout_breach_sets_the_candidate_weight_to_zero_with_the_figures(
    model: Model, simulated: Simulator
) -> None:
    model.behaviour["2"] = Behaviour(error_rate=0.3)
    before = time.monotonic()
    result = start(model, "--steps", "50,100", "--step-seconds", "10", "--check-seconds", "0.5")
    assert result.exit_code == 1, result.output
    assert time.monotonic() - before < 8  # at a check, not at the step's end
    assert "breached: breach at step 1/2 (50%): error_rate (max 0.01): BREACH" in result.output
    split = split_of(model)
    assert (split.weights["staging"], split.weights["production"]) == (0, 100)
    assert aliases(model) == {"production": "1", "staging": "2"}  # nothing promoted
    last = events(model)[-1]
    assert (last.kind, last.alias, last.from_version, last.to_version) == (
        "rollout-rollback", "staging", "2", "2",
    )  # fmt: skip
    assert "error_rate (max 0.01): BREACH: candidate" in last.reason
    assert "requests failed); evidence" in last.reason
    done = recorded(model)
    assert done.status == "breached"
    assert done.run_id is not None
    assert model.client.get_run(done.run_id).data.tags["modelyard.rollout.outcome"] == "breached"


def test_rollout_alias_moved_by_a_person_stops_it_and_leaves_the_alias(
    model: Model, simulated: Simulator
) -> None:
    mover = threading.Timer(
        1.2, model.client.set_registered_model_alias, (model.name, "staging", "3")
    )
    mover.start()
    result = start(model, "--steps", "50,100", "--step-seconds", "10", "--check-seconds", "0.5")
    mover.join()
    assert result.exit_code == 1, result.output
    assert "staging was moved from v2 to v3 during the rollout" in result.output
    assert aliases(model)["staging"] == "3"
    split = split_of(model)
    assert (split.weights["staging"], split.weights["production"]) == (50, 50)  # untouched
    assert recorded(model).status == "aborted"


def test_rollout_split_edited_by_a_person_stops_it_and_leaves_the_split(
    model: Model, simulated: Simulator
) -> None:
    edited = traffic.Split({"production": 90, "staging": 10}, "mine")
    editor = threading.Timer(1.2, traffic.write, (model.client, model.name, edited))
    editor.start()
    result = start(model, "--steps", "50,100", "--step-seconds", "10", "--check-seconds", "0.5")
    editor.join()
    assert result.exit_code == 1, result.output
    assert "the traffic split was changed to production 90, staging 10 (salt 'mine')" in (
        result.output
    )
    assert split_of(model).same_as(edited)


class Killed(BaseException):
    """The controller's process dies (nothing catches it, nothing is cleaned up)."""


class DyingClock(rollout.SystemClock):
    """The wall clock, until the controller has entered step `step` (0-based)."""

    def __init__(self, model: Model, step: int) -> None:
        self.model = model
        self.step = step

    def sleep(self, seconds: float) -> None:
        if recorded(self.model).step >= self.step:
            raise Killed
        super().sleep(seconds)


def spec(model: Model, **changes: object) -> RolloutSpec:
    policy, digest = rollout_policy.load(model.guard)
    fields: dict[str, object] = {
        "name": model.name, "policy": policy, "guard_path": str(model.guard),
        "guard_sha256": digest, "steps": (30.0, 60.0, 100.0), "step_seconds": 1.5,
        "check_seconds": 0.5, "data_wait_seconds": 3.0,
    }  # fmt: skip
    return RolloutSpec(**(fields | changes))  # type: ignore[arg-type]


def test_rollout_killed_controller_resumes_from_its_step(
    model: Model, simulated: Simulator
) -> None:
    with pytest.raises(Killed):
        Controller(model.client, model.root, spec(model), clock=DyingClock(model, 1)).run()
    dead = recorded(model)
    assert (dead.status, dead.step) == ("running", 1)
    assert split_of(model).weights["staging"] == 60
    again = start(model, "--steps", "30,60,100")  # a second rollout is refused meanwhile
    assert again.exit_code == 2
    assert "has a rollout running" in again.output
    time.sleep(0.5)
    resumed = start(model, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming rollout" in resumed.output
    assert "at step 2/3 (60%)" in resumed.output
    done = recorded(model)
    assert (done.id, done.run_id, done.status, done.step) == (
        dead.id, dead.run_id, "passed", 2,
    )  # fmt: skip
    steps = [m.reason.split(":")[0] for m in events(model) if m.kind == "rollout"]
    assert steps == [
        f"rollout {dead.id} step 1/3",
        f"rollout {dead.id} step 2/3",
        f"rollout {dead.id} resumed at step 2/3 (60%)",
        f"rollout {dead.id} step 3/3",
        f"rollout {dead.id} passed after step 3/3; production -> v2, split reset to "
        "production alone",
    ]
    assert aliases(model)["production"] == "2"


def test_rollout_resume_refuses_other_guards(model: Model, simulated: Simulator) -> None:
    with pytest.raises(Killed):
        Controller(model.client, model.root, spec(model), clock=DyingClock(model, 0)).run()
    model.guard.write_text(GUARDS.replace("0.01", "0.02"))
    result = start(model, "--resume")
    assert result.exit_code == 2
    assert "are not the ones the rollout started with" in result.output


def test_rollout_abort_stops_the_controller(model: Model, simulated: Simulator) -> None:
    outcome: list[rollout.Finished] = []
    controller = Controller(model.client, model.root, spec(model, step_seconds=10.0))
    runner = threading.Thread(target=lambda: outcome.append(controller.run()))
    runner.start()
    wait_until(lambda: _running(model), timeout_s=20, what="the rollout to start")
    result = invoke("rollout", "abort", model.name, "--reason", "pager went off")
    assert result.exit_code == 0, result.output
    assert split_of(model).weights["staging"] == 0  # at once, not at the controller's check
    runner.join(20)
    assert (outcome[0].status, outcome[0].exit_code) == ("aborted", 1)
    assert "aborted by alice: pager went off" in outcome[0].reason
    last = events(model)[-1]
    assert (last.kind, last.actor) == ("rollout-rollback", "alice")
    shown = invoke("rollout", "status", model.name, "--format", "json")
    assert json.loads(shown.output)["rollout"]["status"] == "aborted"
    again = invoke("rollout", "abort", model.name)
    assert again.exit_code == 1
    assert "has no rollout running (the last one aborted)" in again.output


def test_rollout_without_data_gives_up_with_exit_2(model: Model) -> None:
    result = start(model, "--steps", "100", "--step-seconds", "1", "--check-seconds", "0.5",
                   "--data-wait-seconds", "1")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "failed: no data: step 1/1 (100%) still lacked data" in result.output
    assert "0 candidate requests in the step" in result.output
    split = split_of(model)
    assert (split.weights["staging"], split.weights["production"]) == (0, 100)
    assert recorded(model).status == "failed"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--steps", "50,25"), "each above the last"),
        (("--steps", "0,100"), "a candidate weight in percent"),
        (("--candidate", "production"), "both name version 1: nothing to roll out"),
        (("--candidate", "canary"), "has no alias 'canary'"),
        (("--resume",), "has no rollout running: nothing to resume"),
    ],
)
def test_rollout_refuses_what_it_cannot_do(model: Model, args: tuple[str, ...], words: str) -> None:
    result = start(model, *args)
    assert result.exit_code == 2
    assert words in result.output
    assert "Traceback" not in result.output
    assert traffic.TAG not in rollouts.snapshot(model.client, model.name).tags


def test_rollout_refuses_guards_of_another_model(model: Model) -> None:
    model.guard.write_text("model: cancer-classifier\n" + GUARDS)
    result = start(model)
    assert result.exit_code == 2
    assert "are for model 'cancer-classifier'" in result.output
    shown = invoke("rollout", "status", model.name)
    assert (shown.exit_code, shown.output) == (0, f"{model.name}: no rollout recorded\n")


def test_history_rollout_events_are_not_alias_moves(model: Model) -> None:
    """A traffic event between two alias moves: rollback still returns to the earlier one."""
    history.promote(model.client, model.name, "staging", "3")
    history.record_traffic(
        model.client, model.name, "staging", "3", kind="rollout-rollback", reason="test"
    )
    moved = history.rollback(model.client, model.name, "staging")
    assert (moved.from_version, moved.to_version) == ("3", "2")


# experiment check


def test_experiment_check_exit_codes(model: Model) -> None:
    from tests.test_rollout_guards import Arm, Traffic, records

    now = datetime.now(UTC).replace(microsecond=0)
    healthy = Traffic(2000, 0.3, start=now - timedelta(minutes=8), seconds=60)
    failing = Traffic(2000, 0.3, candidate=Arm(error_rate=0.1), start=now - timedelta(minutes=4),
                      seconds=60, seed=1)  # fmt: skip
    for n, traffic_ in enumerate((healthy, failing)):
        table, _ = records(traffic_)
        predictionlog.write_predictions(model.root, model.name, table, f"check-{n}")
    base = ("experiment", "check", model.name, "--log", model.root.path, "--guard",
            str(model.guard))  # fmt: skip
    passed = invoke(*base, "--since", healthy.start.isoformat(), "--until",
                    (now - timedelta(minutes=6)).isoformat())  # fmt: skip
    assert passed.exit_code == 0, passed.output
    assert ": PASS" in passed.output
    assert "error_rate (max 0.01): pass" in passed.output
    breached = invoke(*base, "--format", "json")  # the last 10 minutes
    assert breached.exit_code == 1, breached.output
    document = json.loads(breached.output)
    assert (document["outcome"], document["exit_code"]) == ("breach", 1)
    empty = invoke(*base, "--since", (now + timedelta(minutes=1)).isoformat())
    assert empty.exit_code == 2
    assert "NO DATA" in empty.output
    unknown = invoke("experiment", "check", "no-such-model", "--log", model.root.path,
                     "--guard", str(model.guard))  # fmt: skip
    assert unknown.exit_code == 2
    assert "no registered model named 'no-such-model'" in unknown.output


def _running(model: Model) -> bool:
    found = rollout.status(model.client, model.name)[0]
    return found is not None and found.status == "running"
