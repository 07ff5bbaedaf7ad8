"""The traffic split in the registry: the registered-model tag `modelyard.traffic`, read and
written for the gates (the experiment report, the rollout controller).

Its value is JSON such as `{"production": 90, "staging": 10, "salt": "exp-1"}`: a weight per
alias (any positive scale) and the salt of the sticky hashing. Serving reads the same tag
(serving.traffic.parse_tag, which also requires one positive weight) every poll.
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
    """The split a tag value sets; weights empty (with the reason) without a readable one."""
    if value is None:
        return Split({}, "", f"no {TAG} tag: the split's weights are unknown")
    try:
        document = json.loads(value)
        salt = document.pop("salt", "")
        weights = {str(a): float(w) for a, w in document.items()}
        if not isinstance(salt, str) or not all(
            math.isfinite(w) and w >= 0 for w in weights.values()
        ):
            raise ValueError("weights must be finite and >= 0, salt a string")
    except (ValueError, TypeError, AttributeError) as exc:
        return Split({}, "", f"{TAG} cannot be read: {exc}")
    return Split(weights, salt)


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
