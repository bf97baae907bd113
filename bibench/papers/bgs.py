r"""BGS-Opt: Arbel & Mairal, Non-Convex Bilevel Games with Critical Point Selection Maps
(NeurIPS 2022, arXiv 2207.04888): its experiments, figures and claims.

Experiment ``bgs`` (``configs/papers/bgs.yml``): the bias of BGS-Opt against the
unrolling depth ``T`` with and without the correction (Prop. 3 vs Prop. 5) on the App. E
degenerate quadratic toy (P8 ``bgs_quadratic``) and on the Mexican hat; the presets BGS /
Game / Unrolled; and the BOME toy (P9 ``bome_toy``), whose gradient-flow selection is not
the optimistic one.

Figures: the bias against ``T`` (App. E), BGS iterates on the Mexican-hat heatmap of
:math:`y \mapsto g(x, y)` (Fig. 1/2 style), the presets against oracle calls.

Claims: the unrolling bias and its removal by the correction (Prop. 3 vs Prop. 5); the BGS
equilibrium differs from the optimistic one on P9 (Sec. 2, the selection map).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from bibench.algorithm import batch_hyper
from bibench.analysis import plots
from bibench.analysis.hitting import curves, quantiles
from bibench.analysis.runs import prepare, run_summary
from bibench.analysis.tables import fmt
from bibench.errors import UserError
from bibench.oracle import Oracle
from bibench.papers.core import Claim, all_of, diff_ci, exceeds, mean_ci, not_testable
from bibench.papers.drawing import Output, save, table
from bibench.registry import PROBLEMS, get_algorithm, get_problem
from bibench.rng import BatchedRNG
from bibench.runner import STREAM_ALGORITHM, STREAM_INIT, STREAM_ORACLE

PAPER = "BGS-Opt (Arbel & Mairal, NeurIPS 2022)"
TITLE = "BGS-Opt (Arbel & Mairal, NeurIPS 2022, arXiv 2207.04888)"
EXPERIMENTS = ("bgs",)
QUICK = {
    "bgs": {
        "seeds": 2,
        "budget": 1000,
        "problems": {"bgs_quadratic": {"dim_x": 10, "dim_y": 5, "ker_dim": 1}, "bome_toy": {}},
        "algorithms": [
            {"bgs_opt": {"preset": "custom", "lr_y": 0.5, "n_warm": 1, "n_unroll": [1, 8],
                         "correction": [True, False]}},
            {"bgs_opt": {"preset": "bgs", "lr_y": 0.5}},
        ],
    }
}


def trajectory(problem: str, params: dict, algorithm: str, hyper: dict, seed: int, steps: int):
    """Iterates ``(x_k, y_k)`` of one run for ``steps`` outer steps, with the streams the
    runner uses (so they are those of the stored run with the same seed)."""
    prob = get_problem(problem)(get_problem(problem).Params(**params))
    seeds = torch.tensor([seed])
    init = BatchedRNG(seeds, STREAM_INIT)
    x, y = prob.init_x(init), prob.init_y(init)
    alg = get_algorithm(algorithm)(
        batch_hyper([get_algorithm(algorithm).Hyper(**hyper)], prob.device)
    )
    state = alg.init(
        prob,
        Oracle(prob, BatchedRNG(seeds, STREAM_ORACLE)),
        x,
        y,
        BatchedRNG(seeds, STREAM_ALGORITHM),
    )
    xs, ys = [state.x[0].clone()], [state.y[0].clone()]
    for _ in range(steps):
        state = alg.step(state)
        xs.append(state.x[0].clone())
        ys.append(state.y[0].clone())
    return prob, torch.stack(xs), torch.stack(ys)


def _bias_vs_t(df: pd.DataFrame, out: Path) -> list[Output]:
    part = df[(df["algorithm"] == "bgs_opt") & (df["hp_preset"] == "custom")]
    if part.empty:
        return []
    metric = _bgs_metric(part)
    last = run_summary(part, metric).rename(columns={"final": metric})
    for col in ("hp_correction", "hp_n_unroll", "prob_T"):
        if col in part:
            last[col] = last["run_id"].map(part.groupby("run_id")[col].first())
    probs = sorted(last["problem_setting"].unique())
    fig, axes = plots.panels(len(probs), ncols=3, width=4.2)
    rows = []
    for ax, ps in zip(axes, probs):
        sub = last[last["problem_setting"] == ps]
        for corr, grp in sub.groupby("hp_correction"):
            ts, lo, med, hi = [], [], [], []
            for t, g in grp.groupby("hp_n_unroll"):
                q = quantiles(g[metric].to_numpy(float), (0.2, 0.5, 0.8))
                ts.append(t)
                lo.append(q[0])
                med.append(q[1])
                hi.append(q[2])
                rows.append(
                    {
                        "problem": ps,
                        "correction": bool(corr),
                        "T": int(t),
                        "median": q[1],
                        "q20": q[0],
                        "q80": q[2],
                    }
                )
            med, lo, hi = map(np.asarray, (med, lo, hi))
            ax.errorbar(
                ts,
                med,
                yerr=np.abs(np.vstack([med - lo, hi - med])),
                marker="o",
                capsize=3,
                label="with correction" if corr else "without correction",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("unrolling depth T")
        ax.set_ylabel(f"final {'‖∂ₓL_φ‖' if metric == 'bgs_stationarity' else '‖∇Φ‖'}")
        ax.set_title(ps, fontsize="medium")
        ax.grid(True, alpha=0.3)
    plots.legend_outside(fig, axes, "median, 20–80%")
    outputs = save(
        fig,
        out / "bgs_bias_vs_T",
        "Arbel & Mairal (NeurIPS 2022) Prop. 3 vs Prop. 5 / App. E: BGS-Opt bias "
        "against the unrolling depth T, with and without the correction (final value at a "
        "fixed oracle budget: a deeper unrolling also leaves fewer outer steps)",
    )
    tab = pd.DataFrame(rows)
    disp = tab.assign(**{c: [fmt(v) for v in tab[c]] for c in ("median", "q20", "q80")})
    return outputs + table(
        out,
        "bgs_bias_vs_T",
        disp,
        "Arbel & Mairal (NeurIPS 2022) App. E: final stationarity against T",
    )


def _heatmap(out: Path) -> list[Output]:
    params, hyper = {"dim_x": 2, "dim_y": 2}, {"preset": "bgs", "lr_x": 0.1, "lr_y": 0.5}
    prob, xs, ys = trajectory("hat", params, "bgs_opt", hyper, seed=0, steps=200)
    x_end = xs[-1:].to(prob.dtype)
    lim = float(ys.abs().max()) + 1.0
    g1 = torch.linspace(-lim, lim, 241, dtype=prob.dtype)
    yy = torch.stack(torch.meshgrid(g1, g1, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        gval = prob.g(x_end.expand(len(yy), -1), yy).reshape(241, 241)
        ystar = prob.y_star(x_end)[0]
    fig = Figure(figsize=(5.6, 6.4), layout="constrained")
    ax = fig.subplots()
    mesh = ax.pcolormesh(g1, g1, torch.log10(gval + 1e-6), cmap="viridis", shading="auto")
    fig.colorbar(mesh, ax=ax, shrink=0.7, label=r"$\log_{10}(g(x_K, y) + 10^{-6})$")
    ax.plot(ys[:, 0], ys[:, 1], "-o", color="tab:red", ms=2.5, lw=1, label="BGS-Opt iterates $y_k$")
    ax.plot(ys[0, 0], ys[0, 1], "s", color="white", mec="k", label="$y_0$")
    ax.plot(
        ystar[0],
        ystar[1],
        "*",
        color="gold",
        mec="k",
        ms=14,
        label=r"optimistic selection $y^\star(x_K)$",
    )
    ax.set_xlabel("$y_1$")
    ax.set_ylabel("$y_2$")
    ax.set_aspect("equal")
    ax.set_title("Mexican hat, heatmap at the last upper iterate $x_K$", fontsize="medium")
    fig.legend(*ax.get_legend_handles_labels(), fontsize="small", loc="outside lower center")
    return save(
        fig,
        out / "bgs_heatmap",
        "Arbel & Mairal (NeurIPS 2022) Fig. 1/2: BGS iterates on the Mexican-hat "
        "heatmap of y -> g(x, y) (hat, dim_x = dim_y = 2, seed 0)",
    )


def _bgs_metric(df: pd.DataFrame) -> str:
    """BGS's own stationarity ‖∂ₓL_φ‖ where the problem gives it, else ‖∇Φ‖."""
    col = "bgs_stationarity"
    return col if col in df and np.isfinite(df[col]).any() else "hypergrad_norm"


def draw(df: pd.DataFrame, out: Path) -> list[Output]:
    df = prepare(df)
    if "hp_preset" not in df:
        raise UserError("no BGS-Opt runs in the results")
    outputs = _bias_vs_t(df, out)
    presets = df[(df["algorithm"] == "bgs_opt") & (df["hp_preset"] != "custom")]
    metric = _bgs_metric(df)
    if not presets.empty:
        data = curves(presets, metric, "oracle_calls")
        label = "‖∂ₓL_φ‖ (BGS stationarity)" if metric == "bgs_stationarity" else "‖∇Φ‖"
        fig = plots.convergence_figure(data, label, "oracle calls (all types)")
        outputs += save(
            fig,
            out / "bgs_presets",
            "Arbel & Mairal (NeurIPS 2022) App. E: BGS vs Game vs Unrolled "
            "(stationarity against oracle calls)",
        )
    if "hat" in PROBLEMS.entries:
        outputs += _heatmap(out)
    return outputs




# -- claims ---------------------------------------------------------------------------
BIAS_MARGIN = 1.0  # an effect is at least one decade of the final stationarity


def _final_logs(runs: pd.DataFrame, metric: str) -> np.ndarray:
    s = run_summary(runs, metric)
    with np.errstate(divide="ignore"):
        return np.log10(s["final"].to_numpy(float))


def claim_unrolling_bias(df: pd.DataFrame) -> Claim:
    claim = ("Unrolled BGS-Opt is biased and its bias shrinks with the depth T (Prop. 3); "
             "the correction term removes it already at T = 1 (Prop. 5)")  # fmt: skip
    experiment = "configs/papers/bgs.yml (bgs_quadratic, preset custom)"
    part = df[(df["algorithm"] == "bgs_opt") & (df["problem"] == "bgs_quadratic")]
    if part.empty or not {"hp_n_unroll", "hp_correction", "hp_preset"} <= set(part):
        return not_testable(PAPER, claim, experiment, "no custom bgs_opt runs on bgs_quadratic")
    part = part[part["hp_preset"] == "custom"]
    metric = _bgs_metric(part)
    ts = sorted(part["hp_n_unroll"].unique())
    t_lo, t_hi = ts[0], ts[-1]

    def logs(t, corr):
        return _final_logs(part[(part["hp_n_unroll"] == t) & (part["hp_correction"] == corr)],
                           metric)  # fmt: skip

    depth = diff_ci(logs(t_lo, False), logs(t_hi, False))
    corr = diff_ci(logs(t_lo, False), logs(t_lo, True))
    verdict, why = all_of({
        f"the bias shrinks from T = {t_lo} to T = {t_hi}": exceeds(depth, BIAS_MARGIN, "the drop"),
        f"the correction removes it at T = {t_lo}": exceeds(corr, BIAS_MARGIN, "the drop"),
    })  # fmt: skip
    evidence = (
        f"log10 final {metric}: without correction T={t_lo} minus T={t_hi}: {depth}; "
        f"at T={t_lo} without minus with correction: {corr}"
    )
    return Claim(PAPER, claim, experiment, evidence, verdict, why)


def claim_equilibrium(df: pd.DataFrame) -> Claim:
    claim = ("The BGS equilibrium differs from the optimistic solution: on the BOME toy "
             "(P9) BGS-Opt becomes BGS-stationary where |Phi'| stays away from 0 (Sec. 2)")
    experiment = "configs/papers/bgs.yml (bome_toy, preset bgs)"
    part = df[(df["algorithm"] == "bgs_opt") & (df["problem"] == "bome_toy")]
    if part.empty or not {"bgs_stationarity", "hp_preset"} <= set(part):
        return not_testable(PAPER, claim, experiment, "no bgs_opt runs on bome_toy")
    part = part[part["hp_preset"] == "bgs"]
    bgs = mean_ci(_final_logs(part, "bgs_stationarity"))
    opt = mean_ci(_final_logs(part, "hypergrad_norm"))
    verdict, why = all_of({
        "BGS-stationary (final ||d_x L_phi|| < 1e-4)": exceeds(
            type(bgs)(-bgs.value, -bgs.high, -bgs.low), 4.0, "-log10 ||d_x L_phi||"),
        "not optimistic-stationary (final |Phi'| > 1e-2)": exceeds(opt, -2.0, "log10 |Phi'|"),
    })  # fmt: skip
    evidence = f"log10 final ||d_x L_phi||: {bgs}; log10 final |Phi'(x)|: {opt}"
    return Claim(PAPER, claim, experiment, evidence, verdict, why)


def claims(df: pd.DataFrame, context: dict | None = None) -> list[Claim]:
    """The paper's claims whose data are in ``df``."""
    df = prepare(df)
    return [claim_unrolling_bias(df), claim_equilibrium(df)]
