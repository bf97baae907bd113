"""Offline hypercleaning: analytic oracles, the reference solve, splits, corruption, epoch
sampling, and an algorithm beating the uniform-weights baseline."""

from __future__ import annotations

import statistics

import pytest
import torch

from bibench.config import Budget, RunSpec
from bibench.data.tabular import load_tabular
from bibench.errors import UserError
from bibench.oracle import Oracle
from bibench.params import build_params
from bibench.registry import get_algorithm, get_problem
from bibench.rng import BatchedRNG
from bibench.runner import execute_batch
from bibench.testing import fd_grad, oracle_errors, pinv_hypergrad

SMALL = {"dataset": "wine", "n_train": 60, "n_val": 40, "n_test": 0}


def _problem(**kw):
    cls = get_problem("hypercleaning")
    return cls(build_params(cls.Params, "problem hypercleaning", kw))


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_analytic_oracles_match_autodiff(p):
    problem = _problem(p=p, **SMALL)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, problem.dim_x, generator=gen)
    y, v = (
        torch.randn(3, problem.dim_y, generator=gen),
        torch.randn(3, problem.dim_y, generator=gen),
    )
    assert max(oracle_errors(problem, x, y, v).values()) < 1e-12
    batch = torch.randint(0, 40, (3, 9), generator=gen)  # valid for f (40) and g (60)
    assert max(oracle_errors(problem, x, y, v, batch=batch).values()) < 1e-12


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_reference_solve_is_stationary_and_its_hypergradient_matches_pinv_and_fd(p):
    problem = _problem(p=p, c=1e-2, ref_tol=1e-12, **SMALL)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, problem.dim_x, generator=gen)
    ys = problem.y_star(x)
    assert problem.grad_y_g(x, ys).norm(dim=-1).max() < 1e-11
    hg = problem.hypergrad(x)
    assert (hg - pinv_hypergrad(problem, x, ys)).abs().max() < 1e-10
    direction = torch.randn(2, problem.dim_x, generator=gen)
    slope = fd_grad(lambda t: problem.phi(x + t * direction), torch.zeros(2, 1), 1e-2)[:, 0]
    assert (slope - (hg * direction).sum(-1)).abs().max() < 1e-8


def test_splits_partition_the_dataset_and_train_statistics_standardise():
    from sklearn.datasets import load_wine

    data, target = load_wine(return_X_y=True)
    raw, target = torch.as_tensor(data), torch.as_tensor(target)
    s = load_tabular("wine", 60, 40, 0, seed=3)
    a = torch.cat([s.a_train, s.a_val, s.a_test])
    assert a.shape == raw.shape
    assert torch.equal(
        torch.cat([s.y_train, s.y_val, s.y_test]).sort().values, target.sort().values
    )
    # every column is one increasing affine map of the dataset's column (same multiset)
    for j in range(raw.shape[1]):
        u, w = raw[:, j].sort().values, a[:, j].sort().values
        design = torch.stack([u, torch.ones_like(u)], 1)
        coef = torch.linalg.lstsq(design, w[:, None]).solution[:, 0]
        assert coef[0] > 0 and (design @ coef - w).abs().max() < 1e-10
    assert s.a_train.mean(0).abs().max() < 1e-12
    assert torch.allclose(s.a_train.std(0), torch.full((13,), 13**-0.5))
    # no row is in two splits (wine has no duplicate rows)
    assert torch.cdist(s.a_train, torch.cat([s.a_val, s.a_test])).min() > 1e-6


def test_corruption_is_exactly_the_recorded_mask_and_val_test_stay_clean():
    problem = _problem(q=0.5)
    lab = problem.labels
    assert torch.equal(lab["train"] != lab["train_clean"], problem.flipped)
    assert 0.4 < problem.flipped.double().mean().item() < 0.6
    split = load_tabular("digits", 1000, 200, 0, seed=0)
    assert torch.equal(lab["train_clean"], split.y_train)
    assert torch.equal(lab["val"], split.y_val) and torch.equal(lab["test"], split.y_test)


def test_epoch_sampling_is_a_fresh_permutation_per_run_and_epoch():
    problem = _problem(batch_size=20, **SMALL)  # 60 training examples: 3 batches per epoch
    seeds = torch.tensor([0, 1, 2])
    oracle = Oracle(problem, BatchedRNG(seeds, 2))
    epochs = [torch.cat([oracle.sample("g") for _ in range(3)], dim=1) for _ in range(2)]
    for epoch in epochs:
        assert torch.equal(epoch.sort(dim=1).values, torch.arange(60).expand(3, 60))
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled
    assert not torch.equal(epochs[0][0], epochs[0][1])  # seeds differ
    alone = Oracle(problem, BatchedRNG(seeds[1:2], 2))
    assert torch.equal(torch.cat([alone.sample("g") for _ in range(3)], 1)[0], epochs[0][1])
    val = oracle.sample("f")  # 40 validation examples, batch 20
    assert val.shape == (3, 20) and int(val.max()) < 40


def test_bad_dataset_is_one_clear_line():
    with pytest.raises(UserError, match="dataset must be one of"):
        _problem(dataset="mnist")


def test_aid_cg_beats_the_uniform_weights_baseline_and_ranks_corrupted_examples_low():
    """A small digits instance (300 training labels, half flipped): after 1,500 oracle
    calls the learned weights beat the exactly trained uniform-weights model on test
    accuracy (median over three instances), and rank corrupted examples below clean ones."""
    problem_cls, alg = get_problem("hypercleaning"), get_algorithm("aid_cg")
    hyper = build_params(alg.Hyper, "aid_cg", {"lr_x": 100.0, "lr_y": 10.0})
    gains, aucs = [], []
    for seed in range(3):
        params = build_params(
            problem_cls.Params, "hypercleaning", {"n_train": 300, "n_val": 100, "seed": seed}
        )
        spec = RunSpec(
            "hypercleaning", params, "aid_cg", hyper, 0, Budget(1500, checkpoint_ratio=8.0)
        )
        last = execute_batch([spec])[0].iloc[-1]
        assert last["status"] == "done"
        gains.append(last["test_acc"] - last["test_acc_uniform"])
        aucs.append(last["auc"])
    assert statistics.median(gains) > 0.02
    assert min(aucs) > 0.8


def test_reference_solve_leaves_a_solved_run_exactly_where_it_is():
    """Per-run stopping: a run whose gradient norm is already below ``ref_tol`` (here half
    of it) is not moved while another run of the batch still needs Newton steps, so a
    run's ground truth does not depend on its batch-mates."""
    problem = _problem(ref_tol=1e-6, **SMALL)
    gen = torch.Generator().manual_seed(2)
    x = torch.stack([torch.zeros(problem.dim_x), 5 * torch.randn(problem.dim_x, generator=gen)])
    exact = _problem(ref_tol=1e-13, **SMALL).y_star(x[:1])
    delta = torch.randn(1, problem.dim_y, generator=gen)
    delta *= 0.5e-6 / problem.grad_y_g(x[:1], exact + delta).norm()  # g is ~quadratic here
    near = exact + delta
    assert 0.2e-6 < problem.grad_y_g(x[:1], near).norm() < 1e-6
    out = problem._solve(x, torch.cat([near, torch.zeros(1, problem.dim_y)]))
    assert torch.equal(out[0], near[0])
    assert problem.grad_y_g(x, out).norm(dim=-1).max() <= problem.params.ref_tol
