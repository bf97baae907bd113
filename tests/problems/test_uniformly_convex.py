"""Uniformly convex problems (P11a-d): closed forms against autodiff, finite differences,
the pseudoinverse or generalized-Hessian formula; the negative control; the reference solve."""

from __future__ import annotations

import itertools

import pytest
import torch

from bibench.problem import Problem
from bibench.registry import get_problem
from bibench.testing import (
    dense_hessians,
    fd_grad,
    ground_truth_errors,
    oracle_errors,
    pinv_hypergrad,
)


def make(name: str, **params):
    cls = get_problem(name)
    return cls(cls.Params(**params))


def rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- P11a unibio_synthetic -----------------------------------------------------------


@pytest.mark.parametrize("p", [2, 3, 4, 6, 8])
def test_unibio_synthetic_ground_truth_and_oracles(p):
    problem = make("unibio_synthetic", p=p)
    x = rand(8, 1, seed=p, scale=3.0)
    errs = ground_truth_errors(problem, x)
    assert max(errs.values()) < 1e-9, errs
    # Phi = sin(sin x) for every p, from f at the closed-form y*
    assert (problem.f(x, problem.y_star(x)) - torch.sin(torch.sin(x[:, 0]))).abs().max() < 1e-15
    # oracles at points inside and outside the clipping threshold (pi/2)^(1/(p-1))
    y, v = rand(8, 1, seed=10 + p, scale=1.5), rand(8, 1, seed=20 + p)
    assert max(oracle_errors(problem, x, y, v).values()) < 1e-13


@pytest.mark.parametrize("p", [4, 6, 8])
def test_unibio_synthetic_degenerate_points_need_the_generalized_hessian(p):
    """At x = k pi, y* = 0 and H = (p-1)|y*|^(p-2) = 0: the pinv formula returns 0 although
    Phi'(k pi) = cos(k pi) = +-1. The generalized Hessian (UniBiO: precondition by
    D = (p-1)|y|^(p-2), so H D^-1 = 1) has a limit as y -> y*, and it is Phi'.
    (x = 0 is the one k pi where sin x is exactly 0 in floating point.)"""
    problem = make("unibio_synthetic", p=p)
    x = torch.zeros(1, 1)
    ys = problem.y_star(x)
    assert (ys == 0).all() and (dense_hessians(problem, x, ys)[0] == 0).all()
    expected = torch.ones(1, 1)
    assert (problem.hypergrad(x) - expected).abs().max() == 0
    assert pinv_hypergrad(problem, x, ys).abs().max() == 0
    for delta in (1e-2, -1e-3):
        y = ys + delta
        hyy, hxy = dense_hessians(problem, x, y)
        d = (problem.p - 1) * y.abs() ** (problem.p - 2)
        assert (hyy[:, :, 0] / d - 1).abs().max() < 1e-13  # H D^-1 = 1
        gy = Problem.grad_y_f(problem, x, y)
        # grad_y f / D = cos(y^(p-1)) stays finite as y -> y* = 0
        gen = Problem.grad_x_f(problem, x, y) - hxy[:, :, 0] * (gy / d) / (hyy[:, :, 0] / d)
        # = cos x cos(y^(p-1)), within 1 - cos(delta^(p-1)) of Phi'
        assert (gen - expected).abs().max() < 1e-12


# -- P11b pp_separable ---------------------------------------------------------------


@pytest.mark.parametrize("p", [2, 3, 4, 6])
def test_pp_separable_ground_truth_and_the_generalized_hessian(p):
    problem = make("pp_separable", p=p, seed=p)
    x = rand(5, problem.dim_x, seed=p)
    errs = ground_truth_errors(problem, x)
    pinv_err = errs.pop("hypergrad_vs_pinv")
    assert max(errs.values()) < 1e-9, errs
    y, v = rand(5, problem.dim_y, seed=1), rand(5, problem.dim_y, seed=2)
    assert max(oracle_errors(problem, x, y, v).values()) < 1e-13
    ys = problem.y_star(x)
    hg = problem.hypergrad(x)
    if p == 2:  # strongly convex: the classical formula
        assert pinv_err < 1e-12
        return
    # p > 2: the Hessian vanishes at y*, the pinv formula returns grad_x f = 0
    hyy, hxy = dense_hessians(problem, x, ys)
    assert hyy.abs().max() == 0 and hxy.abs().max() == 0
    assert pinv_hypergrad(problem, x, ys).abs().max() == 0 and hg.abs().max() > 0.1
    # generalized Hessian at y* + delta: H D^-1 = I, Hxy D^-1 = -J_b', with grad f at y*
    hyy, hxy = dense_hessians(problem, x, ys + 1e-3 * torch.sign(v))
    d = torch.diagonal(hyy, dim1=1, dim2=2)
    eye = torch.eye(problem.dim_y).expand_as(hyy)
    assert (hyy / d[:, None, :] - eye).abs().max() < 1e-12
    gy = problem.grad_y_f(x, ys)
    gen = problem.grad_x_f(x, ys) - ((hxy / d[:, None, :]) @ gy[..., None])[..., 0]
    assert (gen - hg).abs().max() < 1e-12


# -- P11c lp_linear ------------------------------------------------------------------


@pytest.mark.parametrize("p", [2, 3, 4, 6])
@pytest.mark.parametrize("negative_control", [False, True])
def test_lp_linear_ground_truth(p, negative_control):
    problem = make("lp_linear", p=p, negative_control=negative_control, seed=p)
    x = rand(5, problem.dim_x, seed=p)
    errs = ground_truth_errors(problem, x)
    assert max(errs.values()) < 1e-8, errs
    y, v = rand(5, problem.dim_y, seed=1), rand(5, problem.dim_y, seed=2)
    assert max(oracle_errors(problem, x, y, v).values()) < 1e-13
    x_true = problem.x_true[None]
    assert problem.phi(x_true).item() < 1e-30 and problem.hypergrad(x_true).abs().max() < 1e-15


def _x_with_b_i(problem, i: int, eps: float) -> torch.Tensor:
    """A point x on the ray along w_i where b_i(x) = sin(w_i'x) + b0_i = eps."""
    w_i = problem.W[i]
    return (torch.asin(eps - problem.b0[i]) / (w_i @ w_i) * w_i)[None]


@pytest.mark.parametrize("p", [3, 4, 6])
def test_lp_linear_negative_control_hypergradient_blows_up_with_the_predicted_power(p):
    """|grad Phi| ~ C |b_i|^(-(p-2)/(p-1)) as b_i(x) -> 0 (p = 4: exponent -2/3), while the
    smooth f keeps it bounded at the same points."""
    control = make("lp_linear", p=p, negative_control=True)
    smooth = make("lp_linear", p=p)
    i = int(control.b0.abs().argmin())
    assert control.b0[i].abs() < 0.9 and control.target[i].abs() > 0.1
    eps = torch.tensor([1e-8, 1e-10, 1e-12])
    norms = torch.stack([control.hypergrad(_x_with_b_i(control, i, e.item())).norm() for e in eps])
    assert abs(control._b(_x_with_b_i(control, i, 1e-12))[0, i].item() - 1e-12) < 1e-15
    slopes = torch.diff(norms.log()) / torch.diff(eps.log())
    predicted = -(p - 2) / (p - 1)
    # the next-order term is relatively O(b_i^(1/(p-1))): the slope converges as b_i -> 0
    assert (slopes - predicted).abs().max() < 2e-2 and abs(slopes[-1] - predicted) < 5e-3, slopes
    assert norms[-1] > 1e3
    bounded = [smooth.hypergrad(_x_with_b_i(smooth, i, e.item())).norm() for e in eps]
    assert max(bounded) < 10.0


def test_lp_linear_smooth_f_generalized_hessian_where_b_vanishes():
    """At b_i(x) = 0 the Hessian (p-1)|y*|^(p-2) has a zero; preconditioning by D = H
    (UniBiO) still gives grad Phi = J_b'(b - t)."""
    problem = make("lp_linear", p=4)
    i = int(problem.b0.abs().argmin())
    x = _x_with_b_i(problem, i, 0.0)
    ys = problem.y_star(x)
    assert ys[0, i].abs() < 1e-5  # (1e-16)^(1/3): b_i is zero up to rounding
    y = ys.clone()
    y[0, i] = 1e-3
    hyy, hxy = dense_hessians(problem, x, y)
    d = torch.diagonal(hyy, dim1=1, dim2=2)
    gy_over_d = problem.grad_y_f(x, y) / d  # = y^[p-1] - t, finite
    gen = -(
        (hxy @ torch.diag_embed(1 / d))
        @ (hyy / d[:, None, :]).inverse()
        @ (d * gy_over_d)[..., None]
    )
    gen = gen[..., 0]
    # y differs from y* only in coordinate i, by 1e-3: error (1e-3)^3 in y^[3]
    assert (gen - problem.hypergrad(x)).abs().max() < 1e-8


# -- P11d pnorm_regression -----------------------------------------------------------

PNORM_SMALL = {"dim_x": 3, "dim_y": 4, "n_samples": 12}


@pytest.mark.parametrize("p", [2, 3, 4, 6])
def test_pnorm_regression_reference_solve_and_hypergradient(p):
    problem = make("pnorm_regression", p=p, seed=p, **PNORM_SMALL)
    x = rand(6, problem.dim_x, seed=p)
    ys = problem.solve(x)
    assert problem.grad_y_g(x, ys).norm(dim=-1).max() <= 1e-12
    # uniformly convex: g at y* is below g at perturbed points
    pert = ys + 1e-3 * rand(6, problem.dim_y, seed=7)
    assert (problem.g(x, pert) > problem.g(x, ys)).all()
    errs = ground_truth_errors(problem, x)
    if p % 2:
        # |r|^(p-2) has a kink at r = 0, so y* is only C^1 there: finite differences need
        # residuals farther than the step from zero; checked separately below
        errs.pop("hypergrad_vs_fd")
    assert max(errs.values()) < 1e-9, errs
    y, v = rand(6, problem.dim_y, seed=1), rand(6, problem.dim_y, seed=2)
    scale = problem.grad_y_g(x, y).abs().max()
    assert max(oracle_errors(problem, x, y, v).values()) < 1e-13 * max(scale.item(), 1.0)
    batch = torch.randint(0, problem.n_samples_g, (6, 5))
    assert max(oracle_errors(problem, x, y, v, batch=batch).values()) < 1e-13 * max(scale, 1.0)
    x_true = problem.x_true[None]
    assert problem.phi(x_true).item() < 1e-28 and problem.hypergrad(x_true).abs().max() < 1e-13


def test_pnorm_regression_p3_finite_differences_away_from_zero_residuals():
    problem = make("pnorm_regression", p=3, **PNORM_SMALL)
    x = rand(20, problem.dim_x, seed=11)
    res, _, _ = problem._resid(x, problem.solve(x))
    keep = res.abs().min(-1).values > 0.02
    assert keep.sum() >= 5
    x = x[keep]
    err = (fd_grad(problem.phi, x, 1e-4) - problem.hypergrad(x)).abs().max()
    assert err < 1e-9


# -- P11e lp_degenerate --------------------------------------------------------------


@pytest.mark.parametrize("p", [2, 3, 4, 6, 8])
def test_lp_degenerate_ground_truth_and_oracles(p):
    problem = make("lp_degenerate", p=p, seed=p)
    x = rand(6, problem.dim_x, seed=p)
    errs = ground_truth_errors(problem, x)
    assert max(errs.values()) < 1e-8, errs
    y, v = rand(6, problem.dim_y, seed=1), rand(6, problem.dim_y, seed=2)
    assert max(oracle_errors(problem, x, y, v).values()) < 1e-12
    # the solution: b(x*) = 0, y*(x*) = 0, Phi* = 0, grad Phi = 0
    xs = problem.x_true[None]
    assert problem.y_star(xs).abs().max() < 1e-15 and problem.phi(xs).item() < 1e-30
    assert problem.hypergrad(xs).abs().max() < 1e-15
    # the lower Hessian at y* + delta vanishes at order p - 2 at the solution
    for delta in (1e-1, 1e-2):
        hyy, _ = dense_hessians(problem, xs, torch.full((1, problem.dim_y), delta))
        assert (hyy[0] - (p - 1) * delta ** (p - 2) * torch.eye(problem.dim_y)).abs().max() < 1e-13


def test_lp_degenerate_inner_solves_get_harder_with_p():
    """Gradient descent on g (step 0.5) from y0 = 1 at a point x near x* (|b| <= 0.03):
    the steps to |grad_y g| <= 1e-6 grow strictly with p."""
    steps = []
    for p in (2, 4, 6, 8):
        problem = make("lp_degenerate", p=p)
        x = problem.x_true[None] + 0.01
        y, k = torch.ones(1, problem.dim_y), 0
        while problem.grad_y_g(x, y).norm() > 1e-6 and k < 200_000:
            y, k = y - 0.5 * problem.grad_y_g(x, y), k + 1
        steps.append(k)
    assert all(a < b for a, b in itertools.pairwise(steps)), steps
    assert steps[-1] < 200_000, steps
