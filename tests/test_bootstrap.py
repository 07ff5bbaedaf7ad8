"""Paired bootstrap: exact weighted metrics, and regressions judged beyond sampling noise."""

import numpy as np
import pandas as pd
import pytest

from gates.bootstrap import Interval, improvements, weighted_metrics
from registry.quality import METRICS_BY_TASK, compute

CLASSIFICATION = METRICS_BY_TASK["classification"]


def _classifier_output(y: np.ndarray, skill: float, seed: int) -> pd.DataFrame:
    """Probabilities that separate the classes by `skill` (0: coin flip), rounded to make ties."""
    rng = np.random.default_rng(seed)
    logits = skill * (2 * y - 1) + rng.normal(0, 1, len(y))
    probability = np.round(1 / (1 + np.exp(-logits)), 2)
    return pd.DataFrame({"label": (probability >= 0.5).astype("int64"), "probability": probability})


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 2, 150)


def test_weighted_metrics_equal_compute_on_resampled_rows(labels: np.ndarray):
    output = _classifier_output(labels, 1.5, 1)
    rng = np.random.default_rng(2)
    counts = rng.multinomial(len(labels), np.full(len(labels), 1 / len(labels)), size=4)
    weighted = weighted_metrics(
        "classification", labels.astype(float), output, counts.astype(float)
    )
    for i, row in enumerate(counts):
        rows = np.repeat(np.arange(len(labels)), row)
        expected = compute("classification", labels[rows], output.iloc[rows].reset_index(drop=True))
        for name, value in expected.items():
            assert weighted[name][i] == pytest.approx(value, abs=1e-12), name


def test_weighted_regression_metrics_equal_compute():
    rng = np.random.default_rng(3)
    y = rng.normal(100, 20, 120)
    output = pd.DataFrame({"prediction": y + rng.normal(0, 10, 120)})
    counts = rng.multinomial(120, np.full(120, 1 / 120), size=3).astype(float)
    weighted = weighted_metrics("regression", y, output, counts)
    for i, row in enumerate(counts.astype(int)):
        rows = np.repeat(np.arange(120), row)
        expected = compute("regression", y[rows], output.iloc[rows].reset_index(drop=True))
        for name, value in expected.items():
            assert weighted[name][i] == pytest.approx(value, rel=1e-10), name


def test_bootstrap_estimate_is_the_full_data_difference(labels: np.ndarray):
    better, worse = _classifier_output(labels, 2.0, 4), _classifier_output(labels, 0.5, 5)
    found = improvements("classification", labels, better, worse, CLASSIFICATION, resamples=200)
    full_better = compute("classification", labels, better)
    full_worse = compute("classification", labels, worse)
    assert found["accuracy"].estimate == pytest.approx(
        full_better["accuracy"] - full_worse["accuracy"]
    )
    assert found["log_loss"].estimate == pytest.approx(  # lower is better: sign flipped
        full_worse["log_loss"] - full_better["log_loss"]
    )
    assert all(i.low <= i.estimate <= i.high for i in found.values())


def test_bootstrap_same_seed_same_intervals_other_seed_differs(labels: np.ndarray):
    a, b = _classifier_output(labels, 1.5, 6), _classifier_output(labels, 1.5, 7)
    first = improvements("classification", labels, a, b, ["roc_auc"], resamples=300, seed=1)
    again = improvements("classification", labels, a, b, ["roc_auc"], resamples=300, seed=1)
    other = improvements("classification", labels, a, b, ["roc_auc"], resamples=300, seed=2)
    assert first == again
    assert first != other


def test_bootstrap_equally_good_models_do_not_regress(labels: np.ndarray):
    """Two models of the same quality (another seed's retrain) pass any reasonable margin."""
    for seed in range(5):
        baseline = _classifier_output(labels, 1.5, 100 + seed)
        candidate = _classifier_output(labels, 1.5, 200 + seed)
        found = improvements("classification", labels, candidate, baseline, CLASSIFICATION)
        assert not any(i.regresses_beyond(0.05) for i in found.values()), found
        assert all(i.low < 0 < i.high for i in found.values() if i.estimate != 0)


def test_bootstrap_useless_candidate_regresses(labels: np.ndarray):
    baseline = _classifier_output(labels, 2.5, 8)
    useless = _classifier_output(labels, 0.0, 9)
    found = improvements("classification", labels, useless, baseline, CLASSIFICATION)
    assert all(i.regresses_beyond(0.05) for i in found.values()), found


def test_bootstrap_interval_width_shrinks_with_more_rows():
    widths = []
    for n in (100, 1600):
        y = np.random.default_rng(n).integers(0, 2, n)
        a, b = _classifier_output(y, 1.5, 10), _classifier_output(y, 1.5, 11)
        found = improvements("classification", y, a, b, ["accuracy"], resamples=400)["accuracy"]
        widths.append(found.high - found.low)
    assert widths[1] < widths[0] / 2


@pytest.mark.parametrize(
    ("low", "high", "margin", "regresses"),
    [
        (-0.04, 0.02, 0.03, False),  # straddles zero: noise
        (-0.08, -0.01, 0.03, False),  # surely worse, but possibly within the margin
        (-0.09, -0.031, 0.03, True),  # even the best case is beyond the margin
        (-0.09, -0.03, 0.03, False),  # exactly at the margin passes
        (float("nan"), float("nan"), 0.03, True),  # undefined never passes
    ],
)
def test_interval_regression_decision(low: float, high: float, margin: float, regresses: bool):
    interval = Interval("accuracy", (low + high) / 2, low, high, 0.95)
    assert interval.regresses_beyond(margin) is regresses
