r"""SOBA on the quadratic (g = ½yᵀAy + yᵀBx + aᵀy): the first step in closed form, and the
joint iteration converging to (x*, y*(x*), A⁻¹∇y f), with exact oracles.

From z₀ = 0 the first step is y₁ = y₀ − ρ∇y g(x₀, y₀), z₁ = ρ∇y f(x₀, y₀),
x₁ = x₀ − γ∇x f(x₀, y₀). At the fixed point ∇y g = 0 (y = y*(x)), Az = ∇y f (z is the
adjoint A⁻¹∇y f) and ∇x f − Bᵀz = ∇Φ(x) = 0.
"""

from __future__ import annotations

import torch

from bibench.algorithm import batch_hyper
from bibench.oracle import Oracle
from bibench.registry import discover, get_algorithm, get_problem
from bibench.rng import BatchedRNG

discover()
SEEDS = torch.tensor([0, 1])


def start(name, **hyper):
    problem = get_problem("quadratic")()
    cls = get_algorithm(name)
    alg = cls(batch_hyper([cls.Hyper(**hyper)] * len(SEEDS), torch.device("cpu")))
    init = BatchedRNG(SEEDS, 1)
    oracle = Oracle(problem, BatchedRNG(SEEDS, 2))
    state = alg.init(problem, oracle, problem.init_x(init), problem.init_y(init), None)
    return problem, alg, oracle, state


def test_first_step_from_zero_adjoint_in_closed_form():
    problem, alg, oracle, s0 = start("soba", lr_x=0.02, lr_y=0.7)
    s1 = alg.step(s0)
    x0, y0 = s0.x, s0.y
    assert torch.allclose(s1.y, y0 - 0.7 * problem.grad_y_g(x0, y0), rtol=0, atol=1e-14)
    assert torch.allclose(s1.z, 0.7 * problem.grad_y_f(x0, y0), rtol=0, atol=1e-14)
    assert torch.allclose(s1.x, x0 - 0.02 * problem.grad_x_f(x0, y0), rtol=0, atol=1e-14)
    assert all((oracle.counts[t] == 1).all() for t in
               ("grad_y_g", "hvp_yy_g", "cross_xy_g", "grad_x_f", "grad_y_f"))  # fmt: skip


def test_defaults_converge_and_z_tracks_the_adjoint():
    problem, alg, _, state = start("soba")
    for _ in range(1500):
        state = alg.step(state)
    x, y, z = state.x, state.y, state.z
    adjoint = torch.linalg.solve(problem.A, problem.grad_y_f(x, y).T).T
    assert torch.linalg.vector_norm(problem.hypergrad(x), dim=-1).max() < 1e-9
    assert torch.linalg.vector_norm(y - problem.y_star(x), dim=-1).max() < 1e-9
    assert torch.linalg.vector_norm(z - adjoint, dim=-1).max() < 1e-9
