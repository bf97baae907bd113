r"""Figures: data in, matplotlib figure out, saved as PNG and PDF.

Uses matplotlib's object API on the Agg canvas (no ``pyplot``, so no global state and no
display). Conventions: one panel per problem setting, the median
over seeds as a line with its 20–80 % band, log axes where data span decades, and one
legend outside the panels so that it never hides data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bibench.analysis.fits import SlopeFit
from bibench.analysis.hitting import band, quantiles
from bibench.analysis.profiles import ecdf
from bibench.analysis.style import COLUMN_WIDTH, paper_rc, style

__all__ = [
    "cap_top",
    "colors",
    "complexity_figure",
    "convergence_figure",
    "curve_figure",
    "draw_band",
    "ecdf_figure",
    "legend_outside",
    "panels",
    "profile_figure",
    "regime_profile_figure",
    "save",
    "set_log_if_wide",
]

Curves = Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]]


def colors(names: Sequence[str]) -> dict[str, tuple]:
    """A stable colour per name (tab10, then tab20 beyond ten names)."""
    from matplotlib import colormaps

    unique = sorted(set(names))
    cmap = colormaps["tab10" if len(unique) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(unique)}


def panels(n: int, *, ncols: int = 3, width: float = 4.2, height: float = 3.3):
    """A figure with ``n`` panels in a grid; unused axes are hidden."""
    ncols = max(1, min(n, ncols))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def set_log_if_wide(ax: Axes, values: np.ndarray, axis: str = "y", decades: float = 1.0) -> None:
    """Log scale on ``axis`` when the positive finite ``values`` span more than ``decades``."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) and math.log10(v.max() / v.min()) > decades:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def legend_outside(fig: Figure, axes: Sequence[Axes], title: str = "") -> None:
    """One legend right of the panels with every distinct label once."""
    handles: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if not lab.startswith("_"):
                handles.setdefault(lab, h)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside right center",
            title=title or None,
            fontsize="small",
            frameon=False,
        )


def save(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150)
    return paths


def cap_top(ax: Axes, start: float, factor: float = 1e3) -> None:
    """Cut the y axis at ``factor`` times the starting level: a diverging run then leaves
    through the top instead of squashing every other curve."""
    if np.isfinite(start) and start > 0 and ax.get_ylim()[1] > factor * start:
        ax.set_ylim(top=factor * start)


def draw_band(ax: Axes, grid: np.ndarray, values: np.ndarray, color, label: str, **line) -> float:
    """Median line and 20–80 % band of ``values (runs, grid)``; returns the first finite
    median (the starting level). ``line``: extra ``plot`` keywords (line style, marker)."""
    lo, med, hi = band(values)
    finite = np.isfinite(med)
    line.setdefault("lw", 1.6)
    ax.plot(grid[finite], med[finite], color=color, label=label, **line)
    both = np.isfinite(lo) & np.isfinite(hi)
    ax.fill_between(
        grid, np.where(both, lo, np.nan), np.where(both, hi, np.nan), color=color, alpha=0.2, lw=0
    )
    return float(med[finite][0]) if finite.any() else float("nan")


def convergence_figure(curves: Curves, ylabel: str, xlabel: str, title: str = "") -> Figure:
    """One panel per problem setting: each algorithm setting's median curve with its
    20–80 % band over seeds; log x, and log y where values span a decade."""
    cmap = colors([a for _, per_alg in curves.values() for a in per_alg])
    fig, axes = panels(len(curves))
    for ax, (ps, (grid, per_alg)) in zip(axes, curves.items()):
        starts = [draw_band(ax, grid, values, cmap[alg], alg) for alg, values in per_alg.items()]
        ax.set_xscale("log")
        set_log_if_wide(ax, np.concatenate([v.ravel() for v in per_alg.values()]))
        cap_top(ax, np.nanmax(starts) if np.isfinite(starts).any() else np.nan)
        ax.set_title(ps, fontsize="medium")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    if title:
        fig.suptitle(title)
    legend_outside(fig, axes, "median, 20–80% band")
    return fig


def curve_figure(
    grid: np.ndarray,
    per_alg: Mapping[str, np.ndarray],
    ylabel: str,
    xlabel: str,
    title: str = "",
) -> Figure:
    """One family in one regime at a single column's width: each algorithm's median over
    its repetitions (seeds × data splits) with the 20–80 % band, in the algorithm's fixed
    style (:mod:`bibench.analysis.style`); markers every few grid points."""
    with _rc():
        fig = Figure(figsize=(COLUMN_WIDTH, 3.0), layout="constrained")
        ax = fig.subplots()
        starts = []
        for alg, values in per_alg.items():
            st = style(alg)
            starts.append(
                draw_band(ax, grid, values, st.color, alg, linestyle=st.linestyle,
                          marker=st.marker, markevery=max(1, len(grid) // 8), lw=1.1)
            )  # fmt: skip
        ax.set_xscale("log")
        set_log_if_wide(ax, np.concatenate([v.ravel() for v in per_alg.values()]))
        cap_top(ax, np.nanmax(starts) if np.isfinite(starts).any() else np.nan)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        if title:
            ax.set_title(title)
        _legend_below(fig, ax)
    return fig


def _rc():
    from matplotlib import rc_context

    return rc_context(paper_rc())


def _legend_below(fig: Figure, ax: Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels) if not lab.startswith("_")]
    if keep:
        fig.legend(*zip(*keep), loc="outside lower center", ncol=3, frameon=False,
                   handlelength=2.6, columnspacing=1.0)  # fmt: skip


def regime_profile_figure(rho, scores: Mapping[str, float], tau_max: float, title: str) -> Figure:
    r"""The leaderboard's figure for one regime, at a single column's width: the
    Dolan–Moré profile :math:`\rho_s(\tau)` of each algorithm in its fixed style, its score
    in the legend."""
    with _rc():
        fig = Figure(figsize=(COLUMN_WIDTH, 3.4), layout="constrained")
        ax = fig.subplots()
        order = sorted(rho.columns, key=lambda a: -scores.get(a, 0.0))
        for alg in order:
            st = style(alg)
            ax.step(rho.index, rho[alg], where="post", color=st.color, linestyle=st.linestyle,
                    marker=st.marker, markevery=max(1, len(rho) // 10),
                    label=f"{alg} ({scores.get(alg, float('nan')):.2f})")  # fmt: skip
        ax.axvline(tau_max, color="0.5", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(r"ratio to the best aRT, $\tau$")
        ax.set_ylabel(r"fraction of (family, target) $\rho(\tau)$")
        ax.grid(True, alpha=0.3)
        ax.set_title(title)
        _legend_below(fig, ax)
    return fig


def complexity_figure(
    data: Mapping[str, Mapping[str, dict]], fit_range: tuple[float, float] | None, title: str = ""
) -> Figure:
    r"""Panels per problem setting; per algorithm setting ``data[ps][alg]`` holds ``eps``
    (targets), ``N`` (``(seeds, targets)``, ``inf`` censored), ``budget`` (largest cost
    spent by a run that did not diverge, NaN if none), ``diverged`` (per seed, optional),
    ``fit`` (:class:`SlopeFit` or None) and ``theory`` (exponent or NaN).

    Draws :math:`N(\varepsilon)` against :math:`1/\varepsilon`: median and 20–80 % band;
    at the first target whose median is censored, × at the budget when runs that did not
    diverge ran out of budget there (a lower bound of every smaller target's :math:`N`),
    and ▼ on the top edge when diverged runs are among the censored ones (a diverged run
    stopped early and has no cost to show, so it is never drawn where it stopped); the
    fitted line (dashed) over the fit range (shaded) and the theoretical slope (dotted)
    anchored at the fit's left end. A fit on fewer than
    :data:`~bibench.analysis.fits.MIN_POINTS` targets is not drawn: the panel names the
    algorithm settings with too few points."""
    cmap = colors([a for per_alg in data.values() for a in per_alg])
    fig, axes = panels(len(data))
    any_diverged = any_budget = False
    for ax, (ps, per_alg) in zip(axes, data.items()):
        lows: list[float] = []  # every plotted N (and budget): the theory lines must not rescale
        too_few: list[str] = []
        for alg, d in per_alg.items():
            inv = 1.0 / np.asarray(d["eps"], dtype=float)
            n = np.asarray(d["N"], dtype=float)
            lo, med, hi = quantiles(n, (0.2, 0.5, 0.8))
            ok = np.isfinite(med)
            lows += [*med[ok], *lo[np.isfinite(lo)], *hi[np.isfinite(hi)]]
            c = cmap[alg]
            ax.plot(inv[ok], med[ok], "o-", ms=3, color=c, label=alg)
            both = ok & np.isfinite(hi)
            ax.fill_between(
                inv,
                np.where(both, lo, np.nan),
                np.where(both, hi, np.nan),
                color=c,
                alpha=0.2,
                lw=0,
            )
            if (~ok).any():  # the first target whose median is censored
                first = int(np.argmax(~ok))
                censored = ~np.isfinite(n[:, first])
                diverged = np.asarray(d.get("diverged", np.zeros(len(n), bool)), dtype=bool)
                if (censored & ~diverged).any() and math.isfinite(d["budget"]):
                    ax.plot(inv[first], d["budget"], "x", color=c, ms=7, mew=1.5,
                            label="_censored")  # fmt: skip
                    lows.append(d["budget"])
                    any_budget = True
                if (censored & diverged).any():
                    ax.plot(inv[first], 0.97, "v", color=c, ms=7, label="_diverged",
                            transform=ax.get_xaxis_transform(), clip_on=False)  # fmt: skip
                    any_diverged = True
            fit: SlopeFit | None = d.get("fit")
            if fit is not None and fit.too_few:
                too_few.append(f"{alg} ({fit.n_points})")
            elif fit is not None and math.isfinite(fit.slope):
                xr = inv[ok]
                if fit_range is not None:
                    xr = xr[(xr >= 1 / max(fit_range)) & (xr <= 1 / min(fit_range))]
                if len(xr) >= 2:
                    xs = np.array([xr.min(), xr.max()])
                    ys = 10 ** (fit.intercept + fit.slope * np.log10(xs))
                    ax.plot(xs, ys, "--", color=c, lw=1, label=f"_fit {alg}")
                    theory = d.get("theory", math.nan)
                    if math.isfinite(theory):
                        ax.plot(xs, ys[0] * (xs / xs[0]) ** theory, ":", color=c, lw=1.2)
        if too_few:
            ax.text(0.02, 0.02, "no slope, too few points: " + ", ".join(too_few),
                    transform=ax.transAxes, fontsize="x-small", va="bottom", wrap=True,
                    in_layout=False)  # fmt: skip
        if fit_range is not None:
            ax.axvspan(1 / max(fit_range), 1 / min(fit_range), color="0.9", zorder=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        pos = [v for v in lows if v > 0]
        if pos:
            ax.set_ylim(min(pos) / 2, max(pos) * 3)
        ax.set_title(ps, fontsize="medium")
        ax.set_xlabel(r"$1/\varepsilon$")
        ax.set_ylabel(r"oracle calls $N(\varepsilon)$")
        ax.grid(True, which="major", alpha=0.3)
        ax.plot([], [], "k--", lw=1, label="fitted slope (shaded: fit range)")
        ax.plot([], [], "k:", lw=1.2, label="theoretical slope")
    if any_budget:
        axes[0].plot([], [], "kx", ms=7, mew=1.5, label="first censored target (at the budget)")
    if any_diverged:
        axes[0].plot([], [], "kv", ms=7, label="first target missed by diverged runs")
    if title:
        fig.suptitle(title)
    legend_outside(fig, axes, "median, 20–80% band")
    return fig


def ecdf_figure(per_alg: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "") -> Figure:
    """COCO ECDF: for each algorithm setting, ``(N, cost_end)`` over its (problem, target,
    seed) triples, Kaplan–Meier when budgets differ (``cost_end`` the cost an unsolved run
    is censored at, ``inf`` for a diverged run); × marks the median budget of its
    unsuccessful runs that stopped at a budget."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    cmap = colors(list(per_alg))
    finite = np.concatenate([n[np.isfinite(n)] for n, _ in per_alg.values()] + [[1.0]])
    ends = np.concatenate([e[np.isfinite(e)] for _, e in per_alg.values()] + [[1.0]])
    budgets = np.logspace(0, math.log10(max(finite.max(), ends.max(), 1.0)) + 0.05, 300)
    for alg, (n, cost_end) in per_alg.items():
        frac = ecdf(n, budgets, cost_end)
        ax.step(budgets, frac, where="post", color=cmap[alg], label=alg)
        miss = ~np.isfinite(n) & np.isfinite(cost_end)
        if miss.any():
            b = float(np.median(cost_end[miss]))
            ax.plot([b], [ecdf(n, [b], cost_end)[0]], "x", color=cmap[alg], ms=8)
    ax.plot([], [], "kx", label="median budget of unsuccessful runs")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("oracle calls")
    ax.set_ylabel("fraction of (problem, target, seed) solved")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "ECDF over (problem, target, seed) triples")
    legend_outside(fig, [ax])
    return fig


def profile_figure(rho, scores: Mapping[str, float], tau_max: float, title: str = "") -> Figure:
    r"""Dolan–Moré profile :math:`\rho_s(\tau)` (``rho``: rows τ, columns solvers) with the
    integrated score over :math:`[1, \tau_{\max}]` in the legend."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    cmap = colors(list(rho.columns))
    for alg in rho.columns:
        ax.step(
            rho.index,
            rho[alg],
            where="post",
            color=cmap[alg],
            label=f"{alg} (score {scores[alg]:.3f})",
        )
    ax.axvline(tau_max, color="0.5", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(r"performance ratio $\tau$ (aRT / best aRT)")
    ax.set_ylabel(r"fraction of (problem, target) pairs $\rho(\tau)$")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or rf"performance profile (score: $\int_1^{{{tau_max:g}}}\rho$, normalised)")
    legend_outside(fig, [ax])
    return fig
