"""P8 (bgs_quadratic): the degenerate quadratic, its flow selection and what phi reports."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad

from bibench.registry import get_problem
from bibench.testing import (
    dense_hessians,
    fd_grad,
    ground_truth_errors,
    oracle_errors,
    pinv_hypergrad,
)

SMALL = {"dim_x": 6, "dim_y": 5, "ker_dim": 2}


def make(**params):
    cls = get_problem("bgs_quadratic")
    return cls(cls.Params(**{**SMALL, **params}))


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_ground_truth_when_c_is_in_the_range_of_a():
    """P_ker c = 0: f is constant on S(x), the optimistic Phi is finite and is phi."""
    for seed in range(3):
        problem = make(seed=seed, c_in_range=True)
        x = rand(4, 6, seed=seed)
        errs = ground_truth_errors(problem, x)
        assert max(errs.values()) < 1e-9, errs
        y, v = rand(4, 5, seed=10 + seed), rand(4, 5, seed=20 + seed)
        assert max(oracle_errors(problem, x, y, v).values()) < 1e-13


def test_optimistic_phi_is_unbounded_and_phi_reports_the_flow_selection_objective():
    problem = make()
    x = rand(4, 6, seed=1)
    ker_c = problem.ker @ (problem.ker.T @ problem.c)
    assert ker_c.norm() > 0.1
    ys = problem.y_star(x)
    # along -P_ker c inside S(x), f falls linearly without bound: Phi = -inf
    for t in (1.0, 1e3, 1e6):
        y = ys - t * ker_c
        assert (problem.g(x, y) - problem.g_star(x)).abs().max() < 1e-9 * t
        drop = problem.f(x, ys) - problem.f(x, y)
        assert (drop - t * ker_c.norm() ** 2).abs().max() < 1e-12 * max(t, 1.0)
    # phi = L_phi(x, 0) = f at the flow selection from y0 = 0, = 1/2 (x - x*)'H(x - x*)
    assert (
        problem.phi(x) - problem.f(x, problem.flow_selection(x, torch.zeros(4, 5)))
    ).abs().max() < 1e-13
    assert abs(problem.phi(problem.x_star[None]).item()) < 1e-13
    assert problem.hypergrad(problem.x_star[None]).abs().max() < 1e-13
    # hypergrad against autodiff, finite differences and the pinv formula at any y in S(x)
    hg = problem.hypergrad(x)
    assert (grad(lambda x_: problem.phi(x_).sum())(x) - hg).abs().max() < 1e-13
    assert (fd_grad(problem.phi, x) - hg).abs().max() < 1e-9
    y_in_s = ys + ((rand(4, 2, seed=3)) @ problem.ker.T)
    assert (pinv_hypergrad(problem, x, y_in_s) - hg).abs().max() < 1e-10


def _gradient_descent(problem, x, y0, n: int = 600):
    """GD on g with step 1 (= 1/L), independent of the closed-form selection."""
    y = y0.clone()
    for _ in range(n):
        y = y - problem.grad_y_g(x, y)
    return y


@pytest.mark.parametrize("c_in_range", [False, True])
def test_flow_selection_and_selection_map_gradient(c_in_range):
    problem = make(c_in_range=c_in_range)
    x, y0 = rand(3, 6, seed=4), rand(3, 5, seed=5)
    sel = problem.flow_selection(x, y0)
    assert (_gradient_descent(problem, x, y0) - sel).abs().max() < 1e-12
    assert (problem.dist_to_solution_set(x, sel)).abs().max() < 1e-14
    assert (
        problem.metrics(x, sel)["ker_norm"] - problem.metrics(x, y0)["ker_norm"]
    ).abs().max() < 1e-14
    l_phi = lambda x_: problem.f(x_, problem.flow_selection(x_, y0))  # noqa: E731
    smg = problem.selection_map_grad(x, y0)
    assert (grad(lambda x_: l_phi(x_).sum())(x) - smg).abs().max() < 1e-13
    assert (fd_grad(l_phi, x) - smg).abs().max() < 1e-9


def test_structure_range_condition_spectrum_and_zero_lower_value():
    problem = make(dim_x=8, dim_y=7, ker_dim=3, cond=20.0, cond_f=5.0)
    x, y = rand(2, 8, seed=6), rand(2, 7, seed=7)
    hyy, hxy = dense_hessians(problem, x, y)
    eig = torch.linalg.eigvalsh(hyy[0])
    assert eig[:3].abs().max() < 1e-14
    assert abs(eig[3].item() - 1 / 20) < 1e-13 and abs(eig[-1].item() - 1) < 1e-13
    # Prop. 6 range condition: columns of d2g/dydx lie in range(A)
    assert (hxy[0] @ problem.ker).abs().max() < 1e-14
    h_eig = torch.linalg.eigvalsh(problem.H)
    assert abs(h_eig[0].item() - 1 / 5) < 1e-13 and abs(h_eig[-1].item() - 1) < 1e-13
    # the joint Hessian [[A, B], [B', Q]] is PSD, so g >= 0 = g(x, y*)
    joint = torch.cat(
        [torch.cat([problem.A, problem.B], 1), torch.cat([problem.B.T, problem.Q], 1)]
    )
    assert torch.linalg.eigvalsh(joint).min() > -1e-13
    assert problem.g(x, problem.y_star(x)).abs().max() < 1e-14
