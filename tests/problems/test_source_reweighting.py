"""Source reweighting (least squares): exact Φ, ∇Φ, y*, S(x) against autodiff, FD and pinv;
analytic oracles; the sources and the crop; learned weights favour the helpful sources."""

from __future__ import annotations

import pytest
import torch

from bibench.data.sources import SOURCES
from bibench.errors import UserError
from bibench.registry import get_problem
from bibench.testing import ground_truth_errors, oracle_errors

SMALL = {"n_per_source": 30, "n_val": 80, "n_test": 300}


def _problem(**kw):
    cls = get_problem("source_reweighting")
    return cls(cls.Params(**kw))


@pytest.mark.parametrize("seed", [0, 1])
def test_ground_truth_matches_autodiff_fd_and_pinv_to_1e_8(seed):
    problem = _problem(seed=seed, **SMALL)
    x = torch.randn(2, problem.dim_x, generator=torch.Generator().manual_seed(seed))
    errs = ground_truth_errors(problem, x, n_samples=16)
    assert max(errs.values()) < 1e-8, errs


def test_analytic_oracles_match_autodiff_on_full_sums_and_minibatches():
    problem = _problem(**SMALL)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, generator=gen)
    y, v = (
        torch.randn(3, problem.dim_y, generator=gen),
        torch.randn(3, problem.dim_y, generator=gen),
    )
    assert max(oracle_errors(problem, x, y, v).values()) < 1e-12
    batch = torch.randint(0, 80, (3, 7), generator=gen)  # valid for f (80) and g (150)
    assert max(oracle_errors(problem, x, y, v, batch=batch).values()) < 1e-12


def test_minibatch_of_everything_is_the_full_sum():
    problem = _problem(**SMALL)
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(2, 5, generator=gen), torch.randn(2, problem.dim_y, generator=gen)
    every = torch.arange(problem.n_samples_g).expand(2, -1)
    assert torch.allclose(problem.g(x, y, every), problem.g(x, y))
    assert torch.allclose(problem.grad_x_g(x, y, every), problem.grad_x_g(x, y))
    # uniform weights: g is the plain mean of the pooled losses
    zero = torch.zeros(2, 5)
    e = problem.forward(problem.a["train"], problem.weight_matrix(y)) - problem.B["train"]
    assert torch.allclose(problem.g(zero, y), 0.5 * (e * e).sum(-1).mean(-1))


def test_sources_crop_and_affine_solution_set():
    problem = _problem(seed=2)
    n, d = problem.a["train"].shape
    assert (n, d, problem.dim_y) == (300, 49, 490)
    # 12 cropped pixels: rank r = 37 < d = 49 < n = 300; the kernel is exactly them
    assert problem.V_r.shape[1] == 37 and problem.N.shape[1] == 12
    assert problem.a["train"][:, problem.hidden].abs().max() == 0
    assert problem.a["val"][:, problem.hidden].abs().sum(0).min() > 0
    assert (problem.N[~problem.hidden].abs().max()) < 1e-12
    # imbalanced source: first half of the classes only; off-target: labels shifted by one
    src, lab = problem.source, problem.labels["train"]
    assert int(lab[src == SOURCES.index("imbalanced")].max()) == 4
    assert torch.bincount(src).tolist() == [60] * 5
    # Phi moves with x (not the interpolating n < d case)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    assert problem.hypergrad(x).norm(dim=-1).min() > 1e-3
    # distance to S(x): zero on samples of S(x), the shift's norm off the kernel
    pts = problem.sample_solution_set(x, 4).reshape(12, -1)
    xs = x[:, None].expand(3, 4, 5).reshape(12, 5)
    assert problem.dist_to_solution_set(xs, pts).max() < 1e-12
    shift = torch.randn(3, d, 10, generator=torch.Generator().manual_seed(2))
    shift = (problem.V_r @ problem.V_r.T @ shift).reshape(3, -1)
    ys = problem.y_star(x)
    assert torch.allclose(problem.dist_to_solution_set(x, ys + shift), shift.norm(dim=-1))


def test_without_the_crop_the_solution_set_is_a_point_and_selection_is_void():
    problem = _problem(crop=False, **SMALL)
    assert problem.N.shape[1] == 0
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(problem.y_star(x), problem.min_norm_solution(x))
    assert max(ground_truth_errors(problem, x, n_samples=4).values()) < 1e-8


def test_too_small_a_validation_set_is_refused_with_the_culprit():
    with pytest.raises(UserError, match="n_val"):
        _problem(n_val=6, n_per_source=30, n_test=100)


MARGIN = 0.1


def test_learned_weights_favour_clean_and_on_target_sources_over_five_splits():
    """The weights minimising the exact Φ (L-BFGS, the oracle mixture) put at least MARGIN
    more weight on each of clean and imbalanced (true labels, clean images) than on each of
    noised and off-target, on every one of five splits; and the learned mixture beats the
    uniform one on the target's test set."""
    for seed in range(5):
        problem = _problem(seed=seed)
        x_ref, residual = problem.oracle_mixture()
        assert residual < 1e-7
        w = dict(zip(SOURCES, torch.softmax(x_ref, -1)[0].tolist()))
        good, bad = min(w["clean"], w["imbalanced"]), max(w["noised"], w["off_target"])
        assert good - bad > MARGIN, (seed, w)
        zero = torch.zeros(1, 5)
        assert problem.phi(x_ref) < problem.phi(zero)
        acc = problem.accuracy(problem.y_star(x_ref), "test")
        assert acc > problem.accuracy(problem.y_star(zero), "test"), seed


def test_single_source_baseline_is_the_optimistic_solution_of_that_source():
    problem = _problem(**SMALL)
    base = problem.baselines()
    k = SOURCES.index(problem.best_single)
    ys = base["single"]
    # stationary for that source alone: sum_{i in k} a_i e_i^T = 0
    a, b = problem.a["train"][problem.source == k], problem.B["train"][problem.source == k]
    resid = problem.weight_matrix(ys)[0].T @ a.T - b.T
    assert (a.T @ resid.T).abs().max() < 1e-10
    # optimistic: grad f is orthogonal to the kernel of that source's features
    _, sv, vt = torch.linalg.svd(a, full_matrices=True)
    null = vt[int((sv > sv[0] * 1e-10).sum()) :].T
    zero = torch.zeros(1, 5)
    assert (null.T @ problem.weight_matrix(problem.grad_y_f(zero, ys))[0]).abs().max() < 1e-10
    # the oracle mixture beats uniform weights; uniform is y*(0)
    assert problem.phi_star <= problem.phi(zero).item()
    assert problem.f(zero, base["uniform"]).item() == pytest.approx(problem.phi(zero).item())
