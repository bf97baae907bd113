"""Sampling semantics and evaluation points of every algorithm, one step at a time.

Each algorithm runs on the finite-sum ``quadratic`` with minibatches of 4 (of 64) behind
a recording problem (``sampling_spy.py``). One step's calls become rows ``(type, x, y, batch)``:
``x`` is x_k, ``y`` is y_k and ``y+`` is y_{k+1} (the state's ``y`` after the step);
``y0, y1, ...`` are other points and ``b0, b1, ...`` the minibatches, in order of first
appearance, so two calls share a label exactly when they share a point or a sample.
The expected rows are derived by hand from each docstring's "Sampling" and update
equations; a change of which calls share a sample, or of where a call is evaluated,
changes a row.
"""

from __future__ import annotations

import pytest
import torch
from sampling_spy import start, step_trace, trace

G, HVP, CROSS = "grad_y_g", "hvp_yy_g", "cross_xy_g"
FX, FY, GX = "grad_x_f", "grad_y_f", "grad_x_g"

CASES = {
    # T = 2 GD steps from y_k, then f, N = 2 CG products + 1 for the warm start, cross, at
    # y_{k+1}; "every call draws its own minibatch"
    "aid_cg": ({"n_inner": 2, "n_cg": 2}, [
        (G, "x", "y", "b0"), (G, "x", "y0", "b1"), (FX, "x", "y+", "b2"),
        (FY, "x", "y+", "b3"), (HVP, "x", "y+", "b4"), (HVP, "x", "y+", "b5"),
        (HVP, "x", "y+", "b6"), (CROSS, "x", "y+", "b7")]),
    # forward step t on sample b_t; reverse pass reuses b_t at y_t for cross and HVP
    # (no HVP at t = 0); one f sample at y_T
    "itd": ({"n_unroll": 3}, [
        (G, "x", "y", "b0"), (G, "x", "y0", "b1"), (G, "x", "y1", "b2"),
        (FX, "x", "y+", "b3"), (FY, "x", "y+", "b3"),
        (CROSS, "x", "y1", "b2"), (HVP, "x", "y1", "b2"),
        (CROSS, "x", "y0", "b1"), (HVP, "x", "y0", "b1"), (CROSS, "x", "y", "b0")]),
    # D = 2 SGD steps on own samples; D_F shared by both f gradients; a fresh B_j per
    # HVP (Q = 2); D_G for the cross product; all at y_D
    "stocbio": ({"n_inner": 2, "n_neumann": 2}, [
        (G, "x", "y", "b0"), (G, "x", "y0", "b1"), (FX, "x", "y+", "b2"),
        (FY, "x", "y+", "b2"), (HVP, "x", "y+", "b3"), (HVP, "x", "y+", "b4"),
        (CROSS, "x", "y+", "b5")]),
    # directions at (x_t, y_t): one f sample, one g sample for gradient, HVP and cross
    "soba": ({}, [
        (FX, "x", "y", "b0"), (FY, "x", "y", "b0"), (G, "x", "y", "b1"),
        (HVP, "x", "y", "b1"), (CROSS, "x", "y", "b1")]),
    "ma_soba": ({}, [
        (FX, "x", "y", "b0"), (FY, "x", "y", "b0"), (G, "x", "y", "b1"),
        (HVP, "x", "y", "b1"), (CROSS, "x", "y", "b1")]),
    # T = 2 detached steps on y_hat (own samples); f on one sample at (x, y); the three
    # derivatives of q_hat on one sample of g
    "bome": ({"n_inner": 2}, [
        (G, "x", "y", "b0"), (G, "x", "y0", "b1"), (FX, "x", "y", "b2"),
        (FY, "x", "y", "b2"), (GX, "x", "y", "b3"), (GX, "x", "y1", "b3"),
        (G, "x", "y", "b3")]),
    # M = 1 detached step; f on one sample at y_k+1; N = 2 normal_gd iterations = 4 HVPs
    # on own samples; the correction's cross product on its own sample
    "bgs_opt": ({"n_solver": 2}, [
        (G, "x", "y", "b0"), (FX, "x", "y+", "b1"), (FY, "x", "y+", "b1"),
        (HVP, "x", "y+", "b2"), (HVP, "x", "y+", "b3"), (HVP, "x", "y+", "b4"),
        (HVP, "x", "y+", "b5"), (CROSS, "x", "y+", "b6")]),
    # T = 2 unrolled steps as ITD (HVP at t = 0 not needed without correction)
    "bgs_opt/unrolled": ({"preset": "unrolled", "n_unroll": 2}, [
        (G, "x", "y", "b0"), (G, "x", "y0", "b1"), (FX, "x", "y+", "b2"),
        (FY, "x", "y+", "b2"), (CROSS, "x", "y0", "b1"), (HVP, "x", "y0", "b1"),
        (CROSS, "x", "y", "b0")]),
    # lower solve (2 steps), one selection step: grad_y f, 3 + 2·2 lstsq HVPs, 1 retraction
    # step; then f on one sample, 7 HVPs and the cross product at the selected y
    "hg_ms": ({"n_inner": 2, "n_retract": 1, "n_cg": 2}, [
        (G, "x", "y", "b0"), (G, "x", "y0", "b1"), (FY, "x", "y1", "b2")]
        + [(HVP, "x", "y1", f"b{i}") for i in range(3, 10)]
        + [(G, "x", "y2", "b10"), (FX, "x", "y+", "b11"), (FY, "x", "y+", "b11")]
        + [(HVP, "x", "y+", f"b{i}") for i in range(12, 19)]
        + [(CROSS, "x", "y+", "b19")]),
    # t = 0 (warm start done in init): f on one sample, Q - 1 = 2 HVPs and the cross
    # product on their own samples, all at the warm-started y
    "unibio": ({"n_neumann": 3, "n_lower": 5, "n_warm": 5}, [
        (FX, "x", "y", "b0"), (FY, "x", "y", "b0"), (HVP, "x", "y", "b1"),
        (HVP, "x", "y", "b2"), (CROSS, "x", "y", "b3")]),
    # t = 0: Epoch-SGD (K = 5: one stage of 5) from a fresh random start, one sample per
    # gradient; f on one sample and the cross product on another, at its output
    "unibio_faithful": ({"n_lower": 5}, [
        (G, "x", "y0", "b0"), (G, "x", "y1", "b1"), (G, "x", "y2", "b2"),
        (G, "x", "y3", "b3"), (G, "x", "y4", "b4"), (FX, "x", "y+", "b5"),
        (FY, "x", "y+", "b5"), (CROSS, "x", "y+", "b6")]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_step_samples_and_points(case):
    hyper, expected = CASES[case]
    alg, spy, state = start(case.split("/")[0], hyper)
    rows, _ = step_trace(alg, spy, state)
    assert rows == expected


def test_ttsa_evaluates_the_hypergradient_at_y_k_plus_1():
    """One ∇_y g at (x_k, y_k); then, at (x_k, y_{k+1}), ∇_x f and ∇_y f on one sample,
    K' HVPs on their own samples (K' drawn per step) and the cross product on its own."""
    alg, spy, state = start("ttsa", {"n_neumann": 6})
    for _ in range(3):
        rows, new = step_trace(alg, spy, state)
        k = int(new.truncation[0])
        expected = [(G, "x", "y", "b0"), (FX, "x", "y+", "b1"), (FY, "x", "y+", "b1")]
        expected += [(HVP, "x", "y+", f"b{2 + j}") for j in range(k)]
        expected += [(CROSS, "x", "y+", f"b{2 + k}")]
        assert rows == expected
        state = new


def test_f2ba_samples_and_points():
    """K = 2 steps of the g-only iterate y_g (own samples), K penalised steps on y, each
    with ∇_y f and ∇_y g on their own samples; then ∇_x f at the new y and both ∇_x g
    (at y and at y_g) on one shared sample. Second step, so that y and y_g differ."""
    alg, spy, state = start("f2ba", {"n_inner": 2})
    state = alg.step(state)
    spy.log.clear()
    new = alg.step(state)

    rows = trace(spy.log, {"x": state.x}, {"y": state.y, "y+": new.y, "yg": state.y_g,
                                           "yg+": new.y_g})  # fmt: skip
    assert rows == [
        (G, "x", "yg", "b0"), (G, "x", "y0", "b1"),
        (FY, "x", "y", "b2"), (G, "x", "y", "b3"), (FY, "x", "y1", "b4"), (G, "x", "y1", "b5"),
        (FX, "x", "y+", "b6"), (GX, "x", "y+", "b7"), (GX, "x", "yg+", "b7"),
    ]  # fmt: skip


def test_unibio_refresh_runs_epoch_sgd_from_the_current_y_every_period():
    """At t = I = 2 the step first runs Epoch-SGD from y_t (its first gradient at y_t,
    one sample per gradient), then takes every hypergradient call at its output."""
    alg, spy, state = start("unibio", {"n_neumann": 2, "n_lower": 5, "n_warm": 5})
    for _ in range(2):
        state = alg.step(state)
    rows, _ = step_trace(alg, spy, state)
    assert rows == [
        (G, "x", "y", "b0"), (G, "x", "y0", "b1"), (G, "x", "y1", "b2"), (G, "x", "y2", "b3"),
        (G, "x", "y3", "b4"), (FX, "x", "y+", "b5"), (FY, "x", "y+", "b5"),
        (HVP, "x", "y+", "b6"), (CROSS, "x", "y+", "b7"),
    ]  # fmt: skip


def test_spy_labels_shared_samples_and_points():
    """The recorder itself: two calls on one explicit sample share a label, a fresh draw
    gets a new one, and a point equal to y_k is labelled y."""
    alg, spy, state = start("soba", {})
    o = alg.oracle
    batch = o.sample("g")
    o.grad_y_g(state.x, state.y, batch)
    o.grad_y_g(state.x, state.y + 1.0, batch)
    o.grad_y_g(state.x, state.y)

    rows = trace(spy.log, {"x": state.x}, {"y": state.y})
    assert rows == [(G, "x", "y", "b0"), (G, "x", "y0", "b0"), (G, "x", "y", "b1")]
    assert torch.equal(spy.log[0].batch, batch)
