"""The runner's per-step fast path (host-known uniform call totals) records exactly what
the full per-step check records."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from bibench import Algorithm, HyperParams, State
from bibench.config import Budget, RunConfig, expand
from bibench.oracle import Oracle
from bibench.registry import ALGORITHMS
from bibench.runner import execute_batch


def specs(algorithm: str, hyper: dict, params: dict, budget: int = 2000):
    cfg = RunConfig(
        problems=[("quadratic", params)],
        algorithms=[(algorithm, hyper)],
        seeds=[0, 1],
        budget=Budget(max_calls=budget, checkpoint_ratio=1.5),
    )
    return expand(cfg)


@pytest.mark.parametrize(
    ("algorithm", "hyper", "params"),
    [
        ("aid_cg", {"lr_x": [0.1, 50.0]}, {}),  # one run diverges
        (
            "stocbio",
            {"n_inner": 2, "n_neumann": 5, "lr_x": [0.05, 0.2]},
            {"noise_std": 0.05, "batch_size": 8},
        ),
    ],
)
def test_fast_path_rows_equal_full_check_rows(algorithm, hyper, params, monkeypatch):
    batch = specs(algorithm, hyper, params)
    reads = {"n": 0}
    flush = Oracle._flush

    def counted_flush(self):
        reads["n"] += 1
        flush(self)

    monkeypatch.setattr(Oracle, "_flush", counted_flush)
    fast = execute_batch(batch)
    fast_reads = reads["n"]
    monkeypatch.setattr(Oracle, "uniform_total", lambda self: None)  # full check every step
    reads["n"] = 0
    full = execute_batch(batch)
    steps = max(int(f["step"].max()) for f in full)
    # the full check reads the 8 counts every step; the fast path only at checkpoints
    assert reads["n"] >= 8 * steps > 2 * fast_reads
    for a, b in zip(fast, full):
        pd.testing.assert_frame_equal(a.drop(columns="wall_time"), b.drop(columns="wall_time"))
    if algorithm == "aid_cg":  # lr_x = 50 diverges, caught at the same step either way
        assert [f["status"].iloc[-1] for f in fast] == ["done", "done", "diverged", "diverged"]


@dataclasses.dataclass(frozen=True)
class PoisonHyper(HyperParams):
    lr_y: float = 0.5
    poison_at: float = 1e9  # the step at which this run's x becomes `poison`
    poison: str = "nan"  # what x turns into: nan, inf or -inf


class PoisonGD(Algorithm):
    """Lower-level gradient descent whose x turns NaN or inf at a given step (a test plugin,
    registered only inside the test that uses it)."""

    name = "poison_gd"
    Hyper = PoisonHyper

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle, self.t = oracle, 0
        return State(x0, y0)

    def step(self, state):
        self.t += 1
        y = state.y - self.hp.lr_y * self.oracle.grad_y_g(state.x, state.y)
        x = torch.where(self.hp.poison_at == self.t, float(self.hp.poison), state.x)
        return State(x, y)


@pytest.mark.parametrize("poison", ["nan", "inf", "-inf"])
def test_fast_path_stops_a_non_finite_run_at_the_step_it_turns(poison, monkeypatch):
    """Steps 37 and 61 lie between checkpoints (the calls grid 1, 2, 3, 4, 5, 7, ... x 1.25
    has 34, 43, 54, 68): the first poisoned run is caught by the whole-batch bound check
    (no run stopped yet), the second by the per-run one (a run has stopped)."""
    monkeypatch.setitem(ALGORITHMS.entries, PoisonGD.name, PoisonGD)
    monkeypatch.setitem(ALGORITHMS.files, PoisonGD.name, __file__)
    cfg = RunConfig(
        problems=[("quadratic", {})],
        algorithms=[("poison_gd", {"poison_at": [37.0, 61.0, 1e9], "poison": poison})],
        seeds=[0],
        budget=Budget(max_calls=150),
    )
    first, second, clean = execute_batch(expand(cfg))
    for frame, step in ((first, 37), (second, 61)):
        assert frame["status"].iloc[-1] == "diverged"
        assert frame["step"].iloc[-1] == step
        assert frame["error"].iloc[-1] == f"non-finite or |iterate| > 1e+10 at step {step}"
    assert clean["status"].iloc[-1] == "done" and clean["step"].iloc[-1] == 150
