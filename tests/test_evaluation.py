"""Choosing the evaluation data: the policy's pin, then --data, then the baseline's holdout."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gates.errors import DatasetMismatch, EvaluationError
from gates.evaluation import check_target, choose, fetch
from gates.policy import DataRule
from registry.contract import HOLDOUT_ARTIFACT
from registry.refs import ModelRef

BASELINE = ModelRef("m", "1", run_id="abc")
SHA = "0" * 64


def test_choose_pinned_dataset_first_relative_to_the_policy(tmp_path: Path):
    source = choose(DataRule(uri="eval.csv", sha256=SHA), None, BASELINE, tmp_path)
    assert (source.kind, source.location, source.sha256) == (
        "pinned",
        str(tmp_path / "eval.csv"),
        SHA,
    )
    remote = choose(
        DataRule(uri="s3://b/eval.parquet", sha256=SHA, target="y"), None, None, tmp_path
    )
    assert (remote.location, remote.target) == ("s3://b/eval.parquet", "y")


def test_choose_refuses_data_file_when_the_policy_pins_one(tmp_path: Path):
    with pytest.raises(EvaluationError, match="--data cannot replace it"):
        choose(DataRule(uri="eval.csv", sha256=SHA), tmp_path / "mine.csv", BASELINE, tmp_path)


def test_choose_data_file_over_the_baseline_holdout(tmp_path: Path):
    source = choose(DataRule(target="label"), tmp_path / "mine.csv", BASELINE, tmp_path)
    assert (source.kind, source.target) == ("file", "label")


def test_choose_baseline_holdout_never_the_candidate(tmp_path: Path):
    source = choose(DataRule(target="ignored"), None, BASELINE, tmp_path)
    assert source.kind == "baseline holdout"
    assert source.location == f"runs:/abc/{HOLDOUT_ARTIFACT}"
    assert source.target == "target"  # what training logs, whatever the policy's target
    with pytest.raises(EvaluationError, match="no evaluation data"):
        choose(DataRule(), None, None, tmp_path)


def _write(tmp_path: Path, name: str, frame: pd.DataFrame) -> Path:
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


FRAME = pd.DataFrame({"a": [0.1, 0.2, 0.3], "target": [0, 1, 1]})


@pytest.mark.parametrize("name", ["eval.csv", "eval.parquet"])
def test_fetch_reads_csv_and_parquet_and_splits_the_target(tmp_path: Path, name: str):
    path = _write(tmp_path, name, FRAME)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    data = fetch(choose(DataRule(uri=str(path), sha256=digest), None, None, tmp_path))
    assert list(data.features.columns) == ["a"]
    assert data.target.tolist() == [0, 1, 1]
    assert data.sha256 == digest
    assert data.rows == 3


def test_fetch_pinned_digest_mismatch(tmp_path: Path):
    path = _write(tmp_path, "eval.parquet", FRAME)
    with pytest.raises(DatasetMismatch, match="but the policy pins 0000"):
        fetch(choose(DataRule(uri=str(path), sha256=SHA), None, None, tmp_path))


@pytest.mark.parametrize(
    ("name", "frame", "words"),
    [
        ("eval.csv", FRAME.drop(columns=["target"]), "no target column 'target'"),
        ("eval.json", FRAME, "use a .csv or .parquet"),
        ("eval.csv", FRAME.head(0), "no rows"),
        ("eval.csv", FRAME.assign(target=[0, None, 1]), "missing values"),
    ],
)
def test_fetch_unusable_data(tmp_path: Path, name: str, frame: pd.DataFrame, words: str):
    path = _write(tmp_path, name, frame) if name != "eval.json" else tmp_path / name
    if name == "eval.json":
        frame.to_json(path)
    with pytest.raises(EvaluationError, match=words):
        fetch(choose(DataRule(), path, None, tmp_path))


def test_fetch_missing_file(tmp_path: Path):
    with pytest.raises(EvaluationError, match="no such file"):
        fetch(choose(DataRule(), tmp_path / "nope.csv", None, tmp_path))


def test_check_target_wants_binary_labels_for_classification(tmp_path: Path):
    path = _write(tmp_path, "eval.csv", FRAME.assign(target=[0, 2, 1]))
    data = fetch(choose(DataRule(), path, None, tmp_path))
    with pytest.raises(EvaluationError, match="holds 0 and 1, found 0, 1, 2"):
        check_target(data, "classification")
    check_target(data, "regression")
    assert np.issubdtype(data.target.dtype, np.integer)
