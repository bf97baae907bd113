r"""Hitting costs :math:`N(\varepsilon)`, censoring, and curves on a common log grid.

For one run with checkpoints :math:`(c_k, m_k)` (cost, metric; costs increasing),

.. math::

    N(\varepsilon) = \min\{c_k : m_k \le \varepsilon\}, \qquad
    N(\varepsilon) = +\infty \text{ (censored) if no checkpoint reaches } \varepsilon.

A censored run is kept, never dropped: all we know is :math:`N(\varepsilon) > c_{\rm end}`
(its total cost), and :math:`+\infty` sorts above every observed value, so the median over
seeds is exact while fewer than half of the seeds are censored (COCO, AlgoPerf). The
checkpoints are geometric (ratio ``checkpoint_ratio``, 1.25 by default), so
:math:`N(\varepsilon)` is exact on the recorded grid and within that ratio of the
continuous first-passage cost.

Curves: each run is interpolated linearly in :math:`(\log c, \log m)` onto a common
log-spaced cost grid, then summarised by the median over seeds with a 20–80 % band. A run
contributes nothing before its first checkpoint with positive cost or after its last
checkpoint, except a diverged run, which counts as :math:`+\infty` from its end on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from bibench.analysis.runs import initial_values

__all__ = [
    "band",
    "curves",
    "first_hit",
    "hitting_times",
    "interpolate_run",
    "log_grid",
    "quantiles",
    "running_mean",
    "targets",
]


def first_hit(cost: np.ndarray, metric: np.ndarray, eps: np.ndarray) -> np.ndarray:
    r""":math:`N(\varepsilon_j)` for one run: the cost of the first checkpoint whose metric
    is :math:`\le \varepsilon_j`, ``inf`` when none is (NaN metrics never count)."""
    cost = np.asarray(cost, dtype=float)
    metric = np.asarray(metric, dtype=float)
    eps = np.atleast_1d(np.asarray(eps, dtype=float))
    best = np.minimum.accumulate(np.where(np.isnan(metric), np.inf, metric))
    idx = np.searchsorted(-best, -eps, side="left")  # first k with best_k <= eps
    out = np.full(eps.shape, np.inf)
    hit = idx < len(best)
    out[hit] = cost[idx[hit]]
    return out


def targets(
    df: pd.DataFrame, eps: np.ndarray, *, relative: bool, metric: str = "hypergrad_norm"
) -> dict[str, np.ndarray]:
    r"""Targets per problem setting: ``eps`` itself, or ``eps`` times the median initial
    metric of the problem (relative targets make problems of different scale comparable)."""
    eps = np.asarray(eps, dtype=float)
    problems = df["problem_setting"].unique()
    if not relative:
        return {p: eps for p in problems}
    scale = initial_values(df, metric)
    return {p: eps * float(scale.get(p, math.nan)) for p in problems}


def hitting_times(
    df: pd.DataFrame,
    eps: Mapping[str, np.ndarray] | np.ndarray,
    *,
    metric: str = "hypergrad_norm",
    cost: str = "oracle_calls",
) -> pd.DataFrame:
    r"""One row per (run, target): the setting, ``seed``, ``target`` (index into the
    targets), ``eps``, ``N`` (``inf`` when censored), ``censored`` and ``cost_end`` (the
    run's total cost, the lower bound of a censored ``N``)."""
    rows = []
    for run_id, run in df.groupby("run_id", sort=False):
        ps = run["problem_setting"].iloc[0]
        e = np.asarray(eps[ps] if isinstance(eps, Mapping) else eps, dtype=float)
        n = first_hit(run[cost].to_numpy(), run[metric].to_numpy(), e)
        rows.append(
            pd.DataFrame(
                {
                    "run_id": run_id,
                    "problem": run["problem"].iloc[0],
                    "algorithm": run["algorithm"].iloc[0],
                    "problem_setting": ps,
                    "algorithm_setting": run["algorithm_setting"].iloc[0],
                    "seed": run["seed"].iloc[0],
                    "status": run["status"].iloc[-1],
                    "target": np.arange(len(e)),
                    "eps": e,
                    "N": n,
                    "censored": ~np.isfinite(n),
                    "cost_end": float(run[cost].iloc[-1]),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def log_grid(lo: float, hi: float, n: int = 80) -> np.ndarray:
    """``n`` log-spaced points from ``lo`` to ``hi`` (both > 0)."""
    if not (lo > 0 and hi >= lo):
        raise ValueError(f"a log grid needs 0 < lo <= hi, got lo={lo}, hi={hi}")
    grid = np.logspace(math.log10(lo), math.log10(hi), n)
    grid[0], grid[-1] = lo, hi  # exact ends: round-off must not push them off a run's range
    return grid


def running_mean(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    r"""The running average :math:`\frac{1}{x_k - x_0} \int_{x_0}^{x_k} m` of a run's metric
    (trapezoidal rule over its checkpoints); the first entry is the value itself."""
    x = np.asarray(x, dtype=float)
    values = np.asarray(values, dtype=float)
    area = np.concatenate([[0.0], np.cumsum(0.5 * (values[1:] + values[:-1]) * np.diff(x))])
    width = x - x[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(width > 0, area / np.where(width > 0, width, 1.0), values)


def interpolate_run(
    x: np.ndarray, values: np.ndarray, grid: np.ndarray, *, diverged: bool, floor: float
) -> np.ndarray:
    """A run's metric on ``grid``, interpolated in log–log; values below ``floor`` (zeros,
    round-off negatives) are raised to it."""
    x = np.asarray(x, dtype=float)
    values = np.asarray(values, dtype=float)
    ok = (x > 0) & np.isfinite(values)
    out = np.full(grid.shape, np.nan)
    if ok.sum() == 0:
        if diverged:
            out[grid >= (x[x > 0].min() if (x > 0).any() else 0)] = np.inf
        return out
    lx = np.log10(x[ok])
    lv = np.clip(np.log10(np.maximum(values[ok], floor)), -300.0, 300.0)  # 10**lv stays finite
    lx, keep = np.unique(lx, return_index=True)  # equal costs: keep the first record
    lv = lv[keep]
    lg = np.log10(grid)
    inside = (lg >= lx[0]) & (lg <= lx[-1])
    out[inside] = 10 ** np.interp(lg[inside], lx, lv)
    if diverged:
        out[lg > lx[-1]] = np.inf
    return out


def curves(
    df: pd.DataFrame,
    metric: str,
    x: str = "oracle_calls",
    *,
    n_grid: int = 80,
    transform: str = "none",
) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    r"""Per problem setting: its common log grid of ``x`` and, per algorithm setting, an
    array ``(seeds, grid)`` of the runs' ``metric`` on it. ``transform`` is ``"none"``,
    ``"best"`` (running minimum) or ``"mean"`` (running average over ``x``). Problem
    settings whose metric is NaN everywhere are left out."""
    out: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    positive = df[metric][df[metric] > 0]
    floor = float(positive.min()) if len(positive) else 1e-300
    for ps, part in df.groupby("problem_setting", sort=True):
        if not np.isfinite(part[metric]).any():
            continue
        xs = part[x][part[x] > 0]
        if xs.empty:
            continue
        grid = log_grid(float(xs.min()), float(xs.max()), n_grid)
        per_alg: dict[str, np.ndarray] = {}
        for alg, runs in part.groupby("algorithm_setting", sort=True):
            rows = []
            for _, run in runs.groupby("run_id", sort=False):
                xv, mv = run[x].to_numpy(float), run[metric].to_numpy(float)
                if transform == "best":
                    mv = np.minimum.accumulate(np.where(np.isnan(mv), np.inf, mv))
                elif transform == "mean":
                    mv = running_mean(xv, mv)
                diverged = run["status"].iloc[-1] == "diverged"
                rows.append(interpolate_run(xv, mv, grid, diverged=diverged, floor=floor))
            per_alg[alg] = np.vstack(rows)
        out[ps] = (grid, per_alg)
    return out


def quantiles(values: np.ndarray, qs: tuple[float, ...], axis: int = 0) -> np.ndarray:
    """Linear-interpolation quantiles along ``axis`` that ignore NaN and treat ``+inf``
    (censored or diverged) as above every finite value: a quantile that puts any weight
    on an infinite entry is infinite (numpy's would be NaN)."""
    v = np.moveaxis(np.asarray(values, dtype=float), axis, 0)
    v = np.sort(v, axis=0)  # NaN last, +inf just before
    n = (~np.isnan(v)).sum(axis=0)
    out = np.full((len(qs), *v.shape[1:]), np.nan)
    for i, q in enumerate(qs):
        h = np.maximum(n - 1, 0) * q
        lo = np.floor(h).astype(int)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        a = np.take_along_axis(v, lo[None], axis=0)[0]
        b = np.take_along_axis(v, hi[None], axis=0)[0]
        t = h - lo
        with np.errstate(invalid="ignore"):
            val = np.where(t > 0, a + t * (b - a), a)
        val = np.where(np.isinf(a) | ((t > 0) & np.isinf(b)), np.inf, val)
        out[i] = np.where(n > 0, val, np.nan)
    return out


def band(
    values: np.ndarray,
    qs: tuple[float, float, float] = (0.2, 0.5, 0.8),
    min_fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower quantile, median and upper quantile over runs (axis 0) at each grid point,
    NaN where fewer than ``min_fraction`` of the runs have a value there. ``+inf``
    (diverged) counts as a value above every other."""
    values = np.asarray(values, dtype=float)
    enough = (~np.isnan(values)).mean(axis=0) >= min_fraction
    out = quantiles(values, qs, axis=0)
    out[:, ~enough] = np.nan
    return out[0], out[1], out[2]
