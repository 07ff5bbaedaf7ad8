"""Session-scoped real components: an S3 server, an MLflow server, and a demo registry.

Starting MLflow takes seconds and logging a model several more, so each is built once per
session. Tests that change the registry register models under names of their own.
"""

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import boto3
import pytest
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from registry.client import connect
from registry.refs import ModelRef
from serving.app import create_app
from serving.settings import ServingSettings
from tests.servers import S3_ENV, free_port, restoring_tracking_uri, start_mlflow, stop
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
    with restoring_tracking_uri():
        os.environ["MLFLOW_TRACKING_URI"] = uri
        yield uri
    stop(process)


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
        classifier_sklearn=train(TrainSpec("sklearn", alias="production"), connect(tracking_uri)),
        classifier_torch=train(
            TrainSpec("torch", alias="staging", epochs=100), connect(tracking_uri)
        ),
        regressor=train(
            TrainSpec("sklearn", dataset="diabetes", alias="production"), connect(tracking_uri)
        ),
    )


def _boto_args() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


def wait_until(
    predicate: Callable[[], bool], timeout_s: float = 60, what: str = "condition"
) -> None:
    """Poll `predicate` until it holds, or fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="session")
def serving(demo_registry: DemoRegistry) -> Iterator[TestClient]:
    """The serving app (lifespan running) on the demo registry, ready. Do not move its aliases."""
    settings = ServingSettings(
        models=["cancer-classifier", "diabetes-regressor"],
        poll_interval_s=0.5,
        admin_token="test-admin-token",  # type: ignore[arg-type]
        strict_models=["diabetes-regressor"],
    )
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: _all_loaded(client), what="the demo models to load")
        yield client


def _all_loaded(client: TestClient) -> bool:
    served = client.get("/models").json()["models"]
    states = [slot["state"] for model in served.values() for slot in model["aliases"].values()]
    return states.count("ready") == 3 and client.get("/health/ready").status_code == 200
