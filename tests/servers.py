"""Real servers for tests: moto's S3 server and an `mlflow server` process on a free port."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import requests
from mlflow.tracking._tracking_service import utils as tracking_utils

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Wait until `url` answers 200, failing early if `process` dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def start_mlflow(
    workdir: Path, s3_endpoint: str, bucket: str, backend_uri: str | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start `mlflow server` (SQLite under workdir unless given) proxying artifacts to S3."""
    port = free_port()
    env = (
        os.environ
        | S3_ENV
        | {
            "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # else it takes ~20 s to stop
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY=",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        }
    )
    log = (workdir / f"mlflow-{port}.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend_uri or f"sqlite:///{workdir / 'mlflow.db'}",
            "--artifacts-destination",
            f"s3://{bucket}/artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", process)
    except (RuntimeError, TimeoutError):
        stop(process)
        raise
    return uri, process


def stop(process: subprocess.Popen[bytes], grace_s: float = 20) -> None:
    """SIGTERM the process group; SIGKILL it if it has not exited after `grace_s`."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def restoring_tracking_uri() -> Iterator[None]:
    """Afterwards, MLFLOW_TRACKING_URI and mlflow's process-wide tracking URI as they were.

    Training points this process's MLflow at its server; other tests must not inherit it.
    """
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    previous_global = tracking_utils._tracking_uri
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_global)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env
