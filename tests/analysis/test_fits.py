"""Slope fits: exact lines, robustness, a planted exponent recovered inside its bootstrap CI."""

from __future__ import annotations

import numpy as np
import pytest

from bibench.analysis.fits import MIN_POINTS, fit_exponent, fit_loglog, fit_rate, ols, theil_sen


def test_ols_and_theil_sen_are_exact_on_a_line():
    x = np.linspace(0, 3, 7)
    for fit in (ols, theil_sen):
        b, a = fit(x, 1.5 - 2.0 * x)
        assert b == pytest.approx(-2.0) and a == pytest.approx(1.5)


def test_theil_sen_ignores_one_outlier_that_bends_ols():
    x = np.arange(10.0)
    y = 2.0 * x + 1.0
    y[9] = 100.0
    assert theil_sen(x, y)[0] == pytest.approx(2.0)
    assert ols(x, y)[0] > 3.0


def planted(b: float, n_seeds: int, eps: np.ndarray, rng, noise: float = 0.1) -> np.ndarray:
    """N_s(ε) = C_s ε^-b with a per-seed constant and per-point log-normal noise."""
    c = 10 ** (1 + rng.normal(0, noise, (n_seeds, 1)))
    return c * eps[None, :] ** -b * np.exp(rng.normal(0, noise, (n_seeds, len(eps))))


@pytest.mark.parametrize("method", ["ols", "theil-sen"])
def test_planted_exponent_is_recovered_within_its_ci(method):
    rng = np.random.default_rng(3)
    eps = np.logspace(-1, -5, 17)
    fit = fit_exponent(planted(2.5, 10, eps, rng), eps, method=method, n_boot=500)
    assert fit.slope == pytest.approx(2.5, abs=0.05)
    assert fit.covers(2.5)
    assert fit.ci_high - fit.ci_low < 0.2
    assert fit.n_points == 17 and fit.n_censored == 0 and fit.n_seeds == 10


def test_censored_targets_count_as_infinite_and_a_censored_median_is_left_out():
    rng = np.random.default_rng(4)
    eps = np.logspace(-1, -4, 13)
    n = planted(2.0, 7, eps, rng)
    n[:3, -3:] = np.inf  # 3 of 7 censored: the median is still exact there
    n[3, -2:] = np.inf  # 4 of 7 censored at the two smallest targets: median censored
    fit = fit_exponent(n, eps, n_boot=300)
    assert fit.n_censored == 2 and fit.n_points == 11
    assert fit.covers(2.0)
    # a censored value is only known to exceed the budget; any such value gives the same
    # medians where fewer than half the seeds are censored, hence the same fit
    large = np.where(np.isinf(n), 1e30, n)
    same = fit_exponent(large[:, :11], eps[:11], n_boot=0)
    assert fit.slope == pytest.approx(same.slope, rel=1e-12)


def test_declared_range_restricts_the_fit():
    eps = np.logspace(0, -4, 9)
    n = np.where(eps > 1e-1, 100.0, 10 * eps**-3.0)[None, :].repeat(3, axis=0)
    inside = fit_exponent(n, eps, (1e-1, 1e-4), n_boot=0)
    assert inside.slope == pytest.approx(3.0) and inside.n_points == 7
    assert fit_exponent(n, eps, n_boot=0).slope < 3.0


def test_rate_of_a_power_law_curve_is_minus_one_over_the_exponent():
    grid = np.logspace(1, 5, 30)
    values = 3.0 * grid[None, :] ** (-1 / 3) * np.array([[1.0], [1.2], [0.9]])
    fit = fit_rate(values, grid, (1e2, 1e5), n_boot=200)
    assert fit.slope == pytest.approx(-1 / 3)
    assert fit.covers(-1 / 3)


def test_bootstrap_ci_covers_the_planted_exponent_most_of_the_time():
    """The percentile interval over seeds is approximate; over 40 independent data sets
    its nominal 95 % should not fall below 80 % coverage."""
    rng = np.random.default_rng(5)
    eps = np.logspace(-1, -4, 10)
    hits = [
        fit_exponent(planted(1.5, 8, eps, rng, 0.2), eps, n_boot=200).covers(1.5) for _ in range(40)
    ]
    assert np.mean(hits) >= 0.8


def test_slope_needs_min_points_and_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(7)
    x = np.arange(6.0)
    y = 10 ** (0.5 + 1.7 * x + rng.normal(0, 0.05, (4, 6)))
    fit = fit_loglog(x, y, n_boot=0)
    med = np.median(np.log10(y), axis=0)
    assert fit.slope == pytest.approx(stats.linregress(x, med).slope, rel=1e-12)
    assert not fit.too_few and fit.n_points == 6
    few = fit_loglog(x[: MIN_POINTS - 1], y[:, : MIN_POINTS - 1], n_boot=100)
    assert few.too_few and few.n_points == MIN_POINTS - 1
    assert np.isnan(few.slope) and np.isnan(few.ci_low) and np.isnan(few.ci_high)
    assert few.text() == f"too few points ({MIN_POINTS - 1})"
    # censored medians do not count towards the minimum
    y[:3, -2:] = np.inf
    assert fit_loglog(x, y, n_boot=0).too_few  # 4 finite medians left


def test_known_slope_and_theil_sen_intercept():
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.array([1.0, 3.0, 5.0, 7.0, 30.0])  # slope 2 but for one outlier
    assert ols(x, y) == pytest.approx((6.2, -3.2))  # hand: Sxy/Sxx = 62/10, 9.2 - 6.2 * 2
    assert theil_sen(x, y) == pytest.approx((2.0, 1.0))


def test_bca_interval_is_not_the_percentile_one():
    """On a skewed statistic the BCa interval differs from the plain percentile interval
    of the same resamples (a percentile CI would pass the coverage test too)."""
    from scipy import stats

    rng = np.random.default_rng(11)
    eps = np.logspace(-1, -4, 10)
    n = planted(1.5, 9, eps, rng, 0.4)
    fit = fit_exponent(n, eps, n_boot=400, seed=1)
    logn = np.log10(n)
    x = -np.log10(eps)

    def slope(idx):
        return stats.linregress(x, np.median(logn[idx.astype(int)], axis=0)).slope

    args = dict(vectorized=False, n_resamples=400, confidence_level=0.95)
    bca = stats.bootstrap((np.arange(9),), slope, method="BCa", rng=np.random.default_rng(1),
                          **args)  # fmt: skip
    pct = stats.bootstrap((np.arange(9),), slope, method="percentile",
                          rng=np.random.default_rng(1), **args)  # fmt: skip
    assert (fit.ci_low, fit.ci_high) == pytest.approx(tuple(bca.confidence_interval), rel=1e-12)
    assert fit.ci_low != pytest.approx(pct.confidence_interval.low, rel=1e-6)
