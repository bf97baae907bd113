"""Performance profile, its integrated score, the ECDF and aRT on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bibench.analysis.profiles import (
    art,
    art_table,
    ecdf,
    instance_costs,
    performance_profile,
    profile_score,
    ratios,
)

INF = np.inf
# rows: (problem, target) instances; columns: solvers; values: cost (inf = failed)
TABLE = pd.DataFrame(
    {"A": [10.0, 30.0, INF, 5.0], "B": [20.0, 15.0, INF, 10.0], "C": [INF, 60.0, INF, 40.0]},
    index=["p1", "p2", "p3", "p4"],
)


def test_ratios_divide_by_the_best_solver_and_fail_unsolved_instances():
    r = ratios(TABLE)
    assert r.loc["p1"].tolist() == [1.0, 2.0, INF]
    assert r.loc["p2"].tolist() == [2.0, 1.0, 4.0]
    assert r.loc["p3"].tolist() == [INF, INF, INF]  # nobody solved it
    assert r.loc["p4"].tolist() == [1.0, 2.0, 8.0]


def test_performance_profile_by_hand():
    rho = performance_profile(TABLE, np.array([1.0, 2.0, 4.0, 8.0, 100.0]))
    assert rho["A"].tolist() == [0.5, 0.75, 0.75, 0.75, 0.75]
    assert rho["B"].tolist() == [0.25, 0.75, 0.75, 0.75, 0.75]
    assert rho["C"].tolist() == [0.0, 0.0, 0.25, 0.5, 0.5]


def test_integrated_score_by_hand_and_against_numerical_integration():
    score = profile_score(TABLE, tau_max=4.0)
    # A: ratios 1, 2, inf, 1 -> (3 + 2 + 0 + 3) / 3 / 4
    assert score["A"] == pytest.approx(8 / 12)
    # B: 2, 1, inf, 2 -> (2 + 3 + 0 + 2) / 3 / 4
    assert score["B"] == pytest.approx(7 / 12)
    # C: inf, 4, inf, 8 -> ratio 4 contributes 0
    assert score["C"] == pytest.approx(0.0)
    taus = np.linspace(1, 4, 300001)
    rho = performance_profile(TABLE, taus)
    numeric = ((rho.iloc[1:].to_numpy() + rho.iloc[:-1].to_numpy()) / 2).sum(0) * (taus[1] - 1)
    np.testing.assert_allclose(numeric / 3, score.to_numpy(), atol=1e-4)


def test_zero_cost_is_floored_at_one_call():
    t = pd.DataFrame({"A": [0.0], "B": [3.0]})
    assert ratios(t).iloc[0].tolist() == [1.0, 3.0]


def test_ecdf_counts_entries_within_each_budget():
    n = np.array([1.0, 10.0, 100.0, INF])
    assert ecdf(n, np.array([0.5, 1.0, 50.0, 1e9])).tolist() == [0.0, 0.25, 0.5, 0.75]


def test_art_and_success_rate_by_hand():
    assert art([10.0, 20.0, INF, INF], [100.0, 100.0, 100.0, 200.0]) == pytest.approx(165.0)
    assert art([INF, INF], [5.0, 5.0]) == INF
    hits = pd.DataFrame(
        {
            "problem_setting": ["p"] * 6,
            "algorithm_setting": ["A"] * 3 + ["B"] * 3,
            "target": [0] * 6,
            "eps": [0.1] * 6,
            "N": [10.0, 30.0, INF, 40.0, 40.0, 40.0],
            "cost_end": [100.0] * 6,
        }
    )
    table = art_table(hits).set_index("algorithm_setting")
    assert table.loc["A", "aRT"] == pytest.approx(70.0)  # (10 + 30 + 100) / 2
    assert table.loc["A", "success"] == pytest.approx(2 / 3)
    assert table.loc["B", "aRT"] == pytest.approx(40.0)
    t = instance_costs(hits)
    assert t.loc[("p", 0)].tolist() == [70.0, 40.0]


def test_ecdf_with_censoring_is_kaplan_meier_by_hand():
    """Solved at 10 and 30; unsolved runs stopped at 20 and at 50; one diverged (never).
    KM: S(10) = 4/5; the run censored at 20 leaves 3 at risk at 30, S(30) = 4/5 · 2/3."""
    n = np.array([10.0, 30.0, np.inf, np.inf, np.inf])
    stop = np.array([100.0, 100.0, 20.0, 50.0, np.inf])
    got = ecdf(n, np.array([5.0, 10.0, 25.0, 30.0, 1e6]), stop)
    np.testing.assert_allclose(got, [0.0, 1 / 5, 1 / 5, 7 / 15, 7 / 15], rtol=1e-12)
    # the plain fraction counts the censored runs as failures for ever: 2/5 < 7/15
    assert ecdf(n, np.array([30.0]))[0] == pytest.approx(2 / 5)
    # one common budget (every unsolved run stopped at the same cost beyond the events):
    # Kaplan-Meier is the plain fraction
    common = ecdf(n, np.array([10.0, 30.0]), np.full(5, 100.0))
    np.testing.assert_allclose(common, [1 / 5, 2 / 5], rtol=1e-12)
