"""MLflow's own tracking server delivers an alias webhook, and the serving process follows it.

No signature is computed here: the MLflow server signs the delivery with the secret it was
given, and `python -m serving` verifies it. The serving process polls the registry only every
300 s (at least 240 s with its jitter), so following an alias move within seconds can only be
the webhook's doing.
"""

import json
import time
from collections.abc import Iterator

import pytest
import requests

from registry.client import connect
from registry.webhooks import ensure_alias_webhook
from tests.conftest import BUCKET, S3
from tests.servers import start_mlflow, stop
from tests.sockets import serving_process
from training.datasets import load_split
from training.faults import register_fault_model

pytestmark = pytest.mark.slow

MODEL = "webhook-delivered-clf"
SECRET = "webhook-delivery-test-secret"
POLL_INTERVAL_S = 300
FOLLOW_WITHIN_S = 60
"""Download, load and warm-up of the new version included; far below the poll interval."""


@pytest.fixture(scope="module")
def webhook_tracking_uri(s3: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tracking server of this module's own, whose webhook cache turns over every second.

    MLflow caches each event's webhook list for MLFLOW_WEBHOOK_CACHE_TTL (60 s by default):
    on the session's server, where other tests move aliases, a webhook registered during the
    run could stay unseen for a minute.
    """
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("MLFLOW_WEBHOOK_CACHE_TTL", "1")
        uri, process = start_mlflow(tmp_path_factory.mktemp("mlflow-webhooks"), s3.endpoint, BUCKET)
    try:
        yield uri
    finally:
        stop(process)


def _answered_by(url: str, body: bytes) -> str:
    response = requests.post(
        f"{url}/models/{MODEL}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.headers["X-Model-Version"]


def test_mlflow_delivers_the_alias_webhook_and_serving_follows_before_polling(
    webhook_tracking_uri: str, tmp_path_factory: pytest.TempPathFactory
):
    client = connect(webhook_tracking_uri)
    first = register_fault_model(MODEL, client, alias="production")
    second = register_fault_model(MODEL, client)
    frame = load_split("breast-cancer").x_holdout.head(1)
    split = {"columns": list(frame.columns), "data": frame.values.tolist()}
    body = json.dumps({"dataframe_split": split}).encode()
    settings = {
        "MODELYARD_MODELS": MODEL,
        "MODELYARD_ALIASES": "production",
        "MODELYARD_WEBHOOK_SECRET": SECRET,
        "MODELYARD_POLL_INTERVAL_S": str(POLL_INTERVAL_S),
    }
    log = tmp_path_factory.mktemp("webhook-serving") / "serving.log"
    with serving_process(webhook_tracking_uri, settings, log) as served:
        started = time.monotonic()  # its first poll is behind it: the next is >= 240 s away
        assert _answered_by(served.url, body) == first.version
        ensure_alias_webhook(client, "modelyard-serving", f"{served.url}/webhooks/mlflow", SECRET)
        time.sleep(2)  # the server's webhook list, cached for a second, now includes it

        client.set_registered_model_alias(MODEL, "production", second.version)
        moved = time.monotonic()
        while _answered_by(served.url, body) != second.version:
            assert time.monotonic() - moved < FOLLOW_WITHIN_S, (
                f"still version {first.version} {FOLLOW_WITHIN_S} s after the move; "
                f"serving log:\n{served.child.tail(30)}"
            )
            time.sleep(0.2)
        followed = time.monotonic()
        assert followed - started < POLL_INTERVAL_S * 0.8  # no poll could have seen the move
        status = requests.get(f"{served.url}/models", timeout=10).json()
        alias = status["models"][MODEL]["aliases"]["production"]
        assert (alias["version"], alias["registry_version"]) == (second.version, second.version)
