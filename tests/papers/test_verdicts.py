"""Verdict rules (bibench/papers/core.py) and every claim's verdict (bibench/papers/*.py):
synthetic evidence on both sides of each rule, and the verdict must flip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bibench.papers import bgs, chen, hgms, unibio
from bibench.papers.core import (
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    Interval,
    all_of,
    diff_ci,
    exceeds,
    only_when,
    within,
)

R, NR = (REPRODUCED, ""), (NOT_REPRODUCED, "x")


# -- rules ------------------------------------------------------------------------------
def test_exceeds_flips_with_the_side_of_the_ci():
    assert exceeds(Interval(2.0, 1.5, 2.5), 1.0, "d")[0] == REPRODUCED
    assert exceeds(Interval(1.0, 0.5, 1.5), 1.0, "d") == (
        NOT_REPRODUCED, "the CI of d straddles the margin 1")  # fmt: skip
    assert exceeds(Interval(0.0, -0.5, 0.5), 1.0, "d")[1].endswith("below the margin 1")
    assert exceeds(Interval(np.nan, np.nan, np.nan), 1.0, "d")[0] == NOT_TESTABLE


def test_within_flips_when_the_ci_leaves_the_band():
    assert within(Interval(0.0, -0.1, 0.1), 0.2, "d")[0] == REPRODUCED
    assert within(Interval(0.1, -0.1, 0.3), 0.2, "d")[0] == NOT_REPRODUCED


def test_only_when_names_the_condition_when_the_control_fails():
    assert only_when(R, NR, "each p has its step", "shared") == (
        "reproduced only when each p has its step", "shared: x")  # fmt: skip
    assert only_when(R, R, "c", "shared") == R
    assert only_when(NR, R, "c", "shared") == NR


def test_all_of_reports_the_parts_that_hold():
    assert all_of({"a": R, "b": R}) == R
    assert all_of({"a": R, "b": NR}) == ("reproduced only when a", "b: x")
    assert all_of({"a": NR, "b": NR})[0] == NOT_REPRODUCED
    assert all_of({"a": (NOT_TESTABLE, "no data")})[0] == NOT_TESTABLE


def test_diff_ci_sides_and_constant_samples():
    rng = np.random.default_rng(0)
    a, b = 1.0 + 0.1 * rng.standard_normal(8), 0.1 * rng.standard_normal(8)
    up = diff_ci(a, b)
    assert up.low > 0.8 and up.high < 1.2 and up.low < up.value < up.high
    down = diff_ci(b, a)
    assert down.high < -0.8
    assert diff_ci([2.0, 2.0], [0.5, 0.5]) == Interval(1.5, 1.5, 1.5)


# -- synthetic results tables -------------------------------------------------------------
def _runs(problem: str, algorithm: str, settings: list[tuple[dict, dict, int, dict]]):
    """Rows of finished runs: per (problem params, hyperparameters, seed, columns)."""
    frames = []
    for i, (prob, hyper, seed, cols) in enumerate(settings):
        n = len(next(iter(cols.values())))
        label_p = problem + "".join(f"[{k}={v}]" for k, v in prob.items())
        label_a = algorithm + "".join(f"[{k}={v}]" for k, v in hyper.items())
        frame = pd.DataFrame({
            "run_id": f"{problem}-{algorithm}-{i}", "label": f"{label_p} × {label_a}",
            "status": "done", "problem": problem, "algorithm": algorithm, "seed": seed,
            "step": np.arange(1, n + 1), "batch_size": 1, **cols,
            **{f"prob_{k}": v for k, v in prob.items()},
            **{f"hp_{k}": v for k, v in hyper.items()},
        })  # fmt: skip
        if "oracle_calls" not in frame:
            frame["oracle_calls"] = 10.0 * frame["step"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


T = np.arange(1, 301, dtype=float)


def _synthetic_unibio(slope_of_p, *, shared: float, noise_factor: float = 10.0):
    """P11a runs whose ||grad Phi|| is t^slope(p, eta); noisy runs scaled by noise_factor."""
    settings = []
    for p in (2, 4, 6, 8):
        for eta in sorted({unibio.UNIBIO_ETA[p], shared}):
            for noise in (0.0, 1.0):
                for seed in range(3):
                    jitter = 1.0 + 0.01 * seed
                    m = jitter * T ** slope_of_p(p, eta) * (noise_factor if noise else 1.0)
                    settings.append(({"p": p, "noise_std": noise}, {"eta": eta}, seed,
                                     {"hypergrad_norm": m}))  # fmt: skip
    return _runs("unibio_synthetic", "unibio", settings)


def test_p_ordering_is_reproduced_only_when_each_p_has_its_own_step():
    # the ordering comes from the per-p steps: at a shared step the slopes agree
    df = _synthetic_unibio(lambda p, eta: -1.0 / (1 + 10 * (0.05 - eta) + 0.01 * p), shared=0.3)
    (claim,) = [c for c in unibio.claims(df, {"unibio_shared_eta": 0.3}) if "slope" in c.claim]
    assert claim.verdict == "reproduced only when each p has its own step eta_p " \
        "(the ordering comes from the steps)"  # fmt: skip
    # the ordering holds at the shared step too
    df = _synthetic_unibio(lambda p, eta: -1.0 / (0.5 * p), shared=0.3)
    claim = unibio.claim_p_ordering(unibio.prepare(df), 0.3)
    assert claim.verdict == REPRODUCED
    # no ordering even with per-p steps
    df = _synthetic_unibio(lambda p, eta: -0.5, shared=0.3)
    assert unibio.claim_p_ordering(unibio.prepare(df), 0.3).verdict == NOT_REPRODUCED


def test_noise_claim_flips_with_the_noisy_plateau():
    def slope(p, eta):
        return -0.5

    up = unibio.claim_noise(unibio.prepare(_synthetic_unibio(slope, shared=0.3)))
    assert up.verdict == REPRODUCED
    flat = _synthetic_unibio(slope, shared=0.3, noise_factor=1.1)
    assert unibio.claim_noise(unibio.prepare(flat)).verdict == NOT_REPRODUCED


def _p_rate(b):
    """P11e runs with N(eps) = eps^-b(p): ||grad Phi|| = calls^(-1/b)."""
    calls = np.logspace(0, 6, 200)
    settings = [
        ({"p": p}, {"eta": 0.05}, seed,
         {"oracle_calls": calls, "hypergrad_norm": (1 + 0.02 * seed) * calls ** (-1 / b(p))})
        for p in (2, 8) for seed in range(4)
    ]  # fmt: skip
    return _runs("lp_degenerate", "unibio", settings)


def test_p_rate_claim_flips_with_the_exponents():
    grows = unibio.claim_p_rate(unibio.prepare(_p_rate(lambda p: 1.0 + 0.2 * p)))
    assert grows.verdict == REPRODUCED and "theory 34" in grows.evidence
    assert unibio.claim_p_rate(unibio.prepare(_p_rate(lambda p: 2.0))).verdict == NOT_REPRODUCED


def _bgs(final_of):
    settings = [
        ({}, {"preset": "custom", "n_unroll": t, "correction": corr}, seed,
         {"bgs_stationarity": np.array([1.0, final_of(t, corr) * (1 + 0.01 * seed)]),
          "hypergrad_norm": np.array([1.0, 1.0])})
        for t in (1, 16) for corr in (True, False) for seed in range(3)
    ]  # fmt: skip
    return _runs("bgs_quadratic", "bgs_opt", settings)


def test_unrolling_bias_claim_flips():
    def biased(t, corr):
        return 1e-8 if corr else 1.0 / t**3

    assert bgs.claim_unrolling_bias(bgs.prepare(_bgs(biased))).verdict == REPRODUCED
    assert bgs.claim_unrolling_bias(bgs.prepare(_bgs(lambda t, c: 1e-3))).verdict == NOT_REPRODUCED
    part = bgs.claim_unrolling_bias(bgs.prepare(_bgs(lambda t, c: 1e-8 if c else 1e-2)))
    assert part.verdict == "reproduced only when the correction removes it at T = 1"


def _bome(bgs_final, phi_final):
    settings = [({}, {"preset": "bgs"}, s, {"bgs_stationarity": np.array([1.0, bgs_final]),
                                            "hypergrad_norm": np.array([1.0, phi_final])})
                for s in range(2)]  # fmt: skip
    return _runs("bome_toy", "bgs_opt", settings)


def test_equilibrium_claim_flips():
    assert bgs.claim_equilibrium(bgs.prepare(_bome(1e-9, 0.5))).verdict == REPRODUCED
    assert bgs.claim_equilibrium(bgs.prepare(_bome(1e-9, 1e-9))).verdict.startswith(
        "reproduced only when BGS-stationary")
    assert bgs.claim_equilibrium(bgs.prepare(_bome(0.1, 1e-9))).verdict == NOT_REPRODUCED


def _hat(final_of):
    frames = []
    for alg in ("hg_ms", "aid_cg"):
        settings = [({"dim_y": 10}, {"select_mode": "one_step"} if alg == "hg_ms" else {}, s,
                     {"hypergrad_norm": np.array([1.0, final_of(alg) * (1 + 0.1 * s)])})
                    for s in range(3)]  # fmt: skip
        frames.append(_runs("hat", alg, settings))
    return pd.concat(frames, ignore_index=True)


def test_stall_claim_flips():
    def stall(alg):
        return 1e-8 if alg == "hg_ms" else 1e-2

    assert hgms.claim_stall(hgms.prepare(_hat(stall))).verdict == REPRODUCED
    assert hgms.claim_stall(hgms.prepare(_hat(lambda alg: 1e-8))).verdict == NOT_REPRODUCED


def _dims(n_of):
    """hg_ms on hat: ||grad Phi|| crosses EPS at oracle calls n_of(mode, d, k)."""
    calls = np.arange(1.0, 5001.0)
    settings = []
    for mode in ("one_step", "tolerance"):
        for d in (16, 64):
            for k in (1, 7, 15):
                for s in range(3):
                    n = n_of(mode, d, k) * (1 + 0.01 * s)
                    settings.append(({"dim_y": d, "k": k}, {"select_mode": mode}, s,
                                     {"oracle_calls": calls,
                                      "hypergrad_norm": np.where(calls >= n, 1e-9, 1.0)}))
    return _runs("hat", "hg_ms", settings)


def test_intrinsic_dimension_claim_flips():
    by_k = hgms.claim_intrinsic(hgms.prepare(_dims(lambda m, d, k: 100.0 * k)))
    assert by_k.verdict == REPRODUCED
    by_d = hgms.claim_intrinsic(hgms.prepare(_dims(lambda m, d, k: 10.0 * d)))
    assert by_d.verdict == NOT_REPRODUCED


def test_one_step_selection_claim_flips():
    same = hgms.claim_one_step(hgms.prepare(_dims(lambda m, d, k: 100.0)))
    assert same.verdict == REPRODUCED
    # one-step never reaches the target within the run: final ||grad Phi|| stays at 1
    lagging = _dims(lambda m, d, k: 1e9 if m == "one_step" and k == 15 else 100.0)
    assert hgms.claim_one_step(hgms.prepare(lagging)).verdict == "reproduced only when k = 7"


def _cxz(value_before):
    q = 2 * 2 * 10
    lower = np.arange(0.0, 2.0 * q, 2.0)
    phi = np.where(lower < q / 2, value_before, 0.1)
    settings = [({"T": 2, "K": 10}, {}, s, {"n_grad_y_g": lower, "n_hvp_yy_g": 0 * lower,
                                             "hypergrad_norm": phi}) for s in range(2)]
    return _runs("cxz_hard", "itd", settings)


def test_hard_instance_claim_flips():
    assert chen.claim_hard_instance(chen.prepare(_cxz(1.0))).verdict == REPRODUCED
    assert chen.claim_hard_instance(chen.prepare(_cxz(0.9))).verdict == NOT_REPRODUCED


def _f2ba(rate):
    calls = np.logspace(0, 17, 600)  # rate 4 reaches the smallest target 1e-4 at 1e16 calls
    settings = [({"noise_std": 0.0}, {}, s,
                 {"oracle_calls": calls, "hypergrad_norm": (1 + 0.02 * s) * calls ** (-1 / rate)})
                for s in range(4)]  # fmt: skip
    return _runs("pl_graph", "f2ba", settings)


@pytest.mark.parametrize("rate,verdict", [(2.0, REPRODUCED), (1.0, REPRODUCED),
                                          (4.0, NOT_REPRODUCED)])  # fmt: skip
def test_f2ba_rate_claim_flips(rate, verdict):
    claim = chen.claim_f2ba_rate(chen.prepare(_f2ba(rate)))
    assert claim.verdict == verdict, claim.evidence


