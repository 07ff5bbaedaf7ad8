"""Real processes for the benchmarks: moto's S3 server, `mlflow server`, `modelyard serve`.

Every process runs in its own session with its output in a log file under the work directory,
optionally pinned to a core, and is stopped by its own process group id.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "modelyard-bench"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
WEBHOOK_ENV = {
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=",
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    # The server caches its webhook list per worker (60 s by default): a webhook created
    # during the run would otherwise not fire for a minute.
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_status(url: str, timeout_s: float = 2) -> int | None:
    """The status `url` answers a GET with, or None when nothing answers."""
    try:
        return requests.get(url, timeout=timeout_s).status_code
    except requests.RequestException:
        return None


@dataclass
class Process:
    """A server process in its own session, its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    base_url: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_ready(self, path: str, timeout_s: float = 180, poll_s: float = 0.2) -> float:
        """Seconds until `path` answers 200; fail with the log's tail if the process dies."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.popen.poll() is not None:
                raise SystemExit(
                    f"error: {self.name} exited with {self.popen.returncode}\n{self.tail()}"
                )
            if http_status(self.base_url + path, timeout_s=1) == 200:
                return time.monotonic() - started
            time.sleep(poll_s)
        raise SystemExit(f"error: {self.name} not ready within {timeout_s} s\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(f"  | {line}" for line in text[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        if self.popen.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)

    def memory_kib(self) -> dict[str, int]:
        """VmRSS, VmHWM, RssAnon and RssFile of the process, in KiB, from /proc."""
        wanted = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
        found = {}
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
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
        found, frontier = [], [self.popen.pid]
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
    """Start `command` (pinned to `core` when given), output to a log under `workdir`."""
    log = workdir / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}-{port or 'x'}.log"
    argv = ["taskset", "-c", core, *command] if core is not None else list(command)
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(name, popen, log, f"http://127.0.0.1:{port}" if port else "")


def base_env(tracking_uri: str | None = None) -> dict[str, str]:
    """This venv first on PATH, no MODELYARD_* leaking in, no telemetry, the registry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELYARD_", "PROMETHEUS_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


@contextmanager
def registry(workdir: Path, core: str | None = None) -> Iterator[str]:
    """moto's S3 server and `mlflow server` (SQLite, artifacts proxied to S3); yields its URI."""
    with ExitStack() as stack:
        s3_port = free_port()
        s3 = spawn(
            "s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
            base_env(), workdir, s3_port, core,
        )  # fmt: skip
        stack.callback(s3.stop)
        s3.wait_ready("/moto-api/", timeout_s=60)
        import boto3

        boto3.client(
            "s3",
            endpoint_url=s3.base_url,
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=BUCKET)
        port = free_port()
        env = (
            base_env()
            | S3_ENV
            | WEBHOOK_ENV
            | {
                "MLFLOW_S3_ENDPOINT_URL": s3.base_url,
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job-runner processes
            }
        )
        command = [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
            "--artifacts-destination", f"s3://{BUCKET}/artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        server = spawn("mlflow server", command, env, workdir, port, core)
        stack.callback(server.stop)
        server.wait_ready("/health", timeout_s=120)
        yield server.base_url


def start_serving(
    name: str,
    tracking_uri: str,
    workdir: Path,
    settings: Mapping[str, str],
    core: str | None = None,
    workers: int = 1,
) -> Process:
    """`modelyard serve` on a free port with these MODELYARD_* settings."""
    port = free_port()
    command = [str(BIN / "modelyard"), "serve", "--port", str(port), "--workers", str(workers)]
    return spawn(name, command, base_env(tracking_uri) | dict(settings), workdir, port, core)
