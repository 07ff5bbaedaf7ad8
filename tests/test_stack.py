"""`modelyard up`: the embedded default starts, survives a restart, stops all its children."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from tests.servers import free_port
from training.datasets import load_split


def _port_pair() -> int:
    """A free port whose +10000 (SeaweedFS's gRPC port) is free too."""
    while True:
        port = free_port()
        if port <= 55535:
            return port


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ports = {
        name: str(_port_pair())
        for name in ("S3_PORT", "WEED_MASTER_PORT", "WEED_VOLUME_PORT", "WEED_FILER_PORT")
    }
    ports |= {"MLFLOW_PORT": str(free_port()), "SERVING_PORT": str(free_port())}
    home = tmp_path_factory.mktemp("stack") / "mlruns"
    return (
        os.environ | {f"MODELYARD_{k}": v for k, v in ports.items()} | {"MODELYARD_HOME": str(home)}
    )


class Up:
    """A running `modelyard up` and everything it printed."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "up"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"never printed {text!r}:\n{''.join(self.lines)}")

    def terminate(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        return "".join(self.lines) + out


@pytest.fixture(scope="module")
def first_run(stack_env: dict[str, str]) -> Iterator[tuple[Up, str]]:
    up = Up(stack_env)
    up.wait_for("press Ctrl-C to stop")
    yield up, f"http://127.0.0.1:{stack_env['MODELYARD_MLFLOW_PORT']}"
    if up.process.poll() is None:
        up.terminate()


def test_up_registers_demo_models_with_aliases(first_run: tuple[Up, str]):
    _, uri = first_run
    client = MlflowClient(uri)
    assert [w.name for w in client.list_webhooks()] == ["modelyard-serving"]
    assert client.get_registered_model("cancer-classifier").aliases.keys() == {
        "production",
        "staging",
    }
    assert "production" in client.get_registered_model("diabetes-regressor").aliases
    assert requests.get(f"{uri}/health", timeout=5).status_code == 200


def test_up_serves_the_demo_models(first_run: tuple[Up, str], stack_env: dict[str, str]):
    serving = f"http://127.0.0.1:{stack_env['MODELYARD_SERVING_PORT']}"
    assert requests.get(f"{serving}/health/ready", timeout=5).status_code == 200
    row = load_split("breast-cancer").x_holdout.head(1)
    body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
    answer = requests.post(f"{serving}/invocations", json=body, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["X-Model-Name"] == "cancer-classifier"
    status = subprocess.run(
        [sys.executable, "-m", "modelyard", "status", "--url", serving],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "cancer-classifier" in status.stdout
    assert "staging" in status.stdout


def test_demo_traffic_feeds_an_experiment_report_on_both_arms(
    first_run: tuple[Up, str], stack_env: dict[str, str], tmp_path: Path
):
    env = stack_env | _exports(Path(stack_env["MODELYARD_HOME"]) / "modelyard.env")
    assert env["MODELYARD_PREDICTION_LOG"].startswith("s3://")
    modelyard = [sys.executable, "-m", "modelyard"]
    traffic = subprocess.run(
        [*modelyard, "demo", "traffic", "--requests", "300", "--label-delay", "0"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert traffic.returncode == 0, traffic.stderr
    assert "300 labels accepted" in traffic.stdout
    report_argv = [*modelyard, "experiment", "report", "cancer-classifier", "--format", "json",
                   "--report-dir", str(tmp_path)]  # fmt: skip
    deadline = time.monotonic() + 30
    while True:  # the last second's rows and labels are still being shipped
        report = subprocess.run(report_argv, env=env, capture_output=True, text=True, timeout=120)
        assert report.returncode == 0, report.stderr
        arms = json.loads(report.stdout)["arms"]
        if sum(arm["labelled"] for arm in arms) == 300 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {arm["alias"] for arm in arms} == {"production", "staging"}
    assert sum(arm["requests"] for arm in arms) >= 300  # and the earlier tests' requests
    assert sum(arm["labelled"] for arm in arms) == 300
    client = MlflowClient(first_run[1])
    experiment = client.get_experiment_by_name("modelyard-experiments")
    assert experiment is not None, "the report is recorded in MLflow"
    assert client.search_runs([experiment.experiment_id])


def _exports(path: Path) -> dict[str, str]:
    """The variables of a file of `export NAME=value` lines, as a shell would read them."""
    values = {}
    for line in path.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0]
    return values


def test_up_port_in_use_gives_clear_message(stack_env: dict[str, str], first_run: tuple[Up, str]):
    up, _ = first_run  # holds every port of the stack
    if up.process.poll() is not None:
        pytest.skip("the first stack has already been stopped")
    result = subprocess.run(
        [sys.executable, "-m", "modelyard", "up"],
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "already in use" in result.stderr
    assert "MODELYARD_S3_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_stops_every_child_on_sigterm_and_restart_keeps_registry(
    first_run: tuple[Up, str], stack_env: dict[str, str]
):
    up, uri = first_run
    children = _descendants(up.process.pid)
    assert len(children) >= 2, "up should have started its components"
    output = up.terminate()
    assert up.process.returncode == 0, output
    assert "stopped" in output
    time.sleep(0.5)
    assert not [p for p in children if Path(f"/proc/{p}").exists()], "a component outlived up"

    again = Up(stack_env)
    try:
        again.wait_for("press Ctrl-C to stop")
        assert "already holds models" in "".join(again.lines)
        versions = MlflowClient(uri).search_model_versions("name = 'cancer-classifier'")
        assert len(versions) == 2
    finally:
        again.terminate()


def test_up_bad_setting_names_it(stack_env: dict[str, str]):
    env = stack_env | {"MODELYARD_MLFLOW_PORT": "not-a-port"}
    result = subprocess.run(
        [sys.executable, "-m", "modelyard", "up"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "MODELYARD_MLFLOW_PORT" in result.stderr


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (components run in sessions of their own)."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parents[int(proc.name)] = int(
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except OSError:
                continue
    found, frontier = [], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found
