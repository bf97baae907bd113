"""The leaderboard by hand: medians, bootstrap bounds, success, failure reasons, ranks with
ties, the verdict that flips with the evidence, and a failing cell counted unsolved."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bibench.analysis import leaderboard as lb
from bibench.analysis.style import FIXED, OKABE_ITO, style


def hits(cells: dict[str, list[float]], status: dict[str, list[str]] | None = None,
         final: dict[str, list[float]] | None = None) -> pd.DataFrame:  # fmt: skip
    """One target; one run per entry of each algorithm's list of N."""
    rows = []
    for alg, ns in cells.items():
        for i, n in enumerate(ns):
            rows.append(
                {
                    "run_id": f"{alg}{i}",
                    "problem": "pl_curved",
                    "family": "pl_curved",
                    "regime": "stochastic",
                    "algorithm": alg,
                    "status": (status or {}).get(alg, ["done"] * len(ns))[i],
                    "target": 0,
                    "eps": 0.01,
                    "N": n,
                    "final_rel": (final or {}).get(alg, [0.001] * len(ns))[i],
                    "cost_end": 1000.0,
                }
            )
    return pd.DataFrame(rows)


def test_median_success_and_rank_by_hand():
    s = lb.summarize(hits({"soba": [100, 200, 300, 400, 500],
                           "stocbio": [600, 700, 800, 900, 990]}), n_boot=500)  # fmt: skip
    s = s.set_index("algorithm")
    assert s.loc["soba", "median"] == 300 and s.loc["stocbio", "median"] == 800
    assert s.loc["soba", "success"] == 1.0 and s.loc["soba", "n"] == 5
    # a percentile interval of the median of 5 lies between the 2nd and 4th order statistics
    # at most (a resample's median is one of the values)
    assert 100 <= s.loc["soba", "lo"] <= 300 <= s.loc["soba", "hi"] <= 500
    assert list(s["rank"]) == [1, 2]
    assert not s["failed"].any()


def test_verdict_flips_when_the_evidence_flips():
    apart = lb.summarize(hits({"soba": [100, 110, 120, 130, 140],
                               "stocbio": [600, 610, 620, 630, 640]}), n_boot=500)  # fmt: skip
    assert lb.verdict(apart, "soba", "stocbio", "pl_curved", "stochastic") == "beats"
    assert lb.verdict(apart, "stocbio", "soba", "pl_curved", "stochastic") == "loses"
    claims = lb.claims(apart)
    assert list(zip(claims["winner"], claims["loser"])) == [("soba", "stocbio")]
    overlap = lb.summarize(hits({"soba": [100, 300, 500, 700, 900],
                                 "stocbio": [200, 400, 600, 800, 1000]}), n_boot=500)  # fmt: skip
    assert lb.verdict(overlap, "soba", "stocbio", "pl_curved", "stochastic") == "tie"
    assert list(overlap["rank"]) == [1, 1]  # a tie shares the rank
    assert lb.claims(overlap).empty


def test_rank_rule_counts_only_wholly_lower_intervals():
    assert lb.rank_with_ties([1, 2, 10], [3, 4, 12]).tolist() == [1, 1, 3]
    # a chain: A overlaps B, B overlaps C, A is wholly below C
    assert lb.rank_with_ties([1, 3, 5], [4, 6, 8]).tolist() == [1, 1, 2]
    assert lb.rank_with_ties([1, math.inf], [2, math.inf]).tolist() == [1, 2]


def test_failures_stay_with_their_reason():
    inf = math.inf
    h = hits(
        {"aid_cg": [inf, inf, inf, 100, 200], "ttsa": [inf] * 5, "soba": [50] * 5},
        status={"aid_cg": ["diverged"] * 3 + ["done"] * 2, "ttsa": ["done"] * 5},
        final={"ttsa": [0.5, 0.4, 0.6, 0.5, 0.7]},
    )
    s = lb.summarize(h, n_boot=500).set_index("algorithm")
    assert s.loc["aid_cg", "failed"] and s.loc["aid_cg", "reason"] == "diverged"
    assert s.loc["aid_cg", "success"] == pytest.approx(0.4)
    assert s.loc["ttsa", "reason"] == "stalled" and s.loc["ttsa", "stalled_at"] == 0.5
    assert s.loc["soba", "median"] == 50 and s.loc["soba", "rank"] == 1
    assert s.loc["aid_cg", "hi"] == inf
    assert pd.isna(s.loc["ttsa", "rank"]) and pd.isna(s.loc["aid_cg", "rank"])
    text = lb.markdown(s.reset_index(), lb.scores(h), 0.01)
    assert "✗ diverged (40%)" in text and "✗ stalled at 0.5·m0 (0%)" in text


def test_a_failing_cell_gets_no_rank_even_when_its_interval_overlaps_the_winner():
    inf = math.inf
    # itd fails (3 of 5 censored) but its bootstrap lower bound (40-60) overlaps soba's
    h = hits({"soba": [50] * 5, "itd": [inf, inf, inf, 40, 60], "ttsa": [inf] * 5})
    s = lb.summarize(h, n_boot=500).set_index("algorithm")
    assert s.loc["itd", "failed"] and s.loc["itd", "lo"] <= 50
    assert s.loc["soba", "rank"] == 1 and pd.isna(s.loc["itd", "rank"])
    text = lb.markdown(s.reset_index(), lb.scores(h), 0.01)
    assert "- pl_curved: soba 50 [50, 50] beats" in text and "tied at rank 1" not in text
    every = lb.summarize(hits({"itd": [inf, inf, inf, 40, 60], "ttsa": [inf] * 5}), n_boot=500)
    assert "- pl_curved: every algorithm fails at ε" in lb.markdown(every, {}, 0.01)


def test_a_failing_cell_counts_unsolved_in_the_score():
    h = hits({"soba": [100] * 5, "ttsa": [math.inf] * 5, "f2ba": [200] * 5})
    score = lb.scores(h)["stochastic"]
    # one instance: soba ratio 1 -> 1, f2ba ratio 2 -> (4-2)/3, ttsa unsolved -> 0
    assert score["soba"] == pytest.approx(1.0)
    assert score["f2ba"] == pytest.approx(2 / 3)
    assert score["ttsa"] == 0.0


def test_bootstrap_bound_is_infinite_when_it_weighs_a_censored_run():
    med, lo, hi = lb.bootstrap_median(np.array([10.0, 20.0, 30.0, np.inf, np.inf]), 500)
    assert med == 30.0 and hi == math.inf and 10.0 <= lo <= 30.0
    assert lb.bootstrap_median(np.array([7.0, 7.0, 7.0]), 500) == (7.0, 7.0, 7.0)


def test_regime_from_noise_and_minibatch():
    df = pd.DataFrame({"prob_noise_std": [0.0, 0.1, 0.0, np.nan],
                       "prob_batch_size": [0, 0, 8, np.nan]})  # fmt: skip
    assert lb.regime_of(df).tolist() == ["deterministic", "stochastic", "stochastic",
                                         "deterministic"]  # fmt: skip


def test_every_shipped_algorithm_has_its_own_look():
    looks = [(s.color, s.linestyle, s.marker) for s in FIXED.values()]
    assert len(set(looks)) == len(looks) == 12
    assert len({s.marker for s in FIXED.values()}) == 12  # markers alone tell them apart
    # same colour -> different line style
    for a in FIXED.values():
        for b in FIXED.values():
            if a is not b and a.color == b.color:
                assert a.linestyle != b.linestyle
    assert {s.color for s in FIXED.values()} <= set(OKABE_ITO.values())
    assert style("my_plugin") == style("my_plugin") and style("soba") == FIXED["soba"]
    assert style("my_plugin").color in OKABE_ITO.values()
