"""The rollout guards: what a candidate must not show while it takes traffic step by step.

Parsed from YAML and validated like the gate policy: every problem is reported with its file
and line, so a typo is an error and never a guard silently skipped. The format:

    model: cancer-classifier            # optional: refuse to guard any other model
    guards:                             # at least one
      error_rate: {max: 0.01}           # the candidate's share of requests answered 5xx
      latency_p99_ratio: {max: 1.5}     # candidate p99 / baseline p99
      agreement: {min: 0.9}             # rows answered alike, where the candidate shadowed
      accuracy: {max_regression: 0.02}  # a label metric, candidate - baseline (any of
                                        # accuracy, log_loss for classifiers; rmse, mae)
    min_requests_per_step: 100          # candidate requests a step needs before it can pass
    min_labels: 100                     # labelled rows per arm before a label metric is judged
    require_labels: false               # true: no promotion before the label metric is judged
"""

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from yaml.nodes import MappingNode

from gates import yaml_files
from gates.errors import PolicyError
from gates.yaml_files import line_of

LABEL_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "log_loss"),
    "regression": ("rmse", "mae"),
}
"""The label metrics the experiment report computes, per task (gates.experiment.METRICS)."""
_SPANS = {"accuracy": 1.0, "log_loss": float("inf"), "rmse": float("inf"), "mae": float("inf")}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RateBound(_Strict):
    """The largest share of the candidate's requests answered with a server error."""

    max: float = Field(gt=0, lt=1)


class RatioBound(_Strict):
    """The largest candidate / baseline ratio of p99 latency."""

    max: float = Field(gt=0)


class AgreementBound(_Strict):
    """The smallest share of rows both versions answer alike."""

    min: float = Field(gt=0, lt=1)


class RegressionBound(_Strict):
    """The largest regression of a label metric, candidate against baseline, in its unit."""

    max_regression: float = Field(ge=0)


class Guards(_Strict):
    """The guards a rollout checks; any left out is not checked."""

    error_rate: RateBound | None = None
    latency_p99_ratio: RatioBound | None = None
    agreement: AgreementBound | None = None
    accuracy: RegressionBound | None = None
    log_loss: RegressionBound | None = None
    rmse: RegressionBound | None = None
    mae: RegressionBound | None = None

    def metrics(self) -> dict[str, RegressionBound]:
        """The label-metric guards set, by metric name."""
        found = {name: getattr(self, name) for name in _SPANS}
        return {name: bound for name, bound in found.items() if bound is not None}


class GuardPolicy(_Strict):
    """A whole `rollout.yaml`."""

    model: str | None = None
    guards: Guards
    min_requests_per_step: int = Field(default=100, ge=1)
    min_labels: int = Field(default=100, ge=2)
    require_labels: bool = False


def load(path: Path) -> tuple[GuardPolicy, str]:
    """The guards in `path` and the sha256 of its bytes; PolicyError names file, line, problem."""
    text, sha256 = yaml_files.read(
        path, unreadable="cannot read the guards", not_text="the guards are not UTF-8 text"
    )
    return parse(text, source=str(path)), sha256


def parse(text: str, source: str = "<guards>") -> GuardPolicy:
    """Parse and validate guards; every problem is reported with its 1-based line."""
    policy, root = yaml_files.validate(
        text,
        source,
        GuardPolicy,
        not_a_mapping="rollout guards are a mapping with at least `guards:`",
        message=_message,
    )
    problems = _semantic_problems(policy, root)
    if problems:
        raise PolicyError(source, problems)
    return policy


def _semantic_problems(policy: GuardPolicy, root: MappingNode) -> list[tuple[int, str]]:
    """What pydantic cannot see: no guard at all, a regression out of range, mixed tasks."""
    guards = policy.guards
    if all(getattr(guards, name) is None for name in Guards.model_fields):
        return [
            (
                line_of(root, ("guards",)),
                f"guards: name at least one of {', '.join(Guards.model_fields)}",
            )
        ]
    problems = []
    metrics = guards.metrics()
    for name, bound in metrics.items():
        if bound.max_regression > _SPANS[name]:
            problems.append(
                (
                    line_of(root, ("guards", name, "max_regression")),
                    f"guards.{name}.max_regression: bad bound {bound.max_regression}: {name} "
                    f"only spans {_SPANS[name]:g}",
                )
            )
    tasks = {task for name in metrics for task, names in LABEL_METRICS.items() if name in names}
    if len(tasks) > 1:
        for name in metrics:
            problems.append(
                (
                    line_of(root, ("guards", name)),
                    f"guards.{name}: label metrics of one task only (classification: "
                    f"{', '.join(LABEL_METRICS['classification'])}; regression: "
                    f"{', '.join(LABEL_METRICS['regression'])})",
                )
            )
    if policy.require_labels and not metrics:
        problems.append(
            (
                line_of(root, ("require_labels",)),
                "require_labels: true needs a label-metric guard (accuracy, log_loss, rmse, mae)",
            )
        )
    return sorted(problems)


def _message(error: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    where = ".".join(loc)
    if error["type"] == "extra_forbidden":
        allowed = yaml_files.allowed_keys(GuardPolicy, loc[:-1])
        return f"{where}: unknown key '{loc[-1]}'; expected one of: {', '.join(allowed)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where or 'guards'}: {message}"
