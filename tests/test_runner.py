"""The lockstep runner on the control problem: exact counts, batch invariance, metrics."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from bibench.config import Budget, RunConfig, expand
from bibench.runner import execute_batch, plan

TIMING = ["wall_time", "batch_size", "hostname"]


def specs(algorithms, seeds=(0, 1, 2), budget=3000, problem_params=None):
    cfg = RunConfig(
        problems=[("quadratic", problem_params or {})],
        algorithms=algorithms,
        seeds=list(seeds),
        budget=Budget(max_calls=budget),
    )
    return expand(cfg)


def test_aid_cg_counts_equal_the_hand_derived_counts():
    hp = {"n_inner": 7, "n_cg": 4}
    (frame,) = execute_batch(specs([("aid_cg", hp)], seeds=[0]))
    step = frame["step"]
    # per outer step: T grad_y_g, 1 grad_x_f, 1 grad_y_f, N + 1 HVPs (CG warm start costs one
    # product for the initial residual), 1 cross product
    assert (frame["n_grad_y_g"] == 7 * step).all()
    assert (frame["n_grad_x_f"] == step).all() and (frame["n_grad_y_f"] == step).all()
    assert (frame["n_hvp_yy_g"] == 5 * step).all()
    assert (frame["n_cross_xy_g"] == step).all()
    assert (frame[["n_f", "n_g", "n_grad_x_g"]] == 0).all().all()
    assert (frame["oracle_calls"] == (7 + 1 + 1 + 5 + 1) * step).all()
    # full-batch calls on the 64-sample finite sum consume 64 samples each
    assert (frame["samples"] == 64 * frame["oracle_calls"]).all()


def test_stocbio_counts_equal_d_plus_q_plus_3_per_step():
    hp = {"n_inner": 5, "n_neumann": 3}
    (frame,) = execute_batch(specs([("stocbio", hp)], seeds=[0], problem_params={"batch_size": 4}))
    step = frame["step"]
    assert (frame["n_grad_y_g"] == 5 * step).all()
    assert (frame["n_hvp_yy_g"] == 3 * step).all()
    assert (frame["n_grad_x_f"] == step).all() and (frame["n_grad_y_f"] == step).all()
    assert (frame["n_cross_xy_g"] == step).all()
    assert (frame["oracle_calls"] == (5 + 3 + 3) * step).all()
    # D_F is shared by grad_x_f and grad_y_f, and every call is on a 4-sample minibatch
    assert (frame["samples"] == 4 * frame["oracle_calls"]).all()


def test_aid_cg_drives_the_exact_hypergradient_below_1e_8():
    from bibench.algorithm import batch_hyper
    from bibench.oracle import Oracle
    from bibench.registry import get_algorithm, get_problem
    from bibench.rng import BatchedRNG

    problem = get_problem("quadratic")()
    seeds = torch.arange(3)
    rng = BatchedRNG(seeds, 1)
    alg_cls = get_algorithm("aid_cg")
    alg = alg_cls(batch_hyper([alg_cls.Hyper()] * 3, torch.device("cpu")))
    state = alg.init(problem, Oracle(problem, BatchedRNG(seeds, 2)),
                     problem.init_x(rng), problem.init_y(rng), BatchedRNG(seeds, 3))  # fmt: skip
    for _ in range(400):
        state = alg.step(state)
    # closed form, independent of Problem.hypergrad: grad Phi = M x + m
    m_mat, m_vec = problem.M.numpy(), problem.m.numpy()
    grad = state.x.numpy() @ m_mat.T + m_vec
    assert (abs(grad).max(axis=1) < 1e-8 / 10).all()
    # and the runner's hypergrad_norm column reports the same quantity
    frames = execute_batch(specs([("aid_cg", {})], budget=20_000))
    for f in frames:
        assert f["hypergrad_norm"].iloc[-1] < 1e-8
        assert f["hypergrad_norm"].iloc[0] > 1.0
        assert f["phi_gap"].iloc[-1] < 1e-12


def _strip(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=TIMING).reset_index(drop=True)


@pytest.mark.parametrize("algorithm", ["aid_cg", "stocbio"])
def test_lockstep_batch_equals_each_run_alone(algorithm):
    # stochastic (minibatch + noise) and two hyperparameter points in one batch
    grid = {"lr_x": [0.05, 0.1]}
    params = {"batch_size": 8, "noise_std": 0.1}
    all_specs = specs([(algorithm, grid)], seeds=[0, 1, 2], budget=1500, problem_params=params)
    (batch,) = plan(all_specs)
    assert len(batch) == 6
    together = execute_batch(batch)
    for spec, frame in zip(batch, together):
        (alone,) = execute_batch([spec])
        a, b = _strip(frame), _strip(alone)
        assert list(a.columns) == list(b.columns)
        num = a.select_dtypes("number").columns
        diff = (a[num] - b[num]).abs().max().max()
        assert diff <= 1e-12
        assert (a.drop(columns=num) == b.drop(columns=num)).all().all()


def test_checkpoints_are_geometric_in_oracle_calls():
    (frame,) = execute_batch(specs([("aid_cg", {})], seeds=[0], budget=50_000))
    calls = frame["oracle_calls"].tolist()
    # the grid: target_0 = 0, and after a record at c, target <- max(1.25 * target, c + 1)
    per_step, target, expected = 24, 0.0, []
    for step in range(50_000 // per_step + 2):
        c = step * per_step
        if c >= target or c >= 50_000:
            expected.append(c)
            target = max(1.25 * target, c + 1)
        if c >= 50_000:
            break
    assert calls == expected
    assert len(calls) < 60  # geometric, not one row per step


def test_divergence_is_recorded_per_run_and_others_go_on():
    frames = execute_batch(specs([("aid_cg", {"lr_x": [0.1, 50.0]})], seeds=[0], budget=3000))
    ok, bad = frames
    assert ok["status"].iloc[-1] == "done" and ok["oracle_calls"].iloc[-1] >= 3000
    assert bad["status"].iloc[-1] == "diverged"
    # caught on the measured Φ (> 1e6 x its start) before the iterates overflow
    assert bad["error"].iloc[-1].startswith("phi = ")
    assert bad["oracle_calls"].iloc[-1] < 3000


def test_required_columns_are_present():
    (frame,) = execute_batch(specs([("stocbio", {})], seeds=[0], budget=200))
    required = ["run_id", "problem", "algorithm", "seed", "step", "oracle_calls", "wall_time",
                "hypergrad_norm", "phi_gap", "dist_to_solution", "status", "n_hvp_yy_g",
                "n_cross_xy_g", "samples", "hp_lr_x", "prob_dim_y"]  # fmt: skip
    assert set(required) <= set(frame.columns)
    assert frame["wall_time"].is_monotonic_increasing
    assert dataclasses.is_dataclass(Budget())


def test_divergence_is_detected_on_the_measured_metrics():
    """AID-CG at an upper step far above 2/L_Φ on the quadratic: x grows geometrically but
    stays far below the iterate bound 1e10 (|x| ~ 1e5 when Φ ~ 1e10), so only the metric
    rule can stop it; it keeps the rows up to the divergence and names the metric. (F2BA at
    its old defaults under noise was the reported case; its noisy-oracle defaults no longer
    blow up, tests/algorithms/test_f2ba.py.)"""
    from bibench.runner import METRIC_BLOWUP

    frames = execute_batch(specs([("aid_cg", {"lr_x": 3.0})], seeds=[0, 1], budget=10_000))
    for df in frames:
        assert set(df["status"]) == {"diverged"}
        error = df["error"].iloc[-1]
        metric = error.split(" ", 1)[0]
        assert metric in ("phi", "hypergrad_norm", "lower_gap")
        last, first = df[metric].iloc[-1], df[metric].iloc[0]
        assert abs(last) > METRIC_BLOWUP * max(1.0, abs(first))
        # every earlier checkpoint was within the rule, and the run stopped at that one
        assert (df[metric].iloc[:-1].abs() <= METRIC_BLOWUP * max(1.0, abs(first))).all()
        assert error.endswith(f"at step {df['step'].iloc[-1]}")
        assert len(df) >= 3 and df["oracle_calls"].iloc[-1] < 10_000
        assert df["step"].is_monotonic_increasing and not df.duplicated("step").any()


def test_each_run_gets_its_own_frame_indexed_from_zero():
    """The frames are cut from one batch table: each holds only its run's rows, indexed
    0..n-1, and writing into one leaves the others as they were."""
    frames = execute_batch(specs([("aid_cg", {"lr_x": [0.1, 50.0]})], seeds=[0, 1], budget=600))
    assert len({f["run_id"].iloc[0] for f in frames}) == 4
    for frame in frames:
        assert frame["run_id"].nunique() == 1 and frame["seed"].nunique() == 1
        assert frame.index.tolist() == list(range(len(frame)))
        assert frame["step"].is_monotonic_increasing and frame["step"].iloc[0] == 0
    done, diverged = frames[0], frames[2]  # lr_x = 50 stops early: frames of unequal length
    assert len(diverged) < len(done)
    kept = frames[1]["phi"].copy()
    done.loc[:, "phi"] = -1.0
    done["extra"] = 1
    pd.testing.assert_series_equal(frames[1]["phi"], kept)
    assert "extra" not in frames[1].columns
