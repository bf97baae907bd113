r"""Log–log slope fits with a bootstrap confidence interval over seeds.

Two uses, one core:

* complexity exponent: :math:`\log_{10} N(\varepsilon) = a + b \log_{10}(1/\varepsilon)`
  over a declared range of :math:`\varepsilon`, so that :math:`N(\varepsilon) \propto
  \varepsilon^{-b}` (:func:`fit_exponent`);
* rate: :math:`\log_{10} m(c) = a + s \log_{10} c` of a metric against cost on a declared
  cost range (:func:`fit_rate`); for :math:`N(\varepsilon) \propto \varepsilon^{-b}` the
  curve has :math:`s = -1/b`.

The fit is made on the **median over seeds** at each abscissa, by ordinary least squares
or Theil–Sen (the median of pairwise slopes, robust to a few outlying points). Censoring
is explicit: an unreached target is :math:`+\infty`, the median is exact while fewer than
half the seeds are censored, and an abscissa whose median is censored is left out of the
fit and counted in ``n_censored`` (never silently dropped). The confidence interval is the
percentile bootstrap over seeds: resample the seeds with replacement, recompute the median
curve and the slope, and take the ``(1 ± level)/2`` quantiles of the slopes.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bibench.analysis.hitting import quantiles

__all__ = ["METHODS", "SlopeFit", "fit_exponent", "fit_loglog", "fit_rate", "ols", "theil_sen"]


def ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares line ``y = a + b x``; returns ``(b, a)``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    xm, ym = x.mean(), y.mean()
    b = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    return b, float(ym - b * xm)


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Theil–Sen line: ``b`` the median of the pairwise slopes, ``a`` the median of
    ``y - b x``; returns ``(b, a)``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    b = float(np.median((y[j] - y[i])[keep] / dx[keep]))
    return b, float(np.median(y - b * x))


METHODS = {"ols": ols, "theil-sen": theil_sen}


@dataclasses.dataclass(frozen=True)
class SlopeFit:
    """A fitted log–log slope: ``slope`` with its bootstrap interval
    ``[ci_low, ci_high]`` at ``level``; ``n_points`` abscissae used, ``n_censored`` left out
    because their median over the ``n_seeds`` seeds is censored."""

    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    level: float
    method: str
    n_points: int
    n_censored: int
    n_seeds: int

    def covers(self, value: float) -> bool:
        return self.ci_low <= value <= self.ci_high


def _line(x: np.ndarray, med: np.ndarray, method: str) -> tuple[float, float, int]:
    ok = np.isfinite(med)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        return math.nan, math.nan, int(ok.sum())
    b, a = METHODS[method](x[ok], med[ok])
    return b, a, int(ok.sum())


def fit_loglog(
    x: np.ndarray,
    values: np.ndarray,
    *,
    method: str = "ols",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> SlopeFit:
    r"""Fit :math:`\log_{10} \mathrm{median}_s\, v_s(x) = a + b x` with ``values`` of shape
    ``(seeds, points)`` (positive, ``inf`` = censored, NaN = not observed) and a
    bootstrap interval over seeds."""
    if method not in METHODS:
        raise ValueError(f"unknown fit method '{method}' (known: {', '.join(METHODS)})")
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore"):
        logv = np.log10(np.asarray(values, dtype=float))
    n_seeds = logv.shape[0]
    med = quantiles(logv, (0.5,), axis=0)[0]
    b, a, n_used = _line(x, med, method)
    n_censored = int(np.isposinf(med).sum())
    lo = hi = math.nan
    if n_boot > 0 and math.isfinite(b):
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        meds = quantiles(np.moveaxis(logv[idx], 1, 0), (0.5,), axis=0)[0]  # (n_boot, points)
        slopes = np.array([_line(x, m, method)[0] for m in meds])
        slopes = slopes[np.isfinite(slopes)]
        if len(slopes):
            lo, hi = np.quantile(slopes, [(1 - level) / 2, (1 + level) / 2])
    return SlopeFit(b, a, float(lo), float(hi), level, method, n_used, n_censored, n_seeds)


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
