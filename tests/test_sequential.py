"""The experiment's statistics: the split test and the always-valid confidence sequence."""

import numpy as np
import pytest
from scipy import stats

from gates import sequential


def test_srm_healthy_split_is_not_an_alarm() -> None:
    test = sequential.srm({"production": 5040, "staging": 4960}, {"production": 50, "staging": 50})
    assert not test.alarm
    assert test.p_value == pytest.approx(stats.chisquare([5040, 4960]).pvalue)


def test_srm_skewed_split_is_an_alarm_on_any_weight_scale() -> None:
    test = sequential.srm({"production": 9300, "staging": 700}, {"production": 0.9, "staging": 0.1})
    assert test.alarm
    assert test.expected_share == {"production": 0.9, "staging": 0.1}
    expected = stats.chisquare([9300, 700], [9000, 1000]).pvalue
    assert test.p_value == pytest.approx(expected)


def test_srm_requests_to_an_alias_without_weight_are_an_alarm() -> None:
    test = sequential.srm({"production": 1000, "canary": 3}, {"production": 100})
    assert test.alarm
    assert test.p_value == 0


def test_srm_flags_a_lossy_arm_at_the_estimated_size_and_rarely_a_healthy_one() -> None:
    requests = sequential.srm_requests_needed(0.03)
    assert sequential.simulate_srm(400, requests, lost=0.03, seed=1) >= 0.9
    assert sequential.simulate_srm(4000, 20_000, lost=0.0, seed=2) <= 0.004


def test_confidence_sequence_covers_under_optional_stopping() -> None:
    """A true 3-point gap, looked at 20 times per experiment: the sequence misses it at some
    look in at most 5% of experiments, where the fixed-horizon interval misses far more."""
    rng = np.random.default_rng(7)
    experiments, looks, per_look, gap = 400, 20, 200, 0.03
    wins = rng.binomial(per_look, [0.7 + gap, 0.7], (experiments, looks, 2)).cumsum(axis=1)
    n = per_look * np.arange(1, looks + 1)
    c, b = wins[..., 0].astype(float), wins[..., 1].astype(float)
    estimate, width, variance = sequential.mean_difference(c, c, n, b, b, n)
    missed = (np.abs(estimate - gap) > width).any(axis=1).mean()
    fixed_width = 1.96 * np.sqrt(variance / (2 * n))
    naive_missed = (np.abs(estimate - gap) > fixed_width).any(axis=1).mean()
    assert missed <= 0.05
    assert naive_missed > 0.15


def test_aa_experiments_looked_at_often_rarely_decide() -> None:
    assert sequential.simulate_aa(experiments=200, looks=20, labels_per_look=400, seed=3) <= 0.05


def test_real_gap_is_decided_by_the_labels_estimated() -> None:
    decided, median_labels = sequential.simulate_power(experiments=60, seed=4)
    assert decided >= 0.7
    assert 2000 < median_labels < 100_000


def test_labels_needed_shrinks_with_the_effect_and_meets_the_power_equation() -> None:
    variance = 0.6
    small, large = (
        sequential.labels_needed(variance, 0.01),
        sequential.labels_needed(variance, 0.05),
    )
    assert small is not None
    assert large is not None
    assert small > large
    z = stats.norm.ppf(sequential.POWER)
    reach = float(sequential.halfwidth(variance, large)) + z * np.sqrt(variance / large)
    assert (
        reach
        <= 0.05
        < float(sequential.halfwidth(variance, large - 1)) + z * np.sqrt(variance / (large - 1))
    )
    assert sequential.labels_needed(variance, 0.0) is None


def test_rmse_difference_matches_the_square_roots() -> None:
    rng = np.random.default_rng(5)
    sq_c, sq_b = rng.exponential(4.0, 2000), rng.exponential(1.0, 2000)
    estimate, width, _ = sequential.root_mean_difference(
        sq_c.sum(), (sq_c**2).sum(), 2000, sq_b.sum(), (sq_b**2).sum(), 2000
    )
    assert float(estimate) == pytest.approx(np.sqrt(sq_c.mean()) - np.sqrt(sq_b.mean()))
    assert float(estimate - width) > 0
