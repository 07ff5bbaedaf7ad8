"""The gate policy: what a candidate must show before it may take an alias.

Parsed from YAML; every problem is reported with the line it is on, so a typo is an error
and never a check silently skipped. The format:

    model: cancer-classifier          # optional: refuse to gate any other model
    metrics:                          # at least one; metrics of one task
      accuracy: {min: 0.9, max_regression: 0.03}
      log_loss: {max: 0.35, max_regression: 0.05}
    latency: {max_ratio: 1.5}         # optional: candidate p50 / baseline p50
    data: {uri: eval.parquet, sha256: ..., target: target}   # optional pinned exam
    bootstrap: {resamples: 1000, confidence: 0.95, seed: 0}
    compatibility: {inputs: true, outputs: true}
    exam: {training_rows: warn, max_overlap: 0}   # training rows vs evaluation rows
"""

import math
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator
from yaml.nodes import MappingNode

from gates import yaml_files
from gates.errors import PolicyError
from gates.yaml_files import line_of
from registry.contract import Task
from registry.quality import HIGHER_IS_BETTER, METRICS_BY_TASK

MetricName = Literal["accuracy", "f1", "roc_auc", "log_loss", "rmse", "mae", "r2"]
METRIC_NAMES: tuple[str, ...] = get_args(MetricName)

_RANGES: dict[str, tuple[float, float]] = {
    "accuracy": (0, 1),
    "f1": (0, 1),
    "roc_auc": (0, 1),
    "log_loss": (0, math.inf),
    "rmse": (0, math.inf),
    "mae": (0, math.inf),
    "r2": (-math.inf, 1),
}
"""The values each metric can take: a bound outside them is a typo (95 for 0.95)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MetricRule(_Strict):
    """Bounds on one metric: absolute `min`/`max`, and the largest regression allowed."""

    min: float | None = None
    max: float | None = None
    max_regression: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _some_bound(self) -> "MetricRule":
        if self.min is None and self.max is None and self.max_regression is None:
            raise ValueError("sets no bound: give min, max or max_regression")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class LatencyRule(_Strict):
    """Candidate/baseline ratio of median predict latency, for one row and for a batch."""

    max_ratio: float = Field(gt=0)
    rounds: int = Field(default=30, ge=5, le=1000)
    batch_rows: int = Field(default=100, ge=2)


class DataRule(_Strict):
    """The evaluation data: pinned by `uri` and `sha256` (both or neither), and its target."""

    uri: str | None = Field(default=None, min_length=1)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    target: str = Field(default="target", min_length=1)

    @model_validator(mode="after")
    def _pinned_by_both(self) -> "DataRule":
        if (self.uri is None) != (self.sha256 is None):
            raise ValueError("a pinned dataset needs both uri and sha256")
        return self


class BootstrapRule(_Strict):
    """The paired bootstrap judging regressions against the baseline."""

    resamples: int = Field(default=1000, ge=100, le=100_000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    seed: int = 0


class CompatibilityRule(_Strict):
    """Whether the candidate must accept the baseline's requests and answer in its contract."""

    inputs: bool = True
    outputs: bool = True


class ExamRule(_Strict):
    """The candidate's training rows against the evaluation rows."""

    training_rows: Literal["warn", "require"] = "warn"
    """A candidate whose training run records no training rows: a note, or a failed check."""
    max_overlap: float = Field(default=0.0, ge=0, le=1)
    """The share of evaluation rows the candidate may have trained on (duplicated rows)."""


class Policy(_Strict):
    """A whole gate policy."""

    model: str | None = None
    metrics: dict[MetricName, MetricRule]
    latency: LatencyRule | None = None
    data: DataRule = DataRule()
    bootstrap: BootstrapRule = BootstrapRule()
    compatibility: CompatibilityRule = CompatibilityRule()
    exam: ExamRule = ExamRule()

    @property
    def task(self) -> Task:
        """The task the policy's metrics belong to (parsing checks there is one)."""
        first = next(iter(self.metrics))
        return "classification" if first in METRICS_BY_TASK["classification"] else "regression"


_METRIC_KEYS: dict[str, type[BaseModel]] = dict.fromkeys(HIGHER_IS_BETTER, MetricRule)
"""The keys under `metrics:`, each naming a MetricRule."""


def load(path: Path) -> tuple[Policy, str]:
    """The policy in `path` and the sha256 of its bytes; PolicyError names line and problem."""
    text, sha256 = yaml_files.read(
        path, unreadable="cannot read the policy", not_text="the policy is not UTF-8 text"
    )
    return parse(text, source=str(path)), sha256


def parse(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate a policy; every problem is reported with its 1-based line."""
    policy, root = yaml_files.validate(
        text,
        source,
        Policy,
        not_a_mapping="a policy is a mapping with at least `metrics:`",
        message=_message,
    )
    problems = _semantic_problems(policy, root)
    if problems:
        raise PolicyError(source, problems)
    return policy


def _semantic_problems(policy: Policy, root: MappingNode) -> list[tuple[int, str]]:
    """What pydantic cannot see: an empty metric list, bounds out of range, mixed tasks."""
    if not policy.metrics:
        return [(line_of(root, ("metrics",)), "metrics: name at least one metric to check")]
    problems = []
    for name, rule in policy.metrics.items():
        low, high = _RANGES[name]
        bounds = {"min": rule.min, "max": rule.max}
        for key, value in bounds.items():
            if value is not None and not low <= value <= high:
                problems.append(
                    (
                        line_of(root, ("metrics", name, key)),
                        f"metrics.{name}.{key}: bad bound {value}: {name} lies in "
                        f"[{low:g}, {high:g}]",
                    )
                )
        span = high - low
        if rule.max_regression is not None and rule.max_regression > span:
            problems.append(
                (
                    line_of(root, ("metrics", name, "max_regression")),
                    f"metrics.{name}.max_regression: bad bound {rule.max_regression}: "
                    f"{name} only spans {span:g}",
                )
            )
    task = policy.task
    for name in policy.metrics:
        if name not in METRICS_BY_TASK[task]:
            problems.append(
                (
                    line_of(root, ("metrics", name)),
                    f"metrics.{name}: a {_task_of_metric(name)} metric, but this policy's first "
                    f"metric is for {task}",
                )
            )
    return sorted(problems)


def _task_of_metric(name: str) -> str:
    return next(task for task, names in METRICS_BY_TASK.items() if name in names)


def _message(error: Any) -> str:
    loc = [str(part) for part in error["loc"] if part != "[key]"]
    where = ".".join(loc)
    if error["type"] == "literal_error" and loc[:1] == ["metrics"] and len(loc) == 2:
        return f"{where}: unknown metric '{loc[1]}'; known: {', '.join(METRIC_NAMES)}"
    if error["type"] == "extra_forbidden":
        allowed = yaml_files.allowed_keys(Policy, loc[:-1], keyed=_METRIC_KEYS)
        return f"{where}: unknown key '{loc[-1]}'; expected one of: {', '.join(allowed)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where or 'policy'}: {message}"
