r"""Suite-wide views: aRT and success rate, COCO ECDFs, Dolan–Moré performance profiles.

Notation: an *instance* is a (problem setting, target) pair, a *solver* an algorithm
setting, a *run* one seed of a solver on a problem.

* **aRT** (COCO's average runtime: Hansen, Auger, Brockhoff, Tušar & Tušar, "COCO:
  Performance Assessment", arXiv:1605.03560, Sec. 4) of a solver on an instance with
  runs :math:`i`:

  .. math::

      \mathrm{aRT} = \frac{\sum_{i \text{ successful}} N_i + \sum_{i \text{ unsuccessful}}
      c_{{\rm end}, i}}{\#\text{successful}}, \qquad +\infty \text{ without a success},

  and the success rate is the fraction of runs that reached the target.
* **ECDF** (COCO, Moré–Wild data profile): the fraction of (instance, run) pairs solved
  within a budget :math:`c`, :math:`\#\{N_i \le c\} / \#\text{pairs}`, plotted against
  :math:`c` on a log axis. Runs are the seeds as they ran (no simulated restarts), so a
  failure never counts as solved; the curve ends at the largest budget spent. When runs
  stopped at different budgets, an unsolved run is *right-censored* at the budget it
  spent: it is known not to have solved by then, nothing more. The ECDF is then the
  Kaplan–Meier estimate of :math:`P(N \le c)` (Kaplan & Meier, JASA 1958), as
  :func:`scipy.stats.ecdf` computes it from :class:`scipy.stats.CensoredData`:
  :math:`\hat F(c) = 1 - \prod_{t_j \le c} (1 - d_j / n_j)` over the solve costs
  :math:`t_j`, with :math:`d_j` runs solving at :math:`t_j` and :math:`n_j` still at risk
  (neither solved nor censored before :math:`t_j`). A diverged run can never solve: it is
  censored at :math:`+\infty`, so it stays at risk (in every denominator) for ever. With
  one common budget this is the plain fraction above.
* **Performance profile** (Dolan & Moré 2002): with instance costs :math:`t_{p,s}`
  (aRT here, :math:`+\infty` on failure), ratios :math:`r_{p,s} = t_{p,s} / \min_{s'}
  t_{p,s'}` and :math:`\rho_s(\tau) = \#\{p : r_{p,s} \le \tau\} / \#P`. An instance no
  solver solved counts as failed for all. Costs are floored at one oracle call so that a
  target met at the start (cost 0) gives ratio 1 rather than 0/0.
* **Integrated score** (AlgoPerf): :math:`\frac{1}{\tau_{\max} - 1}\int_1^{\tau_{\max}}
  \rho_s(\tau)\, d\tau` with :math:`\tau_{\max} = 4`, computed exactly for the step function
  :math:`\rho_s`: an instance with ratio :math:`r \le \tau_{\max}` contributes
  :math:`(\tau_{\max} - r)/(\tau_{\max} - 1)`, one with a larger ratio contributes 0.
  Profiles are relative to the best solver present: adding or removing a solver changes
  every ratio.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "art",
    "art_table",
    "ecdf",
    "instance_costs",
    "performance_profile",
    "profile_score",
    "ratios",
]


def art(n: np.ndarray, cost_end: np.ndarray) -> float:
    """COCO's average runtime of one solver on one instance (``n`` = ``inf`` when a run
    missed the target; ``cost_end`` its total cost)."""
    n, cost_end = np.asarray(n, dtype=float), np.asarray(cost_end, dtype=float)
    hit = np.isfinite(n)
    if not hit.any():
        return float("inf")
    return float((n[hit].sum() + cost_end[~hit].sum()) / hit.sum())


def art_table(hits: pd.DataFrame) -> pd.DataFrame:
    """Per (problem setting, algorithm setting, target): ``eps``, ``aRT``, ``success``
    (rate), ``n_runs``; ``hits`` as returned by :func:`bibench.analysis.hitting.hitting_times`."""
    keys = ["problem_setting", "algorithm_setting", "target"]
    rows = []
    for key, part in hits.groupby(keys, sort=True):
        n = part["N"].to_numpy()
        rows.append(
            {
                **dict(zip(keys, key)),
                "eps": float(part["eps"].iloc[0]),
                "aRT": art(n, part["cost_end"].to_numpy()),
                "success": float(np.isfinite(n).mean()),
                "n_runs": len(part),
            }
        )
    return pd.DataFrame(rows)


def instance_costs(hits: pd.DataFrame) -> pd.DataFrame:
    """The table :math:`t_{p,s}`: rows (problem setting, target), columns algorithm
    settings, values aRT (``inf`` when a solver never reached the target, or did not run
    on the problem)."""
    table = art_table(hits).pivot_table(
        index=["problem_setting", "target"],
        columns="algorithm_setting",
        values="aRT",
        aggfunc="first",
    )
    return table.fillna(np.inf)


def ratios(t: pd.DataFrame) -> pd.DataFrame:
    """Performance ratios :math:`r_{p,s} = t_{p,s} / \\min_{s'} t_{p,s'}` (``inf`` for a
    failure, and for every solver on an instance nobody solved)."""
    t = t.astype(float).clip(lower=1.0)
    best = t.min(axis=1)
    r = t.div(best, axis=0)
    r.loc[~np.isfinite(best)] = np.inf
    return r.fillna(np.inf)


def performance_profile(t: pd.DataFrame, taus: np.ndarray) -> pd.DataFrame:
    r""":math:`\rho_s(\tau)` for each solver (columns) at each ``tau`` (rows)."""
    r = ratios(t).to_numpy()
    taus = np.asarray(taus, dtype=float)
    rho = (r[None, :, :] <= taus[:, None, None]).mean(axis=1)
    return pd.DataFrame(rho, index=pd.Index(taus, name="tau"), columns=t.columns)


def profile_score(t: pd.DataFrame, tau_max: float = 4.0) -> pd.Series:
    r"""AlgoPerf's integrated profile :math:`\frac{1}{\tau_{\max}-1}\int_1^{\tau_{\max}}
    \rho_s`, exact for the step function."""
    r = ratios(t)
    return ((tau_max - r).clip(lower=0.0) / (tau_max - 1.0)).mean(axis=0)


def ecdf(
    n: np.ndarray, budgets: np.ndarray, censored_at: np.ndarray | None = None
) -> np.ndarray:
    """Fraction of entries of ``n`` (``inf`` = unsolved) that are ``<= budget``, for each
    budget. With ``censored_at`` (per entry: the cost an unsolved run spent, ``inf`` when
    it can never solve, e.g. diverged), the Kaplan–Meier estimate of that fraction
    (:func:`scipy.stats.ecdf` on right-censored data)."""
    n = np.asarray(n, dtype=float)
    budgets = np.asarray(budgets, dtype=float)
    hit = np.isfinite(n)
    if censored_at is None or hit.all() or not hit.any():
        n = np.sort(n)
        return np.searchsorted(n, budgets, side="right") / max(len(n), 1)
    from scipy import stats

    right = np.asarray(censored_at, dtype=float)[~hit]
    # CensoredData wants finite values: "never" is later than any cost asked about
    finite = np.concatenate([n[hit], right[np.isfinite(right)], budgets[np.isfinite(budgets)]])
    never = 2.0 * float(np.abs(finite).max()) + 1.0
    data = stats.CensoredData(uncensored=n[hit], right=np.where(np.isfinite(right), right, never))
    return stats.ecdf(data).cdf.evaluate(budgets)
