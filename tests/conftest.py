"""Session-scoped real components: an S3 server, an MLflow server, and a demo registry.

Starting MLflow takes seconds and logging a model several more, so each is built once per
session. Tests that change the registry register models under names of their own.
"""

import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from moto.server import ThreadedMotoServer

from registry.refs import ModelRef
from tests.servers import S3_ENV, free_port, start_mlflow
from training.run import TrainSpec, train

BUCKET = "modelyard-test"


@dataclass(frozen=True)
class S3:
    """An S3 endpoint and a client for it."""

    endpoint: str
    client: object


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """moto's threaded S3 server (the real S3 protocol over HTTP), with the artifact bucket."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, **_boto_args())
    client.create_bucket(Bucket=BUCKET)
    yield S3(endpoint, client)
    server.stop()


@pytest.fixture(scope="session")
def tracking_uri(s3: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on SQLite with artifacts proxied to the S3 bucket."""
    uri, process = start_mlflow(tmp_path_factory.mktemp("mlflow"), s3.endpoint, BUCKET)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(20)


@dataclass(frozen=True)
class DemoRegistry:
    """The demo models, registered once per session. Do not move their aliases."""

    tracking_uri: str
    classifier_sklearn: ModelRef
    classifier_torch: ModelRef
    regressor: ModelRef


@pytest.fixture(scope="session")
def demo_registry(tracking_uri: str) -> DemoRegistry:
    """cancer-classifier: scikit-learn @production, PyTorch @staging; diabetes-regressor."""
    return DemoRegistry(
        tracking_uri,
        classifier_sklearn=train(TrainSpec("sklearn", alias="production"), tracking_uri),
        classifier_torch=train(TrainSpec("torch", alias="staging", epochs=100), tracking_uri),
        regressor=train(TrainSpec("sklearn", dataset="diabetes", alias="production"), tracking_uri),
    )


def _boto_args() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }
