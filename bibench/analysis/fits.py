r"""Log–log slope fits with a bootstrap confidence interval over seeds (``scipy.stats``).

Two uses, one core:

* complexity exponent: :math:`\log_{10} N(\varepsilon) = a + b \log_{10}(1/\varepsilon)`
  over a declared range of :math:`\varepsilon`, so that :math:`N(\varepsilon) \propto
  \varepsilon^{-b}` (:func:`fit_exponent`);
* rate: :math:`\log_{10} m(c) = a + s \log_{10} c` of a metric against cost on a declared
  cost range (:func:`fit_rate`); for :math:`N(\varepsilon) \propto \varepsilon^{-b}` the
  curve has :math:`s = -1/b`.

The fit is made on the **median over seeds** at each abscissa, by ordinary least squares
(:func:`scipy.stats.linregress`) or Theil–Sen (:func:`scipy.stats.theilslopes`, the median
of pairwise slopes, robust to a few outlying points; intercept the median of
:math:`y - b x`). Censoring is explicit: an unreached target is :math:`+\infty`, the median
is exact while fewer than half the seeds are censored, and an abscissa whose median is
censored is left out of the fit and counted in ``n_censored`` (never silently dropped).

A slope is reported only when at least :data:`MIN_POINTS` abscissae remain: with fewer, a
line through them says little about an asymptotic rate, so the slope and its interval are
NaN and ``too_few`` is set (shown as "too few points").

The confidence interval is the bias-corrected and accelerated (BCa) bootstrap over seeds,
:func:`scipy.stats.bootstrap` with ``method="BCa"`` (Efron 1987): resample the seeds with
replacement, recompute the median curve and its slope. When every resample gives the same
slope (e.g. seeds that differ by a constant factor only) the interval is that slope.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from scipy import stats

from bibench.analysis.hitting import quantiles

__all__ = [
    "METHODS",
    "MIN_POINTS",
    "SlopeFit",
    "fit_exponent",
    "fit_loglog",
    "fit_rate",
    "ols",
    "theil_sen",
]

MIN_POINTS = 5  # fewer abscissae than this: no slope ("too few points")


def ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares line ``y = a + b x`` (:func:`scipy.stats.linregress`); ``(b, a)``."""
    res = stats.linregress(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return float(res.slope), float(res.intercept)


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Theil–Sen line (:func:`scipy.stats.theilslopes`): ``b`` the median of the pairwise
    slopes, ``a`` the median of ``y - b x``; returns ``(b, a)``."""
    res = stats.theilslopes(np.asarray(y, dtype=float), np.asarray(x, dtype=float),
                            method="joint")  # fmt: skip
    return float(res.slope), float(res.intercept)


METHODS = {"ols": ols, "theil-sen": theil_sen}


@dataclasses.dataclass(frozen=True)
class SlopeFit:
    """A fitted log–log slope: ``slope`` with its BCa bootstrap interval
    ``[ci_low, ci_high]`` at ``level``; ``n_points`` abscissae used, ``n_censored`` left out
    because their median over the ``n_seeds`` seeds is censored; ``too_few`` when
    ``n_points < MIN_POINTS`` (then slope and interval are NaN)."""

    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    level: float
    method: str
    n_points: int
    n_censored: int
    n_seeds: int
    too_few: bool = False

    def covers(self, value: float) -> bool:
        """``value`` in the interval, up to round-off (a degenerate interval is a point)."""
        tol = 1e-9 * (1.0 + abs(value))
        return self.ci_low - tol <= value <= self.ci_high + tol

    def text(self) -> str:
        """``b [lo, hi]``, or ``too few points (k)``."""
        if self.too_few:
            return f"too few points ({self.n_points})"
        return f"{self.slope:.3g} [{self.ci_low:.3g}, {self.ci_high:.3g}]"


def _line(x: np.ndarray, med: np.ndarray, method: str, min_points: int):
    ok = np.isfinite(med)
    n = int(ok.sum())
    if n < max(min_points, 2) or np.ptp(x[ok]) == 0:
        return math.nan, math.nan, n
    b, a = METHODS[method](x[ok], med[ok])
    return b, a, n


def fit_loglog(
    x: np.ndarray,
    values: np.ndarray,
    *,
    method: str = "ols",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    min_points: int = MIN_POINTS,
) -> SlopeFit:
    r"""Fit :math:`\log_{10} \mathrm{median}_s\, v_s(x) = a + b x` with ``values`` of shape
    ``(seeds, points)`` (positive, ``inf`` = censored, NaN = not observed) and a BCa
    bootstrap interval over seeds (none when ``n_boot`` is 0 or there is one seed)."""
    if method not in METHODS:
        raise ValueError(f"unknown fit method '{method}' (known: {', '.join(METHODS)})")
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore"):
        logv = np.log10(np.asarray(values, dtype=float))
    n_seeds = logv.shape[0]
    med = quantiles(logv, (0.5,), axis=0)[0]
    b, a, n_used = _line(x, med, method, min_points)
    n_censored = int(np.isposinf(med).sum())
    lo = hi = math.nan
    if n_boot > 0 and n_seeds > 1 and math.isfinite(b):

        def slope(idx: np.ndarray) -> float:
            m = quantiles(logv[idx.astype(int)], (0.5,), axis=0)[0]
            return _line(x, m, method, min_points)[0]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # degenerate or NaN resamples: handled below
            res = stats.bootstrap(
                (np.arange(n_seeds),),
                slope,
                vectorized=False,
                n_resamples=n_boot,
                confidence_level=level,
                method="BCa",
                rng=np.random.default_rng(seed),
            )
        dist = res.bootstrap_distribution
        if np.isfinite(dist).all() and np.ptp(dist) <= 1e-12 * max(1.0, abs(b)):
            lo = hi = b  # every resample gives the same slope
        else:
            lo, hi = res.confidence_interval.low, res.confidence_interval.high
    return SlopeFit(
        b, a, float(lo), float(hi), level, method, n_used, n_censored, n_seeds,
        too_few=n_used < min_points,
    )  # fmt: skip


def fit_exponent(
    n_eps: np.ndarray,
    eps: np.ndarray,
    eps_range: tuple[float, float] | None = None,
    **kwargs,
) -> SlopeFit:
    r"""Complexity exponent ``b`` of :math:`N(\varepsilon) \propto \varepsilon^{-b}` from
    ``n_eps`` of shape ``(seeds, targets)`` (``inf`` = censored), on the targets with
    ``eps`` inside ``eps_range`` (all when ``None``)."""
    eps = np.asarray(eps, dtype=float)
    keep = np.ones(eps.shape, dtype=bool)
    if eps_range is not None:
        lo, hi = min(eps_range), max(eps_range)
        keep = (eps >= lo * (1 - 1e-12)) & (eps <= hi * (1 + 1e-12))
    return fit_loglog(-np.log10(eps[keep]), np.asarray(n_eps, dtype=float)[:, keep], **kwargs)


def fit_rate(
    values: np.ndarray,
    grid: np.ndarray,
    x_range: tuple[float, float] | None = None,
    **kwargs,
) -> SlopeFit:
    r"""Rate ``s`` of :math:`m(c) \propto c^{s}` from curves ``values`` of shape
    ``(seeds, grid)`` on the cost grid ``grid``, restricted to ``x_range``."""
    grid = np.asarray(grid, dtype=float)
    keep = np.ones(grid.shape, dtype=bool)
    if x_range is not None:
        keep = (grid >= min(x_range)) & (grid <= max(x_range))
    return fit_loglog(np.log10(grid[keep]), np.asarray(values, dtype=float)[:, keep], **kwargs)
