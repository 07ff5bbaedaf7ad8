"""The serving process's long-lived state and the prediction path, without HTTP."""

import asyncio
import logging
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from registry.refs import ModelRef
from serving import protocol, traffic
from serving.errors import ModelFailed, Overloaded, PredictTimeout, ServingError
from serving.metrics import Metrics
from serving.model import LoadedModel
from serving.settings import ServingSettings
from serving.shadow import Agreement
from serving.slots import ServedModel, SlotTable
from serving.status import Readiness, Status, check_model, check_process, describe
from serving.watcher import Watcher
from serving.webhooks import Verifier

logger = logging.getLogger("serving.requests")

SHADOW_BACKLOG = 16
"""Shadow predictions queued or running at most; beyond that a sample is skipped and counted."""
NO_PREDICTIONS = protocol.encode([])
"""The answer to a validated request of zero rows, for which no model is called."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one prediction request ended, whatever the ending: returned, never raised.

    `ref` and `alias` name the version the request was routed to: the one that answered, or
    that refused its input (400), failed (500), took too long (504) or was too busy (503). Both
    are None when the request ended before routing (unknown model or alias, nothing loaded yet,
    body too large).
    """

    request_id: str
    """The client's X-Request-ID, or one made up for the request."""
    error: ServingError | None = None
    """Why the request got no predictions; None when it did."""
    body: bytes = b""
    """The encoded predictions, when `error` is None."""
    ref: ModelRef | None = None
    alias: str | None = None
    extra_columns: tuple[str, ...] = ()
    """Columns outside the signature, ignored."""
    fallback: bool = False
    """The split chose an alias that was not loaded; the required alias answered instead."""
    latency_s: float = 0.0
    """From the request's arrival to its outcome."""

    @property
    def status(self) -> int:
        """The HTTP status: 200, or the error's."""
        return 200 if self.error is None else self.error.status_code


class Service:
    """Slots, watcher, metrics and the predict thread pool of one serving process."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.table = SlotTable()
        self.metrics = Metrics()
        self.watcher = Watcher(settings, self.table, self.metrics)
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="predict")
        # Shadow scoring has a thread of its own and a bounded backlog: it never queues ahead
        # of production predictions, a slow shadow cannot pile up work, one thread tallies.
        self.shadow_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._shadow_backlog = threading.BoundedSemaphore(SHADOW_BACKLOG)
        self._in_flight = 0
        self._random = random.Random()
        secret = settings.webhook_secret
        self.webhooks = Verifier(secret.get_secret_value()) if secret else None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin following the registry; loads happen in the background."""
        self._task = asyncio.create_task(self.watcher.run())

    async def stop(self) -> None:
        """Stop polling and loading; let the predict threads finish."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.watcher.stop()
        self.shadow_executor.shutdown(wait=True, cancel_futures=True)
        self.executor.shutdown(wait=True)

    def readiness(self) -> Readiness:
        """Whether every required model serves its required alias; else why not."""
        return check_process(self.settings, self.table, self.watcher.registry_error)

    def model_readiness(self, name: str) -> Readiness:
        """Whether model `name` serves its required alias; else why not. UnknownModel (404)."""
        return check_model(self.table.model(name))

    def status(self) -> Status:
        """Every served model: aliases, versions, states, errors, traffic and shadow agreement."""
        return describe(self.table, self.watcher.registry_error, self.watcher.last_poll)

    def default_model(self) -> str:
        """The model behind /invocations: the configured one, else the first served by name."""
        if self.settings.default_model:
            return self.settings.default_model
        names = self.settings.models or sorted(self.table.models)
        if not names:
            raise ServingError("no model is served yet")
        return names[0]

    async def invoke(
        self,
        name: str | None,
        alias: str | None,
        body: bytes,
        content_type: str | None,
        *,
        routing_key: str | None = None,
        request_id: str | None = None,
        started: float | None = None,
    ) -> Outcome:
        """Route, decode, validate, predict and encode one request; count and log it.

        `name` None is the default model; `alias` None lets the traffic split choose, sticky by
        `routing_key`. `started` is the `time.perf_counter()` of the request's arrival (default:
        now). A validated request of zero rows is answered with no predictions, without a model.
        """
        if started is None:
            started = time.perf_counter()
        request_id = request_id or uuid.uuid4().hex
        loaded: LoadedModel | None = None
        error: ServingError | None = None
        extra: tuple[str, ...] = ()
        fallback, answer = False, b""
        try:
            name = name or self.default_model()
            served = self.table.model(name)
            if alias is None:
                choice = traffic.choose(
                    served.split, routing_key, served.loaded_aliases(), served.required_alias
                )
                alias, fallback = choice.alias, choice.fallback
                if fallback:
                    self.metrics.fallbacks.labels(name, alias).inc()
            _, loaded = self.table.loaded(name, alias)
            decoded = protocol.decode(body, content_type, loaded.spec, loaded.schema)
            batch = decoded.batch
            if batch is not None and batch.extra:
                extra = batch.extra
                self.metrics.extra_columns.labels(name).inc()
            if batch is not None and batch.rows == 0:
                answer = NO_PREDICTIONS
            else:
                predictions = await self._predict(loaded, alias, decoded)
                if alias == served.required_alias and self._shadow_sampled(name):
                    self._shadow(served, loaded, decoded, predictions)
                answer = protocol.encode(predictions)
        except ServingError as failure:
            error = failure
        outcome = Outcome(
            request_id,
            error,
            answer,
            ref=loaded.ref if loaded is not None else None,
            alias=alias if loaded is not None else None,
            extra_columns=extra,
            fallback=fallback,
            latency_s=time.perf_counter() - started,
        )
        self._record(outcome, name, alias)
        return outcome

    def refused(
        self,
        error: ServingError,
        name: str | None,
        alias: str | None,
        *,
        request_id: str | None = None,
        started: float | None = None,
    ) -> Outcome:
        """The outcome of a request refused before it reached `invoke` (its body too large),
        logged like any other. Arguments as for `invoke`."""
        latency_s = 0.0 if started is None else time.perf_counter() - started
        outcome = Outcome(request_id or uuid.uuid4().hex, error, latency_s=latency_s)
        self._record(outcome, name, alias)
        return outcome

    def _record(self, outcome: Outcome, name: str | None, alias: str | None) -> None:
        """The request's metrics and its log line (never the payload)."""
        ref = outcome.ref
        # Only routed requests are counted: their labels name served versions, a bounded set,
        # where a request for an unknown model would add a series per name clients make up.
        if ref is not None:
            version, answered_by = ref.version, outcome.alias
            self.metrics.requests.labels(ref.name, answered_by, version, str(outcome.status)).inc()
            self.metrics.latency.labels(ref.name, answered_by, version).observe(outcome.latency_s)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "prediction",
                extra={
                    "request_id": outcome.request_id,
                    "model": name,
                    "alias": alias,
                    "version": ref.version if ref is not None else None,
                    "status": outcome.status,
                    "latency_ms": round(outcome.latency_s * 1000, 3),
                    "fallback": outcome.fallback,
                },
            )

    def _shadow_sampled(self, name: str) -> bool:
        rate = self.settings.shadow.get(name, 0.0)
        return rate > 0 and self._random.random() < rate

    def _shadow(
        self, served: ServedModel, primary: LoadedModel, decoded: protocol.Decoded, answer: Any
    ) -> None:
        """Score the same request with the shadow alias in a thread; record agreement only."""
        slot = served.slots.get(self.settings.shadow_alias)
        shadow = slot.current if slot is not None else None
        if shadow is None or shadow is primary:
            return
        pair = (primary.ref.version, shadow.ref.version)
        labels = (served.name, *pair)

        if not self._shadow_backlog.acquire(blocking=False):
            self.metrics.shadow_skipped.labels(*labels).inc()
            return

        def score() -> None:
            """In the shadow thread: predict and tally (one thread: no racing updates)."""
            try:
                staging = shadow.predict(decoded)
                tally = served.shadow.setdefault(pair, Agreement())
                before = (tally.rows, tally.agreed)
                tally.add(answer, staging)
                self.metrics.shadow_rows.labels(*labels).inc(tally.rows - before[0])
                self.metrics.shadow_agreed.labels(*labels).inc(tally.agreed - before[1])
            except Exception:
                self.metrics.shadow_errors.labels(*labels).inc()
            finally:
                self._shadow_backlog.release()

        self.shadow_executor.submit(score)

    async def _predict(self, loaded: LoadedModel, alias: str, decoded: protocol.Decoded) -> Any:
        if self._in_flight >= self.settings.max_in_flight:
            raise Overloaded(f"more than {self.settings.max_in_flight} requests in flight")
        gauge = self.metrics.in_flight_of(loaded.ref.name)
        self._in_flight += 1
        gauge.inc()
        try:
            if loaded.inline:
                return loaded.predict(decoded)
            future = asyncio.get_running_loop().run_in_executor(
                self.executor, loaded.predict, decoded
            )
            return await asyncio.wait_for(future, timeout=self.settings.predict_timeout_s)
        except ServingError:
            raise
        except TimeoutError:
            limit = self.settings.predict_timeout_s
            raise PredictTimeout(
                f"model '{loaded.ref.name}' did not answer within {limit} s"
            ) from None
        except Exception as exc:
            logger.error(
                "model raised on valid input",
                exc_info=exc,
                extra={"model": loaded.ref.name, "alias": alias, "version": loaded.ref.version},
            )
            raise ModelFailed(loaded.ref.name, alias, loaded.ref.version) from None
        finally:
            self._in_flight -= 1
            gauge.dec()
