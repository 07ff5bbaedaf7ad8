"""Rollout benchmark: the guarded progressive rollout on real processes (the goals of issue 15).

    .venv/bin/python -m bench.rollout           # full run (~9 min) -> bench/results/rollout.json
    .venv/bin/python -m bench.rollout --quick   # smoke run, JSON in a temporary file
    .venv/bin/python -m bench.rollout --only errors,healthy --output /tmp/rollout.json
    .venv/bin/python -m bench.rollout --show bench/results/rollout.json

It starts its own registry (moto's S3 server and `mlflow server` on SQLite, artifacts proxied to
S3), registers `cancer-classifier` versions built with the fault-injection model, and runs two
`modelyard serve` replicas (polling every second, batching off) whose prediction log goes to
`s3://<bucket>/rollout-log`. Closed-loop clients send holdout rows with routing keys through
both replicas, round robin, and post every answered row's true label as feedback. Each rollout
is the real command, `python -m modelyard rollout cancer-classifier ... --guard <rollout.yaml>`,
in a process of its own, with short steps. The guards are the shipped rollout.yaml's, but for
`min_requests_per_step` (`min_requests`, 50 instead of 100: the clients answer far fewer
requests per second on this shared machine than a 5% step of 100 requests takes in a short
step); the file used is recorded with the results.

The baseline is the fault model with its labels flipped (`flip_fraction` 1: its threshold rule
inverted, the better way round on this data); every candidate is the same but for one fault:

1. errors: it raises on a marked first value, which 5% of the clients' rows carry (the baseline
   answers them): 1 request in 20 fails;
2. latency: its predict sleeps 3x the baseline's;
3. accuracy: it flips fewer labels, 10 points less accurate, with labels flowing;
4. healthy: no fault: promoted after its last step, every step in the alias history;
5. manual: healthy, and `production` moved to it by hand during step 2: the rollout stops
   (exit 1) and leaves the alias as moved;
6. resume: healthy, its controller SIGKILLed during step 2 and started again with `--resume`:
   it continues from that step and promotes.

For 1-3 it measures when the breach became detectable in the log (the first moment at which
the records readable in S3 prove it with the controller's own guards and windows; a file is
readable from the earliest moment its upload time, in whole seconds, and the bench's own
listings every 0.2 s allow) and which check stopped the rollout: the goal is that no check that
started reading after that moment missed it (the controller prints when each check started
and how long it took). It also measures the time until each replica reports the candidate's
weight 0 (GET /models, sampled every 0.1 s) from the breach check's line, and the clients'
errors by the alias that answered them. Goals are judged from the recorded parts
alone (`goals`), so `--show` prints them again.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests

from bench import options
from bench.analysis import Goal, fmt
from bench.load import ClientThreads, Request
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
from modelyard.processes import free_port

RESULTS = ROOT / "bench" / "results" / "rollout.json"
MODEL = "cancer-classifier"
GUARD = ROOT / "rollout.yaml"
LOG_URI = f"s3://{BUCKET}/rollout-log"
MARK = 4242.0
"""The first value the error candidate raises on (a radius no tumour has)."""
PARTS = ("errors", "latency", "accuracy", "healthy", "manual", "resume")
FAULTS = ("errors", "latency", "accuracy")
LIST_EVERY_S = 0.2
"""How often the log's files are listed, to know when each became readable."""
MEASURING_S = 0.25
"""Allowance for measuring propagation: the 0.1 s sampling and the /models call itself."""

log = logging.getLogger("bench.rollout")


@dataclass
class Config:
    """Every knob of a run (recorded in the results)."""

    steps: str = "10,25,50,100"
    step_s: float = 20.0
    min_requests: int = 50
    check_s: float = 2.0
    data_wait_s: float = 30.0
    poll_interval_s: float = 1.0
    flush_s: float = 1.0
    clients: int = 8
    baseline_delay_s: float = 0.02
    slow_factor: float = 3.0
    error_share: float = 0.05
    accuracy_gap: float = 0.10
    after_s: float = 5.0
    grid_s: float = 0.2
    seed: int = 15
    parts: tuple[str, ...] = PARTS


QUICK: dict[str, Any] = {"step_s": 10.0, "check_s": 1.0, "data_wait_s": 20.0, "after_s": 4.0}

Run = options.Run[Config]


# -- the stack -----------------------------------------------------------------------------------


@dataclass
class Bench:
    """The registry, the replicas, the rows the clients send, and the versions registered."""

    cfg: Config
    tracking_uri: str
    s3_url: str
    workdir: Path
    replicas: list[Process]
    client: Any
    columns: list[str]
    rows: np.ndarray
    targets: np.ndarray
    guard: Path = GUARD
    baseline: str = ""
    candidates: dict[str, str] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def s3_env(self) -> dict[str, str]:
        return S3_ENV | {"MLFLOW_S3_ENDPOINT_URL": self.s3_url}

    def env(self, actor: str) -> dict[str, str]:
        """A client process's environment: the registry, the log's S3, who acts."""
        return base_env(self.tracking_uri) | self.s3_env | {"MODELYARD_ACTOR": actor}


def start(workdir: Path, stop: ExitStack, cfg: Config) -> Bench:
    """moto's S3 and `mlflow server`; the versions; two replicas (no core pinned: the clients,
    the replicas and the controller share the machine's cores, as they would)."""
    from registry.client import connect
    from training.datasets import load_split

    s3_url = start_s3(workdir, stop)
    server = start_mlflow(workdir, s3_url, free_port())
    stop.callback(server.child.stop, 30)
    split = load_split("breast-cancer")
    rows = np.vstack([split.x_train.to_numpy(), split.x_holdout.to_numpy()]).astype("float64")
    targets = np.concatenate([np.asarray(split.y_train), np.asarray(split.y_holdout)])
    bench = Bench(
        cfg, server.uri, s3_url, workdir, [], connect(server.uri), list(split.features), rows,
        targets,
    )  # fmt: skip
    register(bench)
    shipped = GUARD.read_text()
    bench.guard = workdir / "rollout.yaml"
    bench.guard.write_text(
        shipped.replace("min_requests_per_step: 100", f"min_requests_per_step: {cfg.min_requests}")
    )
    settings = bench.s3_env | {
        "MODELYARD_MODELS": MODEL,
        "MODELYARD_ALIASES": "production,staging",
        "MODELYARD_POLL_INTERVAL_S": f"{cfg.poll_interval_s:g}",
        "MODELYARD_BATCHING": "off",
        "MODELYARD_PREDICTION_LOG": LOG_URI,
        "MODELYARD_PREDICTION_LOG_FLUSH_S": f"{cfg.flush_s:g}",
    }
    for i in range(2):
        replica = start_serving(
            f"replica-{i}",
            server.uri,
            workdir,
            settings | {"MODELYARD_PREDICTION_LOG_SPOOL": str(workdir / f"spool-{i}")},
        )
        stop.callback(replica.stop)
        bench.replicas.append(replica)
    for replica in bench.replicas:
        replica.wait_ready("/health/ready", timeout_s=180)
    return bench


def register(bench: Bench) -> None:
    """The baseline (@production) and one candidate per kind, each a fault-model version."""
    from training.faults import register_fault_model

    cfg = bench.cfg
    delay = cfg.baseline_delay_s
    # the share of labels flipped that takes `accuracy_gap` off the baseline's accuracy
    wanted = flipped_accuracy(bench, 1.0) - cfg.accuracy_gap
    flip = min(
        (f / 100 for f in range(101)), key=lambda f: abs(flipped_accuracy(bench, f) - wanted)
    )
    kinds: dict[str, dict[str, Any]] = {
        "baseline": {"flip_fraction": 1.0, "predict_delay_s": delay},
        "errors": {"flip_fraction": 1.0, "predict_delay_s": delay, "raise_on": MARK},
        "latency": {"flip_fraction": 1.0, "predict_delay_s": delay * cfg.slow_factor},
        "accuracy": {"flip_fraction": flip, "predict_delay_s": delay},
        "healthy": {"flip_fraction": 1.0, "predict_delay_s": delay},
    }
    for kind, faults in kinds.items():
        log.info("registering the %s version %s", kind, faults)
        ref = register_fault_model(
            MODEL, bench.client, alias="production" if kind == "baseline" else None, **faults
        )
        if kind == "baseline":
            bench.baseline = ref.version
        else:
            bench.candidates[kind] = ref.version
        bench.accuracy[kind] = flipped_accuracy(bench, float(faults["flip_fraction"]))
    first = bench.candidates["healthy"]
    bench.client.set_registered_model_alias(MODEL, "staging", first)


def flipped_accuracy(bench: Bench, flip: float) -> float:
    """The fault model's accuracy over the clients' rows (training/pyfunc/fault_model.py's
    rule: probability from the first column against the training mean, labels flipped by
    row)."""
    from training.datasets import load_split

    threshold = float(load_split("breast-cancer").x_train.iloc[:, 0].mean())
    first = bench.rows[:, 0]
    label = (1.0 / (1.0 + np.exp(-(first - threshold))) >= 0.5).astype("int64")
    flipped = (first * 1000).astype("int64") % 100 < round(flip * 100)
    label = np.where(flipped, 1 - label, label)
    return float((label == bench.targets).mean())


def served(replica: Process) -> dict[str, Any]:
    """The replica's view of the model: aliases and the split it follows."""
    document = requests.get(replica.base_url + "/models", timeout=5).json()
    return document["models"].get(MODEL, {})  # type: ignore[no-any-return]


def reset(bench: Bench, candidate: str, salt: str) -> None:
    """`production` at the baseline, `staging` at `candidate`, all traffic to production;
    wait until both replicas have the candidate loaded and follow the split."""
    from registry import history
    from registry import split as traffic

    for alias, version in (("production", bench.baseline), ("staging", candidate)):
        history.promote(bench.client, MODEL, alias, version, reason="bench reset", who="bench")
    traffic.write(bench.client, MODEL, traffic.Split({"production": 100, "staging": 0}, salt))

    def ready() -> bool:
        for replica in bench.replicas:
            model = served(replica)
            slots = model.get("aliases", {})
            if slots.get("staging", {}).get("version") != candidate:
                return False
            if slots.get("staging", {}).get("state") != "ready":
                return False
            if slots.get("production", {}).get("version") != bench.baseline:
                return False
            if model.get("traffic", {}).get("weights", {}).get("staging") != 0:
                return False
        return True

    deadline = time.monotonic() + 120
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replicas did not load staging v{candidate} in 120 s")
        time.sleep(0.2)


# -- traffic -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Invocation(Request):
    """A request of the clients: the replica it goes to, the data row it sends (its first
    value replaced by MARK when `marked`) and its X-Request-ID."""

    replica: int
    row: int
    marked: bool
    request_id: str


class Load(ClientThreads[Invocation]):
    """Closed-loop clients, round robin over the replicas, and a feedback poster."""

    def __init__(self, bench: Bench, marked_share: float) -> None:
        super().__init__(bench.cfg.clients, name="client", timeout_s=10, error_pause_s=0)
        self.bench = bench
        self.marked_share = marked_share
        self.lock = threading.Lock()
        self.answers: list[tuple[float, int, int, str, str, bool, float]] = []
        """(time answered, replica, status, alias, version, marked, seconds taken)"""
        self.labels: list[dict[str, Any]] = []
        self.feedback = threading.Thread(target=self._feedback, daemon=True)

    def start(self) -> None:
        super().start()
        self.feedback.start()

    def stop(self) -> None:
        super().stop()
        self.feedback.join(15)

    def plan(self, thread: int) -> Iterator[Invocation]:
        rng = np.random.default_rng(self.bench.cfg.seed + thread)
        path = f"/models/{MODEL}/invocations"
        for count in itertools.count():
            row = int(rng.integers(len(self.bench.rows)))
            values = self.bench.rows[row].tolist()
            marked = bool(rng.random() < self.marked_share)
            if marked:
                values[0] = MARK
            body = {"dataframe_split": {"columns": self.bench.columns, "data": [values]}}
            replica = (thread + count) % len(self.bench.replicas)
            request_id = uuid.uuid4().hex
            headers = {
                "X-Routing-Key": uuid.uuid4().hex,
                "X-Request-ID": request_id,
                "Content-Type": "application/json",
            }
            yield Invocation(
                self.bench.replicas[replica].base_url + path,
                json.dumps(body, allow_nan=False).encode("utf-8"),  # as requests' json= does
                headers,
                replica,
                row,
                marked,
                request_id,
            )

    def record(
        self,
        request: Invocation,
        start: float,
        end: float,
        response: requests.Response | None,
        error: requests.RequestException | None,
    ) -> None:
        if response is None:
            status, alias, version = 0, "", ""
        else:
            status = response.status_code
            alias = response.headers.get("X-Model-Alias", "")
            version = response.headers.get("X-Model-Version", "")
        with self.lock:
            self.answers.append(
                (time.time(), request.replica, status, alias, version, request.marked, end - start)
            )
            if status == 200 and not request.marked:
                self.labels.append(
                    {
                        "request_id": request.request_id,
                        "row": 0,
                        "target": int(self.bench.targets[request.row]),
                    }
                )

    def _feedback(self) -> None:
        session = requests.Session()
        url = f"{self.bench.replicas[0].base_url}/models/{MODEL}/feedback"
        while not self.done.wait(0.5):
            with self.lock:
                batch, self.labels = self.labels, []
            for start_at in range(0, len(batch), 1000):
                with suppress(requests.RequestException):
                    session.post(
                        url, json={"feedback": batch[start_at : start_at + 1000]}, timeout=10
                    )


class Watcher(threading.Thread):
    """Samples every replica's split every 0.1 s: (time, replica, candidate's weight)."""

    def __init__(self, bench: Bench) -> None:
        super().__init__(daemon=True)
        self.bench = bench
        self.samples: list[tuple[float, int, float | None]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            for i, replica in enumerate(self.bench.replicas):
                with suppress(requests.RequestException, ValueError, KeyError):
                    weights = served(replica).get("traffic", {}).get("weights", {})
                    self.samples.append((time.time(), i, weights.get("staging")))

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


class Lister(threading.Thread):
    """Lists the log's files every LIST_EVERY_S and keeps, for each, the start of the last
    listing that did not show it: the earliest moment it can have been readable. moto's
    LastModified holds whole seconds, up to a second before a file was readable."""

    def __init__(self, bench: Bench) -> None:
        from registry import predictionlog

        super().__init__(daemon=True)
        self.root = predictionlog.open_root(LOG_URI, bench.s3_env)
        self.dirs = [
            self.root.model_dir(kind, MODEL)
            for kind in (predictionlog.PREDICTIONS, predictionlog.FEEDBACK)
        ]
        self.not_before: dict[str, float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        import pyarrow.fs as pafs

        previous = 0.0  # files there at the first listing: their upload time alone says
        while not self.stopped.wait(LIST_EVERY_S):
            started = time.time()
            with suppress(OSError):
                for folder in self.dirs:
                    selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
                    for info in self.root.filesystem.get_file_info(selector):
                        self.not_before.setdefault(info.path, previous)
                previous = started

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


@dataclass
class Controlled:
    """A `modelyard rollout` process and its output lines, each stamped when it was read."""

    process: subprocess.Popen[str]
    lines: list[tuple[float, str]] = field(default_factory=list)

    def wait(self, timeout_s: float) -> int | None:
        with suppress(subprocess.TimeoutExpired):
            return self.process.wait(timeout_s)
        return None

    def first(self, words: str) -> float | None:
        """When the first line holding `words` was printed."""
        return next((t for t, line in self.lines if words in line), None)


def controller(bench: Bench, actor: str, *extra: str) -> Controlled:
    """`python -m modelyard rollout cancer-classifier ...` in its own session."""
    cfg = bench.cfg
    argv = [
        sys.executable, "-m", "modelyard", "rollout", MODEL, "--guard", str(bench.guard),
        "--log", LOG_URI, *extra,
    ]  # fmt: skip
    if "--resume" not in extra:
        argv += [
            "--steps", cfg.steps, "--step-seconds", f"{cfg.step_s:g}", "--check-seconds",
            f"{cfg.check_s:g}", "--data-wait-seconds", f"{cfg.data_wait_s:g}",
        ]  # fmt: skip
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=bench.env(actor),
        cwd=ROOT,
        start_new_session=True,
    )
    found = Controlled(process)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            found.lines.append((time.time(), line.rstrip()))
            log.info("  | %s", line.rstrip())

    threading.Thread(target=read, daemon=True).start()
    return found


def recorded(bench: Bench) -> dict[str, Any] | None:
    """The model's rollout record, as JSON."""
    from registry import rollouts

    found = rollouts.snapshot(bench.client, MODEL).rollout(MODEL)
    return json.loads(found.encode()) if found else None


def wait_for_step(bench: Bench, index: int, timeout_s: float) -> dict[str, Any]:
    """The rollout record once it is at step `index` (0-based)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = recorded(bench)
        if found and found["status"] == "running" and found["step"] >= index:
            return found
        time.sleep(0.2)
    raise RuntimeError(f"the rollout did not reach step {index + 1} in {timeout_s:.0f} s")


# -- one rollout ---------------------------------------------------------------------------------


def rollout(
    bench: Bench,
    part: str,
    candidate: str,
    *,
    marked_share: float = 0.0,
    during: Callable[[Bench, Controlled], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Reset, start the clients, run the controller (and `during` beside it), then record what
    the controller printed, the registry, the clients' answers and the replicas' splits."""
    from registry import history
    from registry import split as traffic

    cfg = bench.cfg
    reset(bench, candidate, salt=f"bench-{part}")
    load, watcher = Load(bench, marked_share), Watcher(bench)
    load.start()
    watcher.start()
    time.sleep(2)
    began = time.time()
    steps = len(cfg.steps.split(","))
    controlled = controller(bench, f"bench-{part}")
    extra = during(bench, controlled) if during else {}
    final = controlled if "resumed" not in extra else extra.pop("resumed")
    code = final.wait(steps * (cfg.step_s + cfg.data_wait_s) + 120)
    ended = time.time()
    time.sleep(cfg.after_s)
    load.stop()
    watcher.stop()
    moves = [m for m in history.read(bench.client, MODEL)[1] if m.at >= _iso(began)]
    aliases = dict(history.read(bench.client, MODEL)[0])
    return {
        "candidate": candidate,
        "exit_code": code,
        "began": began,
        "ended": ended,
        "seconds": round(ended - began, 2),
        "output": [[round(t - began, 3), line] for t, line in final.lines],
        "rollout": recorded(bench),
        "aliases": aliases,
        "split": traffic.read(bench.client, MODEL).encode(),
        "events": [
            {
                "at": m.at,
                "alias": m.alias,
                "from": m.from_version,
                "to": m.to_version,
                "kind": m.kind,
                "actor": m.actor,
                "reason": m.reason,
            }
            for m in moves
        ],
        "answers": _answers(load, began),
        "watched": [[round(t - began, 3), i, w] for t, i, w in watcher.samples],
        "breach_check_s": _since(final.first(": breach:"), began),
        **extra,
    }


def _answers(load: Load, began: float) -> dict[str, Any]:
    """The clients' answers: counts by status and alias, and each error's time and alias."""
    statuses: Counter[str] = Counter()
    errors = []
    for t, replica, status, alias, version, marked, _ in load.answers:
        statuses[f"{status} {alias or '-'}"] += 1
        if status != 200:
            errors.append([round(t - began, 3), replica, status, alias, version, marked])
    staging = [
        [round(t - began, 3), replica] for t, replica, _, alias, _, _, _ in load.answers
        if alias == "staging"
    ]  # fmt: skip
    latency = {
        alias: [1000 * a[6] for a in load.answers if a[3] == alias and a[2] == 200]
        for alias in ("production", "staging")
    }
    return {
        "total": len(load.answers),
        "by_status_alias": dict(statuses),
        "marked": sum(1 for a in load.answers if a[5]),
        "marked_to_staging": sum(1 for a in load.answers if a[5] and a[3] == "staging"),
        "errors": errors,
        "staging_last": {
            str(i): max((t for t, r in staging if r == i), default=None) for i in (0, 1)
        },
        "staging_answers": len(staging),
        "latency_ms": {
            alias: {
                "p50": round(float(np.percentile(values, 50)), 2),
                "p99": round(float(np.percentile(values, 99)), 2),
            }
            for alias, values in latency.items()
            if values
        },
        "seconds_answered": round(
            max((a[0] for a in load.answers), default=began)
            - min((a[0] for a in load.answers), default=began),
            2,
        ),
    }


# -- when was it detectable ----------------------------------------------------------------------


def detectable(
    bench: Bench, part: dict[str, Any], not_before: Mapping[str, float]
) -> dict[str, Any]:
    """The first moment at which the records readable in the log prove the breach with the
    controller's guards over the step it breached in. A file counts as readable from the
    earliest moment its upload time and the listings allow (`Lister`)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from gates import rollout_guards, rollout_policy
    from registry import predictionlog
    from registry.refs import ModelRef

    record = part["rollout"]
    if record is None or record["status"] != "breached" or part["breach_check_s"] is None:
        return {"seconds": None, "why": "no breach to date"}
    root = predictionlog.open_root(LOG_URI, bench.s3_env)
    policy, _ = rollout_policy.load(bench.guard)
    tables = {}
    for kind, schema in (
        (predictionlog.PREDICTIONS, predictionlog.PREDICTION_SCHEMA),
        (predictionlog.FEEDBACK, predictionlog.FEEDBACK_SCHEMA),
    ):
        infos = root.filesystem.get_file_info(
            pafs.FileSelector(root.model_dir(kind, MODEL), recursive=True, allow_not_found=True)
        )
        parts = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
                continue
            if info.mtime is None or info.mtime.timestamp() < part["began"] - 60:
                continue
            table = pq.read_table(info.path, filesystem=root.filesystem, columns=schema.names)
            table = table.cast(schema)
            readable = max(info.mtime.timestamp(), not_before.get(info.path, 0.0))
            seen = pa.array([readable] * table.num_rows, pa.float64())
            parts.append(table.append_column("_visible", seen))
        tables[kind] = pa.concat_tables(parts) if parts else None
    predictions, feedback = tables[predictionlog.PREDICTIONS], tables[predictionlog.FEEDBACK]
    if predictions is None:
        return {"seconds": None, "why": "no records read back"}
    step_started = datetime.fromisoformat(record["step_started"])
    started = datetime.fromisoformat(record["started"])
    since = pa.scalar(started, pa.timestamp("us", "UTC"))
    predictions = predictions.filter(pc.greater_equal(predictions["ts"], since))
    candidate = ModelRef(MODEL, record["candidate_version"], alias="staging")
    baseline = ModelRef(MODEL, record["baseline_version"], alias="production")
    breach_at = part["began"] + part["breach_check_s"]
    moment = step_started.timestamp()
    while moment <= breach_at + 1:
        visible = predictions.filter(pc.less_equal(predictions["_visible"], moment))
        labels = (
            feedback.filter(pc.less_equal(feedback["_visible"], moment)).drop_columns(["_visible"])
            if feedback is not None
            else predictionlog.FEEDBACK_SCHEMA.empty_table()
        )
        found = rollout_guards.evaluate(
            policy, visible.drop_columns(["_visible"]), labels, candidate, baseline, step_started
        )
        if found.outcome == "breach":
            return {
                "seconds": round(moment - part["began"], 3),
                "delay_s": round(breach_at - moment, 3),
                "guards": [g.name for g in found.breached],
                "reason": found.reason(),
            }
        moment += bench.cfg.grid_s
    return {"seconds": None, "why": "not provable from the records readable by the breach"}


def propagation(part: dict[str, Any]) -> dict[str, Any]:
    """Per replica, seconds from the breach check's line to its first split with the
    candidate's weight 0; and its last answer from staging after the breach."""
    breach = part["breach_check_s"]
    if breach is None:
        return {}
    found: dict[str, Any] = {}
    for replica in (0, 1):
        zero = next(
            (t for t, i, w in part["watched"] if i == replica and t >= breach and w == 0), None
        )
        last = part["answers"]["staging_last"].get(str(replica))
        found[str(replica)] = {
            "weight_0_s": None if zero is None else round(zero - breach, 3),
            "last_staging_answer_s": None if last is None else round(last - breach, 3),
        }
    return found


# -- the parts -----------------------------------------------------------------------------------


def fault_part(bench: Bench, kind: str) -> dict[str, Any]:
    share = bench.cfg.error_share if kind == "errors" else 0.0
    lister = Lister(bench)
    lister.start()
    try:
        part = rollout(bench, kind, bench.candidates[kind], marked_share=share)
    finally:
        lister.stop()
    part["detectable"] = detectable(bench, part, lister.not_before)
    part["propagation"] = propagation(part)
    part["accuracy"] = {
        "baseline": bench.accuracy["baseline"],
        "candidate": bench.accuracy[kind],
    }
    return part


def healthy_part(bench: Bench) -> dict[str, Any]:
    return rollout(bench, "healthy", bench.candidates["healthy"])


def manual_part(bench: Bench) -> dict[str, Any]:
    """During step 2, a person moves `production` to the candidate in the registry."""

    def move(bench: Bench, controlled: Controlled) -> dict[str, Any]:
        wait_for_step(bench, 1, 120)
        time.sleep(1.0)
        moved = time.time()
        bench.client.set_registered_model_alias(MODEL, "production", bench.candidates["healthy"])
        return {"moved_at": moved}

    part = rollout(bench, "manual", bench.candidates["healthy"], during=move)
    part["moved_s"] = round(part["moved_at"] - part["began"], 3)
    aborted = next((t for t, line in part["output"] if "aborted:" in line), None)
    part["aborted_after_move_s"] = None if aborted is None else round(aborted - part["moved_s"], 3)
    return part


def resume_part(bench: Bench) -> dict[str, Any]:
    """During step 2 the controller is SIGKILLed, then started again with --resume."""

    def kill(bench: Bench, controlled: Controlled) -> dict[str, Any]:
        before = wait_for_step(bench, 1, 120)
        time.sleep(1.0)
        os.killpg(controlled.process.pid, signal.SIGKILL)
        controlled.wait(10)
        dead = recorded(bench)
        time.sleep(2.0)
        resumed = controller(bench, "bench-resume", "--resume")
        return {
            "killed_at_step": before["step"] + 1,
            "record_after_kill": dead,
            "killed_output": [line for _, line in controlled.lines],
            "resumed": resumed,
        }

    return rollout(bench, "resume", bench.candidates["healthy"], during=kill)


def execute(run: Run, workdir: Path) -> None:
    cfg = run.config
    with ExitStack() as stop:
        log.info("starting the registry, registering versions, starting two replicas")
        bench = start(workdir, stop, cfg)
        run.meta["versions"] = {"baseline": bench.baseline, **bench.candidates}
        run.meta["guard"] = bench.guard.read_text()
        run.meta["accuracy"] = bench.accuracy
        for name in cfg.parts:
            log.info("part %s", name)
            if name in FAULTS:
                run.parts[name] = fault_part(bench, name)
            elif name == "healthy":
                run.parts[name] = healthy_part(bench)
            elif name == "manual":
                run.parts[name] = manual_part(bench)
            elif name == "resume":
                run.parts[name] = resume_part(bench)
            log.info("part %s: exit %s", name, run.parts[name]["exit_code"])


# -- goals ---------------------------------------------------------------------------------------


def goals(config: Mapping[str, Any], parts: Mapping[str, Any]) -> list[Goal]:
    """Each goal of issue 15, judged from the recorded parts."""
    found: list[Goal] = []
    for kind in FAULTS:
        if kind in parts:
            found += _fault_goals(config, kind, parts[kind])
    if "healthy" in parts:
        found.append(_healthy_goal(config, parts["healthy"]))
    if "manual" in parts:
        found.append(_manual_goal(config, parts["manual"]))
    if "resume" in parts:
        found.append(_resume_goal(parts["resume"]))
    return found


def _fault_goals(config: Mapping[str, Any], kind: str, part: dict[str, Any]) -> list[Goal]:
    check_s, poll_s = config["check_s"], config["poll_interval_s"]
    record = part["rollout"] or {}
    detect = part["detectable"]
    breached = part["exit_code"] == 1 and record.get("status") == "breached"
    step = (
        f"step {record.get('step', 0) + 1} ({record['steps'][record['step']]:g}%)"
        if record
        else "-"
    )
    delay = detect.get("delay_s")
    found = checks(part["output"])
    breach_checks = [c for c in found if c["outcome"] == "breach"]
    earlier = [c for c in found if breach_checks and c["n"] < breach_checks[0]["n"]]
    seen_at = detect.get("seconds")
    missed = [c for c in earlier if seen_at is not None and c["read_s"] >= seen_at]
    goals_ = [
        Goal(
            f"{kind}-stop",
            f"{kind} candidate: the rollout stops within one check after the breach is "
            "detectable in the log",
            f"exit {part['exit_code']}, {record.get('status')} at {step} on "
            f"{', '.join(detect.get('guards', [])) or '-'}; stopped by check "
            f"{breach_checks[0]['n'] if breach_checks else '-'}, {fmt(delay, ' s')} after "
            f"the log showed it ({len(missed)} checks after that missed it; checks every "
            f"{check_s:g} s, each took {_spread([c['took_s'] for c in found])}){_what(kind, part)}",
            "exit 1, breach, by the first check reading the log after it was detectable",
            breached and seen_at is not None and bool(breach_checks) and not missed,
        )
    ]
    spread_ = [v["weight_0_s"] for v in part["propagation"].values()]
    worst = max(spread_) if spread_ and None not in spread_ else None
    goals_.append(
        Goal(
            f"{kind}-propagation",
            f"{kind}: candidate's weight 0 on every replica within one poll interval",
            f"replicas at weight 0 after {', '.join(fmt(v, ' s') for v in spread_)}",
            f"<= {poll_s + MEASURING_S:g} s (poll {poll_s:g} s + {MEASURING_S:g} s measuring)",
            worst is not None and worst <= poll_s + MEASURING_S,
        )
    )
    answers = part["answers"]
    errors = answers["errors"]
    from_baseline = [e for e in errors if e[3] != "staging"]
    late = [e for e in errors if part["breach_check_s"] is not None and worst is not None
            and e[0] > part["breach_check_s"] + worst]  # fmt: skip
    unmarked = [e for e in errors if e[3] == "staging" and not e[5]]
    expected = answers["marked_to_staging"] if kind == "errors" else 0
    goals_.append(
        Goal(
            f"{kind}-clients",
            f"{kind}: clients see no errors beyond the candidate's share while exposed",
            f"{len(errors)} errors of {answers['total']} answers ({len(from_baseline)} not from "
            f"staging, {len(unmarked)} on rows without the fault, {len(late)} after the "
            f"replicas' weight 0; {expected} faulty rows reached staging)",
            "0 not from staging, 0 unfaulted, 0 after weight 0",
            not from_baseline and not unmarked and not late and len(errors) <= expected,
        )
    )
    return goals_


def _healthy_goal(config: Mapping[str, Any], part: dict[str, Any]) -> Goal:
    steps = len(config["steps"].split(","))
    record = part["rollout"] or {}
    step_events = [e for e in part["events"] if STEP_EVENT.search(e["reason"])]
    promote = [e for e in part["events"] if e["kind"] == "promote" and e["alias"] == "production"]
    promoted = part["aliases"].get("production") == part["candidate"]
    errors = len(part["answers"]["errors"])
    return Goal(
        "healthy",
        "a healthy candidate is promoted after its last step; history shows every step",
        f"exit {part['exit_code']}, {record.get('status')}, production -> v"
        f"{part['aliases'].get('production')}; {len(step_events)} step events, "
        f"{len(promote)} promotion; {errors} client errors in {part['seconds']:.0f} s",
        f"exit 0, promoted, {steps} step events, 1 promotion",
        part["exit_code"] == 0 and promoted and len(step_events) == steps and len(promote) == 1,
    )


def _manual_goal(config: Mapping[str, Any], part: dict[str, Any]) -> Goal:
    record = part["rollout"] or {}
    left = part["aliases"].get("production") == part["candidate"]
    after = part.get("aborted_after_move_s")
    missed = [c for c in checks(part["output"]) if c["read_s"] > part["moved_s"]]
    return Goal(
        "manual",
        "a manual alias move during a rollout: exit 1, the alias left as moved",
        f"exit {part['exit_code']}, {record.get('status')} {fmt(after, ' s')} after the move, "
        f"{len(missed)} checks after it missed it; production v"
        f"{part['aliases'].get('production')} (moved to v{part['candidate']}); split "
        f"{part['split']}",
        "exit 1, aborted at the next check, alias as moved",
        part["exit_code"] == 1 and record.get("status") == "aborted" and left and not missed,
    )  # fmt: skip


def _resume_goal(part: dict[str, Any]) -> Goal:
    record = part["rollout"] or {}
    dead = part.get("record_after_kill") or {}
    killed = part.get("killed_at_step")
    steps = [e["reason"] for e in part["events"] if e["kind"] == "rollout"]
    resumed = [r for r in steps if "resumed at step" in r]
    entered = Counter(m[1] for r in steps if (m := STEP_EVENT.search(r)))
    repeated = sorted(step for step, times in entered.items() if times > 1)
    same = dead.get("id") == record.get("id") and dead.get("step_started") is not None
    return Goal(
        "resume",
        "a controller killed mid-rollout and restarted with --resume continues from its step",
        f"killed at step {killed}; record then: {dead.get('status')} step "
        f"{(dead.get('step') or 0) + 1}; {resumed[0].split(': ')[-1] if resumed else 'no resume'}"
        f"; exit {part['exit_code']}, {record.get('status')}; steps repeated: {repeated or 'none'}",
        "same rollout resumed at the killed step, no step repeated, exit 0",
        part["exit_code"] == 0 and same and bool(resumed)
        and f"step {killed}/" in resumed[0] and not repeated,
    )  # fmt: skip


def _what(kind: str, part: Mapping[str, Any]) -> str:
    """What the fault amounted to, as measured."""
    if kind == "latency":
        latency = part["answers"].get("latency_ms", {})
        if "staging" in latency and "production" in latency:
            return (
                f"; clients saw p50 {latency['staging']['p50']:.0f} vs "
                f"{latency['production']['p50']:.0f} ms, p99 {latency['staging']['p99']:.0f} vs "
                f"{latency['production']['p99']:.0f} ms"
            )
    if kind == "accuracy":
        accuracy = part["accuracy"]
        return (
            f"; accuracy {accuracy['candidate']:.3f} vs {accuracy['baseline']:.3f} on the rows sent"
        )
    if kind == "errors":
        return f"; {part['answers']['marked']} rows of {part['answers']['total']} carried the fault"
    return ""


STEP_EVENT = re.compile(r"rollout \w+ step (\d+)/\d+:")
"""A step's event in the alias history: `rollout <id> step 2/4: staging v5 takes 25% ...`."""
CHECK_LINE = re.compile(r"check (\d+) \(([\d.]+) s into step (\d+), took ([\d.]+) s\): ([a-z ]+):")
"""A check's line of the controller's output."""


def checks(output: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """The controller's checks from its output: number, when it started reading (seconds
    since the part began), how long it took, its outcome."""
    found = []
    for moment, line in output:
        if match := CHECK_LINE.search(line):
            took = float(match[4])
            found.append(
                {"n": int(match[1]), "read_s": round(moment - took, 3), "took_s": took,
                 "outcome": match[5].replace(" ", "_")}
            )  # fmt: skip
    return found


def _spread(values: Sequence[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f} s" if values else "-"


def _since(moment: float | None, began: float) -> float | None:
    return None if moment is None else round(moment - began, 3)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = options.parse_args(
        argv, (__doc__ or "").split("\n")[0], Config(), QUICK, RESULTS, PARTS
    )
    if args.show:
        return options.show(args.show, goals)
    options.quiet_logs()
    return options.run_parts("rollout", Run(cfg), args, execute, goals)


if __name__ == "__main__":
    sys.exit(main())
