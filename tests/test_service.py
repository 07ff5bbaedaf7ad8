"""Service.invoke returns an Outcome for every request, errors included; nothing is raised."""

import asyncio
import functools
import json

import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving import protocol
from serving.errors import UnknownModel
from serving.service import Outcome, Service
from serving.settings import ServingSettings
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


def _before_the_first_poll(settings: ServingSettings, name: str | None) -> Outcome:
    """`Service.invoke` on a service that has not read the registry yet."""
    body = json.dumps({"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}).encode()
    return asyncio.run(Service(settings).invoke(name, None, body, "application/json"))


def test_nothing_served_yet_is_503_with_retry_after():
    outcome = _before_the_first_poll(ServingSettings(), None)
    assert outcome.status == 503
    assert outcome.error is not None
    assert outcome.error.headers == {"Retry-After": "1"}
    assert "no model is served yet" in str(outcome.error)


def test_a_configured_model_not_read_yet_is_503_not_404():
    settings = ServingSettings(models=["iris"])
    for name in (None, "iris"):
        outcome = _before_the_first_poll(settings, name)
        assert outcome.status == 503
        assert outcome.error is not None
        assert outcome.error.headers == {"Retry-After": "1"}
    assert _before_the_first_poll(settings, "wine").status == 404


def test_large_bodies_are_decoded_off_the_event_loop(
    serving: TestClient, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
):
    on_the_loop: list[bool] = []
    decode = protocol.decode

    def watched(*args: object, **kwargs: object) -> protocol.Decoded:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            on_the_loop.append(False)
        else:
            on_the_loop.append(True)
        return decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(protocol, "decode", watched)
    large = pd.concat([frame] * 1000)
    service: Service = serving.app.state.service  # type: ignore[attr-defined]
    assert len(json.dumps(_split(large))) > service.settings.decode_in_thread_bytes
    assert _invoke(serving, MODEL, "production", _split(large)).status == 200
    assert _invoke(serving, MODEL, "production", _split(frame)).status == 200
    assert on_the_loop == [False, True]
