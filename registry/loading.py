"""Downloading a model version into a private directory and loading it as a pyfunc."""

import logging
import os
import tempfile
from pathlib import Path
from typing import TypeAlias

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel

from registry.errors import ArtifactUnavailable
from registry.refs import ModelRef

logger = logging.getLogger(__name__)

PyFunc: TypeAlias = PyFuncModel
"""A loaded model version, as MLflow's pyfunc flavour presents it."""


def private_dir(base: Path | None) -> Path:
    """A directory only this user can read (0700): model artifacts are code."""
    if base is None:
        return Path(tempfile.mkdtemp(prefix="modelyard-models-"))
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    return base


def load(ref: ModelRef, cache_dir: Path, tracking_uri: str | None = None) -> PyFuncModel:
    """Download `ref` (an exact version) under `cache_dir` and load it as a pyfunc model."""
    destination = cache_dir / ref.name / ref.version
    if not (destination / "MLmodel").exists():
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
