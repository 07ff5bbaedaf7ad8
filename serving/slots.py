"""Model slots: one per (model, alias), each pointing at the loaded version it serves.

The pointer is swapped in one assignment on the event loop: a request reads it once and
keeps that version to the end, so in-flight requests finish on the version they started on
and the old version is released when the last of them lets go.
"""

import time
from dataclasses import dataclass, field
from typing import Literal

from serving.errors import ModelNotReady, UnknownAlias, UnknownModel
from serving.model import LoadedModel
from serving.shadow import Agreement
from serving.traffic import TrafficSplit

State = Literal["absent", "loading", "ready", "stuck", "failed"]


@dataclass(eq=False)
class Slot:
    """What one alias of one model serves, and what is happening to it."""

    model: str
    alias: str
    current: LoadedModel | None = None
    wanted: str | None = None
    """The version the alias named at the last poll (the latest target wins)."""
    loading: str | None = None
    """The version being loaded now, if any."""
    error: str | None = None
    failed_version: str | None = None
    """The version whose load failed last; only its retries wait for the backoff."""
    failures: int = 0
    retry_at: float = 0.0
    note: str | None = None

    @property
    def state(self) -> State:
        """absent (nothing to load), loading, ready, stuck (loaded, but every predict thread is
        held by a predict that timed out), or failed (nothing loaded, last try failed)."""
        if self.loading is not None and self.current is None:
            return "loading"
        if self.current is not None:
            return "stuck" if self.current.pool.exhausted else "ready"
        return "failed" if self.error else "absent"

    def failed(self, version: str, reason: str, backoff_s: float) -> None:
        """Record a failed load of `version`; the next try waits longer each time (to 60 s)."""
        if version != self.failed_version:
            self.failures = 0
        self.error, self.failed_version = f"version {version}: {reason}", version
        self.failures += 1
        self.retry_at = time.monotonic() + min(60.0, backoff_s * 2 ** (self.failures - 1))

    def clear_failure(self) -> None:
        """Forget a failed load: the alias no longer names that version."""
        self.error, self.failed_version, self.failures, self.retry_at = None, None, 0, 0.0

    def swapped(self, loaded: LoadedModel) -> LoadedModel | None:
        """Serve `loaded` from now on; return the version it replaced."""
        previous, self.current = self.current, loaded
        self.clear_failure()
        return previous


@dataclass(eq=False)
class ServedModel:
    """One registered model: its slots by alias and the traffic split in force."""

    name: str
    slots: dict[str, Slot]
    split: TrafficSplit
    required_alias: str
    split_problem: str | None = None
    shadow: dict[tuple[str, str], Agreement] = field(default_factory=dict)
    """Agreement of shadow scoring, by (production version, staging version)."""

    @property
    def ready(self) -> bool:
        """Ready when the required alias has a loaded version."""
        return self.slots[self.required_alias].current is not None

    def alias_serving(self, version: str) -> str | None:
        """The alias whose slot serves `version` now (the required alias first), if any."""
        for alias in sorted(self.slots, key=lambda a: a != self.required_alias):
            current = self.slots[alias].current
            if current is not None and current.ref.version == version:
                return alias
        return None

    def available_aliases(self) -> list[str]:
        """Aliases whose version can take traffic: loaded, and not stuck."""
        return [
            a
            for a, s in self.slots.items()
            if s.current is not None and not s.current.pool.exhausted
        ]


@dataclass(eq=False)
class SlotTable:
    """Every served model, by name."""

    models: dict[str, ServedModel] = field(default_factory=dict)

    def model(self, name: str) -> ServedModel:
        """The served model `name`, or 404."""
        served = self.models.get(name)
        if served is None:
            raise UnknownModel(name)
        return served

    def loaded(self, name: str, alias: str) -> tuple[Slot, LoadedModel]:
        """The slot and the version it serves now, or 404/503."""
        slot = self.model(name).slots.get(alias)
        if slot is None:
            raise UnknownAlias(name, alias)
        current = slot.current
        if current is None:
            raise ModelNotReady(name, alias)
        return slot, current
