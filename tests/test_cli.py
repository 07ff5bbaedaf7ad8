"""`python -m serving`: the entry point configures each worker process, create_app none."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from registry.client import connect
from tests.conftest import wait_until
from tests.servers import free_port, wait_http
from training.datasets import load_split
from training.faults import register_fault_model


def _lines(log: Path, logger: str) -> list[dict[str, str]]:
    """The JSON log lines of `logger`, whole ones only (Python's warnings reach stderr as text)."""
    text = log.read_text().splitlines()
    lines = [json.loads(line) for line in text if line.startswith("{") and line.endswith("}")]
    return [line for line in lines if line["logger"] == logger]


def _started(log: Path) -> set[str]:
    """The JSON lines of uvicorn's worker processes saying they started, one per process."""
    messages = {line["message"] for line in _lines(log, "uvicorn.error")}
    return {m for m in messages if m.startswith("Started server process")}


def test_serve_configures_json_logs_in_every_worker(tracking_uri: str, tmp_path: Path):
    register_fault_model("workers-clf", connect(tracking_uri), alias="production")
    port = free_port()
    env = os.environ | {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MODELYARD_MODELS": "workers-clf",
        "MODELYARD_ALIASES": "production",
    }
    log = tmp_path / "serving.log"
    with log.open("wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "serving", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/ready", server, timeout_s=180)
        wait_until(lambda: len(_started(log)) == 2, timeout_s=180, what="both workers")
        frame = load_split("breast-cancer").x_holdout.head(1)
        body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
        for number in range(20):  # fresh connections: the workers share them out
            headers = {"X-Request-ID": f"cli-{number}", "Connection": "close"}
            requests.post(f"{url}/invocations", json=body, headers=headers, timeout=30)
        wait_until(
            lambda: len(_lines(log, "serving.requests")) == 20, timeout_s=30, what="request lines"
        )
        answered = {line["request_id"]: line for line in _lines(log, "serving.requests")}
        assert set(answered) == {f"cli-{n}" for n in range(20)}
        assert {line["model"] for line in answered.values()} == {"workers-clf"}
        assert all("latency_ms" in line for line in answered.values())
        assert any(
            line["message"].startswith("Started parent process")
            for line in _lines(log, "uvicorn.error")
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
