"""A/B traffic: which alias answers an unpinned request. Pure functions of their inputs.

A request with a routing key is placed by weighted rendezvous hashing: each alias scores the
key with a salted hash, weighted, and the highest score wins. The same key lands on the same
alias on every replica and after restarts, and a change of weights moves only the keys that
must move, for any number of aliases and whatever their order.
"""

import hashlib
import math
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from registry.split import read_tag, validate

Source = Literal["config", "tag", "default"]


@dataclass(frozen=True)
class TrafficSplit:
    """Weights per alias (any positive scale), a salt, and where they came from."""

    weights: Mapping[str, float]
    salt: str = ""
    source: Source = "default"


@dataclass(frozen=True, slots=True)
class Choice:
    """The alias chosen, and whether the split's own choice was not loaded."""

    alias: str
    fallback: bool = False


def parse_tag(value: str) -> TrafficSplit:
    """A split from the tag's JSON; BadSplit (whatever the string) when it cannot be used."""
    weights, salt = read_tag(value)
    return TrafficSplit(validate(weights), salt, "tag")


def choose(
    split: TrafficSplit,
    key: str | None,
    loaded: Collection[str],
    fallback: str,
    rng: random.Random | None = None,
) -> Choice:
    """The alias for one request: sticky by `key` when given, else weighted random.

    An alias that is not loaded takes no traffic: its share goes to `fallback`.
    """
    weights = {a: w for a, w in split.weights.items() if w > 0}
    if key is None:
        aliases = list(weights)
        wanted = (rng or random).choices(aliases, weights=[weights[a] for a in aliases])[0]
    else:
        wanted = max(weights, key=lambda a: _score(split.salt, key, a, weights[a]))
    return Choice(wanted) if wanted in loaded else Choice(fallback, fallback=True)


def _score(salt: str, key: str, alias: str, weight: float) -> float:
    """Weighted rendezvous score: -w / ln(u), u uniform in (0, 1) from a salted hash."""
    digest = hashlib.blake2b(f"{salt}\x00{key}\x00{alias}".encode(), digest_size=8).digest()
    uniform = (int.from_bytes(digest, "big") + 0.5) / 2**64
    return -weight / math.log(uniform)
