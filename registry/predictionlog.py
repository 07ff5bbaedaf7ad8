"""The prediction log and its feedback: the schema, the layout, and reading a window back.

This module is the contract between the serving process that writes the log and everything
that reads it (the experiment report, any engine: pyarrow, polars, DuckDB, Spark).

Layout under a root (an `s3://bucket/prefix` URI or a local directory), Hive-partitioned:

    <root>/predictions/model=<name>/date=<YYYY-MM-DD>/hour=<HH>/<replica>-<seq>.parquet
    <root>/feedback/model=<name>/date=<YYYY-MM-DD>/<source>-<seq>.parquet

`model`, `date` and `hour` live in the path only (URI-encoded, as Hive readers expect), never
in the files; `date` and `hour` are those of the records' `ts`, in UTC. Files whose name starts
with `.` or `_` are invisible to readers, so a writer writes `.<name>` and renames it.

One prediction record per predicted row; sampling is per request (all its rows or none). An
error response is one record, row 0, with the outputs null. Inputs are extra columns named
`input.<column>` when the model stores them; readers that do not ask for them never read them.
A shadow record (assignment `shadow`, no inputs) is the shadow alias's answer to a logged
production request, under its request id and rows: readers of client traffic drop them
(`answered`).
"""

import hashlib
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import quote, urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

PREDICTIONS, FEEDBACK = "predictions", "feedback"
INPUT_PREFIX = "input."
"""Prefix of the columns holding a row's inputs, when the model stores them."""
SHADOW = "shadow"
"""The assignment of a shadow record: the shadow alias's answer to a production request."""
ASSIGNMENTS = ("key", "random", "pinned", "fallback", SHADOW)
"""How a request reached its alias: its routing key, weighted random choice, a pinned URL, or
the fallback alias because the chosen one was not loaded; or `shadow`: the record is the
shadow alias's answer to a production request, under that request's id and rows (no client
saw it)."""
Assignment = Literal["key", "random", "pinned", "fallback", "shadow"]

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("alias", pa.string(), nullable=False),
        pa.field("version", pa.string(), nullable=False),
        pa.field("run_id", pa.string()),
        pa.field("assignment", pa.string(), nullable=False),
        pa.field("salt", pa.string()),
        pa.field("key_hash", pa.string()),
        pa.field("sample_rate", pa.float64(), nullable=False),
        pa.field("status", pa.int16(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("label", pa.int64()),
        pa.field("probability", pa.float64()),
        pa.field("prediction", pa.float64()),
    ]
)
"""One record per predicted row, as written in every predictions file (inputs may follow).

- `ts`: when the request was answered; `row`: the row's position in the request (0-based).
- `assignment`: one of ASSIGNMENTS; `salt`: the split's salt when the request was routed.
- `key_hash`: `key_hash(salt, key)` of the `X-Routing-Key`, never the key; null without one.
- `sample_rate`: the share of requests logged when this one was (1.0: all).
- `status`: the HTTP status answered; `latency_ms`: the request's, the same on all its rows
  (on shadow records: the shadow predict call's, which may have answered other samples too).
- `label`, `probability` (classifiers), `prediction` (regressors): the contract's outputs,
  null where the task has no such column and on error records.
"""
FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("target", pa.float64(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
"""One true target per predicted row, joined on (`request_id`, `row`); `ts`: when it arrived.
A later label for the same row replaces an earlier one."""

_S3_ENV = {
    "access_key": "AWS_ACCESS_KEY_ID",
    "secret_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
}
PARQUET = ds.ParquetFileFormat()
READ_AHEAD_FILES = 16
"""Files read at once: a log is many small files (one per replica and flush), and their reads
wait on the store (1,000 files on SeaweedFS: 2.8 s, against 4.5 s at pyarrow's default 4)."""
T = TypeVar("T")
_FILE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


class PredictionLogError(Exception):
    """The log cannot be read or written: its root, a file, or the records given."""


@dataclass(frozen=True, slots=True)
class LogRoot:
    """Where a log lives: a pyarrow filesystem and the root's path on it (no scheme)."""

    filesystem: pafs.FileSystem
    path: str
    location: str
    """The root as the user gave it, for messages."""

    def model_dir(self, kind: str, model: str) -> str:
        """The directory of one model's predictions or feedback."""
        return f"{self.path}/{kind}/model={quote(model, safe='')}"


def open_root(location: str, environ: Mapping[str, str]) -> LogRoot:
    """The log root at `location`: `s3://bucket/prefix` (S3 reached as MLflow reaches it:
    `MLFLOW_S3_ENDPOINT_URL`, `AWS_*` from `environ`) or a local directory."""
    if location.startswith("s3://"):
        parts = urlsplit(location)
        if not parts.netloc:
            raise PredictionLogError(f"log root {location!r} names no bucket")
        return LogRoot(_s3(environ), f"{parts.netloc}{parts.path}".rstrip("/"), location)
    if "://" in location:
        raise PredictionLogError(f"log root {location!r}: only s3:// URIs or local paths")
    path = Path(location).expanduser().resolve().as_posix()
    return LogRoot(pafs.LocalFileSystem(), path, location)


def _s3(environ: Mapping[str, str]) -> pafs.S3FileSystem:
    options: dict[str, object] = {
        name: environ[var] for name, var in _S3_ENV.items() if environ.get(var)
    }
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    endpoint = environ.get("MLFLOW_S3_ENDPOINT_URL") or environ.get("AWS_ENDPOINT_URL_S3")
    if endpoint:
        parts = urlsplit(endpoint)
        options["endpoint_override"] = parts.netloc or parts.path
        options["scheme"] = parts.scheme or "https"
    return pafs.S3FileSystem(**options)


def key_hash(salt: str, key: str) -> str:
    """The salted digest of a routing key as the log stores it (the key itself never is)."""
    return hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=16).hexdigest()


def prediction_path(root: LogRoot, model: str, when: datetime, name: str) -> str:
    """The path of a predictions file of `model` for the hour of `when` (UTC)."""
    hour = when.astimezone(UTC)
    return (
        f"{root.model_dir(PREDICTIONS, model)}/date={hour:%Y-%m-%d}/hour={hour:%H}/{name}.parquet"
    )


def write_predictions(root: LogRoot, model: str, table: pa.Table, name: str) -> list[str]:
    """Write records (PREDICTION_SCHEMA, then any `input.*` columns) as one file per hour they
    span, each named `<name>.parquet` (`<replica>-<seq>`); return the paths written."""
    _check_name(name)
    written = []
    for hour, part in hours_of(table):
        path = prediction_path(root, model, hour, name)
        _write_atomically(root, part, path)
        written.append(path)
    return written


def hours_of(table: pa.Table) -> list[tuple[datetime, pa.Table]]:
    """Records conformed to the log's schema, split by the hour (UTC) of their `ts`."""
    table = _conform(table, PREDICTION_SCHEMA, extra_prefix=INPUT_PREFIX)
    if not table.num_rows:
        return []
    hours = pc.floor_temporal(table["ts"], unit="hour")
    first, last = pc.min_max(hours).values()
    if first == last:
        return [(first.as_py(), table)]
    return [
        (hour, table.filter(pc.equal(hours, pa.scalar(hour, hours.type))))
        for hour in pc.unique(hours).to_pylist()
    ]


def ship_predictions(root: LogRoot, model: str, source: Path, name: str) -> list[str]:
    """Copy a local predictions file into the log as `<name>.parquet`: its bytes as they are
    when it holds conformed records of one hour (as the prediction log's spool does), else
    its records rewritten by `write_predictions`. Return the paths written."""
    _check_name(name)
    hour = _single_hour(source)
    if hour is None:
        return write_predictions(root, model, pq.read_table(source), name)
    path = prediction_path(root, model, hour, name)
    _put_atomically(root, source.read_bytes(), path)
    return [path]


def _single_hour(source: Path) -> datetime | None:
    """The hour of a file's records when they are conformed and of one hour, from its footer."""
    metadata = pq.read_metadata(source)
    schema = metadata.schema.to_arrow_schema()
    conformed = schema.names[: len(PREDICTION_SCHEMA)] == PREDICTION_SCHEMA.names and all(
        schema.field(f.name).type == f.type for f in PREDICTION_SCHEMA
    )
    others = schema.names[len(PREDICTION_SCHEMA) :]
    if not conformed or not all(n.startswith(INPUT_PREFIX) for n in others):
        return None
    ts = PREDICTION_SCHEMA.get_field_index("ts")
    bounds = []
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(ts).statistics
        if stats is None or not stats.has_min_max:
            return None
        bounds += [stats.min, stats.max]
    hours = {
        (t if t.tzinfo else t.replace(tzinfo=UTC))
        .astimezone(UTC)
        .replace(minute=0, second=0, microsecond=0)
        for t in bounds
    }
    return hours.pop() if len(hours) == 1 else None


def write_feedback(root: LogRoot, model: str, table: pa.Table, name: str | None = None) -> str:
    """Write labels (FEEDBACK_SCHEMA; `ts` defaults to now) under today's (UTC) feedback
    partition as `<name>.parquet` (default: a fresh unique name); return the path."""
    name = name or f"import-{uuid.uuid4().hex}"
    _check_name(name)
    arrived = datetime.now(UTC)
    if "ts" not in table.column_names:
        ts_type = FEEDBACK_SCHEMA.field("ts").type
        table = table.append_column("ts", pa.array([arrived] * len(table), ts_type))
    table = _conform(table, FEEDBACK_SCHEMA)
    path = f"{root.model_dir(FEEDBACK, model)}/date={arrived:%Y-%m-%d}/{name}.parquet"
    _write_atomically(root, table, path)
    return path


def _check_name(name: str) -> None:
    if not _FILE_NAME.fullmatch(name) or name[0] in "._":
        raise PredictionLogError(f"file name {name!r}: letters, digits, '.', '_', '-' only")


def _conform(table: pa.Table, schema: pa.Schema, extra_prefix: str | None = None) -> pa.Table:
    """`table` with the schema's columns first, cast to its types; extras only by prefix."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    extra = [
        n
        for n in table.column_names
        if n not in schema.names and not (extra_prefix and n.startswith(extra_prefix))
    ]
    if missing or extra:
        raise PredictionLogError(f"records: missing columns {missing}, unexpected {extra}")
    try:
        columns = [
            column if (column := table[f.name]).type == f.type else column.cast(f.type)
            for f in schema
        ]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise PredictionLogError(f"records do not fit the log's schema: {exc}") from exc
    others = [n for n in table.column_names if n not in schema.names]
    return pa.table(columns + [table[n] for n in others], names=[*schema.names, *others])


def write_file(table: pa.Table, where: str | Path | pa.NativeFile) -> None:
    """Records as the log's Parquet files hold them: dictionary-encoded strings only (model
    inputs and outputs seldom repeat, and trying a dictionary on them doubles the write)."""
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    pq.write_table(table, where, use_dictionary=strings)


def _write_atomically(root: LogRoot, table: pa.Table, path: str) -> None:
    """Write `table` at `path`, seen whole or not at all."""
    sink = pa.BufferOutputStream()
    write_file(table, sink)
    _put_atomically(root, sink.getvalue(), path)


def _put_atomically(root: LogRoot, data: bytes | pa.Buffer, path: str) -> None:
    """Readers see the whole file or none: local files are renamed into place; an S3 put is
    atomic already (and needs no directories)."""
    directory, file_name = path.rsplit("/", 1)
    try:
        if isinstance(root.filesystem, pafs.LocalFileSystem):
            root.filesystem.create_dir(directory, recursive=True)
            hidden = f"{directory}/.{file_name}"
            with root.filesystem.open_output_stream(hidden) as out:
                out.write(data)
            root.filesystem.move(hidden, path)
        else:
            with root.filesystem.open_output_stream(path) as out:
                out.write(data)
    except OSError as exc:
        raise PredictionLogError(f"cannot write {path} under {root.location}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time range [since, until) in UTC; None: unbounded on that side."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("window bounds must carry a time zone")
        if self.since and self.until and self.since >= self.until:
            raise ValueError("the window's start must come before its end")

    def holds_date(self, day: date) -> bool:
        """Whether any instant of that UTC day falls in the window."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return self._overlaps(start, start + timedelta(days=1))

    def holds_hour(self, day: date, hour: int) -> bool:
        """Whether any instant of that UTC hour falls in the window."""
        start = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
        return self._overlaps(start, start + timedelta(hours=1))

    def _overlaps(self, start: datetime, end: datetime) -> bool:
        return (self.since is None or end > self.since) and (
            self.until is None or start < self.until
        )

    def expression(self) -> ds.Expression | None:
        """The row filter on `ts`."""
        found = None
        ts = ds.field("ts")
        if self.since is not None:
            found = ts >= pa.scalar(self.since, pa.timestamp("us", tz="UTC"))
        if self.until is not None:
            below = ts < pa.scalar(self.until, pa.timestamp("us", tz="UTC"))
            found = below if found is None else found & below
        return found


def answered(predictions: pa.Table) -> pa.Table:
    """The records of answers clients got: shadow records left out."""
    return predictions.filter(pc.not_equal(predictions["assignment"], SHADOW))


def read_predictions(
    root: LogRoot, model: str, window: Window, columns: Sequence[str] | None = None
) -> pa.Table:
    """A model's prediction records in `window`: only the date and hour partitions the window
    touches are listed, only `columns` (default: the schema's) are read."""
    files = list_files(root, PREDICTIONS, model, window)
    return read_files(root, files, PREDICTIONS, columns, window)


def read_feedback(root: LogRoot, model: str, since: datetime | None = None) -> pa.Table:
    """A model's labels that arrived from `since` on, the latest per (request_id, row)."""
    window = Window(since, None)
    files = list_files(root, FEEDBACK, model, window)
    return latest_labels(read_files(root, files, FEEDBACK, None, window))


def latest_labels(feedback: pa.Table) -> pa.Table:
    """The latest label per (request_id, row), by arrival."""
    if feedback.num_rows == 0:
        return feedback
    ordered = feedback.sort_by([("ts", "ascending")])
    positions = pa.array(range(ordered.num_rows), pa.int64())
    last = (
        ordered.append_column("_position", positions)
        .group_by(["request_id", "row"], use_threads=False)
        .aggregate([("_position", "max")])
    )
    return ordered.take(last["_position_max"])


def list_files(root: LogRoot, kind: str, model: str, window: Window) -> list[pafs.FileInfo]:
    """A model's Parquet files of `kind` under the partitions `window` touches (date and hour
    for predictions, date for feedback), with the size and mtime the listing gave; files being
    written (`.`/`_` names) are left out."""
    base = root.model_dir(kind, model)
    files: list[pafs.FileInfo] = []
    for day_dir, day in _partitions(root, base, "date", _parse_date):
        if not window.holds_date(day):
            continue
        if kind == FEEDBACK:
            files += _parquet_in(root, day_dir)
            continue
        for hour_dir, hour in _partitions(root, day_dir, "hour", int):
            if window.holds_hour(day, hour):
                files += _parquet_in(root, hour_dir)
    return files


def read_files(
    root: LogRoot,
    files: Sequence[pafs.FileInfo],
    kind: str,
    columns: Sequence[str] | None,
    window: Window,
) -> pa.Table:
    """The records of `window` in `files` of `kind`, only `columns` (default: all). The sizes
    come from the listing: reading needs no request per file to learn one."""
    schema = PREDICTION_SCHEMA if kind == PREDICTIONS else FEEDBACK_SCHEMA
    wanted = list(columns or schema.names)
    unknown = [c for c in wanted if c not in schema.names]
    if unknown:
        raise PredictionLogError(f"the log has no column {unknown[0]!r}")
    fs = root.filesystem
    try:
        fragments = [PARQUET.make_fragment(f.path, fs, file_size=f.size) for f in files]
        dataset = ds.FileSystemDataset(fragments, schema, PARQUET, fs)
        return dataset.to_table(
            columns=wanted, filter=window.expression(), fragment_readahead=READ_AHEAD_FILES
        )
    except (OSError, pa.ArrowException) as exc:
        raise PredictionLogError(f"cannot read the log under {root.location}: {exc}") from exc


def _partitions(
    root: LogRoot, directory: str, key: str, parse: Callable[[str], T]
) -> list[tuple[str, T]]:
    found: list[tuple[str, T]] = []
    for info in _list(root, directory, recursive=False):
        if info.type != pafs.FileType.Directory or not info.base_name.startswith(f"{key}="):
            continue
        try:
            found.append((info.path, parse(info.base_name.split("=", 1)[1])))
        except ValueError:
            continue  # not a partition of this layout
    return found


def _parquet_in(root: LogRoot, directory: str) -> list[pafs.FileInfo]:
    return [
        info
        for info in _list(root, directory, recursive=True)
        if info.type == pafs.FileType.File
        and info.base_name.endswith(".parquet")
        and info.base_name[0] not in "._"
    ]


def _list(root: LogRoot, directory: str, *, recursive: bool) -> Iterable[pafs.FileInfo]:
    selector = pafs.FileSelector(directory, allow_not_found=True, recursive=recursive)
    try:
        return root.filesystem.get_file_info(selector)  # type: ignore[no-any-return]
    except OSError as exc:
        raise PredictionLogError(f"cannot list {directory} under {root.location}: {exc}") from exc


def _parse_date(text: str) -> date:
    return date.fromisoformat(text)


MAX_REQUEST_ID = 200
"""Longest request id accepted with a label (serving caps the ids it issues well below)."""


class BadFeedback(PredictionLogError):
    """Labels that cannot be stored; `problems` names each bad item by its position."""

    def __init__(self, problems: list[tuple[int, str]], total: int) -> None:
        shown = "; ".join(f"item {i}: {why}" for i, why in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(f"{len(problems)} of {total} labels refused: {shown}{more}")
        self.problems = problems


def feedback_table(items: pd.DataFrame) -> pa.Table:
    """Labels checked and typed for `write_feedback`: each item needs a non-empty
    `request_id` (at most MAX_REQUEST_ID characters), a `row` that is an integer >= 0 and a
    finite numeric `target`. Raises BadFeedback naming every bad item (0-based)."""
    missing = [c for c in ("request_id", "row", "target") if c not in items.columns]
    if missing:
        raise PredictionLogError(
            f"labels need the columns request_id, row, target; missing {missing}"
        )
    problems: dict[int, str] = {}
    request_id = items["request_id"]
    ids = request_id.astype("string")
    bad_id = (
        request_id.isna()
        | (ids.str.len().fillna(0) == 0)
        | (ids.str.len().fillna(0) > MAX_REQUEST_ID)
    )
    row = pd.to_numeric(items["row"], errors="coerce")
    bad_row = row.isna() | (row < 0) | (row >= 2**31) | (row != np.floor(row))
    target = pd.to_numeric(items["target"], errors="coerce")
    bad_target = ~np.isfinite(target.to_numpy(dtype="float64", na_value=np.nan))
    for mask, why in (
        (
            bad_id.to_numpy(dtype=bool),
            f"request_id must be a non-empty string of at most {MAX_REQUEST_ID} characters",
        ),
        (bad_row.to_numpy(dtype=bool), "row must be an integer >= 0"),
        (bad_target, "target must be a finite number"),
    ):
        for position in np.flatnonzero(mask):
            problems.setdefault(int(position), why)
    if problems:
        raise BadFeedback(sorted(problems.items()), len(items))
    return pa.table(
        {
            "request_id": pa.array(ids.astype(str).tolist(), pa.string()),
            "row": pa.array(row.astype("int64").to_numpy(), pa.int32()),
            "target": pa.array(target.to_numpy(dtype="float64"), pa.float64()),
        }
    )
