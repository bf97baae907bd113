"""The source-reweighting experiment module: a tiny quick run (matched budget, table,
figure) and the verdicts of ``claims`` on frames whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bibench.data.sources import SOURCES
from bibench.papers import hgms_reweighting as hr


def test_config_matches_the_issue_brief():
    specs = hr.specs()
    algs = {s.algorithm for s in specs}
    assert algs == {"hg_ms", "aid_cg", "itd", "soba", "stocbio", "bgs_opt", "f2ba"}
    assert {s.problem_params.seed for s in specs} == {1, 2, 3, 4, 5}  # split 0 tuned the steps
    assert {s.problem_params.batch_size for s in specs} == {0, 32}
    assert len({s.budget.max_calls for s in specs}) == 1  # one matched budget
    assert len(specs) == 7 * 5 * 2


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("hgms_rw")
    return hr.run(out, quick=True, only={"hg_ms", "aid_cg"}), out


def test_quick_run_matches_budgets_and_tabulates_finals(quick):
    df, out = quick
    last = hr.finals(df)
    assert len(last) == 2 * 2 * 2
    det = last[last["oracle"] == "deterministic"]
    assert (det["status"] == "done").all()  # minibatch CG may diverge (see the config)
    # equal oracle budget: every finished run stops within about one outer step of it
    over = det["oracle_calls"] - hr.QUICK["budget"]
    assert (over >= 0).all() and (over < 2 * det["oracle_calls"] / det["step"]).all()
    tab = hr.table(df)
    assert list(tab["method"][-3:]) == ["uniform weights", "best single source", "oracle mixture"]
    row = tab[(tab["oracle"] == "deterministic") & (tab["method"] == "hg_ms")].iloc[0]
    part = last[(last["algorithm"] == "hg_ms") & (last["oracle"] == "deterministic")]
    assert row["runs"] == 2
    assert row["test_acc"].startswith(f"{np.median(part['test_acc']):.3g}")
    assert float(row["w_clean"]) == pytest.approx(part["w_clean"].median(), abs=5e-4)
    oracle = tab[tab["method"] == "oracle mixture"].iloc[0]
    assert float(oracle["w_clean"]) > float(oracle["w_off_target"])
    paths = hr.figure(df, out / "_figures")
    assert paths and all(p.stat().st_size > 0 for p in paths)
    rows = hr.claims(df)
    verdicts = ("HG-MS higher", "HG-MS lower", "no measurable difference", "reproduced",
                "not reproduced", "not comparable: ")  # fmt: skip
    assert all(r["verdict"].startswith(verdicts) for r in rows)
    # hg_ms and aid_cg both finish the two deterministic pairs: a computed verdict
    det = [r for r in rows if r["setting"].endswith("deterministic")]
    assert len(det) == 2 and all(r["n"] == 2 for r in det)


def _frame(
    hg: list[float], other: list[float], weights: dict[str, float], hg_status: str = "done"
) -> pd.DataFrame:
    rows = []
    for alg, vals in (("hg_ms", hg), ("aid_cg", other)):
        for split, v in enumerate(vals):
            rows.append({
                "run_id": f"{alg}{split}", "algorithm": alg, "prob_seed": split, "seed": 0,
                "prob_batch_size": 0, "oracle_calls": 100, "test_acc": v,
                "status": hg_status if alg == "hg_ms" else "done",
                "test_acc_at_y_star": 0.5, **{f"w_{s}": weights.get(s, 0.1) for s in SOURCES},
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_claims_verdicts_follow_the_interval():
    good = {"clean": 0.5, "noised": 0.1, "off_target": 0.05}
    higher = hr.claims(_frame([0.82, 0.85, 0.81, 0.84, 0.83], [0.80, 0.82, 0.80, 0.81, 0.80], good))
    acc = next(r for r in higher if "test_acc at" in r["claim"])
    assert acc["verdict"] == "HG-MS higher" and acc["n"] == 5
    assert acc["mean"] == pytest.approx(0.024)
    # t interval by hand: mean 0.024, sd of (.02,.03,.01,.03,.03), t_{0.95,4} = 2.1318
    sd = np.std([0.02, 0.03, 0.01, 0.03, 0.03], ddof=1)
    assert acc["ci_low"] == pytest.approx(0.024 - 2.131847 * sd / 5**0.5, rel=1e-5)
    ystar = next(r for r in higher if "test_acc_at_y_star" in r["claim"])
    assert ystar["verdict"] == "no measurable difference"  # identical values
    mixed = hr.claims(_frame([0.80, 0.85, 0.79, 0.84], [0.82, 0.81, 0.83, 0.80], good))
    assert next(r for r in mixed if "test_acc at" in r["claim"])["verdict"] == (
        "no measurable difference"
    )
    lower = hr.claims(_frame([0.70, 0.71, 0.72], [0.80, 0.82, 0.81], good))
    assert next(r for r in lower if "test_acc at" in r["claim"])["verdict"] == "HG-MS lower"
    assert lower[-1]["verdict"] == "reproduced"
    bad = hr.claims(_frame([0.8] * 3, [0.8] * 3, {"clean": 0.1, "noised": 0.3}))
    assert bad[-1]["verdict"] == "not reproduced"
    lost = hr.claims(_frame([0.9] * 3, [0.8] * 3, good, hg_status="diverged"))
    assert lost[0]["verdict"] == "not comparable: 0/3 pairs finished (HG-MS diverged in 3)"
    assert len(lost) == 2  # no weights claim without a finished HG-MS run


def test_hgms_paper_claim_flips_with_the_evidence():
    """``claims --paper hgms`` turns the paired intervals into the paper's verdict: higher
    on every pair -> reproduced, lower -> not reproduced, HG-MS diverged -> not testable."""
    from bibench.papers import hgms

    good = {"clean": 0.5, "noised": 0.1, "off_target": 0.05}
    frame = _frame([0.82, 0.85, 0.81, 0.84, 0.83], [0.80, 0.82, 0.80, 0.81, 0.80], good)
    frame["problem"] = "source_reweighting"
    acc, weights = hgms.claim_reweighting(frame)
    assert acc.verdict == "reproduced" and "aid_cg: +0.0240" in acc.evidence
    assert weights.verdict == "reproduced"
    lower = _frame([0.70, 0.71, 0.72], [0.80, 0.82, 0.81], good)
    lower["problem"] = "source_reweighting"
    assert hgms.claim_reweighting(lower)[0].verdict == "not reproduced"
    lost = _frame([0.9] * 3, [0.8] * 3, good, hg_status="diverged")
    assert hgms.claim_reweighting(lost.assign(problem="source_reweighting"))[0].verdict == (
        "not testable here"
    )
    assert hgms.claim_reweighting(frame.iloc[:0])[0].verdict == "not testable here"
