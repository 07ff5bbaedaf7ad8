"""A progressive rollout's record in the registry: the registered-model tag `modelyard.rollout`
(what is rolled out, at which step, driven by which controller), read with the model's aliases
and tags in one call, and its MLflow run's evidence logged check by check.

The tag is the rollout's only state: `modelyard rollout status` reads it from anywhere, `abort`
rewrites it, and a controller restarted with `--resume` continues from it. MLflow has no
compare-and-set on tags: a controller re-reads the tag at every check and stops when it no
longer names it (`controller`), so the last writer wins and the other one stands down.
"""

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Literal, get_args

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from registry.errors import ModelNotFound, RegistryError

TAG = "modelyard.rollout"
"""Registered-model tag holding the model's latest rollout (JSON)."""
Status = Literal["running", "passed", "breached", "aborted", "failed"]
"""`running` until it ends: `passed` (promoted), `breached` (a guard failed), `aborted` (by a
person, or because someone moved an alias or edited the split), `failed` (no data in time, or
the controller could not go on)."""
STATUSES: tuple[str, ...] = get_args(Status)
_CUT = 1000
"""Characters kept of a free-text field (the tag's value holds at most 5,000)."""


class UnreadableRollout(RegistryError):
    """The model's rollout tag holds something that is not a rollout record."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model '{model}': the {TAG} tag cannot be read: {reason}")
        self.model = model


@dataclass(frozen=True, slots=True)
class Rollout:
    """One rollout as the tag records it. Times are ISO 8601 in UTC."""

    id: str
    status: Status
    candidate_alias: str
    candidate_version: str
    baseline_alias: str
    baseline_version: str
    promote: str | None
    """The alias moved to the candidate once the last step passes; None: none moved."""
    promote_expect: str | None
    """The version `promote` named when the rollout started (what the move expects)."""
    steps: tuple[float, ...]
    """The candidate's weight at each step, in percent."""
    step: int
    """The index in `steps` of the step under way (or where the rollout ended)."""
    step_seconds: float
    check_seconds: float
    data_wait_seconds: float
    started: str
    step_started: str
    checked: str | None
    """When the controller last checked (its heartbeat)."""
    guard_path: str
    guard_sha256: str
    split: str
    """The traffic tag's value the controller wrote last."""
    previous_split: str | None
    """The value before that, which the tag still holds if the controller died in between."""
    run_id: str | None
    run_url: str | None
    """The run's address in the MLflow UI, when the registry is a tracking server."""
    controller: str
    """A token naming the controller process that drives the rollout."""
    actor: str
    reason: str = ""
    """Why it ended (the guard breached and its figures, who aborted and why, ...)."""
    checks: int = 0
    """Checks made so far (the step of the run's metrics)."""

    @property
    def weight(self) -> float:
        """The candidate's weight at the current step, in percent."""
        return self.steps[self.step]

    def encode(self) -> str:
        """The tag value: compact JSON, free text cut to fit."""
        document = asdict(self)
        document["steps"] = [_number(s) for s in self.steps]
        for key in ("reason", "guard_path", "actor"):
            document[key] = str(document[key])[:_CUT]
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))

    def ended(self, status: Status, reason: str) -> "Rollout":
        """This rollout, ended with `status` for `reason`."""
        return replace(self, status=status, reason=reason[:_CUT])


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def decode(model: str, value: str) -> Rollout:
    """The rollout a tag value records (UnreadableRollout if it records none)."""
    try:
        document = json.loads(value)
        if document.get("status") not in STATUSES:
            raise ValueError(f"unknown status {document.get('status')!r}")
        document["steps"] = tuple(float(s) for s in document["steps"])
        rollout = Rollout(**document)
        for number in (rollout.step_seconds, rollout.check_seconds, rollout.data_wait_seconds):
            if not math.isfinite(float(number)):
                raise ValueError("a duration is not a finite number")
        if not 0 <= rollout.step < len(rollout.steps):
            raise ValueError(f"step {rollout.step} of {len(rollout.steps)}")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UnreadableRollout(model, str(exc)[:200]) from None
    return rollout


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A registered model's aliases (alias -> version) and tags, read in one call."""

    aliases: Mapping[str, str]
    tags: Mapping[str, str]

    def rollout(self, model: str) -> Rollout | None:
        """The rollout the tags record, None when there is none."""
        value = self.tags.get(TAG)
        return None if value is None else decode(model, value)


def snapshot(client: MlflowClient, name: str) -> Snapshot:
    """The model's aliases and tags now (ModelNotFound for an unknown model)."""
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFound(name) from exc
        raise
    aliases = {str(k): str(v) for k, v in (model.aliases or {}).items()}
    return Snapshot(aliases, dict(model.tags or {}))


def write(client: MlflowClient, name: str, rollout: Rollout) -> None:
    """Record `rollout` as the model's rollout."""
    client.set_registered_model_tag(name, TAG, rollout.encode())


def log_check(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Log one check's finite figures at `step` (the check's number) of the run."""
    now = int(time.time() * 1000)
    finite = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(v)]
    for start in range(0, len(finite), 1000):  # MLflow takes at most 1,000 metrics per batch
        client.log_batch(run_id, metrics=finite[start : start + 1000])


def tag_run(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    """Set tags on a run (its outcome, once known)."""
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


RunEnd = Literal["FINISHED", "FAILED", "KILLED"]


def end_run(client: MlflowClient, run_id: str, status: RunEnd) -> None:
    """Close the run: FINISHED (a decision), FAILED (none could be made), KILLED (aborted)."""
    client.set_terminated(run_id, status)
