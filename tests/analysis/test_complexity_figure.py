"""The complexity figure: slopes on too few points are not drawn as valid, and diverged
runs are never marked at the cost where they stopped."""

from __future__ import annotations

import math

import numpy as np

from bibench.analysis.fits import MIN_POINTS, SlopeFit
from bibench.analysis.plots import complexity_figure

EPS = np.logspace(-1, -6, 6)


def fit(slope: float, n_points: int) -> SlopeFit:
    few = n_points < MIN_POINTS
    return SlopeFit(math.nan if few else slope, math.nan if few else 1.0, math.nan, math.nan,
                    0.95, "ols", n_points, 0, 3, too_few=few)  # fmt: skip


def lines(ax, marker=None, ls=None, color=None):
    out = []
    for ln in ax.get_lines():
        if marker is not None and ln.get_marker() != marker:
            continue
        if ls is not None and ln.get_linestyle() != ls:
            continue
        if len(ln.get_xdata()) == 0:  # legend proxies
            continue
        out.append(ln)
    return out


def test_too_few_points_and_diverged_runs():
    n_div = 10.0 * (1 / EPS)[None, :].repeat(3, axis=0)
    n_div[1:, 4:] = np.inf  # 2 of 3 seeds diverged before the last two targets
    n_bud = 5.0 * (1 / EPS)[None, :].repeat(3, axis=0)
    n_bud[:2, 5:] = np.inf  # 2 of 3 ran out of budget (2000) before the last target
    data = {
        "p": {
            "div": {"eps": EPS, "N": n_div, "budget": 1e6, "diverged": np.array([0, 1, 1], bool),
                    "fit": fit(1.0, 4), "theory": math.nan},
            "bud": {"eps": EPS, "N": n_bud, "budget": 2000.0, "diverged": np.zeros(3, bool),
                    "fit": fit(1.0, 5), "theory": math.nan},
        }
    }  # fmt: skip
    fig = complexity_figure(data, (1e-1, 1e-6))
    ax = fig.axes[0]
    # budget-censored runs: one x, at the first censored target and at the budget
    xs = lines(ax, marker="x")
    assert len(xs) == 1
    assert xs[0].get_xdata()[0] == 1 / EPS[5] and xs[0].get_ydata()[0] == 2000.0
    # diverged runs: a triangle on the top edge (axes coordinates), not at a cost
    tri = lines(ax, marker="v")
    assert len(tri) == 1 and tri[0].get_xdata()[0] == 1 / EPS[4] and tri[0].get_ydata()[0] == 0.97
    # only the fit on MIN_POINTS points is drawn; the other is named as too few points
    dashed = lines(ax, ls="--")
    assert len(dashed) == 1 and dashed[0].get_label() == "_fit bud"
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["no slope, too few points: div (4)"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "first target missed by diverged runs" in legend
    assert "first censored target (at the budget)" in legend
