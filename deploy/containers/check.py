"""Run docker-compose.yml in real containers with podman and check the stack end to end.

    .venv/bin/python deploy/containers/check.py      # after build.py; `make test-containers`

The stack runs as a throwaway compose project (`modelyard-e2e`) with a generated .env of
random secrets and free loopback ports, and two serving replicas (the Kubernetes
Deployment's count). It is taken down at the end, whatever happened; the containers' logs
are kept in ~/.cache/modelyard/containers/logs/e2e/.

What podman (4.3, Debian bookworm) does differently from Docker, and how this handles it:
- it cannot publish a host port range for one container port: deploy/containers/podman.yml
  gives each serving replica a free loopback port instead;
- podman-compose waits for no `service_healthy` condition on podman < 4.6 and takes
  `service_completed_successfully` for "stopped": the services are started here one by one
  in the order their `depends_on` conditions ask, each condition checked as compose would;
- without systemd, podman runs no healthcheck on its own (it schedules them as systemd
  timers): the healthchecks compose defines are run here with `podman healthcheck run` at
  each container's own interval, so "healthy" is what the compose healthcheck said;
- `podman kill` counts as a stop by the user, after which no restart policy applies: a crash
  is a SIGKILL sent to the container's process from the host.
"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
PODMAN_OVERRIDE = HERE / "podman.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "deployment.yaml"
CONTAINERS_CONF = HERE / "containers.conf"
CACHE = Path(os.environ.get("MODELYARD_CACHE", Path.home() / ".cache" / "modelyard")) / "containers"

PROJECT = "modelyard-e2e"
MODEL = "cancer-classifier"
SERVING = "serving"
TRAFFIC_TAG = "modelyard.traffic"
LOGGED_REQUESTS = 20
"""Keyed requests sent to each replica by the prediction log's check."""
LABEL = f"label=io.podman.compose.project={PROJECT}"
STARTED = time.monotonic()


class CheckFailed(AssertionError):
    """One end-to-end check did not hold; the message says what was seen."""


class PodmanError(CheckFailed):
    """A podman command failed; while waiting for a container, maybe only for now."""


def say(message: str) -> None:
    elapsed = int(time.monotonic() - STARTED)
    print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {message}", flush=True)


def logs(container: str, *args: str) -> str:
    """A container's output; `podman logs` replays its stderr on stderr."""
    result = subprocess.run(
        ["podman", "logs", *args, container],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=60,
    )
    return result.stdout


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(["podman", *args], text=True, capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise PodmanError(f"podman {' '.join(args)}: {(result.stdout + result.stderr)[-2000:]}")
    return result.stdout.strip()


def wait_for(what: str, probe: Callable[[], tuple[bool, str]], timeout_s: float) -> str:
    """Poll probe until it reports done; say how it stands every 15 s; fail after timeout_s."""
    started = time.monotonic()
    told = started
    status = ""
    while True:
        try:
            done, status = probe()
        except (OSError, ValueError, KeyError, PodmanError) as error:
            done, status = False, f"{type(error).__name__}: {error}"
        now = time.monotonic()
        if done:
            return status
        if now - started > timeout_s:
            raise CheckFailed(f"{what}: not after {timeout_s:.0f} s; last seen: {status}")
        if now - told >= 15:
            say(f"   ... waiting for {what} ({now - started:.0f} s): {status}")
            told = now
        time.sleep(2)


# --- HTTP --------------------------------------------------------------------------------


def http(
    method: str,
    url: str,
    body: Any = None,
    auth: tuple[str, str] | None = None,
    timeout: float = 10,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One JSON request; the status, headers and decoded body, errors included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, answer, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, answer, raw = error.code, error.headers, error.read()
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return status, {name.lower(): value for name, value in answer.items()}, payload


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the compose project -----------------------------------------------------------------


class Stack:
    """The compose project, driven through podman-compose."""

    def __init__(self, workdir: Path, replicas: int) -> None:
        self.replicas = replicas
        self.env = self._write_env(workdir / "env")
        executable = shutil.which("podman-compose", path=os.path.dirname(sys.executable))
        executable = executable or shutil.which("podman-compose")
        if executable is None:
            raise CheckFailed("podman-compose is not installed (make test-containers installs it)")
        self.compose = [
            executable,
            "--project-name",
            PROJECT,
            "--env-file",
            str(workdir / "env"),
            "--file",
            str(COMPOSE_FILE),
            "--file",
            str(PODMAN_OVERRIDE),
        ]
        self.log = workdir / "podman-compose.log"
        self.config = yaml.safe_load(self.run("config", capture=True))
        self.mlflow = f"http://127.0.0.1:{self.env['MLFLOW_PORT']}"
        self.prometheus = f"http://127.0.0.1:{self.env['PROMETHEUS_PORT']}"
        self.admin = ("admin", self.env["MLFLOW_ADMIN_PASSWORD"])
        self.serving_user = ("serving", self.env["MLFLOW_SERVING_PASSWORD"])

    @staticmethod
    def _write_env(path: Path) -> dict[str, str]:
        """.env.example with every secret random and every port a free one."""
        env: dict[str, str] = {}
        for line in ENV_EXAMPLE.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value or os.urandom(24).hex()
        env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] = base64.urlsafe_b64encode(
            os.urandom(32)
        ).decode()
        env["MLFLOW_PORT"] = str(free_port())
        env["PROMETHEUS_PORT"] = str(free_port())
        env["MODELYARD_TAG"] = os.environ.get("MODELYARD_TAG") or "local"
        path.touch(mode=0o600)
        path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
        return env

    def run(self, *args: str, capture: bool = False, timeout: float = 600) -> str:
        """One podman-compose command; its output goes to the log, or is returned."""
        with self.log.open("a") as log:
            log.write(f"\n$ podman-compose {' '.join(args)}\n")
            log.flush()
            result = subprocess.run(
                [*self.compose, *args],
                text=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else log,
                stderr=log,
                timeout=timeout,
            )
        if result.returncode != 0:
            tail = "\n".join(self.log.read_text().splitlines()[-25:])
            raise CheckFailed(
                f"podman-compose {' '.join(args)} exited {result.returncode}:\n{tail}"
            )
        return result.stdout or ""

    def services(self) -> dict[str, dict[str, Any]]:
        """The services `up` starts (no profile), as podman-compose read them."""
        return {
            name: service
            for name, service in self.config["services"].items()
            if not service.get("profiles")
        }

    def containers(self, service: str | None = None) -> list[str]:
        """Names of the project's containers (of one service), in replica order."""
        filters = ["--filter", LABEL]
        if service:
            filters += ["--filter", f"label=io.podman.compose.service={service}"]
        names = podman("ps", "-a", *filters, "--format", "{{.Names}}").split()
        return sorted(names)

    def state(self, container: str) -> dict[str, Any]:
        return json.loads(podman("inspect", "--format", "{{json .State}}", container))

    def host_port(self, container: str, port: int) -> int:
        mapping = podman("port", container, str(port))
        return int(mapping.splitlines()[0].rsplit(":", 1)[1])

    def up(self, service: str) -> None:
        scale = ["--scale", f"{service}={self.replicas}"] if service == SERVING else []
        self.run("up", "--detach", "--no-deps", *scale, service)

    def trainer(self, *command: str) -> str:
        """The trainer job (profile tools) against the running stack; its output."""
        return self.run(
            "--profile",
            "tools",
            "run",
            "--rm",
            "--no-deps",
            "trainer",
            *command,
            capture=True,
            timeout=900,
        )

    def down(self) -> None:
        self.run("--profile", "tools", "down", "--volumes", "--remove-orphans", timeout=300)


class HealthChecks:
    """Runs each container's compose healthcheck at its interval, as systemd would for podman."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._due: dict[str, float] = {}
        self._interval: dict[str, float | None] = {}
        self._thread = threading.Thread(target=self._loop, name="healthchecks", daemon=True)

    def __enter__(self) -> "HealthChecks":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _interval_of(self, container_id: str) -> float | None:
        if container_id not in self._interval:
            config = json.loads(
                podman(
                    "inspect", "--format", "{{json .Config.Healthcheck}}", container_id, check=False
                )
                or "null"
            )
            self._interval[container_id] = (
                (config.get("Interval") or 30_000_000_000) / 1e9 if config else None
            )
        return self._interval[container_id]

    def _loop(self) -> None:
        while not self._stop.wait(1):
            try:
                running = podman(
                    "ps",
                    "--filter",
                    LABEL,
                    "--filter",
                    "status=running",
                    "--format",
                    "{{.ID}}",
                    check=False,
                ).split()
                for container_id in running:
                    interval = self._interval_of(container_id)
                    now = time.monotonic()
                    if interval is None or self._due.get(container_id, 0) > now:
                        continue
                    self._due[container_id] = now + interval
                    podman("healthcheck", "run", container_id, check=False, timeout=60)
            except (subprocess.SubprocessError, OSError, ValueError) as error:
                print(f"healthcheck runner: {error}", file=sys.stderr)


# --- the checks --------------------------------------------------------------------------


def start_in_dependency_order(stack: Stack) -> None:
    """`up` each service once every `depends_on` condition of it holds, as compose would."""
    services = stack.services()
    started: set[str] = set()

    def condition_holds(service: str, condition: str) -> tuple[bool, str]:
        names = stack.containers(service)
        if not names:
            return False, f"{service}: no container"
        for name in names:
            state = stack.state(name)
            health = (state.get("Health") or state.get("Healthcheck") or {}).get("Status", "")
            if condition == "service_completed_successfully":
                if state["Status"] != "exited":
                    return False, f"{name}: {state['Status']}"
                if state["ExitCode"] != 0:
                    raise CheckFailed(
                        f"{name} exited {state['ExitCode']}: {logs(name, '--tail', '20')}"
                    )
            elif state["Status"] != "running":
                return False, f"{name}: {state['Status']}"
            elif condition == "service_healthy" and health != "healthy":
                return False, f"{name}: {health or 'no health yet'}"
        return True, "ok"

    while len(started) < len(services):
        ready = [
            name
            for name, service in services.items()
            if name not in started and all(dep in started for dep in service.get("depends_on", {}))
        ]
        if not ready:
            raise CheckFailed(f"depends_on has a cycle among {set(services) - started}")
        for name in ready:
            conditions = services[name].get("depends_on", {})
            for dep, spec in conditions.items():
                condition = spec.get("condition", "service_started")
                wait_for(
                    f"{dep} ({condition}) before {name}",
                    lambda dep=dep, condition=condition: condition_holds(dep, condition),
                    300,
                )
            say(f"   up {name}" + (f" x{stack.replicas}" if name == SERVING else ""))
            stack.up(name)
            started.add(name)


def stack_up(stack: Stack) -> str:
    """Every service started in depends_on order; serving live (ready needs a model)."""
    start_in_dependency_order(stack)

    def live() -> tuple[bool, str]:
        statuses = {
            name: http("GET", f"{url}/health/live", timeout=5)[0]
            for name, url in serving_urls(stack).items()
        }
        return all(s == 200 for s in statuses.values()), str(statuses)

    wait_for("the serving replicas to answer /health/live", live, 300)
    return ", ".join(f"{service} x{len(stack.containers(service))}" for service in stack.services())


def every_service_healthy(stack: Stack) -> str:
    """Each long-running service running (healthy where it has a healthcheck); jobs exited 0."""
    services = stack.services()
    jobs = {
        dep
        for spec in services.values()
        for dep, needs in spec.get("depends_on", {}).items()
        if needs.get("condition") == "service_completed_successfully"
    }

    def probe() -> tuple[bool, str]:
        pending = []
        for service, spec in services.items():
            job = service in jobs
            for name in stack.containers(service):
                state = stack.state(name)
                health = (state.get("Health") or {}).get("Status", "")
                if job:
                    if state["Status"] != "exited" or state["ExitCode"] != 0:
                        pending.append(f"{name} {state['Status']} {state['ExitCode']}")
                elif state["Status"] != "running" or (
                    spec.get("healthcheck") and health != "healthy"
                ):
                    pending.append(f"{name} {state['Status']} {health}")
        return not pending, ", ".join(pending) or "all healthy"

    return wait_for("every service healthy", probe, 300)


def registered_model(stack: Stack) -> dict[str, Any]:
    status, _, body = http(
        "GET",
        f"{stack.mlflow}/api/2.0/mlflow/registered-models/get?name={MODEL}",
        auth=stack.admin,
    )
    if status != 200:
        raise CheckFailed(f"MLflow answered {status} for model {MODEL}: {body}")
    return dict(body["registered_model"])


def production_version(stack: Stack) -> str:
    aliases = {a["alias"]: a["version"] for a in registered_model(stack).get("aliases", [])}
    return str(aliases.get("production", ""))


def training_registers_a_model(stack: Stack) -> str:
    output = stack.trainer()
    version = production_version(stack)
    if version != "1":
        raise CheckFailed(
            f"after the trainer, {MODEL}@production is {version!r}:\n{output[-1500:]}"
        )
    return f"{MODEL} version 1 registered, alias production on it"


def serving_urls(stack: Stack) -> dict[str, str]:
    return {
        name: f"http://127.0.0.1:{stack.host_port(name, 8000)}"
        for name in stack.containers(SERVING)
    }


def replicas_ready(stack: Stack, version: str) -> str:
    """Every replica healthy by the compose healthcheck, and answering with `version`."""
    names = stack.containers(SERVING)
    if len(names) != stack.replicas:
        raise CheckFailed(f"{len(names)} serving containers, not {stack.replicas}: {names}")

    def probe() -> tuple[bool, str]:
        seen = []
        for name in names:
            state = stack.state(name)
            health = (state.get("Health") or {}).get("Status", "")
            url = f"http://127.0.0.1:{stack.host_port(name, 8000)}"
            status, _, _ = http("GET", f"{url}/health/ready", timeout=5)
            seen.append((name, health, status, answering_version(url)))
        done = all(h == "healthy" and s == 200 and v == version for _, h, s, v in seen)
        return done, "; ".join(f"{n}: {h}, ready {s}, v{v}" for n, h, s, v in seen)

    return wait_for(f"{stack.replicas} serving replicas healthy with v{version}", probe, 420)


def prediction_request() -> tuple[dict[str, Any], list[int]]:
    """Two holdout rows of the demo model's dataset, as the README's example sends them, and
    their true labels."""
    sys.path.insert(0, str(ROOT))
    from training.datasets import load_split

    split = load_split("breast-cancer")
    rows = split.x_holdout.head(2)
    request = {"dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}}
    return request, [int(target) for target in split.y_holdout.head(2)]


REQUEST: dict[str, Any] = {}
TARGETS: list[int] = []


def answering_version(url: str) -> str:
    status, headers, _ = http("POST", f"{url}/invocations", REQUEST, timeout=10)
    if status != 200:
        return f"none (HTTP {status})"
    return headers.get("x-model-version", "?")


def a_prediction_answers(stack: Stack) -> str:
    answers = []
    for name, url in serving_urls(stack).items():
        status, headers, body = http("POST", f"{url}/invocations", REQUEST)
        predictions = body.get("predictions") if isinstance(body, dict) else None
        if status != 200 or not predictions or len(predictions) != 2:
            raise CheckFailed(f"{name} answered {status}: {body}")
        if not {"label", "probability"} <= set(predictions[0]):
            raise CheckFailed(f"{name} answered without label and probability: {predictions}")
        answers.append(f"{name} v{headers.get('x-model-version')}: {predictions[0]}")
    return "; ".join(answers)


def alias_move_is_followed(stack: Stack) -> str:
    """A second version, production moved to it through MLflow's REST API, both follow."""
    stack.trainer("train", "sklearn", "--model-name", MODEL, "--seed", "1")
    versions = sorted(int(v["version"]) for v in registered_model(stack)["latest_versions"])
    if versions[-1] != 2:
        raise CheckFailed(f"the second trainer run registered no version 2: {versions}")
    move = {"name": MODEL, "alias": "production", "version": "2"}
    url = f"{stack.mlflow}/api/2.0/mlflow/registered-models/alias"
    status, _, body = http("POST", url, move, auth=stack.serving_user)
    if status != 403:
        raise CheckFailed(f"serving's read-only MLflow user moved an alias: {status} {body}")
    status, _, body = http("POST", url, move, auth=stack.admin)
    if status != 200:
        raise CheckFailed(f"MLflow refused the alias move: {status} {body}")
    moved = time.monotonic()
    replicas_ready(stack, "2")
    return (
        f"both replicas answer with v2 {time.monotonic() - moved:.0f} s after the move "
        "(serving's own user was refused it: 403)"
    )


def killed_replica_restarts(stack: Stack) -> str:
    name = stack.containers(SERVING)[0]
    state = stack.state(name)
    before = int(podman("inspect", "--format", "{{.RestartCount}}", name))
    os.kill(int(state["Pid"]), signal.SIGKILL)
    killed = time.monotonic()
    say(f"   SIGKILL to {name}'s process (pid {state['Pid']} on the host)")

    def restarted() -> tuple[bool, str]:
        now = stack.state(name)
        count = int(podman("inspect", "--format", "{{.RestartCount}}", name))
        return count > before and now["Status"] == "running", f"{now['Status']}, restarts {count}"

    wait_for(f"{name} restarted by its restart policy", restarted, 120)
    replicas_ready(stack, "2")
    took = time.monotonic() - killed
    return f"{name} restarted and ready with v2 again {took:.0f} s after the kill"


def prometheus_scrapes_both(stack: Stack) -> str:
    addresses = {
        next(
            iter(
                json.loads(
                    podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", name)
                ).values()
            )
        )["IPAddress"]: name
        for name in stack.containers(SERVING)
    }
    since = datetime.now(UTC)

    def probe() -> tuple[bool, str]:
        _, _, body = http("GET", f"{stack.prometheus}/api/v1/targets")
        fresh = {}
        for target in body["data"]["activeTargets"]:
            host = target["labels"]["instance"].rsplit(":", 1)[0]
            scraped = datetime.fromisoformat(target["lastScrape"].replace("Z", "+00:00"))
            fresh[host] = target["health"] if scraped > since else "not scraped since"
        query = urllib.parse.quote("modelyard_registry_poll_age_seconds")
        _, _, series = http("GET", f"{stack.prometheus}/api/v1/query?query={query}")
        with_metrics = {r["metric"]["instance"].rsplit(":", 1)[0] for r in series["data"]["result"]}
        done = all(fresh.get(a) == "up" and a in with_metrics for a in addresses)
        return done, ", ".join(f"{addresses.get(a, a)}: {h}" for a, h in fresh.items()) or "none"

    return wait_for("Prometheus scraping both replicas", probe, 150)


def serving_runs_as_the_manifest_asks(stack: Stack) -> str:
    """Non-root (the manifest's runAsUser), read-only root, writable only where k8s mounts
    and in the prediction log's volume (Kubernetes keeps that log in S3)."""
    pod = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    user = pod["securityContext"]["runAsUser"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    writable = {
        mount["mountPath"]
        for mount in container["volumeMounts"]
        if not mount.get("readOnly") and "emptyDir" in volumes[mount["name"]]
    } | {log_root()}
    for name in stack.containers(SERVING):
        status = podman("exec", name, "cat", "/proc/1/status")
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uids = set(fields["Uid"].split())
        if uids != {str(user)}:
            raise CheckFailed(f"{name}'s process runs as uids {uids}, not {user}")
        if int(fields["CapEff"].strip(), 16) != 0 or fields["NoNewPrivs"].strip() != "1":
            raise CheckFailed(
                f"{name}: capabilities {fields['CapEff'].strip()}, "
                f"no_new_privs {fields['NoNewPrivs'].strip()}"
            )
        if podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name) != "true":
            raise CheckFailed(f"{name}'s root file system is writable")
        probe = (
            "for d in / /opt/venv /home/modelyard /etc {dirs}; do "
            "if touch $d/.probe 2>/dev/null; then rm $d/.probe; echo $d; fi; done"
        )
        can_write = set(
            podman("exec", name, "sh", "-c", probe.format(dirs=" ".join(sorted(writable)))).split()
        )
        if can_write != writable:
            raise CheckFailed(
                f"{name} can write to {sorted(can_write)}; the manifest mounts {sorted(writable)}"
            )
    return f"uid {user}, no capabilities, read-only root; writable: {', '.join(sorted(writable))}"


REACH_PROBE = """
import json, socket, sys
reached = []
for host, port in json.loads(sys.argv[1]):
    sock = socket.socket()
    sock.settimeout(2)
    try:
        sock.connect((host, port))
        reached.append(f"{host}:{port}")
    except OSError:
        pass
    finally:
        sock.close()
print(json.dumps(reached))
"""


def serving_reaches_only_mlflow(stack: Stack) -> str:
    """The network split: serving reaches MLflow, but no PostgreSQL or SeaweedFS port."""
    targets: list[tuple[str, int]] = [("mlflow", 5000)]
    for service, ports in (("postgres", [5432]), ("seaweedfs", [8333, 8888, 9333, 8080])):
        for name in stack.containers(service):
            networks = json.loads(
                podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", name)
            )
            for network in networks.values():
                targets += [(network["IPAddress"], port) for port in ports]
            targets += [(service, port) for port in ports]
    for name in stack.containers(SERVING):
        reached = json.loads(
            podman("exec", name, "python", "-c", REACH_PROBE, json.dumps(targets), timeout=120)
        )
        if reached != ["mlflow:5000"]:
            raise CheckFailed(f"{name} reached {reached}; only mlflow:5000 was expected")
    return f"each replica reached mlflow:5000 and none of {len(targets) - 1} other addresses"


def log_root() -> str:
    """Where compose puts the prediction log (a named volume every replica mounts)."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return str(services[SERVING]["environment"]["MODELYARD_PREDICTION_LOG"])


# Per (alias, version): rows answered and labelled by the prediction log's checks, and when
# the first was sent.
LOGGED: Counter[tuple[str, str]] = Counter()
LOG_SINCE: list[datetime] = []


def send_and_label(url: str, count: int) -> str:
    """`count` keyed requests to one replica, then their true labels as its feedback."""
    run = os.urandom(4).hex()
    labels = []
    for i in range(count):
        status, headers, body = http(
            "POST",
            f"{url}/models/{MODEL}/invocations",
            REQUEST,
            headers={"X-Routing-Key": f"e2e-{run}-{i}"},
        )
        if status != 200 or "x-request-id" not in headers:
            raise CheckFailed(f"a keyed request to {url} answered {status}: {body}")
        LOGGED[headers["x-model-alias"], headers["x-model-version"]] += len(TARGETS)
        labels += [
            {"request_id": headers["x-request-id"], "row": row, "target": target}
            for row, target in enumerate(TARGETS)
        ]
    url = f"{url}/models/{MODEL}/feedback"
    status, _, body = http("POST", url, {"feedback": labels})
    if status != 202 or body != {"accepted": len(labels)}:
        raise CheckFailed(f"{url} answered {status} to {len(labels)} labels: {body}")
    return f"{count} requests, {len(labels)} labels"


def report_reads_what_was_logged(stack: Stack) -> str:
    """The experiment report, run in the trainer on the shared volume, reads every logged row
    and label since the check's first request, once each, per arm (shipping takes a flush
    interval and then some: it is asked again until then)."""
    since = LOG_SINCE[0].isoformat()
    expected = {f"{alias} v{version}": rows for (alias, version), rows in LOGGED.items()}

    def probe() -> tuple[bool, str]:
        output = stack.trainer("experiment", "report", MODEL, "--since", since, "--format", "json")
        try:
            document = json.loads(output)
        except ValueError as error:
            raise CheckFailed(f"the report printed no JSON ({error}):\n{output[-1500:]}") from None
        arms = {
            f"{a['alias']} v{a['version']}": (a["rows"], a["labelled"]) for a in document["arms"]
        }
        seen = (document["rows_read"], document["labels_read"], arms)
        total = sum(expected.values())
        done = seen == (total, total, {arm: (rows, rows) for arm, rows in expected.items()})
        if document["rows_read"] > total or document["labels_read"] > total:
            raise CheckFailed(f"the report read more than was sent ({total} rows): {seen}")
        status = f"rows {seen[0]}, labels {seen[1]}, arms {arms}; decision {document['decision']}"
        return done, status + f", MLflow run {document['run']['id']}"

    return wait_for(f"the report to read {sum(expected.values())} rows and labels", probe, 120)


def predictions_are_logged_and_reported(stack: Stack) -> str:
    """A 50/50 split of production (v2) and staging (v1); keyed requests to each replica and
    their labels; the trainer's experiment report reads them all, per arm."""
    split = {"production": 50, "staging": 50}
    for path, body in (
        ("registered-models/alias", {"name": MODEL, "alias": "staging", "version": "1"}),
        (
            "registered-models/set-tag",
            {"name": MODEL, "key": TRAFFIC_TAG, "value": json.dumps(split | {"salt": PROJECT})},
        ),
    ):
        status, _, answer = http(
            "POST", f"{stack.mlflow}/api/2.0/mlflow/{path}", body, auth=stack.admin
        )
        if status != 200:
            raise CheckFailed(f"MLflow refused {path}: {status} {answer}")

    def following() -> tuple[bool, str]:
        seen = {}
        for name, url in serving_urls(stack).items():
            model = http("GET", f"{url}/models")[2]["models"][MODEL]
            staging = model["aliases"].get("staging", {}).get("version")
            seen[name] = (model["traffic"]["weights"], staging)
        return all(w == split and v == "1" for w, v in seen.values()), str(seen)

    wait_for("both replicas following the split", following, 120)
    LOG_SINCE.append(datetime.now(UTC))
    sent = {name: send_and_label(url, LOGGED_REQUESTS) for name, url in serving_urls(stack).items()}
    return f"{sent}; {report_reads_what_was_logged(stack)}"


def the_log_outlives_a_restart(stack: Stack) -> str:
    """Requests, labels and at once a restart (SIGTERM): the log keeps every row once, and the
    restarted replica logs again."""
    name = stack.containers(SERVING)[0]
    before = send_and_label(serving_urls(stack)[name], LOGGED_REQUESTS)
    podman("restart", "--time", "40", name, timeout=120)

    def ready() -> tuple[bool, str]:
        health = (stack.state(name).get("Health") or {}).get("Status", "")
        url = serving_urls(stack)[name]
        status = http("GET", f"{url}/health/ready", timeout=5)[0]
        return health == "healthy" and status == 200, f"{health}, ready {status}"

    wait_for(f"{name} ready again after its restart", ready, 300)
    after = send_and_label(serving_urls(stack)[name], LOGGED_REQUESTS)
    return f"{name}: {before} before, {after} after; {report_reads_what_was_logged(stack)}"


def down_leaves_nothing(stack: Stack) -> str:
    keep_logs(stack)
    started = time.monotonic()
    stack.down()
    left = {
        "containers": podman("ps", "-a", "--filter", LABEL, "--format", "{{.Names}}").split(),
        "networks": podman("network", "ls", "--filter", LABEL, "--format", "{{.Name}}").split(),
        "volumes": podman("volume", "ls", "--filter", LABEL, "--format", "{{.Name}}").split(),
    }
    left = {kind: names for kind, names in left.items() if names}
    if left:
        raise CheckFailed(f"`down` left {left}")
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", int(stack.env["MLFLOW_PORT"]))) == 0:
            raise CheckFailed("MLflow's port still answers after `down`")
    return f"no container, network or volume of {PROJECT} left ({time.monotonic() - started:.0f} s)"


# --- running it --------------------------------------------------------------------------


def keep_logs(stack: Stack) -> Path:
    """Every container's log, before `down` removes them."""
    folder = CACHE / "logs" / "e2e"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in stack.containers():
        (folder / f"{name}.log").write_text(logs(name))
    shutil.copy(stack.log, folder / "podman-compose.log")
    return folder


@contextmanager
def project_cleared(stack: Stack) -> Iterator[None]:
    """No leftover of an earlier run before; nothing left afterwards, whatever happened."""
    if stack.containers():
        say(f"taking down what an earlier run of {PROJECT} left")
        stack.down()
    try:
        yield
    finally:
        if stack.containers():
            folder = keep_logs(stack)
            say(f"taking the stack down (logs kept in {folder})")
            try:
                stack.down()
            except CheckFailed as error:
                print(error, file=sys.stderr)


def main() -> int:
    os.environ.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    # Healthchecks are run by HealthChecks below; without this podman logs an error for
    # every container it cannot give a systemd timer.
    os.environ["DISABLE_HC_SYSTEMD"] = "true"
    replicas = int(yaml.safe_load(DEPLOYMENT.read_text())["spec"]["replicas"])
    request, targets = prediction_request()
    REQUEST.update(request)
    TARGETS.extend(targets)
    steps: Sequence[tuple[str, Callable[[Stack], str]]] = [
        ("the stack up, each service once its depends_on conditions hold", stack_up),
        ("the training job registers a model", training_registers_a_model),
        (
            "both serving replicas ready through the compose healthcheck",
            lambda s: replicas_ready(s, "1"),
        ),
        ("every service healthy (jobs exited 0)", every_service_healthy),
        ("a prediction answers", a_prediction_answers),
        (
            "an alias moved through MLflow's REST API is followed by both replicas",
            alias_move_is_followed,
        ),
        ("a killed serving container is restarted and ready again", killed_replica_restarts),
        ("Prometheus scrapes both replicas", prometheus_scrapes_both),
        (
            "serving runs as its non-root user on a read-only root (as the manifest asks)",
            serving_runs_as_the_manifest_asks,
        ),
        (
            "serving reaches MLflow and nothing behind it (the compose networks)",
            serving_reaches_only_mlflow,
        ),
        (
            "keyed predictions and their labels, logged by both replicas, are what the "
            "experiment report reads in the trainer",
            predictions_are_logged_and_reported,
        ),
        (
            "the prediction log keeps every row across a replica's restart",
            the_log_outlives_a_restart,
        ),
        ("`down` leaves nothing running", down_leaves_nothing),
    ]
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="modelyard-e2e-") as workdir:
        stack = Stack(Path(workdir), replicas)
        say(f"project {PROJECT}: MLflow on {stack.mlflow}, Prometheus on {stack.prometheus}")
        with HealthChecks(), project_cleared(stack):
            for title, step in steps:
                say(f"{title} ...")
                started = time.monotonic()
                try:
                    detail = step(stack)
                except CheckFailed as error:
                    failed += 1
                    say(f"FAIL {title}: {error}")
                    break
                passed += 1
                say(f"ok   {title} ({time.monotonic() - started:.0f} s): {detail}")
    say(f"done in {time.monotonic() - STARTED:.0f} s")
    print(f"containers: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
