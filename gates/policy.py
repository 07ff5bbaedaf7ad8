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

import hashlib
import math
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from yaml.nodes import MappingNode, Node, SequenceNode

from gates.errors import PolicyError
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


def load(path: Path) -> tuple[Policy, str]:
    """The policy in `path` and the sha256 of its bytes; PolicyError names line and problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), [(0, f"cannot read the policy: {exc.strerror}")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(str(path), [(0, "the policy is not UTF-8 text")]) from exc
    return parse(text, source=str(path)), hashlib.sha256(raw).hexdigest()


def parse(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate a policy; every problem is reported with its 1-based line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise PolicyError(source, [(line, f"not valid YAML: {exc.problem}")]) from exc
    if not isinstance(root, MappingNode) or not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        raise PolicyError(source, [(line, "a policy is a mapping with at least `metrics:`")])
    problems = _duplicate_keys(root)
    if problems:
        raise PolicyError(source, problems)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems = [(_line(root, e["loc"]), _message(e)) for e in exc.errors()]
        raise PolicyError(source, sorted(set(problems))) from exc
    problems = _semantic_problems(policy, root)
    if problems:
        raise PolicyError(source, problems)
    return policy


def _semantic_problems(policy: Policy, root: MappingNode) -> list[tuple[int, str]]:
    """What pydantic cannot see: an empty metric list, bounds out of range, mixed tasks."""
    if not policy.metrics:
        return [(_line(root, ("metrics",)), "metrics: name at least one metric to check")]
    problems = []
    for name, rule in policy.metrics.items():
        low, high = _RANGES[name]
        bounds = {"min": rule.min, "max": rule.max}
        for key, value in bounds.items():
            if value is not None and not low <= value <= high:
                problems.append(
                    (
                        _line(root, ("metrics", name, key)),
                        f"metrics.{name}.{key}: bad bound {value}: {name} lies in "
                        f"[{low:g}, {high:g}]",
                    )
                )
        span = high - low
        if rule.max_regression is not None and rule.max_regression > span:
            problems.append(
                (
                    _line(root, ("metrics", name, "max_regression")),
                    f"metrics.{name}.max_regression: bad bound {rule.max_regression}: "
                    f"{name} only spans {span:g}",
                )
            )
    task = policy.task
    for name in policy.metrics:
        if name not in METRICS_BY_TASK[task]:
            problems.append(
                (
                    _line(root, ("metrics", name)),
                    f"metrics.{name}: a {_task_of_metric(name)} metric, but this policy's first "
                    f"metric is for {task}",
                )
            )
    return sorted(problems)


def _task_of_metric(name: str) -> str:
    return next(task for task, names in METRICS_BY_TASK.items() if name in names)


def _duplicate_keys(node: Node, path: str = "") -> list[tuple[int, str]]:
    """YAML lets a later key silently replace an earlier one; a policy must not."""
    problems: list[tuple[int, str]] = []
    if isinstance(node, MappingNode):
        seen: set[object] = set()
        for key, value in node.value:
            name = f"{path}.{key.value}" if path else str(key.value)
            if key.value in seen:
                problems.append((key.start_mark.line + 1, f"{name}: duplicate key"))
            seen.add(key.value)
            problems.extend(_duplicate_keys(value, name))
    elif isinstance(node, SequenceNode):
        for item in node.value:
            problems.extend(_duplicate_keys(item, path))
    return problems


def _line(root: Node, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest node `loc` reaches (a key's own line where it names one)."""
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _message(error: Any) -> str:
    loc = [str(part) for part in error["loc"] if part != "[key]"]
    where = ".".join(loc)
    if error["type"] == "literal_error" and loc[:1] == ["metrics"] and len(loc) == 2:
        return f"{where}: unknown metric '{loc[1]}'; known: {', '.join(METRIC_NAMES)}"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return f"{where}: unknown key '{loc[-1]}'; expected one of: {', '.join(allowed)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where or 'policy'}: {message}"


def _allowed_keys(path: list[str]) -> list[str]:
    model: type[BaseModel] = Policy
    for part in path:
        if part in HIGHER_IS_BETTER:
            model = MetricRule
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        inner = [a for a in (field.annotation, *get_args(field.annotation)) if _is_model(a)]
        if not inner:
            return []
        model = inner[0]
    return list(model.model_fields)


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
