"""SIGTERM: the listener closes, requests in flight finish, then the process exits."""

import os
import signal
import subprocess
import sys
import threading
import time

import requests

from registry.client import connect
from tests.servers import free_port, wait_http
from training.datasets import load_split
from training.faults import register_fault_model


def test_sigterm_lets_in_flight_requests_finish(tracking_uri: str):
    register_fault_model(
        "drain-clf", connect(tracking_uri), alias="production", predict_delay_s=1.5
    )
    port = free_port()
    env = os.environ | {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MODELYARD_MODELS": "drain-clf",
        "MODELYARD_ALIASES": "production",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/ready", server, timeout_s=120)
        frame = load_split("breast-cancer").x_holdout.head(1)
        body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
        answers: list[int] = []
        request = threading.Thread(
            target=lambda: answers.append(
                requests.post(f"{url}/invocations", json=body, timeout=30).status_code
            )
        )
        request.start()
        time.sleep(0.5)  # the request is inside the model now
        server.send_signal(signal.SIGTERM)
        request.join()
        assert answers == [200]
        # uvicorn re-raises the signal once its graceful shutdown is done
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
