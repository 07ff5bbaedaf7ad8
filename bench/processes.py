"""Real processes for the benchmarks: moto's S3 server, `mlflow server`, `modelyard serve`.

Each is a modelyard.processes.Child (own session, output in a log file under the work
directory, stopped by its process group), optionally pinned to a core, with what the
benchmarks read off it: readiness, memory and CPU from /proc, and its JSON log lines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import requests

from modelyard.processes import Child, TrackingServer, free_port, start_tracking_server

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "modelyard-bench"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
WEBHOOK_KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="
"""A fixed Fernet key for MLflow's webhook secrets: the benchmark's registry is throwaway."""


def http_status(url: str, timeout_s: float = 2) -> int | None:
    """The status `url` answers a GET with, or None when nothing answers."""
    try:
        return requests.get(url, timeout=timeout_s).status_code
    except requests.RequestException:
        return None


class Process(Child):
    """A benchmarked server: a Child with its base URL."""

    def __init__(
        self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str], base_url: str
    ) -> None:
        super().__init__(name, argv, log, env, inherit=False, cwd=ROOT)
        self.base_url = base_url

    def wait_ready(self, path: str, timeout_s: float = 180, poll_s: float = 0.2) -> float:
        """Seconds until `path` answers 200; fails with the log's tail if the process dies."""
        url = self.base_url + path
        return self.wait_until(lambda: http_status(url, timeout_s=1) == 200, timeout_s, poll_s)

    def stop(self, grace_s: float = 30) -> None:
        """SIGTERM the process group (resumed first, if paused), SIGKILL it if it lingers."""
        self.resume()
        super().stop(grace_s)

    def pause(self) -> None:
        """SIGSTOP the process group: an idle server takes no CPU (its polls, its timers)
        while another one is measured on the same core."""
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the process group."""
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGCONT)

    def memory_kib(self) -> dict[str, int]:
        """VmRSS, VmHWM, RssAnon and RssFile of the process, in KiB, from /proc."""
        wanted = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in wanted:
                found[key] = int(value.split()[0])
        return found

    def cpu_s(self) -> float:
        """User plus system CPU seconds this process and its live descendants have used."""
        ticks = 0
        for pid in self.tree_pids():
            with suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def tree_pids(self) -> list[int]:
        """This process and its descendants (uvicorn's workers among them)."""
        found, frontier = [], [self.pid]
        while frontier:
            pid = frontier.pop()
            found.append(pid)
            with suppress(OSError):
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
                frontier += [int(child) for child in children.split()]
        return found

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines the process wrote (other lines are skipped)."""
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with suppress(ValueError):
                    records.append(json.loads(line))
        return records


def spawn(
    name: str,
    command: Sequence[str],
    env: Mapping[str, str],
    workdir: Path,
    port: int | None = None,
    core: str | None = None,
) -> Process:
    """Start `command` with exactly `env` (pinned to `core` when given), its log in `workdir`."""
    log = workdir / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}-{port or 'x'}.log"
    argv = ["taskset", "-c", core, *command] if core is not None else list(command)
    return Process(name, argv, log, env, f"http://127.0.0.1:{port}" if port else "")


def base_env(tracking_uri: str | None = None) -> dict[str, str]:
    """This venv first on PATH, no MODELYARD_* leaking in, no telemetry, the registry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELYARD_", "PROMETHEUS_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def start_s3(workdir: Path, stack: ExitStack, core: str | None = None) -> str:
    """moto's S3 server holding the empty bucket BUCKET, stopped with `stack`; its URL."""
    import boto3

    port = free_port()
    command = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    s3 = spawn("s3", command, base_env(), workdir, port, core)
    stack.callback(s3.stop)
    s3.wait_ready("/moto-api/", timeout_s=60)
    boto3.client(
        "s3",
        endpoint_url=s3.base_url,
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket=BUCKET)
    return s3.base_url


def start_mlflow(
    workdir: Path,
    s3_url: str,
    port: int,
    env: Mapping[str, str] | None = None,
    core: str | None = None,
) -> TrackingServer:
    """`mlflow server` on `port`, SQLite in `workdir`, artifacts proxied to BUCKET at `s3_url`."""
    return start_tracking_server(
        backend_store_uri=f"sqlite:///{workdir / 'mlflow.db'}",
        artifacts_destination=f"s3://{BUCKET}/artifacts",
        s3=S3_ENV | {"MLFLOW_S3_ENDPOINT_URL": s3_url},
        webhook_key=WEBHOOK_KEY,
        host="127.0.0.1",
        port=port,
        log=workdir / "mlflow-server.log",
        timeout_s=120,
        env=env,
        cpu=core,
    )


@contextmanager
def registry(workdir: Path, core: str | None = None) -> Iterator[str]:
    """moto's S3 server and `mlflow server` (SQLite, artifacts proxied to S3); yields its URI."""
    with ExitStack() as stack:
        s3_url = start_s3(workdir, stack, core)
        # The server caches its webhook list per worker (60 s by default): a webhook created
        # during the run would otherwise not fire for a minute.
        server = start_mlflow(workdir, s3_url, free_port(), {"MLFLOW_WEBHOOK_CACHE_TTL": "1"}, core)
        stack.callback(server.child.stop, 30)
        yield server.uri


def start_serving(
    name: str,
    tracking_uri: str,
    workdir: Path,
    settings: Mapping[str, str],
    core: str | None = None,
    workers: int = 1,
) -> Process:
    """`modelyard serve` on a free port with these MODELYARD_* settings.

    Run as `python -m modelyard` from the repository root, so that it serves this working
    tree's packages whatever the virtualenv's installed entry points know of.
    """
    port = free_port()
    command = [sys.executable, "-m", "modelyard", "serve", "--port", str(port)]
    command += ["--workers", str(workers)]
    return spawn(name, command, base_env(tracking_uri) | dict(settings), workdir, port, core)
