r"""``bibench figures --paper unibio|bgs|hgms|chen``: regenerate a seed paper's experiments.

Each paper has a run config in ``configs/papers/<paper>.yml`` (keys as in
:mod:`bibench.config`, so ``bibench run --config`` runs it too). The command runs it into
``results/figures/<paper>/`` (resumable: finished runs are skipped), then draws from the
stored results only into ``results/figures/<paper>/_figures/`` (the leading underscore
keeps ``pandas.read_parquet`` of the results folder blind to it, as for ``_runs``), and
prints which figure or table of which paper each output corresponds to. ``--quick`` is a
reduced variant (fewer seeds, shorter runs) for tests and smoke checks; it writes to
``<paper>-quick``. Names in a config that are not registered (yet) are skipped with a
note, so the rest still runs.

What is drawn, per paper:

* ``unibio`` — UniBiO (ICLR 2026), synthetic problem P11a with the paper's per-``p`` upper
  step :math:`\eta_p` = 0.05, 0.03, 0.02, 0.01 for p = 2, 4, 6, 8. Fig. 1:
  :math:`\|\nabla\Phi(x_t)\|` against outer iterations, one panel per noise level
  (deterministic, then std 0.1, 1, √10: the paper's *variances* 0.01, 1, 10). Fig. 5: the
  running average :math:`\bar m_t = \frac1t \sum_{s \le t} \|\nabla\Phi(x_s)\|` on log–log
  axes with the fitted power law :math:`\bar m_t \approx C t^{s}` (OLS on the median over
  seeds, :math:`t \in [30, T]`, bootstrap CI), and the fitted slopes against ``p``. The
  slope table is printed; :math:`b = -1/s` is the implied exponent of
  :math:`N(\varepsilon) \propto \varepsilon^{-b}`, shown beside the theory's
  :math:`5p - 6`.
* ``bgs`` — Arbel & Mairal (NeurIPS 2022): the bias of BGS-Opt against the unrolling depth
  ``T`` with and without the correction (Prop. 3 vs Prop. 5; the App. E toy is P8
  ``bgs_quadratic``), BGS iterates on the Mexican-hat heatmap of
  :math:`y \mapsto g(x, y)` (Fig. 1/2 style), and the presets BGS / Game / Unrolled.
* ``hgms`` — select-then-differentiate (arXiv 2605.09209): HG-MS against non-selecting
  methods on the manifold problems (the full report: curves, N(ε), exponents, profiles).
* ``chen`` — Chen, Xu, Zhang (COLT 2024): the hard instance P13 (:math:`|\Phi'| = 1` until
  :math:`q/2` lower-level queries, the zero-respecting chain) and F2BA's complexity on a PL
  problem, deterministic and stochastic.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from bibench import config, store
from bibench.algorithm import batch_hyper
from bibench.analysis import plots
from bibench.analysis.fits import SlopeFit, fit_rate
from bibench.analysis.hitting import curves, quantiles
from bibench.analysis.report import ReportOptions, write_report
from bibench.analysis.runs import prepare, run_summary
from bibench.analysis.tables import fmt, to_markdown
from bibench.errors import UserError
from bibench.oracle import Oracle
from bibench.registry import ALGORITHMS, PROBLEMS, REPO_ROOT, discover, get_algorithm, get_problem
from bibench.rng import BatchedRNG
from bibench.runner import STREAM_ALGORITHM, STREAM_INIT, STREAM_ORACLE, resolve_device
from bibench.sweep import run_sweep

__all__ = ["PAPERS", "register"]

Output = tuple[Path, str]


@dataclasses.dataclass(frozen=True)
class Paper:
    title: str
    draw: Callable[[pd.DataFrame, Path], list[Output]]
    quick: dict  # config overrides of --quick


def register(sub) -> None:
    p = sub.add_parser("figures", help="regenerate a seed paper's figures and tables")
    p.add_argument("--paper", required=True, choices=sorted(PAPERS))
    p.add_argument("--out", default="results/figures", help="default results/figures")
    p.add_argument("--config", metavar="FILE.yml", help="default configs/papers/<paper>.yml")
    p.add_argument("--quick", action="store_true", help="reduced run (fewer seeds, shorter)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _known(entries: list[tuple[str, object]], registry, what: str) -> list[tuple[str, object]]:
    missing = sorted({n for n, _ in entries if n not in registry.entries})
    for name in missing:
        print(
            f"bibench: note: {what} '{name}' is not registered; its runs are skipped",
            file=sys.stderr,
        )
    return [(n, p) for n, p in entries if n in registry.entries]


def run(args: argparse.Namespace) -> int:
    paper = PAPERS[args.paper]
    path = (
        Path(args.config) if args.config else REPO_ROOT / "configs" / "papers" / f"{args.paper}.yml"
    )
    data = config.load_yaml(path)
    if args.quick:
        data.update(paper.quick)
    suffix = "-quick" if args.quick else ""
    data["out"] = str(Path(args.out) / f"{args.paper}{suffix}")
    if args.device:
        data["device"] = args.device
    cfg = config.from_mapping(data)
    discover(cfg.plugins)
    cfg.problems = _known(cfg.problems, PROBLEMS, "problem")
    cfg.algorithms = _known(cfg.algorithms, ALGORITHMS, "algorithm")
    if not cfg.problems or not cfg.algorithms:
        raise UserError(
            f"nothing to run for --paper {args.paper}: its problems or algorithms "
            "are not registered"
        )
    specs = config.expand(cfg)
    print(f"bibench: {paper.title}: {len(specs)} runs from {path} into {cfg.out}")
    summary = run_sweep(
        specs, cfg.out, device=str(resolve_device(cfg.device)), progress=not args.quiet
    )
    for msg in summary.messages:
        print(f"bibench: {msg}", file=sys.stderr)
    ids = {s.run_id for s in specs}
    df = store.load(cfg.out)
    df = df[df["run_id"].isin(ids)]
    outputs = paper.draw(df, Path(cfg.out) / "_figures")
    print(f"bibench: {summary.line()}")
    grouped: dict[str, list[Path]] = {}
    for out_path, what in outputs:
        grouped.setdefault(what, []).append(out_path)
    for what, paths in grouped.items():
        print(f"{what}\n    -> {', '.join(str(p) for p in paths)}")
    return 1 if summary.failed else 0


# -- helpers ------------------------------------------------------------------------------
def _series(df: pd.DataFrame, by: dict[str, pd.Series], metric: str, x: str, transform="none"):
    """Curves of ``metric`` against ``x`` for each named subset ``by[name]`` (a row mask),
    all on one grid: ``(grid, {name: (runs, grid)})``."""
    parts = [
        df[mask].assign(problem_setting="all", algorithm_setting=name)
        for name, mask in by.items()
        if mask.any()
    ]
    if not parts:
        return None
    ((grid, values),) = curves(
        pd.concat(parts), metric, x, n_grid=120, transform=transform
    ).values()
    return grid, {name: values[name] for name in by if name in values}


def _save(fig, stem: Path, what: str) -> list[Output]:
    return [(p, what) for p in plots.save(fig, stem)]


def _table(out: Path, stem: str, table: pd.DataFrame, what: str) -> list[Output]:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(to_markdown(table))
    table.to_csv(out / f"{stem}.csv", index=False)
    return [(out / f"{stem}.md", what), (out / f"{stem}.csv", what)]


# -- UniBiO -------------------------------------------------------------------------------
UNIBIO_ETA = {2: 0.05, 4: 0.03, 6: 0.02, 8: 0.01}  # the authors' per-p upper step
UNIBIO_FIT_FROM = 30  # the declared fit window of the running average: t in [30, T]


UNIBIO_CAVEAT = (
    "Caveat: with a constant normalized step the 1-D upper iterate moves eta_p per step "
    "(sign descent), so over a fixed horizon the slopes reflect eta_p as much as p "
    "(research/unibio.md §1.2). The window t in [30, T] starts after the early rise of the "
    "running mean (from x0 = 1 towards |Phi'(0)| = 1); on the deterministic runs the "
    "ordering holds for windows starting at t = 10 to 40, not for windows starting after "
    "t = 50 (where p = 2 and p = 4 tie)."
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
        res = _series(
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


def draw_unibio(df: pd.DataFrame, out: Path) -> list[Output]:
    df = _unibio_rows(prepare(df))
    if df.empty:
        raise UserError("no UniBiO runs with the paper's step sizes eta_p in the results")
    outputs: list[Output] = []
    noises = sorted(df["prob_noise_std"].unique())
    fig, axes = plots.panels(len(noises), ncols=4, width=3.6)
    cmap = plots.colors([f"p={p}" for p in sorted(df["prob_p"].unique())])
    for ax, noise, letter in zip(axes, noises, "abcdefgh"):
        part = df[df["prob_noise_std"] == noise]
        grid, values = _series(
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
    outputs += _save(
        fig,
        out / "unibio_fig1_p_sweep",
        "UniBiO (ICLR 2026) Fig. 1(a)-(d): hypergradient norm vs iterations for "
        "p = 2, 4, 6, 8, deterministic and three noise levels",
    )

    table, data = unibio_slopes(df)
    det = noises[0]
    grid, values = data[det]
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    ax_a, ax_b = fig.subplots(1, 2)
    for name, v in values.items():
        plots.draw_band(ax_a, grid, v, cmap[name], name)
        fit: SlopeFit = table[(table["noise_std"] == det) & (table["p"] == int(name[2:]))][
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
    for noise, part in table.groupby("noise_std"):
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
    pv = np.array(sorted(table["p"].unique()), dtype=float)
    ax_b.plot(pv, -1.0 / (5 * pv - 6), "k:", label="theory bound s = −1/(5p−6)")
    ax_b.set_title("(b) fitted slopes s against p", fontsize="medium")
    ax_b.set_xticks(sorted(table["p"].unique()))
    ax_b.grid(True, alpha=0.3)
    ax_b.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    outputs += _save(
        fig,
        out / "unibio_fig5_slopes",
        "UniBiO (ICLR 2026) Fig. 5(a)-(b): averaged hypergradient norm with fitted "
        "power law, and the fitted slopes against p",
    )

    shown = table.drop(columns="fit")
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
    outputs += _table(
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
    for noise, part in table.groupby("noise_std"):
        mags = part.sort_values("p")["slope"].abs().to_numpy()
        ok = bool(np.all(np.diff(mags) < 0))
        claim = " (the paper's claim, App. E.3)" if noise == 0 else " (noisy: not the claim)"
        print(
            f"noise std {noise:g}: |s| decreases as p grows: {'yes' if ok else 'NO'} "
            f"({', '.join(fmt(m) for m in mags)}){claim}"
        )
    print(UNIBIO_CAVEAT)
    return outputs


# -- BGS-Opt ------------------------------------------------------------------------------
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
    outputs = _save(
        fig,
        out / "bgs_bias_vs_T",
        "Arbel & Mairal (NeurIPS 2022) Prop. 3 vs Prop. 5 / App. E: BGS-Opt bias "
        "against the unrolling depth T, with and without the correction (final value at a "
        "fixed oracle budget: a deeper unrolling also leaves fewer outer steps)",
    )
    tab = pd.DataFrame(rows)
    disp = tab.assign(**{c: [fmt(v) for v in tab[c]] for c in ("median", "q20", "q80")})
    return outputs + _table(
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
    return _save(
        fig,
        out / "bgs_heatmap",
        "Arbel & Mairal (NeurIPS 2022) Fig. 1/2: BGS iterates on the Mexican-hat "
        "heatmap of y -> g(x, y) (hat, dim_x = dim_y = 2, seed 0)",
    )


def _bgs_metric(df: pd.DataFrame) -> str:
    """BGS's own stationarity ‖∂ₓL_φ‖ where the problem gives it, else ‖∇Φ‖."""
    col = "bgs_stationarity"
    return col if col in df and np.isfinite(df[col]).any() else "hypergrad_norm"


def draw_bgs(df: pd.DataFrame, out: Path) -> list[Output]:
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
        outputs += _save(
            fig,
            out / "bgs_presets",
            "Arbel & Mairal (NeurIPS 2022) App. E: BGS vs Game vs Unrolled "
            "(stationarity against oracle calls)",
        )
    if "hat" in PROBLEMS.entries:
        outputs += _heatmap(out)
    return outputs


# -- HG-MS and Chen-Xu-Zhang --------------------------------------------------------------
def _report(df: pd.DataFrame, out: Path, what: str) -> list[Output]:
    written = write_report(df, out, ReportOptions(n_boot=300))
    keep = {
        "curves_hypergrad_norm_vs_oracle_calls",
        "curves_dist_to_solution_vs_oracle_calls",
        "n_eps",
        "final",
        "complexity",
        "exponents",
    }
    return [
        (p, f"{what}: {d}") for p, d in written if p.stem in keep and p.suffix in (".png", ".md")
    ]


def draw_hgms(df: pd.DataFrame, out: Path) -> list[Output]:
    return _report(
        df,
        out / "report",
        "HG-MS (arXiv 2605.09209), synthetic comparison with non-selecting methods "
        "on manifold lower levels (figure numbering not recoverable)",
    )


def draw_chen(df: pd.DataFrame, out: Path) -> list[Output]:
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
        outputs += _save(
            fig,
            out / "chen_hard_instance",
            "Chen, Xu, Zhang (COLT 2024) hardness theorem (App. E construction): "
            "|Phi'| = 1 until q/2 lower-level queries for zero-respecting methods",
        )
    rest = df[df["problem"] != "cxz_hard"]
    if not rest.empty:
        outputs += _report(
            rest,
            out / "report",
            "Chen, Xu, Zhang (COLT 2024) rates on a PL lower level "
            "(deterministic eps^-2 vs stochastic)",
        )
    return outputs


PAPERS: dict[str, Paper] = {
    "unibio": Paper(
        "UniBiO (ICLR 2026), synthetic p-sweep and slope estimate",
        draw_unibio,
        {
            "seeds": 2,
            "max_steps": 40,
            "problems": {"unibio_synthetic": {"p": [2, 4, 6, 8], "noise_std": [0.0, 1.0]}},
        },
    ),
    "bgs": Paper("BGS-Opt (Arbel & Mairal, NeurIPS 2022)", draw_bgs, {"seeds": 2, "budget": 2000}),
    "hgms": Paper(
        "HG-MS, select-then-differentiate (arXiv 2605.09209)",
        draw_hgms,
        {"seeds": 2, "budget": 2000},
    ),
    "chen": Paper("Chen, Xu, Zhang (COLT 2024)", draw_chen, {"seeds": 2, "budget": 2000}),
}
