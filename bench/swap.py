"""Swap benchmark: live alias following, sticky splits and shadow scoring, on real processes.

    .venv/bin/python -m bench.swap           # full run (~5 min) -> bench/results/swap.json
    .venv/bin/python -m bench.swap --quick   # smoke run (~2 min), JSON in a temporary file
    .venv/bin/python -m bench.swap --only traffic,shadow --output /tmp/swap.json
    .venv/bin/python -m bench.swap --show bench/results/swap.json

It starts its own registry (moto's S3 server and `mlflow server` on SQLite, artifacts proxied
to S3, in a temporary directory), registers fault-injection and real (scikit-learn, PyTorch)
versions, and runs `modelyard serve` processes against it, measuring:

1. flapping: the alias `production` moved every second (faster than a load and warm-up,
   so the latest target wins), the last target a version whose warm-up fails, under
   closed-loop connections on the pinned and unpinned paths: no failed request, every
   answer from a version the alias named recently enough, versions in the order of the moves;
2. propagation: alias moved -> first answer from the new version, by polling alone and
   (in a process polling only every 30 s) with an MLflow webhook;
3. memory: RSS of a serving process after 50 swaps between a scikit-learn and a PyTorch
   version against its RSS after the first swap;
4. traffic: sticky-split properties of serving.traffic.choose over 10,000 keys, and the same
   key getting the same alias from two serving processes;
5. shadow: the agreement reported for a staging version built to disagree on k% of rows, and
   production p99 (wrk, 8 connections) with a 10% shadow sample against none.

Each part records what it measured under `parts`; bench/analysis.py judges the goals from
those records alone, and `--show` prints them again from a results file.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack, redirect_stdout
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from bench import analysis, load, options, report
from bench import swap_checks as checks
from bench.analysis import NO_SHADOW, WITH_SHADOW
from bench.processes import ROOT, Process, registry, start_serving

if TYPE_CHECKING:
    from registry.refs import ModelRef

RESULTS = ROOT / "bench" / "results" / "swap.json"
MODEL = "swap-bench"
SPLIT_MODEL = "swap-bench-split"
RSS_MODEL = "swap-bench-rss"
SHADOW_MODEL = "swap-bench-shadow"
LATENCY_MODEL = "swap-bench-shadow-latency"
ALIAS = "production"
SECRET = "swap-bench-webhook-secret"
ADMIN_TOKEN = "swap-bench-admin-token"
SPLIT_TAG = {"production": 50, "staging": 50, "salt": "swap-bench"}
SERVER_CORE, LOAD_CORE = "0", "1"
PARTS = ("flapping", "propagation", "memory", "traffic", "shadow")

log = logging.getLogger("bench.swap")


@dataclass
class Config:
    """Every knob of a run (recorded in the results)."""

    moves: int = 20
    move_every_s: float = 1.0
    connections: int = 16
    good_versions: int = 6
    load_delay_s: float = 1.35
    poll_interval_s: float = 2.0
    webhook_poll_interval_s: float = 30.0
    propagation_moves: int = 10
    rss_swaps: int = 50
    idle_s: float = 5.0
    keys: int = 10_000
    http_keys: int = 200
    flip_percent: int = 20
    agreement_rows: int = 6000
    shadow_rate: float = 0.1
    shadow_connections: int = 8
    shadow_duration_s: float = 10.0
    shadow_repeats: int = 5
    seed: int = 7
    parts: tuple[str, ...] = PARTS


QUICK = {
    "moves": 8,
    "propagation_moves": 3,
    "rss_swaps": 4,
    "idle_s": 1.0,
    "http_keys": 50,
    "agreement_rows": 1500,
    "shadow_duration_s": 2.0,
    "shadow_repeats": 1,
}


Run = options.Run[Config]


# -- small helpers -------------------------------------------------------------------------------


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for(predicate: Callable[[], Any], timeout_s: float, poll_s: float = 0.05) -> Any:
    """The first truthy value of `predicate`, or None after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        with_value = predicate()
        if with_value:
            return with_value
        if time.monotonic() > deadline:
            return None
        time.sleep(poll_s)


def models(process: Process) -> dict[str, Any]:
    """The process's /models document."""
    return requests.get(process.base_url + "/models", timeout=10).json()  # type: ignore[no-any-return]


def slot(process: Process, model: str, alias: str = ALIAS) -> dict[str, Any]:
    """One slot of /models (empty while the model is unknown)."""
    served = models(process)["models"].get(model, {"aliases": {}})
    return served["aliases"].get(alias, {})  # type: ignore[no-any-return]


def serving_version(process: Process, model: str, version: str) -> dict[str, Any] | None:
    """The production slot of /models when it serves `version`, else None."""
    found = slot(process, model)
    return found if found.get("version") == version else None


def one_row_body() -> bytes:
    """A `dataframe_split` body of one holdout row of the breast-cancer data."""
    from training.datasets import load_split

    row = load_split("breast-cancer").x_holdout.head(1)
    return json.dumps(
        {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
    ).encode()


def watcher_events(records: Sequence[dict[str, Any]], model: str) -> dict[str, Any]:
    """What the serving log says the watcher did for `model`: loads, swaps, moves on, failures."""
    import re

    loads, swaps, moved_on, failed = [], [], [], []
    for record in records:
        if record.get("logger") != "serving.watcher":
            continue
        message = str(record.get("message", ""))
        if not message.startswith(f"{model}@") and f" {model}@" not in message:
            continue
        if found := re.search(
            r"now serves version (\S+) \(was (\S+); loaded in ([\d.]+) s, "
            r"predict ([\d.]+) ms, (inline|in a thread)",
            message,
        ):
            swaps.append(
                {
                    "version": found[1],
                    "was": found[2],
                    "load_s": float(found[3]),
                    "warmup_ms": float(found[4]),
                    "inline": found[5] == "inline",
                }
            )
        elif found := re.search(r"moved on while version (\S+) loaded", message):
            moved_on.append(found[1])
        elif found := re.search(r"version (\S+) not swapped in: (.*)", message):
            failed.append({"version": found[1], "reason": found[2][:200]})
        elif found := re.search(r"^loading \S+ version (\S+)", message):
            loads.append(found[1])
    return {
        "loads_started": loads,
        "swaps": swaps,
        "moved_on_while_loading": moved_on,
        "failures": failed,
    }


# -- registry ------------------------------------------------------------------------------------


def copy_version(client: Any, name: str, version: str, to: str | None = None) -> ModelRef:
    """A new version of `to` (by default `name`) from the model that `version` of `name`
    logged: no second log_model."""
    from registry import versions

    source = client.get_model_version(name, version)
    model_id = source.model_id or source.source.removeprefix("models:/")
    return versions.register(
        client, source.source, to or name, run_id=source.run_id, model_id=model_id
    )


@dataclass
class Registered:
    """The versions the benchmark registers."""

    good: list[str]
    corrupt: str
    split: dict[str, str]
    shadow: dict[str, str]
    latency: dict[str, str]
    rss: dict[str, str]
    seconds: float


def register(uri: str, cfg: Config) -> Registered:
    """Log the models once, register each as many versions as needed, set aliases and tags."""
    from registry import versions
    from registry.client import connect
    from registry.split import TAG
    from training.faults import register_fault_model
    from training.run import TrainSpec, train

    started = time.monotonic()
    client = connect(uri)

    def copy(ref: ModelRef, name: str, alias: str | None = None) -> str:
        """One more version of `name` from the model `ref` logged (no second log_model)."""
        new = copy_version(client, ref.name, ref.version, name)
        if alias:
            versions.set_alias(client, new, alias)
        return new.version

    parts = set(cfg.parts)
    good: list[str] = []
    corrupt = ""
    if parts & {"flapping", "propagation", "traffic"}:
        first = register_fault_model(MODEL, client, alias=ALIAS, load_delay_s=cfg.load_delay_s)
        good = [first.version] + [copy(first, MODEL) for _ in range(cfg.good_versions - 1)]
        corrupt = register_fault_model(
            MODEL, client, load_delay_s=cfg.load_delay_s, fail_predict=True
        ).version
    plain = register_fault_model(SPLIT_MODEL, client, alias="production")
    split = {"production": plain.version, "staging": copy(plain, SPLIT_MODEL, "staging")}
    client.set_registered_model_tag(SPLIT_MODEL, TAG, json.dumps(SPLIT_TAG))
    shadow: dict[str, str] = {}
    latency: dict[str, str] = {}
    if "shadow" in parts:
        flipped = register_fault_model(
            SHADOW_MODEL, client, alias="staging", flip_fraction=cfg.flip_percent / 100
        )
        shadow = {"production": copy(plain, SHADOW_MODEL, "production"), "staging": flipped.version}
        latency = {
            "production": copy(plain, LATENCY_MODEL, "production"),
            "staging": copy(flipped, LATENCY_MODEL, "staging"),
        }
    rss: dict[str, str] = {}
    if "memory" in parts:
        sklearn = train(TrainSpec("sklearn", model_name=RSS_MODEL, alias=ALIAS), client)
        torch = train(TrainSpec("torch", model_name=RSS_MODEL, epochs=50), client)
        rss = {"sklearn": sklearn.version, "torch": torch.version}
    return Registered(good, corrupt, split, shadow, latency, rss, time.monotonic() - started)


# -- 1. flapping ---------------------------------------------------------------------------------


def flapping(run: Run, process: Process, client: Any, reg: Registered) -> None:
    """Move the alias every second under load; the last target fails its warm-up."""
    cfg = run.config
    base = process.base_url
    urls = [f"{base}/models/{MODEL}/aliases/{ALIAS}/invocations"] * (cfg.connections // 2) + [
        f"{base}/models/{MODEL}/invocations"
    ] * (cfg.connections - cfg.connections // 2)
    initial_slot = slot(process, MODEL)
    initial = initial_slot["version"]
    at = reg.good.index(initial)
    cycle = reg.good[at + 1 :] + reg.good[: at + 1]  # every good version, the initial one last
    targets = [cycle[i % len(cycle)] for i in range(cfg.moves - 1)] + [reg.corrupt]
    log_start = len(process.log_records())
    moves: list[checks.Move] = []
    before = loadavg()
    with load.ClosedLoop(urls, one_row_body()) as loop:
        time.sleep(2.0)  # steady state before the first move
        began = time.monotonic()
        for i, target in enumerate(targets):
            time.sleep(max(0.0, began + i * cfg.move_every_s - time.monotonic()))
            start = time.monotonic()
            client.set_registered_model_alias(MODEL, ALIAS, target)
            moves.append(checks.Move(target, start, time.monotonic()))
        # the last target cannot warm up: keep the load on until the failure shows
        failure_shown = wait_for(
            lambda: f"version {reg.corrupt}" in str(slot(process, MODEL).get("last_error")),
            timeout_s=30,
            poll_s=0.2,
        )
        failure_at = time.monotonic()
        serving_during_failure = slot(process, MODEL).get("version")
        # then move on to a good version, as an operator would, still under load
        recovery_target = next(v for v in reg.good if v != serving_during_failure)
        start = time.monotonic()
        client.set_registered_model_alias(MODEL, ALIAS, recovery_target)
        recovery = checks.Move(recovery_target, start, time.monotonic())
        recovered = loop.first(recovery_target, after=recovery.start, timeout_s=90)
        time.sleep(1.0)
    after = loadavg()
    samples = loop.samples
    time.sleep(0.5)  # the log is written by a background thread
    events = watcher_events(process.log_records()[log_start:], MODEL)

    # -- checks
    failed = [s for s in samples if s.status is None or not 200 <= s.status < 300]
    loads = [swap["load_s"] for swap in events["swaps"]]
    longest = max(loads) if loads else cfg.load_delay_s
    margin = cfg.poll_interval_s + longest
    jitter_margin = 1.2 * cfg.poll_interval_s + longest
    during = [s for s in samples if s.start < recovery.start and s.version is not None]
    history = checks.timeline(initial, moves, {reg.corrupt})
    stale = [history.staleness(s) for s in during]
    never_named = sum(1 for s in stale if s is None)
    stale_s = [s for s in stale if s is not None]
    over = sum(1 for s in stale_s if s > margin)
    over_jitter = sum(1 for s in stale_s if s > jitter_margin)
    order = [initial] + [m.version for m in moves if m.version != reg.corrupt] + [recovery.version]
    ordered = checks.order_check(samples, order)
    corrupt_served = sum(1 for s in samples if s.version == reg.corrupt)
    after_recovery = [s for s in samples if s.start >= recovery.end and s.version is not None]
    stale_after = [s.start - recovery.end for s in after_recovery if s.version != recovery.version]
    recovery_s = recovered.end - recovery.start if recovered else None
    duration = max(s.end for s in samples) - min(s.start for s in samples)

    run.parts["flapping"] = {
        "connections": cfg.connections,
        "paths": sorted(set(urls)),
        "initial_version": initial,
        "initial_predict": initial_slot.get("predict"),
        "moves": [asdict(m) for m in moves],
        "corrupt_version": reg.corrupt,
        "failure_shown_after_last_move_s": (failure_at - moves[-1].start)
        if failure_shown
        else None,
        "recovery_move": asdict(recovery),
        "recovery_first_answer_s": recovery_s,
        "recovery_stale_answers": len(stale_after),
        "recovery_last_stale_answer_sent_after_move_s": max(stale_after) if stale_after else None,
        "requests": len(samples),
        "requests_per_s": len(samples) / duration if duration else None,
        "failed": len(failed),
        "failed_examples": [asdict(s) for s in failed[:10]],
        "statuses": dict(Counter(str(s.status) for s in samples)),
        "versions_answered": dict(Counter(str(s.version) for s in samples)),
        "load_s": checks.summary(loads),
        "window_margin_s": margin,
        "window_margin_with_jitter_s": jitter_margin,
        "staleness_s": checks.summary(stale_s),
        "answers_outside_window": over,
        "answers_outside_window_with_jitter": over_jitter,
        "answers_from_never_named_version": never_named,
        "corrupt_answers": corrupt_served,
        "order": asdict(ordered),
        "move_order": order,
        "watcher": events
        | {
            "moved_on_count": len(events["moved_on_while_loading"]),
            "swap_count": len(events["swaps"]),
        },
        "loadavg_before_after": [before, after],
        "raw_samples": [
            [
                s.url.rsplit("/models/", 1)[1],
                round(s.start - began, 3),
                round(s.end - began, 3),
                s.status,
                s.version,
            ]
            for s in samples
        ],
        "raw_time_origin": "first move's scheduled time (s)",
    }
    part = run.parts["flapping"]
    part["moves"] = [
        m | {"start": m["start"] - began, "end": m["end"] - began} for m in part["moves"]
    ]
    shifted = {"start": recovery.start - began, "end": recovery.end - began}
    part["recovery_move"] = part["recovery_move"] | shifted


# -- 2. propagation ------------------------------------------------------------------------------


def propagation(
    process: Process,
    client: Any,
    good: Sequence[str],
    moves: int,
    phase_s: float,
    rng: random.Random,
) -> dict[str, Any]:
    """Move the alias `moves` times; time each move to the first answer of its version."""
    url = f"{process.base_url}/models/{MODEL}/aliases/{ALIAS}/invocations"
    rows = []
    before = loadavg()
    with load.ClosedLoop([url, url], one_row_body()) as probe:
        for i in range(moves):
            current = slot(process, MODEL)["version"]
            target = [v for v in good if v != current][i % (len(good) - 1)]
            time.sleep(rng.uniform(0.2, phase_s))  # a random phase against the poll timer
            start = time.monotonic()
            client.set_registered_model_alias(MODEL, ALIAS, target)
            set_s = time.monotonic() - start
            first = probe.first(target, after=start, timeout_s=120)
            if first is None:
                rows.append({"target": target, "latency_s": None, "load_s": None})
                continue
            served = wait_for(lambda t=target: serving_version(process, MODEL, t), 10)
            rows.append(
                {
                    "target": target,
                    "was": current,
                    "set_alias_call_s": set_s,
                    "latency_s": first.end - start,
                    "load_s": served["predict"]["load_s"] if served else None,
                }
            )
    failed = [s for s in probe.samples if s.status is None or not 200 <= s.status < 300]
    latencies = [r["latency_s"] for r in rows if r["latency_s"] is not None]
    loads = [r["load_s"] for r in rows if r["load_s"] is not None]
    excess = [r["latency_s"] - r["load_s"] for r in rows if r["latency_s"] and r["load_s"]]
    return {
        "moves": rows,
        "latency_s": checks.summary(latencies),
        "load_s": checks.summary(loads),
        "latency_minus_load_s": checks.summary(excess),
        "missed": moves - len(latencies),
        "probe_requests": len(probe.samples),
        "probe_failed": len(failed),
        "loadavg_before_after": [before, loadavg()],
    }


def webhook_propagation(
    run: Run, process: Process, client: Any, reg: Registered, rng: random.Random
) -> None:
    """Propagation with an MLflow webhook, in a process that polls only every 30 s."""
    cfg = run.config
    hook = client.create_webhook(
        name="swap-bench",
        url=f"{process.base_url}/webhooks/mlflow",
        events=["model_version_alias.created", "model_version_alias.deleted"],
        secret=SECRET,
    )
    try:
        time.sleep(2.5)  # the server's webhook cache (MLFLOW_WEBHOOK_CACHE_TTL=1) turns over
        result = propagation(process, client, reg.good, cfg.propagation_moves, 1.0, rng)
    finally:
        client.delete_webhook(hook.webhook_id)
    allowance_s = 1.0
    slow = [
        r
        for r in result["moves"]
        if r["latency_s"] is None or r["latency_s"] > allowance_s + (r["load_s"] or 0) + 1.0
    ]
    result["poll_interval_s"] = cfg.webhook_poll_interval_s
    result["moves_probably_missed_by_webhook"] = len(slow)
    # the goal: at the 95th percentile, the first new answer within this of the move's load
    result["allowance_s"] = allowance_s
    run.parts["propagation"]["webhook"] = result


# -- 3. memory -----------------------------------------------------------------------------------


def memory(run: Run, process: Process, client: Any, reg: Registered) -> None:
    """RSS after the first swap, then after `rss_swaps` swaps between sklearn and torch."""
    cfg = run.config
    pinned = f"{process.base_url}/models/{RSS_MODEL}/aliases/{ALIAS}/invocations"
    body = one_row_body()
    session = requests.Session()

    def swap_to(version: str) -> float:
        started = time.monotonic()
        client.set_registered_model_alias(RSS_MODEL, ALIAS, version)
        requests.post(
            f"{process.base_url}/admin/refresh",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        ).raise_for_status()
        if not wait_for(lambda: slot(process, RSS_MODEL).get("version") == version, 120, 0.05):
            raise SystemExit(f"error: {RSS_MODEL} never served version {version}")
        took = time.monotonic() - started
        for _ in range(5):
            answer = session.post(
                pinned, data=body, headers={"Content-Type": "application/json"}, timeout=30
            )
            if answer.status_code != 200 or answer.headers["X-Model-Version"] != version:
                raise SystemExit(f"error: unexpected answer after a swap: {answer.status_code}")
        return took

    at_start = process.memory_kib()
    first_swap_s = swap_to(reg.rss["torch"])
    time.sleep(cfg.idle_s)
    after_first = process.memory_kib()
    series, durations = [], []
    for i in range(cfg.rss_swaps):
        durations.append(swap_to(reg.rss["sklearn"] if i % 2 == 0 else reg.rss["torch"]))
        series.append(process.memory_kib()["VmRSS"])
    time.sleep(cfg.idle_s)
    final = process.memory_kib()
    ratio = final["VmRSS"] / after_first["VmRSS"]
    half = len(series) // 2
    slope = None
    if len(series) >= 4:
        import numpy as np

        # the trend of the second half, once both versions' imports and caches are warm
        xs = np.arange(half, len(series))
        slope = float(np.polyfit(xs, np.array(series[half:], dtype=float), 1)[0])
    run.parts["memory"] = {
        "versions": reg.rss,
        "rss_kib_at_start": at_start,
        "rss_kib_after_first_swap": after_first,
        "rss_kib_after_swaps": final,
        "swaps_after_first": cfg.rss_swaps,
        "ends_on": "torch" if cfg.rss_swaps % 2 == 0 else "sklearn",
        "idle_before_reading_s": cfg.idle_s,
        "ratio": ratio,
        "rss_kib_after_each_swap": series,
        "second_half_slope_kib_per_swap": slope,
        "first_swap_s": first_swap_s,
        "swap_s": checks.summary(durations),
        "note": "RSS read from /proc/<pid>/status after idling; the serving process exposes no "
        "way to run gc.collect(), so this is RSS after idle, not after a full collection",
    }


# -- 4. traffic ----------------------------------------------------------------------------------


def traffic_pure(run: Run) -> None:
    """Sticky-split properties of serving.traffic over `keys` keys (no HTTP)."""
    from serving import traffic

    cfg = run.config
    keys = [f"user-{i}" for i in range(cfg.keys)]
    salt = "swap-bench"
    split = lambda **weights: checks.split_of(weights, salt)  # noqa: E731
    p, s = "production", "staging"
    results: dict[str, Any] = {"keys": cfg.keys, "salt": salt}

    splits = {
        "90/10": split(production=90, staging=10),
        "80/20": split(production=80, staging=20),
        "70/20/10": split(production=70, staging=20, canary=10),
        "63/18/19": split(production=63, staging=18, canary=19),
        "80/10/10": split(production=80, staging=10, canary=10),
    }
    assigned = {name: checks.assign(sp, keys) for name, sp in splits.items()}
    share = {name: checks.shares(sp, assigned[name]) for name, sp in splits.items()}
    worst = max(abs(a["sigmas"]) for per in share.values() for a in per.values())
    results["shares"] = share
    results["worst_sigmas"] = worst

    shift = checks.moves_between(assigned["90/10"], assigned["80/20"])
    results["90/10->80/20"] = shift
    grow = checks.moves_between(assigned["70/20/10"], assigned["63/18/19"])
    results["70/20/10->63/18/19"] = grow | {"expected_fraction": 0.19 - 0.10}
    transfer = checks.moves_between(assigned["80/10/10"], assigned["70/20/10"])
    leaked = sum(n for pair, n in transfer["by_pair"].items() if pair != f"{p}->{s}")
    results["80/10/10->70/20/10"] = transfer | {
        "expected_minimum_fraction": 0.10,
        "moved_between_other_pairs": leaked,
        "moved_between_other_pairs_fraction": leaked / cfg.keys,
    }
    ordered = traffic.parse_tag('{"production": 90, "staging": 10, "salt": "swap-bench"}')
    reordered = traffic.parse_tag('{"salt": "swap-bench", "staging": 10, "production": 90}')
    three = traffic.parse_tag('{"production": 70, "staging": 20, "canary": 10, "salt": "x"}')
    three_re = traffic.parse_tag('{"canary": 10, "salt": "x", "production": 70, "staging": 20}')
    same_two = checks.assign(ordered, keys) == checks.assign(reordered, keys)
    same_three = checks.assign(three, keys) == checks.assign(three_re, keys)
    results["reordered_tag_identical"] = {"two_aliases": same_two, "three_aliases": same_three}
    run.parts["traffic"] = results


def traffic_http(run: Run, first: Process, second: Process) -> None:
    """The same X-Routing-Key gets the same alias from two serving processes."""
    from serving import traffic

    cfg = run.config
    body = one_row_body()
    split = traffic.parse_tag(json.dumps(SPLIT_TAG))
    keys = [f"http-user-{i}" for i in range(cfg.http_keys)]
    expected = checks.assign(split, keys)
    answers: dict[str, list[str | None]] = {}
    for process in (first, second):
        session = requests.Session()
        url = f"{process.base_url}/models/{SPLIT_MODEL}/invocations"
        answers[process.name] = []
        for key in keys:
            headers = {"Content-Type": "application/json", "X-Routing-Key": key}
            answer = session.post(url, data=body, timeout=30, headers=headers)
            answers[process.name].append(answer.headers.get("X-Model-Alias"))
    a, b = answers[first.name], answers[second.name]
    differ = sum(1 for x, y in zip(a, b, strict=True) if x != y)
    off = sum(1 for x, y in zip(a, expected, strict=True) if x != y)
    run.parts["traffic"]["http"] = {
        "keys": cfg.http_keys,
        "split": SPLIT_TAG,
        "processes": [first.name, second.name],
        "differ_between_processes": differ,
        "differ_from_traffic_choose": off,
        "aliases": dict(Counter(str(x) for x in a)),
    }


# -- 5. shadow -----------------------------------------------------------------------------------


def shadow_agreement(run: Run, process: Process, reg: Registered) -> None:
    """Send varied batches to a model shadowed at 100%; read the agreement it reports."""
    import numpy as np
    import pandas as pd

    from training.datasets import load_split

    cfg = run.config
    split = load_split("breast-cancer")
    rows = pd.concat([split.x_train, split.x_holdout])
    rng = np.random.default_rng(cfg.seed)
    session = requests.Session()
    url = f"{process.base_url}/models/{SHADOW_MODEL}/invocations"
    sent = requests_sent = flipped = 0
    while sent < cfg.agreement_rows:
        batch = rows.iloc[rng.integers(0, len(rows), size=int(rng.integers(1, 41)))]
        # the fault model's own rule: the rows of this body its staging version flips
        first = batch[batch.columns[0]].to_numpy(dtype="float64")
        position = np.arange(len(first)) + (first * 1000).astype("int64")
        flipped += int(np.sum(position % 100 < (cfg.flip_percent / 100) * 100))
        answer = session.post(
            url,
            data=json.dumps(
                {"dataframe_split": {"columns": list(batch.columns), "data": batch.values.tolist()}}
            ),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        if answer.status_code != 200 or answer.headers["X-Model-Alias"] != "production":
            raise SystemExit(f"error: shadowed request answered {answer.status_code}")
        sent += len(batch)
        requests_sent += 1
    pair = f"{reg.shadow['production']}->{reg.shadow['staging']}"

    def tally() -> dict[str, Any]:
        return models(process)["models"][SHADOW_MODEL]["shadow"].get(pair, {"rows": 0})

    wait_for(lambda: tally()["rows"] >= sent, timeout_s=30, poll_s=0.2)
    recorded = tally()
    agreement = recorded.get("agreement")
    disagreement = None if agreement is None else (1 - agreement) * 100
    exact = flipped / sent * 100
    run.parts["shadow"] = {
        "flip_percent": cfg.flip_percent,
        "rows_sent": sent,
        "disagreement_percent_by_construction_for_these_bodies": exact,
        "requests": requests_sent,
        "recorded": recorded,
        "pair": pair,
        "disagreement_percent": disagreement,
    }


def shadow_latency(run: Run, with_shadow: Process, without: Process, workdir: Path) -> None:
    """Production p99 under wrk with a 10% shadow sample against none, interleaved."""
    cfg = run.config
    script = load.post_script(one_row_body(), workdir / "swap-post.lua")
    path = f"/models/{LATENCY_MODEL}/invocations"
    connections = cfg.shadow_connections

    def wrk(process: Process, duration_s: float) -> load.WrkResult:
        return load.run_wrk(
            process.base_url + path,
            script,
            connections,
            duration_s,
            threads=min(2, connections),
            core=LOAD_CORE,
        )

    runs: dict[str, list[dict[str, Any]]] = {with_shadow.name: [], without.name: []}
    warmup_requests = 0
    for process in (with_shadow, without):  # warm-up, not recorded
        warm = wrk(process, 2)
        warmup_requests += warm.requests if process is with_shadow else 0
    # how each process predicts the production version (inline or in a thread) is decided on
    # its own warm-up timing; the comparison only means something when both decided alike
    modes = {
        process.name: slot(process, LATENCY_MODEL)["predict"] for process in (with_shadow, without)
    }
    before = loadavg()
    for repeat in range(cfg.shadow_repeats):
        order = (with_shadow, without) if repeat % 2 == 0 else (without, with_shadow)
        for process in order:
            cpu = process.cpu_s()
            result = wrk(process, cfg.shadow_duration_s)
            cpu_ms = (process.cpu_s() - cpu) * 1000 / max(1, result.requests)
            runs[process.name].append(
                {
                    "requests": result.requests,
                    "rps": result.rps,
                    "p50_ms": result.p50_ms,
                    "p90_ms": result.p90_ms,
                    "p99_ms": result.p99_ms,
                    "non_2xx": result.non_2xx,
                    "socket_errors": sum(result.socket_errors.values()),
                    "server_cpu_ms_per_request": cpu_ms,
                    "repeat": repeat,
                    "loadavg": loadavg(),
                }
            )
    sampled = models(with_shadow)["models"][LATENCY_MODEL]["shadow"]
    shadow_rows = sum(t["rows"] for t in sampled.values())
    total_with = sum(r["requests"] for r in runs[with_shadow.name]) + warmup_requests
    run.parts["shadow"]["latency"] = {
        "tool": f"wrk, {connections} connections, pinned to core {LOAD_CORE}; "
        f"servers pinned to core {SERVER_CORE}",
        "body": "1-row dataframe_split",
        "path": path,
        "shadow_rate": cfg.shadow_rate,
        "duration_s": cfg.shadow_duration_s,
        "repeats": cfg.shadow_repeats,
        "runs": runs,
        **analysis.shadow_latency(runs),
        "shadow_rows_recorded": shadow_rows,
        "requests_with_shadow_process_incl_warmup": total_with,
        "sampled_fraction": shadow_rows / total_with if total_with else None,
        "production_predict_mode": modes,
        "non_2xx_or_socket_errors": sum(
            r["non_2xx"] + r["socket_errors"] for rs in runs.values() for r in rs
        ),
        "loadavg_before": before,
    }


# -- the run -------------------------------------------------------------------------------------


def serving_settings(models_: Sequence[str], poll_s: float, **extra: str) -> dict[str, str]:
    settings = {
        "MODELYARD_MODELS": ",".join(models_),
        "MODELYARD_POLL_INTERVAL_S": f"{poll_s:g}",
        "MODELYARD_WEBHOOK_SECRET": SECRET,
    }
    return settings | {f"MODELYARD_{k.upper()}": v for k, v in extra.items()}


def wait_loaded(
    process: Process, expected: dict[str, dict[str, str]], timeout_s: float = 240
) -> float:
    """Seconds until every (model, alias) in `expected` serves the version named."""
    started = time.monotonic()
    process.wait_ready("/health/ready", timeout_s=timeout_s)

    def done() -> bool:
        served = models(process)["models"]
        return all(
            served.get(m, {}).get("aliases", {}).get(a, {}).get("version") == v
            for m, aliases in expected.items()
            for a, v in aliases.items()
        )

    if not wait_for(done, timeout_s, 0.2):
        raise SystemExit(f"error: {process.name} did not load {expected}\n{process.tail()}")
    return time.monotonic() - started


def execute(run: Run, workdir: Path) -> None:
    cfg = run.config
    parts = set(cfg.parts)
    rng = random.Random(cfg.seed)
    with ExitStack() as stop:
        t = time.monotonic()
        uri = stop.enter_context(registry(workdir))
        run.meta["registry_start_s"] = time.monotonic() - t
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        log.info("registering versions")
        with redirect_stdout(io.StringIO()):  # MLflow prints a link per run it logs
            reg = register(uri, cfg)
        run.meta["registered"] = asdict(reg)
        log.info("registered in %.1f s", reg.seconds)

        def start(name: str, settings: dict[str, str], core: str | None = None) -> Process:
            process = start_serving(name, uri, workdir, settings, core)
            stop.callback(process.stop)
            return process

        if parts & {"flapping", "propagation", "traffic"}:
            first = start(
                "serving-poll", serving_settings([MODEL, SPLIT_MODEL], cfg.poll_interval_s)
            )
            ready = wait_loaded(first, {MODEL: {ALIAS: reg.good[0]}, SPLIT_MODEL: reg.split})
            run.meta["serving_ready_s"] = ready
            if "flapping" in parts:
                log.info("1. flapping: %d moves under %d connections", cfg.moves, cfg.connections)
                flapping(run, first, client, reg)
            if "propagation" in parts:
                log.info("2. propagation by polling, %d moves", cfg.propagation_moves)
                polled = propagation(
                    first, client, reg.good, cfg.propagation_moves, cfg.poll_interval_s, rng
                )
                polled["poll_interval_s"] = cfg.poll_interval_s
                # the goal: at the 95th percentile, the first new answer within one poll
                # interval of the move's own load and warm-up
                polled["allowance_s"] = cfg.poll_interval_s
                run.parts["propagation"] = {"polling": polled}
            if parts & {"propagation", "traffic"}:
                second = start(
                    "serving-webhook",
                    serving_settings([MODEL, SPLIT_MODEL], cfg.webhook_poll_interval_s),
                )
                current = slot(first, MODEL)["version"]
                wait_loaded(second, {MODEL: {ALIAS: current}, SPLIT_MODEL: reg.split})
                if "traffic" in parts:
                    log.info("4. traffic over HTTP on two processes")
                    run.parts.setdefault("traffic", {})
                    traffic_pure(run)
                    traffic_http(run, first, second)
                first.stop()
                if "propagation" in parts:
                    log.info("2. propagation by webhook, %d moves", cfg.propagation_moves)
                    webhook_propagation(run, second, client, reg, rng)
                second.stop()
        elif "traffic" in parts:
            traffic_pure(run)

        if "memory" in parts:
            log.info("3. memory: %d swaps sklearn<->torch", cfg.rss_swaps)
            settings = serving_settings(
                [RSS_MODEL], cfg.poll_interval_s, aliases=ALIAS, admin_token=ADMIN_TOKEN
            )
            third = start("serving-memory", settings)
            wait_loaded(third, {RSS_MODEL: {ALIAS: reg.rss["sklearn"]}})
            memory(run, third, client, reg)
            third.stop()

        if "shadow" in parts:
            log.info("5. shadow: agreement, then p99 with and without a shadow sample")
            shadow_models = [SHADOW_MODEL, LATENCY_MODEL]
            expected = {SHADOW_MODEL: reg.shadow, LATENCY_MODEL: reg.latency}
            sampled = json.dumps({SHADOW_MODEL: 1.0, LATENCY_MODEL: cfg.shadow_rate})
            settings = serving_settings(shadow_models, cfg.poll_interval_s, shadow=sampled)
            with_shadow = start(WITH_SHADOW, settings, SERVER_CORE)
            wait_loaded(with_shadow, expected)
            unsampled = json.dumps({SHADOW_MODEL: 1.0})
            settings = serving_settings(shadow_models, cfg.poll_interval_s, shadow=unsampled)
            without = start(NO_SHADOW, settings, SERVER_CORE)
            wait_loaded(without, expected)  # one after the other: warm-ups do not collide
            shadow_agreement(run, with_shadow, reg)
            shadow_latency(run, with_shadow, without, workdir)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run; JSON to a temp file")
    parser.add_argument("--output", type=Path, help=f"results file (default {RESULTS})")
    parser.add_argument("--only", help=f"comma-separated parts of {','.join(PARTS)}")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--show", type=Path, metavar="FILE", help="print a results file's goals, judged again"
    )
    for name, default in asdict(Config()).items():
        if name == "parts":
            continue
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=type(default), default=None, metavar="N"
        )
    args = parser.parse_args(argv)
    cfg = Config()
    if args.quick:
        cfg = replace(cfg, **QUICK)
    overrides = {
        name: getattr(args, name)
        for name in asdict(cfg)
        if name != "parts" and getattr(args, name, None) is not None
    }
    cfg = replace(cfg, **overrides)
    if args.only:
        chosen = tuple(p.strip() for p in args.only.split(",") if p.strip())
        unknown = set(chosen) - set(PARTS)
        if unknown:
            parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
        cfg = replace(cfg, parts=chosen)
    if cfg.good_versions < 3:
        parser.error("--good-versions must be at least 3")
    return cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    if args.show:
        return options.show(args.show, analysis.swap_goals)
    options.quiet_logs()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if "shadow" in cfg.parts and len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("error: the shadow part needs 2 usable cores (servers on 0, wrk on 1)")
    output = args.output or (
        Path(tempfile.gettempdir()) / "modelyard-swap-quick.json" if args.quick else RESULTS
    )
    run = Run(cfg)
    run.meta = options.conditions() | {
        "machine": {
            "cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "loadavg_at_start": loadavg(),
        },
    }
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="modelyard-swap-"))
    try:
        execute(run, workdir)
    finally:
        run.meta["duration_s"] = time.monotonic() - began
        run.meta["machine"]["loadavg_at_end"] = loadavg()
        run.meta["workdir"] = str(workdir) if args.keep else None
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    goals = options.write_results(run, output, analysis.swap_goals)
    print()
    print(report.goal_table(goals))
    machine = run.meta["machine"]
    print(
        f"\n{report.goal_summary(goals)}; {run.meta['duration_s']:.0f} s; load average "
        f"{machine['loadavg_at_start']} -> {machine['loadavg_at_end']} on {os.cpu_count()} cpus; "
        f"results: {output}"
    )
    return options.exit_code(goals)


if __name__ == "__main__":
    sys.exit(main())
