"""ITD: the reverse pass is the exact derivative of the unrolled map, and its limit on the
quadratic has a closed form.

Unrolled map: y_{t+1} = y_t − s ∇y g(x, y_t), L_T(x, y0) = f(x, y_T); ∂x L_T and ∂y0 L_T
are checked against torch.func autodiff through T explicit steps (no oracle).

Quadratic (g = ½yᵀAy + yᵀBx + aᵀy): warm-started ITD is at a fixed point when y = y*(x)
(GD keeps it) and ∂x L_T = ∇x f − Bᵀ A⁻¹ (I − (I − sA)^T) ∇y f = 0 at (x, y*(x)), an
affine equation in x; there ∇Φ = ∇x f − Bᵀ A⁻¹ ∇y f = −Bᵀ A⁻¹ (I − sA)^T ∇y f.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import grad

from bibench.algorithm import batch_hyper
from bibench.hypergrad import unrolled_hypergrad
from bibench.oracle import Oracle
from bibench.problem import Problem
from bibench.registry import get_algorithm, get_problem
from bibench.rng import BatchedRNG

SEEDS = torch.tensor([0, 1, 2])


def autodiff_unrolled(problem, x, y0, lr, t):
    """(∂x L_T, ∂y0 L_T) by autodiff through T explicit GD steps on the autodiff ∇y g."""

    def loss(x_, y_):
        for _ in range(t):
            y_ = y_ - lr * Problem.grad_y_g(problem, x_, y_)
        return problem.f(x_, y_).sum()

    return grad(loss, argnums=(0, 1))(x, y0)


@pytest.mark.parametrize("name, params, lr", [
    ("hat", {"dim_x": 3, "dim_y": 4, "k": 2}, 0.1),
    ("unibio_synthetic", {"p": 4}, 0.3),
    ("quadratic", {}, 0.5),
])  # fmt: skip
def test_reverse_pass_is_the_exact_derivative_of_the_unrolled_map(name, params, lr):
    problem = get_problem(name)(get_problem(name).Params(**params))
    rng = BatchedRNG(SEEDS, 1)
    x, y0 = problem.init_x(rng), problem.init_y(rng)
    y0 = 0.5 * y0 + 0.3  # off the solution set, away from critical points
    oracle = Oracle(problem, BatchedRNG(SEEDS, 2))
    out = unrolled_hypergrad(oracle, x, y0, lr, 6, need_dy=True)
    dx, dy = autodiff_unrolled(problem, x, y0, lr, 6)
    assert torch.allclose(out.d_x, dx, rtol=0, atol=1e-10)
    assert torch.allclose(out.d_y, dy, rtol=0, atol=1e-10)
    # counted: 6 gradients, 6 cross products, 6 HVPs, one of each f gradient
    counts = {k: int(v[0]) for k, v in oracle.counts.items()}
    assert counts["grad_y_g"] == counts["cross_xy_g"] == counts["hvp_yy_g"] == 6
    assert counts["grad_x_f"] == counts["grad_y_f"] == 1


def test_one_itd_step_is_a_gradient_step_on_the_unrolled_map():
    problem = get_problem("hat")(get_problem("hat").Params(dim_x=3, dim_y=4, k=2))
    rng = BatchedRNG(SEEDS, 1)
    x0, y0 = problem.init_x(rng), 0.5 * problem.init_y(rng)
    cls = get_algorithm("itd")
    alg = cls(batch_hyper([cls.Hyper(lr_x=0.2, lr_y=0.1, n_unroll=5)], torch.device("cpu")))
    oracle = Oracle(problem, BatchedRNG(SEEDS, 2))
    state = alg.step(alg.init(problem, oracle, x0, y0, BatchedRNG(SEEDS, 3)))
    dx, _ = autodiff_unrolled(problem, x0, y0, 0.1, 5)
    assert torch.allclose(state.x, x0 - 0.2 * dx, rtol=0, atol=1e-12)
    assert int(oracle.counts["hvp_yy_g"][0]) == 4  # the last adjoint a_0 is not needed


def itd_limit(problem, lr_y: float, t: int) -> torch.Tensor:
    """Root of x ↦ ∂x L_T(x, y*(x)) on the quadratic (affine in x), solved exactly."""
    a, b = problem.A, problem.B
    m = torch.eye(problem.dim_y, dtype=torch.float64) - lr_y * a
    eye_y = torch.eye(problem.dim_y, dtype=torch.float64)
    k = b.T @ torch.linalg.solve(a, eye_y - torch.matrix_power(m, t))

    def direction(x):
        y = problem.y_star(x)
        return Problem.grad_x_f(problem, x, y) - Problem.grad_y_f(problem, x, y) @ k.T

    zero = torch.zeros(1, problem.dim_x, dtype=torch.float64)
    eye = torch.eye(problem.dim_x, dtype=torch.float64)
    d0 = direction(zero)
    jac = direction(eye) - d0  # row i = image of e_i
    return -torch.linalg.solve(jac.T, d0[0])


@pytest.mark.parametrize("t", [3, 10])
def test_warm_itd_converges_to_its_closed_form_limit_on_the_quadratic(t):
    problem = get_problem("quadratic")()
    rng = BatchedRNG(SEEDS[:2], 1)
    x0, y0 = problem.init_x(rng), problem.init_y(rng)
    cls = get_algorithm("itd")
    alg = cls(batch_hyper([cls.Hyper(n_unroll=t)], torch.device("cpu")))
    oracle = Oracle(problem, BatchedRNG(SEEDS[:2], 2))
    state = alg.init(problem, oracle, x0, y0, BatchedRNG(SEEDS[:2], 3))
    for _ in range(600):
        state = alg.step(state)
    x_t = itd_limit(problem, 1.0, t)
    assert torch.allclose(state.x, x_t.expand_as(state.x), rtol=0, atol=1e-9)
    # there ∇Φ is minus the truncated tail of the Neumann series
    a, m = problem.A, torch.eye(problem.dim_y, dtype=torch.float64) - problem.A
    tail = problem.B.T @ torch.linalg.solve(a, torch.matrix_power(m, t))
    gy = Problem.grad_y_f(problem, x_t[None], problem.y_star(x_t[None]))
    assert torch.allclose(problem.hypergrad(x_t[None]), -gy @ tail.T, rtol=0, atol=1e-10)


def test_itd_bias_vanishes_as_t_grows():
    problem = get_problem("quadratic")()
    norms = [problem.hypergrad(itd_limit(problem, 1.0, t)[None]).norm().item()
             for t in (10, 50, 200)]  # fmt: skip
    assert norms[0] > 10 * norms[1] > 100 * norms[2]
    assert norms[2] < 1e-6
