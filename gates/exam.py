"""The exam's integrity: the baseline's holdout is the one its training run logged, and the
candidate did not train on the evaluation rows.

Training records the holdout's sha256 as a run param (params cannot be changed later) and a
digest of every training row as an artifact (registry/contract.py). A holdout whose bytes no
longer match is refused (exit 2). The candidate's recorded training rows are compared with the
evaluation rows; a candidate that records none is judged with a note, or fails when the policy
requires the record.
"""

import tempfile
from pathlib import Path

import numpy as np

from gates.errors import EvaluationError
from gates.evaluation import EvaluationData
from gates.verdict import Overlap
from registry import contract, runs
from registry.client import Client
from registry.errors import RegistryError
from registry.loading import fetch_artifact
from registry.refs import ModelRef

MAX_TRAINING_ROWS = 100_000_000
"""Larger training-row records are refused before they are read (800 MB of digests)."""


class HoldoutMismatch(EvaluationError):
    """The baseline's logged holdout is not the one its training run recorded."""

    def __init__(self, location: str, recorded: str, actual: str) -> None:
        super().__init__(
            f"the baseline's holdout {location} has sha256 {actual}, but its training run "
            f"recorded {recorded}: the exam was changed after training; refusing to judge on it"
        )


def check_holdout(client: Client, run_id: str, data: EvaluationData) -> str:
    """Raise HoldoutMismatch unless the holdout's bytes are those training run `run_id`
    recorded; a note for the report saying what was verified."""
    recorded = runs.params(client, run_id).get(contract.HOLDOUT_SHA256_PARAM)
    if recorded is None:
        return (
            "the baseline's training run records no holdout sha256 "
            f"({contract.HOLDOUT_SHA256_PARAM}): the holdout could not be verified"
        )
    if recorded != data.sha256:
        raise HoldoutMismatch(data.source.location, recorded, data.sha256)
    return "the holdout's sha256 is the one the baseline's training run recorded"


def overlap(client: Client, candidate: ModelRef, data: EvaluationData) -> Overlap:
    """How many evaluation rows the candidate's training run records having trained on."""
    rows = data.rows
    if candidate.run_id is None:
        return Overlap(rows, None, f"candidate {candidate} has no training run")
    location = f"runs:/{candidate.run_id}/{contract.TRAINING_ROWS_ARTIFACT}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = fetch_artifact(location, Path(tmp), client.tracking_uri)
        except RegistryError:
            return Overlap(rows, None, f"candidate {candidate} records no training rows")
        try:
            columns, trained = contract.read_training_rows(path, MAX_TRAINING_ROWS)
        except ValueError as exc:
            return Overlap(rows, None, f"{location}: {exc}")
    try:
        evaluated = contract.row_hashes(data.features, columns)
    except ValueError as exc:
        return Overlap(rows, None, f"training rows cover columns the evaluation data lacks: {exc}")
    return Overlap(rows, int(np.isin(evaluated, trained).sum()))
