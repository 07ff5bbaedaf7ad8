"""Serving benchmark: modelyard against `mlflow models serve` and a hand-written FastAPI app,
with batching and the Open Inference Protocol, in one interleaved run.

    .venv/bin/python -m bench.serving          # full run (~25 min) -> bench/results/serving.json
    .venv/bin/python -m bench.serving --model cancer-torch --repeats 3
    .venv/bin/python -m bench.serving --quick  # smoke run (1 x 2 s), JSON in a temp file
    .venv/bin/python -m bench.serving --workers 2   # multi-worker latency check only
    .venv/bin/python -m bench.serving --show bench/results/serving.json

It starts its own registry (moto's S3 server and `mlflow server` on SQLite in a temporary
directory), trains and registers three models (the demo classifier behind the output contract,
a bare scikit-learn logistic regression on 20 features, and the demo classifier's PyTorch
version) and, one model after the other, serves the same version by each server: every server
one worker pinned to core 0; wrk, pinned to core 1, posts a fixed body (1 row or 100 rows) at
1, 8 and 32 connections. For the demo classifier modelyard is loaded on its pinned path, on
`/invocations` and on `/v2/models/{name}/infer` (the same rows as one FP64 tensor per column);
the hand-written app also answers a constant on `/hello`, FastAPI's own ceiling on the
machine. The PyTorch version is served by modelyard batched (the default, MODELYARD_BATCHING
auto) and unbatched (off), at 1 and 64 connections. The logistic regression, context only,
gets fewer repetitions.

Runs are interleaved (repetition -> (concurrency, body) -> server, the server order rotating
per repetition) so that background load on the machine spreads over every server alike; the
servers not being measured are paused (SIGSTOP), so that an idle one's timers and registry
polls do not run on the measured server's core. Each run records, beside wrk's numbers, where
the two cores' time went (bench/cores.py) and, for modelyard, its own latency histogram: the
evidence for telling a server's tail from its neighbours'. Any non-2xx answer or socket error
aborts the run.

The wrk runs and readiness timings are the raw results; bench/analysis.py computes medians,
ratios and goals from them, bench/report.py prints them, and both go into the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import analysis, load, report
from bench.analysis import (
    DEMO,
    HANDWRITTEN,
    HELLO,
    LOGISTIC,
    MLFLOW,
    MODELYARD,
    MODELYARD_DEFAULT,
    MODELYARD_UNBATCHED,
    MODELYARD_V2,
    PLAIN_LOAD,
    TORCH,
)
from bench.cores import CoreTimes, attribution
from bench.processes import BIN, ROOT, Process, base_env, http_status, registry, spawn
from bench.processes import start_serving as start_modelyard_serve
from modelyard.processes import free_port

RESULTS = ROOT / "bench" / "results" / "serving.json"
SERVER_CORE, LOAD_CORE = "0", "1"
MODELS = (DEMO, LOGISTIC, TORCH)
"""The demo classifier (contract pyfunc over a scaled logistic regression, 30 features), a
bare scikit-learn LogisticRegression on 20 synthetic features (the sklearn flavour), and the
demo classifier's PyTorch version behind the same contract."""
ALIAS = "production"
CONCURRENCIES = (1, 8, 32)
TORCH_CONCURRENCIES = (1, 64)
READY_PATHS = {MLFLOW: "/ping", HANDWRITTEN: "/health", MODELYARD: "/health/ready"}


# -- the registry and the model -----------------------------------------------------------------


def train_model(tracking_uri: str, model: str) -> str:
    """Train and register `model` (one of MODELS) with alias `production`; its version."""
    import logging

    import mlflow
    import numpy as np

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    if model in (DEMO, TORCH):
        from registry.client import connect
        from training.run import TrainSpec, train

        spec = TrainSpec("sklearn" if model == DEMO else "torch", model_name=model, alias=ALIAS)
        return train(spec, connect(tracking_uri)).version
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    features = logistic_features()
    weights = np.random.default_rng(1).standard_normal(features.shape[1])
    labels = (features.to_numpy() @ weights > 0).astype("int64")
    estimator = LogisticRegression().fit(features, labels)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=infer_signature(features, estimator.predict(features)),
            input_example=features.head(2),
            registered_model_name=model,
        )
    version_ = str(info.registered_model_version)
    mlflow.MlflowClient(tracking_uri).set_registered_model_alias(model, ALIAS, version_)
    return version_


def logistic_features() -> Any:
    """1,000 rows of 20 seeded standard-normal features, x0 ... x19."""
    import numpy as np
    import pandas as pd

    values = np.random.default_rng(0).standard_normal((1000, 20))
    return pd.DataFrame(values, columns=[f"x{i}" for i in range(20)])


def body_rows(model: str) -> Any:
    """The rows the bodies hold: breast-cancer holdout or synthetic rows."""
    if model in (DEMO, TORCH):
        from training.datasets import load_split

        return load_split("breast-cancer").x_holdout
    return logistic_features().tail(100)


def bodies(model: str, sizes: Sequence[int] = analysis.BODY_ROWS) -> dict[int, bytes]:
    """`dataframe_split` bodies of 1 and 100 rows."""
    rows = body_rows(model)
    return {
        n: json.dumps(
            {
                "dataframe_split": {
                    "columns": list(rows.columns),
                    "data": rows.head(n).values.tolist(),
                }
            }
        ).encode()
        for n in sizes
    }


def v2_bodies(model: str, sizes: Sequence[int] = analysis.BODY_ROWS) -> dict[int, bytes]:
    """The same rows as `bodies`, as Open Inference Protocol requests: one FP64 tensor per
    column."""
    rows = body_rows(model)
    return {
        n: json.dumps(
            {
                "inputs": [
                    {"name": column, "datatype": "FP64", "shape": [n], "data": values}
                    for column, values in rows.head(n).to_dict(orient="list").items()
                ]
            }
        ).encode()
        for n in sizes
    }


# -- the servers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    """What a target is loaded with for one body size: the bytes and their wrk script."""

    payload: bytes
    script: Path


@dataclass(frozen=True)
class Target:
    """One URL to load: a server name, its process, the path posted to and its bodies."""

    name: str
    process: Process
    path: str
    bodies: dict[int, Body]
    """By rows; a target is loaded only with these."""

    @property
    def url(self) -> str:
        return self.process.base_url + self.path

    @property
    def v2(self) -> bool:
        """Whether it speaks the Open Inference Protocol (else MLflow's scoring protocol)."""
        return self.path.startswith("/v2/")


def written_bodies(payloads: dict[int, bytes], workdir: Path, name: str) -> dict[int, Body]:
    """`payloads` with a wrk script each, written under `workdir`."""
    return {
        rows: Body(payload, load.post_script(payload, workdir / f"post-{name}-{rows}.lua"))
        for rows, payload in payloads.items()
    }


def start_mlflow_serve(model_uri: str, env: dict[str, str], workdir: Path) -> Process:
    port = free_port()
    command = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    return spawn(MLFLOW, command, env, workdir, port, SERVER_CORE)


def start_handwritten(
    model_uri: str, env: dict[str, str], workdir: Path, workers: int = 1, loop: str = "uvloop"
) -> Process:
    port = free_port()
    command = [
        str(BIN / "uvicorn"),
        "bench.handwritten_app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        loop,
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    env = env | {"BENCH_MODEL_URI": model_uri}
    return spawn(HANDWRITTEN, command, env, workdir, port, SERVER_CORE)


def start_modelyard(
    env: dict[str, str],
    workdir: Path,
    model: str,
    workers: int = 1,
    settings: dict[str, str] | None = None,
    name: str = MODELYARD,
) -> Process:
    every = env | {"MODELYARD_MODELS": model, "MODELYARD_ALIASES": ALIAS} | (settings or {})
    tracking_uri = env["MLFLOW_TRACKING_URI"]
    return start_modelyard_serve(name, tracking_uri, workdir, every, SERVER_CORE, workers)


def check_answers(targets: Sequence[Target]) -> None:
    """Every target answers each of its bodies 200 with the same predictions, or the run stops."""
    import requests

    for rows in sorted({rows for target in targets for rows in target.bodies}):
        answers = {}
        for target in (t for t in targets if rows in t.bodies):
            response = requests.post(
                target.url,
                data=target.bodies[rows].payload,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            if response.status_code != 200:
                raise SystemExit(
                    f"error: {target.name} answered {response.status_code} to the {rows}-row "
                    f"body: {response.text[:300]}"
                )
            document = response.json()
            answers[target.name] = v2_records(document) if target.v2 else document["predictions"]
        first_name, first = next(iter(answers.items()))
        for name, predictions in answers.items():
            if not agree(predictions, first, rows):
                raise SystemExit(
                    f"error: {name} and {first_name} disagree on the {rows}-row body: "
                    f"{predictions[:2]} vs {first[:2]}"
                )


def v2_records(document: dict[str, Any]) -> list[dict[str, Any]]:
    """An Open Inference Protocol answer's output tensors as one record per row."""
    columns = {output["name"]: output["data"] for output in document["outputs"]}
    rows = len(next(iter(columns.values()), []))
    return [{name: data[i] for name, data in columns.items()} for i in range(rows)]


def agree(predictions: list[Any], reference: list[Any], rows: int) -> bool:
    """Both answers have `rows` predictions of equal values (floats to 1e-9)."""
    import numpy as np
    import pandas as pd

    if not len(predictions) == len(reference) == rows:
        return False
    mine, theirs = pd.DataFrame(predictions), pd.DataFrame(reference)
    return mine.columns.equals(theirs.columns) and bool(
        np.allclose(mine.to_numpy(float), theirs.to_numpy(float), rtol=0, atol=1e-9)
    )


def checked(result: load.WrkResult, target: Target) -> load.WrkResult:
    """`result`, or exit loudly when the server answered anything but 2xx or dropped sockets."""
    if result.errors:
        raise SystemExit(
            f"error: {target.name} ({target.url}) had {result.non_2xx} non-2xx responses and "
            f"socket errors {result.socket_errors}\n{result.output}\n{target.process.tail()}"
        )
    return result


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class Matrix:
    """Interleaved wrk runs over targets x concurrencies x bodies x repetitions; the servers
    not being measured are paused."""

    targets: list[Target]
    concurrencies: Sequence[int]
    repeats: int
    duration_s: int
    warmup_s: int
    runs: list[dict[str, Any]] = field(default_factory=list)

    def wrk(self, target: Target, rows: int, connections: int, duration_s: int) -> load.WrkResult:
        self.measuring(target)
        script = target.bodies[rows].script
        result = load.run_wrk(target.url, script, connections, duration_s, core=LOAD_CORE)
        return checked(result, target)

    def measuring(self, target: Target) -> None:
        """Resume `target`'s server, pause every other one."""
        for process in self.processes:
            if process is not target.process:
                process.pause()
        target.process.resume()

    @property
    def processes(self) -> list[Process]:
        return list({id(t.process): t.process for t in self.targets}.values())

    def run(self, say: Callable[[str], None]) -> None:
        try:
            self._run(say)
        finally:
            for process in self.processes:
                process.resume()

    def _run(self, say: Callable[[str], None]) -> None:
        sizes = sorted({rows for target in self.targets for rows in target.bodies})
        for rows in sizes:
            for target in self.targets:
                if rows in target.bodies:
                    self.wrk(target, rows, 8, self.warmup_s)
        combos = [(c, rows) for c in self.concurrencies for rows in sizes]
        cells = sum(rows in t.bodies for t in self.targets for _, rows in combos)
        total, n = self.repeats * cells, 0
        for rep in range(self.repeats):
            shift = rep % len(self.targets)
            order = self.targets[shift:] + self.targets[:shift]
            for connections, rows in combos:
                for target in (t for t in order if rows in t.bodies):
                    n += 1
                    record = self.measure(target, rows, connections)
                    self.runs.append(
                        {
                            "server": target.name,
                            "concurrency": connections,
                            "rows": rows,
                            "repetition": rep,
                            **record,
                        }
                    )
                    say(
                        f"  [{n:3d}/{total}] rep {rep + 1} c={connections:<2d} {rows:>3d}-row "
                        f"{target.name:<24s} {record['rps']:9.1f} req/s  "
                        f"p50 {record['p50_ms']:8.2f} ms  p99 {record['p99_ms']:8.2f} ms  "
                        f"cpu {record['cpu_us_per_request']:6.0f} us/req "
                        f"(core {record['server_core_share']:.0%}, others "
                        f"{record['cores']['server_core_others']:.0%}/"
                        f"{record['cores']['load_core_others']:.0%})"
                    )

    def measure(self, target: Target, rows: int, connections: int) -> dict[str, Any]:
        """One recorded wrk run: wrk's numbers, the server's CPU, where both cores' time went,
        and for modelyard its own latency histogram over the run."""
        self.measuring(target)
        loadavg = os.getloadavg()[0]
        own_before = server_latency(target.process)
        cpu_before, cores_before = target.process.cpu_s(), CoreTimes.now()
        began = time.monotonic()
        result = self.wrk(target, rows, connections, self.duration_s).numbers()
        elapsed = time.monotonic() - began
        cores_after, cpu = CoreTimes.now(), target.process.cpu_s() - cpu_before
        own_after = server_latency(target.process)
        result["loadavg_1m_before"] = loadavg
        result["server_cpu_s"] = cpu
        result["server_core_share"] = cpu / self.duration_s
        result["cpu_us_per_request"] = cpu / max(result["requests"], 1) * 1e6
        result["cores"] = attribution(
            cores_before, cores_after, elapsed, int(SERVER_CORE), cpu, int(LOAD_CORE)
        )
        if own_before is not None and own_after is not None:
            result["server_latency_counts"] = {
                le: own_after[le] - own_before.get(le, 0.0) for le in own_after
            }
        return result


def server_latency(process: Process) -> dict[str, float] | None:
    """modelyard's own request-duration histogram (cumulative counts by bucket bound, every
    model and alias summed), or None for a server without one."""
    import requests

    if not process.name.startswith(MODELYARD):
        return None
    text = requests.get(process.base_url + "/metrics", timeout=10).text
    counts: dict[str, float] = defaultdict(float)
    for found in re.finditer(
        r'^modelyard_request_duration_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$', text, re.M
    ):
        counts[found[1]] += float(found[2])
    return dict(counts)


def measure_readiness(ctx: Context, repeats: int) -> dict[str, Any]:
    """Process start to first 200 on the ready path, for each server, against a plain load.

    The plain load is a fresh `python -c "import mlflow; mlflow.pyfunc.load_model(URI)"`,
    timed to the moment load_model returns (and, for reference, to process exit). Everything
    is pinned to the server core and downloads the model afresh.
    """
    model_uri, env, workdir = ctx.model_uri, ctx.env, ctx.workdir
    plain_code = f"import mlflow; mlflow.pyfunc.load_model({model_uri!r})"
    timed_code = f"import time; {plain_code}; print(time.time())"
    starters = {
        MODELYARD: lambda: start_modelyard(env, workdir, ctx.model),
        MLFLOW: lambda: start_mlflow_serve(model_uri, env, workdir),
        HANDWRITTEN: lambda: start_handwritten(model_uri, env, workdir),
    }
    times: dict[str, list[float]] = defaultdict(list)
    for rep in range(repeats):
        began, began_wall = time.monotonic(), time.time()
        done = subprocess.run(
            ["taskset", "-c", SERVER_CORE, sys.executable, "-c", timed_code],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"error: the plain load failed:\n{done.stderr[-2000:]}")
        times[PLAIN_LOAD].append(float(done.stdout.split()[-1]) - began_wall)
        times[f"{PLAIN_LOAD}, to process exit"].append(time.monotonic() - began)
        for name, start in starters.items():
            began = time.monotonic()
            process = start()
            try:
                process.wait_ready(READY_PATHS[name], poll_s=0.01)
                times[name].append(time.monotonic() - began)
            finally:
                process.stop()
        ctx.say(
            f"  [{rep + 1}/{repeats}] " + "  ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
        )
    return analysis.readiness(times, f"python -c {plain_code!r}")


def machine() -> dict[str, Any]:
    """The CPU, package versions, wrk and load average, for the record."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    packages = (
        "mlflow",
        "uvicorn",
        "fastapi",
        "starlette",
        "uvloop",
        "httptools",
        "pandas",
        "numpy",
        "scikit-learn",
        "orjson",
    )
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in packages},
        "wrk": wrk_version.split("Copyright")[0].strip(),
        "loadavg_at_start": os.getloadavg(),
        "pinning": {
            "servers": f"taskset -c {SERVER_CORE}",
            "wrk": f"taskset -c {LOAD_CORE}",
            "registry": f"taskset -c {LOAD_CORE}",
        },
    }


def write_results(path: Path, update: dict[str, Any]) -> None:
    """Merge `update` into the JSON at `path` (the other mode's section is kept)."""
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError:
            existing = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing | update, indent=1) + "\n")


# -- modes ---------------------------------------------------------------------------------------


def predict_mode_of(process: Process, model: str) -> Any:
    """How modelyard calls the model (inline or in a thread, warm-up time, batching or not and
    why, batch sizes so far), from /models."""
    import requests

    served = requests.get(process.base_url + "/models", timeout=10).json()["models"][model]
    return served["aliases"][ALIAS].get("predict")


def show_model(section: dict[str, Any], say: Callable[[str], None]) -> None:
    """Print one model's medians, ratios, readiness and goals."""
    servers = list(section["config"]["targets"])
    say("\nmedians over repetitions")
    say(report.medians_table(section["medians"], servers))
    if section["ratios"]:
        say("\nmodelyard / reference (medians)")
        say(report.ratio_table(section["ratios"]))
    ready = section["readiness"]
    if ready:
        say(
            "\nstart to ready, median s: "
            + ", ".join(f"{k} {v:.2f}" for k, v in ready["median_s"].items())
            + f"; modelyard / plain load = {ready['ratio']:.2f}x"
        )
    if section["goals"]:
        say("\nper-cell goals")
        say(report.ratio_goal_lines(section["goals"]))


def start_targets(ctx: Context, stack: ExitStack) -> list[Target]:
    """The model's servers, started and ready, as the targets loaded in its matrix."""
    plain = written_bodies(bodies(ctx.model, ctx.rows), ctx.workdir, ctx.model)
    if ctx.model == TORCH:
        starters = {
            MODELYARD: lambda: start_modelyard(ctx.env, ctx.workdir, ctx.model),
            MODELYARD_UNBATCHED: lambda: start_modelyard(
                ctx.env,
                ctx.workdir,
                ctx.model,
                settings={"MODELYARD_BATCHING": "off"},
                name=MODELYARD_UNBATCHED,
            ),
        }
    else:
        starters = {
            MLFLOW: lambda: start_mlflow_serve(ctx.model_uri, ctx.env, ctx.workdir),
            HANDWRITTEN: lambda: start_handwritten(ctx.model_uri, ctx.env, ctx.workdir),
            MODELYARD: lambda: start_modelyard(ctx.env, ctx.workdir, ctx.model),
        }
    processes = {}
    for name, start in starters.items():
        processes[name] = start()
        stack.callback(processes[name].stop)
    for name, process in processes.items():
        process.wait_ready(READY_PATHS[MODELYARD if name.startswith(MODELYARD) else name])
    if ctx.model == TORCH:
        return [Target(name, process, ctx.alias_path, plain) for name, process in processes.items()]
    targets = [
        Target(MLFLOW, processes[MLFLOW], "/invocations", plain),
        Target(HANDWRITTEN, processes[HANDWRITTEN], "/invocations", plain),
        Target(MODELYARD, processes[MODELYARD], ctx.alias_path, plain),
        Target(MODELYARD_DEFAULT, processes[MODELYARD], "/invocations", plain),
    ]
    if ctx.model == DEMO:
        v2 = written_bodies(v2_bodies(ctx.model, ctx.rows), ctx.workdir, f"{ctx.model}-v2")
        path = f"/v2/models/{ctx.model}/infer"
        targets.append(Target(MODELYARD_V2, processes[MODELYARD], path, v2))
    return targets


def main_benchmark(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """Readiness, then the interleaved load matrix, for one model; prints and returns results."""
    say = ctx.say
    say(f"\n== {ctx.model} ({ctx.model_uri})")
    conditions = machine()
    ready = None
    if ctx.ready_repeats:
        say(f"readiness: start to first 200, {ctx.ready_repeats}x each (pinned to core 0)")
        ready = measure_readiness(ctx, ctx.ready_repeats)
    with ExitStack() as stack:
        targets = start_targets(ctx, stack)
        check_answers(targets)
        if ctx.model != TORCH:
            hello = {1: next(t for t in targets if t.name == HANDWRITTEN).bodies[1]}
            targets.append(Target(HELLO, targets[1].process, "/hello", hello))
        own = {t.process.name: t.process for t in targets if t.name.startswith(MODELYARD)}
        modes = {name: predict_mode_of(process, ctx.model) for name, process in own.items()}
        say(f"modelyard's predict modes after warm-up: {modes}")
        matrix = Matrix(targets, ctx.concurrencies, ctx.repeats, args.duration, args.warmup)
        say(
            f"load: {len(targets)} targets x {len(ctx.concurrencies)} concurrencies x "
            f"{len(ctx.rows)} bodies x {ctx.repeats} repetitions x {args.duration} s (hello "
            "only with the 1-row body)"
        )
        matrix.run(say)
        after = {name: predict_mode_of(process, ctx.model) for name, process in own.items()}
    figures = analysis.throughput(matrix.runs, ready)
    section = {
        "config": {
            "repeats": ctx.repeats,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrencies": list(ctx.concurrencies),
            "bodies": {
                t.name: {f"{rows}-row": len(body.payload) for rows, body in t.bodies.items()}
                for t in targets
            },
            "model": ctx.model_uri,
            "wrk": "wrk -t1 -cN -dD --latency --timeout 10s",
            "targets": {t.name: {"path": t.path, "command": t.process.argv} for t in targets},
            "order": "repetition -> (concurrency, body) -> server, rotating per repetition",
            "idle_servers": "paused (SIGSTOP) while another server is measured",
            "quick": args.quick,
        },
        "modelyard_predict_mode": modes,
        "modelyard_predict_mode_after_runs": after,
        "runs": matrix.runs,
        "medians": figures["medians"],
        "ratios": figures["ratios"],
        "readiness": ready,
        "goals": figures["goals"],
        "goals_met": figures["goals_met"],
        "machine": conditions | {"loadavg_at_end": os.getloadavg()},
    }
    show_model(section, say)
    return section


def hide_uvloop(workdir: Path) -> str:
    """A directory whose `uvloop` fails to import: uvicorn's loop "auto" then picks asyncio."""
    shim = workdir / "no-uvloop" / "uvloop"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text('raise ImportError("hidden by the benchmark")\n')
    return str(shim.parent)


def multi_worker(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    """modelyard with N workers on keep-alive connections, against stock uvicorn as the control.

    uvloop sets TCP_NODELAY on every accepted connection; asyncio's loop does not when uvicorn
    hands its workers a shared socket, which is where serving/cli.py's fix matters. So each is
    run under both loops (uvloop hidden from the process for the asyncio runs).
    """
    say = ctx.say
    n = args.workers
    say(
        f"multi-worker check: modelyard --workers {n} (uvloop, and asyncio with uvloop hidden), "
        f"--workers 1, and the hand-written app under stock `uvicorn --workers {n}` "
        f"(asyncio, uvloop); all on core 0; 1-row body, c=1 and c=8 keep-alive"
    )
    path = ctx.alias_path
    one_row = written_bodies(bodies(ctx.model, (1,)), ctx.workdir, f"{ctx.model}-workers")
    asyncio_env = ctx.env | {"PYTHONPATH": hide_uvloop(ctx.workdir)}
    starters: dict[str, Callable[[], Process]] = {
        f"modelyard --workers {n}": lambda: start_modelyard(
            ctx.env, ctx.workdir, ctx.model, workers=n
        ),
        f"modelyard --workers {n}, asyncio loop": lambda: start_modelyard(
            asyncio_env, ctx.workdir, ctx.model, workers=n
        ),
        "modelyard --workers 1": lambda: start_modelyard(ctx.env, ctx.workdir, ctx.model),
        f"uvicorn --workers {n} --loop asyncio (hand-written)": lambda: start_handwritten(
            ctx.model_uri, ctx.env, ctx.workdir, workers=n, loop="asyncio"
        ),
        f"uvicorn --workers {n} --loop uvloop (hand-written)": lambda: start_handwritten(
            ctx.model_uri, ctx.env, ctx.workdir, workers=n
        ),
    }
    with ExitStack() as stack:
        processes = {}
        for name, start in starters.items():
            processes[name] = start()
            stack.callback(processes[name].stop)
            processes[name].name = name
        targets = []
        for name, process in processes.items():
            modelyard = name.startswith(MODELYARD)
            ready = "/health/ready" if modelyard else "/health"
            process.wait_ready(ready)
            wait_every_worker(process, ready)
            route = path if modelyard else "/invocations"
            targets.append(Target(name, process, route, one_row))
        check_answers(targets)
        matrix = Matrix(targets, (1, 8), args.repeats, args.duration, args.warmup)
        matrix.run(say)
    medians = analysis.with_stalls(analysis.medians(matrix.runs))
    say("\nmedians over repetitions")
    say(report.medians_table(medians, [t.name for t in targets]))
    stalls = [m for m in medians if m["delayed_ack_stall"]]
    say(
        f"\ndelayed-ACK stalls (p50 >= {analysis.STALL_MS:g} ms): "
        + ", ".join(f"{m['server']} c={m['concurrency']}" for m in stalls)
        if stalls
        else f"\nno delayed-ACK stall: every p50 < {analysis.STALL_MS:g} ms"
    )
    mine = [m for m in medians if m["server"].startswith(f"modelyard --workers {n}")]
    return {
        "multi_worker": {
            "workers": n,
            "concurrencies": [1, 8],
            "rows": 1,
            "repeats": args.repeats,
            "duration_s": args.duration,
            "loadavg_at_start": os.getloadavg(),
            "runs": matrix.runs,
            "medians": medians,
            "modelyard_p50_ms": {f"{m['server']}, c={m['concurrency']}": m["p50_ms"] for m in mine},
            "modelyard_stall": any(m["delayed_ack_stall"] for m in mine),
            "note": "all workers pinned to core 0; a keep-alive p50 near 40 ms means responses "
            "waiting for the client's delayed ACK (no TCP_NODELAY on the accepted socket)",
        }
    }


def wait_every_worker(process: Process, path: str, in_a_row: int = 40) -> None:
    """Each worker loads on its own: wait until `in_a_row` fresh connections all get 200."""
    deadline, streak = time.monotonic() + 180, 0
    while streak < in_a_row:
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {process.name} not ready on every worker\n{process.tail()}")
        streak = streak + 1 if http_status(process.base_url + path) == 200 else 0
        time.sleep(0.05)


@dataclass
class Context:
    """What every mode shares: the registry, the model version, and what its matrix runs."""

    workdir: Path
    model: str
    model_uri: str
    env: dict[str, str]
    rows: tuple[int, ...]
    """The body sizes the model is loaded with."""
    concurrencies: tuple[int, ...]
    repeats: int
    ready_repeats: int

    @property
    def alias_path(self) -> str:
        """modelyard's path for the model's production alias."""
        return f"/models/{self.model}/aliases/{ALIAS}/invocations"

    def say(self, text: str) -> None:
        print(text, flush=True)


def context(args: argparse.Namespace, workdir: Path, tracking_uri: str, model: str) -> Context:
    """Train and register `model`; what its part of the run loads it with."""
    print(f"training and registering {model}", flush=True)
    model_uri = f"models:/{model}/{train_model(tracking_uri, model)}"
    env = base_env(tracking_uri)
    if model == LOGISTIC:  # the sklearn flavour loads through skops
        env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    plan: tuple[tuple[int, ...], tuple[int, ...], int, int]
    if model == TORCH:
        plan = ((1,), tuple(args.torch_concurrency), args.repeats, 0)
    elif model == LOGISTIC:
        plan = (analysis.BODY_ROWS, tuple(args.concurrency), args.context_repeats, 0)
    else:
        plan = (analysis.BODY_ROWS, tuple(args.concurrency), args.repeats, args.ready_repeats)
    return Context(workdir, model, model_uri, env, *plan)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--repeats", type=int, default=4, help="repetitions of the demo classifier's runs"
    )
    parser.add_argument(
        "--context-repeats",
        type=int,
        default=3,
        help="repetitions of the logistic regression's runs (context, no goal of its own)",
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCIES))
    parser.add_argument(
        "--torch-concurrency", type=int, nargs="+", default=list(TORCH_CONCURRENCIES)
    )
    parser.add_argument(
        "--ready-repeats",
        type=int,
        default=3,
        help="start-to-ready measurements per server, demo classifier only (0 skips them)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 repetition of 2 s, JSON to a temporary file",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="N > 1: only the multi-worker latency check with N workers",
    )
    parser.add_argument(
        "--model",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        help="models to benchmark, one after the other (multi-worker mode: the first)",
    )
    parser.add_argument("--output", type=Path, default=None, help=f"default {RESULTS}")
    parser.add_argument(
        "--show", type=Path, metavar="FILE", help="print a results file's tables and goals"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.context_repeats = 1, 1
        args.duration, args.warmup, args.ready_repeats = 2, 1, 1
        if args.output is None:
            args.output = Path(tempfile.gettempdir()) / "modelyard-bench-quick.json"
    args.output = args.output or RESULTS
    return args


def show(path: Path) -> None:
    """Print the figures of a results file, recomputed from its raw runs."""
    results = json.loads(path.read_text())
    for model in MODELS:
        if model in results:
            section = results[model]
            figures = analysis.throughput(section["runs"], section["readiness"])
            print(f"== {model}")
            show_model(section | figures, print)
    if "multi_worker" in results:
        section = results["multi_worker"]
        medians = analysis.with_stalls(analysis.medians(section["runs"]))
        print(f"\n== multi-worker ({section['workers']} workers)")
        print(report.medians_table(medians, list(dict.fromkeys(m["server"] for m in medians))))
    show_summary(results, print)


def show_summary(results: dict[str, Any], say: Callable[[str], None]) -> None:
    """The tails' attribution and the run's goals, from every section's raw runs."""
    say(
        "\nc=32 tails: where the cores' time went (runs with a p99 over "
        f"{analysis.TAIL_MS:g} ms against the rest)"
    )
    say(json.dumps(analysis.tail_evidence(results), indent=1))
    say("\ngoals")
    goals = analysis.serving_goals(results)
    say(report.goal_table(goals))
    say(report.goal_summary(goals))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show:
        show(args.show)
        return 0
    load.require_wrk()
    info = machine()
    print(
        f"{info['cpu_model']}, {info['cpu_count']} cpus, python {info['python']}, mlflow "
        f"{info['versions']['mlflow']}, uvicorn {info['versions']['uvicorn']}; load average "
        f"{info['loadavg_at_start'][0]:.2f}",
        flush=True,
    )
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp:
        workdir = Path(tmp)
        print("starting the registry (moto S3 + mlflow server, core 1)", flush=True)
        with registry(workdir, LOAD_CORE) as tracking_uri:
            contexts = [context(args, workdir, tracking_uri, model) for model in args.model]
            if args.workers > 1:
                update = multi_worker(args, contexts[0])
            else:
                update = {ctx.model: main_benchmark(args, ctx) for ctx in contexts}
    given = sys.argv[1:] if argv is None else argv
    update["run"] = {"duration_s": round(time.monotonic() - began, 1), "argv": list(given)}
    write_results(args.output, update)
    results = json.loads(args.output.read_text())
    judged = {
        "goals": [asdict(goal) for goal in analysis.serving_goals(results)],
        "tail_evidence": analysis.tail_evidence(results),
    }
    write_results(args.output, judged)
    show_summary(results, print)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
