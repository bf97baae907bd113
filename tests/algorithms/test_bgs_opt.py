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
# Prop. 3's setting: M = 0, T unrolled plain GD steps at a constant step, no correction
# (the "unrolled" preset adds the authors' momentum and cosine schedule)
UNROLLED = {"preset": "custom", "n_warm": 0, "correction": False, "lr_x": 0.1}


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
    x = run_x({**UNROLLED, "n_unroll": t, "lr_y": S}, budget=6000)
    assert x == pytest.approx((Y2 + c_t) / (1.0 + c_t), abs=1e-9)


def test_unrolled_preset_with_the_authors_momentum_has_the_same_t_1_limit():
    """One unrolled heavy-ball step from a detached buffer has the GD step's derivative,
    and at a fixed point the buffer is 0: the T = 1 limit is Prop. 3's (a cosine period
    far beyond the run keeps the step at S)."""
    x = run_x({"preset": "unrolled", "n_unroll": 1, "lr_y": S, "t_max": 10**9, "lr_x": 0.1}, 6000)
    assert x == pytest.approx((Y2 + S) / (1.0 + S), abs=1e-9)


def test_unrolled_bias_shrinks_as_t_grows():
    bgs = (1.0 + Y2) / 2.0
    bias = [abs(run_x({**UNROLLED, "n_unroll": t, "lr_y": S}, 6000) - bgs)
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
    hp = cls.Hyper(preset="custom", n_warm=0, n_unroll=2, correction=True, lr_y=S, lr_x=0.1,
                   solver="cg", n_solver=5)  # exact in one step: A has rank 1
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


def test_presets_set_the_authors_lower_optimizer():
    cls = get_algorithm("bgs_opt").Hyper
    assert cls(preset="game").lower_optimizer() == (0.9, True)
    assert cls(preset="unrolled").lower_optimizer() == (0.9, True)
    assert cls(preset="bgs", momentum=0.5, cosine=True).lower_optimizer() == (0.0, False)
    assert cls(preset="custom", momentum=0.5, cosine=True).lower_optimizer() == (0.5, True)
    assert cls().solver == "normal_gd" and cls().n_solver == 1


def _start(problem, hp, x0, y0):
    cls = get_algorithm("bgs_opt")
    alg = cls(batch_hyper([hp], torch.device("cpu")))
    oracle = Oracle(problem, BatchedRNG(torch.tensor([0]), 2))
    return alg, oracle, alg.init(problem, oracle, x0, y0, BatchedRNG(torch.tensor([0]), 3))


def test_cosine_schedule_of_the_lower_step():
    """beta_k = beta (1 + cos(pi k / T_max)) / 2: beta, beta/2 at T_max/2, 0 at T_max."""
    problem = get_problem("quadratic")()
    x0, y0 = torch.zeros(1, problem.dim_x), torch.zeros(1, problem.dim_y)
    hp = get_algorithm("bgs_opt").Hyper(preset="game", lr_y=0.8, t_max=10)
    alg, _, _ = _start(problem, hp, x0, y0)
    assert [alg.lower_lr(k) for k in (0, 5, 10)] == pytest.approx([0.8, 0.4, 0.0], abs=1e-15)


@pytest.mark.parametrize("n_solver", [1, 3])
def test_normal_gd_correction_costs_2n_hvps_and_one_cross(n_solver):
    """Per "bgs" step (M = 1, T = 0): 1 grad_y g, 1 grad_x f, 1 grad_y f, 2N HVPs (A xi,
    then A of the residual), 1 cross product: against 3 + 2N HVPs for "cg"; and xi is the
    authors' update xi <- xi - lr A (A xi + grad_y f), warm-started in xi."""
    problem = get_problem("quadratic")()
    x0 = torch.full((1, problem.dim_x), 0.3)
    y0 = torch.full((1, problem.dim_y), -0.2)
    steps = 4
    for solver, hvps in [("normal_gd", 2 * n_solver), ("cg", 3 + 2 * n_solver)]:
        hp = get_algorithm("bgs_opt").Hyper(solver=solver, n_solver=n_solver, lr_x=0.01)
        alg, oracle, state = _start(problem, hp, x0, y0)
        xi = torch.zeros_like(y0)
        for _ in range(steps):
            new = alg.step(state)
            if solver == "normal_gd":
                y = new.y  # the step's y_k, where A and grad_y f are taken
                for _ in range(n_solver):
                    r = problem.hvp_yy_g(state.x, y, xi) + problem.grad_y_f(state.x, y)
                    xi = xi - 0.9 * problem.hvp_yy_g(state.x, y, r)
                assert torch.allclose(new.z, xi, rtol=0, atol=1e-13)
            state = new
        counts = {k: int(v[0]) for k, v in oracle.counts.items()}
        assert counts == {"f": 0, "g": 0, "grad_x_f": steps, "grad_y_f": steps, "grad_x_g": 0,
                          "grad_y_g": steps, "hvp_yy_g": steps * hvps,
                          "cross_xy_g": steps}, solver  # fmt: skip


def test_heavy_ball_unrolled_derivative_matches_autograd():
    """The reverse pass through T = 4 heavy-ball steps (mu = 0.7, detached buffer b0)
    equals torch.autograd through the same forward map, in x and in y0."""
    from bibench.hypergrad import unrolled_hypergrad

    problem = get_problem("quadratic")()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, problem.dim_x, generator=gen)
    y0 = torch.randn(2, problem.dim_y, generator=gen)
    b0 = torch.randn(2, problem.dim_y, generator=gen)
    oracle = Oracle(problem, BatchedRNG(torch.tensor([0, 1]), 2))
    out = unrolled_hypergrad(oracle, x, y0, 0.3, 4, need_dy=True, momentum=0.7, buf0=b0)

    def loss(x_, y_):
        b = b0
        for _ in range(4):
            b = 0.7 * b + problem.grad_y_g(x_, y_)
            y_ = y_ - 0.3 * b
        return problem.f(x_, y_).sum()

    gx, gy = torch.autograd.grad(loss(x.requires_grad_(), y0.requires_grad_()), (x, y0))
    assert torch.allclose(out.d_x, gx, rtol=1e-10, atol=1e-12)
    assert torch.allclose(out.d_y, gy, rtol=1e-10, atol=1e-12)
