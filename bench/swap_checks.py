"""Pure checks of the swap benchmark: answers against alias moves, and sticky-split properties.

Times are time.monotonic() seconds of the benchmark process. An alias "may have named" a
version from the start of the call that set it to the end of the call that moved it away.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.load import Sample
from serving import traffic

# -- answers against moves -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Move:
    """One alias move: the version it named and the set-alias call's start and end."""

    version: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Named:
    """An interval in which the alias may have named `version`; `index` 0 is the initial one."""

    index: int
    version: str
    start: float
    end: float


@dataclass(frozen=True)
class Timeline:
    """What the alias may have named, and when; and when it named a version that cannot serve."""

    named: list[Named]
    holds: list[tuple[float, float]]
    """Intervals in which the alias named a version that fails its warm-up."""

    def staleness(self, sample: Sample) -> float | None:
        """How long before the request was sent the alias last named the version that answered.

        0 when the alias may have named it while the request was in flight; None when the
        alias never named it before the answer came. A request sent while the alias named a
        version that cannot serve counts as sent when that hold began: what was serving then
        keeps serving, by design.
        """
        sent = sample.start
        for begin, end in self.holds:
            if begin <= sent <= end:
                sent = begin
        ends = [n.end for n in self.named if n.version == sample.version and n.start <= sample.end]
        if not ends:
            return None
        return max(0.0, sent - max(ends))


def timeline(initial: str, moves: Sequence[Move], unservable: Collection[str] = ()) -> Timeline:
    """The alias's history from its initial version and the moves, in the benchmark's clock."""
    named = [Named(0, initial, -math.inf, moves[0].end if moves else math.inf)]
    holds = []
    for i, move in enumerate(moves, 1):
        end = moves[i].end if i < len(moves) else math.inf
        if move.version in unservable:
            holds.append((move.start, end))
        else:
            named.append(Named(i, move.version, move.start, end))
    return Timeline(named, holds)


@dataclass(frozen=True)
class OrderCheck:
    """Distinct versions in the order the answers came, against the order of the moves."""

    sequence: list[str]
    """Distinct versions seen, in answer order, stragglers left out."""
    subsequence: bool
    strict_sequence: list[str]
    """The same with every answer counted, stragglers included."""
    strict_subsequence: bool
    stragglers: int
    """Answers from an earlier version to requests sent before the newer one first answered."""


def is_subsequence(seen: Sequence[str], order: Sequence[str]) -> bool:
    """Whether `seen` appears in `order` in the same relative order (gaps allowed)."""
    position = iter(order)
    return all(any(v == o for o in position) for v in seen)


def order_check(samples: Iterable[Sample], order: Sequence[str]) -> OrderCheck:
    """Is the sequence of distinct versions answered (by answer time) a subsequence of `order`?

    A request sent before a newer version's first answer came may still be answered by the
    older one (it read the slot before the swap, or the client threads noticed the answers in
    another order): such stragglers are counted and left out of `sequence`, not of
    `strict_sequence`.
    """
    answered = sorted((s for s in samples if s.version is not None), key=lambda s: s.end)
    strict: list[str] = []
    runs: list[tuple[str, float]] = []  # (version, end of its first answer)
    stragglers = 0
    for sample in answered:
        version = sample.version
        assert version is not None
        if not strict or strict[-1] != version:
            strict.append(version)
        if runs and runs[-1][0] == version:
            continue
        recent = {v for v, _ in runs[-4:-1]}
        if runs and version in recent and sample.start < runs[-1][1]:
            stragglers += 1
            continue
        runs.append((version, sample.end))
    sequence = [v for v, _ in runs]
    return OrderCheck(
        sequence,
        is_subsequence(sequence, order),
        strict,
        is_subsequence(strict, order),
        stragglers,
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), None for no values."""
    return float(np.percentile(values, q)) if values else None


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, median, p95 and max."""
    return {
        "n": len(values),
        "median": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values) if values else None,
    }


# -- sticky splits -------------------------------------------------------------------------------


def assign(split: traffic.TrafficSplit, keys: Sequence[str]) -> list[str]:
    """The alias each key lands on, every alias loaded."""
    aliases = list(split.weights)
    return [traffic.choose(split, key, aliases, aliases[0]).alias for key in keys]


def shares(split: traffic.TrafficSplit, assigned: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per alias: keys, expected keys, and the deviation in binomial sigmas."""
    n = len(assigned)
    total = sum(split.weights.values())
    counts = Counter(assigned)
    result = {}
    for alias, weight in split.weights.items():
        p = weight / total
        sigma = math.sqrt(n * p * (1 - p)) or 1.0
        result[alias] = {
            "keys": counts[alias],
            "expected": n * p,
            "sigmas": (counts[alias] - n * p) / sigma,
        }
    return result


def moves_between(before: Sequence[str], after: Sequence[str]) -> dict[str, Any]:
    """How many keys changed alias, as a fraction, and between which aliases."""
    moved = Counter(f"{a}->{b}" for a, b in zip(before, after, strict=True) if a != b)
    total = sum(moved.values())
    return {"moved": total, "fraction": total / len(before), "by_pair": dict(moved)}


def split_of(weights: Mapping[str, float], salt: str) -> traffic.TrafficSplit:
    """A split as the tag would give it."""
    return traffic.TrafficSplit(dict(weights), salt, "tag")
