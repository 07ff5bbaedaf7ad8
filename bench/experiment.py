"""Experiment benchmark: what the prediction log costs and loses, whether the experiment
report's statistics hold, and how fast it reads a large log (the goals of issue 14).

    .venv/bin/python -m bench.experiment           # full run -> bench/results/experiment.json
    .venv/bin/python -m bench.experiment --quick   # smoke run, JSON in a temporary file
    .venv/bin/python -m bench.experiment --only statistics,report --output /tmp/experiment.json
    .venv/bin/python -m bench.experiment --show bench/results/experiment.json

It starts its own registry (moto's S3 server and `mlflow server` on SQLite, both on core 1),
trains the demo classifier `cancer-classifier` (@production) and runs `modelyard serve`
processes (core 0) whose prediction log goes to that S3 (`s3://<bucket>/<part>`), measuring:

1. overhead: wrk (core 1), 1-row body, 32 connections, on the pinned path of two processes
   alike but for MODELYARD_PREDICTION_LOG (on: SeaweedFS, started as `modelyard up` starts
   it, on core 1: moto's server there costs the load generator milliseconds of Python per
   upload; off: unset), interleaved with the order alternating, the idle process paused
   (SIGSTOP): req/s at least 0.95x and p99 at most 1.1x of logging off (medians);
2. sigterm: 20,000 requests answered 200 (closed loop, 8 client threads on core 1, bodies of
   1, 2 and 3 rows, each request with an X-Request-ID of its own); at half of them the
   process gets SIGTERM and a new one starts on the same spool; requests go to it once it is
   ready. Every (request id, row) answered is in the log exactly once, and nothing else;
3. sigkill: SIGKILL under the same load, three times in a row, each next process starting
   on the same spool: rows lost at most the rows answered in the last flush interval
   (MODELYARD_PREDICTION_LOG_FLUSH_S, 1 s by default) before the kill, and every row that
   was in the dead process's spool shipped by the next;
4. store-down: the log's S3 reached through a TCP relay that is switched off for 60 s under
   the same load (nothing listens: connections refused, open ones reset): the clients' p99
   during the outage at most 1.1x the p99 before it, no failed request, and after the store
   returns every answered row shipped;
5. statistics: gates.sequential's simulations at the goals' sizes (500 A/A experiments looked
   at 20 times; a +3 point accuracy gap at 50/50 looked at up to the label count the report
   estimates; a 50/50 split with 3% of one arm's rows lost, and a healthy one, at 20,000
   requests), and a sample of the A/A experiments run through the report's own `analyse`
   to show that the simulation decides as the report does;
6. report: `modelyard experiment report --no-mlflow` (a fresh process, as a user runs it)
   over 1,000,000 rows written with `write_predictions` in files of 1,000 rows (one flush of
   a replica answering 1,000 requests a second), half of them labelled: at most 10 s (median
   of 3); `gates.experiment.run` in-process beside it, for context. This log is on SeaweedFS,
   started as `modelyard up` starts it: the platform's own object store, not moto's server,
   whose Python costs milliseconds per request, which a read of 1,000 files pays thousands
   of times over.

A ratio of timings (overhead, store-down p99) is only as good as the machine was quiet: each
timed run records where the cores' time went (bench/cores.py), and a ratio is judged on runs
in which other processes used at most 5% of the server's core (at least 3 pairs for the
overhead); otherwise the goal is not met, its measurement marked INCONCLUSIVE. Goals are
judged from the recorded parts alone (`goals`), so `--show` prints them again.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, redirect_stdout, suppress
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from bench import load, options
from bench.analysis import Goal, fmt
from bench.cores import CoreTimes, attribution
from bench.probes import latency_summary
from bench.processes import (
    BUCKET,
    ROOT,
    S3_ENV,
    Process,
    base_env,
    start_mlflow,
    start_s3,
    start_serving,
)
from modelyard.processes import StartupError, ensure_free, free_port

if TYPE_CHECKING:
    import pyarrow as pa

    from registry.predictionlog import LogRoot

RESULTS = ROOT / "bench" / "results" / "experiment.json"
MODEL = "cancer-classifier"
REPORT_MODEL = "experiment-bench-report"
REPORT_LOG = "s3://mlflow/report-log"
"""Where the report part's log goes: SeaweedFS's artifact bucket, as `modelyard up` has it."""
ALIAS = "production"
PATH = f"/models/{MODEL}/aliases/{ALIAS}/invocations"
SERVER_CORE, LOAD_CORE = "0", "1"
PARTS = ("overhead", "sigterm", "sigkill", "store-down", "statistics", "report")
SERVED_PARTS = ("overhead", "sigterm", "sigkill", "store-down")
"""Parts that need the demo classifier trained and served."""
BODY_ROWS = (1, 2, 3)
"""The clients' bodies, in turn: a row is logged as one record, so sizes vary."""
RPS_BOUND, P99_BOUND = 0.95, 1.1
OUTAGE_P99_BOUND = 1.1
AA_BOUND, POWER_BOUND = 0.05, 0.80
SRM_LOSSY_BOUND, SRM_HEALTHY_BOUND = 0.95, 0.002
REPORT_BOUND_S = 10.0
BUSY_LOADAVG = 1.5
"""A 1-minute load average above this at the start: the machine was shared, noted in meta."""
OTHERS_BOUND = 0.05
"""A timed run is clean when other processes used at most this share of the server's core
(bench/cores.py; the serving benchmark's runs on a quiet machine: under 1%). A ratio of
timings is judged on clean runs only: other load makes it pass or fail by chance."""
MIN_CLEAN_PAIRS = 3
LOADAVG_BOUND = 4.0
"""For records without core attribution: a part whose 1-minute load average passed this (twice
the cores; the benchmark's own server and load generator make about 2) ran contended."""

log = logging.getLogger("bench.experiment")


@dataclass
class Config:
    """Every knob of a run (recorded in the results)."""

    flush_s: float = 1.0
    connections: int = 32
    duration_s: float = 10.0
    warmup_s: float = 3.0
    repeats: int = 6
    clients: int = 8
    restart_requests: int = 20_000
    kills: int = 3
    kill_after_s: float = 10.0
    before_s: float = 60.0
    outage_s: float = 60.0
    after_s: float = 15.0
    ship_wait_s: float = 100.0
    aa_experiments: int = 500
    looks: int = 20
    labels_per_look: int = 1000
    accuracy: float = 0.8
    power_experiments: int = 500
    gap: float = 0.03
    pilot_labels: int = 2000
    srm_experiments: int = 100_000
    srm_requests: int = 20_000
    srm_lost: float = 0.03
    crosscheck_experiments: int = 20
    report_rows: int = 1_000_000
    rows_per_file: int = 1000
    label_share: float = 0.5
    report_repeats: int = 3
    seed: int = 14
    parts: tuple[str, ...] = PARTS


QUICK: dict[str, Any] = {
    "duration_s": 2.0,
    "warmup_s": 1.0,
    "repeats": 2,
    "restart_requests": 2000,
    "kills": 1,
    "kill_after_s": 3.0,
    "before_s": 6.0,
    "outage_s": 8.0,
    "after_s": 3.0,
    "ship_wait_s": 60.0,
    "aa_experiments": 100,
    "power_experiments": 100,
    "srm_experiments": 10_000,
    "crosscheck_experiments": 2,
    "report_rows": 100_000,
    "report_repeats": 1,
}


Run = options.Run[Config]


# -- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    """The registry, its S3, the work directory, and how to start a serving process."""

    tracking_uri: str
    s3_url: str
    workdir: Path
    stop: ExitStack
    flush_s: float
    client: Any = None
    seaweedfs: dict[str, str] | None = None
    """What reaches the run's SeaweedFS (`weed()`), once started."""

    def weed(self) -> dict[str, str]:
        """SeaweedFS, started on first use on core 1 as `modelyard up` starts it; its S3 env."""
        if self.seaweedfs is None:
            self.seaweedfs = start_seaweedfs(self)
        return self.seaweedfs

    def s3_env(self, endpoint: str | None = None) -> dict[str, str]:
        """What reaches the run's S3 (or `endpoint` in front of it), as the log reads it."""
        return S3_ENV | {"MLFLOW_S3_ENDPOINT_URL": endpoint or self.s3_url}

    def root(self, part: str, endpoint: str | None = None) -> LogRoot:
        """The log root of one part, on the run's S3."""
        from registry import predictionlog

        return predictionlog.open_root(log_uri(part), self.s3_env(endpoint))

    def serve(
        self,
        name: str,
        part: str | None,
        spool: Path | None = None,
        endpoint: str | None = None,
        *,
        on_seaweedfs: bool = False,
    ) -> Process:
        """`modelyard serve` of the demo classifier on core 0, logging to `part`'s root
        (None: no log) on the run's S3 (or its SeaweedFS), stopped with the stack."""
        settings = {"MODELYARD_MODELS": MODEL, "MODELYARD_ALIASES": ALIAS}
        if part is not None:
            store = self.weed() if on_seaweedfs else self.s3_env(endpoint)
            settings |= store | {
                "MODELYARD_PREDICTION_LOG": weed_log_uri(part) if on_seaweedfs else log_uri(part),
                "MODELYARD_PREDICTION_LOG_FLUSH_S": f"{self.flush_s:g}",
                "MODELYARD_PREDICTION_LOG_SPOOL": str(spool or self.workdir / f"spool-{part}"),
            }
        process = start_serving(name, self.tracking_uri, self.workdir, settings, SERVER_CORE)
        self.stop.callback(process.stop)
        return process


def log_uri(part: str) -> str:
    return f"s3://{BUCKET}/log-{part}"


def weed_log_uri(part: str) -> str:
    """A part's log on SeaweedFS: in its artifact bucket, as `modelyard up` has it."""
    return f"s3://mlflow/log-{part}"


def start_stack(workdir: Path, stop: ExitStack, flush_s: float) -> Stack:
    """moto's S3 and `mlflow server` (artifacts proxied to S3), both on core 1."""
    s3_url = start_s3(workdir, stop, LOAD_CORE)
    server = start_mlflow(workdir, s3_url, free_port(), core=LOAD_CORE)
    stop.callback(server.child.stop, 30)
    return Stack(server.uri, s3_url, workdir, stop, flush_s)


def bodies(rows: Sequence[int] = BODY_ROWS) -> list[bytes]:
    """`dataframe_split` bodies of the first holdout rows of the breast-cancer data."""
    from training.datasets import load_split

    holdout = load_split("breast-cancer").x_holdout
    return [
        json.dumps(
            {
                "dataframe_split": {
                    "columns": list(holdout.columns),
                    "data": holdout.head(n).values.tolist(),
                }
            }
        ).encode()
        for n in rows
    ]


def log_metrics(process: Process) -> dict[str, float]:
    """The process's modelyard_prediction_log_* metrics, each summed over its labels."""
    text = requests.get(process.base_url + "/metrics", timeout=5).text
    found: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if not line.startswith("modelyard_prediction_log_"):
            continue
        series, _, value = line.rpartition(" ")
        name = series.split("{", 1)[0]
        if not name.endswith("_created"):
            found[name] += float(value)
    return dict(found)


class ExitWatch:
    """When a process ended, seen by a thread waiting on it from the moment this is made."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.at: float | None = None
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        self.process.process.wait()
        self.at = time.monotonic()

    def join(self, timeout_s: float) -> int | None:
        """The exit code once the process ended, None if it still runs after `timeout_s`."""
        self._thread.join(timeout_s)
        return self.process.process.returncode


def wait_exit(process: Process, timeout_s: float) -> int | None:
    """The exit code once the process ended, None if it still runs after `timeout_s`."""
    with suppress(subprocess.TimeoutExpired):
        return process.process.wait(timeout_s)
    return None


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- clients that keep every request id ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One request of the clients: its id, the rows it sent, when, and its status."""

    request_id: str
    rows: int
    start: float
    end: float
    status: int | None
    """None when no HTTP answer came (refused, reset)."""


@dataclass(frozen=True, slots=True)
class Post(load.Request):
    """A request of the clients: its X-Request-ID and the rows its body holds."""

    request_id: str
    rows: int


class Clients(load.ClientThreads[Post]):
    """`connections` threads on core `core`, each posting back to back on a keep-alive
    session to `PATH` of the base URL `target()` names at that moment, every request with an
    X-Request-ID of its own (`<prefix>-<thread>-<n>`) and the bodies taken in turn. Every
    answer is kept. Stops on `stop()`, or once `limit` requests were answered 200.

    A request is never retried (urllib3 is given no retries): an id is sent once.
    """

    def __init__(
        self,
        prefix: str,
        target: Callable[[], str],
        payloads: Sequence[bytes],
        connections: int,
        *,
        limit: int | None = None,
        core: str | None = LOAD_CORE,
    ) -> None:
        super().__init__(connections, name=prefix, timeout_s=30, error_pause_s=0.02, core=core)
        self.prefix = prefix
        self.target = target
        self.payloads = list(payloads)
        self.limit = limit
        self.answers: list[Answer] = []  # list.append is atomic: no lock needed
        self._ok = 0
        self._guard = threading.Lock()

    @property
    def answered(self) -> int:
        """Requests answered 200 so far."""
        return self._ok

    def plan(self, thread: int) -> Iterator[Post]:
        for n in itertools.count(1):
            kind = n % len(self.payloads)
            request_id = f"{self.prefix}-{thread}-{n}"
            headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
            url = self.target() + PATH
            yield Post(url, self.payloads[kind], headers, request_id, BODY_ROWS[kind])

    def record(
        self,
        request: Post,
        start: float,
        end: float,
        response: requests.Response | None,
        error: requests.RequestException | None,
    ) -> None:
        status = None if response is None else response.status_code
        self.answers.append(Answer(request.request_id, request.rows, start, end, status))
        if status == 200:
            with self._guard:
                self._ok += 1
                if self.limit is not None and self._ok >= self.limit:
                    self.done.set()


def fixed(url: str) -> Callable[[], str]:
    """A target that always names `url`."""
    return lambda: url


def answered_rows(answers: Sequence[Answer]) -> set[tuple[str, int]]:
    """Every (request id, row) answered 200."""
    return {(a.request_id, row) for a in answers if a.status == 200 for row in range(a.rows)}


def logged_rows(root: LogRoot, prefix: str) -> Counter[tuple[str, int]]:
    """How many times each (request id, row) of the requests named `<prefix>-...` is logged."""
    import pyarrow.compute as pc

    from registry import predictionlog
    from registry.predictionlog import Window

    table = predictionlog.read_predictions(root, MODEL, Window(), ["request_id", "row"])
    mine = table.filter(pc.starts_with(table["request_id"], f"{prefix}-"))
    return Counter(zip(mine["request_id"].to_pylist(), mine["row"].to_pylist(), strict=True))


def accounting(answered: set[tuple[str, int]], logged: Counter[tuple[str, int]]) -> dict[str, Any]:
    """Answered rows against logged ones: missing, logged but never answered, duplicated."""
    missing, extra = answered - set(logged), set(logged) - answered
    return {
        "answered_rows": len(answered),
        "logged_rows": sum(logged.values()),
        "missing": len(missing),
        "extra": len(extra),
        "duplicated": sum(count - 1 for count in logged.values() if count > 1),
        "missing_examples": [list(x) for x in sorted(missing)[:5]],
        "extra_examples": [list(x) for x in sorted(extra)[:5]],
    }


def longest_gap(answers: Sequence[Answer]) -> float | None:
    """The longest time between two consecutive 200 answers (the clients' downtime)."""
    ends = sorted(a.end for a in answers if a.status == 200)
    return max((b - a for a, b in pairwise(ends)), default=None)


def statuses(answers: Sequence[Answer]) -> dict[str, int]:
    return dict(Counter(str(a.status) for a in answers))


def wait_logged(
    root: LogRoot, prefix: str, answered: set[tuple[str, int]], timeout_s: float
) -> float | None:
    """The time (time.monotonic()) at which every answered row was seen in the log, polling
    every second; None when not within `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if answered <= set(logged_rows(root, prefix)):
            return time.monotonic()
        time.sleep(1.0)
    return None


def spooled_rows(directory: Path) -> tuple[set[tuple[str, int]], int]:
    """The (request id, row) pairs in a replica's spooled prediction files, and how many
    half-written (hidden) files it holds."""
    import pyarrow.parquet as pq

    rows: set[tuple[str, int]] = set()
    hidden = 0
    for path in (directory / "predictions").glob("*/*.parquet"):
        if path.name.startswith((".", "_")):
            hidden += 1
            continue
        table = pq.read_table(path, columns=["request_id", "row"])
        rows |= set(zip(table["request_id"].to_pylist(), table["row"].to_pylist(), strict=True))
    return rows, hidden


def replica_dir(spool: Path, process: Process) -> Path | None:
    """The spool directory of `process` (named `<host>-<pid>`)."""
    return next(iter(spool.glob(f"*-{process.pid}")), None)


def wait_answered(clients: Clients, count: int, what: str) -> None:
    """Wait until `count` requests were answered 200, saying how far every 5 s."""
    said = time.monotonic()
    while clients.answered < count and not clients.done.is_set():
        time.sleep(0.05)
        if time.monotonic() - said >= 5:
            said = time.monotonic()
            log.info("  %s: %d of %d answered", what, clients.answered, count)


# -- 1. overhead ---------------------------------------------------------------------------------

ON, OFF = "logging on", "logging off"


def overhead(run: Run, stack: Stack) -> None:
    """wrk on two processes alike but for the prediction log, interleaved, the idle paused."""
    cfg = run.config
    processes = {
        ON: stack.serve("overhead-on", "overhead", on_seaweedfs=True),
        OFF: stack.serve("overhead-off", None),
    }
    for process in processes.values():
        process.wait_ready("/health/ready", timeout_s=240)
    script = load.post_script(bodies((1,))[0], stack.workdir / "experiment-one-row.lua")
    runs: dict[str, list[dict[str, Any]]] = {ON: [], OFF: []}

    def measuring(name: str) -> Process:
        for other, process in processes.items():
            if other != name:
                process.pause()
        processes[name].resume()
        return processes[name]

    def wrk(name: str, connections: int, duration_s: float) -> dict[str, Any]:
        process = measuring(name)
        cpu, cores, began = process.cpu_s(), CoreTimes.now(), time.monotonic()
        url = process.base_url + PATH
        result = load.run_wrk(url, script, connections, duration_s, core=LOAD_CORE)
        used = process.cpu_s() - cpu
        elapsed = time.monotonic() - began
        return result.numbers() | {
            "errors": result.errors,
            "cpu_us_per_request": used / result.requests * 1e6 if result.requests else None,
            "cores": attribution(
                cores, CoreTimes.now(), elapsed, int(SERVER_CORE), used, int(LOAD_CORE)
            ),
        }

    try:
        for name in processes:
            wrk(name, 8, cfg.warmup_s)
        for repeat in range(cfg.repeats):
            order = [ON, OFF] if repeat % 2 == 0 else [OFF, ON]
            for name in order:
                record = wrk(name, cfg.connections, cfg.duration_s) | {"repeat": repeat}
                runs[name].append(record)
                log.info(
                    "  [%d/%d] %-11s %7.0f req/s  p50 %6.2f ms  p99 %7.2f ms  %4.0f us/req  "
                    "others on core 0: %.0f%%",
                    repeat + 1, cfg.repeats, name, record["rps"], record["p50_ms"],
                    record["p99_ms"], record["cpu_us_per_request"] or 0,
                    record["cores"]["server_core_others"] * 100,
                )  # fmt: skip
    finally:
        for process in processes.values():
            process.resume()
    time.sleep(3 * cfg.flush_s)  # the last rows rolled and shipped
    run.parts["overhead"] = {
        "path": PATH,
        "rows": 1,
        "connections": cfg.connections,
        "duration_s": cfg.duration_s,
        "repeats": cfg.repeats,
        "order": "alternating per repetition; the idle process paused (SIGSTOP)",
        "log": weed_log_uri("overhead"),
        "store": "SeaweedFS (the embedded stack's object store), on core 1",
        "runs": runs,
        "log_metrics": log_metrics(processes[ON]),
    }
    for process in processes.values():
        process.stop()


# -- 2. sigterm ----------------------------------------------------------------------------------


def sigterm(run: Run, stack: Stack, payloads: Sequence[bytes]) -> None:
    """`restart_requests` answered across a SIGTERM restart; every answered row logged once."""
    cfg = run.config
    spool = stack.workdir / "spool-sigterm"
    first = stack.serve("sigterm-first", "sigterm", spool)
    first.wait_ready("/health/ready", timeout_s=240)
    current = [first.base_url]
    half = cfg.restart_requests // 2
    with Clients(
        "term", lambda: current[0], payloads, cfg.clients, limit=cfg.restart_requests
    ) as clients:
        wait_answered(clients, half, "before the SIGTERM")
        term_at = time.monotonic()
        at_answered = clients.answered
        os.killpg(first.pid, signal.SIGTERM)
        exited = ExitWatch(first)
        log.info("  SIGTERM at %d answered; starting the next process", at_answered)
        first_replica = replica_dir(spool, first)
        second = stack.serve("sigterm-second", "sigterm", spool)
        second.wait_ready("/health/ready", timeout_s=240, poll_s=0.05)
        current[0] = second.base_url
        second_ready_s = time.monotonic() - term_at
        log.info("  next process ready %.1f s after the SIGTERM", second_ready_s)
        first_code = exited.join(60)
        left = spooled_rows(first_replica) if first_replica and first_replica.exists() else None
        wait_answered(clients, cfg.restart_requests, "after the SIGTERM")
    answers = clients.answers
    answered = answered_rows(answers)
    root = stack.root("sigterm")
    log.info("  waiting for the log to hold the %d answered rows", len(answered))
    load_ended = time.monotonic()
    complete_at = wait_logged(root, "term", answered, cfg.ship_wait_s)
    second.stop()
    run.parts["sigterm"] = {
        "requests_wanted": cfg.restart_requests,
        "clients": cfg.clients,
        "body_rows": list(BODY_ROWS),
        "requests_sent": len(answers),
        "statuses": statuses(answers),
        "sigterm_at_answered": at_answered,
        "first_exit_code": first_code,
        "first_exit_after_sigterm_s": exited.at - term_at if exited.at else None,
        "longest_gap_between_answers_s": longest_gap(answers),
        "first_spool_left_at_exit_rows": len(left[0]) if left else 0,
        "second_ready_after_sigterm_s": second_ready_s,
        "log_complete_after_load_s": complete_at - load_ended if complete_at else None,
        "second_exit_code": second.process.returncode,
        "spool_files_left": len(list(spool.rglob("*.parquet"))),
        "accounting": accounting(answered, logged_rows(root, "term")),
    }


# -- 3. sigkill ----------------------------------------------------------------------------------


def sigkill(run: Run, stack: Stack, payloads: Sequence[bytes]) -> None:
    """SIGKILL under load, `kills` times, each next process on the same spool."""
    cfg = run.config
    spool = stack.workdir / "spool-sigkill"
    root = stack.root("sigkill")
    process = stack.serve("sigkill-0", "sigkill", spool)
    process.wait_ready("/health/ready", timeout_s=240)
    kills = []
    for i in range(cfg.kills):
        prefix = f"kill{i}"
        with Clients(prefix, fixed(process.base_url), payloads, cfg.clients) as clients:
            time.sleep(cfg.kill_after_s)
            replica = replica_dir(spool, process)
            killed_at = time.monotonic()
            os.killpg(process.pid, signal.SIGKILL)
            wait_exit(process, 30)
            clients.stop()
        if replica is None:
            raise SystemExit(f"error: no spool directory of process {process.pid} in {spool}")
        spooled, hidden = spooled_rows(replica)
        shipped_before = logged_rows(root, prefix)
        restarted = time.monotonic()
        process = stack.serve(f"sigkill-{i + 1}", "sigkill", spool)
        ready_s = process.wait_ready("/health/ready", timeout_s=240)
        adopted_s = wait_gone(replica, cfg.ship_wait_s)
        answers = clients.answers
        answered = answered_rows(answers)
        logged = logged_rows(root, prefix)
        last = [
            a for a in answers if a.status == 200 and killed_at - cfg.flush_s < a.end <= killed_at
        ]
        window = [a for a in answers if a.status == 200 and killed_at - 5 < a.end <= killed_at]
        record: dict[str, Any] = {
            "answered_rows_in_last_flush": sum(a.rows for a in last),
            "answered_rows_per_s_5s_before": sum(a.rows for a in window) / 5,
            "spooled_rows": len(spooled),
            "spooled_hidden_files": hidden,
            "shipped_before_kill_rows": sum(shipped_before.values()),
            "spooled_not_shipped": len(spooled - set(logged)),
            "restart_ready_s": ready_s,
            "spool_shipped_after_restart_s": (
                time.monotonic() - restarted if adopted_s is not None else None
            ),
            "statuses": statuses(answers),
            "accounting": accounting(answered, logged),
        }
        kills.append(record)
        log.info(
            "  kill %d: %d answered rows, %d lost (%d answered in the last %g s), %d spooled, "
            "%d of them not shipped",
            i + 1, len(answered), record["accounting"]["missing"],
            record["answered_rows_in_last_flush"], cfg.flush_s, len(spooled),
            record["spooled_not_shipped"],
        )  # fmt: skip
    process.stop()
    run.parts["sigkill"] = {
        "flush_s": cfg.flush_s,
        "clients": cfg.clients,
        "load_before_kill_s": cfg.kill_after_s,
        "kills": kills,
    }


def wait_gone(path: Path, timeout_s: float) -> float | None:
    """Seconds until `path` no longer exists (None: still there after `timeout_s`)."""
    started = time.monotonic()
    while path.exists():
        if time.monotonic() - started > timeout_s:
            return None
        time.sleep(0.2)
    return time.monotonic() - started


# -- 4. store down -------------------------------------------------------------------------------


class TcpSwitch:
    """A TCP relay on 127.0.0.1 to `upstream` that can be switched off: while off nothing
    listens on its port (connections are refused) and the connections it relayed are reset."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._guard = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Listen again on the same port."""
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR
        listener.settimeout(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Stop listening and reset every relayed connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # stops listening now, wakes accept()
            listener.close()
        with self._guard:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with suppress(OSError):
                # closed with no linger: a reset; the pumps blocked on it wake and close it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RD)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.settimeout(None)
            with self._guard:
                self._open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy `source` to `sink` until either ends, then close both."""
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with suppress(OSError):
                sock.close()
        with self._guard:
            self._open -= {source, sink}


def store_down(run: Run, stack: Stack, payloads: Sequence[bytes]) -> None:
    """Load through an S3 outage of `outage_s`: latency before, during and after; all shipped."""
    cfg = run.config
    parts = urlsplit(stack.s3_url)
    switch = TcpSwitch((parts.hostname or "127.0.0.1", parts.port or 80))
    switch.up()
    stack.stop.callback(switch.down)
    process = stack.serve("store-down", "store-down", endpoint=switch.url)
    process.wait_ready("/health/ready", timeout_s=240)
    samples: list[tuple[str, dict[str, float]]] = []

    def watch(seconds: float, phase: str) -> None:
        """Sample the log's metrics every second for `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append((phase, log_metrics(process)))
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))

    marks: list[tuple[CoreTimes, float]] = []

    def mark() -> float:
        """Now, with the cores' times and the server's CPU seconds at this moment."""
        marks.append((CoreTimes.now(), process.cpu_s()))
        return time.monotonic()

    with Clients("store", fixed(process.base_url), payloads, cfg.clients) as clients:
        time.sleep(2.0)  # connections open, the first flushes shipped
        began = mark()
        log.info("  %g s before the outage", cfg.before_s)
        watch(cfg.before_s, "before")
        down_at = mark()
        switch.down()
        log.info("  store down for %g s", cfg.outage_s)
        watch(cfg.outage_s, "during")
        up_at = mark()
        switch.up()
        log.info("  store back; %g s more load", cfg.after_s)
        watch(cfg.after_s, "after")
        ended = mark()
    answers = clients.answers
    answered = answered_rows(answers)
    root = stack.root("store-down")
    log.info("  waiting for the log to hold the %d answered rows", len(answered))
    shipped_at = wait_logged(root, "store", answered, cfg.ship_wait_s)
    final = log_metrics(process)
    process.stop()

    def window(low: float, high: float) -> list[Answer]:
        return [a for a in answers if low <= a.start < high]

    def latency(found: Sequence[Answer]) -> dict[str, Any]:
        return latency_summary([(a.end - a.start) * 1000 for a in found if a.status == 200])

    phases = {"before": (began, down_at), "during": (down_at, up_at), "after": (up_at, ended)}
    cores = {
        name: attribution(
            marks[i][0], marks[i + 1][0], high - low, int(SERVER_CORE),
            marks[i + 1][1] - marks[i][1], int(LOAD_CORE),
        )
        for i, (name, (low, high)) in enumerate(phases.items())
    }  # fmt: skip
    per_10s = {
        name: [latency(window(t, min(t + 10, high)))["p99_ms"] for t in _steps(low, high, 10)]
        for name, (low, high) in phases.items()
    }
    failures = "modelyard_prediction_log_ship_failures_total"
    failed_before = max((m.get(failures, 0.0) for phase, m in samples if phase == "before"))
    run.parts["store-down"] = {
        "outage": "TCP relay to S3 switched off: connections refused, open ones reset",
        "clients": cfg.clients,
        "before_s": cfg.before_s,
        "outage_s": cfg.outage_s,
        "after_s": cfg.after_s,
        "latency": {name: latency(window(*span)) for name, span in phases.items()},
        "requests_per_s": {
            name: len(window(low, high)) / (high - low) for name, (low, high) in phases.items()
        },
        "p99_ms_per_10s": per_10s,
        "cores": cores,
        "requests": len(answers),
        "statuses": statuses(answers),
        "failed": sum(1 for a in answers if a.status != 200),
        "ship_failures_since_down": final.get(failures, 0.0) - failed_before,
        "spool_bytes_max": max(
            m.get("modelyard_prediction_log_spool_bytes", 0.0) for _, m in samples
        ),
        "dropped_rows": final.get("modelyard_prediction_log_dropped_rows_total", 0.0),
        "all_shipped_after_store_back_s": shipped_at - up_at if shipped_at else None,
        "final_log_metrics": final,
        "accounting": accounting(answered, logged_rows(root, "store")),
    }


def _steps(low: float, high: float, step: float) -> list[float]:
    count = max(1, int((high - low) // step))
    return [low + i * step for i in range(count)]


# -- 5. statistics -------------------------------------------------------------------------------


def statistics_part(run: Run) -> None:
    """The sequential simulations at the goals' sizes, and A/A experiments through `analyse`."""
    from gates import sequential

    cfg = run.config
    seed = cfg.seed
    timings: dict[str, float] = {}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        began = time.monotonic()
        found = call()
        timings[name] = time.monotonic() - began
        log.info("  %s: %.1f s", name, timings[name])
        return found

    aa = timed(
        "A/A",
        lambda: sequential.simulate_aa(
            cfg.aa_experiments, cfg.looks, cfg.labels_per_look, cfg.accuracy, seed
        ),
    )
    power, labels = timed(
        "power",
        lambda: sequential.simulate_power(
            cfg.power_experiments, cfg.gap, cfg.accuracy, cfg.pilot_labels, cfg.looks, seed
        ),
    )
    lossy = timed(
        "srm, lossy",
        lambda: sequential.simulate_srm(cfg.srm_experiments, cfg.srm_requests, cfg.srm_lost, seed),
    )
    healthy = timed(
        "srm, healthy",
        lambda: sequential.simulate_srm(cfg.srm_experiments, cfg.srm_requests, 0.0, seed + 1),
    )
    crosscheck = timed("A/A through analyse", lambda: aa_through_analyse(cfg))
    run.parts["statistics"] = {
        "aa": {
            "experiments": cfg.aa_experiments,
            "looks": cfg.looks,
            "labels_per_look": cfg.labels_per_look,
            "accuracy": cfg.accuracy,
            "false_decision_rate": aa,
        },
        "power": {
            "experiments": cfg.power_experiments,
            "gap": cfg.gap,
            "accuracy": cfg.accuracy,
            "pilot_labels": cfg.pilot_labels,
            "looks": cfg.looks,
            "candidate_better_rate": power,
            "median_labels_estimated": labels,
        },
        "srm": {
            "experiments": cfg.srm_experiments,
            "requests": cfg.srm_requests,
            "lost": cfg.srm_lost,
            "alarm_p": sequential.SRM_ALARM_P,
            "lossy_alarm_rate": lossy,
            "healthy_alarm_rate": healthy,
            "requests_needed_for_95": sequential.srm_requests_needed(cfg.srm_lost),
        },
        "crosscheck": crosscheck,
        "seconds": timings,
        "seed": seed,
    }


def aa_through_analyse(cfg: Config) -> dict[str, Any]:
    """A/A experiments as logs and labels, each look through `gates.experiment.analyse`: its
    decisions against the simulations' rule (the confidence sequence excludes zero and each
    arm has its minimum of labels) on the same data."""
    import numpy as np

    from gates import experiment, sequential
    from registry.refs import ModelRef
    from registry.split import Split

    rng = np.random.default_rng(cfg.seed + 2)
    per_arm = cfg.labels_per_look // 2
    split = Split({"production": 50, "staging": 50}, "aa")
    candidate = ModelRef(REPORT_MODEL, "2", alias="staging")
    baseline = ModelRef(REPORT_MODEL, "1", alias="production")
    looks = agree = decided = 0
    for _ in range(cfg.crosscheck_experiments):
        correct = rng.random((cfg.looks, 2, per_arm)) < cfg.accuracy
        predictions, feedback = aa_tables(correct, rng)
        wins = correct.sum(axis=2).cumsum(axis=0).astype("float64")
        n_arm = per_arm * np.arange(1, cfg.looks + 1)
        estimate, width, _ = sequential.mean_difference(
            wins[:, 0], wins[:, 0], n_arm, wins[:, 1], wins[:, 1], n_arm
        )
        rule = (np.abs(estimate) > width) & (n_arm >= sequential.MIN_LABELS_PER_ARM)
        any_decided = False
        for look in range(cfg.looks):
            rows = (look + 1) * 2 * per_arm
            found = experiment.analyse(
                predictions.slice(0, rows), feedback.slice(0, rows), split, candidate, baseline
            )
            decision = found.decision in ("candidate_better", "candidate_worse")
            looks += 1
            agree += decision == bool(rule[look])
            any_decided |= decision
        decided += any_decided
    return {
        "experiments": cfg.crosscheck_experiments,
        "looks": looks,
        "looks_agreeing": agree,
        "false_decision_rate": decided / cfg.crosscheck_experiments
        if cfg.crosscheck_experiments
        else None,
    }


def aa_tables(correct: Any, rng: Any) -> tuple[pa.Table, pa.Table]:
    """Records and labels of one A/A experiment: per look, `per_arm` rows of each arm
    (staging v2, production v1), correct where `correct[look, arm, i]`."""
    import numpy as np
    import pyarrow as pa

    from registry.predictionlog import FEEDBACK_SCHEMA, PREDICTION_SCHEMA

    looks, arms, per_arm = correct.shape
    n = looks * arms * per_arm
    arm = np.tile(np.repeat([0, 1], per_arm), looks)
    target = rng.integers(0, 2, n)
    label = np.where(correct.reshape(-1), target, 1 - target)
    start = np.datetime64("2026-12-01T00:00:00", "us")
    ts = start + np.arange(n).astype("timedelta64[s]")
    ids = [f"aa-{i}" for i in range(n)]
    predictions = pa.table(
        {
            "request_id": ids,
            "row": np.zeros(n, "int32"),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "alias": np.where(arm == 0, "staging", "production"),
            "version": np.where(arm == 0, "2", "1"),
            "run_id": pa.nulls(n, pa.string()),
            "assignment": ["key"] * n,
            "salt": ["aa"] * n,
            "key_hash": pa.nulls(n, pa.string()),
            "sample_rate": np.ones(n),
            "status": np.full(n, 200, "int16"),
            "latency_ms": np.ones(n),
            "label": label,
            "probability": np.where(label == 1, 0.8, 0.2),
            "prediction": pa.nulls(n, pa.float64()),
        }
    ).cast(PREDICTION_SCHEMA)
    feedback = pa.table(
        {
            "request_id": ids,
            "row": np.zeros(n, "int32"),
            "target": target.astype("float64"),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        }
    ).cast(FEEDBACK_SCHEMA)
    return predictions, feedback


# -- 6. report speed -----------------------------------------------------------------------------


def register_report_model(client: Any) -> dict[str, str]:
    """A registered model with two versions (@production, @staging) and a 50/50 split; no
    model behind them: the report reads the registry only for aliases and the split."""
    from gates.experiment import TRAFFIC_TAG

    client.create_registered_model(REPORT_MODEL)
    experiment = client.get_experiment_by_name("Default")
    created = client.create_run(experiment.experiment_id)
    found = {}
    for alias in ("production", "staging"):
        version = client.create_model_version(
            REPORT_MODEL,
            f"{created.info.artifact_uri}/model",
            created.info.run_id,
            await_creation_for=0,
        )
        client.set_registered_model_alias(REPORT_MODEL, alias, version.version)
        found[alias] = str(version.version)
    client.set_terminated(created.info.run_id)
    split = {"production": 50, "staging": 50, "salt": "bench"}
    client.set_registered_model_tag(REPORT_MODEL, TRAFFIC_TAG, json.dumps(split))
    return found


def write_log(root: LogRoot, cfg: Config, versions: Mapping[str, str]) -> dict[str, Any]:
    """`report_rows` records of the two arms over the last four hours, in files of
    `rows_per_file` (with the demo's 30 inputs), and labels for `label_share` of them."""
    import numpy as np
    import pyarrow as pa

    from registry import predictionlog
    from training.datasets import load_split

    holdout = load_split("breast-cancer").x_holdout
    inputs = holdout.to_numpy()
    rng = np.random.default_rng(cfg.seed + 3)
    files = max(1, cfg.report_rows // cfg.rows_per_file)
    end = np.datetime64(int(time.time() * 1e6), "us")
    span = np.int64(4 * 3600 * 10**6)
    labels: list[pa.Table] = []
    label_files = 0
    writes: list[Future[Any]] = []

    def flush_labels(force: bool) -> None:
        nonlocal labels, label_files
        if labels and (force or sum(t.num_rows for t in labels) >= 20_000):
            table = pa.concat_tables(labels)
            writes.append(
                pool.submit(
                    predictionlog.write_feedback, root, REPORT_MODEL, table, f"b-{label_files}"
                )
            )
            labels, label_files = [], label_files + 1

    began = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        for f in range(files):
            n = cfg.rows_per_file
            candidate = rng.random(n) < 0.5
            target = rng.integers(0, 2, n)
            correct = rng.random(n) < np.where(candidate, cfg.accuracy + 0.02, cfg.accuracy)
            label = np.where(correct, target, 1 - target)
            high = rng.random(n) * 0.5
            offsets = np.sort(rng.integers(0, int(span) // files, n))
            ts = end - span + np.int64(f) * (span // files) + offsets
            ids = [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, (n, 2)).tolist()]
            columns: dict[str, Any] = {
                "request_id": ids,
                "row": np.zeros(n, "int32"),
                "ts": pa.array(ts.astype("datetime64[us]"), pa.timestamp("us", tz="UTC")),
                "alias": np.where(candidate, "staging", "production"),
                "version": np.where(candidate, versions["staging"], versions["production"]),
                "run_id": pa.nulls(n, pa.string()),
                "assignment": ["key"] * n,
                "salt": ["bench"] * n,
                "key_hash": pa.nulls(n, pa.string()),
                "sample_rate": np.ones(n),
                "status": np.full(n, 200, "int16"),
                "latency_ms": rng.gamma(2.0, 2.0, n),
                "label": label,
                "probability": np.where(label == 1, 0.5 + high, 0.5 - high),
                "prediction": pa.nulls(n, pa.float64()),
            }
            rows = inputs[rng.integers(0, len(inputs), n)]
            for j, column in enumerate(holdout.columns):
                columns[f"input.{column}"] = rows[:, j]
            table = pa.table(columns)
            writes.append(
                pool.submit(
                    predictionlog.write_predictions, root, REPORT_MODEL, table, f"r-{f:06d}"
                )
            )
            keep = rng.random(n) < cfg.label_share
            labels.append(
                pa.table(
                    {
                        "request_id": table["request_id"].filter(keep),
                        "row": np.zeros(int(keep.sum()), "int32"),
                        "target": target[keep].astype("float64"),
                    }
                )
            )
            flush_labels(force=False)
            if (f + 1) % 100 == 0:
                done = sum(w.done() for w in writes)
                log.info("  %d of %d files made, %d writes done", f + 1, files, done)
        flush_labels(force=True)
        for write in writes:
            write.result()  # a write that failed fails the part
    return {
        "rows": files * cfg.rows_per_file,
        "files": files,
        "label_files": label_files,
        "write_s": time.monotonic() - began,
    }


def others_share(before: CoreTimes, after: CoreTimes, elapsed_s: float) -> float:
    """The share of every core's time that went to others than this process's waited-for
    children (the command just run) between `before` and `after`."""
    busy = sum(after.busy_s[c] - before.busy_s[c] for c in after.busy_s)
    own = after.children_cpu_s - before.children_cpu_s
    return round(max(busy - own, 0.0) / (elapsed_s * len(after.busy_s)), 4)


def start_seaweedfs(stack: Stack) -> dict[str, str]:
    """SeaweedFS as `modelyard up` runs it (its state under the work directory), on core 1
    (started from this thread pinned there: its processes inherit that), stopped with the
    stack; what an S3 client of it needs."""
    from modelyard.settings import StackSettings
    from modelyard.stack import Stack as EmbeddedStack

    ports = iter(weed_ports(4))
    settings = StackSettings(
        home=stack.workdir / "seaweedfs",
        s3_port=next(ports),
        weed_master_port=next(ports),
        weed_volume_port=next(ports),
        weed_filer_port=next(ports),
    )
    settings.home.mkdir()
    embedded = EmbeddedStack(settings, say=lambda line: log.info("  %s", line.strip()))
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    try:
        embedded.start_object_store()
    finally:
        os.sched_setaffinity(0, cores)
    stack.stop.callback(embedded.stop)
    return embedded.s3_env()


def weed_ports(count: int) -> list[int]:
    """Free ports below 55535 whose port + 10000 (SeaweedFS's gRPC) is free too."""
    found: list[int] = []
    for port in range(21000, 55000, 7):
        if len(found) == count:
            break
        if all(port_free(p) for p in (port, port + 10000)):
            found.append(port)
    return found


def port_free(port: int) -> bool:
    try:
        ensure_free("127.0.0.1", port, "the report's SeaweedFS")
    except StartupError:
        return False
    return True


def report(run: Run, stack: Stack) -> None:
    """The report over `report_rows` on the run's S3: the CLI in fresh processes, and in-process."""
    from gates import experiment
    from registry import predictionlog

    cfg = run.config
    with redirect_stdout(io.StringIO()):  # MLflow prints a link per run it ends
        versions = register_report_model(stack.client)
    store_env = stack.weed()
    root = predictionlog.open_root(REPORT_LOG, store_env)
    log.info("  writing %d rows to %s on SeaweedFS", cfg.report_rows, REPORT_LOG)
    written = write_log(root, cfg, versions)
    env = base_env(stack.tracking_uri) | store_env
    reports = stack.workdir / "reports"
    command = [
        sys.executable, "-m", "modelyard", "experiment", "report", REPORT_MODEL,
        "--log", REPORT_LOG, "--no-mlflow", "--report-dir", str(reports),
        "--format", "json",
    ]  # fmt: skip
    began = time.monotonic()
    subprocess.run([*command[:5], "--help"], env=env, capture_output=True, check=True, cwd=ROOT)
    startup_s = time.monotonic() - began
    walls, others, documents = [], [], []
    for i in range(cfg.report_repeats):
        began, cores = time.monotonic(), CoreTimes.now()
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        walls.append(time.monotonic() - began)
        others.append(others_share(cores, CoreTimes.now(), walls[-1]))
        if done.returncode != 0:
            raise SystemExit(f"error: the report failed ({done.returncode}): {done.stderr[-2000:]}")
        documents.append(json.loads(done.stdout))
        log.info("  CLI report %d: %.1f s", i + 1, walls[-1])
    spec = experiment.ExperimentSpec(REPORT_MODEL, record=False, report_dir=reports)
    inside, inside_run = [], []
    for _ in range(cfg.report_repeats):
        began = time.monotonic()
        made = experiment.run(stack.client, root, spec)
        inside.append(time.monotonic() - began)
        inside_run.append(made.seconds)
    log.info("  in-process: %s s", ", ".join(f"{s:.1f}" for s in inside))
    last = documents[-1]
    run.parts["report"] = written | {
        "log": REPORT_LOG,
        "store": "SeaweedFS (the embedded stack's object store)",
        "label_share": cfg.label_share,
        "command": " ".join(["python", *command[1:]]),
        "cli_wall_s": walls,
        "cli_others_share": others,
        "cli_help_wall_s": startup_s,
        "in_process_wall_s": inside,
        "in_process_report_seconds": inside_run,
        "rows_read": last["rows_read"],
        "labels_read": last["labels_read"],
        "decision": last["decision"],
    }


# -- goals ---------------------------------------------------------------------------------------


def _median(runs: Sequence[Mapping[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def _contended(part: Mapping[str, Any]) -> bool:
    """For records without core attribution: whether the part's load average says it ran
    beside other work."""
    load_ = part.get("loadavg", {})
    return max([x[0] for x in load_.values()], default=0.0) > LOADAVG_BOUND


def _clean(records: Sequence[Mapping[str, Any] | None], part: Mapping[str, Any]) -> bool:
    """Whether these timed runs (or phases) had the server's core to themselves."""
    shares = [r["server_core_others"] for r in records if r is not None]
    if len(shares) < len(records):
        return not _contended(part)
    return all(share <= OTHERS_BOUND for share in shares)


def _others(records: Sequence[Mapping[str, Any] | None], part: Mapping[str, Any]) -> str:
    """What other processes took, in words, for a goal's measured text."""
    shares = [r["server_core_others"] for r in records if r is not None]
    if shares:
        return f"others on the server's core {min(shares):.0%}-{max(shares):.0%}"
    load_ = part.get("loadavg", {})
    most = max([x[0] for x in load_.values()], default=0.0)
    return f"no core attribution; 1-min load average up to {most:.1f}"


def overhead_goals(part: Mapping[str, Any]) -> list[Goal]:
    """req/s and p99 with the log on over off (medians over the repetitions in which neither
    run shared the server's core; at least MIN_CLEAN_PAIRS), errors, what the log dropped."""
    on, off = part["runs"][ON], part["runs"][OFF]
    errors = sum(r["errors"] for r in [*on, *off])
    dropped = part["log_metrics"].get("modelyard_prediction_log_dropped_rows_total", 0.0)
    pairs = list(zip(on, off, strict=True))
    clean = [(a, b) for a, b in pairs if _clean([a.get("cores"), b.get("cores")], part)]
    used = clean if len(clean) >= MIN_CLEAN_PAIRS else pairs
    mine, theirs = [a for a, _ in used], [b for _, b in used]
    paired = {key: [a[key] / b[key] for a, b in used] for key in ("rps", "p99_ms")}
    rps = _median(mine, "rps") / _median(theirs, "rps")
    p99 = _median(mine, "p99_ms") / _median(theirs, "p99_ms")
    cpu_on, cpu_off = _median(mine, "cpu_us_per_request"), _median(theirs, "cpu_us_per_request")
    conclusive = len(clean) >= MIN_CLEAN_PAIRS
    others = _others([r.get("cores") for r in [*on, *off]], part)
    where = (
        f"{part['rows']}-row body, {part['connections']} connections, "
        f"{part['repeats']}x{part['duration_s']:g} s interleaved (medians)"
    )
    judged = (
        f"{len(clean)} of {len(pairs)} pairs clean ({others})"
        if conclusive
        else f"INCONCLUSIVE: {len(clean)} of {len(pairs)} pairs clean, {MIN_CLEAN_PAIRS} "
        f"needed ({others}); over all pairs"
    )
    return [
        Goal(
            "overhead-rps",
            f"req/s with the prediction log on vs off, {where}",
            f"{judged}: {rps:.3f}x ({_median(mine, 'rps'):.0f} vs "
            f"{_median(theirs, 'rps'):.0f}; per repeat {min(paired['rps']):.2f}-"
            f"{max(paired['rps']):.2f}x); {errors} errors, {dropped:.0f} rows dropped",
            f">= {RPS_BOUND:g}x on clean pairs; 0 errors",
            conclusive and rps >= RPS_BOUND and errors == 0,
        ),
        Goal(
            "overhead-p99",
            f"p99 with the prediction log on vs off, {where}",
            f"{judged}: {p99:.3f}x ({_median(mine, 'p99_ms'):.2f} vs "
            f"{_median(theirs, 'p99_ms'):.2f} ms; per repeat {min(paired['p99_ms']):.2f}-"
            f"{max(paired['p99_ms']):.2f}x)",
            f"<= {P99_BOUND:g}x on clean pairs",
            conclusive and p99 <= P99_BOUND,
        ),
        Goal(
            "overhead-cpu",
            "server CPU per request, log on vs off, the same pairs (context)",
            f"{cpu_on / cpu_off:.3f}x ({cpu_on:.0f} vs {cpu_off:.0f} us)",
            "report",
            None,
        ),
    ]


def _rows(found: Mapping[str, Any]) -> str:
    return (
        f"{found['logged_rows']} logged of {found['answered_rows']} answered rows: "
        f"{found['missing']} missing, {found['extra']} never answered, "
        f"{found['duplicated']} duplicated"
    )


def _equal(found: Mapping[str, Any]) -> bool:
    return bool(found["missing"] == 0 and found["extra"] == 0 and found["duplicated"] == 0)


def sigterm_goal(part: Mapping[str, Any]) -> Goal:
    """Every answered row logged exactly once, and nothing else, across the restart."""
    found = part["accounting"]
    non_200 = sum(n for status, n in part["statuses"].items() if status not in ("200", "None"))
    return Goal(
        "sigterm",
        f"{part['requests_wanted']:,} requests across a SIGTERM restart "
        f"({part['clients']} clients, 1-3 rows each): log vs answers",
        f"{_rows(found)}; {part['statuses'].get('None', 0)} refused or reset, {non_200} "
        f"non-200 (restart {part['second_ready_after_sigterm_s']:.1f} s)",
        "equal; each answered row once",
        _equal(found),
    )


def sigkill_goals(part: Mapping[str, Any]) -> list[Goal]:
    """Per kill: rows lost within the last flush's; what was spooled shipped, once."""
    kills = part["kills"]
    lost = [k["accounting"]["missing"] for k in kills]
    bound = [k["answered_rows_in_last_flush"] for k in kills]
    rate = [k["answered_rows_per_s_5s_before"] for k in kills]
    unshipped = sum(k["spooled_not_shipped"] for k in kills)
    duplicated = sum(k["accounting"]["duplicated"] for k in kills)
    spooled = sum(k["spooled_rows"] for k in kills)
    shipped_s = [k["spool_shipped_after_restart_s"] for k in kills]
    flush = part["flush_s"]
    return [
        Goal(
            "sigkill-lost",
            f"rows lost to SIGKILL under load ({len(kills)} kills), against the rows "
            f"answered in the last flush interval ({flush:g} s) before each",
            f"lost {', '.join(map(str, lost))}; bound {', '.join(map(str, bound))} "
            f"({', '.join(f'{r:.0f}' for r in rate)} rows/s before the kills)",
            "each <= its last interval's",
            all(n <= b for n, b in zip(lost, bound, strict=True)),
        ),
        Goal(
            "sigkill-spooled",
            "rows in the killed process's spool shipped by the next process",
            f"{spooled - unshipped} of {spooled} shipped"
            + (
                f" (spool emptied {', '.join(fmt(s, ' s', 1) for s in shipped_s)} after the "
                "restart began)"
            )
            + f"; {duplicated} duplicated",
            "all; none twice",
            unshipped == 0 and duplicated == 0 and None not in shipped_s,
        ),
    ]


def store_goals(part: Mapping[str, Any]) -> list[Goal]:
    """p99 during the outage over before, failed requests, and everything shipped after."""
    latency = part["latency"]
    before, during, after = latency["before"], latency["during"], latency["after"]
    ratio = during["p99_ms"] / before["p99_ms"]
    cores = part.get("cores", {})
    compared = [cores.get("before"), cores.get("during")]
    clean = _clean(compared, part)
    rate = part.get("requests_per_s")
    found = part["accounting"]
    failures = part["ship_failures_since_down"]
    shipped = part["all_shipped_after_store_back_s"]
    return [
        Goal(
            "store-p99",
            f"client p99 while S3 is unreachable for {part['outage_s']:g} s vs the "
            f"{part['before_s']:g} s before ({part['clients']} clients)",
            ("" if clean else "INCONCLUSIVE, the server's core shared: ")
            + f"{ratio:.3f}x ({during['p99_ms']:.2f} vs {before['p99_ms']:.2f} ms; max "
            f"{during['max_ms']:.0f} vs {before['max_ms']:.0f} ms; after "
            f"{after['p99_ms']:.2f} ms"
            + (f"; {rate['during']:.0f} vs {rate['before']:.0f} req/s" if rate else "")
            + f"; {_others(compared, part)})",
            f"<= {OUTAGE_P99_BOUND:g}x, both windows clean",
            clean and ratio <= OUTAGE_P99_BOUND,
        ),
        Goal(
            "store-failed",
            "failed requests during the load (before, during and after the outage)",
            f"{part['failed']} of {part['requests']}",
            "0",
            part["failed"] == 0,
        ),
        Goal(
            "store-shipped",
            "after the store returns, every answered row shipped (the outage seen: "
            "ship failures counted, the spool grew)",
            f"{_rows(found)}; all in the log {fmt(shipped, ' s', 1)} after the store "
            f"returned; {failures:.0f} ship failures, spool peak "
            f"{(part['spool_bytes_max'] or 0) / 2**20:.1f} MiB, "
            f"{part['dropped_rows']:.0f} dropped",
            "equal; failures > 0",
            _equal(found) and failures > 0 and shipped is not None,
        ),
    ]


def statistics_goals(part: Mapping[str, Any]) -> list[Goal]:
    """The simulations against their bounds, and the report agreeing with the simulation."""
    aa, power, srm, check = part["aa"], part["power"], part["srm"], part["crosscheck"]
    check_rate = check["false_decision_rate"]
    return [
        Goal(
            "aa",
            f"{aa['experiments']} A/A experiments, each looked at {aa['looks']} times "
            f"({aa['labels_per_look']:,} labels a look): a false decision",
            f"{aa['false_decision_rate']:.1%}",
            f"<= {AA_BOUND:.0%}",
            aa["false_decision_rate"] <= AA_BOUND,
        ),
        Goal(
            "aa-report",
            f"{check['experiments']} A/A experiments through the report's `analyse`, every "
            "look: decides as the simulation does",
            f"{check['looks_agreeing']} of {check['looks']} looks agree (false decisions "
            f"{fmt(None if check_rate is None else check_rate * 100, '%', 0)})",
            "all",
            check["looks_agreeing"] == check["looks"],
        ),
        Goal(
            "power",
            f"a true +{power['gap'] * 100:g} point accuracy gap at 50/50 "
            f"({power['experiments']} experiments): `candidate_better` by the label count "
            "the report estimated",
            f"{power['candidate_better_rate']:.1%} (median estimate "
            f"{power['median_labels_estimated']:,.0f} labels)",
            f">= {POWER_BOUND:.0%}",
            power["candidate_better_rate"] >= POWER_BOUND,
        ),
        Goal(
            "srm-lossy",
            f"50/50 with {srm['lost']:.0%} of one arm's rows lost, {srm['requests']:,} "
            f"requests ({srm['experiments']:,} experiments): `srm`",
            f"{srm['lossy_alarm_rate']:.1%} (95% needs {srm['requests_needed_for_95']:,} "
            f"requests at p < {srm['alarm_p']:g})",
            f">= {SRM_LOSSY_BOUND:.0%}",
            srm["lossy_alarm_rate"] >= SRM_LOSSY_BOUND,
        ),
        Goal(
            "srm-healthy",
            f"a healthy 50/50 split, {srm['requests']:,} requests: `srm` (false alarm)",
            f"{srm['healthy_alarm_rate']:.2%}",
            f"<= {SRM_HEALTHY_BOUND:.1%}",
            srm["healthy_alarm_rate"] <= SRM_HEALTHY_BOUND,
        ),
    ]


def _store(part: Mapping[str, Any]) -> str:
    """Where the report part's log was: SeaweedFS, or moto's S3 in results made before."""
    return "SeaweedFS" if "store" in part else "S3"


def report_goals(part: Mapping[str, Any]) -> list[Goal]:
    """The CLI's wall time over the rows (median), the in-process time for context."""
    walls = part["cli_wall_s"]
    median = statistics.median(walls)
    inside = statistics.median(part["in_process_wall_s"])
    complete = part["rows_read"] == part["rows"]
    shares = part.get("cli_others_share")
    beside = (
        f"others used {min(shares):.0%}-{max(shares):.0%} of the machine"
        if shares
        else _others([], part)
    )
    return [
        Goal(
            "report",
            f"`modelyard experiment report --no-mlflow` over {part['rows']:,} logged rows "
            f"({part['files']:,} files on {_store(part)}, {part['labels_read']:,} labels), "
            "fresh process",
            f"{median:.1f} s median ({', '.join(f'{w:.1f}' for w in walls)}; its --help alone "
            f"{part['cli_help_wall_s']:.1f} s; {beside}); {part['rows_read']:,} rows read, "
            f"{part['decision']}",
            f"<= {REPORT_BOUND_S:g} s, every row read",
            median <= REPORT_BOUND_S and complete,
        ),
        Goal(
            "report-in-process",
            "`gates.experiment.run(record=False)` over the same log, in-process (context)",
            f"{inside:.1f} s median ({', '.join(f'{w:.1f}' for w in part['in_process_wall_s'])})",
            "report",
            None,
        ),
    ]


def goals(config: Mapping[str, Any], parts: Mapping[str, Any]) -> list[Goal]:
    """The experiment benchmark's goals, from its recorded parts."""
    found: list[Goal] = []
    if "overhead" in parts:
        found += overhead_goals(parts["overhead"])
    if "sigterm" in parts:
        found.append(sigterm_goal(parts["sigterm"]))
    if "sigkill" in parts:
        found += sigkill_goals(parts["sigkill"])
    if "store-down" in parts:
        found += store_goals(parts["store-down"])
    if "statistics" in parts:
        found += statistics_goals(parts["statistics"])
    if "report" in parts:
        found += report_goals(parts["report"])
    return found


# -- the run -------------------------------------------------------------------------------------


def execute(run: Run, workdir: Path) -> None:
    cfg = run.config
    chosen = [part for part in PARTS if part in cfg.parts]
    if "statistics" in chosen:
        log.info("statistics")
        measured(run, "statistics", lambda: statistics_part(run))
    if not set(chosen) - {"statistics"}:
        return
    from registry.client import connect
    from training.run import TrainSpec, train

    with ExitStack() as stop:
        log.info("starting the registry (moto S3 + mlflow server, core 1)")
        stack = start_stack(workdir, stop, cfg.flush_s)
        stack.client = connect(stack.tracking_uri)
        if set(chosen) & set(SERVED_PARTS):
            log.info("training the demo classifier")
            with redirect_stdout(io.StringIO()):  # MLflow prints a link per run it logs
                run.meta["registered"] = {
                    MODEL: train(TrainSpec("sklearn", alias=ALIAS), stack.client).version
                }
        payloads = bodies()
        runners: dict[str, Callable[[], None]] = {
            "overhead": lambda: overhead(run, stack),
            "sigterm": lambda: sigterm(run, stack, payloads),
            "sigkill": lambda: sigkill(run, stack, payloads),
            "store-down": lambda: store_down(run, stack, payloads),
            "report": lambda: report(run, stack),
        }
        for part in chosen:
            if part in runners:
                log.info("%s", part)
                measured(run, part, runners[part])


def measured(run: Run, part: str, call: Callable[[], None]) -> None:
    """Run one part; note the load average around it in its record."""
    before = loadavg()
    began = time.monotonic()
    call()
    run.parts[part] |= {
        "loadavg": {"start": before, "end": loadavg()},
        "part_s": time.monotonic() - began,
    }


def machine_note() -> dict[str, Any]:
    """The machine, and whether it was shared when the run began."""
    load_now = os.getloadavg()[0]
    note = (
        f"shared machine: 1-min load average {load_now:.2f} at the start on "
        f"{os.cpu_count()} CPUs (other work running beside the benchmark)"
        if load_now > BUSY_LOADAVG
        else "quiet machine at the start"
    )
    return {"cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)), "note": note}


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = options.parse_args(
        argv, (__doc__ or "").split("\n")[0], Config(), QUICK, RESULTS, PARTS
    )
    if args.show:
        return options.show(args.show, goals)
    if set(cfg.parts) & set(SERVED_PARTS):
        load.require_wrk()
    options.quiet_logs()
    return options.run_parts("experiment", Run(cfg), args, execute, goals, machine=machine_note())


if __name__ == "__main__":
    sys.exit(main())
