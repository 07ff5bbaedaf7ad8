"""Downloading model versions into private directories and loading them as pyfuncs."""

import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import TypeAlias

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel
from mlflow.tracking import MlflowClient

from registry import versions
from registry.cache import ModelCache, VersionId
from registry.errors import ArtifactUnavailable
from registry.refs import ModelRef

logger = logging.getLogger(__name__)

PyFunc: TypeAlias = PyFuncModel
"""A loaded model version, as MLflow's pyfunc flavour presents it."""


def private_dir(base: Path | None, name: str) -> Path:
    """A directory only this user can use (0700), for model artifacts (code) and state.

    `base` itself is left as it is (it may be a mount owned by root that this user may only
    write to): the private directory is `base/name`, created by this user. Without `base`, a
    fresh temporary directory.
    """
    if base is None:
        return Path(tempfile.mkdtemp(prefix=f"modelyard-{name}-"))
    base.mkdir(parents=True, exist_ok=True)
    private = base / name
    private.mkdir(mode=0o700, exist_ok=True)
    info = private.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{private} is not a directory owned by uid {os.getuid()}")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(private, 0o700)  # ours: made by an earlier run under another umask
    return private


def identify(client: MlflowClient, name: str, version: str) -> tuple[ModelRef, VersionId]:
    """An exact version, only if READY, and the identity its cache entry is keyed by."""
    found = versions.get_ready(client, name, version)
    identity = VersionId(name, version, found.run_id, found.source or "", found.model_id)
    return ModelRef(name, version, found.run_id), identity


def load_cached(
    version: VersionId, cache: ModelCache, tracking_uri: str | None, *, offline: bool = False
) -> PyFuncModel:
    """Load `version` from `cache`, downloading it first unless a verified entry exists.

    `offline`: the registry is unreachable, only a verified entry will do.
    """

    def download(directory: Path) -> None:
        uri = f"models:/{version.name}/{version.version}"
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(directory), tracking_uri=tracking_uri
        )

    entry = cache.fetch(version, None if offline else download)
    logger.info("loading %s version %s from %s", version.name, version.version, entry)
    model: PyFuncModel = mlflow.pyfunc.load_model(str(entry))
    return model


def load(ref: ModelRef, directory: Path, tracking_uri: str | None = None) -> PyFuncModel:
    """Download `ref` (an exact version) under `directory`, afresh, and load it as a pyfunc."""
    destination = directory / ref.name / ref.version
    destination.mkdir(parents=True, exist_ok=True, mode=0o700)
    mlflow.artifacts.download_artifacts(
        artifact_uri=ref.uri, dst_path=str(destination), tracking_uri=tracking_uri
    )
    logger.info("loading %s from %s", ref, destination)
    model: PyFuncModel = mlflow.pyfunc.load_model(str(destination))
    return model


def fetch_artifact(uri: str, directory: Path, tracking_uri: str | None = None) -> Path:
    """Download one artifact (`runs:/...`, `models:/...`, `s3://...`) under `directory`."""
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(directory), tracking_uri=tracking_uri
        )
    except MlflowException as exc:
        raise ArtifactUnavailable(uri, exc.message) from exc
    return Path(local)
