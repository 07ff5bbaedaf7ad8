"""API keys: the keys file, the `modelyard keys` command, and what clients of a served app get
with keys on (401, 403, 429), with the status endpoints protected or not."""

import asyncio
import logging
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from modelyard.cli import app as modelyard
from serving import auth
from serving.app import create_app
from serving.auth import Allowance, ApiKey, KeyFileError, Keyring
from serving.errors import KeyExhausted, PermissionDenied
from serving.settings import ServingSettings
from tests.conftest import DemoRegistry, wait_until
from training.datasets import load_split

CLASSIFIER = "cancer-classifier"
ADMIN = "status-admin-token"


def _add(file: Path, *args: str) -> str:
    """`modelyard keys add ... --file file`: the key it printed."""
    result = CliRunner().invoke(modelyard, ["keys", "add", *args, "--file", str(file)])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def _entry(name: str = "k", **fields: object) -> ApiKey:
    return auth.issue(name, **fields)[1]  # type: ignore[arg-type]


# -- the keys file and `modelyard keys` ------------------------------------------------------


def test_keys_add_writes_a_private_file_and_prints_the_key_once(tmp_path: Path):
    file = tmp_path / "keys.yaml"
    key = _add(file, "ci", "--models", "a,b", "--rate", "5", "--max-concurrency", "2")
    other = _add(file, "ops", "--pin")
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    text = file.read_text()
    assert key not in text
    assert other not in text
    first, second = auth.load_keys(file)
    assert (first.name, first.models, first.pin, first.rate_per_s, first.max_concurrency) == (
        "ci",
        ("a", "b"),
        False,
        5.0,
        2,
    )
    assert (second.name, second.models, second.pin) == ("ops", ("*",), True)
    assert first.matches(key)
    assert not first.matches(other)

    listing = CliRunner().invoke(modelyard, ["keys", "list", "--file", str(file)])
    assert listing.exit_code == 0
    assert "ci " in listing.stdout
    assert " a,b " in listing.stdout
    assert key not in listing.stdout

    again = CliRunner().invoke(modelyard, ["keys", "add", "ci", "--file", str(file)])
    assert again.exit_code == 2
    assert "already has a key named 'ci'" in again.output


A, B = (_entry(name).model_dump(mode="json") for name in "ab")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- name: a\n  lookup: [", "not valid YAML"),
        ("name: a\n", "expected a list of keys"),
        ([A, {"name": "b", "models": "*"}], r"entry 2 \('b'\): lookup: Field required"),
        ([A, A], r"entry 2 \('a'\): the name is used by an earlier entry"),
        ([A, A | {"name": "c"}], r"entry 2 \('c'\): the same key as an earlier entry"),
        ([B | {"rate_per_s": -1}], r"entry 1 \('b'\): rate_per_s: .*greater than 0"),
        ([B | {"colour": "red"}], r"entry 1 \('b'\): colour: Extra inputs"),
        (["b"], r"entry 1: entry: Input should be a valid dictionary"),
    ],
)
def test_a_bad_keys_file_is_refused_naming_file_and_entry(
    tmp_path: Path, content: str | list[object], message: str
):
    file = tmp_path / "keys.yaml"
    file.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    with pytest.raises(KeyFileError, match=f"^{file}: {message}"):
        create_app(ServingSettings(models=["m"], api_keys_file=file))


def test_a_missing_keys_file_is_refused(tmp_path: Path):
    with pytest.raises(KeyFileError, match="cannot read the keys file"):
        create_app(ServingSettings(models=["m"], api_keys_file=tmp_path / "none.yaml"))


# -- the checks, without HTTP ----------------------------------------------------------------


def test_a_verified_key_is_not_hashed_again():
    key, entry = auth.issue("fast")
    keyring = Keyring([entry])

    async def identify_many() -> list[ApiKey | None]:
        return [await keyring.identify(key) for _ in range(2_000)]

    started = time.perf_counter()
    found = asyncio.run(identify_many())
    elapsed = time.perf_counter() - started
    assert found == [entry] * 2_000
    assert elapsed < 2, f"{elapsed:.2f} s: scrypt ran more than once"  # scrypt: ~0.1 s each
    assert asyncio.run(keyring.identify(key + "x")) is None
    assert asyncio.run(keyring.identify("x" * 10_000)) is None


def test_a_key_presented_by_concurrent_requests_is_hashed_once(monkeypatch: pytest.MonkeyPatch):
    key, entry = auth.issue("burst")
    keyring = Keyring([entry])
    checked = []
    matches = ApiKey.matches

    def counted(self: ApiKey, presented: str) -> bool:
        checked.append(presented)
        return matches(self, presented)

    monkeypatch.setattr(ApiKey, "matches", counted)

    async def identify_at_once() -> list[ApiKey | None]:
        return await asyncio.gather(*(keyring.identify(key) for _ in range(20)))

    assert asyncio.run(identify_at_once()) == [entry] * 20
    assert checked == [key]


@pytest.mark.parametrize(
    ("models", "pin", "model", "alias", "allowed"),
    [
        (("*",), False, "iris", None, True),
        (("iris",), False, "iris", "production", True),
        (("iris",), False, "wine", None, False),
        (("iris",), False, "iris", "staging", False),
        (("iris",), True, "iris", "staging", True),
        (("iris",), True, "wine", "staging", False),
    ],
)
def test_admit_checks_model_and_pinned_alias(
    models: tuple[str, ...], pin: bool, model: str, alias: str | None, allowed: bool
):
    keyring = Keyring([_entry(models=models, pin=pin)])
    key = keyring.keys[0]
    if allowed:
        keyring.admit(key, model, alias, "production").release()
    else:
        with pytest.raises(PermissionDenied, match="API key 'k' may not"):
            keyring.admit(key, model, alias, "production")


def test_allowance_bounds_rate_and_concurrency():
    limited = Allowance(_entry(rate_per_s=2, max_concurrency=3))
    now = limited.updated
    limited.take(now)
    limited.take(now)
    with pytest.raises(KeyExhausted, match="over its rate of 2 requests/s") as over:
        limited.take(now)
    assert over.value.headers == {"Retry-After": "1"}
    limited.take(now + 0.5)
    with pytest.raises(KeyExhausted, match="already has 3 requests in flight"):
        limited.take(now + 10)
    limited.release()
    limited.take(now + 10)

    slow = Allowance(_entry(rate_per_s=0.1))
    slow.take(slow.updated)
    with pytest.raises(KeyExhausted) as wait:
        slow.take(slow.updated)
    assert wait.value.headers == {"Retry-After": "10"}


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        (
            "MLflow tracking server at http://alice:s3cret@mlflow:5000/api is not reachable",
            "MLflow tracking server at http://***@mlflow:5000/api is not reachable",
        ),
        ("s3://bucket/x?X-Amz-Signature=abc&part=1", "s3://bucket/x?X-Amz-Signature=***&part=1"),
        ("url?token=t0k&api_key=k3y&password=pw", "url?token=***&api_key=***&password=***"),
        ("header Authorization: Bearer abc.def", "header Authorization: Bearer ***"),
        ("model 'iris' alias 'staging' is loading", "model 'iris' alias 'staging' is loading"),
    ],
)
def test_scrub_masks_credentials(text: str, scrubbed: str):
    assert auth.scrub(text) == scrubbed


@pytest.mark.parametrize("text", ["a." * 5_000, "model-" * 2_000, "key" * 5_000])
def test_scrub_takes_linear_time(text: str):
    started = time.perf_counter()
    assert auth.scrub(text) == text
    assert time.perf_counter() - started < 0.5  # the backtracking pattern took 16 s on "a." ...


# -- a served app with keys ------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Keys by name, issued into a keys file; its path under "file"."""
    file = tmp_path_factory.mktemp("keys") / "keys.yaml"
    return {
        "any": _add(file, "any"),
        "pinner": _add(file, "pinner", "--pin"),
        "regressor": _add(file, "regressor", "--models", "diabetes-regressor"),
        "slow": _add(file, "slow", "--rate", "0.1"),
        "file": str(file),
    }


@pytest.fixture(scope="module")
def keyed(demo_registry: DemoRegistry, keys: dict[str, str]) -> Iterator[TestClient]:
    """The classifier served with API keys on and the status endpoints protected."""
    settings = ServingSettings(
        models=[CLASSIFIER],
        api_keys_file=Path(keys["file"]),
        protect_status=True,
        admin_token=ADMIN,  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: _both_loaded(client), what="the classifier's aliases to load")
        yield client


def _both_loaded(client: TestClient) -> bool:
    served = client.get("/models", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    aliases = served["models"].get(CLASSIFIER, {}).get("aliases", {})
    return bool(aliases) and all(slot["state"] == "ready" for slot in aliases.values())


def _body() -> dict[str, object]:
    frame = load_split("breast-cancer").x_holdout.head(2)
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}


def _post(client: TestClient, path: str, key: str | None) -> httpx.Response:
    """POST a prediction request, with `key` as a bearer token when given."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return client.post(path, json=_body(), headers=headers)


def test_prediction_needs_a_known_key(
    keyed: TestClient, keys: dict[str, str], caplog: pytest.LogCaptureFixture
):
    path = f"/models/{CLASSIFIER}/invocations"
    with caplog.at_level(logging.INFO, logger="serving.requests"):
        missing = _post(keyed, path, None)
    assert missing.status_code == 401
    assert missing.json()["error_code"] == "UNAUTHENTICATED"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert "X-Model-Version" not in missing.headers
    logged = [r.__dict__["status"] for r in caplog.records if r.getMessage() == "prediction"]
    assert logged == [401]

    unknown = _post(keyed, path, "not-a-key")
    assert unknown.status_code == 401
    assert "not valid" in unknown.json()["message"]
    assert _post(keyed, path, keys["any"]).status_code == 200
    by_header = keyed.post(path, json=_body(), headers={"X-API-Key": keys["any"]})
    assert by_header.status_code == 200
    assert _post(keyed, "/invocations", keys["any"]).status_code == 200
    metrics = keyed.get("/metrics", headers={"X-API-Key": keys["any"]}).text
    assert 'modelyard_requests_by_key_total{key="-",status="401"} 2.0' in metrics


def test_the_log_line_names_the_key_never_the_key(
    keyed: TestClient, keys: dict[str, str], caplog: pytest.LogCaptureFixture
):
    path = f"/models/{CLASSIFIER}/invocations"
    with caplog.at_level(logging.INFO, logger="serving.requests"):
        assert _post(keyed, path, keys["any"]).status_code == 200
        assert _post(keyed, f"/models/{CLASSIFIER}/aliases/staging/invocations", keys["any"])
    logged = [r.__dict__ for r in caplog.records if r.getMessage() == "prediction"]
    assert [(line["key"], line["status"]) for line in logged] == [("any", 200), ("any", 403)]
    assert keys["any"] not in caplog.text


def test_a_key_calls_only_its_models(keyed: TestClient, keys: dict[str, str]):
    refused = _post(keyed, f"/models/{CLASSIFIER}/invocations", keys["regressor"])
    assert refused.status_code == 403
    assert refused.json() == {
        "error_code": "PERMISSION_DENIED",
        "message": f"API key 'regressor' may not call model '{CLASSIFIER}'",
    }
    assert _post(keyed, "/invocations", keys["regressor"]).status_code == 403


def test_pinning_another_alias_needs_the_pin_permission(keyed: TestClient, keys: dict[str, str]):
    staging = f"/models/{CLASSIFIER}/aliases/staging/invocations"
    production = f"/models/{CLASSIFIER}/aliases/production/invocations"
    refused = _post(keyed, staging, keys["any"])
    assert refused.status_code == 403
    assert "may not pin alias 'staging'" in refused.json()["message"]
    assert _post(keyed, production, keys["any"]).status_code == 200
    pinned = _post(keyed, staging, keys["pinner"])
    assert pinned.status_code == 200
    assert pinned.headers["X-Model-Alias"] == "staging"


def test_a_key_over_its_rate_gets_429_with_retry_after(keyed: TestClient, keys: dict[str, str]):
    path = f"/models/{CLASSIFIER}/invocations"
    assert _post(keyed, path, keys["slow"]).status_code == 200
    over = _post(keyed, path, keys["slow"])
    assert over.status_code == 429
    assert over.json()["error_code"] == "RESOURCE_EXHAUSTED"
    assert 1 <= int(over.headers["Retry-After"]) <= 10
    metrics = keyed.get("/metrics", headers={"X-API-Key": keys["any"]}).text
    assert 'modelyard_requests_by_key_total{key="slow",status="429"} 1.0' in metrics
    assert 'modelyard_requests_by_key_total{key="slow",status="200"} 1.0' in metrics
    assert keys["slow"] not in metrics


@pytest.mark.parametrize("path", ["/models", "/metrics", "/docs", "/openapi.json"])
def test_protected_status_needs_a_key_or_the_admin_token(
    keyed: TestClient, keys: dict[str, str], path: str
):
    assert keyed.get(path).status_code == 401
    assert keyed.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert keyed.get(path, headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    assert keyed.get(path, headers={"X-API-Key": keys["regressor"]}).status_code == 200


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/ping", "/health", "/version"])
def test_health_endpoints_stay_open(keyed: TestClient, path: str):
    assert keyed.get(path).status_code == 200


@pytest.mark.parametrize("path", ["/models", "/metrics", "/docs", "/openapi.json"])
def test_status_is_open_unless_protected(serving: TestClient, path: str):
    assert serving.get(path).status_code == 200
