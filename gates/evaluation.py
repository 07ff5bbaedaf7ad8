"""The data a gate scores both versions on, chosen so the candidate cannot pick its own exam.

In order: the dataset the policy pins (its sha256 checked), a file the caller names, or the
holdout logged with the BASELINE's training run. Never the candidate's own holdout: a
candidate trained on another split would bring an exam it has seen.
"""

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import requests

from gates.errors import DatasetMismatch, EvaluationError
from gates.policy import DataRule
from registry.contract import HOLDOUT_ARTIFACT, HOLDOUT_TARGET, Task
from registry.errors import RegistryError
from registry.loading import fetch_artifact
from registry.refs import ModelRef

Kind = Literal["pinned", "file", "baseline holdout"]


@dataclass(frozen=True, slots=True)
class DataSource:
    """Where the evaluation data comes from, decided before anything is fetched."""

    kind: Kind
    location: str
    target: str
    sha256: str | None = None

    def describe(self) -> str:
        """One line for reports: which data, and why it is the fair one."""
        why = {
            "pinned": "pinned by the policy",
            "file": "given with --data",
            "baseline holdout": "holdout logged with the baseline's training run",
        }[self.kind]
        return f"{why}: {self.location}"


@dataclass(frozen=True, slots=True, eq=False)
class EvaluationData:
    """Features and target of the evaluation rows, and the digest of the bytes they came from."""

    source: DataSource
    features: pd.DataFrame
    target: np.ndarray
    sha256: str

    @property
    def rows(self) -> int:
        """How many rows both versions are scored on."""
        return len(self.target)


def choose(
    rule: DataRule, data_file: Path | None, baseline: ModelRef | None, policy_dir: Path
) -> DataSource:
    """The evaluation data the policy, the caller and the baseline allow, in that order.

    A pinned dataset's relative path is read from the policy's own directory.
    """
    if rule.uri is not None:
        if data_file is not None:
            raise EvaluationError(
                f"the policy pins its evaluation data ({rule.uri}); --data cannot replace it"
            )
        location = rule.uri if _has_scheme(rule.uri) else str(policy_dir / rule.uri)
        return DataSource("pinned", location, rule.target, rule.sha256)
    if data_file is not None:
        return DataSource("file", str(data_file), rule.target)
    if baseline is None:
        raise EvaluationError(
            "no evaluation data: there is no baseline whose holdout could serve; "
            "pin a dataset in the policy (data: uri, sha256) or pass --data"
        )
    if baseline.run_id is None:
        raise EvaluationError(
            f"baseline {baseline} has no training run, so no logged holdout; "
            "pin a dataset in the policy or pass --data"
        )
    location = f"runs:/{baseline.run_id}/{HOLDOUT_ARTIFACT}"
    return DataSource("baseline holdout", location, HOLDOUT_TARGET)


def fetch(source: DataSource, tracking_uri: str | None = None) -> EvaluationData:
    """Download (or read) the data, check a pinned digest, split off the target column."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = _download(source.location, Path(tmp), tracking_uri)
        except EvaluationError as exc:
            if source.kind != "baseline holdout":
                raise
            raise EvaluationError(
                f"{exc} (was the baseline trained by modelyard? if not, pin a dataset in the "
                "policy or pass --data)"
            ) from exc
        digest = sha256_of(path)
        if source.sha256 is not None and digest != source.sha256:
            raise DatasetMismatch(source.location, source.sha256, digest)
        frame = read_frame(path, source.location)
    if source.target not in frame.columns:
        raise EvaluationError(
            f"evaluation data {source.location} has no target column '{source.target}' "
            f"(columns: {', '.join(map(str, frame.columns[:8]))}...)"
        )
    if frame.empty:
        raise EvaluationError(f"evaluation data {source.location} has no rows")
    target = frame[source.target]
    if target.isna().any():
        raise EvaluationError(f"evaluation data {source.location}: target has missing values")
    return EvaluationData(source, frame.drop(columns=[source.target]), target.to_numpy(), digest)


def check_target(data: EvaluationData, task: Task) -> None:
    """Classification targets must be the binary labels 0 and 1 of the output contract."""
    if task == "classification" and not np.isin(data.target, (0, 1)).all():
        found = ", ".join(map(str, np.unique(data.target)[:5]))
        raise EvaluationError(
            f"evaluation data {data.source.location}: a classification target holds 0 and 1, "
            f"found {found}"
        )
    if task == "regression" and not np.issubdtype(data.target.dtype, np.number):
        raise EvaluationError(
            f"evaluation data {data.source.location}: a regression target must be numeric"
        )


def read_frame(path: Path, name: str) -> pd.DataFrame:
    """A CSV (header row) or Parquet file as a DataFrame, by the file name's suffix."""
    suffix = Path(urlparse(name).path).suffix.lower() or path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot read evaluation data {name}: {exc}") from exc
    raise EvaluationError(f"evaluation data {name}: use a .csv or .parquet file")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(location: str, directory: Path, tracking_uri: str | None) -> Path:
    """A local file holding `location`'s bytes: a path, file:, http(s): or any MLflow URI."""
    parsed = urlparse(location)
    try:
        if not _has_scheme(location) or parsed.scheme == "file":
            path = Path(parsed.path if parsed.scheme == "file" else location)
            if not path.is_file():
                raise EvaluationError(f"evaluation data {location}: no such file")
            return path
        target = directory / (Path(parsed.path).name or "data")
        if parsed.scheme in ("http", "https"):
            with requests.get(location, timeout=60, stream=True) as response:
                response.raise_for_status()
                with target.open("wb") as out:
                    for chunk in response.iter_content(1 << 20):
                        out.write(chunk)
            return target
        return fetch_artifact(location, directory, tracking_uri)
    except (OSError, RegistryError, requests.RequestException) as exc:
        raise EvaluationError(f"cannot fetch evaluation data {location}: {exc}") from exc


def _has_scheme(location: str) -> bool:
    """URIs have a scheme of two letters or more; `C:` is a Windows drive, not a scheme."""
    return len(urlparse(location).scheme) > 1
