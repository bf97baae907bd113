"""P13 (cxz_hard): closed forms, the chain quadratic, and the zero-respecting argument."""

from __future__ import annotations

import math

import torch

from bibench import BatchedRNG, Oracle
from bibench.registry import get_problem
from bibench.testing import dense_hessians, fd_grad, ground_truth_errors, oracle_errors


def make(T: int = 3, K: int = 4):
    cls = get_problem("cxz_hard")
    return cls(cls.Params(T=T, K=K))


def test_ground_truth_and_oracles_match_autodiff_fd_and_pinv():
    problem = make()
    gen = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(6, 1, generator=gen)
    errs = ground_truth_errors(problem, x)
    assert max(errs.values()) < 1e-9, errs
    y = 0.3 * torch.randn(6, problem.dim_y, generator=gen)
    v = torch.randn(6, problem.dim_y, generator=gen)
    errs = oracle_errors(problem, x, y, v)
    assert max(errs.values()) < 1e-12, errs


def test_phi_is_half_x_plus_one_squared_through_an_independent_solve():
    problem = make(T=4, K=5)
    q = problem.q
    assert q == 40 and problem.dim_y == q and problem.dim_x == 1
    # y* from a dense solve of grad g = A y - beta/4 e1 = 0, not from the closed form
    hyy, hxy = dense_hessians(problem, torch.zeros(1, 1), torch.zeros(1, q))
    assert hxy.abs().max() == 0  # g does not depend on x
    rhs = problem.grad_y_g(torch.zeros(1, 1), torch.zeros(1, q))
    y_solve = -torch.linalg.solve(hyy[0], rhs[0])
    assert (y_solve - problem.y_star(torch.zeros(1, 1))[0]).abs().max() < 1e-14
    assert abs(problem.r(y_solve[None]).item() - 0.25) < 1e-14
    x = torch.tensor([[-2.5], [-1.0], [0.0], [0.7], [3.0]])
    phi_via_f = problem.f(x, y_solve.expand(5, q))
    assert (phi_via_f - 0.5 * (x[:, 0] + 1) ** 2).abs().max() < 1e-13
    x0 = torch.zeros(1, 1)
    assert abs(problem.hypergrad(x0).item() - 1.0) < 1e-15
    assert abs(fd_grad(lambda x_: problem.f(x_, y_solve[None]), x0).item() - 1.0) < 1e-10
    assert abs(problem.g(x0, y_solve[None]).item() + 1 / (8 * (q + 1))) < 1e-15


def test_unique_lower_minimiser_has_no_zero_coordinate_and_chain_spectrum():
    problem = make(T=5, K=5)
    q = problem.q
    hyy, _ = dense_hessians(problem, torch.zeros(1, 1), torch.zeros(1, q))
    eig = torch.linalg.eigvalsh(hyy[0])
    # A = 1/4 tridiag(-1, 2, -1): eigenvalues sin^2(k pi / (2 (q + 1))), k = 1..q
    k = torch.arange(1, q + 1, dtype=torch.float64)
    assert (eig - torch.sin(k * math.pi / (2 * (q + 1))) ** 2).abs().max() < 1e-14
    assert eig.min() > 0 and eig.max() <= 1.0  # strictly convex, 1-smooth
    y_star = problem.y_star(torch.zeros(1, 1))[0]
    assert y_star.abs().min() > 0.5 * problem.beta / (q + 1)  # smallest is beta / (q + 1)


def _gd_steps(problem, n_steps: int, lr: float = 1.0) -> tuple[torch.Tensor, Oracle]:
    oracle = Oracle(problem, BatchedRNG(torch.arange(2)))
    x = torch.zeros(2, 1)
    y = torch.zeros(2, problem.dim_y)
    for _ in range(n_steps):
        y = y - lr * oracle.grad_y_g(x, y)
    return y, oracle


def test_zero_respecting_chain_keeps_the_tail_zero_for_q_over_2_queries():
    problem = make(T=3, K=4)
    half = problem.q // 2
    x = torch.zeros(2, 1)
    for t in (1, half - 1, half):
        y, oracle = _gd_steps(problem, t)
        assert int(oracle.counts["grad_y_g"][0]) == t
        assert (y[:, half:] == 0).all()  # exactly zero, not merely small
        assert (problem.metrics(x, y)["active_depth"] == t).all()  # one coordinate per query
        assert (problem.grad_x_f(x, y) == 0).all()
        assert (problem.grad_y_f(x, y) == 0).all()
        # ... while the true hypergradient is 1 at x = 0
        assert (problem.hypergrad(x) == 1).all()
    # the bound is tight: one more query reaches the first tail coordinate
    y, _ = _gd_steps(problem, half + 1)
    assert (y[:, half] != 0).all() and (problem.grad_x_f(x, y) != 0).all()


def test_psi_is_flat_at_zero_with_bounded_slope():
    problem = make(T=2, K=2)
    t = torch.linspace(-50, 50, 20001)[:, None]
    slope = problem._dpsi(t)
    assert problem._psi(torch.zeros(1)).item() == 0 and problem._dpsi(torch.zeros(1)).item() == 0
    assert slope.abs().max() < problem.psi_slope
    assert slope.abs().max() > 0.99 * problem.psi_slope  # the bound is the asymptotic slope
