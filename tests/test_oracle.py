"""The counting oracle: counts by type, samples, minibatches, noise, active masks."""

from __future__ import annotations

import math

import pytest
import torch

from bibench.oracle import ORACLE_TYPES, Oracle
from bibench.registry import get_problem
from bibench.rng import BatchedRNG


def make(n_runs=3, **params):
    cls = get_problem("quadratic")
    problem = cls(cls.Params(**params))
    rng = BatchedRNG(torch.arange(n_runs))
    x, y = problem.init_x(rng), problem.init_y(rng)
    return problem, Oracle(problem, BatchedRNG(torch.arange(n_runs), 2)), x, y


def test_each_call_counts_its_own_type_once_per_run():
    problem, o, x, y = make()
    v = torch.ones_like(y)
    o.grad_y_g(x, y)
    o.grad_y_g(x, y)
    o.hvp_yy_g(x, y, v)
    o.cross_xy_g(x, y, v)
    o.grad_f(x, y)
    o.f(x, y)
    expected = {"grad_y_g": 2, "hvp_yy_g": 1, "cross_xy_g": 1, "grad_x_f": 1, "grad_y_f": 1,
                "f": 1}  # fmt: skip
    for t in ORACLE_TYPES:
        assert o.counts[t].tolist() == [expected.get(t, 0)] * 3, t
    assert o.total().tolist() == [7] * 3
    # full-sum calls consume the whole finite sum (64 samples each)
    assert o.samples.tolist() == [7 * problem.n_samples_g] * 3


def test_deterministic_oracle_is_exact():
    problem, o, x, y = make()
    assert torch.equal(o.grad_y_g(x, y), problem.grad_y_g(x, y))


def test_minibatches_are_drawn_per_run_and_counted():
    problem, o, x, y = make(batch_size=8)
    batch = o.sample("g")
    assert batch.shape == (3, 8)
    g = o.grad_y_g(x, y, batch)
    ref = torch.stack([problem.grad_y_g(x[r : r + 1], y[r : r + 1], batch[r : r + 1])[0]
                       for r in range(3)])  # fmt: skip
    assert torch.allclose(g, ref, atol=1e-14, rtol=0)
    o.grad_y_g(x, y)  # draws its own minibatch
    assert o.samples.tolist() == [16] * 3
    # the minibatch mean is unbiased: averaging many draws approaches the full gradient
    draws = torch.stack([o.grad_y_g(x, y) for _ in range(400)]).mean(0)
    full = problem.grad_y_g(x, y)
    assert (draws - full).abs().max() < 0.1 * full.abs().max()


def test_gaussian_noise_has_the_given_std():
    problem, o, x, y = make(n_runs=2, noise_std=0.5)
    draws = torch.stack([o.grad_x_g(x, y) for _ in range(4000)])
    noise = draws - problem.grad_x_g(x, y)
    n = noise.numel()
    assert abs(noise.mean().item()) < 6 * 0.5 / math.sqrt(n)
    assert abs(noise.std().item() - 0.5) < 6 * 0.5 / math.sqrt(2 * n)


def test_active_mask_counts_only_active_runs():
    _, o, x, y = make()
    o.hvp_yy_g(x, y, torch.ones_like(y), active=torch.tensor([True, False, True]))
    assert o.counts["hvp_yy_g"].tolist() == [1, 0, 1]


@pytest.mark.parametrize("batch_size", [0, 8])
def test_quadratic_analytic_oracles_match_autodiff(batch_size):
    from bibench.testing import oracle_errors

    problem, o, x, y = make(batch_size=batch_size)
    batch = o.sample("g")
    v = BatchedRNG(torch.arange(3), 9).normal(problem.dim_y)
    errs = oracle_errors(problem, x, y, v, batch)
    assert max(errs.values()) < 1e-12, errs
