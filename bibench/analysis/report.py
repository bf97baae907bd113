r"""The report of a results folder: every figure and table, from the stored table alone.

Targets. ``relative`` targets (the default) are :math:`\varepsilon = e \cdot m_0` with
:math:`m_0` the median initial metric of the problem setting, so that problems of
different scale share one ECDF and one profile; ``absolute`` targets are the ``e``
themselves. Two target sets are used: ``table_eps`` (a few values, for the
:math:`N(\varepsilon)` table) and a log-spaced grid of ``per_decade`` targets per decade
from :math:`10^{-1/\text{per\_decade}}` down to ``eps_min`` (for the complexity figure, the
slope fits, the ECDF and the profiles). The slope is fitted only on the declared
``fit_range``, which the figure shades and the exponent table states.

The report opens with the leaderboard (:mod:`bibench.analysis.leaderboard`): one table per
regime at the relative target ``leader_eps`` and, under it, the regime's performance
profile. Curves come one figure per family and regime, data splits pooled with seeds.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bibench.analysis import leaderboard, plots
from bibench.analysis.fits import MIN_POINTS, fit_exponent
from bibench.analysis.hitting import curves, hitting_times, targets
from bibench.analysis.profiles import art_table, instance_costs, performance_profile, profile_score
from bibench.analysis.runs import (
    METRIC_LABELS,
    METRIC_TEXT,
    SETTING,
    X_LABELS,
    prepare,
    run_summary,
    slug,
)
from bibench.analysis.tables import fmt, quantile_frame, wide, write_table
from bibench.analysis.theory import theoretical_exponent

__all__ = ["CURVE_METRICS", "CURVE_X", "ReportOptions", "complexity_data", "write_report"]

CURVE_METRICS = ("hypergrad_norm", "phi_gap", "dist_to_solution")
CURVE_X = ("oracle_calls", "samples", "wall_time")


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """What the report computes (the ``bibench report`` flags)."""

    metric: str = "hypergrad_norm"
    table_eps: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
    relative: bool = True
    per_decade: int = 4
    eps_min: float = 1e-8
    fit_range: tuple[float, float] = (1e-1, 1e-8)
    fit_method: str = "ols"
    n_boot: int = 1000
    n_grid: int = 80
    tau_max: float = 4.0
    leader_eps: float = 1e-2
    curve_x: tuple[str, ...] = ("oracle_calls",)

    def eps_grid(self) -> np.ndarray:
        n = round(-math.log10(self.eps_min) * self.per_decade)
        return 10.0 ** (-np.arange(1, n + 1) / self.per_decade)

    def eps_word(self) -> str:
        return "ε / m(x0)" if self.relative else "ε"


def _params(df: pd.DataFrame, problem_setting: str) -> dict:
    row = df[df["problem_setting"] == problem_setting].iloc[0]
    return {c[5:]: row[c] for c in df.columns if c.startswith("prob_") and not pd.isna(row[c])}


def complexity_data(
    df: pd.DataFrame, hits: pd.DataFrame, opts: ReportOptions
) -> tuple[dict[str, dict[str, dict]], pd.DataFrame]:
    """Per problem and algorithm setting: targets, the ``(seeds, targets)`` matrix of
    :math:`N(\\varepsilon)`, the budget, the fitted exponent and the theoretical one; and
    the exponent table (numeric)."""
    data: dict[str, dict[str, dict]] = {}
    rows = []
    for (ps, alg), part in hits.groupby(SETTING, sort=True):
        mat = part.pivot(index="run_id", columns="target", values="N")
        eps = part.groupby("target")["eps"].first()
        rel = opts.eps_grid()[eps.index] if opts.relative else eps.to_numpy()
        fit = fit_exponent(
            mat.to_numpy(), rel, opts.fit_range, method=opts.fit_method, n_boot=opts.n_boot
        )
        first = part.iloc[0]
        theory, source = theoretical_exponent(first["algorithm"], first["problem"], _params(df, ps))
        status = part.groupby("run_id")["status"].last().reindex(mat.index)
        ran_out = part[part["status"] != "diverged"]["cost_end"]  # diverged runs stop early
        data.setdefault(ps, {})[alg] = {
            "eps": rel,
            "N": mat.to_numpy(),
            "budget": float(ran_out.max()) if len(ran_out) else math.nan,
            "diverged": (status == "diverged").to_numpy(),
            "fit": fit,
            "theory": theory,
        }
        rows.append(
            {
                "problem_setting": ps,
                "algorithm_setting": alg,
                "method": fit.method,
                "fit_range": f"[{fmt(min(opts.fit_range))}, {fmt(max(opts.fit_range))}]",
                "exponent": fit.slope,
                "ci_low": fit.ci_low,
                "ci_high": fit.ci_high,
                "n_points": fit.n_points,
                "n_censored_points": fit.n_censored,
                "n_seeds": fit.n_seeds,
                "too_few_points": fit.too_few,
                "theory": theory,
                "theory_source": source,
            }
        )
    return data, pd.DataFrame(rows)


def _exponent_display(num: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "problem": num["problem_setting"],
            "algorithm": num["algorithm_setting"],
            "fitted b [95% CI]": [
                f"too few points (< {MIN_POINTS})"
                if r.too_few_points
                else f"{fmt(r.exponent)} [{fmt(r.ci_low)}, {fmt(r.ci_high)}]"
                for r in num.itertuples()
            ],
            "theory b": [fmt(v) for v in num["theory"]],
            "points (censored)": [
                f"{r.n_points} ({r.n_censored_points})" for r in num.itertuples()
            ],
            "fit range": num["fit_range"],
        }
    )


def write_report(
    results: pd.DataFrame, out: str | Path, opts: ReportOptions, claims: str | None = None
) -> list[tuple[Path, str]]:
    """Write every figure and table of a results table into ``out``; return
    ``(path, description)`` for each output (PNG/PDF figures and MD/TeX/CSV tables).
    ``claims``: the seed papers' claims table (Markdown), a section after the
    leaderboard."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = prepare(results)
    written: list[tuple[Path, str]] = []
    notes: list[str] = []
    # one step per figure or table (stderr; silent when not a terminal)
    bar = tqdm(total=len(CURVE_METRICS) * len(CURVE_X) + 8, desc="report", unit="output",
               disable=None)  # fmt: skip

    def add(paths: list[Path], what: str) -> None:
        written.extend((p, what) for p in paths)
        bar.set_postfix_str(paths[0].stem)
        bar.update()

    # the leaderboard: one table per regime, its claims, a profile per regime
    lead = _leaderboard(df, out, opts, add)

    # convergence curves: one figure per family and regime, splits pooled with seeds
    panel = df["problem"] + " · " + leaderboard.regime_of(df)
    pooled = df.assign(problem_setting=panel, algorithm_setting=df["algorithm"])
    for metric in CURVE_METRICS:
        if metric not in df.columns or not np.isfinite(df[metric]).any():
            notes.append(f"no curves of {metric}: no problem in these results defines it")
            continue
        for x in opts.curve_x:
            data = curves(pooled, metric, x, n_grid=opts.n_grid)
            for name, (grid, per_alg) in data.items():
                fig = plots.curve_figure(grid, per_alg, METRIC_LABELS[metric], X_LABELS[x], name)
                add(
                    plots.save(fig, out / "curves" / f"{metric}_vs_{x}_{slug(name)}"),
                    f"{name}: {metric} against {x}, median and 20–80% band over seeds × splits",
                )

    # N(eps) at the table targets, final metric
    m = opts.metric
    table_hits = hitting_times(
        df, targets(df, opts.table_eps, relative=opts.relative, metric=m), metric=m
    )
    labels = [f"{opts.eps_word()} = {fmt(e)}" for e in opts.table_eps]
    table_hits["column"] = [labels[t] for t in table_hits["target"]]
    # numeric targets in the CSV: eps_given as passed (relative or absolute), eps absolute
    table_hits["eps_given"] = [opts.table_eps[t] for t in table_hits["target"]]
    num = quantile_frame(table_hits, [*SETTING, "eps_given", "eps", "column"], "N")
    num = num.sort_values([*SETTING, "eps_given"], ascending=[True, True, False])
    add(
        write_table(
            out,
            "n_eps",
            wide(num, SETTING, "column", labels),
            num,
            f"N(ε): oracle calls to first reach {METRIC_TEXT.get(m, m)} ≤ ε, "
            "median [q20, q80] over seeds; ∞ = not reached within the budget",
        ),
        "table: N(eps) at the chosen targets",
    )
    summary = run_summary(df, m)
    summary["column"] = f"final {m}"
    num = quantile_frame(summary, [*SETTING, "column"], "final")
    add(
        write_table(
            out,
            "final",
            wide(num, SETTING, "column"),
            num,
            f"final {m}, median [q20, q80] over seeds (∞ = diverged)",
        ),
        f"table: final {m}",
    )

    # complexity against eps with fitted exponents
    hits = hitting_times(
        df, targets(df, opts.eps_grid(), relative=opts.relative, metric=m), metric=m
    )
    data, expo = complexity_data(df, hits, opts)
    rel = f" (ε relative to the median initial {METRIC_TEXT.get(m, m)})" if opts.relative else ""
    fig = plots.complexity_figure(
        data, opts.fit_range, f"oracle calls N(ε) to reach {METRIC_TEXT.get(m, m)} ≤ ε{rel}"
    )
    add(plots.save(fig, out / "complexity"), "complexity: N(eps) against 1/eps, log-log, fits")
    add(
        write_table(
            out,
            "exponents",
            _exponent_display(expo),
            expo,
            f"fitted exponent b of N(ε) ∝ ε^(-b) ({opts.fit_method}, BCa bootstrap 95% CI "
            f"over seeds; at least {MIN_POINTS} targets) beside the theoretical one",
        ),
        "table: fitted and theoretical exponents",
    )

    # suite-wide: aRT / success, ECDF, performance profile
    art = art_table(hits)
    art_num = art.assign(
        eps_given=opts.eps_grid()[art["target"]],
        column=[f"{opts.eps_word()} = {fmt(e)}" for e in opts.eps_grid()[art["target"]]],
    )
    keep = art_num["target"] % opts.per_decade == opts.per_decade - 1  # one target a decade
    art_disp = art_num[keep].assign(
        cell=[f"{fmt(a)} ({s:.0%})" for a, s in zip(art_num[keep]["aRT"], art_num[keep]["success"])]
    )
    disp = art_disp.pivot(index=SETTING, columns="column", values="cell")
    disp = disp[sorted(disp.columns, key=lambda c: -float(c.split("= ")[1]))].reset_index()
    add(
        write_table(
            out,
            "art",
            disp.fillna("–"),
            art_num,
            "aRT (COCO average runtime, oracle calls) and success rate over seeds",
        ),
        "table: aRT and success rate",
    )
    per_alg = {  # an unsolved run is censored at its budget; a diverged one never solves
        alg: (
            part["N"].to_numpy(),
            np.where(part["status"] == "diverged", np.inf, part["cost_end"].to_numpy()),
        )
        for alg, part in hits.groupby("algorithm_setting", sort=True)
    }
    add(
        plots.save(plots.ecdf_figure(per_alg), out / "ecdf"),
        "ECDF over (problem, target, seed) triples (COCO)",
    )
    t = instance_costs(hits)
    taus = np.unique(np.concatenate([np.logspace(0, 2, 400), [opts.tau_max]]))
    scores = profile_score(t, opts.tau_max)
    fig = plots.profile_figure(performance_profile(t, taus), scores.to_dict(), opts.tau_max)
    add(plots.save(fig, out / "performance_profile"), "Dolan-More performance profile")
    score_tab = pd.DataFrame(
        {
            "algorithm": scores.index,
            "score": scores.to_numpy(),
            "wins (rho(1))": performance_profile(t, [1.0]).iloc[0].to_numpy(),
        }
    )
    disp = score_tab.assign(
        **{c: [fmt(v) for v in score_tab[c]] for c in ("score", "wins (rho(1))")}
    )
    add(
        write_table(
            out,
            "profile_score",
            disp,
            score_tab,
            f"performance-profile score: (1/({opts.tau_max:g}-1)) ∫_1^{opts.tau_max:g} ρ(τ) "
            f"dτ over {len(t)} (problem, target) pairs (aRT ratios)",
        ),
        "table: integrated performance-profile score",
    )

    bar.close()
    if claims is not None:
        (out / "seed_claims.md").write_text(claims)
        lead += "\n## Seed-paper claims\n\n" + claims
    _index(out, written, notes, opts, lead)
    return written


def _leaderboard(df: pd.DataFrame, out: Path, opts: ReportOptions, add) -> str:
    """Write the leaderboard tables, claims and profile figures; return its Markdown."""
    n = max(1, round(-math.log10(opts.leader_eps) * opts.per_decade))
    eps = 10.0 ** (-np.arange(1, n + 1) / opts.per_decade)
    eps[-1] = opts.leader_eps  # the table's target exactly
    hits = leaderboard.leaderboard_hits(df, eps, opts.metric)
    summary = leaderboard.summarize(hits, n_boot=max(opts.n_boot, 1))
    scores = leaderboard.scores(hits, opts.tau_max)
    summary.to_csv(out / "leaderboard.csv", index=False)
    leaderboard.claims(summary).to_csv(out / "claims.csv", index=False)
    text = leaderboard.markdown(summary, scores, opts.leader_eps)
    (out / "leaderboard.md").write_text(text)
    add([out / "leaderboard.csv", out / "claims.csv"], "leaderboard cells and every claim")
    taus = np.unique(np.concatenate([np.logspace(0, 2, 400), [opts.tau_max]]))
    figures = []
    for regime, rho in leaderboard.profiles(hits, taus).items():
        fig = plots.regime_profile_figure(
            rho, scores[regime].to_dict(), opts.tau_max, f"{regime}: performance profile"
        )
        paths = plots.save(fig, out / f"leaderboard_profile_{regime}")
        add(paths, f"performance profile, {regime} regime")
        figures.append(f"![performance profile, {regime}]({paths[0].name})")
    return text + "\n" + "\n\n".join(figures) + "\n"


def _index(out: Path, written: list[tuple[Path, str]], notes: list[str], opts, lead: str) -> None:
    """``report.md``: the leaderboard, then the options, the notes, every table inline and
    every figure linked."""
    lines = [
        "# bibench report",
        "",
        "## Leaderboard",
        "",
        lead,
        "## Details",
        "",
        f"- metric: {opts.metric}",
        "- targets: "
        + (
            "relative, ε / m(x0) with m(x0) the median initial metric of the problem setting"
            if opts.relative
            else "absolute"
        ),
        f"- fit: {opts.fit_method} on {opts.eps_word()} in "
        f"[{fmt(min(opts.fit_range))}, {fmt(max(opts.fit_range))}], "
        f"bootstrap over seeds ({opts.n_boot} resamples)",
    ]
    lines += [f"- note: {n}" for n in notes]
    for path, what in written:
        if path.suffix == ".md":
            lines += ["", f"### {what}", "", path.read_text()]
        elif path.suffix == ".png" and not path.name.startswith("leaderboard"):
            rel = path.relative_to(out)
            lines += ["", f"### {what}", "", f"![{what}]({rel.as_posix()})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    written.append((out / "report.md", "index of every table and figure"))
