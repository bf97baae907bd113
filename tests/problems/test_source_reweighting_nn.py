"""Source reweighting with a softmax model: analytic oracles vs autodiff, the Newton
reference (residual below ref_tol), its hypergradient vs FD and the pinv formula, S(x)."""

from __future__ import annotations

import pytest
import torch

from bibench.registry import get_problem
from bibench.testing import fd_grad, ground_truth_errors, oracle_errors, pinv_hypergrad

SMALL = {"n_per_source": 30, "n_val": 80, "n_test": 300}
REF_TOL = 1e-10  # the reference's stated tolerance (the default ref_tol)


def _problem(**kw):
    cls = get_problem("source_reweighting_nn")
    return cls(cls.Params(**(SMALL | kw)))


def test_analytic_oracles_match_autodiff_on_full_sums_and_minibatches():
    problem = _problem()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, generator=gen)
    y = 0.3 * torch.randn(2, problem.dim_y, generator=gen)
    v = torch.randn(2, problem.dim_y, generator=gen)
    assert max(oracle_errors(problem, x, y, v).values()) < 1e-12
    batch = torch.randint(0, 80, (2, 7), generator=gen)
    assert max(oracle_errors(problem, x, y, v, batch=batch).values()) < 1e-12


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_residual_below_tolerance_and_hypergrad_matches_fd_and_pinv(seed):
    problem = _problem(seed=seed)
    assert problem.params.ref_tol == REF_TOL
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(seed))
    assert problem.reference_residual(x).max() <= REF_TOL
    errs = ground_truth_errors(problem, x, n_samples=8)
    # Phi is a solve, not a closed form: autodiff through it is not a check (skipped);
    # FD of the tight solve agrees to the solve's accuracy
    assert errs["hypergrad_vs_fd"] < 1e-8, errs
    assert errs["hypergrad_vs_pinv"] < 1e-10, errs
    assert errs["grad_g_at_y_star"] < 1e-9 and errs["samples_in_S"] < 1e-12, errs
    assert errs["selection"] == 0.0, errs  # y* beats every sampled point of S(x) on f


def test_solution_set_is_flat_in_the_cropped_rows_and_selection_changes_f():
    problem = _problem(seed=2)
    x = torch.zeros(1, 5)
    ys = problem.y_star(x)
    hid = 1 - problem.observed
    assert int(hid.sum()) == 12 * 10
    # g is flat along the cropped rows; f is not (the target sees them)
    shift = hid * torch.randn(1, problem.dim_y, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(problem.g(x, ys + shift), problem.g(x, ys), atol=1e-14)
    assert problem.f(x, ys + shift) > problem.f(x, ys) + 1e-3
    assert problem.dist_to_solution_set(x, ys + shift).item() < 1e-14
    # the lower Hessian is singular exactly there: pinv formula at y* = reference hypergrad
    assert torch.allclose(pinv_hypergrad(problem, x, ys), problem.hypergrad(x), atol=1e-10)


def test_fd_of_phi_is_the_hypergradient_with_a_coarse_step_too():
    problem = _problem(seed=3)
    x = 0.5 * torch.ones(1, 5)
    assert torch.allclose(fd_grad(problem.phi, x, 1e-2), problem.hypergrad(x), atol=1e-7)


def test_baselines_the_oracle_mixture_beats_uniform_and_single_sources_are_stationary():
    problem = _problem(seed=4)
    base = problem.baselines()
    zero = torch.zeros(1, 5)
    assert problem.phi_star <= problem.phi(zero).item() + 1e-12
    assert problem.oracle_residual < 1e-5
    k = problem.names.index(problem.best_single)
    coef = 5.0 * (problem.source == k).double()[None]
    grad = problem._grad_y_g(coef, base["single"])
    assert grad[:, problem.observed.bool()].norm() <= REF_TOL
