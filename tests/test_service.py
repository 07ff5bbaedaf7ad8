"""Service.invoke returns an Outcome for every request, errors included; nothing is raised."""

import functools
import json

import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.errors import UnknownModel
from serving.service import Outcome, Service
from tests.conftest import DemoRegistry
from training.datasets import load_split

MODEL = "cancer-classifier"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return load_split("breast-cancer").x_holdout.head(2)


def _invoke(client: TestClient, name: str | None, alias: str | None, body: object) -> Outcome:
    """`Service.invoke` on the app's own event loop, as the routes call it."""
    service: Service = client.app.state.service  # type: ignore[attr-defined]
    call = functools.partial(
        service.invoke, name, alias, json.dumps(body).encode(), "application/json"
    )
    outcome: Outcome = client.portal.call(call)  # type: ignore[union-attr]
    return outcome


def _split(frame: pd.DataFrame) -> dict[str, object]:
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}


def test_outcome_of_an_answer_names_the_version(
    serving: TestClient, demo_registry: DemoRegistry, frame: pd.DataFrame
):
    outcome = _invoke(serving, MODEL, "production", _split(frame.assign(note=["a", "b"])))
    assert outcome.status == 200
    assert outcome.error is None
    assert outcome.ref is not None
    assert outcome.ref.version == demo_registry.classifier_sklearn.version
    assert outcome.ref.run_id == demo_registry.classifier_sklearn.run_id
    assert outcome.alias == "production"
    assert outcome.extra_columns == ("note",)
    assert not outcome.fallback
    assert outcome.latency_s > 0
    assert len(outcome.request_id) == 32
    assert len(orjson.loads(outcome.body)["predictions"]) == 2


def test_outcome_of_invalid_input_names_the_version_that_refused_it(
    serving: TestClient, demo_registry: DemoRegistry, frame: pd.DataFrame
):
    rows = frame.values.tolist()
    rows[0][0] = "many"
    body = {"dataframe_split": {"columns": list(frame.columns), "data": rows}}
    outcome = _invoke(serving, MODEL, "staging", body)
    assert outcome.status == 400
    assert outcome.error is not None
    assert "mean_radius" in str(outcome.error)
    assert outcome.ref is not None
    assert outcome.ref.version == demo_registry.classifier_torch.version
    assert outcome.alias == "staging"
    assert outcome.body == b""


def test_outcome_before_routing_names_no_version(serving: TestClient, frame: pd.DataFrame):
    outcome = _invoke(serving, "no-such-model", None, _split(frame))
    assert outcome.status == 404
    assert isinstance(outcome.error, UnknownModel)
    assert outcome.ref is None
    assert outcome.alias is None


def test_default_model_is_the_first_served(serving: TestClient, frame: pd.DataFrame):
    outcome = _invoke(serving, None, None, _split(frame))
    assert outcome.status == 200
    assert outcome.ref is not None
    assert outcome.ref.name == MODEL
