r"""Chen, Xu, Zhang, On Finding Small Hyper-Gradients in Bilevel Optimization: Hardness
Results and Improved Analysis (COLT 2024, arXiv 2301.00712): experiments, figures, claims.

Experiment ``chen`` (``configs/papers/chen.yml``): the hard nonconvex-convex instance P13
``cxz_hard`` for three chain lengths :math:`q = 2TK` (zero-respecting methods keep
:math:`|\Phi'| = 1` until :math:`q/2` lower-level queries; the hardness theorem, App. E
construction), and F2BA against AID, ITD and StocBiO on a PL lower level (P6
``pl_graph``), deterministic (theory :math:`\varepsilon^{-2}`) and stochastic.

Claims: :math:`|\Phi'| = 1` before :math:`q/2` queries for every zero-respecting method;
F2BA's deterministic rate on the PL problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bibench.analysis import plots
from bibench.analysis.fits import fit_exponent
from bibench.analysis.hitting import curves, first_hit
from bibench.analysis.runs import prepare
from bibench.analysis.tables import fmt
from bibench.papers.core import (
    NOT_REPRODUCED,
    REPRODUCED,
    Claim,
    Interval,
    all_of,
    exceeds,
    not_testable,
)
from bibench.papers.drawing import Output, report, save

PAPER = "Chen, Xu, Zhang (COLT 2024)"
TITLE = "Chen, Xu, Zhang (COLT 2024, arXiv 2301.00712)"
EXPERIMENTS = ("chen",)
QUICK = {
    "chen": {
        "seeds": 2,
        "budget": 1000,
        "problems": {"cxz_hard": {"T": 2, "K": 10}, "pl_graph": {}},
        "algorithms": {"f2ba": {}, "itd": {}},
    }
}
HARD_TOL = 1e-9  # |Phi'| >= 1 - HARD_TOL before q/2 queries
RATE_MARGIN = 0.25  # b <= 2 + 0.25 counts as the eps^-2 rate
REL_EPS = np.logspace(-1, -4, 7)  # targets relative to ||grad Phi(x0)||


def draw(df: pd.DataFrame, out: Path) -> list[Output]:
    df = prepare(df)
    outputs: list[Output] = []
    hard = df[df["problem"] == "cxz_hard"]
    if not hard.empty:
        hard = hard.assign(lower_queries=hard["n_grad_y_g"] + hard["n_hvp_yy_g"])
        q_of = hard.groupby("problem_setting")[["prob_T", "prob_K"]].first().prod(axis=1) * 2
        probs = sorted(q_of.index, key=lambda ps: q_of[ps])
        fig, axes = plots.panels(len(probs), ncols=3, width=4.2)
        cmap = plots.colors(list(hard["algorithm_setting"].unique()))
        for ax, ps in zip(axes, probs):
            sub = hard[hard["problem_setting"] == ps]
            q = int(q_of[ps])
            data = curves(sub, "hypergrad_norm", "lower_queries", n_grid=100)
            for grid, per_alg in data.values():
                for alg, v in per_alg.items():
                    plots.draw_band(ax, grid, v, cmap[alg], alg)
            ax.axvline(q / 2, color="k", ls=":", lw=1, label="q/2 lower-level queries")
            ax.set_xscale("log")
            ax.set_ylim(0, 1.05)
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.set_xlabel("lower-level queries (∇_y g + HVP)")
            ax.set_ylabel(r"$|\Phi'(x)|$")
            ax.set_title(f"{ps} (q = {q})", fontsize="medium")
            ax.grid(True, alpha=0.3)
        plots.legend_outside(fig, axes, "median, 20–80% band")
        outputs += save(
            fig,
            out / "chen_hard_instance",
            "Chen, Xu, Zhang (COLT 2024) hardness theorem (App. E construction): "
            "|Phi'| = 1 until q/2 lower-level queries for zero-respecting methods",
        )
    rest = df[df["problem"] != "cxz_hard"]
    if not rest.empty:
        outputs += report(
            rest,
            out / "report",
            "Chen, Xu, Zhang (COLT 2024) rates on a PL lower level "
            "(deterministic eps^-2 vs stochastic)",
        )
    return outputs




def _hard(df: pd.DataFrame) -> pd.DataFrame:
    hard = df[df["problem"] == "cxz_hard"]
    if hard.empty:
        return hard
    q = 2 * hard["prob_T"] * hard["prob_K"]
    return hard.assign(lower_queries=hard["n_grad_y_g"] + hard["n_hvp_yy_g"], q=q)


def hard_instance_parts(hard: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Per algorithm: ``reproduced`` iff |Phi'| >= 1 - HARD_TOL at every checkpoint with
    fewer than q/2 lower-level queries, on every chain length and seed."""
    parts = {}
    for alg, g in hard.groupby("algorithm"):
        before = g[g["lower_queries"] < g["q"] / 2]["hypergrad_norm"]
        if before.empty:
            parts[alg] = ("not testable here", "no checkpoint before q/2")
        elif before.min() >= 1 - HARD_TOL:
            parts[alg] = (REPRODUCED, "")
        else:
            parts[alg] = (NOT_REPRODUCED, f"min |Phi'| before q/2 is {fmt(before.min())}")
    return parts


def claim_hard_instance(df: pd.DataFrame) -> Claim:
    claim = ("Zero-respecting methods keep |Phi'(x)| = 1 on the hard instance until q/2 "
             "lower-level queries (hardness theorem, App. E construction)")
    experiment = "configs/papers/chen.yml (cxz_hard, q = 2TK)"
    hard = _hard(df)
    if hard.empty:
        return not_testable(PAPER, claim, experiment, "no runs on cxz_hard")
    parts = hard_instance_parts(hard)
    ev = []
    for alg, g in hard.groupby("algorithm"):
        before = g[g["lower_queries"] < g["q"] / 2]["hypergrad_norm"]
        after = g.groupby("run_id")["hypergrad_norm"].last()
        ev.append(f"{alg}: min |Phi'| before q/2 = {fmt(before.min())}, final median "
                  f"{fmt(float(after.median()))}")  # fmt: skip
    verdict, why = all_of(parts)
    seeds = hard["seed"].nunique()
    return Claim(PAPER, claim, experiment, f"over {seeds} seeds: " + "; ".join(ev), verdict, why)


def f2ba_exponent(df: pd.DataFrame):
    part = df[(df["problem"] == "pl_graph") & (df["algorithm"] == "f2ba")]
    if "prob_noise_std" in part:
        part = part[part["prob_noise_std"] == 0]
    if part["run_id"].nunique() < 2:
        return None
    n = np.vstack([
        first_hit(r["oracle_calls"].to_numpy(), r["hypergrad_norm"].to_numpy(),
                  REL_EPS * r["hypergrad_norm"].iloc[0]) for _, r in part.groupby("run_id")
    ])  # fmt: skip
    return fit_exponent(n, REL_EPS, n_boot=1000)


def claim_f2ba_rate(df: pd.DataFrame) -> Claim:
    claim = ("F2BA finds an eps-stationary point in O~(eps^-2) oracle calls on a PL lower "
             "level, deterministic oracles (improved analysis)")
    experiment = "configs/papers/chen.yml (pl_graph, noise_std = 0)"
    fit = f2ba_exponent(df)
    if fit is None:
        return not_testable(PAPER, claim, experiment, "no deterministic f2ba runs on pl_graph")
    slack = Interval(2 + RATE_MARGIN - fit.slope, 2 + RATE_MARGIN - fit.ci_high,
                     2 + RATE_MARGIN - fit.ci_low)  # fmt: skip
    verdict, why = exceeds(slack, 0.0, f"2 + {RATE_MARGIN} - b")
    evidence = (f"fitted b = {fmt(fit.slope)} [{fmt(fit.ci_low)}, {fmt(fit.ci_high)}] over "
                f"relative targets 1e-1..1e-4 ({fit.n_censored} censored), theory b = 2")
    return Claim(PAPER, claim, experiment, evidence, verdict, why)


def claims(df: pd.DataFrame, context: dict | None = None) -> list[Claim]:
    """The claims whose data are in ``df``."""
    df = prepare(df)
    return [claim_hard_instance(df), claim_f2ba_rate(df)]
