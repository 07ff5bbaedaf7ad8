"""Resilience benchmark: restarts without the registry, a hostile registry, killed downloads and
hostile gate candidates, on real processes (moto's S3, `mlflow server`, `modelyard serve`).

    .venv/bin/python -m bench.resilience           # full run -> bench/results/resilience.json
    .venv/bin/python -m bench.resilience --quick   # smoke run, JSON in a temporary file
    .venv/bin/python -m bench.resilience --only gate --output /tmp/resilience.json
    .venv/bin/python -m bench.resilience --show bench/results/resilience.json

1. outage: a process with MODELYARD_STATE_DIR is timed starting normally; it is stopped, the
   registry stopped, and it starts again: ready within 1.5x the normal start, answering only
   from the versions it served before, flagged stale (`/health/ready` or `/models`). The
   registry comes back and an alias moves: the new version answers within one poll interval
   plus its load;
2. hostile registry: hostile `modelyard.traffic` tag values (`"[" * 3000`, 1e308 weights, NaN,
   5,000-char strings, ...) and, through a proxy in front of MLflow, made-up answers (not
   JSON, wrong shapes, 500s, hangs) to the serving process's registry calls, 1,000 in all;
   then an alias move is served within one poll interval plus its load;
3. downloads: a process killed (SIGKILL) at a random point of a version's download (artifact
   downloads delayed by the proxy), 20 times; each next start serves that version, complete:
   ready, and answering as the version does;
4. gate: candidates that call `sys.exit(0)`, `os._exit(0)`, hang, or patch modelyard in
   `load_context` (bench/hostile_candidate.py): `modelyard gate` (`--score-timeout 60`)
   exits 2 every time.

Goals are judged from the recorded parts alone (`goals`); `--show` prints them again.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench import load, options
from bench.analysis import Goal, fmt
from bench.processes import (
    ROOT,
    Process,
    base_env,
    http_status,
    start_mlflow,
    start_s3,
    start_serving,
)
from bench.proxy import RegistryProxy
from bench.swap import copy_version, one_row_body, wait_for, watcher_events
from modelyard.processes import TrackingServer, free_port

RESULTS = ROOT / "bench" / "results" / "resilience.json"
PARTS = ("outage", "hostile-registry", "downloads", "gate")
START_RATIO = 1.5
GATE_CANDIDATES = ("sys.exit", "os._exit", "hang", "patch")
"""What each hostile gate candidate's load_context does (bench/hostile_candidate.py)."""
POLICY = "model: {model}\nmetrics:\n  accuracy: {{min: 0.85}}\n"
"""A policy the candidates' useless answers fail: only a gate that was fooled passes them."""
HOSTILE_TAGS = (
    "[" * 3000,
    "{" * 3000,
    "1e999999",
    json.dumps({"production": 1e308, "staging": 1e308}),
    json.dumps({"production": 1e308, "staging": 1e308, "canary": 1e308}),
    '{"production": NaN, "staging": 1}',
    '{"production": Infinity}',
    '{"production": -1, "staging": 2}',
    '{"production": 0, "staging": 0}',
    '{"production": true}',
    '{"production": "90"}',
    '{"salt": 7, "production": 1}',
    "NaN",
    "null",
    "[]",
    '"production"',
    "x" * 5000,
    json.dumps({"production": 1, "staging": "x" * 4900}),
    json.dumps({"x" * 4900: 1}),
    '{"production": 1e-320, "staging": 1e-320}',
    "\x00\x01\x02",
    "\uff19\uff10",  # fullwidth digits
)
"""Values of the `modelyard.traffic` tag a careless or hostile user could set."""

log = logging.getLogger("bench.resilience")


@dataclass
class Config:
    """Every knob of a run (recorded in the results)."""

    poll_interval_s: float = 1.0
    registry_timeout_s: float = 2.0
    normal_starts: int = 3
    probe_s: float = 5.0
    hostile_tags: int = 500
    hostile_answers: int = 500
    hostile_share: float = 0.5
    kills: int = 20
    artifact_delay_s: float = 0.3
    gate_repeats: int = 3
    score_timeout_s: float = 60.0
    gate_timeout_s: float = 400.0
    seed: int = 11
    parts: tuple[str, ...] = PARTS


QUICK: dict[str, Any] = {
    "normal_starts": 1,
    "probe_s": 2.0,
    "hostile_tags": 40,
    "hostile_answers": 40,
    "kills": 2,
    "gate_repeats": 1,
}


Run = options.Run[Config]


# -- a registry that can go away -----------------------------------------------------------------


class Registry:
    """moto's S3 server and an `mlflow server` on a fixed port that can be stopped and started."""

    def __init__(self, workdir: Path, stack: ExitStack) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.s3_url = start_s3(workdir, stack)
        self.server: TrackingServer | None = None
        stack.callback(self.stop)
        self.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start `mlflow server`; seconds until it answered."""
        self.server = start_mlflow(self.workdir, self.s3_url, self.port)
        return self.server.ready_s

    def stop(self) -> None:
        if self.server is not None:
            self.server.child.stop(30)
            self.server = None


# -- helpers -------------------------------------------------------------------------------------


def get_json(process: Process, path: str) -> Any:
    return requests.get(process.base_url + path, timeout=5).json()


def served_versions(process: Process, model: str) -> dict[str, str]:
    """alias -> version the process serves for `model`, per /models."""
    aliases = get_json(process, "/models")["models"].get(model, {}).get("aliases", {})
    return {alias: slot["version"] for alias, slot in aliases.items() if slot.get("version")}


def three_versions(client: Any, model: str) -> tuple[dict[str, str], str]:
    """Versions of a fault model `model`: production and staging on two, and one more to move
    an alias to."""
    from training.faults import register_fault_model

    production = register_fault_model(model, client, alias="production").version
    staging = copy_version(client, model, production).version
    client.set_registered_model_alias(model, "staging", staging)
    moved_to = copy_version(client, model, production).version
    return {"production": production, "staging": staging}, moved_to


def load_seconds(process: Process, model: str, version: str) -> float | None:
    """The load and warm-up time the serving log gives for `version` of `model`."""
    swaps = watcher_events(process.log_records(), model)["swaps"]
    return next((s["load_s"] for s in reversed(swaps) if s["version"] == version), None)


@contextmanager
def serving(
    name: str, tracking_uri: str, workdir: Path, cfg: Config, models: Sequence[str], **extra: str
) -> Iterator[Process]:
    """A `modelyard serve` process, stopped on exit."""
    settings = {
        "MODELYARD_MODELS": ",".join(models),
        "MODELYARD_POLL_INTERVAL_S": f"{cfg.poll_interval_s:g}",
        "MODELYARD_REGISTRY_TIMEOUT_S": f"{cfg.registry_timeout_s:g}",
    } | {f"MODELYARD_{k.upper()}": v for k, v in extra.items()}
    process = start_serving(name, tracking_uri, workdir, settings)
    try:
        yield process
    finally:
        process.stop()


def ready_with(
    process: Process, model: str, expected: Mapping[str, str], timeout_s: float
) -> float:
    """Seconds from now until /health/ready is 200 and `model` serves `expected`."""

    def done() -> bool:
        return http_status(process.base_url + "/health/ready", 1) == 200 and served_versions(
            process, model
        ) == dict(expected)

    return process.wait_until(done, timeout_s, poll_s=0.05)


# -- 1. restart during a registry outage ---------------------------------------------------------


def outage(run: Run, registry: Registry, client: Any, workdir: Path) -> None:
    cfg = run.config
    model = "resilience-outage"
    before, moved_to = three_versions(client, model)
    state = {"state_dir": str(workdir / "state-outage")}
    with serving("first", registry.uri, workdir, cfg, [model], **state) as first:
        first_ready_s = ready_with(first, model, before, 240)
    normal = []
    for i in range(cfg.normal_starts):
        with serving(f"normal-{i}", registry.uri, workdir, cfg, [model], **state) as process:
            normal.append(ready_with(process, model, before, 240))
    registry.stop()
    record: dict[str, Any] = {
        "first_start_s": first_ready_s,
        "normal_start_s": normal,
        "before": before,
    }
    with serving("outage", registry.uri, workdir, cfg, [model], **state) as process:
        try:
            record["outage_start_s"] = ready_with(process, model, before, 3 * max(normal) + 30)
        except Exception as exc:
            record["outage_start_s"] = None
            record["outage_start_error"] = str(exc)[-500:]
            run.parts["outage"] = record
            registry.start()
            return
        record["health_ready"] = get_json(process, "/health/ready")
        record["models"] = get_json(process, "/models")["models"].get(model)
        urls = [
            f"{process.base_url}/models/{model}/invocations",
            f"{process.base_url}/models/{model}/aliases/production/invocations",
            f"{process.base_url}/models/{model}/aliases/staging/invocations",
        ]
        with load.ClosedLoop(urls, one_row_body(), timeout_s=10) as loop:
            time.sleep(cfg.probe_s)
            record["registry_restart_s"] = registry.start()
            returned = time.monotonic()
            client.set_registered_model_alias(model, "production", moved_to)
            moved = time.monotonic()
            first_new = loop.first(moved_to, after=moved, timeout_s=120)
        during = [s for s in loop.samples if s.end < returned]
        record |= {
            "moved_to": moved_to,
            "answers_during_outage": len(during),
            "versions_during_outage": sorted({str(s.version) for s in during}),
            "other_versions_during_outage": sum(
                1 for s in during if s.version not in before.values()
            ),
            "failed_during_outage": sum(1 for s in during if s.status != 200),
            "resumed_s": first_new.end - moved if first_new else None,
            "load_s": load_seconds(process, model, moved_to),
            "poll_interval_s": cfg.poll_interval_s,
        }
    run.parts["outage"] = record


def stale_flagged(record: Mapping[str, Any]) -> bool:
    """Whether /health/ready or /models said the state is stale."""
    text = json.dumps([record.get("health_ready"), record.get("models")]).lower()
    return "stale" in text


# -- 2. hostile tags and registry answers --------------------------------------------------------


def hostile_registry(run: Run, registry: Registry, client: Any, workdir: Path) -> None:
    from registry.split import TAG

    cfg = run.config
    model = "resilience-hostile"
    expected, moved_to = three_versions(client, model)
    with (
        RegistryProxy(registry.uri, cfg.seed) as proxy,
        serving("hostile", proxy.uri, workdir, cfg, [model]) as process,
    ):
        proxy.hang_s = 3 * cfg.registry_timeout_s
        ready_with(process, model, expected, 240)
        pinned = f"{process.base_url}/models/{model}/aliases/production/invocations"
        tags_set, tags_refused = 0, 0
        with load.ClosedLoop([pinned], one_row_body(), timeout_s=10) as loop:
            proxy.hostile_share = cfg.hostile_share
            started = time.monotonic()
            while tags_set < cfg.hostile_tags or proxy.hostile_answers() < cfg.hostile_answers:
                value = HOSTILE_TAGS[(tags_set + tags_refused) % len(HOSTILE_TAGS)]
                try:
                    client.set_registered_model_tag(model, TAG, value)
                    tags_set += 1
                except Exception:  # MLflow itself refuses some values
                    tags_refused += 1
                time.sleep(0.02)
                if time.monotonic() - started > 600:
                    break
            storm_s = time.monotonic() - started
            proxy.hostile_share = 0.0
            client.delete_registered_model_tag(model, TAG)
            time.sleep(proxy.hang_s)  # a hanging answer already given ends first
            alive = process.process.poll() is None
            status = get_json(process, "/models")["models"].get(model)
            moved = time.monotonic()
            client.set_registered_model_alias(model, "production", moved_to)
            first_new = loop.first(moved_to, after=moved, timeout_s=60)
        run.parts["hostile-registry"] = {
            "tags_set": tags_set,
            "tags_refused_by_mlflow": tags_refused,
            "made_up_answers": dict(proxy.made_up),
            "forwarded": proxy.forwarded,
            "storm_s": storm_s,
            "alive_after": alive,
            "status_after": status,
            "production_failed_during": sum(1 for s in loop.samples if s.status != 200),
            "production_requests": len(loop.samples),
            "moved_to": moved_to,
            "resumed_s": first_new.end - moved if first_new else None,
            "load_s": load_seconds(process, model, moved_to),
            "poll_interval_s": cfg.poll_interval_s,
        }


# -- 3. downloads cut off ------------------------------------------------------------------------


def downloads(run: Run, registry: Registry, client: Any, workdir: Path) -> None:
    from training.faults import register_fault_model

    cfg = run.config
    rng = random.Random(cfg.seed)
    model = "resilience-download"
    version = register_fault_model(model, client, alias="production").version
    state = {"state_dir": str(workdir / "state-downloads"), "aliases": "production"}
    body = one_row_body()
    rounds = []
    with RegistryProxy(registry.uri, cfg.seed) as proxy:
        proxy.artifact_delay_s = cfg.artifact_delay_s
        with serving("download-clean", proxy.uri, workdir, cfg, [model], **state) as process:
            clean_s = ready_with(process, model, {"production": version}, 240)
            reference = answer(process, model, body)
        files = proxy.artifact_downloads
        for i in range(cfg.kills):
            version = copy_version(client, model, version).version
            client.set_registered_model_alias(model, "production", version)
            before = proxy.artifact_downloads
            at_file = rng.randint(1, max(1, files))
            delay = rng.uniform(0, cfg.artifact_delay_s)
            with serving(f"download-killed-{i}", proxy.uri, workdir, cfg, [model], **state) as p:
                target = before + at_file
                reached = wait_for(lambda: proxy.artifact_downloads >= target, 240)  # noqa: B023
                time.sleep(delay)
                os.killpg(p.pid, signal.SIGKILL)
                p.process.wait()
            with serving(f"download-next-{i}", proxy.uri, workdir, cfg, [model], **state) as p:
                try:
                    ready_s: float | None = ready_with(p, model, {"production": version}, 240)
                    got = answer(p, model, body)
                except Exception as exc:
                    ready_s, got = None, {"error": str(exc)[-300:]}
            rounds.append(
                {
                    "version": version,
                    "killed_after_file": at_file if reached else None,
                    "killed_delay_s": delay,
                    "next_ready_s": ready_s,
                    "next_answer": got,
                    "complete": ready_s is not None
                    and got.get("version") == version
                    and got.get("predictions") == reference.get("predictions"),
                }
            )
    run.parts["downloads"] = {
        "artifact_files_per_version": files,
        "artifact_delay_s": cfg.artifact_delay_s,
        "clean_start_s": clean_s,
        "reference": reference,
        "rounds": rounds,
    }


def answer(process: Process, model: str, body: bytes) -> dict[str, Any]:
    """Status, version and predictions of one pinned production request."""
    response = requests.post(
        f"{process.base_url}/models/{model}/aliases/production/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    return {
        "status": response.status_code,
        "version": response.headers.get("X-Model-Version"),
        "predictions": response.json().get("predictions") if response.ok else None,
    }


# -- 4. hostile gate candidates ------------------------------------------------------------------


def register_candidate(name: str, client: Any, alias: str, on_load: str) -> str:
    """Log and register a version of `name` whose load_context does `on_load`; its number."""
    import mlflow
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    from registry import contract, runs, versions
    from training.datasets import load_split

    features = load_split("breast-cancer").features
    run_id = runs.start(
        client, "modelyard", f"candidate-{name}", params={"on_load": on_load}
    ).run_id

    def save(path: Path, metadata: Model) -> None:
        mlflow.pyfunc.save_model(
            path,
            python_model=str(ROOT / "bench" / "hostile_candidate.py"),
            model_config={"on_load": on_load},
            signature=ModelSignature(
                inputs=Schema([ColSpec("double", f) for f in features]),
                outputs=contract.output_schema("classification"),
            ),
            pip_requirements=["mlflow", "pandas", "numpy"],
            mlflow_model=metadata,
        )

    model_id = runs.log_model(client, run_id, save)
    runs.finish(client, run_id, succeeded=True)
    ref = versions.register(client, f"models:/{model_id}", name, run_id=run_id, model_id=model_id)
    return versions.set_alias(client, ref, alias).version


def gate(run: Run, registry: Registry, client: Any, workdir: Path) -> None:
    from training.datasets import load_split
    from training.faults import register_fault_model

    cfg = run.config
    data = workdir / "holdout.csv"
    load_split("breast-cancer").holdout_frame().to_csv(data, index=False)
    results: dict[str, list[dict[str, Any]]] = {}
    for on_load in GATE_CANDIDATES:
        name = f"resilience-gate-{on_load.replace('.', '-').strip('_')}"
        register_fault_model(name, client, alias="production")
        register_candidate(name, client, "staging", on_load)
        policy = workdir / f"gate-{name}.yaml"
        policy.write_text(POLICY.format(model=name))
        results[on_load] = [
            run_gate(name, policy, data, workdir / f"reports-{name}-{i}", registry.uri, cfg)
            for i in range(cfg.gate_repeats)
        ]
    run.parts["gate"] = {"runs": results}


def run_gate(
    name: str, policy: Path, data: Path, reports: Path, uri: str, cfg: Config
) -> dict[str, Any]:
    """`modelyard gate` in a fresh process: its exit code (None on timeout), time, stderr tail."""
    command = [sys.executable, "-m", "modelyard", "gate", name, "--candidate", "staging"]
    command += ["--baseline", "production", "--policy", str(policy), "--data", str(data)]
    command += ["--report-dir", str(reports), "--score-timeout", f"{cfg.score_timeout_s:g}"]
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=base_env(uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=cfg.gate_timeout_s)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        code = None
    return {
        "exit_code": code,
        "seconds": time.monotonic() - started,
        "stdout_tail": out[-300:],
        "stderr_tail": err[-500:],
    }


# -- goals ---------------------------------------------------------------------------------------


def _resume_goal(id_: str, text: str, part: Mapping[str, Any]) -> Goal:
    resumed, load_s, poll = part.get("resumed_s"), part.get("load_s"), part["poll_interval_s"]
    allowance = poll + (load_s or 0.0)
    return Goal(
        id_,
        text,
        f"{fmt(resumed, ' s')} (load {fmt(load_s, ' s')})",
        f"<= poll {poll:g} s + load",
        resumed is not None and load_s is not None and resumed <= allowance,
    )


def outage_goals(part: Mapping[str, Any]) -> list[Goal]:
    normal = statistics.median(part["normal_start_s"])
    started = part.get("outage_start_s")
    found = [
        Goal(
            "outage-start",
            "start with the registry down, from MODELYARD_STATE_DIR",
            f"{fmt(started, ' s')} vs normal {normal:.2f} s",
            f"<= {START_RATIO:g}x normal",
            started is not None and started <= START_RATIO * normal,
        )
    ]
    if started is None:
        return found
    other = part["other_versions_during_outage"]
    return [
        *found,
        Goal(
            "outage-versions",
            "answers during the outage from the versions served before",
            f"{other} from others, {part['failed_during_outage']} failed of "
            f"{part['answers_during_outage']}",
            "0 from others",
            other == 0 and part["answers_during_outage"] > 0,
        ),
        Goal(
            "outage-stale",
            "flagged stale in /health/ready or /models",
            "yes" if stale_flagged(part) else "no",
            "yes",
            stale_flagged(part),
        ),
        _resume_goal("outage-resume", "registry back, alias moved -> new version answers", part),
    ]


def hostile_registry_goals(part: Mapping[str, Any]) -> list[Goal]:
    made_up = sum(part["made_up_answers"].values())
    return [
        Goal(
            "hostile-survived",
            f"{part['tags_set']} hostile tag values and {made_up} made-up registry answers",
            f"alive: {'yes' if part['alive_after'] else 'no'}; production failed "
            f"{part['production_failed_during']} of {part['production_requests']}",
            "alive; 0 failed",
            part["alive_after"] and part["production_failed_during"] == 0,
        ),
        _resume_goal("hostile-resume", "after them, alias moved -> new version answers", part),
    ]


def download_goal(part: Mapping[str, Any]) -> Goal:
    rounds = part["rounds"]
    complete = sum(1 for r in rounds if r["complete"])
    return Goal(
        "downloads",
        f"SIGKILL at a random point of a download, {len(rounds)}x: next start serves it whole",
        f"{complete} of {len(rounds)} ({part['artifact_files_per_version']} files a version)",
        "all",
        complete == len(rounds) and bool(rounds),
    )


def gate_goals(part: Mapping[str, Any]) -> list[Goal]:
    found = []
    for kind, runs in part["runs"].items():
        codes = [r["exit_code"] for r in runs]
        found.append(
            Goal(
                f"gate-{kind}",
                f"`modelyard gate` on a candidate whose load_context does {kind}",
                f"exit codes {codes} ({max(r['seconds'] for r in runs):.0f} s at most)",
                "2 every time",
                all(code == 2 for code in codes),
            )
        )
    return found


def goals(config: Mapping[str, Any], parts: Mapping[str, Any]) -> list[Goal]:
    """The resilience benchmark's goals, from its recorded parts."""
    found: list[Goal] = []
    if "outage" in parts:
        found += outage_goals(parts["outage"])
    if "hostile-registry" in parts:
        found += hostile_registry_goals(parts["hostile-registry"])
    if "downloads" in parts:
        found.append(download_goal(parts["downloads"]))
    if "gate" in parts:
        found += gate_goals(parts["gate"])
    return found


# -- the run -------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[Run, Registry, Any, Path], None]] = {
    "outage": outage,
    "hostile-registry": hostile_registry,
    "downloads": downloads,
    "gate": gate,
}


def execute(run: Run, workdir: Path) -> None:
    from registry.client import connect

    with ExitStack() as stack:
        registry = Registry(workdir, stack)
        client = connect(registry.uri)
        for part in run.config.parts:
            log.info("%s", part)
            with redirect_stdout(io.StringIO()):  # MLflow prints a link per run it logs
                RUNNERS[part](run, registry, client, workdir)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = options.parse_args(
        argv, (__doc__ or "").split("\n")[0], Config(), QUICK, RESULTS, PARTS
    )
    if args.show:
        return options.show(args.show, goals)
    options.quiet_logs()
    return options.run_parts("resilience", Run(cfg), args, execute, goals)


if __name__ == "__main__":
    sys.exit(main())
