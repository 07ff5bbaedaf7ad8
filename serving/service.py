"""The serving process's long-lived state and the prediction path, without HTTP."""

import asyncio
import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from serving import protocol, traffic
from serving.errors import ModelFailed, Overloaded, PredictTimeout, ServingError
from serving.metrics import Metrics
from serving.model import LoadedModel
from serving.settings import ServingSettings
from serving.shadow import Agreement
from serving.slots import ServedModel, SlotTable
from serving.watcher import Watcher
from serving.webhooks import Verifier

logger = logging.getLogger("serving.requests")

SHADOW_BACKLOG = 16
"""Shadow predictions queued or running at most; beyond that a sample is skipped and counted."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A prediction, encoded, and the version that made it."""

    body: bytes
    model: LoadedModel
    alias: str
    extra_columns: tuple[str, ...]
    fallback: bool


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
        self.in_flight = 0
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

    def default_model(self) -> str:
        """The model behind /invocations: the configured one, else the first served by name."""
        if self.settings.default_model:
            return self.settings.default_model
        names = self.settings.models or sorted(self.table.models)
        if not names:
            raise ServingError("no model is served yet")
        return names[0]

    async def invoke(
        self, name: str, alias: str | None, key: str | None, body: bytes, content_type: str | None
    ) -> Answer:
        """Route, decode, validate, predict and encode one request."""
        served = self.table.model(name)
        fallback = False
        if alias is None:
            choice = traffic.choose(
                served.split, key, served.loaded_aliases(), served.required_alias
            )
            alias, fallback = choice.alias, choice.fallback
            if fallback:
                self.metrics.fallbacks.labels(name, alias).inc()
        _, loaded = self.table.loaded(name, alias)
        try:
            decoded = protocol.decode(body, content_type, loaded.spec, loaded.schema)
            extra = decoded.batch.extra if decoded.batch is not None else ()
            if extra:
                self.metrics.extra_columns.labels(name).inc()
            predictions = await self._predict(loaded, alias, decoded)
        except ServingError as error:
            error.served_by = (loaded, alias)
            raise
        if alias == served.required_alias and self._shadow_sampled(name):
            self._shadow(served, loaded, decoded, predictions)
        return Answer(protocol.encode(predictions), loaded, alias, extra, fallback)

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
        if self.in_flight >= self.settings.max_in_flight:
            raise Overloaded(f"more than {self.settings.max_in_flight} requests in flight")
        self.in_flight += 1
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
            self.in_flight -= 1
