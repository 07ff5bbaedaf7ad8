"""The serving process's long-lived state and the prediction path, without HTTP."""

import asyncio
import functools
import logging
import random
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from registry.predictionlog import PredictionLogError
from registry.refs import ModelRef
from serving import feedback, protocol, traffic
from serving.batching import Batcher, BatchingStatus
from serving.capture import PredictionCapture, Served, open_capture
from serving.errors import (
    FeedbackNotCollected,
    FeedbackNotStored,
    ModelFailed,
    ModelNotReady,
    NothingServed,
    PredictTimeout,
    ServingError,
    UnknownModel,
    UnknownVersion,
    VersionStuck,
)
from serving.ids import new_request_id
from serving.inputs import Batch
from serving.limits import DecodeLimits
from serving.logs import TracebackLimiter
from serving.metrics import Metrics
from serving.model import LoadedModel, Predicted, answer_rows
from serving.settings import ServingSettings
from serving.shadow import ShadowLog, ShadowScorer
from serving.slots import ServedModel, SlotTable
from serving.status import Readiness, Status, check_model, check_process, describe
from serving.watcher import Watcher
from serving.webhooks import Verifier

logger = logging.getLogger("serving.requests")
events = logging.getLogger(__name__)

INLINE_SLOWDOWN = 20
"""An inline predict this many times slower than MODELYARD_INLINE_BELOW_MS moves its version
to its threads for good: on the event loop it held up every other request meanwhile."""
STOP_TIMEOUT_S = 5.0
"""Stopping waits this long at most for the watcher's loads to be cancelled."""
SHIP_ON_STOP_S = 2.0
"""Stopping ships the prediction log's spool for this long at most; the rest waits in the
spool for the next process."""


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
    media_type: str = protocol.JSON
    headers: tuple[tuple[str, str], ...] = ()
    """The answer's own headers, as its protocol writes them."""
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
    """Slots, watcher, metrics and shadow scoring of one serving process. Each loaded
    version predicts on threads of its own (`LoadedModel.pool`)."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.table = SlotTable()
        self.metrics = Metrics()
        self.watcher = Watcher(settings, self.table, self.metrics)
        self.shadow = ShadowScorer(self.metrics)
        self.capture: PredictionCapture | None = open_capture(settings, self.metrics)
        self.limits = DecodeLimits.of(settings)
        self.scoring = protocol.Scoring(self.limits)
        self._tracebacks = TracebackLimiter()
        self._suppressed: dict[tuple[str, str], int] = {}
        """Per version, failures logged without their traceback since the last one with it."""
        self._draining = False
        self._random = random.Random()
        secret = settings.webhook_secret
        self.webhooks = Verifier(secret.get_secret_value()) if secret else None
        self._task: asyncio.Task[None] | None = None
        self._batchers: weakref.WeakKeyDictionary[LoadedModel, Batcher] = (
            weakref.WeakKeyDictionary()
        )
        """Per loaded version, its batcher (made on its first request, gone with it)."""

    async def start(self) -> None:
        """Begin following the registry; loads happen in the background."""
        self._task = asyncio.create_task(self.watcher.run())
        if self.capture is not None:
            self.capture.start()

    def drain(self) -> None:
        """Answer readiness 503 "shutting down" from now on; requests are still served."""
        self._draining = True

    async def stop(self) -> None:
        """Stop polling, loading and every predict thread. Never waits for a predict: a thread
        still running one ends when it returns (they are daemons; exit does not wait)."""
        self._draining = True
        if self.capture is not None:
            await asyncio.to_thread(self.capture.close, SHIP_ON_STOP_S)
        stopping = asyncio.ensure_future(self._stop_following())
        await asyncio.wait({stopping}, timeout=STOP_TIMEOUT_S)
        self.shadow.stop()
        for served in self.table.models.values():
            for slot in served.slots.values():
                if slot.current is not None:
                    slot.current.pool.shutdown()

    async def _stop_following(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.watcher.stop()

    def readiness(self) -> Readiness:
        """Whether every required model serves its required alias; else why not."""
        if self._draining:
            return Readiness(("shutting down",))
        return check_process(
            self.settings, self.table, self.watcher.registry_error, self.watcher.health()
        )

    def model_readiness(self, name: str) -> Readiness:
        """Whether model `name` serves its required alias; else why not. UnknownModel (404)."""
        return check_model(self.table.model(name))

    def status(self) -> Status:
        """Every served model: aliases, versions, states, errors, traffic and shadow agreement."""
        return describe(
            self.table,
            self.watcher.registry_error,
            self.watcher.last_poll,
            self.watcher.health(),
            batching=self.batching_of,
        )

    def batching_of(self, loaded: LoadedModel, alias: str) -> BatchingStatus:
        """How `loaded` (served by `alias`) batches: the choice, why, recent batch sizes."""
        return self._batcher(loaded, alias).status()

    def _batcher(self, loaded: LoadedModel, alias: str) -> Batcher:
        """The batcher of `loaded` (served by `alias`), made under the settings on first use."""
        batcher = self._batchers.get(loaded)
        if batcher is None:
            ref, settings = loaded.ref, self.settings
            batcher = self._batchers[loaded] = Batcher.of(
                loaded,
                settings.batching,
                max_rows=settings.batch_max_rows,
                inline_below_ms=settings.inline_below_ms,
                slow_inline_ms=INLINE_SLOWDOWN * settings.inline_below_ms,
                rows_seen=self.metrics.batch_rows.labels(ref.name, alias, ref.version),
                queue_wait=self.metrics.batch_queue_wait.labels(ref.name, alias, ref.version),
            )
        return batcher

    def default_model(self) -> str:
        """The model behind /invocations: the configured one, else the first served by name."""
        if self.settings.default_model:
            return self.settings.default_model
        names = self.settings.models or sorted(self.table.models)
        if not names:
            raise NothingServed()
        return names[0]

    def served(self, name: str) -> ServedModel:
        """The served model `name`: 404 if it is not one to serve, 503 if not read yet."""
        try:
            return self.table.model(name)
        except UnknownModel:
            if name in (self.settings.models or ()) or name == self.settings.default_model:
                raise ModelNotReady(name, self.settings.required_alias) from None
            raise

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
        key: str | None = None,
        codec: protocol.Codec | None = None,
        version: str | None = None,
    ) -> Outcome:
        """Route, decode, validate, predict and encode one request; count and log it.

        `name` None is the default model; `alias` None lets the traffic split choose, sticky by
        `routing_key`, among aliases that are loaded and not stuck (the required alias takes the
        rest); `version` instead asks for the alias serving that version now. `started` is the
        `time.perf_counter()` of the request's arrival (default: now). `codec` reads the body
        and writes the answer (default: MLflow's scoring protocol). A validated request of zero
        rows is answered with no predictions, without a model.
        """
        if started is None:
            started = time.perf_counter()
        pinned = alias is not None or version is not None
        request_id = request_id or new_request_id()
        loaded: LoadedModel | None = None
        error: ServingError | None = None
        extra: tuple[str, ...] = ()
        fallback, answer = False, protocol.Encoded(b"")
        codec = codec or self.scoring
        served: ServedModel | None = None
        batch: Batch | None = None
        predicted: Predicted | None = None
        logged = False
        try:
            name = name or self.default_model()
            served = self.served(name)
            logged = self.capture is not None and self.capture.sampled(name)
            if version is not None:
                alias = served.alias_serving(version)
                if alias is None:
                    raise UnknownVersion(name, version)
            elif alias is None:
                choice = traffic.choose(
                    served.split, routing_key, served.available_aliases(), served.required_alias
                )
                alias, fallback = choice.alias, choice.fallback
                if fallback:
                    self.metrics.fallbacks.labels(name, alias).inc()
            _, loaded = self.table.loaded(name, alias)
            pool = loaded.pool
            if pool.exhausted:
                raise VersionStuck(name, alias, loaded.ref.version, pool.threads)
            decoded = await self._decode(codec, body, content_type, loaded)
            batch = decoded.batch
            if batch is not None and batch.extra:
                extra = batch.extra
                self.metrics.extra_columns.labels(name).inc()
            if batch is not None and batch.rows == 0:
                answer = codec.encode([], loaded.ref)
            else:
                predicted = await self._predict(loaded, alias, decoded)
                answer = codec.encode(predicted.answer, loaded.ref)
                if alias == served.required_alias and self._shadow_sampled(name):
                    self._shadow(served, loaded, decoded, predicted, request_id, logged=logged)
        except ServingError as failure:
            error = failure
        outcome = Outcome(
            request_id,
            error,
            answer.body,
            answer.media_type,
            answer.headers,
            ref=loaded.ref if loaded is not None else None,
            alias=alias if loaded is not None else None,
            extra_columns=extra,
            fallback=fallback,
            latency_s=time.perf_counter() - started,
        )
        self._record(outcome, name, alias, key)
        if logged and served is not None and outcome.ref is not None:
            self._capture(served, outcome, routing_key, pinned, batch, predicted)
        return outcome

    async def store_feedback(self, name: str, body: bytes) -> int:
        """Spool the labels in `body` (see `serving.feedback`) for model `name`'s prediction
        log; their count. 404 without a log or for a model not served, 400 naming bad items,
        503 when the spool cannot take them."""
        capture = self.capture
        if capture is None:
            raise FeedbackNotCollected()
        self.served(name)
        table = await asyncio.to_thread(feedback.labels, body)
        try:
            await asyncio.to_thread(capture.store_feedback, name, table)
        except (PredictionLogError, OSError) as exc:
            raise FeedbackNotStored(f"labels not stored: {exc}") from None
        return int(table.num_rows)

    def refused(
        self,
        error: ServingError,
        name: str | None,
        alias: str | None,
        *,
        request_id: str | None = None,
        started: float | None = None,
        key: str | None = None,
    ) -> Outcome:
        """The outcome of a request refused before it reached `invoke` (its body too large,
        its key refused), logged like any other. Arguments as for `invoke`."""
        latency_s = 0.0 if started is None else time.perf_counter() - started
        outcome = Outcome(request_id or new_request_id(), error, latency_s=latency_s)
        self._record(outcome, name, alias, key)
        return outcome

    def _record(
        self, outcome: Outcome, name: str | None, alias: str | None, key: str | None = None
    ) -> None:
        """The request's metrics and its log line (never the payload; the API key's name,
        never the key)."""
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
                    "key": key,
                },
            )

    def _capture(
        self,
        served: ServedModel,
        outcome: Outcome,
        routing_key: str | None,
        pinned: bool,
        batch: Batch | None,
        predicted: Predicted | None,
    ) -> None:
        """Queue the request, sampled for the prediction log, unless it answered no rows."""
        capture, ref = self.capture, outcome.ref
        assert capture is not None
        assert ref is not None
        assert outcome.alias is not None
        name = ref.name
        rows = 1
        if outcome.error is not None:
            predicted = None
        elif predicted is None or not (answered := _rows(batch, predicted.predictions)):
            return
        else:
            rows = answered
        if pinned:
            assignment, salt = "pinned", None
        else:
            salt = served.split.salt
            assignment = "fallback" if outcome.fallback else "key" if routing_key else "random"
        capture.record(
            name,
            Served(
                request_id=outcome.request_id,
                ts_us=time.time_ns() // 1000,
                alias=outcome.alias,
                version=ref.version,
                run_id=ref.run_id,
                assignment=assignment,
                salt=salt,
                routing_key=routing_key if salt is not None else None,
                sample_rate=capture.sample_rate(name),
                status=outcome.status,
                latency_ms=outcome.latency_s * 1000,
                rows=rows,
                outputs=predicted,
                with_inputs=capture.stores_inputs(name),
            ),
        )

    def _shadow_sampled(self, name: str) -> bool:
        rate = self.settings.shadow.get(name, 0.0)
        return rate > 0 and self._random.random() < rate

    def _shadow(
        self,
        served: ServedModel,
        primary: LoadedModel,
        decoded: protocol.Decoded,
        predicted: Predicted,
        request_id: str,
        *,
        logged: bool,
    ) -> None:
        """Score the request with the shadow alias too, off the request path (if it is loaded);
        when the request is `logged`, the shadow's answer is logged beside it."""
        alias, capture = self.settings.shadow_alias, self.capture
        slot = served.slots.get(alias)
        shadow = slot.current if slot is not None else None
        if shadow is None or shadow is primary:
            return
        rows = _rows(decoded.batch, predicted.predictions)
        log = None
        if logged and capture is not None and rows:
            rate = capture.sample_rate(primary.ref.name)
            log = ShadowLog(capture, alias, request_id, rows, rate)
        self.shadow.offer(served, primary, shadow, decoded, predicted.predictions, log)

    async def _decode(
        self, codec: protocol.Codec, body: bytes, content_type: str | None, loaded: LoadedModel
    ) -> protocol.Decoded:
        """The body read by `codec` for `loaded`; a large one off the event loop."""
        if len(body) > self.settings.decode_in_thread_bytes:
            return await asyncio.to_thread(
                codec.decode, body, content_type, loaded.spec, loaded.schema
            )
        return codec.decode(body, content_type, loaded.spec, loaded.schema)

    async def _predict(
        self, loaded: LoadedModel, alias: str, decoded: protocol.Decoded
    ) -> Predicted:
        gauge = self.metrics.in_flight_of(loaded.ref.name)
        gauge.inc()
        try:
            batcher = self._batcher(loaded, alias)
            if batcher.takes(loaded, decoded):
                return await self._predict_batched(loaded, batcher, decoded)
            if loaded.runs_inline(decoded):
                predictions = self._predict_inline(loaded, decoded)
            else:
                predictions = await self._predict_in_thread(loaded, decoded)
            return Predicted.alone(predictions, decoded.batch)
        except ServingError:
            raise
        except Exception as exc:
            self._log_failure(loaded, alias, exc)
            raise ModelFailed(loaded.ref.name, alias, loaded.ref.version) from None
        finally:
            gauge.dec()

    def _predict_inline(self, loaded: LoadedModel, decoded: protocol.Decoded) -> Any:
        """On the event loop; a call far slower than warm-up promised ends inline predicts."""
        began = time.perf_counter()
        try:
            return loaded.predict(decoded)
        finally:
            took_ms = (time.perf_counter() - began) * 1000
            if took_ms > INLINE_SLOWDOWN * self.settings.inline_below_ms and loaded.inline:
                loaded.inline_rows = 0
                events.warning(
                    "%s took %.1f ms inline (warm-up: %.3f ms): predicting in its threads now",
                    loaded.ref,
                    took_ms,
                    loaded.warmup_ms,
                )

    async def _predict_in_thread(self, loaded: LoadedModel, decoded: protocol.Decoded) -> Any:
        """On the version's threads, within the deadline; a call that misses it is abandoned."""
        future = loaded.pool.submit(functools.partial(loaded.predict, decoded))
        limit = self.settings.predict_timeout_s
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=limit)
        except TimeoutError:
            self._abandon(loaded, future)
            raise PredictTimeout(
                f"model '{loaded.ref.name}' did not answer within {limit} s"
            ) from None

    async def _predict_batched(
        self, loaded: LoadedModel, batcher: Batcher, decoded: protocol.Decoded
    ) -> Predicted:
        """Merged with concurrent requests, within the deadline (time queued counts); a batch
        all of whose members timed out is abandoned like a single call."""
        waiting = batcher.submit(loaded, decoded)
        limit = self.settings.predict_timeout_s
        try:
            return await asyncio.wait_for(waiting.future, timeout=limit)
        except TimeoutError:
            if (call := batcher.give_up(waiting)) is not None:
                self._abandon(loaded, call)
            raise PredictTimeout(
                f"model '{loaded.ref.name}' did not answer within {limit} s"
            ) from None

    def _abandon(self, loaded: LoadedModel, future: "Future[Any]") -> None:
        """Count the thread a timed-out predict holds until it returns."""
        pool, ref = loaded.pool, loaded.ref
        was_stuck = pool.exhausted
        pool.abandon(future)
        gauge = self.metrics.threads_stuck.labels(ref.name, ref.version)
        gauge.set(pool.stuck)
        future.add_done_callback(lambda _: gauge.set(pool.stuck))
        if pool.exhausted and not was_stuck:
            events.error(
                "%s is stuck: all %d predict threads are held by predicts that timed out; "
                "it takes no traffic until one returns",
                ref,
                pool.threads,
            )

    def _log_failure(self, loaded: LoadedModel, alias: str, exc: Exception) -> None:
        """A traceback for the first few failures of a version per minute, then one line each;
        the next traceback says how many were left out."""
        ref = loaded.ref
        key = (ref.name, ref.version)
        extra = {"model": ref.name, "alias": alias, "version": ref.version}
        if not self._tracebacks.allow(key):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            logger.error(
                "model raised on valid input: %s (traceback not logged: too many)",
                type(exc).__name__,
                extra=extra,
            )
            return
        suppressed = self._suppressed.pop(key, 0)
        logger.error(
            "model raised on valid input",
            exc_info=exc,
            extra=extra | {"tracebacks_suppressed": suppressed},
        )


def _rows(batch: Batch | None, predictions: Any) -> int | None:
    """The rows an answered request is logged as: its validated rows, else its answer's."""
    return batch.rows if batch is not None else answer_rows(predictions)
