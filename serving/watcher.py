"""Keeps every slot on the version its alias names. Polling is the source of truth.

Each poll is one bounded registry call that reads every model's aliases and tags. A slot
whose alias names another version loads it in the background (resolve -> READY -> download
-> load -> warm up -> contract check) and only then swaps; a failure leaves the old version
serving and is retried with backoff. A webhook or /admin/refresh only makes the next poll
happen now.
"""

import asyncio
import contextlib
import gc
import logging
import random
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from registry import contract, loading, snapshot, versions
from registry.client import connect
from registry.snapshot import ModelState
from serving import traffic
from serving.metrics import Metrics
from serving.model import LoadedModel, prepare
from serving.settings import ServingSettings
from serving.slots import ServedModel, Slot, SlotTable

logger = logging.getLogger(__name__)


class ContractBroken(Exception):
    """A new version would change what clients send or parse."""


class Watcher:
    """Polls the registry and swaps slots to the versions their aliases name."""

    def __init__(self, settings: ServingSettings, table: SlotTable, metrics: Metrics) -> None:
        self.settings = settings
        self.table = table
        self.metrics = metrics
        self.cache_dir: Path = loading.private_dir(settings.model_cache_dir)
        self.registry_error: str | None = None
        self.last_poll: float | None = None
        self._client: MlflowClient | None = None
        self._wake = asyncio.Event()
        self._loads: dict[Slot, asyncio.Task[None]] = {}
        self._heap_frozen = False

    def refresh_now(self) -> None:
        """Poll at once instead of at the next interval."""
        self._wake.set()

    async def run(self) -> None:
        """Poll forever, every `poll_interval_s` (up to 20% sooner, jittered), or when woken."""
        while True:
            await self.poll()
            # jitter only downwards: replicas stay out of step, and a move is never seen
            # later than one poll interval after it is made
            interval = self.settings.poll_interval_s * random.uniform(0.8, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()

    async def stop(self) -> None:
        """Cancel loads under way."""
        for task in self._loads.values():
            task.cancel()
        await asyncio.gather(*self._loads.values(), return_exceptions=True)

    async def poll(self) -> None:
        """Read the registry once and start whatever loads it calls for."""
        try:
            states = await asyncio.wait_for(
                asyncio.to_thread(self._read), timeout=self.settings.registry_timeout_s
            )
        except Exception as exc:  # unreachable, hanging or failing: keep serving what we have
            self.registry_error = f"registry not reachable: {type(exc).__name__}: {exc}"[:300]
            logger.warning("%s; serving the versions already loaded", self.registry_error)
            return
        self.registry_error = None
        self.last_poll = time.time()
        self._apply(states)

    def _read(self) -> dict[str, ModelState]:
        if self._client is None:
            self._client = connect(check_timeout_s=self.settings.registry_timeout_s)
        return snapshot.read(self._client)

    def _apply(self, states: dict[str, ModelState]) -> None:
        s = self.settings
        names = s.models or sorted(n for n, st in states.items() if s.required_alias in st.aliases)
        for name in names:
            served = self.table.models.get(name) or self._add(name)
            state = states.get(name, ModelState(name))
            self._update_split(served, state)
            for alias, slot in served.slots.items():
                slot.wanted = state.aliases.get(alias)
                slot.note = _note(slot, name in states)
                if slot.error and slot.wanted == _version(slot.current):
                    slot.clear_failure()
                if self._needs_load(slot):
                    self._loads[slot] = asyncio.create_task(self._follow(slot))

    def _add(self, name: str) -> ServedModel:
        s = self.settings
        served = ServedModel(
            name,
            {alias: Slot(name, alias) for alias in s.aliases},
            _config_split(s, name),
            s.required_alias,
        )
        self.table.models[name] = served
        return served

    def _update_split(self, served: ServedModel, state: ModelState) -> None:
        tag = state.tags.get(traffic.TAG)
        served.split_problem = None
        if tag is None:
            served.split = _config_split(self.settings, served.name)
            return
        try:
            served.split = traffic.parse_tag(tag)
        except traffic.BadSplit as problem:
            served.split = _config_split(self.settings, served.name)
            served.split_problem = f"{problem}; using the configured split"

    def _needs_load(self, slot: Slot) -> bool:
        current = slot.current.ref.version if slot.current else None
        running = slot in self._loads and not self._loads[slot].done()
        backing_off = slot.wanted == slot.failed_version and time.monotonic() < slot.retry_at
        return (
            slot.wanted is not None and slot.wanted != current and not running and not backing_off
        )

    async def _follow(self, slot: Slot) -> None:
        """Load what the alias names until the slot serves it (the latest target wins)."""
        while slot.wanted is not None and slot.wanted != _version(slot.current):
            target = slot.wanted
            slot.loading = target
            logger.info("loading %s@%s version %s", slot.model, slot.alias, target)
            try:
                loaded = await asyncio.to_thread(self._load, slot, target)
                check_contract(slot.current, loaded)
            except Exception as exc:
                slot.loading = None
                reason = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
                slot.failed(target, reason, self.settings.retry_interval_s)
                self.metrics.load_failures.labels(slot.model, slot.alias).inc()
                logger.error(
                    "%s@%s version %s not swapped in: %s (still serving %s)",
                    slot.model,
                    slot.alias,
                    target,
                    reason,
                    _version(slot.current) or "nothing",
                )
                if slot.wanted != target:
                    continue  # the alias moved on while this version failed: load the new target
                return
            slot.loading = None
            if slot.wanted == _version(slot.current):
                logger.info(
                    "%s@%s moved back to version %s while version %s loaded",
                    slot.model,
                    slot.alias,
                    slot.wanted,
                    target,
                )
                return
            if slot.wanted != target:
                # Newer than what serves: swap it in now and load the latest next, so that an
                # alias moving faster than a load cannot starve the slot on an old version.
                logger.info(
                    "%s@%s moved on while version %s loaded; serving it until version %s loads",
                    slot.model,
                    slot.alias,
                    target,
                    slot.wanted,
                )
            previous = slot.swapped(loaded)
            self._freeze_heap_once()
            self.metrics.swaps.labels(slot.model, slot.alias).inc()
            self.metrics.version_served(
                slot.model, slot.alias, target, loaded.load_s, _version(previous)
            )
            logger.info(
                "%s@%s now serves version %s (was %s; loaded in %.2f s, predict %.3f ms%s)",
                slot.model,
                slot.alias,
                target,
                _version(previous) or "nothing",
                loaded.load_s,
                loaded.warmup_ms,
                ", inline" if loaded.inline else ", in a thread",
            )

    def _freeze_heap_once(self) -> None:
        """After the first swap, exempt what is alive (mostly code) from full collections.

        A full pass of the cyclic collector over the ~350,000 objects mlflow, pandas and the
        frameworks import takes ~200 ms with the GIL held: every request in flight waits. Frozen
        objects are still freed by reference counting; only reference cycles in what is alive
        now (the first models, should they be swapped out) are never collected.
        """
        if not self._heap_frozen:
            gc.freeze()
            self._heap_frozen = True

    def _load(self, slot: Slot, version: str) -> LoadedModel:
        """In a worker thread: resolve, download, load and warm up one version."""
        assert self._client is not None
        started = time.monotonic()
        ref = versions.get_ready(self._client, slot.model, version)
        pyfunc = loading.load(ref, self.cache_dir, self._client.tracking_uri)
        return prepare(
            ref,
            pyfunc,
            strict=slot.model in self.settings.strict_models,
            inline_below_ms=self.settings.inline_below_ms,
            started=started,
        )


def _version(loaded: LoadedModel | None) -> str | None:
    return loaded.ref.version if loaded else None


def _note(slot: Slot, in_registry: bool) -> str | None:
    if not in_registry:
        return "model not found in the registry"
    if slot.wanted is None:
        return (
            f"alias deleted; still serving version {_version(slot.current)}"
            if slot.current
            else "alias not set"
        )
    return None


def _config_split(settings: ServingSettings, name: str) -> traffic.TrafficSplit:
    configured = settings.traffic.get(name)
    if configured:
        return traffic.TrafficSplit(configured, settings.traffic_salt, "config")
    return traffic.TrafficSplit({settings.required_alias: 1.0}, "", "default")


def check_contract(current: LoadedModel | None, new: LoadedModel) -> None:
    """The new version may replace the current one only if it breaks none of its clients: the
    same rule the gate applies (registry.contract)."""
    if current is None or current.interface is None or new.interface is None:
        return
    problems = contract.breaks(current.interface, new.interface)
    if problems:
        raise ContractBroken(
            f"breaks clients of version {current.ref.version}: " + "; ".join(problems)
        )
