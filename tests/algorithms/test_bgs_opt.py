"""BGS-Opt on the BOME toy (P9): its equilibria against closed forms.

P9: g = y1²/2 − x y1, f = (x − y2)²/2 + (y1 − 1)²/2, y0 = (0, y2⁰). GD never moves y2, so
with lower step s the unrolled map is φ_T(x, y) = (x + (1 − s)^T (y1 − x), y2) and, at a
fixed point (y1 = x, y2 = y2⁰),

* ∂x L_T = (x − y2⁰) + c_T (x − 1), c_T = 1 − (1 − s)^T: the uncorrected "unrolled"
  preset converges to x_T = (y2⁰ + c_T)/(1 + c_T), whose bias against the BGS
  equilibrium shrinks as T grows;
* with the correction ξ = −A†∂y L_T (A = diag(1, 0)) the direction is 2x − 1 − y2⁰ =
  ∂x L_φ for every T: BGS-Opt converges to x = (1 + y2⁰)/2, not to x* = 1.
"""

from __future__ import annotations

import pytest
import torch

from bibench.algorithm import batch_hyper
from bibench.config import Budget, RunConfig, expand
from bibench.oracle import Oracle
from bibench.registry import get_algorithm, get_problem
from bibench.rng import BatchedRNG
from bibench.runner import execute_batch

Y2 = 0.4  # y2⁰
S = 0.5  # lower GD step


def final(hyper: dict, budget: int = 4000) -> dict:
    cfg = RunConfig(problems=[("bome_toy", {"y2_init": Y2})], algorithms=[("bgs_opt", hyper)],
                    seeds=[0], budget=Budget(max_calls=budget))  # fmt: skip
    frame = execute_batch(expand(cfg))[0]
    assert frame["status"].iloc[-1] == "done", frame["error"].iloc[-1]
    return frame.iloc[-1].to_dict()


def run_x(hyper: dict, budget: int = 4000) -> float:
    """Final x of a run, read back from Φ = (x − 1)²/2 and x < 1."""
    return 1.0 - (2.0 * final(hyper, budget)["phi"]) ** 0.5


def test_bgs_preset_converges_to_the_bgs_equilibrium_not_to_x_star():
    row = final({"lr_y": S})
    x = 1.0 - (2.0 * row["phi"]) ** 0.5
    assert x == pytest.approx((1.0 + Y2) / 2.0, abs=1e-10)
    assert row["hypergrad_norm"] == pytest.approx((1.0 - Y2) / 2.0, abs=1e-10)  # |Φ'| ≠ 0
    assert row["bgs_stationarity"] < 1e-10  # |∂x L_φ| = |2x − 1 − y2⁰|


@pytest.mark.parametrize("t", [1, 2, 5])
def test_unrolled_preset_limit_has_the_closed_form_bias(t):
    c_t = 1.0 - (1.0 - S) ** t
    x = run_x({"preset": "unrolled", "n_unroll": t, "lr_y": S}, budget=6000)
    assert x == pytest.approx((Y2 + c_t) / (1.0 + c_t), abs=1e-9)


def test_unrolled_bias_shrinks_as_t_grows():
    bgs = (1.0 + Y2) / 2.0
    bias = [abs(run_x({"preset": "unrolled", "n_unroll": t, "lr_y": S}, 6000) - bgs)
            for t in (1, 3, 6)]  # fmt: skip
    assert bias[0] > bias[1] > bias[2] > 0


@pytest.mark.parametrize("t", [1, 3])
def test_correction_removes_the_unrolling_bias_at_fixed_t(t):
    hyper = {"preset": "custom", "n_warm": 0, "n_unroll": t, "correction": True, "lr_y": S}
    assert run_x(hyper, budget=8000) == pytest.approx((1.0 + Y2) / 2.0, abs=1e-9)


def test_one_step_direction_matches_the_closed_form():
    """From (x, y) = (0.3, (0.1, Y2)), T = 2 with correction: d = (x − y2) + (y_T1 − 1),
    y_T1 = x + (1 − s)^T (y1 − x); one x step is x − γ d."""
    problem = get_problem("bome_toy")()
    seeds = torch.tensor([0])
    x0 = torch.tensor([[0.3]], dtype=torch.float64)
    y0 = torch.tensor([[0.1, Y2]], dtype=torch.float64)
    cls = get_algorithm("bgs_opt")
    hp = cls.Hyper(preset="custom", n_warm=0, n_unroll=2, correction=True, lr_y=S, lr_x=0.1)
    alg = cls(batch_hyper([hp], torch.device("cpu")))
    oracle = Oracle(problem, BatchedRNG(seeds, 2))
    state = alg.step(alg.init(problem, oracle, x0, y0, BatchedRNG(seeds, 3)))
    y_t1 = 0.3 + (1.0 - S) ** 2 * (0.1 - 0.3)
    d = (0.3 - Y2) + (y_t1 - 1.0)
    assert state.x.item() == pytest.approx(0.3 - 0.1 * d, abs=1e-14)
    assert state.y[0, 0].item() == pytest.approx(y_t1, abs=1e-14)


def test_presets_fix_the_structure_and_reject_m_plus_t_zero():
    cls = get_algorithm("bgs_opt").Hyper
    assert cls(preset="bgs", n_unroll=7).structure() == (1, 0, True)
    assert cls(preset="game", n_warm=3).structure() == (3, 0, False)
    assert cls(preset="unrolled", n_warm=3, n_unroll=4).structure() == (0, 4, False)
    with pytest.raises(ValueError, match="n_warm"):
        cls(preset="custom", n_warm=0, n_unroll=0).validate()
    with pytest.raises(ValueError, match="preset"):
        cls(preset="nope").validate()
