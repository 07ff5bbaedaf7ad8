"""Shadow mode: staging scores a sample of production traffic; clients never notice."""

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from registry.client import connect
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import wait_until
from training.datasets import load_split
from training.faults import register_fault_model

MODEL = "shadow-clf"
FLIP = 0.3


@pytest.fixture(scope="module")
def client(tracking_uri: str):
    register_fault_model(MODEL, connect(tracking_uri), alias="production")
    register_fault_model(MODEL, connect(tracking_uri), alias="staging", flip_fraction=FLIP)
    settings = ServingSettings(models=[MODEL], poll_interval_s=0.3, shadow={MODEL: 1.0})
    with TestClient(create_app(settings)) as test_client:
        wait_until(lambda: _states(test_client) == ["ready", "ready"], what="both aliases")
        yield test_client


def _states(client: TestClient) -> list[str]:
    served = client.get("/models").json()["models"].get(MODEL, {"aliases": {}})
    return [slot["state"] for slot in served["aliases"].values()]


def test_shadow_records_disagreement_and_never_changes_the_answer(client: TestClient):
    frame: pd.DataFrame = load_split("breast-cancer").x_holdout
    body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
    path = f"/models/{MODEL}/aliases/production/invocations"
    answers = [client.post(path, json=body) for _ in range(3)]
    assert {a.headers["X-Model-Alias"] for a in answers} == {"production"}
    assert answers[0].json() == answers[1].json() == answers[2].json()
    staging = client.post(f"/models/{MODEL}/aliases/staging/invocations", json=body).json()
    assert staging != answers[0].json()  # the shadow does disagree; the client never sees it

    def recorded() -> dict[str, float]:
        shadow = client.get("/models").json()["models"][MODEL]["shadow"]
        return next(iter(shadow.values()), {"rows": 0})

    wait_until(lambda: recorded()["rows"] >= 3 * len(frame), what="shadow comparisons")
    agreement = recorded()["agreement"]
    assert 1 - FLIP - 0.08 <= agreement <= 1 - FLIP + 0.08
    assert "modelyard_shadow_agreed_rows_total" in client.get("/metrics").text
