"""Child processes of the embedded stack, the tests and the benchmarks, and `mlflow server`.

Every child runs in its own session with its output in a log file, gets SIGTERM when the
thread that started it dies, and is stopped by its process group. `start_tracking_server` is
the one place that knows how `mlflow server` is run here.
"""

import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

_PR_SET_PDEATHSIG = 1

MLFLOW_SERVER_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # MLflow's job runner (GenAI jobs, unused here) adds five processes and ~20 s to every stop.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    # The serving layer's webhook is plain http on a private address (loopback, a pod network).
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
}
"""How `mlflow server` runs here unless the caller's environment says otherwise."""


class StartupError(Exception):
    """A component could not start; the message says which and why."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (someone else may take it before you do)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def ensure_free(host: str, port: int, setting: str) -> None:
    """Fail with a message naming the setting when `host:port` is already taken."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(
                f"port {port} on {host} is already in use; free it or set {setting}"
            ) from exc


def answers_ok(url: str, timeout_s: float = 2) -> bool:
    """Whether a GET of `url` answers 200."""
    try:
        return requests.get(url, timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False


@functools.cache
def _prctl() -> Any:
    # Resolved in the parent: the forked child must not dlopen while other threads may hold
    # the loader's lock.
    return ctypes.CDLL("libc.so.6", use_errno=True).prctl


def stop_group(process: subprocess.Popen[Any], grace_s: float = 20) -> None:
    """SIGTERM the process's group; SIGKILL what is left after `grace_s`."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Child:
    """One long-running process, its output going to a log file.

    `env` is added to this process's environment, or with `inherit=False` is the whole of it.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str],
        *,
        inherit: bool = True,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        prctl = _prctl()
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env} if inherit else dict(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM),
            )

    @property
    def pid(self) -> int:
        """The process id, also its process group's id."""
        return self.process.pid

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, poll_s: float = 0.2) -> float:
        """Poll `ready` until it holds; return the seconds it took. Fails if the child exits."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise StartupError(
                    f"{self.name} exited with code {self.process.returncode}; "
                    f"last lines of {self.log}:\n{self.tail()}"
                )
            if ready():
                return time.monotonic() - started
            time.sleep(poll_s)
        raise StartupError(
            f"{self.name} was not ready after {timeout_s:.0f} s; last lines of {self.log}:\n"
            f"{self.tail()}"
        )

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM the child's whole process group; SIGKILL what is left after `grace_s`."""
        stop_group(self.process, grace_s)

    def tail(self, lines: int = 15) -> str:
        """The last lines the child wrote."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True, slots=True)
class TrackingServer:
    """A running `mlflow server`: its process, its URI, and how long it took to answer."""

    child: Child
    uri: str
    ready_s: float


def start_tracking_server(
    *,
    backend_store_uri: str,
    artifacts_destination: str,
    s3: Mapping[str, str],
    webhook_key: str,
    host: str,
    port: int,
    log: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cpu: str | None = None,
) -> TrackingServer:
    """Start `mlflow server` and wait until its /health answers; stop it if it never does.

    One worker, artifacts proxied to `artifacts_destination` (clients need no S3 keys).
    `s3` holds what the server needs to reach the object store (`MLFLOW_S3_ENDPOINT_URL`,
    `AWS_ACCESS_KEY_ID`, ...); `webhook_key` is the Fernet key MLflow encrypts webhook secrets
    with. MLFLOW_SERVER_DEFAULTS apply unless this process's environment or `env` sets them.
    `cpu` pins the server to those cores (`taskset -c`).
    """
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    environment = (
        MLFLOW_SERVER_DEFAULTS
        | dict(os.environ)
        | dict(s3)
        | {"MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": webhook_key}
        | dict(env or {})
    )
    child = Child("MLflow server", argv, log, environment, inherit=False)
    uri = f"http://{host}:{port}"
    try:
        ready_s = child.wait_until(lambda: answers_ok(f"{uri}/health"), timeout_s)
    except BaseException:
        child.stop()
        raise
    return TrackingServer(child, uri, ready_s)
