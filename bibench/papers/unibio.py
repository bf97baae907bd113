r"""UniBiO: Bilevel Optimization with Lower-Level Uniform Convexity: Theory and Algorithm
(ICLR 2026, arXiv 2603.00027): its synthetic experiment, figures and claims.

Experiments (shipped configs in ``configs/papers/``):

* ``unibio`` — problem P11a ``unibio_synthetic`` (App. E.3: :math:`g = |y|^p/p - y\sin x`,
  :math:`\Phi = \sin(\sin x)`), ``p`` = 2, 4, 6, 8, deterministic and three noise levels,
  every step :math:`\eta \in \{.05, .03, .02, .01\}` for every ``p``; the figures keep the
  authors' per-``p`` step :math:`\eta_p` = .05, .03, .02, .01.
* the shared-step control: the same runs at one step :math:`\eta` for every ``p``, tuned
  once by ``bibench tune``'s protocol on ``p = 4`` (:func:`tune_shared_eta`).
* ``unibio_p_rate`` — problem P11e ``lp_degenerate`` (lower Hessian vanishing at
  :math:`y^*(x_\star) = 0` at order ``p - 2``), ``p`` = 2, 4, 6, 8 at one shared step
  tuned on ``p = 4``: :math:`N(\varepsilon)` and its fitted exponent beside the theory's
  :math:`5p - 6` (Thm. 5.1, :math:`\tilde O(\varepsilon^{-(5p-6)})`).

Figures: Fig. 1 (:math:`\|\nabla\Phi(x_t)\|` against ``t`` per noise level), Fig. 5
(running average with fitted power law :math:`\bar m_t \approx C t^{s}`, OLS on the median
over seeds, :math:`t \in [30, T]`, and the slopes against ``p``).

Claims: the ``p``-ordering of the slopes (App. E.3, Fig. 5(b)), under both designs; the
effect of oracle noise (Fig. 1(b)-(d)); the ``p``-dependence of the complexity exponent
(Thm. 5.1) on P11e.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from bibench.analysis import plots
from bibench.analysis.fits import SlopeFit, fit_exponent, fit_rate, ols
from bibench.analysis.hitting import first_hit, running_mean
from bibench.analysis.runs import prepare
from bibench.analysis.tables import fmt, to_markdown
from bibench.errors import UserError
from bibench.papers.core import (
    NOT_REPRODUCED,
    REPRODUCED,
    Claim,
    Interval,
    all_of,
    diff_ci,
    exceeds,
    not_testable,
    only_when,
)
from bibench.papers.drawing import Output, save, series, table

PAPER = "UniBiO (ICLR 2026)"
TITLE = "UniBiO (ICLR 2026, arXiv 2603.00027), synthetic p-sweep and slope estimate"
EXPERIMENTS = ("unibio", "unibio_p_rate")
QUICK = {
    "unibio": {
        "seeds": 2,
        "max_steps": 50,
        "problems": {"unibio_synthetic": {"p": [2, 8], "noise_std": [0.0, 1.0]}},
    },
    "unibio_p_rate": {"seeds": 2, "budget": 3000, "problems": {"lp_degenerate": {"p": [2, 8]}}},
}


UNIBIO_ETA = {2: 0.05, 4: 0.03, 6: 0.02, 8: 0.01}  # the authors' per-p upper step
UNIBIO_FIT_FROM = 30  # the declared fit window of the running average: t in [30, T]


UNIBIO_CAVEAT = (
    "Caveat: with a constant normalized step the 1-D upper iterate moves eta_p per step "
    "(sign descent), so over a fixed horizon the slopes reflect eta_p as much as p; "
    "`bibench claims --paper unibio` runs the control at one shared tuned step."
)


def _unibio_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The runs with the paper's step :math:`\\eta_p` for their ``p``."""
    if "hp_eta" not in df:
        return df.iloc[:0]
    eta = df["prob_p"].map(UNIBIO_ETA)
    return df[(df["algorithm"] == "unibio") & np.isclose(df["hp_eta"], eta)]


def unibio_slopes(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per (noise std, p): the slope of log10(running mean of ||grad Phi||) against
    log10(outer iterations) on t in [UNIBIO_FIT_FROM, T], with its bootstrap CI; and the
    curves."""
    rows, data = [], {}
    for noise, part in df.groupby("prob_noise_std", sort=True):
        ps = sorted(part["prob_p"].unique())
        res = series(
            part,
            {f"p={p}": part["prob_p"] == p for p in ps},
            "hypergrad_norm",
            "step",
            transform="mean",
        )
        if res is None:
            continue
        grid, values = res
        data[noise] = (grid, values)
        for p in ps:
            fit = fit_rate(values[f"p={p}"], grid, (UNIBIO_FIT_FROM, grid.max()), n_boot=1000)
            rows.append(
                {
                    "noise_std": noise,
                    "p": int(p),
                    "eta": UNIBIO_ETA[int(p)],
                    "slope": fit.slope,
                    "ci_low": fit.ci_low,
                    "ci_high": fit.ci_high,
                    "implied_b": -1.0 / fit.slope if fit.slope else math.nan,
                    "theory_b": 5 * p - 6,
                    "theory_slope": -1.0 / (5 * p - 6),
                    "n_seeds": fit.n_seeds,
                    "fit": fit,
                }
            )
    return pd.DataFrame(rows), data


def draw(df: pd.DataFrame, out: Path) -> list[Output]:
    df = _unibio_rows(prepare(df))
    if df.empty:
        raise UserError("no UniBiO runs with the paper's step sizes eta_p in the results")
    outputs: list[Output] = []
    noises = sorted(df["prob_noise_std"].unique())
    fig, axes = plots.panels(len(noises), ncols=4, width=3.6)
    cmap = plots.colors([f"p={p}" for p in sorted(df["prob_p"].unique())])
    for ax, noise, letter in zip(axes, noises, "abcdefgh"):
        part = df[df["prob_noise_std"] == noise]
        grid, values = series(
            part,
            {f"p={p}": part["prob_p"] == p for p in sorted(part["prob_p"].unique())},
            "hypergrad_norm",
            "step",
        )
        for name, v in values.items():
            plots.draw_band(ax, grid, v, cmap[name], name)
        ax.set_yscale("log")
        word = "deterministic" if noise == 0 else f"noise std {noise:g} (var {noise**2:.3g})"
        ax.set_title(f"({letter}) {word}", fontsize="medium")
        ax.set_xlabel("outer iterations t")
        ax.set_ylabel(r"$\|\nabla\Phi(x_t)\|$")
        ax.grid(True, alpha=0.3)
    plots.legend_outside(fig, axes, "median, 20–80% band")
    outputs += save(
        fig,
        out / "unibio_fig1_p_sweep",
        "UniBiO (ICLR 2026) Fig. 1(a)-(d): hypergradient norm vs iterations for "
        "p = 2, 4, 6, 8, deterministic and three noise levels",
    )

    tab, data = unibio_slopes(df)
    det = noises[0]
    grid, values = data[det]
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    ax_a, ax_b = fig.subplots(1, 2)
    for name, v in values.items():
        plots.draw_band(ax_a, grid, v, cmap[name], name)
        fit: SlopeFit = tab[(tab["noise_std"] == det) & (tab["p"] == int(name[2:]))][
            "fit"
        ].iloc[0]
        xs = grid[grid >= UNIBIO_FIT_FROM]
        ax_a.plot(
            xs,
            10 ** (fit.intercept + fit.slope * np.log10(xs)),
            "--",
            color=cmap[name],
            lw=1,
            label=f"_fit {name}",
        )
    ax_a.plot([], [], "k--", lw=1, label=rf"fit $C\,t^{{s}}$, $t \geq {UNIBIO_FIT_FROM}$")
    ax_a.set_xscale("log")
    ax_a.set_yscale("log")
    ax_a.set_xlabel("outer iterations t")
    ax_a.set_ylabel(r"running mean $\frac{1}{t}\sum_{s\leq t}\|\nabla\Phi(x_s)\|$")
    ax_a.set_title(
        f"(a) {'deterministic' if det == 0 else f'noise std {det:g}'}", fontsize="medium"
    )
    ax_a.grid(True, alpha=0.3)
    ax_a.legend(fontsize="small", loc="lower left")
    ncmap = plots.colors([f"{n:g}" for n in noises])
    for noise, part in tab.groupby("noise_std"):
        err = np.vstack([part["slope"] - part["ci_low"], part["ci_high"] - part["slope"]])
        ax_b.errorbar(
            part["p"],
            part["slope"],
            yerr=np.abs(err),
            marker="o",
            capsize=3,
            color=ncmap[f"{noise:g}"],
            label="deterministic" if noise == 0 else f"noise std {noise:g}",
        )
    ax_b.set_xlabel("uniform-convexity degree p")
    ax_b.set_ylabel("fitted slope s (95% bootstrap CI)")
    pv = np.array(sorted(tab["p"].unique()), dtype=float)
    ax_b.plot(pv, -1.0 / (5 * pv - 6), "k:", label="theory bound s = −1/(5p−6)")
    ax_b.set_title("(b) fitted slopes s against p", fontsize="medium")
    ax_b.set_xticks(sorted(tab["p"].unique()))
    ax_b.grid(True, alpha=0.3)
    ax_b.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    outputs += save(
        fig,
        out / "unibio_fig5_slopes",
        "UniBiO (ICLR 2026) Fig. 5(a)-(b): averaged hypergradient norm with fitted "
        "power law, and the fitted slopes against p",
    )

    shown = tab.drop(columns="fit")
    disp = pd.DataFrame(
        {
            "noise std": [fmt(v) for v in shown["noise_std"]],
            "p": shown["p"],
            "eta_p": shown["eta"],
            "slope s [95% CI]": [
                f"{fmt(r.slope)} [{fmt(r.ci_low)}, {fmt(r.ci_high)}]" for r in shown.itertuples()
            ],
            "implied b = -1/s": [fmt(v) for v in shown["implied_b"]],
            "theory b = 5p-6": shown["theory_b"],
            "theory s = -1/(5p-6)": [fmt(v) for v in shown["theory_slope"]],
        }
    )
    outputs += table(
        out,
        "unibio_slopes",
        disp,
        "UniBiO (ICLR 2026) App. E.3 / Fig. 5(b): table of fitted slopes",
    )
    print(
        "Fitted slope s of log10(running mean of ||grad Phi(x_t)||) against log10(t), "
        f"t = outer iterations in [{UNIBIO_FIT_FROM}, T]; OLS on the median over seeds, "
        "95% bootstrap CI over seeds:"
    )
    print(to_markdown(disp))
    for noise, part in tab.groupby("noise_std"):
        mags = part.sort_values("p")["slope"].abs().to_numpy()
        ok = bool(np.all(np.diff(mags) < 0))
        claim = " (the paper's claim, App. E.3)" if noise == 0 else " (noisy: not the claim)"
        print(
            f"noise std {noise:g}: |s| decreases as p grows: {'yes' if ok else 'NO'} "
            f"({', '.join(fmt(m) for m in mags)}){claim}"
        )
    print(UNIBIO_CAVEAT)
    return outputs




# -- claims ---------------------------------------------------------------------------
SLOPE_MARGIN = 0.05  # |s| must differ by 5 % of the larger |s| to count as an ordering
NOISE_MARGIN = math.log10(2.0)  # noise must raise the final ||grad Phi|| at least 2x
EXPONENT_MARGIN = 0.1  # b(8) - b(2) beyond 0.1
P_RATE_EPS = np.logspace(-0.5, -2, 7)  # absolute targets on ||grad Phi|| for N(eps) on P11e
PS = (2, 4, 6, 8)


def run_slope(run: pd.DataFrame) -> float:
    """Slope of log10(running mean of ||grad Phi||) against log10(t) on t >= 30."""
    t = run["step"].to_numpy(float)
    m = running_mean(t, run["hypergrad_norm"].to_numpy(float))
    keep = (t >= UNIBIO_FIT_FROM) & (m > 0) & np.isfinite(m)
    if keep.sum() < 2:
        return math.nan
    return ols(np.log10(t[keep]), np.log10(m[keep]))[0]


def _synthetic(df: pd.DataFrame) -> pd.DataFrame:
    if "hp_eta" not in df or "prob_p" not in df:
        return df.iloc[:0]
    return df[(df["algorithm"] == "unibio") & (df["problem"] == "unibio_synthetic")]


def _slopes(df: pd.DataFrame, eta_of: dict[int, float]) -> dict[int, np.ndarray]:
    """Per p: the per-seed slopes of the deterministic runs at step ``eta_of[p]``."""
    out = {}
    det = df[df["prob_noise_std"] == 0]
    for p, eta in eta_of.items():
        part = det[(det["prob_p"] == p) & np.isclose(det["hp_eta"], eta)]
        if not part.empty:
            out[p] = np.array([run_slope(r) for _, r in part.groupby("run_id")])
    return out


def ordering_verdict(slopes: dict[int, np.ndarray]) -> tuple[tuple[str, str], str]:
    """|s| decreases strictly as p grows: every adjacent pair's CI of |s_p| - |s_p'| lies
    above ``SLOPE_MARGIN`` times the larger |s|; returns the verdict and the evidence."""
    ps = sorted(slopes)
    if len(ps) < 2:
        return ("not testable here", "fewer than two p"), "—"
    scale = max(float(np.nanmean(np.abs(s))) for s in slopes.values())
    parts = {}
    for a, b in itertools.pairwise(ps):
        ci = diff_ci(np.abs(slopes[a]), np.abs(slopes[b]))
        parts[f"p={a}>{b}"] = exceeds(ci, SLOPE_MARGIN * scale, f"|s_{a}| - |s_{b}|")
    fails = [f"{k}: {v[1]}" for k, v in parts.items() if v[0] != REPRODUCED]
    verdict = (REPRODUCED, "") if not fails else (NOT_REPRODUCED, "; ".join(fails))
    evidence = ", ".join(f"p={p}: s = {fmt(float(np.mean(slopes[p])))}" for p in ps)
    return verdict, evidence


def claim_p_ordering(df: pd.DataFrame, shared_eta: float | None) -> Claim:
    claim = ("Larger p converges more slowly: the fitted slope |s| of the running mean of "
             "||grad Phi|| decreases with p (App. E.3, Fig. 5(b))")  # fmt: skip
    experiment = "configs/papers/unibio.yml (+ one step tuned on p = 4 for every p)"
    syn = _synthetic(df)
    if syn.empty:
        return not_testable(PAPER, claim, experiment, "no unibio runs on unibio_synthetic")
    paper_v, paper_ev = ordering_verdict(_slopes(syn, UNIBIO_ETA))
    evidence = f"per-p steps eta_p = .05/.03/.02/.01: {paper_ev}"
    if shared_eta is None:
        control = ("not testable here", "no tuned shared step given")
    else:
        control, shared_ev = ordering_verdict(_slopes(syn, dict.fromkeys(PS, shared_eta)))
        evidence += f"; one shared tuned step eta = {fmt(shared_eta)}: {shared_ev}"
    verdict, why = only_when(
        paper_v, control, "each p has its own step eta_p (the ordering comes from the steps)",
        f"at one shared step eta = {fmt(shared_eta) if shared_eta else '?'}",
    )  # fmt: skip
    return Claim(PAPER, claim, experiment, evidence, verdict, why)


def _final_log(run: pd.DataFrame) -> float:
    """log10 of the mean ||grad Phi|| over the last fifth of the run's checkpoints."""
    tail = run["hypergrad_norm"].to_numpy(float)[-max(1, len(run) // 5) :]
    return float(np.log10(np.mean(tail)))


def claim_noise(df: pd.DataFrame) -> Claim:
    claim = ("Oracle noise slows UniBiO down: at the largest noise level the hypergradient "
             "norm ends higher than without noise, for every p (Fig. 1(b)-(d))")  # fmt: skip
    experiment = "configs/papers/unibio.yml"
    syn = _synthetic(df)
    noises = sorted(syn["prob_noise_std"].unique()) if not syn.empty else []
    if len(noises) < 2 or noises[0] != 0:
        return not_testable(PAPER, claim, experiment, "no deterministic and noisy runs")
    loud, parts, ev = noises[-1], {}, []
    for p in sorted(syn["prob_p"].unique()):
        runs = syn[(syn["prob_p"] == p) & np.isclose(syn["hp_eta"], UNIBIO_ETA.get(int(p), -1))]
        fin = {n: [_final_log(r) for _, r in g.groupby("run_id")]
               for n, g in runs.groupby("prob_noise_std")}  # fmt: skip
        if 0 in fin and loud in fin:
            ci = diff_ci(fin[loud], fin[0.0])
            parts[f"p={int(p)}"] = exceeds(ci, NOISE_MARGIN, "log10 final ratio")
            ev.append(f"p={int(p)}: {ci}")
    verdict, why = all_of(parts)
    evidence = f"log10(final noisy / final deterministic), noise std {fmt(loud)}: " + "; ".join(ev)
    return Claim(PAPER, claim, experiment, evidence, verdict, why)


def p_rate_exponents(df: pd.DataFrame) -> dict[int, SlopeFit]:
    """Per p: the fitted exponent b of N(eps) ~ eps^-b on P11e, bootstrap CI over seeds."""
    part = df[(df["problem"] == "lp_degenerate") & (df["algorithm"] == "unibio")]
    if part.empty or "prob_p" not in part:
        return {}
    fits = {}
    for p, g in part.groupby("prob_p"):
        n = np.vstack([first_hit(r["oracle_calls"].to_numpy(), r["hypergrad_norm"].to_numpy(),
                                 P_RATE_EPS) for _, r in g.groupby("run_id")])  # fmt: skip
        fits[int(p)] = fit_exponent(n, P_RATE_EPS, n_boot=1000)
    return fits


def claim_p_rate(df: pd.DataFrame) -> Claim:
    claim = ("The oracle complexity grows with p: N(eps) = O~(eps^-(5p-6)) (Thm. 5.1); on "
             "P11e at one shared tuned step the fitted exponent b grows with p")  # fmt: skip
    experiment = "configs/papers/unibio_p_rate.yml (lp_degenerate, one step tuned on p = 4)"
    fits = p_rate_exponents(df)
    if len(fits) < 2:
        return not_testable(PAPER, claim, experiment, "no unibio runs on lp_degenerate")
    lo_p, hi_p = min(fits), max(fits)
    gap = Interval(fits[hi_p].slope - fits[lo_p].slope,
                   fits[hi_p].ci_low - fits[lo_p].ci_high,
                   fits[hi_p].ci_high - fits[lo_p].ci_low)  # fmt: skip
    verdict, why = exceeds(gap, EXPONENT_MARGIN, f"b(p={hi_p}) - b(p={lo_p})")
    evidence = "; ".join(
        f"p={p}: b = {fmt(f.slope)} [{fmt(f.ci_low)}, {fmt(f.ci_high)}] (theory {5 * p - 6}, "
        f"{f.n_censored} censored targets)" for p, f in sorted(fits.items())
    ) + f"; eps = {', '.join(fmt(e) for e in P_RATE_EPS)}"
    return Claim(PAPER, claim, experiment, evidence, verdict, why)


def claims(df: pd.DataFrame, context: dict | None = None) -> list[Claim]:
    """The paper's claims whose data are in ``df``; ``context['unibio_shared_eta']`` is the
    tuned shared step of the control design."""
    ctx = context or {}
    df = prepare(df)
    return [claim_p_ordering(df, ctx.get("unibio_shared_eta")), claim_noise(df), claim_p_rate(df)]


# -- the shared step, tuned once --------------------------------------------------------
def tune_shared_eta(problem: str, algorithm: str, out: Path, *, budget: int, points: int = 4,
                    seeds: int = 2) -> float:  # fmt: skip
    """The step ``eta`` that ``bibench tune``'s protocol selects for ``algorithm`` (every
    other grid key fixed in it) on ``problem``: grid search, median final ||grad Phi||
    over the tuning seeds."""
    from bibench.commands import tune

    parser = argparse.ArgumentParser()
    tune.register(parser.add_subparsers())  # the command's own flags and defaults
    args = parser.parse_args(["tune", "--problems", problem, "--algorithms", algorithm,
                              "--budget", str(budget), "--tuning-seeds", str(seeds),
                              "--eval-seeds", "1", "--points", str(points), "--search-seed",
                              "0", "--criterion", "final", "--out", str(out),
                              "--quiet"])  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        tune.run(args)
    (best,) = sorted(Path(out).glob("best_*.yml"))
    hyper = next(iter(yaml.safe_load(best.read_text())["algorithms"].values()))
    return float(hyper["eta"])


def configure(data: dict[str, dict], out: Path, quick: bool) -> dict:
    """Tune one shared step on ``p = 4`` for each design that needs it (``bibench tune``'s
    protocol, every other grid key fixed to the experiment's value), add it to the
    P11a sweep and set it in the P11e sweep; the context holds the P11a step."""
    ctx: dict = {}
    if "unibio" in data:
        hyper = data["unibio"]["algorithms"]["unibio"]
        fixed = {k: v for k, v in hyper.items() if k != "eta"}
        steps = data["unibio"]["max_steps"]
        eta = tune_shared_eta(
            "unibio_synthetic[p=4]", _spec("unibio", {**fixed, "lr_x": 0.05, "gamma1": 1.0}),
            out / "tune_unibio", budget=60 * steps,
        )  # fmt: skip
        etas = list(hyper["eta"]) if isinstance(hyper["eta"], list) else [hyper["eta"]]
        hyper["eta"] = sorted({*etas, eta}, reverse=True)
        ctx["unibio_shared_eta"] = eta
    if "unibio_p_rate" in data:
        hyper = data["unibio_p_rate"]["algorithms"]["unibio"]
        eta = tune_shared_eta("lp_degenerate[p=4]", _spec("unibio", hyper),
                              out / "tune_unibio_p_rate", budget=data["unibio_p_rate"]["budget"])
        hyper["eta"] = eta
        ctx["unibio_p_rate_eta"] = eta
    return ctx


def _spec(name: str, hyper: dict) -> str:
    return f"{name}[{','.join(f'{k}={v}' for k, v in hyper.items())}]"
