"""The deployment files, checked without a Docker engine or a cluster.

docker-compose.yml against the Compose Specification (after interpolating it as compose
does), the Kubernetes manifests against the API schemas, and the Dockerfile's few
security-relevant lines.
"""

import configparser
import json
import os
import re
import stat
import subprocess
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
K8S_DIR = ROOT / "deploy" / "kubernetes"
SECRET_EXAMPLE = "secret.example.yaml"
# Every API the manifests use is GA in this release (and long before it).
KUBERNETES_VERSION = "1.30"

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|ENCRYPTION_KEY")

# Compose's interpolation syntax: $$ escapes a dollar; ${VAR}, $VAR, and ${VAR<op>arg}
# with op one of :- - :? ? :+ +. Anything else after a dollar is an error, as in compose.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*)"
    r"|(?P<invalid>))"
)


class InterpolationError(ValueError):
    """A required variable is missing, or a dollar sign starts no valid expression."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Substitute variables in one string the way `docker compose` does."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None:
            raise InterpolationError(f"invalid interpolation in {value!r}")
        name = match["braced"] or match["bare"]
        current = env.get(name, "")
        op = match["op"]
        if op is None:
            return current
        missing = not current if op.startswith(":") else name not in env
        if op.endswith("-"):
            return match["arg"] if missing else current
        if op.endswith("+"):
            return "" if missing else match["arg"]
        if missing:
            raise InterpolationError(f"required variable {name} is missing a value: {match['arg']}")
        return current

    return _INTERPOLATION.sub(substitute, value)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (never a key) of a parsed compose file."""
    if isinstance(node, dict):
        return {key: interpolate_tree(item, env) for key, item in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def strings_in(node: Any) -> list[str]:
    """Every string value of a parsed YAML tree."""
    if isinstance(node, dict):
        return [text for item in node.values() for text in strings_in(item)]
    if isinstance(node, list):
        return [text for item in node for text in strings_in(item)]
    return [node] if isinstance(node, str) else []


def variables_in(node: Any) -> set[str]:
    """Names of the variables that compose would substitute in a parsed tree."""
    names = set()
    for text in strings_in(node):
        for match in _INTERPOLATION.finditer(text):
            if name := match["braced"] or match["bare"]:
                names.add(name)
    return names


def parse_env_file(path: Path) -> tuple[dict[str, str], set[str]]:
    """KEY=value lines of a .env file, and the keys that have a comment line right above."""
    values: dict[str, str] = {}
    commented: set[str] = set()
    previous = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition("=")
            values[key] = value
            if previous.startswith("#"):
                commented.add(key)
        previous = stripped
    return values, commented


def filled_env() -> dict[str, str]:
    """.env.example with every value a user must fill in filled, as a user would."""
    values, _ = parse_env_file(ENV_EXAMPLE)
    return {key: value or f"filled-{key.lower()}" for key, value in values.items()}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as written (YAML anchors and merge keys resolved)."""
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return load_yaml(K8S_DIR / "deployment.yaml")


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return load_yaml(K8S_DIR / "kustomization.yaml")


# --- compose ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "env", "expected"),
    [
        ("a-${X}-$X-$$X", {"X": "1"}, "a-1-1-$X"),
        ("${X:-d} ${X-d} ${Y-d}", {"X": ""}, "d  d"),
        ("${X:+yes}${Y+set}", {"X": "1", "Y": ""}, "yesset"),
    ],
)
def test_interpolation_follows_compose_rules(
    template: str, env: dict[str, str], expected: str
) -> None:
    assert interpolate(template, env) == expected


def test_interpolation_rejects_what_compose_rejects() -> None:
    with pytest.raises(InterpolationError, match="required variable X is missing a value: why"):
        interpolate("${X:?why}", {"X": ""})
    with pytest.raises(InterpolationError, match="invalid interpolation"):
        interpolate("cost: 5$", {})


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(interpolate_tree(compose, filled_env()))
    ]
    assert errors == []


def test_compose_variables_are_all_documented_in_env_example(compose: dict[str, Any]) -> None:
    documented, commented = parse_env_file(ENV_EXAMPLE)
    assert variables_in(compose) == set(documented), "used in compose vs in .env.example"
    assert set(documented) == commented, "every variable has a comment"


def test_compose_secrets_come_only_from_env_and_have_no_default(compose: dict[str, Any]) -> None:
    required_variable = re.compile(r"\$\{[A-Z0-9_]+(:?\?[^}]*)?\}")
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            if SECRET_NAME.search(key):
                assert required_variable.fullmatch(str(value)), f"{name}: {key}={value}"
            # A credential inside a URL (user:password@host) must be a variable too.
            for password in re.findall(r"://[^/\s:@]+:([^@\s]+)@", str(value)):
                assert required_variable.fullmatch(password), f"{name}: {key}"
    example, _ = parse_env_file(ENV_EXAMPLE)
    assert {key: value for key, value in example.items() if SECRET_NAME.search(key) and value} == {}


@pytest.mark.parametrize(
    "variable", sorted(key for key in parse_env_file(ENV_EXAMPLE)[0] if SECRET_NAME.search(key))
)
def test_compose_refuses_to_start_without_a_secret(compose: dict[str, Any], variable: str) -> None:
    env = filled_env()
    del env[variable]
    with pytest.raises(InterpolationError, match=f"required variable {variable} is missing"):
        interpolate_tree(compose, env)


def _run_with_stand_in(
    argv: list[str], env: Mapping[str, str], program: str, tmp_path: Path
) -> list[str]:
    """Run a service's start script with `program` replaced by a stand-in; its arguments."""
    stand_in = tmp_path / "bin" / program
    stand_in.parent.mkdir(exist_ok=True)
    stand_in.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS"\n')
    stand_in.chmod(0o755)
    arguments = tmp_path / f"{program}.args"
    subprocess.run(
        argv,
        env={
            **env,
            "PATH": f"{stand_in.parent}:{os.environ['PATH']}",
            "TMPDIR": str(tmp_path),
            "ARGS": str(arguments),
        },
        check=True,
        cwd=ROOT,
    )
    return arguments.read_text().splitlines()


def test_object_store_knows_only_mlflows_identity_limited_to_one_bucket(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Runs the seaweedfs service's own start script, with a stand-in for `weed`."""
    service = interpolate_tree(compose["services"]["seaweedfs"], filled_env())
    env = service["environment"]
    arguments = _run_with_stand_in(
        [*service["entrypoint"], *service["command"]], env, "weed", tmp_path
    )
    # Zero sizes the volume count from free disk / 30 GB: on a 75 GB disk two volumes, fewer
    # than a new bucket grows at once, and every upload failed (found running the stack).
    assert "-volume.max=0" not in arguments
    (config_option,) = [a for a in arguments if a.startswith("-s3.config=")]
    config = Path(config_option.partition("=")[2])
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    identities = {entry["name"]: entry for entry in json.loads(config.read_text())["identities"]}
    assert set(identities) == {"mlflow"}, "nobody but MLflow holds S3 keys"
    assert identities["mlflow"]["credentials"] == [
        {"accessKey": env["S3_RW_ACCESS_KEY_ID"], "secretKey": env["S3_RW_SECRET_ACCESS_KEY"]}
    ]
    assert all(action.endswith(f":{env['BUCKET']}") for action in identities["mlflow"]["actions"])


def test_mlflow_runs_behind_basic_auth_with_read_only_default(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Runs the mlflow service's start script (deploy/mlflow/serve.sh) with a stand-in."""
    service = interpolate_tree(compose["services"]["mlflow"], filled_env())
    (mount,) = service["volumes"]
    source, target, _ = mount.split(":")
    entrypoint = [part.replace(target, str(ROOT / source)) for part in service["entrypoint"]]
    env = service["environment"] | {"MLFLOW_BACKEND_STORE_URI": "postgresql://u:hex@db/mlflow"}
    arguments = _run_with_stand_in([*entrypoint, *service["command"]], env, "mlflow", tmp_path)
    assert arguments[:3] == ["server", "--app-name", "basic-auth"]
    (config,) = tmp_path.glob("mlflow-auth.ini")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    auth = configparser.ConfigParser()
    auth.read(config)
    assert auth["mlflow"]["default_permission"] == "READ"
    assert auth["mlflow"]["database_uri"] == env["MLFLOW_BACKEND_STORE_URI"]


def test_compose_serving_holds_no_keys_and_reaches_only_mlflow(compose: dict[str, Any]) -> None:
    services = compose["services"]
    serving = services["serving"]
    assert not [key for key in serving["environment"] if key.startswith(("AWS_", "MLFLOW_S3"))]
    assert serving["environment"]["MLFLOW_TRACKING_USERNAME"] == "serving"
    assert serving["environment"]["MLFLOW_TRACKING_PASSWORD"] == "${MLFLOW_SERVING_PASSWORD}"
    internals = {n for name in ("postgres", "seaweedfs") for n in services[name]["networks"]}
    shared = {name for name, service in services.items() if set(service["networks"]) & internals}
    assert set(serving["networks"]).isdisjoint(internals)
    assert shared == {"postgres", "seaweedfs", "create-bucket", "mlflow"}
    assert all(compose["networks"][name].get("internal") is True for name in internals)
    assert not [name for name in shared if services[name].get("ports") and name != "mlflow"]


def test_compose_replicas_log_to_one_volume_the_trainer_reads(compose: dict[str, Any]) -> None:
    """Every replica writes the same log root, a named volume (no S3 keys needed), each from
    its own spool; the trainer's `experiment report` reads that volume."""
    services = compose["services"]
    serving, trainer = services["serving"], services["trainer"]
    root = serving["environment"]["MODELYARD_PREDICTION_LOG"]
    assert trainer["environment"]["MODELYARD_PREDICTION_LOG"] == root

    def mounts(service: dict[str, Any]) -> dict[str, tuple[str | None, str]]:
        """Mount path -> (volume name or None when anonymous, options)."""
        found = {}
        for entry in service["volumes"]:
            parts = entry.split(":")
            if len(parts) == 1:
                found[parts[0]] = (None, "rw")
            else:
                found[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "rw")
        return found

    volume, options = mounts(serving)[root]
    assert volume in compose["volumes"]
    assert options == "rw"
    assert mounts(trainer)[root][0] == volume
    # The log's file names start with the host name: replicas must keep their own.
    assert not {"hostname", "container_name"} & set(serving)

    spool = Path(serving["environment"]["MODELYARD_PREDICTION_LOG_SPOOL"])
    (holder,) = [Path(path) for path in mounts(serving) if spool.is_relative_to(path)]
    assert mounts(serving)[str(holder)][0] is None, "the spool must be per replica (anonymous)"
    assert Path(serving["environment"]["MODELYARD_STATE_DIR"]) == holder

    runs = " ".join(a for keyword, a in dockerfile_stage("serving") if keyword == "RUN").split()
    assert root in runs[runs.index("install") :], "a fresh volume takes its mount point's owner"


def test_prometheus_scrapes_every_serving_replica(compose: dict[str, Any]) -> None:
    (job,) = load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    command = compose["services"]["serving"]["command"]
    assert discovery["names"] == ["serving"]
    assert discovery["type"] == "A"
    assert str(discovery["port"]) == command[command.index("--port") + 1]
    assert job["metrics_path"] == "/metrics"


# --- Kubernetes ------------------------------------------------------------------------


def test_kubernetes_directory_holds_only_what_the_kustomization_uses(
    kustomization: dict[str, Any],
) -> None:
    generated = [
        name for generator in kustomization["configMapGenerator"] for name in generator["files"]
    ]
    expected = {"kustomization.yaml", SECRET_EXAMPLE, *kustomization["resources"], *generated}
    assert {path.name for path in K8S_DIR.iterdir()} == expected
    assert SECRET_EXAMPLE not in kustomization["resources"]


@pytest.mark.parametrize(
    "manifest",
    [*load_yaml(K8S_DIR / "kustomization.yaml")["resources"], SECRET_EXAMPLE],
)
def test_kubernetes_manifest_matches_the_api_schema(manifest: str) -> None:
    for document in yaml.safe_load_all((K8S_DIR / manifest).read_text()):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_deployment_probes_hit_the_health_endpoints(deployment: dict[str, Any]) -> None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"


def test_deployment_drains_before_it_is_killed(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    # The grace period also has to cover the requests still in flight after the sleep.
    assert pod["terminationGracePeriodSeconds"] >= int(command[1]) + 20


def test_deployment_runs_unprivileged_on_a_read_only_root(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    writable = {
        mount["mountPath"]
        for mount in container["volumeMounts"]
        if not mount.get("readOnly") and "emptyDir" in volumes[mount["name"]]
    }
    assert writable == {"/tmp", "/var/cache/modelyard", "/var/lib/modelyard"}


def test_deployment_keeps_state_on_a_volume_it_does_not_chmod(deployment: dict[str, Any]) -> None:
    """The state setting names the mount itself (root-owned, group fsGroup): serving makes its
    own 0700 directory inside and never changes the mount's mode."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[env["MODELYARD_STATE_DIR"]]]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_kubernetes_serving_logs_to_s3_with_keys_from_the_secret(
    deployment: dict[str, Any],
) -> None:
    """Pods on different nodes share the log through S3; its keys come from the Secret only,
    and the spool is on the state volume, which outlives a container restart."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    secret = load_yaml(K8S_DIR / SECRET_EXAMPLE)
    assert env["MODELYARD_PREDICTION_LOG"]["value"].startswith("s3://")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    assert not [key for key in env if key.startswith("AWS_")]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    spool = Path(env["MODELYARD_PREDICTION_LOG_SPOOL"]["value"])
    assert spool.is_relative_to(env["MODELYARD_STATE_DIR"]["value"])


def test_kubernetes_serving_talks_only_to_mlflow_and_the_log_store(
    deployment: dict[str, Any],
) -> None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    secret = load_yaml(K8S_DIR / SECRET_EXAMPLE)["stringData"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(secret)
    s3_port = urlsplit(env["MLFLOW_S3_ENDPOINT_URL"]).port
    policy = load_yaml(K8S_DIR / "networkpolicy.yaml")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    egress = {
        (port["protocol"], port["port"]) for rule in policy["egress"] for port in rule["ports"]
    }
    assert egress == {("UDP", 53), ("TCP", 53), ("TCP", 5000), ("TCP", s3_port)}
    assert all("to" not in rule or rule["to"] for rule in policy["egress"])
    ingress = [port["port"] for rule in policy["ingress"] for port in rule["ports"]]
    assert ingress == [8000]


def test_kubernetes_objects_refer_to_each_other(
    deployment: dict[str, Any], kustomization: dict[str, Any]
) -> None:
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    labels = pod["metadata"]["labels"]
    service = load_yaml(K8S_DIR / "service.yaml")
    hpa = load_yaml(K8S_DIR / "hpa.yaml")
    pdb = load_yaml(K8S_DIR / "pdb.yaml")
    policy = load_yaml(K8S_DIR / "networkpolicy.yaml")
    secret = load_yaml(K8S_DIR / SECRET_EXAMPLE)

    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert {p["containerPort"] for p in container["ports"]} == {8000}
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]

    (generator,) = kustomization["configMapGenerator"]
    (config_volume,) = [v for v in pod["spec"]["volumes"] if "configMap" in v]
    assert config_volume["configMap"]["name"] == generator["name"]
    (config_mount,) = [m for m in container["volumeMounts"] if m["name"] == config_volume["name"]]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MODELYARD_CONFIG"] == f"{config_mount['mountPath']}/{generator['files'][0]}"


# --- Dockerfile ------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, (keyword, arguments) per line, grouped by stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, arguments = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), arguments.strip()))
    return stages


def dockerfile_stage(name: str) -> list[tuple[str, str]]:
    (stage,) = [stage for stage in dockerfile_stages() if stage[0][1].endswith(f" AS {name}")]
    return stage


def test_dockerfile_builds_on_slim_python() -> None:
    """Every stage is slim Python or an earlier stage; `scratch` only for an empty stage that
    a build context replaces (the wheels of an offline build)."""
    preamble, *stages = dockerfile_stages()
    args = dict(
        arguments.partition("=")[::2] for keyword, arguments in preamble if keyword == "ARG"
    )
    stage_names: set[str] = set()
    for stage in stages:
        base, _, name = stage[0][1].partition(" AS ")
        base = interpolate(base, args)
        if base == "scratch":
            assert stage[1:] == [], f"{name} builds on scratch"
        else:
            assert base in stage_names or re.fullmatch(r"python:3\.11-slim(@sha256:\w+)?", base)
        stage_names.add(name.strip())


def test_dockerfile_images_run_as_a_non_root_user() -> None:
    for stage in dockerfile_stages()[1:]:
        users = [arguments for keyword, arguments in stage if keyword == "USER"]
        if any(keyword in {"ENTRYPOINT", "CMD"} for keyword, _ in stage):
            assert users, f"{stage[0][1]} sets no USER"
            assert users[-1].partition(":")[0] not in {"root", "0"}


def test_dockerfile_serving_image_refuses_pickles_and_keeps_a_private_cache() -> None:
    serving = dockerfile_stage("serving")
    env = " ".join(arguments for keyword, arguments in serving if keyword == "ENV").split()
    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false" in env
    assert "MODELYARD_MODEL_CACHE_DIR=/var/cache/modelyard" in env
    runs = " ".join(arguments for keyword, arguments in serving if keyword == "RUN")
    assert "install -d -o modelyard -g modelyard -m 0700 /var/cache/modelyard" in runs


def test_dockerfile_installs_the_cpu_torch_the_makefile_pins_before_the_project() -> None:
    makefile_pin = re.search(r"torch==[\d.]+", (ROOT / "Makefile").read_text())
    assert makefile_pin
    build = [arguments for keyword, arguments in dockerfile_stage("build") if keyword == "RUN"]
    torch_step = next(i for i, run in enumerate(build) if "torch==" in run)
    project_step = next(i for i, run in enumerate(build) if run.endswith("pip install ."))
    assert torch_step < project_step
    assert makefile_pin.group() in build[torch_step].split()
    assert "--index-url https://download.pytorch.org/whl/cpu" in build[torch_step]


def test_dockerfile_serving_image_transfers_artifacts_through_mlflow_only() -> None:
    """MLflow's server offers its clients presigned S3 URLs (/server-info); serving and the
    trainer have no route to the object store, so the image keeps every transfer proxied.
    Found by running the compose stack: downloads went to http://seaweedfs:8333."""
    env = " ".join(a for keyword, a in dockerfile_stage("serving") if keyword == "ENV").split()
    assert "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false" in env
    assert "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=false" in env
