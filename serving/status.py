"""What a serving process says about itself: readiness and the `/models` document, as values.

Pure functions of the slot table, the settings and the watcher's last registry error, so the
routes that answer probes and status requests only turn these values into responses.
"""

from collections.abc import Callable
from dataclasses import dataclass

from serving.batching import BatchingStatus
from serving.model import LoadedModel
from serving.settings import ServingSettings
from serving.slots import ServedModel, Slot, SlotTable, State
from serving.traffic import Source

Batching = Callable[[LoadedModel, str], BatchingStatus] | None
"""How a loaded version batches (the service's batchers know), or None: not shown."""


@dataclass(frozen=True, slots=True)
class Readiness:
    """Ready, or every reason why not (each naming the model, alias or registry at fault)."""

    reasons: tuple[str, ...] = ()
    degraded: tuple[str, ...] = ()
    """Why the control plane is behind, which leaves readiness as it is: a registry outage must
    not take serving replicas out of rotation."""
    poll_age_s: float | None = None
    """Seconds since the last successful registry poll (since start, before the first)."""
    stale: bool = False
    """Serving the saved state: the registry has not answered since start."""

    @property
    def ready(self) -> bool:
        """True when nothing is missing."""
        return not self.reasons

    def document(self) -> dict[str, object]:
        """The body of /health/ready."""
        body: dict[str, object] = {"ready": self.ready}
        if self.reasons:
            body["reasons"] = list(self.reasons)
        body |= {"degraded": bool(self.degraded), "poll_age_s": self.poll_age_s}
        body |= {"stale": self.stale, "degraded_reasons": list(self.degraded)}
        return body


@dataclass(frozen=True, slots=True)
class RegistryHealth:
    """The watcher's view of the registry: its last error, last good poll, and saved state."""

    error: str | None = None
    last_poll: float | None = None
    """Unix time of the last successful poll."""
    poll_age_s: float = 0.0
    """Seconds since the last successful poll (since start, before the first)."""
    stale: bool = False
    """Serving the saved state: the registry has not answered since start."""


@dataclass(frozen=True, slots=True)
class PredictMode:
    """How a loaded version predicts, as warm-up measured it."""

    inline: bool
    warmup_ms: float
    validated_here: bool
    direct_call: bool
    load_s: float
    accepts_missing: bool
    """False: warm-up showed it raising on missing values, so requests holding one get 400."""
    threads: int
    """Its predict threads."""
    threads_stuck: int
    """Threads still running a predict that timed out."""
    stuck: str | None
    """Why the version takes no traffic now, when all its threads are stuck."""
    batching: BatchingStatus | None = None
    """Whether concurrent requests are merged into one predict, why, and batch sizes."""


@dataclass(frozen=True, slots=True)
class AliasStatus:
    """One slot: what it serves, what it is loading, what went wrong."""

    state: State
    version: str | None
    run_id: str | None
    target: str | None
    """The version being loaded now, if any."""
    registry_version: str | None
    """The version the alias named at the last poll."""
    predict: PredictMode | None
    last_error: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class TrafficStatus:
    """The traffic split in force and where it came from."""

    weights: dict[str, float]
    salt: str
    source: Source
    problem: str | None
    """Why the tag's split was not used, when it was not."""


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One served model: readiness, traffic, shadow agreement and its aliases."""

    ready: bool
    required_alias: str
    traffic: TrafficStatus
    shadow: dict[str, dict[str, float | int | None]]
    """Agreement by `production version->shadow version`."""
    aliases: dict[str, AliasStatus]


@dataclass(frozen=True, slots=True)
class Status:
    """Every served model, and how the registry answered the last poll."""

    registry_error: str | None
    last_poll: float | None
    """Unix time of the last successful poll."""
    models: dict[str, ModelStatus]
    poll_age_s: float | None = None
    """Seconds since the last successful poll (since start, before the first)."""
    stale: bool = False
    """Serving the saved state: the registry has not answered since start."""


def check_process(
    settings: ServingSettings,
    table: SlotTable,
    registry_error: str | None,
    health: RegistryHealth | None = None,
) -> Readiness:
    """Ready when every required model serves its required alias (default: every served model,
    and at least one); else the reasons, the registry's error first where it is the cause.

    Degraded, with `health`, while serving saved state or when the last good poll is older
    than `stale_after_s`."""
    required = settings.required_models
    expected = required if required is not None else (settings.models or [])
    reasons = []
    if not table.models and not expected:
        reasons.append(registry_error or "no model with a required alias found yet")
    for name in expected:
        if name not in table.models:
            reasons.append(registry_error or f"model '{name}' not loaded yet")
    for served in table.models.values():
        if required is None or served.name in required:
            slot = served.slots[served.required_alias]
            if not served.ready:
                why = slot.error or slot.note or slot.state
                reasons.append(f"{served.name}@{slot.alias}: {why}")
            elif problem := stuck(slot.current):
                reasons.append(f"{served.name}@{slot.alias}: {problem}")
    if health is None:
        return Readiness(tuple(reasons))
    return Readiness(tuple(reasons), _degraded(settings, health), health.poll_age_s, health.stale)


def _degraded(settings: ServingSettings, health: RegistryHealth) -> tuple[str, ...]:
    why = f" ({health.error})" if health.error else ""
    if health.stale:
        return (f"serving the saved state: the registry has not answered since start{why}",)
    if health.poll_age_s > settings.stale_after_s:
        return (f"registry last read {health.poll_age_s:.0f} s ago{why}",)
    return ()


def check_model(served: ServedModel) -> Readiness:
    """Ready when the model's required alias has a loaded version; else why not."""
    slot = served.slots[served.required_alias]
    if served.ready:
        problem = stuck(slot.current)
        return Readiness((problem,) if problem else ())
    return Readiness((slot.error or slot.note or f"alias '{slot.alias}' is {slot.state}",))


def stuck(loaded: LoadedModel | None) -> str | None:
    """Why a loaded version takes no traffic: every predict thread held by a timed-out predict."""
    if loaded is None or not loaded.pool.exhausted:
        return None
    return (
        f"version {loaded.ref.version} is stuck: all {loaded.pool.threads} predict threads "
        "are held by predicts that timed out"
    )


def describe(
    table: SlotTable,
    registry_error: str | None,
    last_poll: float | None,
    health: RegistryHealth | None = None,
    *,
    batching: Batching = None,
) -> Status:
    """The `/models` document: every served model, its aliases and traffic; with `batching`,
    how each loaded version batches."""
    return Status(
        registry_error,
        last_poll,
        {name: _model_status(served, batching) for name, served in table.models.items()},
        health.poll_age_s if health else None,
        health.stale if health else False,
    )


def _model_status(served: ServedModel, batching: Batching) -> ModelStatus:
    split = served.split
    return ModelStatus(
        ready=check_model(served).ready,
        required_alias=served.required_alias,
        traffic=TrafficStatus(dict(split.weights), split.salt, split.source, served.split_problem),
        shadow={
            f"{production}->{shadow}": tally.summary()
            # a copy: the shadow thread may add a pair while this runs
            for (production, shadow), tally in list(served.shadow.items())
        },
        aliases={alias: _alias_status(slot, batching) for alias, slot in served.slots.items()},
    )


def _alias_status(slot: Slot, batching: Batching) -> AliasStatus:
    current = slot.current
    return AliasStatus(
        state=slot.state,
        version=current.ref.version if current else None,
        run_id=current.ref.run_id if current else None,
        target=slot.loading,
        registry_version=slot.wanted,
        predict=_predict_mode(current, slot.alias, batching),
        last_error=slot.error,
        note=slot.note,
    )


def _predict_mode(loaded: LoadedModel | None, alias: str, batching: Batching) -> PredictMode | None:
    if loaded is None:
        return None
    return PredictMode(
        inline=loaded.inline,
        warmup_ms=round(loaded.warmup_ms, 3),
        validated_here=loaded.spec is not None,
        direct_call=loaded.native is not None,
        load_s=round(loaded.load_s, 3),
        accepts_missing=loaded.accepts_missing,
        threads=loaded.pool.threads,
        threads_stuck=loaded.pool.stuck,
        stuck=stuck(loaded),
        batching=batching(loaded, alias) if batching is not None else None,
    )
