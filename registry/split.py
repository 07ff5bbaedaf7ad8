"""The traffic split in the registry: the registered-model tag `modelyard.traffic`, read and
written for the gates (the experiment report, the rollout controller).

Its value is JSON such as `{"production": 90, "staging": 10, "salt": "exp-1"}`: a weight per
alias (any positive scale) and the salt of the sticky hashing. Serving reads the same tag with
`read_tag` every poll; values a careless or hostile user may set (NaN, 1e308 weights that sum
to infinity, deep nesting) are refused here, for both.
"""

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from registry.errors import ModelNotFound

TAG = "modelyard.traffic"
"""Registered-model tag holding the split: `{"production": 90, "staging": 10, "salt": "x"}`."""


class BadSplit(ValueError):
    """A traffic split that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Split:
    """The configured weights per alias and salt, from the model's traffic tag."""

    weights: Mapping[str, float] = field(default_factory=dict)
    salt: str = ""
    problem: str | None = None
    """Why no weights are known (no tag, or one that cannot be read)."""

    def share(self, alias: str) -> float:
        """The share of routed requests the split gives `alias` (0 when it has no weights)."""
        total = sum(self.weights.values())
        return self.weights.get(alias, 0.0) / total if total else 0.0

    def with_weights(self, weights: Mapping[str, float]) -> "Split":
        """This split with `weights` replacing those of the aliases they name (salt kept)."""
        return Split({**self.weights, **{a: float(w) for a, w in weights.items()}}, self.salt)

    def same_as(self, other: "Split") -> bool:
        """Whether both route alike: the same salt and the same positive weights."""
        mine = {a: w for a, w in self.weights.items() if w > 0}
        theirs = {a: w for a, w in other.weights.items() if w > 0}
        return self.salt == other.salt and mine == theirs and not (self.problem or other.problem)

    def encode(self) -> str:
        """The tag value: the weights (integers where whole), then the salt."""
        document: dict[str, object] = {
            alias: int(weight) if float(weight).is_integer() else weight
            for alias, weight in self.weights.items()
        }
        document["salt"] = self.salt
        return json.dumps(document, separators=(", ", ": "))

    def describe(self) -> str:
        """`production 95, staging 5 (salt 'x')` for messages."""
        if self.problem:
            return self.problem
        weights = ", ".join(f"{a} {w:g}" for a, w in self.weights.items()) or "no weights"
        return f"{weights} (salt '{self.salt}')" if self.salt else weights


def parse(value: str | None) -> Split:
    """The split a tag value sets; weights empty (with the reason) without a usable one."""
    if value is None:
        return Split({}, "", f"no {TAG} tag: the split's weights are unknown")
    try:
        weights, salt = read_tag(value)
    except BadSplit as exc:
        return Split({}, "", f"{TAG} cannot be read: {exc}")
    return Split(weights, salt)


def read_tag(value: str) -> tuple[dict[str, float], str]:
    """The weights and salt of a tag value: `{"production": 90, "staging": 10, "salt": "x"}`
    (`validate` the weights before routing by them).

    Whatever the string, the only exception raised is BadSplit.
    """
    try:
        document = json.loads(value)
    except json.JSONDecodeError as exc:
        raise BadSplit(f"{TAG} is not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise BadSplit(f"{TAG} is nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise BadSplit(f"{TAG} is not usable JSON: {str(exc)[:100]}") from None
    if not isinstance(document, dict):
        raise BadSplit(f"{TAG} must be a JSON object of alias -> weight")
    salt = document.pop("salt", "")
    if not isinstance(salt, str):
        raise BadSplit(f"{TAG}: 'salt' must be a string")
    return _numbers(document), salt


def validate(weights: Mapping[str, object]) -> dict[str, float]:
    """Weights as floats; each non-negative and finite, at least one positive, a finite sum:
    a split that can route a request."""
    checked = _numbers(weights)
    if not any(checked.values()):
        raise BadSplit("at least one alias needs a positive weight")
    return checked


def _numbers(weights: Mapping[str, object]) -> dict[str, float]:
    """Weights as floats; each non-negative and finite, a finite sum."""
    checked: dict[str, float] = {}
    for alias, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise BadSplit(f"weight of '{alias}' must be a number")
        try:
            number = float(weight)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or number < 0:
            raise BadSplit(f"weight of '{alias}' must be finite and >= 0")
        checked[alias] = number
    if not math.isfinite(sum(checked.values())):
        raise BadSplit("the weights must have a finite sum")
    return checked


def of_tags(tags: Mapping[str, str]) -> Split:
    """The split among a registered model's tags."""
    return parse(tags.get(TAG))


def read(client: MlflowClient, name: str) -> Split:
    """The split the model's traffic tag sets now (ModelNotFound for an unknown model)."""
    try:
        tags = client.get_registered_model(name).tags or {}
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelNotFound(name) from exc
        raise
    return of_tags(tags)


def write(client: MlflowClient, name: str, split: Split) -> None:
    """Set the model's traffic tag to `split` (every serving replica follows at its next poll)."""
    client.set_registered_model_tag(name, TAG, split.encode())
