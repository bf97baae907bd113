"""P12: exact Φ, ∇Φ, y*, S(x) of least-squares cleaning against autodiff, FD and pinv."""

from __future__ import annotations

import pytest
import torch

from bibench.registry import get_problem
from bibench.testing import ground_truth_errors, oracle_errors


def _problem(**kw):
    cls = get_problem("lstsq_cleaning")
    return cls(cls.Params(**kw))


@pytest.mark.parametrize("seed", [0, 1])
def test_ground_truth_matches_autodiff_fd_and_pinv_to_1e_8(seed):
    problem = _problem(seed=seed, n_train=20, n_val=12, dim=6, rank=4)
    x = torch.randn(3, problem.dim_x, generator=torch.Generator().manual_seed(seed))
    errs = ground_truth_errors(problem, x)
    assert max(errs.values()) < 1e-8, errs


def test_features_are_rank_deficient_with_more_rows_than_columns_and_phi_moves():
    problem = _problem()
    assert problem.A.shape == (40, 8) and torch.linalg.matrix_rank(problem.A).item() == 5
    # the kernel basis spans ker A, and the validation features see it
    assert (problem.A @ problem.N).abs().max() < 1e-12
    assert torch.linalg.matrix_rank(problem.A_val @ problem.N).item() == 3
    # Phi depends on x (not the degenerate n < d case, where S(x) does not move)
    x = torch.randn(4, problem.dim_x, generator=torch.Generator().manual_seed(9))
    assert problem.hypergrad(x).norm(dim=-1).min() > 1e-3


def test_analytic_oracles_match_autodiff_on_full_sums_and_minibatches():
    problem = _problem()
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(3, 40, generator=gen), torch.randn(3, 8, generator=gen)
    v = torch.randn(3, 8, generator=gen)
    assert max(oracle_errors(problem, x, y, v).values()) < 1e-12
    batch = torch.randint(0, 30, (3, 7), generator=gen)  # valid for f (30) and g (40)
    assert max(oracle_errors(problem, x, y, v, batch=batch).values()) < 1e-12


def test_distance_to_the_solution_set_and_corruption_metrics():
    problem = _problem(seed=4)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 40, generator=gen)
    pts = problem.sample_solution_set(x, 5)
    xs = x[:, None].expand(2, 5, 40).reshape(10, 40)
    dist = problem.dist_to_solution_set(xs, pts.reshape(10, 8))
    assert dist.abs().max() < 1e-12
    shift = torch.randn(2, 8, generator=gen) @ problem.V_r @ problem.V_r.T  # orthogonal to ker A
    ys = problem.y_star(x)
    assert torch.allclose(problem.dist_to_solution_set(x, ys + shift), shift.norm(dim=-1))
    # weights that put every clean sample first: AUC 1, exactly the corrupted ones flagged
    clean = (~problem.flipped).double()
    ideal = problem.metrics((2 * clean - 1)[None], ys[:1])
    assert ideal["auc"].item() == 1.0 and ideal["precision"].item() == 1.0
    assert ideal["recall"].item() == 1.0
    worst = problem.metrics((1 - 2 * clean)[None], ys[:1])
    assert worst["auc"].item() == 0.0
