r"""The leaderboard: which method wins, per regime and problem family, with its uncertainty.

Repetitions. A *family* is a problem (the ``problem`` column); its *regime* is
``deterministic`` when the problem runs with exact oracles (``noise_std = 0`` and
``batch_size = 0``), ``stochastic`` otherwise. The repetitions of an (algorithm, family,
regime) cell are all its runs: seeds times problem instances (data splits, the problem's
``seed`` parameter), each with its own relative target
:math:`\varepsilon = e \cdot m_0`, :math:`m_0` the median initial metric of its problem
setting.

Per cell, over its :math:`n` repetitions with costs :math:`N_i(\varepsilon)`
(:math:`+\infty` when censored or diverged):

* **median** :math:`N(\varepsilon)` and its percentile-bootstrap confidence interval
  (``scipy.stats.bootstrap``, resampling repetitions; a censored repetition sorts above
  every cost, so a bound that puts weight on one is :math:`+\infty`);
* **success rate** :math:`\#\{N_i < \infty\}/n`;
* **failure**: the median is :math:`+\infty` (at most half the repetitions reached
  :math:`\varepsilon`); its *reason* is ``diverged`` when most unsuccessful runs diverged,
  else ``stalled`` (the median final metric over :math:`m_0` of the unsuccessful runs,
  which stays above :math:`e`);
* **rank** with ties: :math:`\mathrm{rank}_A = 1 + \#\{B : \mathrm{hi}_B <
  \mathrm{lo}_A\}`, the number of algorithms whose whole interval lies below A's, plus
  one, among the cells that do not fail. Algorithms whose intervals overlap are tied
  unless a third separates them. A failing cell gets no rank: its bootstrap lower bound
  can be finite and overlap the winner's interval, which would list it "tied at rank 1".

A claim "A beats B on family F in regime R" is made exactly when A's upper bound lies
below B's lower bound (:func:`verdict`); otherwise the table reports a tie. The row's
**score** is the Dolan–Moré integrated profile (:mod:`bibench.analysis.profiles`) of the
regime: instances are (family, target) pairs over a log grid of targets from
:math:`10^{-1/4}` down to :math:`e`, costs the aRT pooled over repetitions, so a failing
cell counts as unsolved.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from bibench.analysis.hitting import hitting_times, targets
from bibench.analysis.profiles import instance_costs, performance_profile, profile_score
from bibench.analysis.tables import fmt, to_markdown

__all__ = [
    "CELL_KEYS",
    "bootstrap_median",
    "claims",
    "leaderboard_hits",
    "markdown",
    "rank_with_ties",
    "regime_of",
    "scores",
    "summarize",
    "verdict",
]

CELL_KEYS = ["regime", "family", "algorithm"]
_BIG = 1e300  # stands for +inf inside the bootstrap (quantiles of inf are NaN in numpy)


def regime_of(df: pd.DataFrame) -> pd.Series:
    """``deterministic`` or ``stochastic`` per row, from ``prob_noise_std`` and
    ``prob_batch_size`` (absent columns: exact oracles)."""
    noise = df["prob_noise_std"].fillna(0.0) if "prob_noise_std" in df else 0.0
    batch = df["prob_batch_size"].fillna(0) if "prob_batch_size" in df else 0
    exact = (pd.Series(noise, index=df.index) == 0) & (pd.Series(batch, index=df.index) == 0)
    return pd.Series(np.where(exact, "deterministic", "stochastic"), index=df.index)


def leaderboard_hits(
    df: pd.DataFrame, eps: np.ndarray, metric: str = "hypergrad_norm"
) -> pd.DataFrame:
    """Per (run, relative target): :func:`~bibench.analysis.hitting.hitting_times` with
    ``regime``, ``family``, ``final_rel`` (the run's final metric over :math:`m_0`,
    ``inf`` when diverged) added. ``df`` as from :func:`bibench.analysis.runs.prepare`."""
    hits = hitting_times(df, targets(df, eps, relative=True, metric=metric), metric=metric)
    g = df.groupby("run_id", sort=False)
    m0 = df[df["step"] == 0].groupby("problem_setting")[metric].median()
    scale = g["problem_setting"].first().map(m0)
    final_rel = g[metric].last() / scale
    final_rel[g["status"].last() == "diverged"] = np.inf
    regime = pd.Series(regime_of(df).to_numpy(), index=df["run_id"]).groupby(level=0).first()
    hits["regime"] = hits["run_id"].map(regime)
    hits["family"] = hits["problem"]
    hits["final_rel"] = hits["run_id"].map(final_rel)
    return hits


def bootstrap_median(
    values: np.ndarray, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(median, lo, hi)``: the median of ``values`` (``inf`` = censored) and its
    percentile-bootstrap interval over them (``scipy.stats.bootstrap``)."""
    v = np.asarray(values, dtype=float)
    med = float(np.median(np.where(np.isfinite(v), v, _BIG)))
    if len(v) < 2 or n_boot < 1 or np.all(v == v[0]):
        return _inf(med), _inf(med), _inf(med)
    with np.errstate(over="ignore"):  # scipy's standard error squares the stand-in
        res = stats.bootstrap(
            (np.where(np.isfinite(v), v, _BIG),),
            np.median,
            n_resamples=n_boot,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    ci = res.confidence_interval
    return _inf(med), _inf(float(ci.low)), _inf(float(ci.high))


def _inf(v: float) -> float:
    """Back from the bootstrap's stand-in: anything that weighs a censored run is ``inf``."""
    return math.inf if v >= _BIG * 1e-10 else v


def rank_with_ties(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    r""":math:`1 + \#\{B : hi_B < lo_A\}` for each A (see the module docstring)."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    return 1 + (hi[None, :] < lo[:, None]).sum(axis=1)


def summarize(
    hits: pd.DataFrame, target: int = -1, n_boot: int = 2000, confidence: float = 0.95
) -> pd.DataFrame:
    """One row per (regime, family, algorithm) at target index ``target`` of ``hits``:
    ``n``, ``median``, ``lo``, ``hi``, ``success``, ``failed``, ``reason``, ``rank``."""
    t = sorted(hits["target"].unique())[target]
    part = hits[hits["target"] == t]
    rows = []
    for key, cell in part.groupby(CELL_KEYS, sort=True):
        n = cell["N"].to_numpy(dtype=float)
        med, lo, hi = bootstrap_median(n, n_boot, confidence)
        miss = cell[~np.isfinite(n)]
        failed = not math.isfinite(med)
        reason = ""
        if failed:
            diverged = (miss["status"] == "diverged").mean() > 0.5
            reason = "diverged" if diverged else "stalled"
        rows.append(
            {
                **dict(zip(CELL_KEYS, key)),
                "n": len(n),
                "median": med,
                "lo": lo,
                "hi": hi,
                "success": float(np.isfinite(n).mean()),
                "failed": failed,
                "reason": reason,
                "stalled_at": float(miss["final_rel"].median()) if len(miss) else math.nan,
                "eps": float(part["eps"].iloc[0]) if len(part) else math.nan,
            }
        )
    out = pd.DataFrame(rows)
    out["rank"] = pd.array([pd.NA] * len(out), dtype="Int64")
    for _, block in out[~out["failed"]].groupby(["regime", "family"], sort=False):
        out.loc[block.index, "rank"] = rank_with_ties(block["lo"], block["hi"])
    return out


def verdict(summary: pd.DataFrame, a: str, b: str, family: str, regime: str) -> str:
    """``beats`` when A's interval lies wholly below B's, ``loses`` for the converse, else
    ``tie``."""
    cells = summary.set_index(CELL_KEYS)
    ra, rb = cells.loc[(regime, family, a)], cells.loc[(regime, family, b)]
    if ra["hi"] < rb["lo"]:
        return "beats"
    if rb["hi"] < ra["lo"]:
        return "loses"
    return "tie"


def claims(summary: pd.DataFrame) -> pd.DataFrame:
    """Every decisive pair: ``winner`` beats ``loser`` on (regime, family), with both
    intervals."""
    rows = []
    for (regime, family), block in summary.groupby(["regime", "family"], sort=True):
        for a in block.itertuples():
            for b in block.itertuples():
                if a.hi < b.lo:
                    rows.append(
                        {
                            "regime": regime,
                            "family": family,
                            "winner": a.algorithm,
                            "winner_median": a.median,
                            "winner_ci": f"[{fmt(a.lo)}, {fmt(a.hi)}]",
                            "loser": b.algorithm,
                            "loser_median": b.median,
                            "loser_ci": f"[{fmt(b.lo)}, {fmt(b.hi)}]",
                        }
                    )
    cols = ["regime", "family", "winner", "winner_median", "winner_ci", "loser",
            "loser_median", "loser_ci"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def scores(hits: pd.DataFrame, tau_max: float = 4.0) -> dict[str, pd.Series]:
    """Per regime: the integrated performance-profile score of each algorithm over
    (family, target) instances, repetitions pooled into the aRT; and ``rho`` profiles."""
    out = {}
    for regime, part in hits.groupby("regime", sort=True):
        pooled = part.assign(problem_setting=part["family"], algorithm_setting=part["algorithm"])
        out[regime] = profile_score(instance_costs(pooled), tau_max)
    return out


def profiles(hits: pd.DataFrame, taus: np.ndarray) -> dict[str, pd.DataFrame]:
    """Per regime: :math:`\\rho_s(\\tau)` over the same instances as :func:`scores`."""
    out = {}
    for regime, part in hits.groupby("regime", sort=True):
        pooled = part.assign(problem_setting=part["family"], algorithm_setting=part["algorithm"])
        out[regime] = performance_profile(instance_costs(pooled), taus)
    return out


def _cell(r) -> str:
    if r.failed:
        why = "diverged" if r.reason == "diverged" else f"stalled at {fmt(r.stalled_at)}·m0"
        return f"✗ {why} ({r.success:.0%})"
    return f"{fmt(r.median)} [{fmt(r.lo)}, {fmt(r.hi)}] {r.success:.0%} #{r.rank}"


def table(summary: pd.DataFrame, score: pd.Series, regime: str) -> pd.DataFrame:
    """The display table of one regime: a row per algorithm (best score first), a column
    per family, then the score."""
    part = summary[summary["regime"] == regime]
    wide = part.assign(cell=[_cell(r) for r in part.itertuples()]).pivot(
        index="algorithm", columns="family", values="cell"
    )
    wide = wide.fillna("–")
    wide["profile score"] = [fmt(float(score.get(a, math.nan))) for a in wide.index]
    order = sorted(wide.index, key=lambda a: (-float(score.get(a, -1.0)), a))
    return wide.loc[order].reset_index()


def markdown(summary: pd.DataFrame, all_scores: dict[str, pd.Series], e: float) -> str:
    """The leaderboard section of the report: one table per regime, then its claims."""
    lines = [
        f"Cells: median N(ε) [95% bootstrap CI over seeds × splits] · success rate · rank "
        f"(ties share a rank: overlapping CIs), at ε = {fmt(e)} × the median initial "
        "‖∇Φ‖ of each problem; ✗ = failing (at most half the runs reached ε), with the "
        "reason. Last column: performance-profile score (AlgoPerf integral over τ ∈ [1, 4]"
        " of the Dolan–Moré profile, instances (family, target ≥ ε))."
    ]
    for regime in sorted(summary["regime"].unique()):
        score = all_scores.get(regime, pd.Series(dtype=float))
        lines += ["", f"### {regime}", "", to_markdown(table(summary, score, regime))]
        lines += ["", f"What the {regime} table supports (a CI wholly below the other's):", ""]
        part = summary[summary["regime"] == regime]
        for family, block in part.groupby("family", sort=True):
            best = block[block["rank"].eq(1).fillna(False)]
            if best.empty:
                lines.append(f"- {family}: every algorithm fails at ε")
                continue
            names = "; ".join(
                f"{r.algorithm} {fmt(r.median)} [{fmt(r.lo)}, {fmt(r.hi)}] beats "
                f"{int((block['lo'] > r.hi).sum())} of {len(block) - 1}"
                for r in best.itertuples()
            )
            tied = "" if len(best) == 1 else f" ({len(best)} tied at rank 1)"
            lines.append(f"- {family}{tied}: {names}")
    return "\n".join(lines) + "\n"
