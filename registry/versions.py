"""Resolving aliases to exact versions, registering versions, waiting for READY."""

import logging
import time

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from registry.errors import AliasNotFound, ModelNotFound, VersionNotFound, VersionNotReady
from registry.refs import ModelRef

logger = logging.getLogger(__name__)

_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


def resolve(client: MlflowClient, name: str, alias: str) -> ModelRef:
    """The exact version `alias` names now."""
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code != _NOT_FOUND and "INVALID_PARAMETER_VALUE" not in exc.error_code:
            raise
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            raise ModelNotFound(name) from exc
        raise AliasNotFound(name, alias) from exc
    return _ref(version, alias)


def get(client: MlflowClient, name: str, version: str) -> ModelRef:
    """The reference for an exact version, checked to exist."""
    return _ref(_model_version(client, name, version), None)


def _model_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code != _NOT_FOUND:
            raise
        raise VersionNotFound(name, version) from exc


def find(client: MlflowClient, name: str, alias_or_version: str) -> ModelRef:
    """The exact version named by a version number (all digits) or else by an alias."""
    if alias_or_version.isdigit():
        return get(client, name, alias_or_version)
    return resolve(client, name, alias_or_version)


def register(
    client: MlflowClient,
    model_uri: str,
    name: str,
    *,
    run_id: str | None,
    model_id: str | None = None,
    timeout_s: float = 300,
) -> ModelRef:
    """Register a logged model as a new version of `name` and wait until it is READY."""
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != _NOT_FOUND:
            raise
        client.create_registered_model(name)
    created = client.create_model_version(
        name, model_uri, run_id=run_id, model_id=model_id, await_creation_for=0
    )
    wait_until_ready(client, name, created.version, timeout_s=timeout_s)
    logger.info("registered %s version %s", name, created.version)
    return ModelRef(name=name, version=str(created.version), run_id=run_id)


def set_alias(client: MlflowClient, ref: ModelRef, alias: str) -> ModelRef:
    """Point `alias` at `ref`'s version."""
    client.set_registered_model_alias(ref.name, alias, ref.version)
    logger.info("alias %s@%s -> version %s", ref.name, alias, ref.version)
    return ModelRef(name=ref.name, version=ref.version, run_id=ref.run_id, alias=alias)


def wait_until_ready(
    client: MlflowClient, name: str, version: str, *, timeout_s: float = 300, poll_s: float = 0.5
) -> None:
    """Block until the version's status is READY; raise VersionNotReady if it fails or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get_model_version(name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise VersionNotReady(name, version, status)
        time.sleep(poll_s)


def _ref(version: ModelVersion, alias: str | None) -> ModelRef:
    return ModelRef(
        name=version.name, version=str(version.version), run_id=version.run_id, alias=alias
    )


def get_ready(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """An exact version as the registry records it, only if its status is READY (never waits)."""
    found = _model_version(client, name, version)
    if found.status != "READY":
        raise VersionNotReady(name, version, found.status)
    return found


def tag(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on one model version."""
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
