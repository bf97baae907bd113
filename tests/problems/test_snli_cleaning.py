"""SNLI hypercleaning on the shipped sample: data wiring, padding, second derivatives
through the RNN, and every estimator's hypergradient against a dense solve."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bibench.data.snli import read_snli
from bibench.errors import UserError
from bibench.estimators import cg, dense_pinv, min_norm, neumann
from bibench.params import build_params
from bibench.problem import Problem
from bibench.registry import get_problem
from bibench.rng import BatchedRNG
from bibench.testing import dense_hessians, pinv_hypergrad

DATA = Path(__file__).parent.parent / "data"
SAMPLE = {
    "data_dir": str(DATA / "snli_sample"),
    "glove_path": str(DATA / "glove_sample.4d.txt"),
    "n_train": 12,
    "n_val": 6,
    "n_test": 8,
    "hidden": 2,
}


def _problem(**kw):
    cls = get_problem("snli_cleaning")
    return cls(build_params(cls.Params, "problem snli_cleaning", SAMPLE | kw))


def _point(problem, runs=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(runs, problem.dim_x, generator=gen)
    y = problem.init_y(BatchedRNG(torch.arange(runs)))
    return x, y, torch.randn(runs, problem.dim_y, generator=gen)


def test_splits_come_from_their_own_files_and_train_labels_flip_as_recorded():
    problem = _problem(q=0.4, seed=3)
    train, dev = read_snli(SAMPLE["data_dir"], "train", 12), read_snli(SAMPLE["data_dir"], "dev", 6)
    test = read_snli(SAMPLE["data_dir"], "test", 8)
    assert torch.equal(problem.labels["train_clean"], train.labels)
    assert torch.equal(problem.labels["val"], dev.labels)
    assert torch.equal(problem.labels["test"], test.labels)
    assert torch.equal(problem.labels["train"] != train.labels, problem.flipped)
    assert problem.dim_x == problem.n_samples_g == 12 and problem.n_samples_f == 6
    # GloVe 4-d inputs, hidden 2: RNN 4*2 + 2*2 + 2, head 3 * 8 + 3
    assert problem.dim_y == 8 + 4 + 2 + 24 + 3


def test_logits_do_not_depend_on_the_other_pairs_of_a_batch():
    problem = _problem(hidden=3, layers=2)
    _, y, _ = _point(problem)
    together = problem.logits(y, "train", torch.arange(12))
    for i in range(12):
        alone = problem.logits(y, "train", torch.tensor([i]))
        assert torch.allclose(alone[:, 0], together[:, i], atol=1e-13)
    batch = torch.tensor([[3, 7, 1], [0, 11, 5]])  # per-run minibatches
    per_run = problem.logits(y, "train", batch)
    for r in range(2):
        assert torch.allclose(per_run[r], together[r, batch[r]], atol=1e-13)


def test_second_derivatives_through_the_rnn_match_finite_differences():
    problem = _problem(hidden=3, p=3.0, c=0.1)
    x, y, v = _point(problem, seed=1)
    batch = torch.tensor([[0, 4, 9, 2], [1, 1, 8, 3]])
    hv = problem.hvp_yy_g(x, y, v, batch=batch)
    h = 1e-4
    gy = lambda t: Problem.grad_y_g(problem, x, y + t * v, batch)  # noqa: E731
    fd_hv = (4 * (gy(h / 2) - gy(-h / 2)) / h - (gy(h) - gy(-h)) / (2 * h)) / 3
    assert (hv - fd_hv).abs().max() < 1e-7
    cross = problem.cross_xy_g(x, y, v, batch=batch)
    gx = lambda t: Problem.grad_x_g(problem, x, y + t * v, batch)  # noqa: E731
    fd_cross = (4 * (gx(h / 2) - gx(-h / 2)) / h - (gx(h) - gx(-h)) / (2 * h)) / 3
    assert (cross - fd_cross).abs().max() < 1e-7


def test_every_estimator_gives_the_dense_hypergradient_on_a_tiny_rnn():
    problem = _problem(c=1.0, p=2.0)  # a strong ridge keeps the Hessian positive definite
    x, y, _ = _point(problem, seed=2)
    hyy, _ = dense_hessians(problem, x, y)
    eig = torch.linalg.eigvalsh(hyy)
    assert eig[:, 0].min() > 0.5  # the precondition of the comparison
    dense = pinv_hypergrad(problem, x, y)
    lmax, kappa = eig[:, -1].max().item(), (eig[:, -1] / eig[:, 0]).max().item()
    terms = math.ceil(math.log(1e-13) / math.log(1 - 1 / kappa))
    d = problem.dim_y
    solvers = {
        "cg": cg(2 * d),
        "min_norm": min_norm(4 * d),
        "neumann": neumann(1 / lmax, terms),
        "dense_pinv": dense_pinv(),
    }
    gy, gx = problem.grad_y_f(x, y), problem.grad_x_f(x, y)
    for name, solve in solvers.items():
        v = solve(lambda u, active=None: problem.hvp_yy_g(x, y, u), gy)
        hypergrad = gx - problem.cross_xy_g(x, y, v)
        assert (hypergrad - dense).abs().max() < 1e-9, name


def test_metrics_are_fractions_and_uniform_weights_score_auc_one_half():
    problem = _problem(q=0.4)
    x, y, _ = _point(problem)
    m = problem.metrics(torch.zeros_like(x), y)
    assert torch.equal(m["auc"], torch.full((2,), 0.5))
    pred = problem.predictions(y, "test")
    assert torch.equal(m["test_acc"], (pred == problem.labels["test"]).double().mean(-1))
    for key in ("train_acc", "train_acc_clean", "val_acc", "test_acc"):
        assert bool(((m[key] >= 0) & (m[key] <= 1)).all())


def test_missing_data_is_one_line_naming_the_file():
    cls = get_problem("snli_cleaning")
    with pytest.raises(UserError, match=r"snli_1.0_train.jsonl .*nlp.stanford.edu/projects/snli"):
        build_params(cls.Params, "problem snli_cleaning", {"data_dir": "/nonexistent"})
    with pytest.raises(UserError, match=r"GloVe file not found: .*nlp.stanford.edu/projects/glove"):
        build_params(cls.Params, "problem snli_cleaning", SAMPLE | {"glove_path": "/no/glove.txt"})
