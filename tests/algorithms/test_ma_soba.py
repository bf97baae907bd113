r"""MA-SOBA on the quadratic (g = ½yᵀAy + yᵀBx + aᵀy), exact oracles.

From z₀ = 0, h₀ = 0 (Chen, Xiao, Balasubramanian 2023, x steps along the previous average):
x₁ = x₀, y₁ = y₀ − β∇y g(x₀, y₀), z₁ = γ∇y f(x₀, y₀), h₁ = θ∇x f(x₀, y₀); then
y₂ = y₁ − β∇y g(x₁, y₁) exactly, with no ∇y f leaking into the lower step (the authors'
copy adds the previous ∇y f). With a radius ρ, ‖z‖ ≤ ρ after every step. At the limit
y = y*(x), z = A⁻¹∇y f and ∇Φ(x) = 0.
"""

from __future__ import annotations

import torch

from bibench.algorithm import batch_hyper
from bibench.oracle import Oracle
from bibench.registry import discover, get_algorithm, get_problem
from bibench.rng import BatchedRNG

discover()
SEEDS = torch.tensor([0, 1])


def start(**hyper):
    problem = get_problem("quadratic")()
    cls = get_algorithm("ma_soba")
    alg = cls(batch_hyper([cls.Hyper(**hyper)] * len(SEEDS), torch.device("cpu")))
    init = BatchedRNG(SEEDS, 1)
    oracle = Oracle(problem, BatchedRNG(SEEDS, 2))
    state = alg.init(problem, oracle, problem.init_x(init), problem.init_y(init), None)
    return problem, alg, state


def test_first_two_steps_in_closed_form():
    beta, gamma, theta = 0.8, 0.6, 0.3
    problem, alg, s0 = start(lr_y=beta, lr_z=gamma, theta=theta)
    assert (s0.z == 0).all() and (s0.h == 0).all()
    s1 = alg.step(s0)
    x0, y0 = s0.x, s0.y
    assert torch.equal(s1.x, x0)
    assert torch.allclose(s1.y, y0 - beta * problem.grad_y_g(x0, y0), rtol=0, atol=1e-14)
    assert torch.allclose(s1.z, gamma * problem.grad_y_f(x0, y0), rtol=0, atol=1e-14)
    assert torch.allclose(s1.h, theta * problem.grad_x_f(x0, y0), rtol=0, atol=1e-14)
    s2 = alg.step(s1)
    assert torch.allclose(s2.y, s1.y - beta * problem.grad_y_g(s1.x, s1.y), rtol=0, atol=1e-14)
    assert torch.allclose(s2.x, x0 - 0.01 * s1.h, rtol=0, atol=1e-14)


def test_the_adjoint_stays_in_its_ball():
    _, alg, state = start(radius_z=0.5)
    for _ in range(20):
        state = alg.step(state)
        assert (torch.linalg.vector_norm(state.z, dim=-1) <= 0.5 + 1e-12).all()
    assert torch.allclose(torch.linalg.vector_norm(state.z, dim=-1), torch.tensor(0.5))


def test_defaults_converge_and_z_tracks_the_adjoint():
    problem, alg, state = start()
    for _ in range(2000):
        state = alg.step(state)
    x, y, z = state.x, state.y, state.z
    adjoint = torch.linalg.solve(problem.A, problem.grad_y_f(x, y).T).T
    assert torch.linalg.vector_norm(problem.hypergrad(x), dim=-1).max() < 1e-9
    assert torch.linalg.vector_norm(y - problem.y_star(x), dim=-1).max() < 1e-9
    assert torch.linalg.vector_norm(z - adjoint, dim=-1).max() < 1e-9
