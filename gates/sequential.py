"""Statistics of a live experiment that stay valid however often it is looked at.

- Sample ratio mismatch: a chi-square test of the requests each alias received against the
  configured weights; an alarm below p = 0.001 (GrowthBook's and Statsig's threshold).
- The difference candidate - baseline of a metric with an always-valid confidence sequence:
  the asymptotic confidence sequence of Waudby-Smith et al. ("Time-uniform central limit theory
  and asymptotic confidence sequences", 2023), as GrowthBook computes it. Its half-width at n
  observations, for a per-observation variance s2 and a mixing parameter rho tuned to be
  narrowest at `TUNING_LABELS`, is

      sqrt(s2) * sqrt(2 (n rho^2 + 1) / (n^2 rho^2) * log(sqrt(n rho^2 + 1) / alpha))

  and the 95% sequence holds at every n at once: stopping at the first look that excludes
  zero keeps false decisions at 5% or less.
- An estimate of the labels still needed, and the simulations the benchmark runs.

Every function works on numpy arrays as on scalars, so the simulations use the very
functions the report uses.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

ALPHA = 0.05
"""1 - the confidence of the sequence."""
SRM_ALARM_P = 0.001
"""A split whose chi-square p-value is below this is broken."""
TUNING_LABELS = 5000
"""Labels (both arms together) at which the sequence is tuned to be narrowest (GrowthBook's
default)."""
MIN_LABELS_PER_ARM = 100
"""Below this many labelled rows in either arm no difference is judged."""
POWER = 0.8
"""The chance of a decision, by the estimated label count, when the difference is real."""

Floats = NDArray[np.float64]
Moments = tuple[Floats, Floats, Floats]
"""Mean, sample variance and count of one arm's per-row values."""


@dataclass(frozen=True, slots=True)
class Srm:
    """A sample ratio mismatch test: counts observed, shares expected, the test's outcome."""

    observed: Mapping[str, int]
    expected_share: Mapping[str, float]
    chi2: float
    p_value: float

    @property
    def alarm(self) -> bool:
        """True when the split is broken (p below SRM_ALARM_P)."""
        return self.p_value < SRM_ALARM_P


def srm(observed: Mapping[str, int], weights: Mapping[str, float]) -> Srm:
    """Test counts per alias against weights (any positive scale). An alias with weight 0
    that received requests is an alarm (p = 0); aliases without weight or requests are left
    out."""
    named = list(dict.fromkeys([*weights, *observed]))
    aliases = [a for a in named if weights.get(a, 0) > 0 or observed.get(a, 0) > 0]
    total_weight = sum(weights.get(a, 0) for a in aliases)
    shares = {a: weights.get(a, 0) / total_weight for a in aliases}
    counts = np.array([observed.get(a, 0) for a in aliases], dtype="float64")
    expected = np.array([shares[a] for a in aliases])
    chi2, p_value = chi_square(counts, expected)
    return Srm({a: observed.get(a, 0) for a in aliases}, shares, float(chi2), float(p_value))


def chi_square(counts: ArrayLike, shares: ArrayLike) -> tuple[Floats, Floats]:
    """Pearson's chi-square and p-value of counts (last axis: categories) against shares."""
    counts = np.asarray(counts, dtype="float64")
    shares = np.asarray(shares, dtype="float64")
    total = counts.sum(axis=-1, keepdims=True)
    expected = total * shares
    impossible = ((expected == 0) & (counts > 0)).any(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected > 0, (counts - expected) ** 2 / expected, 0.0)
    chi2 = terms.sum(axis=-1)
    degrees = max(int((shares > 0).sum(axis=-1).max()) - 1, 1) if shares.size else 1
    p_value = np.where(impossible, 0.0, special.chdtrc(degrees, chi2))
    p_value = np.where(total[..., 0] > 0, p_value, 1.0)
    return np.where(impossible, np.inf, chi2), p_value


def rho_squared(alpha: float = ALPHA, tuning: float = TUNING_LABELS) -> float:
    """The mixing parameter (squared) that makes the sequence narrowest at `tuning`."""
    return (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning


def halfwidth(
    variance: ArrayLike, n: ArrayLike, alpha: float = ALPHA, tuning: float = TUNING_LABELS
) -> Floats:
    """The confidence sequence's half-width after `n` observations of variance `variance`
    (the estimate's variance times n)."""
    n = np.asarray(n, dtype="float64")
    rho2 = rho_squared(alpha, tuning)
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.sqrt(np.asarray(variance, dtype="float64")) * np.sqrt(
            2 * (n * rho2 + 1) / (n * n * rho2) * np.log(np.sqrt(n * rho2 + 1) / alpha)
        )
    return np.where(n > 0, width, np.inf)


@dataclass(frozen=True, slots=True)
class Difference:
    """candidate - baseline of a metric, its confidence sequence at this look, and what it
    needs: `variance` is the difference's variance times `n`, the labels of both arms."""

    estimate: float
    low: float
    high: float
    variance: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the sequence has decided the sign of the difference."""
        return self.low > 0 or self.high < 0


def mean_difference(
    candidate_sum: ArrayLike,
    candidate_sq: ArrayLike,
    candidate_n: ArrayLike,
    baseline_sum: ArrayLike,
    baseline_sq: ArrayLike,
    baseline_n: ArrayLike,
    alpha: float = ALPHA,
) -> tuple[Floats, Floats, Floats]:
    """(estimate, half-width, variance x n) of the difference of two means, from each arm's
    sum, sum of squares and count of per-row values."""
    candidate = _moments(candidate_sum, candidate_sq, candidate_n)
    baseline = _moments(baseline_sum, baseline_sq, baseline_n)
    return _difference(candidate, baseline, alpha)


def root_mean_difference(
    candidate_sum: ArrayLike,
    candidate_sq: ArrayLike,
    candidate_n: ArrayLike,
    baseline_sum: ArrayLike,
    baseline_sq: ArrayLike,
    baseline_n: ArrayLike,
    alpha: float = ALPHA,
) -> tuple[Floats, Floats, Floats]:
    """As `mean_difference`, for the square roots of the means (RMSE from squared errors)."""
    candidate = _root(_moments(candidate_sum, candidate_sq, candidate_n))
    baseline = _root(_moments(baseline_sum, baseline_sq, baseline_n))
    return _difference(candidate, baseline, alpha)


def _difference(
    candidate: Moments, baseline: Moments, alpha: float
) -> tuple[Floats, Floats, Floats]:
    """(estimate, half-width, variance x n) of candidate mean - baseline mean."""
    (mean_c, var_c, n_c), (mean_b, var_b, n_b) = candidate, baseline
    n = n_c + n_b
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = n * (var_c / n_c + var_b / n_b)
    return mean_c - mean_b, halfwidth(variance, n, alpha), variance


def _root(moments: Moments) -> Moments:
    """The moments of the square root of the mean, by the delta method:
    sd(sqrt(m)) = sd(m) / (2 sqrt(m))."""
    mean, variance, n = moments
    with np.errstate(divide="ignore", invalid="ignore"):
        root_variance = variance / (4 * np.maximum(mean, 1e-300))
    return np.sqrt(mean), root_variance, n


def _moments(total: ArrayLike, squares: ArrayLike, n: ArrayLike) -> Moments:
    """Mean, sample variance and count from sums."""
    n = np.asarray(n, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.asarray(total, dtype="float64") / n
        variance = (np.asarray(squares, dtype="float64") - n * mean * mean) / (n - 1)
    return mean, np.maximum(variance, 0.0), n


def difference(estimate: ArrayLike, width: ArrayLike, variance: ArrayLike, n: int) -> Difference:
    """One look's Difference from the arrays the functions above return."""
    middle, half = float(np.asarray(estimate)), float(np.asarray(width))
    return Difference(middle, middle - half, middle + half, float(np.asarray(variance)), n)


def labels_needed(
    variance: float,
    effect: float,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    limit: int = 10**9,
) -> int | None:
    """Labels (both arms) by which a real difference of `effect` is decided with probability
    `power`: the n where effect = half-width(n) + z_power * sd(n). None: not below `limit`."""
    if not (math.isfinite(variance) and math.isfinite(effect)) or effect == 0 or variance <= 0:
        return None
    z = float(special.ndtri(power))
    effect = abs(effect)

    def enough(n: float) -> bool:
        return float(halfwidth(variance, n, alpha)) + z * math.sqrt(variance / n) <= effect

    return _smallest(enough, limit) if enough(limit) else None


# Simulations: the benchmark calls these with the goal's sizes; the tests with small ones.


def simulate_aa(
    experiments: int = 500,
    looks: int = 20,
    labels_per_look: int = 1000,
    accuracy: float = 0.8,
    seed: int = 0,
) -> float:
    """Share of A/A experiments (both arms equally accurate, 50/50) in which some look's
    confidence sequence decides a difference: the false decision rate."""
    rng = np.random.default_rng(seed)
    estimate, width, n_arm = _looked(
        rng, (accuracy, accuracy), labels_per_look // 2, looks, (experiments,)
    )
    decided = (np.abs(estimate) > width) & (n_arm >= MIN_LABELS_PER_ARM)
    return float(decided.any(axis=1).mean())


def simulate_power(
    experiments: int = 500,
    gap: float = 0.03,
    accuracy: float = 0.8,
    pilot_labels: int = 2000,
    looks: int = 20,
    seed: int = 0,
) -> tuple[float, float]:
    """(share decided `candidate_better`, median labels estimated): each 50/50 experiment
    estimates, after `pilot_labels`, the labels needed for a `gap` in accuracy as the report
    does, then is looked at `looks` times up to that count."""
    rng = np.random.default_rng(seed)
    half = pilot_labels // 2
    wins_c = rng.binomial(half, accuracy + gap, experiments).astype("float64")
    wins_b = rng.binomial(half, accuracy, experiments).astype("float64")
    _, _, variance = mean_difference(wins_c, wins_c, half, wins_b, wins_b, half)
    estimates = [labels_needed(float(v), gap) or 10**9 for v in variance]
    better = 0
    for i, total in enumerate(estimates):
        per_look = max((total - pilot_labels) // looks, 2)
        pilot = (wins_c[i], wins_b[i], half)
        estimate, width, _ = _looked(
            rng, (accuracy + gap, accuracy), per_look // 2, looks, pilot=pilot
        )
        better += bool((estimate - width > 0).any())
    return better / experiments, float(np.median(estimates))


def simulate_srm(
    experiments: int = 1000,
    requests: int = 20_000,
    lost: float = 0.03,
    seed: int = 0,
) -> float:
    """Share of 50/50 experiments flagged `srm` when `lost` of one arm's requests never reach
    the log (0: a healthy split, the false alarm rate)."""
    rng = np.random.default_rng(seed)
    first = rng.binomial(requests, 0.5, experiments)
    second = rng.binomial(requests - first, 1 - lost)
    _, p_value = chi_square(np.stack([first, second], axis=-1), [0.5, 0.5])
    return float((p_value < SRM_ALARM_P).mean())


def srm_requests_needed(lost: float, power: float = 0.95, share: float = 0.5) -> int:
    """Requests at which a split of `share` with `lost` of the other arm's requests missing
    is flagged with probability `power` (the chi-square test's noncentral distribution)."""
    logged = share + (1 - share) * (1 - lost)
    observed = share / logged
    per_request = logged * ((observed - share) ** 2 / share + (observed - share) ** 2 / (1 - share))
    critical = float(special.chdtri(1, SRM_ALARM_P))
    return _smallest(
        lambda n: 1 - float(special.chndtr(critical, 1, n * per_request)) >= power, 10**12
    )


def _smallest(enough: Callable[[int], bool], limit: int) -> int:
    """The smallest n in [1, limit] that is `enough` (`limit` when none is), by bisection:
    `enough` must hold for every n above one it holds for."""
    low, high = 1, limit
    while low < high:
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle + 1
    return low


def _looked(
    rng: np.random.Generator,
    accuracies: tuple[float, float],
    per_arm: int,
    looks: int,
    experiments: tuple[int, ...] = (),
    pilot: tuple[float, float, int] = (0.0, 0.0, 0),
) -> tuple[Floats, Floats, NDArray[np.int64]]:
    """(estimate, half-width, labels per arm) of candidate - baseline accuracy at each look,
    each look adding `per_arm` labels per arm answered right at `accuracies` (candidate,
    baseline), on top of a `pilot` (candidate wins, baseline wins, labels per arm). The last
    axis is the looks; `experiments` the independent experiments before it."""
    pilot_c, pilot_b, pilot_n = pilot
    wins = rng.binomial(per_arm, list(accuracies), (*experiments, looks, 2)).cumsum(axis=-2)
    wins_c, wins_b = pilot_c + wins[..., 0], pilot_b + wins[..., 1]
    n_arm = pilot_n + per_arm * np.arange(1, looks + 1)
    estimate, width, _ = mean_difference(wins_c, wins_c, n_arm, wins_b, wins_b, n_arm)
    return estimate, width, n_arm
