"""Adaptive batching: concurrent requests to one loaded version merged into one predict.

A request joins its version's batcher when its rows were validated into a `Batch` here and it
carries no params; batch-mates share a `Batch.layout` (names, and one float matrix or equal
dtypes). A request waits one turn of the event loop, so every request the loop reads in that
turn joins it; then a version whose threads are not all busy dispatches, so an idle version
makes nobody wait longer; under load, requests queue while the threads work and the next batch
takes what queued, up to MODELYARD_BATCH_MAX_ROWS rows. No timer holds a batch open: the busy
threads are the wait, so a batch grows with the load and a lone request never pays for one.

A version fast enough to predict on the event loop (see `Batcher`) batches there instead, one
batch per turn of the loop, each bounded by the rows warm-up timed below
MODELYARD_INLINE_BELOW_MS. Only requests that would predict inline alone join there (no larger
than the input example); a batch far slower than warm-up promised ends predicts on the loop for
the version, as an inline one does.

One predict answers a batch, split back per request in order. If it raises, or its answer is
not one row per row, each request of the batch is predicted alone, so only the offender fails
(with its own traceback); a batch that misses the deadline fails every member with 504.
"""

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
from prometheus_client import Histogram

from serving import protocol
from serving.inputs import concatenated
from serving.model import BatchProfile, LoadedModel, Predicted, answer_rows

logger = logging.getLogger(__name__)

Mode = Literal["auto", "on", "off"]
SPEEDUP_NEEDED = 4.0
"""`auto` batches a version when a row costs at least this many times less in a batch of 32
than alone, as timed at warm-up. The demo classifier (scikit-learn or PyTorch behind the output
contract) answers 32 rows in about the time of one (28-33x measured); a model whose cost grows
with its rows (a Python loop per row) stays near 1x and gains nothing from batch-mates."""
RECENT_BATCHES = 100
"""/models shows the mean size of this many latest batches."""

Result = tuple[Predicted | None, BaseException | None]
"""One request's predictions, or what the model raised on it."""


@dataclass(frozen=True, slots=True)
class Choice:
    """Whether a version batches, and why."""

    enabled: bool
    reason: str


def choose(mode: Mode, profile: BatchProfile) -> Choice:
    """The batching choice for a version: the setting, then what its warm-up measured."""
    if mode == "off":
        return Choice(False, "MODELYARD_BATCHING=off")
    if profile.problem is not None:
        return Choice(False, f"requests cannot merge: {profile.problem}")
    if mode == "on":
        return Choice(True, "MODELYARD_BATCHING=on")
    measured = (
        f"warm-up: {profile.rows} rows in {profile.batch_ms:.3f} ms, 1 row in "
        f"{profile.single_ms:.3f} ms, {profile.speedup:.1f}x cheaper per row batched"
    )
    if profile.speedup >= SPEEDUP_NEEDED:
        return Choice(True, measured)
    return Choice(False, f"{measured} (batching needs {SPEEDUP_NEEDED:g}x)")


def predict_together(loaded: LoadedModel, requests: Sequence[protocol.Decoded]) -> list[Result]:
    """Answer every request with one predict of their rows concatenated, in order; each alone
    when that predict raises or does not answer one row per row."""
    if len(requests) > 1:
        batches = [r.batch for r in requests if r.batch is not None]
        try:
            merged = concatenated(batches)
            answer = loaded.predict(protocol.Decoded(batch=merged))
            if answer_rows(answer) == merged.rows:
                columns = protocol.Columns.of(answer)
                results: list[Result] = []
                start = 0
                for batch in batches:
                    stop = start + batch.rows
                    mine = columns.rows(start, stop) if columns is not None else None
                    rows = rows_between(answer, start, stop)
                    results.append((Predicted(rows, answer, merged, start, mine), None))
                    start = stop
                return results
        except Exception:  # each request is re-run alone below, to find the culprit
            pass
    return [_alone(loaded, request) for request in requests]


def rows_between(answer: Any, start: int, stop: int) -> Any:
    """Rows `start` to `stop` of a predict's answer (DataFrame, Series, array or list)."""
    if isinstance(answer, (pd.DataFrame, pd.Series)):
        return answer.iloc[start:stop]
    return answer[start:stop]


def _alone(loaded: LoadedModel, request: protocol.Decoded) -> Result:
    try:
        return Predicted.alone(loaded.predict(request), request.batch), None
    except Exception as exc:
        return None, exc


@dataclass(eq=False, slots=True)
class Waiting:
    """One request in a batcher: queued, then a member of a running batch."""

    request: protocol.Decoded
    rows: int
    layout: tuple[Any, ...]
    future: "asyncio.Future[Any]"
    queued: float
    running: "Running | None" = None


@dataclass(eq=False, slots=True)
class Running:
    """A batch predicting on the version's threads."""

    members: list[Waiting]
    call: "Future[Any] | None" = None
    abandoned: bool = False


@dataclass(frozen=True, slots=True)
class BatchingStatus:
    """A version's batching, for /models."""

    enabled: bool
    reason: str
    on_event_loop: bool
    """Batches predict on the event loop (the version is that fast), else on its threads."""
    max_rows: int
    batches: int = 0
    """Predicts the batcher made since the version was loaded."""
    requests: int = 0
    """Requests they answered."""
    mean_rows: float | None = None
    """Mean rows per predict over the latest RECENT_BATCHES."""
    mean_requests: float | None = None
    """Mean requests per predict over the latest RECENT_BATCHES."""


@dataclass(eq=False)
class Batcher:
    """The batching of one loaded version (used from the event loop only: no locks).

    It holds no reference to the version, which the caller passes on every call, so releasing
    the version releases its threads at once.
    """

    choice: Choice
    max_rows: int
    threads: int
    inline_rows: int
    """Batches of at most this many rows predict on the event loop; 0: on the threads."""
    slow_inline_ms: float
    """An inline batch slower than this sends later batches to the threads."""
    rows_seen: Histogram
    queue_wait: Histogram
    _queue: deque[Waiting] = field(default_factory=deque)
    _busy: int = 0
    _scheduled: bool = False
    _recent: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=RECENT_BATCHES))
    _batches: int = 0
    _requests: int = 0

    @classmethod
    def of(
        cls,
        loaded: LoadedModel,
        mode: Mode,
        *,
        max_rows: int,
        inline_below_ms: float,
        slow_inline_ms: float,
        rows_seen: Histogram,
        queue_wait: Histogram,
    ) -> "Batcher":
        """The batcher of `loaded` under `mode`; on the event loop when warm-up timed a batch
        of `profile.rows` below `inline_below_ms` and the version predicts inline anyway."""
        profile = loaded.batch_profile
        inline = loaded.inline and profile.problem is None and profile.batch_ms < inline_below_ms
        return cls(
            choose(mode, profile),
            max_rows,
            loaded.pool.threads,
            min(profile.rows, max_rows) if inline else 0,
            slow_inline_ms,
            rows_seen,
            queue_wait,
        )

    def takes(self, loaded: LoadedModel, request: protocol.Decoded) -> bool:
        """Whether `request` may be merged: validated rows, no params, not too many rows. On
        the event loop only a request that would predict there alone (no larger than the
        warm-up's): a larger one predicts in a thread, under the deadline."""
        batch = request.batch
        if not self.choice.enabled or batch is None or request.params is not None:
            return False
        limit = loaded.inline_rows if self.inline_rows and loaded.inline else self.max_rows
        return 0 < batch.rows <= limit

    def submit(self, loaded: LoadedModel, request: protocol.Decoded) -> Waiting:
        """Queue `request` (one `takes` accepts); its predictions arrive in `future`."""
        assert request.batch is not None
        loop = asyncio.get_running_loop()
        waiting = Waiting(
            request,
            request.batch.rows,
            request.batch.layout,
            loop.create_future(),
            time.perf_counter(),
        )
        self._queue.append(waiting)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._drain, loaded)
        return waiting

    def give_up(self, waiting: Waiting) -> "Future[Any] | None":
        """`waiting` timed out. Returns its batch's call when every member gave up on it (the
        caller abandons it); a queued request is dropped when its batch is taken."""
        running = waiting.running
        if running is None or running.call is None or running.call.done() or running.abandoned:
            return None
        if all(m.future.done() for m in running.members):
            running.abandoned = True
            return running.call
        return None

    def status(self) -> BatchingStatus:
        """The choice and the live batch sizes."""
        recent = list(self._recent)
        count = len(recent)
        return BatchingStatus(
            self.choice.enabled,
            self.choice.reason,
            self.inline_rows > 0,
            self.inline_rows or self.max_rows,
            self._batches,
            self._requests,
            round(sum(r for r, _ in recent) / count, 2) if count else None,
            round(sum(n for _, n in recent) / count, 2) if count else None,
        )

    def _drain(self, loaded: LoadedModel) -> None:
        """Start batches while threads are free (inline: one batch, the next one next turn)."""
        self._scheduled = False
        if self.inline_rows and loaded.inline:
            if members := self._take(self.inline_rows):
                self._run_inline(loaded, members)
            if self._queue:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._drain, loaded)
            return
        while self._queue and self._busy < self.threads:
            if members := self._take(self.max_rows):
                self._dispatch(loaded, members)

    def _take(self, limit: int) -> list[Waiting]:
        """The oldest live request and the queued ones that merge with it, up to `limit` rows
        (the first one whatever its rows); requests that gave up are dropped."""
        members: list[Waiting] = []
        rest: deque[Waiting] = deque()
        rows = 0
        queue = self._queue
        while queue and rows < limit:
            waiting = queue.popleft()
            if waiting.future.done():
                continue
            if not members or (
                waiting.layout == members[0].layout and rows + waiting.rows <= limit
            ):
                members.append(waiting)
                rows += waiting.rows
            else:
                rest.append(waiting)
        rest.extend(queue)
        self._queue = rest
        if members:
            self._observe(members, rows)
        return members

    def _observe(self, members: list[Waiting], rows: int) -> None:
        now = time.perf_counter()
        for waiting in members:
            self.queue_wait.observe(now - waiting.queued)
        self.rows_seen.observe(rows)
        self._recent.append((rows, len(members)))
        self._batches += 1
        self._requests += len(members)

    def _run_inline(self, loaded: LoadedModel, members: list[Waiting]) -> None:
        began = time.perf_counter()
        results = predict_together(loaded, [m.request for m in members])
        took_ms = (time.perf_counter() - began) * 1000
        _settle(members, results)
        if took_ms > self.slow_inline_ms and self.inline_rows:
            self.inline_rows = loaded.inline_rows = 0  # no more predicts on the loop
            logger.warning(
                "%s took %.1f ms for a batch of %d requests inline: batching in its threads now",
                loaded.ref,
                took_ms,
                len(members),
            )

    def _dispatch(self, loaded: LoadedModel, members: list[Waiting]) -> None:
        running = Running(members)
        for waiting in members:
            waiting.running = running
        requests = [m.request for m in members]
        try:
            call = loaded.pool.submit(functools.partial(predict_together, loaded, requests))
        except RuntimeError as exc:  # its threads were shut down: the version was released
            _settle(members, [(None, exc)] * len(members))
            return
        running.call = call
        self._busy += 1
        asyncio.wrap_future(call).add_done_callback(
            functools.partial(self._returned, loaded, running)
        )

    def _returned(
        self, loaded: LoadedModel, running: Running, done: "asyncio.Future[list[Result]]"
    ) -> None:
        """A batch's call ended (even long after its members gave up): settle, start the next."""
        self._busy -= 1
        if done.cancelled():  # the version's threads were shut down before it ran
            for waiting in running.members:
                waiting.future.cancel()
        elif (failure := done.exception()) is not None:
            _settle(running.members, [(None, failure)] * len(running.members))
        else:
            _settle(running.members, done.result())
        self._drain(loaded)


def _settle(members: list[Waiting], results: list[Result]) -> None:
    for waiting, (predictions, error) in zip(members, results, strict=True):
        if waiting.future.done():  # it gave up waiting
            continue
        if error is None:
            waiting.future.set_result(predictions)
        else:
            waiting.future.set_exception(error)
