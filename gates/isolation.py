"""Each version judged in a process of its own, so nothing its code does reaches the gate.

The gate downloads a version into its private, digest-checked cache (registry/cache.py); a
fresh interpreter, `python -m gates.score`, loads it from there and answers:

- its environment is built from nothing: no tracking URI, no registry or cloud credentials
  (no MLflow or AWS variable), HOME and TMPDIR in a private directory of its own, and
  `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false` unless the operator allows pickle;
- before any model code runs it makes itself non-dumpable and gives up every capability (so
  even as root it cannot trace another process or read a non-dumpable one's memory or
  environment), and the candidate starts only after the baseline has loaded; the gate makes
  itself non-dumpable too, so its credentials stay out of reach;
- its answer is a Parquet file the gate checks from its footer before reading it (as many
  rows as the evaluation data, a few columns of plain numbers, booleans or strings), and its
  messages are JSON lines on a pipe of its own; the gate computes every metric.

Anything else (an exit at any point before the gate says quit, an exit code other than 0, a
signal, no answer within the timeout, a malformed message or answer) raises ScoringFailed: the
gate could not judge, exit 2, never a pass.
"""

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gates.errors import EvaluationError
from registry import contract, loading
from registry.cache import ModelCache
from registry.client import Client
from registry.contract import Interface
from registry.refs import ModelRef

_PASSED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
"""The only variables a scoring process inherits."""
_PACKAGES = str(Path(__file__).resolve().parents[1])
_MAX_LINE = 64 * 1024
_MAX_COLUMNS = 64


class ScoringFailed(EvaluationError):
    """A scoring process did not answer as the protocol says: the gate cannot judge."""


@dataclass(frozen=True, slots=True)
class Isolation:
    """How versions are scored: per-answer timeout, and whether pickled models may load."""

    timeout_s: float = 300.0
    allow_pickle: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Scored:
    """A version's answer to the evaluation data (or why it gave none), its interface, and its
    scoring process, still running for latency timing."""

    answer: pd.DataFrame | None
    error: str | None
    interface: Interface
    process: "_Process"

    def predict(self, request: pd.DataFrame) -> None:
        """Have the version predict `request`, rows of the evaluation data by position."""
        start = int(request.index[0])
        self.process.call(start, start + len(request))


class Scorer:
    """Scores versions on one evaluation frame, each in its own process; a context manager
    that kills whatever is still running on the way out."""

    def __init__(
        self, client: Client, directory: Path, features: pd.DataFrame, isolation: Isolation
    ) -> None:
        self._client = client
        self._directory = directory
        self._rows = len(features)
        self._isolation = isolation
        self._cache = ModelCache(loading.private_dir(directory, "models"))
        self._features = directory / "features.parquet"
        features.reset_index(drop=True).to_parquet(self._features)
        self._processes: list[_Process] = []

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for process in self._processes:
            process.kill()

    def score(self, ref: ModelRef, role: str) -> Scored:
        """Download `ref`, then load and score it in a new process; ScoringFailed if that
        process misbehaves, EvaluationError if the version cannot be loaded."""
        _, version = loading.identify(self._client, ref.name, ref.version)
        tracking_uri = self._client.tracking_uri

        def download(directory: Path) -> None:
            loading.fetch_artifact(ref.uri, directory, tracking_uri)

        entry = self._cache.fetch(version, download)
        home = loading.private_dir(self._directory, role)
        answer_path = home / "answer.parquet"
        command = [sys.executable, "-m", "gates.score", json.dumps(asdict(version))]
        command += [str(self._cache.root), str(self._features), str(answer_path)]
        process = _Process(f"the {role} {ref}", command, home, self._isolation)
        self._processes.append(process)
        process.expect("started")
        message = process.expect("answered", "no answer", "load failed", "tampered")
        if message["event"] == "load failed":
            raise EvaluationError(f"cannot load the {role} {ref}: {message.get('reason')}")
        if message["event"] == "tampered":
            names = ", ".join(str(name) for name in message.get("names", []))[:300]
            raise process.failed(f"changed the gate's own code ({names})")
        if message["event"] == "no answer":
            reason = str(message.get("reason", "no reason given"))[:300]
            return Scored(None, reason, contract.interface_in(entry), process)
        answer = _read_answer(answer_path, self._rows, process.name)
        return Scored(answer, None, contract.interface_in(entry, answer), process)

    def finish(self) -> None:
        """Tell every scoring process to quit; ScoringFailed unless each exits with 0."""
        for process in self._processes:
            process.quit()


class _Process:
    """One `gates.score` process and its side of the protocol."""

    def __init__(self, name: str, command: list[str], home: Path, isolation: Isolation) -> None:
        self.name = name
        self._timeout_s = isolation.timeout_s
        self._stderr = home / "stderr.log"
        (home / "tmp").mkdir(mode=0o700, exist_ok=True)
        environment = {key: os.environ[key] for key in _PASSED if key in os.environ}
        environment |= {
            "HOME": str(home),
            "TMPDIR": str(home / "tmp"),
            "PYTHONPATH": _PACKAGES,
            "PYTHONNOUSERSITE": "1",
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": str(isolation.allow_pickle).lower(),
        }
        with self._stderr.open("wb") as stderr:
            self._popen = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=environment,
                cwd=home,
                start_new_session=True,
            )
        self._buffer = b""

    def expect(self, *events: str) -> dict[str, Any]:
        """The next message, which must be one of `events`."""
        message = self._receive()
        if message["event"] not in events:
            raise self.failed(f"sent '{message['event']}' where it should send {events[0]}")
        return message

    def call(self, start: int, stop: int) -> None:
        """Predict rows [start, stop) and wait until it has."""
        self._send({"rows": [start, stop]})
        self.expect("done")

    def quit(self) -> None:
        """End the process; ScoringFailed unless it exits with 0 in time."""
        self._send({"quit": True})
        try:
            code = self._popen.wait(timeout=self._timeout_s)
        except subprocess.TimeoutExpired:
            raise self.failed(
                f"did not exit within {self._timeout_s:g} s of being told to"
            ) from None
        if code != 0:
            raise self.failed(f"{_exit(code)} when told to quit")

    def kill(self) -> None:
        """Kill the process and everything it started (its own session)."""
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, signal.SIGKILL)
            self._popen.wait()
        for pipe in (self._popen.stdin, self._popen.stdout):
            if pipe is not None:
                pipe.close()

    def _send(self, message: dict[str, Any]) -> None:
        assert self._popen.stdin is not None
        try:
            self._popen.stdin.write(json.dumps(message).encode() + b"\n")
            self._popen.stdin.flush()
        except OSError:
            raise self.failed(self._ended()) from None

    def _receive(self) -> dict[str, Any]:
        assert self._popen.stdout is not None
        channel = self._popen.stdout.fileno()
        deadline = time.monotonic() + self._timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise self.failed(f"gave no answer within {self._timeout_s:g} s (killed)")
            if not select.select([channel], [], [], remaining)[0]:
                continue
            chunk = os.read(channel, _MAX_LINE)
            if not chunk:
                raise self.failed(self._ended())
            self._buffer += chunk
            if len(self._buffer) > _MAX_LINE:
                raise self.failed(f"sent a line longer than {_MAX_LINE} bytes")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            raise self.failed(f"sent a malformed message: {line[:80]!r}")
        return message

    def _ended(self) -> str:
        try:
            code = self._popen.wait(timeout=self._timeout_s)
        except subprocess.TimeoutExpired:
            return "closed its pipe without answering (killed)"
        return f"{_exit(code)} before it answered"

    def failed(self, what: str) -> ScoringFailed:
        """Kill the process; the error naming it, what it did and the tail of its stderr."""
        self.kill()
        tail = _tail(self._stderr)
        return ScoringFailed(
            f"the scoring process of {self.name} {what}" + (f" (stderr: {tail})" if tail else "")
        )


def _read_answer(path: Path, rows: int, name: str) -> pd.DataFrame:
    """The answer file, checked from its footer before it is read."""
    try:
        found = pq.ParquetFile(path)
        schema = found.schema_arrow
        count, columns = found.metadata.num_rows, len(schema)
        if count != rows:
            raise ValueError(f"{count} rows for {rows} evaluation rows")
        if not 0 < columns <= _MAX_COLUMNS:
            raise ValueError(f"{columns} columns")
        odd = [f"'{f.name}' ({f.type})" for f in schema if not _plain(f.type)]
        if odd:
            raise ValueError(f"columns no model answers with: {', '.join(odd[:3])}")
        frame: pd.DataFrame = found.read().to_pandas(ignore_metadata=True)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ScoringFailed(f"the answer of {name} is not a model answer: {exc}") from exc
    return frame


def _plain(kind: pa.DataType) -> bool:
    types = pa.types
    return bool(
        types.is_integer(kind)
        or types.is_floating(kind)
        or types.is_boolean(kind)
        or types.is_string(kind)
        or types.is_large_string(kind)
    )


def _exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _tail(path: Path, size: int = 2048) -> str:
    """The last few lines a process wrote to `path`, short enough for one error message."""
    try:
        with path.open("rb") as stream:
            stream.seek(max(0, path.stat().st_size - size))
            text = stream.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:])[-400:]
