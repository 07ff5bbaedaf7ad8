"""The prediction log's writer: every served row recorded, off the request path.

The request path only appends a reference to what it answered to a bounded queue (`record`).
A roller thread turns the queue into Arrow records every 0.25 s (short bursts of work beside
the event loop, whose GIL it shares) and writes them as one Parquet file per model every flush
interval, in a local spool directory; a shipper thread moves spooled files to the log root
under their final names (`<replica>-<seq>`), so a file shipped twice (a kill between upload and
delete) is the same file written again. Labels posted to the feedback route are spooled and
shipped the same way.

What can be lost: on SIGKILL, the rows still in memory (those of the last flush interval, and of
the spool write under way, if any); on SIGTERM, nothing (the queue is rolled into the spool,
which the next process on it ships). While the store is down the spool grows up to its cap;
past it, rows are dropped and counted. Requests are never slowed or failed by the log.
Shadow answers (`serving.shadow`) are recorded by the shadow thread the same way; samples it
has not scored when the process stops are not logged.

Spool layout: `<spool>/<replica>/{predictions,feedback}/<model, URI-encoded>/<seq>.parquet`.
A process holds an flock on its replica directory for its life; one that finds another
replica's directory unlocked (its process died) ships what is in it, under that replica's name.
"""

import fcntl
import logging
import os
import random
import re
import shutil
import socket
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from registry import predictionlog
from registry.loading import private_dir
from registry.predictionlog import (
    FEEDBACK,
    INPUT_PREFIX,
    PREDICTION_SCHEMA,
    PREDICTIONS,
    LogRoot,
    PredictionLogError,
)
from serving.inputs import Batch
from serving.metrics import Metrics
from serving.model import Predicted, answer_rows
from serving.settings import ServingSettings

logger = logging.getLogger(__name__)

OUTPUTS = ("label", "probability", "prediction")
"""The contract's output columns the log keeps."""
ADOPT_EVERY_S = 60.0
"""How often the shipper looks for spools of replicas that died."""
MAX_BACKOFF_S = 30.0
"""Longest wait between shipping attempts while the store fails."""
CONVERT_S = 0.25
"""How often queued answers become Arrow records (the spool is written every flush interval)."""
_LOCK = ".lock"


@dataclass(frozen=True, slots=True)
class Served:
    """One answered request, as the request path leaves it for the log: references only."""

    request_id: str
    ts_us: int
    """When it was answered, in microseconds since the epoch (UTC)."""
    alias: str
    version: str
    run_id: str | None
    assignment: str
    salt: str | None
    routing_key: str | None
    """Hashed with the salt by the roller; never written."""
    sample_rate: float
    status: int
    latency_ms: float
    rows: int
    """Records it becomes: its rows when answered, 1 for an error."""
    outputs: Predicted | None = None
    """The answer, with the predict call it came from (None for an error)."""
    with_inputs: bool = False
    """Whether the records carry the request's input."""


class PredictionCapture:
    """The prediction log of one serving process: queue, spool, roller and shipper."""

    def __init__(
        self,
        root: LogRoot,
        spool: Path,
        metrics: Metrics,
        *,
        flush_s: float,
        queue_rows: int,
        spool_max_bytes: int,
        sample: Mapping[str, float],
        skip_inputs: frozenset[str],
    ) -> None:
        self.root = root
        self.replica = replica_name()
        self.metrics = metrics
        self.flush_s = flush_s
        self.queue_rows = queue_rows
        self.spool_max_bytes = spool_max_bytes
        self._sample = dict(sample)
        self._skip_inputs = skip_inputs
        self._spool_root = spool
        self._spool = spool / self.replica
        self._spool.mkdir(mode=0o700, exist_ok=True)
        self._lock_file = _locked(self._spool)
        if self._lock_file is None:
            raise PredictionLogError(f"spool {self._spool} is held by another process")
        self._queue: list[tuple[str, Served]] = []
        self._converted: defaultdict[str, list[pa.Table]] = defaultdict(list)
        self._queued = 0
        """Rows held in memory: queued, or converted and not yet written."""
        self._guard = threading.Lock()
        self._last_seq = 0
        for partial in self._spool.glob("*/*/.*.parquet"):
            partial.unlink()  # a write cut short by a kill: incomplete, its rows lost
        self._spool_bytes = sum(path.stat().st_size for path in _spooled(self._spool))
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._roll_loop, name="prediction-log-roller", daemon=True),
            threading.Thread(target=self._ship_loop, name="prediction-log-shipper", daemon=True),
        ]
        self._random = random.Random()
        metrics.log_spool_bytes.set(self._spool_bytes)

    def start(self) -> None:
        """Start rolling and shipping (a spool left by an earlier process first)."""
        for thread in self._threads:
            thread.start()

    def sample_rate(self, model: str) -> float:
        """The share of `model`'s requests logged."""
        return self._sample.get(model, 1.0)

    def stores_inputs(self, model: str) -> bool:
        """Whether `model`'s records carry its inputs."""
        return model not in self._skip_inputs

    def sampled(self, model: str) -> bool:
        """Whether to log this request of `model` (a whole request or none of it)."""
        rate = self.sample_rate(model)
        return rate >= 1.0 or self._random.random() < rate

    def record(self, model: str, served: Served) -> None:
        """Queue one answered request; dropped and counted when the queue is full. Never
        raises, never blocks on anything but a short lock."""
        with self._guard:
            if self._queued + served.rows > self.queue_rows:
                full = True
            else:
                full = False
                self._queue.append((model, served))
                self._queued += served.rows
        if full:
            self.metrics.log_dropped.labels(model, "queue_full").inc(served.rows)

    def store_feedback(self, model: str, table: pa.Table) -> None:
        """Spool labels (FEEDBACK_SCHEMA without `ts`: they are stamped now) for shipping.
        Raises PredictionLogError when the spool is full or cannot be written."""
        stamped = table.append_column(
            "ts", pa.array([pd.Timestamp.now(tz="UTC")] * len(table), pa.timestamp("us", "UTC"))
        )
        if self._spool_bytes >= self.spool_max_bytes:
            raise PredictionLogError("the prediction log's spool is full: the store is down")
        self._spool_file(FEEDBACK, model, stamped)

    def close(self, ship_timeout_s: float) -> None:
        """Roll what is queued into the spool, then ship for at most `ship_timeout_s`; what is
        left is shipped by the next process on this spool."""
        self._stopping.set()
        roller, shipper = self._threads
        roller.join()
        shipper.join(timeout=ship_timeout_s)
        if shipper.is_alive():
            logger.warning("prediction log: files left in %s, shipped at next start", self._spool)
        self._lock_file.close()

    def _roll_loop(self) -> None:
        """Turn the queue into Arrow tables every CONVERT_S, so that the work beside the event
        loop comes in bursts of a few milliseconds; write them to the spool every flush
        interval, on a fixed schedule (a slow write does not stretch the next interval)."""
        deadline = time.monotonic() + self.flush_s
        while not self._stopping.wait(min(CONVERT_S, max(0.0, deadline - time.monotonic()))):
            self._convert()
            if time.monotonic() >= deadline:
                self._write_converted()
                deadline = max(deadline + self.flush_s, time.monotonic())
        self._convert()
        self._write_converted()

    def _convert(self) -> None:
        """Records of what is queued, one table per model, held until the next write."""
        with self._guard:
            taken, self._queue = self._queue, []
        by_model: dict[str, list[Served]] = defaultdict(list)
        for model, served in taken:
            by_model[model].append(served)
        for model, items in by_model.items():
            try:
                table = records(items)
            except Exception:  # any failure drops these rows, never the roller thread
                rows = sum(s.rows for s in items)
                logger.exception("prediction log: %d rows of %s not spooled", rows, model)
                self._dropped(model, "spool_failed", rows)
            else:
                self._converted[model].append(table)

    def _write_converted(self) -> None:
        """One spool file per model of the tables converted since the last write."""
        converted, self._converted = self._converted, defaultdict(list)
        for model, tables in converted.items():
            rows = sum(t.num_rows for t in tables)
            if self._spool_bytes >= self.spool_max_bytes:
                self._dropped(model, "spool_full", rows)
                continue
            try:
                table = pa.concat_tables(tables, promote_options="permissive")
                for _, part in predictionlog.hours_of(table):  # each shipped as it is
                    self._spool_file(PREDICTIONS, model, part)
            except Exception:
                logger.exception("prediction log: %d rows of %s not spooled", rows, model)
                self._dropped(model, "spool_failed", rows)
            else:
                self._release(rows)
                self.metrics.log_rows.labels(model).inc(rows)

    def _dropped(self, model: str, reason: str, rows: int) -> None:
        self._release(rows)
        self.metrics.log_dropped.labels(model, reason).inc(rows)

    def _release(self, rows: int) -> None:
        """Rows no longer held in memory: written or dropped."""
        with self._guard:
            self._queued -= rows

    def _spool_file(self, kind: str, model: str, table: pa.Table) -> None:
        directory = self._spool / kind / quote(model, safe="")
        directory.mkdir(parents=True, exist_ok=True)
        with self._guard:
            self._last_seq = max(self._last_seq + 1, time.time_ns() // 1000)
            seq = self._last_seq
        path = directory / f"{seq:017d}.parquet"
        hidden = directory / f".{path.name}"
        predictionlog.write_file(table, hidden)
        hidden.rename(path)
        self._grew(path.stat().st_size)

    def _grew(self, size: int) -> None:
        with self._guard:
            self._spool_bytes += size
            self.metrics.log_spool_bytes.set(self._spool_bytes)

    def _ship_loop(self) -> None:
        wait, adopted_at = 0.0, -ADOPT_EVERY_S
        while not self._stopping.wait(wait):
            try:
                if time.monotonic() - adopted_at >= ADOPT_EVERY_S:
                    adopted_at = time.monotonic()
                    self._adopt_orphans()
                ok = self._ship_pending()
            except Exception:  # an unexpected failure pauses shipping, never ends it
                logger.exception("prediction log: shipping paused")
                self.metrics.log_ship_failures.inc()
                ok = False
            wait = self.flush_s if ok else min(max(1.0, wait * 2), MAX_BACKOFF_S)
        self._threads[0].join()  # the last roll, then the last shipping
        self._ship_pending()

    def _ship_pending(self) -> bool:
        """Ship this process's spooled files, oldest first; False at the first failure."""
        return self._ship_dir(self._spool, self.replica, own=True)

    def _ship_dir(self, spool: Path, replica: str, *, own: bool) -> bool:
        for path in sorted(_spooled(spool), key=lambda p: p.name):
            kind, model = path.parent.parent.name, unquote(path.parent.name)
            size = path.stat().st_size
            try:
                name = f"{replica}-{path.stem}"
                if kind == PREDICTIONS:
                    rows = pq.read_metadata(path).num_rows
                    predictionlog.ship_predictions(self.root, model, path, name)
                else:
                    predictionlog.write_feedback(self.root, model, pq.read_table(path), name)
            except PredictionLogError as exc:
                self.metrics.log_ship_failures.inc()
                logger.warning("prediction log: shipping paused: %s", exc)
                return False
            except (OSError, pa.ArrowException) as exc:  # a spool file that cannot be read
                logger.error("prediction log: %s is unreadable, set aside: %s", path, exc)
                path.rename(path.with_name(f"_{path.name}"))
                if own:
                    self._grew(-size)
                continue
            path.unlink()
            if own:
                self._grew(-size)
            if kind == PREDICTIONS:
                self.metrics.log_shipped.labels(model).inc(rows)
        return True

    def _adopt_orphans(self) -> None:
        """Ship the spools of replicas whose process is gone, then remove them."""
        for other in self._spool_root.iterdir():
            if other == self._spool or not other.is_dir():
                continue
            lock = _locked(other)
            if lock is None:
                continue  # its process is alive
            try:
                logger.info("prediction log: shipping the spool left by %s", other.name)
                if self._ship_dir(other, other.name, own=False):
                    shutil.rmtree(other, ignore_errors=True)
            finally:
                lock.close()


def open_capture(settings: ServingSettings, metrics: Metrics) -> PredictionCapture | None:
    """The prediction log the settings ask for (MODELYARD_PREDICTION_LOG), or None."""
    if settings.prediction_log is None:
        return None
    root = predictionlog.open_root(settings.prediction_log, os.environ)
    spool = settings.prediction_log_spool
    if spool is not None:
        spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        base = settings.state_dir or Path(tempfile.gettempdir())
        spool = private_dir(base, f"prediction-spool-{os.getuid()}")
    return PredictionCapture(
        root,
        spool,
        metrics,
        flush_s=settings.prediction_log_flush_s,
        queue_rows=settings.prediction_log_queue_rows,
        spool_max_bytes=settings.prediction_log_spool_max_bytes,
        sample=settings.prediction_log_sample,
        skip_inputs=frozenset(settings.prediction_log_skip_inputs),
    )


def records(items: list[Served]) -> pa.Table:
    """The log's records (PREDICTION_SCHEMA, then `input.*`) of answered requests: one per
    row, one per error."""
    groups: dict[Any, list[Served]] = defaultdict(list)
    for served in items:
        batch = _inputs_of(served)
        groups[batch.layout if batch is not None else None].append(served)
    tables = [_records_of(group) for group in groups.values()]
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")


def _inputs_of(served: Served) -> Batch | None:
    """The validated input of the predict call that answered `served`, if stored."""
    return served.outputs.batch if served.with_inputs and served.outputs is not None else None


def _records_of(items: list[Served]) -> pa.Table:
    """Records of requests whose inputs share one layout (or carry none)."""
    counts = np.fromiter((s.rows for s in items), np.int64, len(items))
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    within = np.arange(total) - np.repeat(starts, counts)  # each record's row in its request

    def each(values: list[Any], kind: pa.DataType) -> pa.Array:
        return pa.array(np.repeat(np.array(values, dtype=object), counts), kind)

    salts = [s.salt for s in items]
    hashes = [
        predictionlog.key_hash(s.salt or "", s.routing_key) if s.routing_key else None
        for s in items
    ]
    ts = np.repeat(np.fromiter((s.ts_us for s in items), np.int64, len(items)), counts)
    columns: dict[str, pa.Array] = {
        "request_id": each([s.request_id for s in items], pa.string()),
        "row": pa.array(within, pa.int32()),
        "ts": pa.array(ts, pa.int64()).view(pa.timestamp("us", tz="UTC")),
        "alias": each([s.alias for s in items], pa.string()),
        "version": each([s.version for s in items], pa.string()),
        "run_id": each([s.run_id for s in items], pa.string()),
        "assignment": each([s.assignment for s in items], pa.string()),
        "salt": each(salts, pa.string()),
        "key_hash": each(hashes, pa.string()),
        "sample_rate": pa.array(np.repeat([s.sample_rate for s in items], counts), pa.float64()),
        "status": pa.array(np.repeat([s.status for s in items], counts), pa.int16()),
        "latency_ms": pa.array(np.repeat([s.latency_ms for s in items], counts), pa.float64()),
    }
    calls = _Calls(items)
    rows, missing = calls.rows(counts, within, outputs=True)
    answered = pa.array(rows, pa.int64(), mask=missing)
    for name in OUTPUTS:
        columns[name] = calls.output(name).take(answered)
    if calls.batches:
        rows, _ = calls.rows(counts, within, outputs=False)
        for name, values in calls.inputs(rows):
            columns[f"{INPUT_PREFIX}{name}"] = pa.array(values)
    return pa.table(columns)


class _Calls:
    """The distinct predict calls that answered some requests, each read once: their answers'
    output columns and their inputs, joined call after call; a request's records are rows of
    them (`index`)."""

    def __init__(self, items: list[Served]) -> None:
        self.answers: list[dict[str, np.ndarray]] = []
        self.sizes: list[int] = []
        """Rows of each call's answer."""
        self.batches: list[Batch] = []
        """Each call's input, when the requests' inputs are stored (for all calls or none)."""
        seen: dict[int, int] = {}
        self._call = np.full(len(items), -1, np.int64)
        self._start = np.zeros(len(items), np.int64)
        self._answered = np.zeros(len(items), bool)
        for i, served in enumerate(items):
            predicted = served.outputs
            if predicted is None:
                continue
            if (call := seen.get(id(predicted.whole))) is None:
                call = seen[id(predicted.whole)] = len(self.sizes)
                self.answers.append(_answer_columns(predicted.whole))
                self.sizes.append(answer_rows(predicted.whole) or 0)
                if (batch := _inputs_of(served)) is not None:
                    self.batches.append(batch)
            self._call[i], self._start[i] = call, predicted.start
            self._answered[i] = answer_rows(predicted.predictions) == served.rows

    def rows(
        self, counts: np.ndarray, within: np.ndarray, *, outputs: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each record's row in the joined calls' outputs (or inputs), and where it has none
        (an error; outputs: an answer without one row per row asked)."""
        sizes = self.sizes if outputs else [batch.rows for batch in self.batches]
        missing = self._call < 0
        if outputs:
            missing |= ~self._answered
        first = np.where(missing, 0, self._start)
        if sizes:
            offsets = np.cumsum([0, *sizes[:-1]], dtype=np.int64)
            first += offsets[np.maximum(self._call, 0)]
        return np.repeat(first, counts) + within, np.repeat(missing, counts)

    def output(self, name: str) -> pa.Array:
        """Output `name` of every call joined, null where a call's answer lacks it."""
        kind = PREDICTION_SCHEMA.field(name).type
        parts = [answer.get(name) for answer in self.answers]
        return _concatenated(parts, np.array(self.sizes, np.int64), kind)

    def inputs(self, rows: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
        """Rows `rows` of the calls' inputs joined, column by column."""
        first = self.batches[0]
        if first.matrix is not None:
            joined = np.vstack([b.matrix for b in self.batches if b.matrix is not None])
            by_column = np.ascontiguousarray(joined[rows].T)
            yield from zip(first.names, by_column, strict=True)
            return
        for position, name in enumerate(first.names):
            yield name, np.concatenate([b.arrays[position] for b in self.batches])[rows]


def _answer_columns(answer: Any) -> dict[str, np.ndarray]:
    """The contract's output columns of a predict's answer, each of one value per row."""
    if isinstance(answer, pd.DataFrame):  # one conversion: a column at a time costs 3x
        columns = zip(answer.columns, answer.to_numpy(dtype=object).T, strict=True)
        return {name: values for name, values in columns if name in OUTPUTS}
    if isinstance(answer, np.ndarray) and answer.ndim == 1:
        return {"prediction": answer}
    return {}


def _concatenated(
    parts: list[np.ndarray | None], counts: np.ndarray, kind: pa.DataType
) -> pa.Array:
    """One column from per-request values, null where a request has none."""
    if all(part is None for part in parts):
        return pa.nulls(int(counts.sum()), kind)
    dtype = next(part.dtype for part in parts if part is not None)
    filled = [
        part if part is not None else np.zeros(count, dtype)
        for part, count in zip(parts, counts, strict=True)
    ]
    mask = np.repeat([part is None for part in parts], counts)
    return _array(np.concatenate(filled), kind, mask if mask.any() else None)


def _array(values: np.ndarray, kind: pa.DataType, mask: np.ndarray | None) -> pa.Array:
    """`values` as `kind`; all null when they are not of the contract's type."""
    try:
        return pa.array(values, kind, mask=mask)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return pa.nulls(len(values), kind)


def replica_name() -> str:
    """This process's name in the log's file names: host and process id, file-name safe."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:60] or "host"
    return f"{host.lstrip('.')}-{os.getpid()}"


def _spooled(spool: Path) -> Iterator[Path]:
    for kind in (PREDICTIONS, FEEDBACK):
        for path in (spool / kind).glob("*/*.parquet"):
            if not path.name.startswith((".", "_")):
                yield path


def _locked(directory: Path) -> Any:
    """An open lock file holding an exclusive flock on `directory`, or None if another
    process holds it."""
    handle = open(directory / _LOCK, "a+b")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle
