"""Real servers for tests: moto's S3 server and an `mlflow server` process on a free port."""

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.tracking._tracking_service import utils as tracking_utils

from modelyard.processes import answers_ok, free_port, start_tracking_server
from modelyard.processes import stop_group as stop

__all__ = [
    "S3_ENV",
    "free_port",
    "restoring_tracking_uri",
    "start_mlflow",
    "stop",
    "wait_http",
]

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
WEBHOOK_KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="
"""A fixed Fernet key for MLflow's webhook secrets: the tests' servers are throwaway."""


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Wait until `url` answers 200, failing early if `process` dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        if answers_ok(url, timeout_s=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def start_mlflow(
    workdir: Path, s3_endpoint: str, bucket: str, backend_uri: str | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start `mlflow server` (SQLite under workdir unless given) proxying artifacts to S3."""
    port = free_port()
    server = start_tracking_server(
        backend_store_uri=backend_uri or f"sqlite:///{workdir / 'mlflow.db'}",
        artifacts_destination=f"s3://{bucket}/artifacts",
        s3=S3_ENV | {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint},
        webhook_key=WEBHOOK_KEY,
        host="127.0.0.1",
        port=port,
        log=workdir / f"mlflow-{port}.log",
        timeout_s=120,
    )
    return server.uri, server.child.process


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
