"""What the status and admin routes give away: no routing salt, no credentials in error texts,
no admin access with an empty token. The credentials case runs `python -m serving` against a
tracking URI that holds them, as an operator would misconfigure it."""

from collections.abc import Iterator

import pytest
import requests
from fastapi.testclient import TestClient

from tests.conftest import wait_until
from tests.sockets import Served, serving_process

LEAKY_REGISTRY = "http://alice:s3cret-pw@127.0.0.1:9/?token=t0k3n&user=alice"
"""Credentials in userinfo and query, on the discard port: nothing answers."""
SECRETS = ("s3cret-pw", "t0k3n")


def test_models_never_shows_the_routing_salt(serving: TestClient):
    served = serving.get("/models").json()["models"]
    assert served
    for model in served.values():
        assert "salt" not in model["traffic"]
        assert model["traffic"]["weights"]


@pytest.fixture(scope="module")
def misconfigured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`python -m serving` with credentials in its tracking URI and an empty admin token."""
    settings = {"MODELYARD_MODELS": "any-model", "MODELYARD_ADMIN_TOKEN": ""}
    log = tmp_path_factory.mktemp("hostile") / "serving.log"
    with serving_process(LEAKY_REGISTRY, settings, log, ready="/health/live") as process:
        wait_until(
            lambda: requests.get(f"{process.url}/models", timeout=5).json()["registry_error"],
            60,
            "the registry error",
        )
        yield process


@pytest.mark.parametrize("path", ["/models", "/health/ready"])
def test_registry_errors_are_shown_without_credentials(misconfigured: Served, path: str):
    text = requests.get(f"{misconfigured.url}{path}", timeout=5).text
    assert "not reachable" in text
    assert "http://***@127.0.0.1:9" in text
    for secret in SECRETS:
        assert secret not in text


def test_an_empty_admin_token_refuses_admin_requests(misconfigured: Served):
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer"}):
        response = requests.post(f"{misconfigured.url}/admin/refresh", headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json() == {
            "error_code": "UNAUTHENTICATED",
            "message": "no admin token is configured here (MODELYARD_ADMIN_TOKEN)",
        }
