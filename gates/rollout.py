"""The guarded progressive rollout: shift traffic to a candidate step by step, judge each step
on the prediction log, promote on evidence, roll back on a breach, and never fight a person.

A rollout is driven by one controller process and recorded in the registry alone:

- the traffic split (`modelyard.traffic`), which every serving replica follows at its next poll;
- the rollout record (`modelyard.rollout`, registry.rollouts): candidate and baseline versions,
  steps, the step under way and when it started, the guards' digest, the controller's token;
- an abort request (`modelyard.rollout.abort`), written by `modelyard rollout abort` and never
  by a controller, so that no controller write can overwrite it;
- the alias history (a `rollout` event per step, a `rollout-rollback` event when the candidate's
  weight goes back to 0, the promotion itself);
- an MLflow run in `modelyard-experiments` with every check's figures and each step's evidence.

At each check the controller reads the model once. If an alias it relies on moved, the split is
not the one it wrote, the rollout was aborted or another controller took it over, it stops at
once (exit 1) and leaves everything as the person (or the other controller) set it.
"""

import json
import logging
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Protocol

from gates import experiment, rollout_guards
from gates.errors import GateError
from gates.rollout_guards import Evaluation, LogReader
from gates.rollout_policy import GuardPolicy
from registry import history, predictionlog, rollouts, runs
from registry import split as traffic
from registry.client import Client
from registry.errors import AliasNotFound, StaleAlias
from registry.predictionlog import LogRoot, PredictionLogError
from registry.refs import ModelRef
from registry.rollouts import Rollout, Snapshot, Status
from registry.split import Split

logger = logging.getLogger(__name__)

ABORT_TAG = "modelyard.rollout.abort"
"""Registered-model tag: `{"id": <rollout id>, "by": ..., "at": ..., "reason": ...}`."""
EXIT_CODES: dict[Status, int] = {
    "passed": 0,
    "breached": 1,
    "aborted": 1,
    "failed": 2,
    "running": 2,
}


class RolloutError(GateError):
    """The rollout cannot start, resume or go on (exit 2); the reason names what is wrong."""


class NoRollout(RolloutError):
    """The model has no rollout running."""

    def __init__(self, model: str, detail: str = "") -> None:
        super().__init__(f"model '{model}' has no rollout running{detail}")
        self.model = model


class Clock(Protocol):
    """Where the controller reads the time and waits (tests and benchmarks pass their own)."""

    def now(self) -> datetime:
        """The time now, in UTC."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """The time now, in UTC."""
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` (nothing for a negative or zero wait)."""
        import time

        if seconds > 0:
            time.sleep(seconds)


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """What to roll out, how, and against which guards."""

    name: str
    policy: GuardPolicy
    guard_path: str
    guard_sha256: str
    candidate: str = "staging"
    baseline: str = "production"
    steps: tuple[float, ...] | None = (5, 25, 50, 100)
    """The candidate's weight at each step, in percent (None on resume: the recorded ones)."""
    step_seconds: float = 300
    check_seconds: float | None = None
    """Between checks; default: a tenth of a step, between 1 and 30 s."""
    data_wait_seconds: float | None = None
    """How long past a step's end to wait for the data it needs; default: one step."""
    promote: str | None = "production"
    """The alias moved to the candidate after the last step; None: none (the split stays)."""
    resume: bool = False


@dataclass(frozen=True, slots=True)
class Finished:
    """How a rollout ended (or this controller's part in it)."""

    status: Status
    rollout: Rollout | None
    """The rollout as this controller left it (None if its record was deleted)."""
    reason: str
    evaluation: Evaluation | None = None

    @property
    def exit_code(self) -> int:
        """0 passed (promoted), 1 breached or stopped by a person, 2 could not judge."""
        return EXIT_CODES[self.status]


class _Stop(Exception):
    """Ends the check loop with a finished rollout."""

    def __init__(self, finished: Finished) -> None:
        super().__init__(finished.reason)
        self.finished = finished


def check_steps(steps: tuple[float, ...]) -> tuple[float, ...]:
    """Steps as given, checked: at least one, each in (0, 100], strictly increasing."""
    if not steps:
        raise RolloutError("give at least one step")
    for step in steps:
        if not 0 < step <= 100:
            raise RolloutError(f"step {step:g}: a candidate weight in percent, in (0, 100]")
    if any(later <= earlier for earlier, later in pairwise(steps)):
        raise RolloutError(f"steps {', '.join(f'{s:g}' for s in steps)}: each above the last")
    return steps


class Controller:
    """Drives one rollout of one model; `run` returns how it ended."""

    def __init__(
        self,
        client: Client,
        root: LogRoot,
        spec: RolloutSpec,
        *,
        clock: Clock | None = None,
        say: Callable[[str], None] | None = None,
        who: str | None = None,
    ) -> None:
        self.client = client
        self.root = root
        self.spec = spec
        self.clock = clock or SystemClock()
        self.say = say or (lambda line: None)
        self.who = who or history.actor()
        self.token = secrets.token_hex(8)
        self.reader: LogReader | None = None

    # -- the whole rollout ---------------------------------------------------------------------

    def run(self) -> Finished:
        """Start (or resume) the rollout and drive it to its end."""
        try:
            rollout = self._resume() if self.spec.resume else self._start()
            while True:
                evaluation = self._step(rollout)
                if rollout.step + 1 == len(rollout.steps):
                    return self._pass(rollout, evaluation)
                rollout = self._enter_step(self._current(), rollout.step + 1, evaluation)
        except _Stop as stop:
            return stop.finished

    # -- start, resume -------------------------------------------------------------------------

    def _start(self) -> Rollout:
        spec = self.spec
        steps = check_steps(spec.steps or ())
        self._check_model()
        snap = rollouts.snapshot(self.client, spec.name)
        existing = self._effective(snap)
        if existing is not None and existing.status == "running":
            raise RolloutError(
                f"model '{spec.name}' has a rollout running (v{existing.candidate_version} at "
                f"step {existing.step + 1}/{len(existing.steps)}, last check "
                f"{existing.checked or 'never'}): resume it with --resume or stop it with "
                "`modelyard rollout abort`"
            )
        candidate = self._version(snap, spec.candidate)
        baseline = self._version(snap, spec.baseline)
        if candidate == baseline:
            raise RolloutError(
                f"'{spec.candidate}' and '{spec.baseline}' both name version {candidate}: "
                "nothing to roll out"
            )
        if spec.promote == spec.candidate:
            raise RolloutError(f"--promote {spec.promote}: that is the candidate's own alias")
        current = traffic.of_tags(snap.tags)
        if traffic.TAG in snap.tags and current.problem:
            raise RolloutError(f"{current.problem}: fix or delete the tag before a rollout")
        others = sorted(
            a
            for a, w in current.weights.items()
            if w > 0 and a not in (spec.candidate, spec.baseline)
        )
        if others:
            raise RolloutError(
                f"the split gives traffic to {', '.join(others)} too: a rollout shares traffic "
                f"between '{spec.candidate}' and '{spec.baseline}' only"
            )
        salt = current.salt if traffic.TAG in snap.tags else f"rollout-{secrets.token_hex(4)}"
        now = self._now()
        record = runs.start(
            self.client,
            experiment.EXPERIMENT,
            f"rollout {spec.name} v{candidate} vs v{baseline}",
            tags={
                "modelyard.rollout.model": spec.name,
                "modelyard.rollout.candidate": f"{spec.name}/v{candidate}",
                "modelyard.rollout.baseline": f"{spec.name}/v{baseline}",
            },
            params={
                "model": spec.name,
                "candidate.alias": spec.candidate,
                "candidate.version": candidate,
                "baseline.alias": spec.baseline,
                "baseline.version": baseline,
                "steps": ",".join(f"{s:g}" for s in steps),
                "step_seconds": f"{spec.step_seconds:g}",
                "check_seconds": f"{self._check_seconds():g}",
                "data_wait_seconds": f"{self._data_wait():g}",
                "guard.path": spec.guard_path[:500],
                "guard.sha256": spec.guard_sha256,
                "promote": spec.promote or "",
                "salt": salt,
                "log": self.root.location[:500],
            },
        )
        rollout = Rollout(
            id=secrets.token_hex(6),
            status="running",
            candidate_alias=spec.candidate,
            candidate_version=candidate,
            baseline_alias=spec.baseline,
            baseline_version=baseline,
            promote=spec.promote,
            promote_expect=snap.aliases.get(spec.promote) if spec.promote else None,
            steps=steps,
            step=0,
            step_seconds=spec.step_seconds,
            check_seconds=self._check_seconds(),
            data_wait_seconds=self._data_wait(),
            started=_iso(now),
            step_started=_iso(now),
            checked=None,
            guard_path=spec.guard_path,
            guard_sha256=spec.guard_sha256,
            split=Split({}, salt).encode(),
            previous_split=snap.tags.get(traffic.TAG),
            run_id=record.run_id,
            run_url=record.url,
            controller=self.token,
            actor=self.who,
        )
        runs_tag = {"modelyard.rollout.id": rollout.id}
        rollouts.tag_run(self.client, record.run_id, runs_tag)
        self.say(
            f"rollout {rollout.id} of {spec.name}: {spec.candidate} v{candidate} against "
            f"{spec.baseline} v{baseline}, steps {_steps(steps)} % of traffic, "
            f"{spec.step_seconds:g} s each, checked every {rollout.check_seconds:g} s"
        )
        if record.url:
            self.say(f"mlflow run: {record.url}")
        return self._enter_step(rollout, 0, None)

    def _resume(self) -> Rollout:
        spec = self.spec
        self._check_model()
        snap = rollouts.snapshot(self.client, spec.name)
        rollout = self._effective(snap)
        if rollout is None or rollout.status != "running":
            detail = f" (the last one {rollout.status})" if rollout else ""
            raise NoRollout(spec.name, f"{detail}: nothing to resume")
        if rollout.guard_sha256 != spec.guard_sha256:
            raise RolloutError(
                f"the guards in {spec.guard_path} (sha256 {spec.guard_sha256[:12]}) are not the "
                f"ones the rollout started with ({rollout.guard_path}, sha256 "
                f"{rollout.guard_sha256[:12]}): resume with those, or abort and start again"
            )
        if spec.steps is not None and tuple(spec.steps) != rollout.steps:
            raise RolloutError(
                f"--steps {_steps(spec.steps)}: the rollout runs steps {_steps(rollout.steps)}"
            )
        candidate = ModelRef(spec.name, rollout.candidate_version, alias=rollout.candidate_alias)
        written = traffic.parse(rollout.split)
        now_split = traffic.of_tags(snap.tags)
        if not now_split.same_as(written):
            untouched = (
                traffic.TAG not in snap.tags
                if rollout.previous_split is None
                else now_split.same_as(traffic.parse(rollout.previous_split))
            )
            if untouched:  # the controller died between recording the step and its split
                traffic.write(self.client, spec.name, written)
                snap = rollouts.snapshot(self.client, spec.name)
        rollout = replace(rollout, controller=self.token)
        interference = _interference(snap, rollout)
        if interference:
            self._stop_for(rollout, interference)
        rollouts.write(self.client, spec.name, rollout)
        self.say(
            f"resuming rollout {rollout.id} of {spec.name}: {candidate.alias} "
            f"v{candidate.version} at step {rollout.step + 1}/{len(rollout.steps)} "
            f"({rollout.weight:g}%), started {rollout.step_started}"
        )
        history.record_traffic(
            self.client,
            spec.name,
            rollout.candidate_alias,
            rollout.candidate_version,
            kind="rollout",
            reason=f"rollout {rollout.id} resumed at step {rollout.step + 1}/"
            f"{len(rollout.steps)} ({rollout.weight:g}%)",
            who=self.who,
        )
        if rollout.run_id:
            rollouts.tag_run(
                self.client, rollout.run_id, {"modelyard.rollout.resumed": _iso(self._now())}
            )
        return rollout

    def _check_model(self) -> None:
        wanted = self.spec.policy.model
        if wanted is not None and wanted != self.spec.name:
            raise RolloutError(
                f"the guards in {self.spec.guard_path} are for model '{wanted}', not "
                f"'{self.spec.name}'"
            )

    def _version(self, snap: Snapshot, alias: str) -> str:
        version = snap.aliases.get(alias)
        if version is None:
            raise AliasNotFound(self.spec.name, alias)
        return version

    # -- steps ---------------------------------------------------------------------------------

    def _enter_step(self, rollout: Rollout, index: int, passed: Evaluation | None) -> Rollout:
        """Record the step, then set its split (so a controller that dies in between finds the
        step recorded and the previous split still in place, and writes it on resume)."""
        weight = rollout.steps[index]
        split = traffic.parse(rollout.split).with_weights(
            {rollout.baseline_alias: 100 - weight, rollout.candidate_alias: weight}
        )
        rollout = replace(
            rollout,
            step=index,
            step_started=_iso(self._now()),
            split=split.encode(),
            previous_split=rollout.split if index else rollout.previous_split,
        )
        rollouts.write(self.client, self.spec.name, rollout)
        traffic.write(self.client, self.spec.name, split)
        # An abort written while this step was being set must win over it.
        self._honour_abort(rollout)
        why = f"; step {index} passed ({_short(passed)})" if passed else ""
        history.record_traffic(
            self.client,
            self.spec.name,
            rollout.candidate_alias,
            rollout.candidate_version,
            kind="rollout",
            reason=f"rollout {rollout.id} step {index + 1}/{len(rollout.steps)}: "
            f"{rollout.candidate_alias} v{rollout.candidate_version} takes {weight:g}% of "
            f"traffic, {rollout.baseline_alias} v{rollout.baseline_version} "
            f"{100 - weight:g}%{why}",
            who=self.who,
        )
        self.say(
            f"step {index + 1}/{len(rollout.steps)}: {rollout.candidate_alias} takes {weight:g}% "
            f"for {rollout.step_seconds:g} s"
        )
        return rollout

    def _step(self, rollout: Rollout) -> Evaluation:
        """Check until the step has passed (its time is up and every required guard passed);
        a breach, a person's move or no data in time ends the rollout (_Stop)."""
        step_started = datetime.fromisoformat(rollout.step_started)
        step_end = step_started + timedelta(seconds=rollout.step_seconds)
        give_up = step_end + timedelta(seconds=rollout.data_wait_seconds)
        while True:
            now = self._now()
            wake = now + timedelta(seconds=rollout.check_seconds)
            if now < step_end:
                wake = min(wake, step_end)
            self.clock.sleep((wake - now).total_seconds())
            read_at = self._now()
            rollout = self._current()
            evaluation = self._evaluate(rollout)
            now = self._now()
            rollout = replace(rollout, checked=_iso(now), checks=rollout.checks + 1)
            into = (read_at - step_started).total_seconds()
            took = (now - read_at).total_seconds()
            self.say(
                f"  check {rollout.checks} ({into:.1f} s into step {rollout.step + 1}, took "
                f"{took:.1f} s): {evaluation.outcome.replace('_', ' ')}: {_short(evaluation)}"
            )
            if evaluation.outcome == "breach":
                self._halt(
                    rollout, evaluation, "breached", self._breach_reason(rollout, evaluation)
                )
            rollouts.write(self.client, self.spec.name, rollout)
            self._record_check(rollout, evaluation)
            if read_at >= step_end and evaluation.outcome == "pass":
                self._attach_step(rollout, evaluation)
                return evaluation
            if now >= give_up:
                self._halt(
                    rollout,
                    evaluation,
                    "failed",
                    f"no data: step {rollout.step + 1}/{len(rollout.steps)} "
                    f"({rollout.weight:g}%) still lacked data "
                    f"{rollout.data_wait_seconds:g} s after its end: {evaluation.reason()}",
                )

    def _current(self) -> Rollout:
        """The rollout as the registry records it now, unless this controller must stop."""
        snap = rollouts.snapshot(self.client, self.spec.name)
        try:
            found = snap.rollout(self.spec.name)
        except rollouts.UnreadableRollout as exc:
            raise RolloutError(str(exc)) from None
        if found is None:
            raise _Stop(self._finished_elsewhere(None, "the rollout tag was deleted"))
        abort = _abort_of(snap, found.id)
        if abort is not None:
            raise _Stop(
                self._finished_elsewhere(found.ended("aborted", abort), f"aborted: {abort}")
            )
        if found.controller != self.token:
            raise _Stop(
                self._finished_elsewhere(
                    found, "another controller took the rollout over (--resume elsewhere)"
                )
            )
        if found.status != "running":
            raise _Stop(self._finished_elsewhere(found, f"the rollout is {found.status}"))
        interference = _interference(snap, found)
        if interference:
            self._stop_for(found, interference)
        return found

    def _evaluate(self, rollout: Rollout) -> Evaluation:
        """The guards over the step's window (labels over the rollout's)."""
        candidate = ModelRef(
            self.spec.name, rollout.candidate_version, alias=rollout.candidate_alias
        )
        baseline = ModelRef(self.spec.name, rollout.baseline_version, alias=rollout.baseline_alias)
        step_started = datetime.fromisoformat(rollout.step_started)
        if self.reader is None or self.reader.window.since != datetime.fromisoformat(
            rollout.started
        ):
            self.reader = LogReader(
                self.root, self.spec.name, datetime.fromisoformat(rollout.started)
            )
        try:
            predictions, feedback = self.reader.read(labels=bool(self.spec.policy.guards.metrics()))
        except PredictionLogError as exc:  # judged as no data; in time, a failure (exit 2)
            logger.warning("rollout %s: cannot read the log: %s", rollout.id, exc)
            self.say(f"  cannot read the log: {exc}")
            predictions = predictionlog.PREDICTION_SCHEMA.empty_table()
            feedback = predictionlog.FEEDBACK_SCHEMA.empty_table()
        return rollout_guards.evaluate(
            self.spec.policy,
            predictions,
            feedback,
            candidate,
            baseline,
            step_started,
            concurrent=rollout.weight < 100,
        )

    # -- endings -------------------------------------------------------------------------------

    def _pass(self, rollout: Rollout, evaluation: Evaluation) -> Finished:
        """The last step passed: promote, give the baseline alias all traffic, record it."""
        rollout = self._current()
        name = self.spec.name
        reason = f"rollout passed: {rollout.run_id}"
        moved = ""
        if rollout.promote:
            try:
                history.promote(
                    self.client,
                    name,
                    rollout.promote,
                    rollout.candidate_version,
                    expect=rollout.promote_expect,
                    reason=reason,
                    who=self.who,
                )
            except (StaleAlias, history.AliasOvertaken) as exc:
                self._stop_for(rollout, f"the promotion was refused: {exc}")
            split = traffic.parse(rollout.split).with_weights(
                {rollout.baseline_alias: 100, rollout.candidate_alias: 0}
            )
            traffic.write(self.client, name, split)
            moved = (
                f"; {rollout.promote} -> v{rollout.candidate_version}, split reset to "
                f"{rollout.baseline_alias} alone"
            )
            rollout = replace(rollout, split=split.encode(), previous_split=rollout.split)
        ended = rollout.ended("passed", f"every step passed{moved}")
        rollouts.write(self.client, name, ended)
        history.record_traffic(
            self.client,
            name,
            rollout.candidate_alias,
            rollout.candidate_version,
            kind="rollout",
            reason=f"rollout {rollout.id} passed after step {rollout.step + 1}/"
            f"{len(rollout.steps)}{moved}",
            who=self.who,
        )
        self._close_run(ended, evaluation, "FINISHED")
        self.say(f"passed: {ended.reason}")
        return Finished("passed", ended, ended.reason, evaluation)

    def _halt(self, rollout: Rollout, evaluation: Evaluation, status: Status, reason: str) -> None:
        """Give the baseline all traffic at once, record why, and stop (_Stop)."""
        name = self.spec.name
        split = _without_candidate(traffic.parse(rollout.split), rollout)
        traffic.write(self.client, name, split)  # first: every replica follows at its next poll
        ended = replace(rollout, split=split.encode(), previous_split=rollout.split).ended(
            status, reason
        )
        rollouts.write(self.client, name, ended)
        self._record_check(ended, evaluation)
        history.record_traffic(
            self.client,
            name,
            rollout.candidate_alias,
            rollout.candidate_version,
            kind="rollout-rollback",
            reason=f"rollout {rollout.id}: {reason}",
            who=self.who,
        )
        self._close_run(ended, evaluation, "FINISHED" if status == "breached" else "FAILED")
        self.say(f"{status}: {reason}")
        self.say(f"{rollout.candidate_alias}'s weight is 0: {split.describe()}")
        raise _Stop(Finished(status, ended, reason, evaluation))

    def _stop_for(self, rollout: Rollout, interference: str) -> None:
        """Someone else changed what the rollout relies on: stop, touching nothing of theirs."""
        reason = f"stopped without touching anything: {interference}"
        ended = rollout.ended("aborted", reason)
        rollouts.write(self.client, self.spec.name, ended)
        history.record_traffic(
            self.client,
            self.spec.name,
            rollout.candidate_alias,
            rollout.candidate_version,
            kind="rollout",
            reason=f"rollout {rollout.id} {reason}",
            who=self.who,
        )
        self._close_run(ended, None, "KILLED")
        self.say(f"aborted: {reason}")
        raise _Stop(Finished("aborted", ended, reason))

    def _finished_elsewhere(self, rollout: Rollout | None, reason: str) -> Finished:
        """Another party ended or took the rollout: this controller writes nothing."""
        self.say(f"stopped: {reason}")
        return Finished("aborted", rollout, reason)

    def _honour_abort(self, rollout: Rollout) -> None:
        snap = rollouts.snapshot(self.client, self.spec.name)
        abort = _abort_of(snap, rollout.id)
        if abort is not None:
            split = _without_candidate(traffic.of_tags(snap.tags), rollout)
            traffic.write(self.client, self.spec.name, split)
            raise _Stop(self._finished_elsewhere(rollout.ended("aborted", abort), abort))

    def _breach_reason(self, rollout: Rollout, evaluation: Evaluation) -> str:
        return (
            f"breach at step {rollout.step + 1}/{len(rollout.steps)} ({rollout.weight:g}%): "
            + "; ".join(g.line() for g in evaluation.breached)
        )

    # -- the MLflow run ------------------------------------------------------------------------

    def _record_check(self, rollout: Rollout, evaluation: Evaluation) -> None:
        if not rollout.run_id or not rollout.checked:
            return
        step_started = datetime.fromisoformat(rollout.step_started)
        now = datetime.fromisoformat(rollout.checked)
        figures = {
            "step": float(rollout.step + 1),
            "weight": float(rollout.weight),
            "seconds_into_step": (now - step_started).total_seconds(),
            "outcome": {"breach": 1.0, "pass": 0.0, "no_data": -1.0}[evaluation.outcome],
            **evaluation.metrics(),
        }
        try:
            rollouts.log_check(self.client, rollout.run_id, figures, rollout.checks)
        except Exception as exc:  # evidence is best effort; the traffic decision is not
            logger.warning("rollout %s: check not logged to MLflow: %s", rollout.id, exc)

    def _attach_step(self, rollout: Rollout, evaluation: Evaluation) -> None:
        document = {
            "step": rollout.step + 1,
            "weight": rollout.weight,
            "step_started": rollout.step_started,
            "checked": rollout.checked,
            "split": rollout.split,
            "evaluation": evaluation.document(),
        }
        self._attach(rollout, f"step-{rollout.step + 1}.json", document)

    def _attach(self, rollout: Rollout, file_name: str, document: object) -> None:
        if not rollout.run_id:
            return
        try:
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / file_name
                path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
                runs.attach(self.client, rollout.run_id, [path], "rollout")
        except Exception as exc:
            logger.warning("rollout %s: %s not attached to its run: %s", rollout.id, file_name, exc)

    def _close_run(
        self, rollout: Rollout, evaluation: Evaluation | None, status: rollouts.RunEnd
    ) -> None:
        if not rollout.run_id:
            return
        document = {
            "status": rollout.status,
            "reason": rollout.reason,
            "step": rollout.step + 1,
            "weight": rollout.weight,
            "evaluation": evaluation.document() if evaluation else None,
        }
        self._attach(rollout, "outcome.json", document)
        try:
            rollouts.tag_run(
                self.client,
                rollout.run_id,
                {
                    "modelyard.rollout.outcome": rollout.status,
                    "modelyard.rollout.reason": rollout.reason[:5000],
                },
            )
            rollouts.end_run(self.client, rollout.run_id, status)
        except Exception as exc:
            logger.warning("rollout %s: run %s not closed: %s", rollout.id, rollout.run_id, exc)

    # -- small things --------------------------------------------------------------------------

    def _effective(self, snap: Snapshot) -> Rollout | None:
        return effective(snap, self.spec.name)

    def _now(self) -> datetime:
        return self.clock.now()

    def _check_seconds(self) -> float:
        given = self.spec.check_seconds
        return given if given is not None else min(max(self.spec.step_seconds / 10, 1.0), 30.0)

    def _data_wait(self) -> float:
        given = self.spec.data_wait_seconds
        return given if given is not None else self.spec.step_seconds


def effective(snap: Snapshot, name: str) -> Rollout | None:
    """The model's rollout as recorded, `aborted` if an abort request names it while running."""
    found = snap.rollout(name)
    if found is not None and found.status == "running":
        abort = _abort_of(snap, found.id)
        if abort is not None:
            return found.ended("aborted", abort)
    return found


def abort(client: Client, name: str, *, reason: str = "", who: str | None = None) -> Rollout:
    """Stop the model's running rollout: the candidate's weight to 0 at once, the request
    recorded for its controller (which stops at its next check), the event in the history."""
    who = who or history.actor()
    snap = rollouts.snapshot(client, name)
    rollout = effective(snap, name)
    if rollout is None or rollout.status != "running":
        detail = f" (the last one {rollout.status})" if rollout else ""
        raise NoRollout(name, detail)
    at = datetime.now(UTC)
    why = f"aborted by {who}" + (f": {reason}" if reason else "")
    client.set_registered_model_tag(
        name,
        ABORT_TAG,
        json.dumps({"id": rollout.id, "by": who, "at": _iso(at), "reason": why[:1000]}),
    )
    split = _without_candidate(traffic.of_tags(snap.tags), rollout)
    traffic.write(client, name, split)
    ended = replace(rollout, split=split.encode(), previous_split=rollout.split).ended(
        "aborted", why
    )
    rollouts.write(client, name, ended)
    history.record_traffic(
        client,
        name,
        rollout.candidate_alias,
        rollout.candidate_version,
        kind="rollout-rollback",
        reason=f"rollout {rollout.id} at step {rollout.step + 1}/{len(rollout.steps)} "
        f"({rollout.weight:g}%) {why}",
        who=who,
    )
    if rollout.run_id:
        try:
            rollouts.tag_run(
                client,
                rollout.run_id,
                {"modelyard.rollout.outcome": "aborted", "modelyard.rollout.reason": why[:5000]},
            )
            rollouts.end_run(client, rollout.run_id, "KILLED")
        except Exception as exc:
            logger.warning("rollout %s: run %s not closed: %s", rollout.id, rollout.run_id, exc)
    return ended


def status(client: Client, name: str) -> tuple[Rollout | None, Snapshot]:
    """The model's latest rollout (None if it never had one) and the model as read."""
    snap = rollouts.snapshot(client, name)
    return effective(snap, name), snap


def describe(rollout: Rollout, snap: Snapshot, now: datetime) -> list[str]:
    """`modelyard rollout status`: what runs, where it stands, and whether it still matches."""
    step = f"step {rollout.step + 1}/{len(rollout.steps)} ({rollout.weight:g}%)"
    lines = [
        f"rollout {rollout.id}: {rollout.status} at {step}",
        f"  candidate  {rollout.candidate_alias} v{rollout.candidate_version}",
        f"  baseline   {rollout.baseline_alias} v{rollout.baseline_version}",
        f"  steps      {_steps(rollout.steps)} %, {rollout.step_seconds:g} s each, checked every "
        f"{rollout.check_seconds:g} s",
        f"  started    {rollout.started} by {rollout.actor}",
        f"  this step  since {rollout.step_started}",
    ]
    if rollout.checked:
        age = (now - datetime.fromisoformat(rollout.checked)).total_seconds()
        lines.append(f"  last check {rollout.checked} ({age:.0f} s ago)")
        if rollout.status == "running" and age > 3 * rollout.check_seconds + 10:
            lines.append("  note: no check for a while: is the controller running? (--resume)")
    lines += [
        f"  guards     {rollout.guard_path} (sha256 {rollout.guard_sha256[:12]})",
        f"  promote    {rollout.promote or 'none'}",
        f"  split now  {traffic.of_tags(snap.tags).describe()}",
    ]
    if rollout.run_id:
        url = f" ({rollout.run_url})" if rollout.run_url else ""
        lines.append(f"  mlflow run {rollout.run_id}{url}")
    if rollout.reason:
        lines.append(f"  reason     {rollout.reason}")
    if rollout.status == "running":
        drift = _interference(snap, rollout)
        if drift:
            lines.append(f"  note: {drift} (the controller stops at its next check)")
    return lines


def _interference(snap: Snapshot, rollout: Rollout) -> str | None:
    """What someone else changed that the rollout relies on; None when nothing."""
    for alias, version in (
        (rollout.candidate_alias, rollout.candidate_version),
        (rollout.baseline_alias, rollout.baseline_version),
    ):
        now = snap.aliases.get(alias)
        if now != version:
            moved = f"to v{now}" if now else "away (deleted)"
            return f"{alias} was moved from v{version} {moved} during the rollout"
    promote = rollout.promote
    if promote and promote not in (rollout.candidate_alias, rollout.baseline_alias):
        now = snap.aliases.get(promote)
        if now != rollout.promote_expect:
            return (
                f"{promote} was moved from v{rollout.promote_expect} to v{now} during the rollout"
            )
    found = traffic.of_tags(snap.tags)
    written = traffic.parse(rollout.split)
    if not found.same_as(written):
        return (
            f"the traffic split was changed to {found.describe()} (the rollout had set "
            f"{written.describe()})"
        )
    return None


def _abort_of(snap: Snapshot, rollout_id: str) -> str | None:
    """The reason of an abort request naming this rollout, None without one."""
    value = snap.tags.get(ABORT_TAG)
    if value is None:
        return None
    try:
        document = json.loads(value)
        if document.get("id") != rollout_id:
            return None
        return str(document.get("reason") or f"aborted by {document.get('by', 'someone')}")
    except (ValueError, AttributeError):
        return None


def _without_candidate(split: Split, rollout: Rollout) -> Split:
    """The split with the candidate's weight 0 and the baseline's all the rest."""
    return split.with_weights({rollout.candidate_alias: 0, rollout.baseline_alias: 100})


def _short(evaluation: Evaluation) -> str:
    parts = []
    for guard in evaluation.guards:
        figures = guard.figures
        if guard.outcome == "breach":
            parts.append(f"{guard.name} BREACH")
        elif guard.name == "requests":
            parts.append(f"{figures['candidate']} requests")
        elif guard.name == "error_rate":
            parts.append(f"errors {figures['errors']}/{figures['requests']}")
        elif guard.name == "latency_p99_ratio" and "ratio" in figures:
            parts.append(f"p99 ratio {_fmt(figures['ratio'])}")
        elif guard.name == "agreement" and figures.get("rows"):
            parts.append(f"agreement {_fmt(figures['share'])}")
        elif "difference" in figures:
            parts.append(f"{guard.name} {_fmt(figures['difference'], '+.3f')}")
    return ", ".join(parts)


def _fmt(value: object, spec: str = ".2f") -> str:
    return format(value, spec) if isinstance(value, float | int) else "-"


def _steps(steps: tuple[float, ...]) -> str:
    return ", ".join(f"{s:g}" for s in steps)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")
