"""Keeps every slot on the version its alias names. Polling is the source of truth.

Each poll is one bounded registry call that reads every model's aliases and tags. A slot
whose alias names another version loads it in the background (resolve -> READY -> download
-> load -> warm up -> contract check) and only then swaps; a failure leaves the old version
serving and is retried with backoff. A webhook or /admin/refresh only makes the next poll
happen now.

The loop is supervised: a failure in one model's handling is shown on that model and the
others go on; anything else is logged and counted, and the next poll comes as usual. After
each applied poll and swap the served state is saved (serving.state); a process started while
the registry is unreachable serves that saved state from its cache, flagged stale, until the
registry answers.
"""

import asyncio
import contextlib
import gc
import logging
import random
import time

from mlflow.tracking import MlflowClient

from registry import contract, loading, snapshot, split
from registry.cache import VersionId
from registry.client import connect
from registry.refs import ModelRef
from registry.snapshot import ModelState
from serving import traffic
from serving.metrics import Metrics
from serving.model import LoadedModel, prepare
from serving.settings import ServingSettings
from serving.slots import ServedModel, Slot, SlotTable
from serving.state import LastKnownGood, SavedModel, Storage
from serving.status import RegistryHealth

logger = logging.getLogger(__name__)


class ContractBroken(Exception):
    """A new version would change what clients send or parse."""


class Watcher:
    """Polls the registry and swaps slots to the versions their aliases name."""

    def __init__(self, settings: ServingSettings, table: SlotTable, metrics: Metrics) -> None:
        self.settings = settings
        self.table = table
        self.metrics = metrics
        self.storage = Storage.create(settings)
        self.registry_error: str | None = None
        self.last_poll: float | None = None
        """Unix time of the last successful poll."""
        self.stale = False
        """Serving the saved state: the registry has not answered since the process started."""
        self._started = time.time()
        self._client: MlflowClient | None = None
        self._served: dict[tuple[str, str], VersionId] = {}
        """The identity of the version each (model, alias) serves."""
        self._restorable: dict[tuple[str, str], VersionId] = {}
        """Saved versions by (model, version), loaded from the cache while the registry is out."""
        self._loading: list[VersionId] = []
        """Versions being loaded (by worker threads): never pruned."""
        self._leaving: dict[str, float] = {}
        """Models no longer in the registry, by the monotonic time they are unloaded at."""
        self._saved: LastKnownGood | None = None
        self._save_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._loads: dict[Slot, asyncio.Task[None]] = {}
        # read at scrape time in this process; with several workers, as of the last poll
        metrics.poll_age.set_function(lambda: self.health().poll_age_s)
        metrics.serving_stale.set_function(lambda: float(self.stale))

    def refresh_now(self) -> None:
        """Poll at once instead of at the next interval."""
        self._wake.set()

    def health(self) -> RegistryHealth:
        """How the registry answered, how long ago, and whether saved state is served."""
        since = self.last_poll if self.last_poll is not None else self._started
        return RegistryHealth(
            self.registry_error, self.last_poll, round(time.time() - since, 3), self.stale
        )

    async def run(self) -> None:
        """Poll forever, a poll starting every `poll_interval_s` (up to 20% sooner, jittered)
        or when woken.

        Unless `require_fresh_registry`, a first poll that fails restores the saved state.
        """
        self._saved = await asyncio.to_thread(self.storage.load)
        saved = None if self.settings.require_fresh_registry else self._saved
        while True:
            began = time.monotonic()
            try:
                await self.poll()
                if saved is not None and self.last_poll is None:
                    self._restore(saved)
                saved = None
                self._report()
            except Exception:
                self._failed("watcher loop")
            # polls start one interval apart, however long a read takes, jittered only
            # downwards: replicas stay out of step, and a move is seen at most one interval
            # and one registry read after it is made
            interval = self.settings.poll_interval_s * random.uniform(0.8, 1.0)
            left = max(0.0, interval - (time.monotonic() - began))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=left)
            self._wake.clear()

    async def stop(self) -> None:
        """Cancel loads under way; remove a temporary cache."""
        for task in self._loads.values():
            task.cancel()
        await asyncio.gather(*self._loads.values(), return_exceptions=True)
        await asyncio.to_thread(self.storage.close)

    async def poll(self) -> None:
        """Read the registry once and start whatever loads it calls for. Never raises."""
        try:
            states = await asyncio.wait_for(
                asyncio.to_thread(self._read), timeout=self.settings.registry_timeout_s
            )
        except Exception as exc:  # unreachable, hanging or failing: keep serving what we have
            self.registry_error = f"registry not reachable: {type(exc).__name__}: {exc}"[:300]
            logger.warning("%s; serving the versions already loaded", self.registry_error)
            return
        if self.stale:
            logger.info("registry answers again: following it, no longer serving saved state")
        self.registry_error, self.last_poll, self.stale = None, time.time(), False
        try:
            self._apply(states)
            await self._save()
        except Exception:
            self._failed("applying a poll")

    def _failed(self, where: str) -> None:
        """Log and count a failure the loop survives."""
        self.metrics.watcher_errors.inc()
        logger.exception("watcher: %s failed; polling goes on", where)

    def _report(self) -> None:
        """Write the health gauges (what other workers' /metrics read in multiprocess mode)."""
        health = self.health()
        self.metrics.poll_age.set(health.poll_age_s)
        self.metrics.serving_stale.set(1 if health.stale else 0)

    def _read(self) -> dict[str, ModelState]:
        return snapshot.read(self._client or self._connect())

    def _connect(self) -> MlflowClient:
        self._client = connect(check_timeout_s=self.settings.registry_timeout_s)
        return self._client

    def _apply(self, states: dict[str, ModelState]) -> None:
        s = self.settings
        names = s.models or sorted(n for n, st in states.items() if s.required_alias in st.aliases)
        if s.models is None:
            self._retire(set(names))
        for name in names:
            try:
                self._apply_model(name, states.get(name))
            except Exception as exc:
                self.metrics.watcher_errors.inc()
                logger.exception("watcher: model %s not updated from the registry", name)
                problem = f"not following the registry: {type(exc).__name__}: {exc}"[:300]
                served = self.table.models.get(name)
                for slot in served.slots.values() if served else ():
                    slot.note = problem

    def _apply_model(self, name: str, state: ModelState | None) -> None:
        served = self.table.models.get(name) or self._add(name)
        self._update_split(served, state or ModelState(name))
        for alias, slot in served.slots.items():
            slot.wanted = state.aliases.get(alias) if state else None
            slot.note = _note(slot, state is not None)
            if slot.error and slot.wanted == _version(slot.current):
                slot.clear_failure()
            if self._needs_load(slot):
                self._loads[slot] = asyncio.create_task(self._follow(slot))

    def _retire(self, names: set[str]) -> None:
        """Unload, after `unload_grace_s`, the discovered models no longer in `names`."""
        now, grace = time.monotonic(), self.settings.unload_grace_s
        for name, served in list(self.table.models.items()):
            if name in names:
                self._leaving.pop(name, None)
                continue
            at = self._leaving.setdefault(name, now + grace)
            if now < at:
                gone = f"no alias '{served.required_alias}' in the registry any more"
                for slot in served.slots.values():
                    slot.note = f"{gone}: unloading in {at - now:.0f} s"
                continue
            del self.table.models[name], self._leaving[name]
            for alias, slot in served.slots.items():
                task = self._loads.pop(slot, None)
                if task is not None:
                    task.cancel()
                self._served.pop((name, alias), None)
                if slot.current is not None:
                    self.metrics.version_released(name, alias, slot.current.ref.version)
            logger.info("unloaded %s: no alias '%s' for %.0f s", name, served.required_alias, grace)

    def _restore(self, saved: LastKnownGood) -> None:
        """Serve the saved state from the cache until the registry answers."""
        s = self.settings
        for name, model in saved.models.items():
            if s.models is not None and name not in s.models:
                continue
            served = self.table.models.get(name) or self._add(name)
            if model.split is not None:
                served.split = model.split
            for alias, version in model.aliases.items():
                slot = served.slots.get(alias)
                if slot is None or slot.wanted is not None:
                    continue
                self._restorable[(name, version.version)] = version
                slot.wanted = version.version
                if self._needs_load(slot):
                    self._loads[slot] = asyncio.create_task(self._follow(slot))
        self.stale = True
        logger.warning(
            "registry not reachable at start: serving the state saved from the poll at %s",
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(saved.polled_at or 0)),
        )

    async def _save(self) -> None:
        """Write the served state when it changed since the last write (fresh state only).

        An alias whose version is not loaded yet keeps the version saved before: a process
        killed while loading leaves the last known good state as it was.
        """
        if self.last_poll is None:
            return
        async with self._save_lock:
            before = self._saved.models if self._saved is not None else {}
            models = {}
            for name, served in self.table.models.items():
                aliases = dict(before[name].aliases) if name in before else {}
                for alias in served.slots:
                    if (name, alias) in self._served:
                        aliases[alias] = self._served[(name, alias)]
                split = served.split if served.split.source == "tag" else None
                models[name] = SavedModel(aliases, split)
            if models == before:
                return
            state = LastKnownGood(models, self.last_poll)
            await asyncio.to_thread(self.storage.save, state)
            self._saved = state

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
        tag = state.tags.get(split.TAG)
        served.split_problem = None
        if tag is None:
            served.split = _config_split(self.settings, served.name)
            return
        try:
            served.split = traffic.parse_tag(tag)
        except Exception as exc:  # whatever the tag holds, alias following goes on
            problem = exc if isinstance(exc, split.BadSplit) else type(exc).__name__
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
                loaded, version = await asyncio.to_thread(self._load, slot, target)
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
            self._served[(slot.model, slot.alias)] = version
            self._freeze_heap()
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
            await self._settle()

    async def _settle(self) -> None:
        """After a swap: save the state, prune the cache. Failures are logged and counted."""
        try:
            await self._save()
            # listed here, on the loop: a worker thread would read `_served` as it changes
            in_use = [*self._served.values(), *self._loading]
            await asyncio.to_thread(self.storage.cache.prune, in_use, self.settings.keep_versions)
        except Exception:
            self._failed("saving state or pruning the cache")

    @staticmethod
    def _freeze_heap() -> None:
        """After each swap, exempt what is alive (mostly code, and the models) from full
        collections.

        A full pass of the cyclic collector over the ~350,000 objects mlflow, pandas and the
        frameworks import takes ~200 ms with the GIL held: every request in flight waits. What
        a later load brings (a second model's flavour and code) needs freezing too: frozen only
        after the first swap, a process serving two models paused 150-235 ms every ~5 s
        (bench.hostile). Frozen objects are still freed by reference counting; only reference
        cycles in versions swapped out later are never collected.
        """
        gc.collect(1)  # young garbage is not frozen with the rest
        gc.freeze()

    def _load(self, slot: Slot, version: str) -> tuple[LoadedModel, VersionId]:
        """In a worker thread: resolve, download (or find cached), load and warm up one version.

        Before the registry first answers, a saved version is loaded from the cache alone.
        """
        started = time.monotonic()
        saved = self._restorable.get((slot.model, version)) if self.last_poll is None else None
        if saved is not None:
            ref, identity = ModelRef(slot.model, version, saved.run_id), saved
        else:
            client = self._client or self._connect()
            ref, identity = loading.identify(client, slot.model, version)
        self._loading.append(identity)
        try:
            tracking_uri = self._client.tracking_uri if self._client else None
            pyfunc = loading.load_cached(
                identity, self.storage.cache, tracking_uri, offline=saved is not None
            )
        finally:
            self._loading.remove(identity)
        return prepare(
            ref,
            pyfunc,
            strict=slot.model in self.settings.strict_models,
            inline_below_ms=self.settings.inline_below_ms,
            threads=self.settings.predict_threads,
            started=started,
        ), identity


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
