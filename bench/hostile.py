"""Hostile benchmark: bodies that expand, huge headers, stalled connections, hostile tags and
hanging versions, against a real `modelyard serve` on the demo stack.

    .venv/bin/python -m bench.hostile           # full run -> bench/results/hostile.json
    .venv/bin/python -m bench.hostile --quick   # smoke run, JSON in a temporary file
    .venv/bin/python -m bench.hostile --only cases --output /tmp/hostile.json
    .venv/bin/python -m bench.hostile --show bench/results/hostile.json

It starts its own registry (moto's S3 server and `mlflow server` on SQLite), trains the demo
classifier `cancer-classifier` and registers fault-injection versions, then measures:

1. cases: twelve hostile requests, one at a time (see CASES). Each must be answered as its
   case expects (4xx or 503 for most) within 1 s, while the serving process's RSS, sampled
   every 20 ms, rises at most 128 MiB above its level just before, and `/health/live`,
   polled every 10 ms, keeps a p99 under 100 ms. Two cases need a process of their own: an
   empty admin token, and a process whose only model is still loading;
2. stalled: 1,000 stalled connections (idle, partial headers, partial body; reopened when
   the server closes them) beside wrk at 8 connections on the pinned production path,
   interleaved without, with, four times, both under the same probes (medians): no error,
   p99 at most 2x, RSS bounded;
3. hang: wrk on production beside unpinned traffic at a fixed rate of which staging takes
   10%, staging a plain version (without) or one whose predict sleeps 60 s (with),
   interleaved four times (medians): 0 production errors, p99 at most 1.2x. The p99 of one
   10 s run varies widely between runs of the same condition, so two pairs were too few.

The server runs on core 0 alone; wrk, the registry and this process (its attack, client and
probe threads) on core 1.

The throughput goal (no regression) is `python -m bench.serving`'s; it is recorded here
as a pointer only. Goals are judged from the recorded parts alone (`goals`), so `--show`
prints them again from a results file.
"""

from __future__ import annotations

import io
import json
import logging
import os
import resource
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, redirect_stdout
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from bench import attacks, load, options
from bench.analysis import Goal, fmt
from bench.probes import LiveProbe, RssProbe, rss_kib
from bench.processes import ROOT, Process, registry, start_serving

RESULTS = ROOT / "bench" / "results" / "hostile.json"
MODEL = "cancer-classifier"
HANG_MODEL = "hostile-hang"
COLD_MODEL = "hostile-cold"
HUNG = f"{HANG_MODEL} hanging"
HANG_ON = 12345.0
"""The first-column value on which the hanging version sleeps (its warm-up does not)."""
ADMIN_TOKEN = "hostile-bench-admin-token"
SERVER_CORE, LOAD_CORE = "0", "1"
PARTS = ("cases", "stalled", "hang")
RSS_BOUND_MIB = 128
LIVE_P99_BOUND_MS = 100
STALLED_P99_RATIO = 2.0
HANG_P99_RATIO = 1.2
THROUGHPUT_POINTER = (
    "python -m bench.serving: its ratios within 5% of the last committed bench/results/serving.json"
)

log = logging.getLogger("bench.hostile")


@dataclass
class Config:
    """Every knob of a run (recorded in the results)."""

    answer_within_s: float = 1.0
    settle_s: float = 1.0
    body_timeout_s: float = 5.0
    poll_interval_s: float = 1.0
    header_bytes: int = 2**30
    large_bomb_groups: int = 26
    tag_requests: int = 50
    stalled_connections: int = 1000
    connections: int = 8
    duration_s: float = 10.0
    repeats: int = 4
    hang_split_percent: int = 10
    hang_rate_s: float = 20.0
    parts: tuple[str, ...] = PARTS


QUICK: dict[str, Any] = {
    "settle_s": 0.5,
    "header_bytes": 2**26,
    "large_bomb_groups": 2,
    "tag_requests": 10,
    "stalled_connections": 200,
    "duration_s": 2.0,
    "repeats": 1,
}


Run = options.Run[Config]


# -- requests ------------------------------------------------------------------------------------


def post(
    url: str, body: bytes, content_type: str = "application/json", **headers: str
) -> dict[str, Any]:
    """One POST: status, seconds, and the response headers that matter here."""
    started = time.monotonic()
    try:
        response = requests.post(
            url, data=body, headers={"Content-Type": content_type, **headers}, timeout=30
        )
    except requests.RequestException as exc:
        return {"status": None, "seconds": time.monotonic() - started, "error": str(exc)[:200]}
    seen = response.headers
    return {
        "status": response.status_code,
        "seconds": time.monotonic() - started,
        "bytes_sent": len(body),
        "retry_after": seen.get("Retry-After"),
        "alias": seen.get("X-Model-Alias"),
        "ignored_columns": seen.get("X-Ignored-Columns"),
        "injected_header": "X-Injected" in seen,
        "message": response.text[:200] if not response.ok else None,
    }


def refused(answer: Mapping[str, Any]) -> bool:
    """4xx or 503: the hostile request turned away, the process still serving."""
    status = answer.get("status")
    return status is not None and (400 <= status < 500 or status == 503)


def cut_off(answer: Mapping[str, Any]) -> bool:
    """A 4xx, or the connection closed by the server."""
    return refused(answer) or bool(answer.get("closed"))


def served_or_unready(answer: Mapping[str, Any]) -> bool:
    """200, or 503 while nothing is loaded: a bad tag changes no request's fate."""
    return answer.get("status") in (200, 503)


def echoed_safely(answer: Mapping[str, Any]) -> bool:
    """200 with the column echoed but no header injected, or 400."""
    if answer.get("status") == 400:
        return True
    return answer.get("status") == 200 and not answer.get("injected_header")


def unauthorized(answer: Mapping[str, Any]) -> bool:
    """401, or the process refused to start with the setting."""
    return answer.get("status") == 401 or bool(answer.get("refused_to_start"))


def unready(answer: Mapping[str, Any]) -> bool:
    """503 with Retry-After."""
    return answer.get("status") == 503 and bool(answer.get("retry_after"))


def within_bounds(answer: Mapping[str, Any]) -> bool:
    """Served (200) or turned away (4xx, 503): the point is memory and time."""
    return answer.get("status") == 200 or refused(answer)


@dataclass(frozen=True)
class Case:
    """One hostile request: what it sends, and which answer is right."""

    name: str
    text: str
    expected: str
    accept: Callable[[Mapping[str, Any]], bool]
    own_process: bool = False


CASES = (
    Case("long-string", "1 MB split: a 20,000-char cell, 8,000 rows of ''", "4xx", refused),
    Case("parquet-bomb", "Parquet zstd bomb, 160 MB of doubles", "4xx", refused),
    Case("parquet-bomb-large", "Parquet zstd bomb of ~1.5 MiB", "4xx", refused),
    Case("wide-csv", "1.9 MB CSV with 200,000 columns", "4xx", refused),
    Case("huge-header", "1 GB X-Request-ID, streamed", "431/4xx or closed", cut_off),
    Case("stalled-body", "5 MiB - 1 body sent at 10 KB/s", "408/4xx or closed", cut_off),
    Case("tag-1e308", "traffic weights 1e308 + 1e308, unpinned", "200 or 503", served_or_unready),
    Case("foreign-columns", "column named non-Latin-1 + \\n", "200 unharmed or 400", echoed_safely),
    Case("million-cells", "1,000,000-cell JSON under 5 MiB", "200 or 4xx", within_bounds),
    Case("nested", "100,000-deep nested JSON", "4xx", refused),
    Case("empty-admin-token", "MODELYARD_ADMIN_TOKEN= ; header-less /admin/refresh",
         "401 or no start", unauthorized, own_process=True),
    Case("cold-start", "/invocations before any model is loaded", "503 + Retry-After", unready,
         own_process=True),
)  # fmt: skip
BY_NAME = {case.name: case for case in CASES}


def case_deadline(config: Mapping[str, Any], name: str) -> float:
    """Seconds within which the case must be answered (a stalled body gets the body timeout)."""
    stalled_body = config["body_timeout_s"] if name == "stalled-body" else 0
    return float(config["answer_within_s"] + stalled_body)


# -- the cases -----------------------------------------------------------------------------------


@dataclass
class Stack:
    """What the cases need: the registry client, the serving process, a row of features."""

    client: Any
    process: Process
    features: list[str]
    row: list[float]

    @property
    def url(self) -> str:
        return f"{self.process.base_url}/models/{MODEL}/invocations"


Attack = Callable[[], list[dict[str, Any]]]


def attack(stack: Stack, cfg: Config, name: str) -> Attack:
    """Case `name` on the main process, its body built: call it to send, get its answers."""
    url = stack.url
    host, port = "127.0.0.1", urlsplit(stack.process.base_url).port or 80
    path = f"/models/{MODEL}/invocations"
    parquet = "application/vnd.apache.parquet"
    bodies: dict[str, tuple[Callable[[], bytes], str]] = {
        "long-string": (lambda: attacks.long_string_split(stack.features), "application/json"),
        "parquet-bomb": (lambda: attacks.parquet_bomb(stack.features[0]), parquet),
        "parquet-bomb-large": (
            lambda: attacks.parquet_bomb(stack.features[0], groups=cfg.large_bomb_groups),
            parquet,
        ),
        "wide-csv": (attacks.wide_csv, "text/csv"),
        "foreign-columns": (
            lambda: attacks.with_foreign_column(stack.features, stack.row),
            "application/json",
        ),
        "million-cells": (lambda: attacks.many_cells(stack.features), "application/json"),
        "nested": (attacks.nested, "application/json"),
    }
    if name in bodies:
        build, content_type = bodies[name]
        body = build()
        return lambda: [post(url, body, content_type)]
    if name == "huge-header":
        return lambda: [asdict(attacks.huge_header(host, port, path, cfg.header_bytes, 30))]
    if name == "stalled-body":
        length, give_up = 5 * 2**20 - 1, case_deadline(asdict(cfg), name) + 10
        return lambda: [asdict(attacks.stalled_body(host, port, path, length, 10_000, give_up))]
    if name == "tag-1e308":
        return lambda: hostile_tag(stack, cfg)
    raise ValueError(f"no case '{name}' on the main process")


def hostile_tag(stack: Stack, cfg: Config) -> list[dict[str, Any]]:
    """Set weights of 1e308 on both aliases, wait for a poll to read them, send unpinned."""
    from registry.split import TAG

    stack.client.set_registered_model_tag(
        MODEL, TAG, json.dumps({"production": 1e308, "staging": 1e308})
    )
    try:
        time.sleep(2.5 * cfg.poll_interval_s)
        body = one_row(stack)
        return [post(stack.url, body) for _ in range(cfg.tag_requests)]
    finally:
        stack.client.delete_registered_model_tag(MODEL, TAG)


def one_row(stack: Stack, first: float | None = None) -> bytes:
    """A one-row `dataframe_split`; its first column `first` when given."""
    row = stack.row if first is None else [first, *stack.row[1:]]
    split = {"columns": stack.features, "data": [row]}
    return json.dumps({"dataframe_split": split}).encode()


def steady_kib(pid: int) -> float | None:
    """Median RSS of `pid` over half a second."""
    with RssProbe(pid) as idle:
        time.sleep(0.5)
    return statistics.median(idle.samples) if idle.samples else None


def measured(
    pid: int,
    base_url: str,
    settle_s: float,
    send: Attack,
    steady: float | None = None,
) -> dict[str, Any]:
    """Call `send` under the RSS and liveness probes; its answers and what they saw.

    The RSS rise is over `steady`, by default the level measured just before the attack.
    """
    if steady is None:
        steady = steady_kib(pid)
    with RssProbe(pid) as rss, LiveProbe(base_url) as live:
        time.sleep(0.1)
        answers = send()
        time.sleep(settle_s)
    peak = rss.peak_kib()
    return {
        "answers": answers,
        "rss_steady_kib": steady,
        "rss_peak_kib": peak,
        "rss_rise_mib": (peak - steady) / 1024 if peak and steady else None,
        "live": live.summary(),
        "alive_after": rss_kib(pid) is not None,
    }


def run_cases(run: Run, stack: Stack, start: Callable[..., Process]) -> None:
    """Every case, one at a time: the main process's, then the two on their own processes."""
    cfg = run.config
    records = {}
    for case in CASES:
        if case.own_process:
            continue
        log.info("case %s", case.name)
        records[case.name] = measured(
            stack.process.pid,
            stack.process.base_url,
            cfg.settle_s,
            attack(stack, cfg, case.name),
        )
    log.info("case empty-admin-token")
    records["empty-admin-token"] = empty_admin_token(cfg, start)
    log.info("case cold-start")
    records["cold-start"] = cold_start(cfg, start)
    run.parts["cases"] = records


def empty_admin_token(cfg: Config, start: Callable[..., Process]) -> dict[str, Any]:
    """A process given MODELYARD_ADMIN_TOKEN= : refuses to start, or refuses header-less admin."""
    process = start("serving-empty-token", [MODEL], admin_token="")
    try:
        process.wait_ready("/health/live", timeout_s=120)
    except Exception:  # it exited: the setting refused at start
        return {
            "answers": [{"status": None, "refused_to_start": True, "seconds": 0.0}],
            "log_tail": process.tail(5),
        }
    url = process.base_url + "/admin/refresh"

    def refresh() -> list[dict[str, Any]]:
        return [post(url, b""), post(url, b"", Authorization="Bearer ")]

    try:
        return measured(process.pid, process.base_url, cfg.settle_s, refresh)
    finally:
        process.stop()


def cold_start(cfg: Config, start: Callable[..., Process]) -> dict[str, Any]:
    """/invocations on a process whose only model takes 60 s to load."""
    process = start("serving-cold", [COLD_MODEL])
    try:
        process.wait_ready("/health/live", timeout_s=120, poll_s=0.05)
        url = f"{process.base_url}/invocations"
        body = json.dumps({"dataframe_split": {"columns": ["a"], "data": [[0.0]]}}).encode()
        return measured(process.pid, process.base_url, cfg.settle_s, lambda: [post(url, body)])
    finally:
        process.stop()


# -- 2. stalled connections ----------------------------------------------------------------------


def wrk_run(process: Process, script: Path, cfg: Config) -> dict[str, Any]:
    url = f"{process.base_url}/models/{MODEL}/aliases/production/invocations"
    result = load.run_wrk(url, script, cfg.connections, cfg.duration_s, core=LOAD_CORE)
    return result.numbers() | {"errors": result.errors}


def stalled(run: Run, stack: Stack, workdir: Path) -> None:
    """wrk on production without and with `stalled_connections` stalled connections."""
    cfg = run.config
    process = stack.process
    script = load.post_script(one_row(stack), workdir / "hostile-one-row.lua")
    wrk_run(process, script, replace(cfg, duration_s=2))  # warm-up, not recorded
    port = urlsplit(process.base_url).port or 80
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for repeat in range(cfg.repeats):  # both runs under the same probes
        steady = steady_kib(process.pid)
        probed = measured(
            process.pid, process.base_url, 0, lambda: [wrk_run(process, script, cfg)], steady
        )
        runs["without"].append(probed.pop("answers")[0] | {"repeat": repeat, **probed})
        path = f"/models/{MODEL}/invocations"
        with attacks.Stalled("127.0.0.1", port, path, cfg.stalled_connections) as held:
            time.sleep(1.0)  # every stalled connection open before the load starts
            probed = measured(
                process.pid, process.base_url, 0, lambda: [wrk_run(process, script, cfg)], steady
            )
        result = probed.pop("answers")[0]
        runs["with"].append(result | {"repeat": repeat, "stalled": held.record(), **probed})
    run.parts["stalled"] = {
        "tool": f"wrk, {cfg.connections} connections, the attack and the probes on core "
        f"{LOAD_CORE}; server pinned to core {SERVER_CORE}",
        "path": f"/models/{MODEL}/aliases/production/invocations",
        "runs": runs,
    }


# -- 3. a hanging staging version ----------------------------------------------------------------


class OpenLoop:
    """Unpinned requests at a fixed rate, each in a thread of its own, whatever their fate:
    the same traffic whether its share of staging hangs or not."""

    def __init__(self, url: str, body: bytes, rate_s: float) -> None:
        self.url, self.body, self.rate_s = url, body, rate_s
        self.answers: list[dict[str, Any]] = []
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pacer = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OpenLoop:
        self._pacer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self._pacer.join()
        for thread in self._threads:
            thread.join(20)

    def _run(self) -> None:
        while not self._halt.wait(1 / self.rate_s):
            thread = threading.Thread(target=self._send, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _send(self) -> None:
        self.answers.append(post(self.url, self.body))

    def record(self) -> dict[str, Any]:
        """Answers by alias and status; production answers other than 200."""
        by = Counter(f"{a.get('alias')}:{a.get('status')}" for a in self.answers)
        failed = sum(
            1 for a in self.answers if a.get("alias") == "production" and a["status"] != 200
        )
        return {
            "requests": len(self.answers),
            "by_alias_status": dict(by),
            "production_errors": failed,
        }


def hang(run: Run, stack: Stack, versions: Mapping[str, str], workdir: Path) -> None:
    """wrk on production beside unpinned traffic at a fixed rate, staging split off; the
    staging alias on a plain version (without) or on one whose predict sleeps 60 s (with)."""
    cfg = run.config
    process = stack.process
    script = load.post_script(one_row(stack), workdir / "hostile-one-row.lua")
    pinned = f"{process.base_url}/models/{HANG_MODEL}/aliases/production/invocations"
    unpinned = f"{process.base_url}/models/{HANG_MODEL}/invocations"
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    staging = {"without": versions[f"{HANG_MODEL}@staging"], "with": versions[HUNG]}

    def phase(name: str, repeat: int) -> None:
        stack.client.set_registered_model_alias(HANG_MODEL, "staging", staging[name])
        wait_serving(process, HANG_MODEL, "staging", staging[name])
        with OpenLoop(unpinned, one_row(stack, HANG_ON), cfg.hang_rate_s) as traffic:
            result = load.run_wrk(pinned, script, cfg.connections, cfg.duration_s, core=LOAD_CORE)
        runs[name].append(
            result.numbers()
            | {"errors": result.errors, "repeat": repeat, "unpinned": traffic.record()}
        )

    load.run_wrk(pinned, script, cfg.connections, 2, core=LOAD_CORE)  # warm-up
    for repeat in range(cfg.repeats):
        phase("without", repeat)
        phase("with", repeat)
    run.parts["hang"] = {
        "split_percent": cfg.hang_split_percent,
        "path": f"/models/{HANG_MODEL}/aliases/production/invocations",
        "unpinned_rate_s": cfg.hang_rate_s,
        "staging_versions": staging,
        "runs": runs,
    }


def wait_serving(process: Process, model: str, alias: str, version: str) -> None:
    """Wait until /models says `model`@`alias` serves `version`."""

    def done() -> bool:
        served = requests.get(process.base_url + "/models", timeout=5).json()["models"]
        return bool(served[model]["aliases"][alias].get("version") == version)

    process.wait_until(done, timeout_s=120, poll_s=0.1)


# -- goals ---------------------------------------------------------------------------------------


def case_goal(config: Mapping[str, Any], name: str, record: Mapping[str, Any]) -> Goal:
    """Met when every answer is right and in time, RSS and liveness stayed bounded."""
    case = BY_NAME[name]
    deadline = case_deadline(config, name)
    answers = record["answers"]
    right = all(case.accept(a) for a in answers)
    slowest = max((a.get("seconds") or 0.0 for a in answers), default=0.0)
    rise = record.get("rss_rise_mib")
    live = record.get("live", {})
    p99 = live.get("p99_ms")
    statuses = sorted(
        {str(a.get("status")) + ("/closed" if a.get("closed") else "") for a in answers}
    )
    met = (
        right
        and slowest <= deadline
        and (rise is None or rise <= RSS_BOUND_MIB)
        and (p99 is None or p99 < LIVE_P99_BOUND_MS)
        and not live.get("errors")
        and record.get("alive_after", True)
    )
    return Goal(
        name,
        case.text,
        f"{','.join(statuses)} in {slowest:.2f} s; RSS +{fmt(rise, ' MiB', 0)}; "
        f"live p99 {fmt(p99, ' ms', 1)}, {live.get('errors', 0)} errors",
        f"{case.expected} in {deadline:g} s; +{RSS_BOUND_MIB} MiB; p99 < {LIVE_P99_BOUND_MS} ms",
        met,
    )


def _median(runs: Sequence[Mapping[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def interleaved_goal(
    id_: str, text: str, runs: Mapping[str, Any], bound: float, extra_errors: int = 0
) -> Goal:
    """Errors and median p99 with vs without."""
    without, with_ = runs["without"], runs["with"]
    errors = sum(r["errors"] for r in [*without, *with_]) + extra_errors
    ratio = _median(with_, "p99_ms") / _median(without, "p99_ms")
    return Goal(
        id_,
        text,
        f"{errors} errors; p99 {ratio:.2f}x ({_median(with_, 'p99_ms'):.2f} vs "
        f"{_median(without, 'p99_ms'):.2f} ms)",
        f"0; <= {bound:g}x",
        errors == 0 and ratio <= bound,
    )


def goals(config: Mapping[str, Any], parts: Mapping[str, Any]) -> list[Goal]:
    """The hostile benchmark's goals, from its recorded parts."""
    found = [case_goal(config, name, record) for name, record in parts.get("cases", {}).items()]
    if "stalled" in parts:
        runs = parts["stalled"]["runs"]
        found.append(
            interleaved_goal(
                "stalled",
                f"{config['stalled_connections']} stalled connections beside wrk at "
                f"{config['connections']} connections",
                runs,
                STALLED_P99_RATIO,
            )
        )
        rises = [r["rss_rise_mib"] for r in runs["with"] if r.get("rss_rise_mib") is not None]
        live = [r["live"]["p99_ms"] for r in runs["with"] if r["live"]["p99_ms"] is not None]
        found.append(
            Goal(
                "stalled-rss",
                "RSS rise and /health/live p99 under the stalled connections",
                f"+{fmt(max(rises, default=None), ' MiB', 0)}; live p99 "
                f"{fmt(max(live, default=None), ' ms', 1)}",
                f"+{RSS_BOUND_MIB} MiB (live: report)",
                all(r <= RSS_BOUND_MIB for r in rises),
            )
        )
    if "hang" in parts:
        hang_part = parts["hang"]
        runs = hang_part["runs"]
        leaked = sum(r["unpinned"]["production_errors"] for r in runs["with"] + runs["without"])
        found.append(
            interleaved_goal(
                "hang",
                f"production with staging hanging 60 s at a {hang_part['split_percent']}% split",
                hang_part["runs"],
                HANG_P99_RATIO,
                leaked,
            )
        )
    found.append(
        Goal(
            "throughput", "no throughput regression", "not measured here", THROUGHPUT_POINTER, None
        )
    )
    return found


# -- the run -------------------------------------------------------------------------------------


def register(uri: str, cfg: Config) -> dict[str, str]:
    """The demo classifier (production and staging on one version), the hang and cold models."""
    from registry.client import connect
    from registry.split import TAG
    from training.faults import register_fault_model
    from training.run import TrainSpec, train

    client = connect(uri)
    demo = train(TrainSpec("sklearn", alias="production"), client)
    client.set_registered_model_alias(MODEL, "staging", demo.version)
    steady = register_fault_model(HANG_MODEL, client, alias="production")
    plain = register_fault_model(HANG_MODEL, client, alias="staging")
    hung = register_fault_model(HANG_MODEL, client, hang_on=HANG_ON, hang_s=60)
    split = {"production": 100 - cfg.hang_split_percent, "staging": cfg.hang_split_percent}
    client.set_registered_model_tag(HANG_MODEL, TAG, json.dumps(split))
    cold = register_fault_model(COLD_MODEL, client, alias="production", load_delay_s=60)
    return {
        MODEL: demo.version,
        f"{HANG_MODEL}@production": steady.version,
        f"{HANG_MODEL}@staging": plain.version,
        HUNG: hung.version,
        COLD_MODEL: cold.version,
    }


def settings(models: Sequence[str], cfg: Config, **extra: str) -> dict[str, str]:
    values = {
        "MODELYARD_MODELS": ",".join(models),
        "MODELYARD_POLL_INTERVAL_S": f"{cfg.poll_interval_s:g}",
        "MODELYARD_BODY_TIMEOUT_S": f"{cfg.body_timeout_s:g}",
        "MODELYARD_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    return values | {f"MODELYARD_{k.upper()}": v for k, v in extra.items()}


def raise_open_files() -> int:
    """Raise this process's open-file limit (its children inherit it) to the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def execute(run: Run, workdir: Path) -> None:
    from registry.client import connect
    from training.datasets import load_split

    cfg = run.config
    # Core 0 is the server's alone: this process (its attack, client and probe threads), the
    # registry it starts and wrk run on core 1, as the other benchmarks have them.
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    with ExitStack() as stop:
        uri = stop.enter_context(registry(workdir))
        log.info("registering versions")
        with redirect_stdout(io.StringIO()):  # MLflow prints a link per run it logs
            run.meta["registered"] = register(uri, cfg)

        def start(
            name: str, models: Sequence[str], core: str | None = None, **extra: str
        ) -> Process:
            process = start_serving(name, uri, workdir, settings(models, cfg, **extra), core)
            stop.callback(process.stop)
            return process

        process = start("serving", [MODEL, HANG_MODEL], SERVER_CORE)
        run.meta["serving_ready_s"] = process.wait_ready("/health/ready", timeout_s=240)
        split = load_split("breast-cancer")
        stack = Stack(connect(uri), process, split.features, split.x_holdout.iloc[0].tolist())
        if "cases" in cfg.parts:
            run_cases(run, stack, start)
        if "stalled" in cfg.parts:
            log.info("stalled: %d connections", cfg.stalled_connections)
            stalled(run, stack, workdir)
        if "hang" in cfg.parts:
            log.info("hang: staging sleeps 60 s at %d%%", cfg.hang_split_percent)
            hang(run, stack, run.meta["registered"], workdir)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = options.parse_args(
        argv, (__doc__ or "").split("\n")[0], Config(), QUICK, RESULTS, PARTS
    )
    if args.show:
        return options.show(args.show, goals)
    load.require_wrk()
    options.quiet_logs()
    return options.run_parts(
        "hostile", Run(cfg), args, execute, goals, open_files_limit=raise_open_files()
    )


if __name__ == "__main__":
    sys.exit(main())
