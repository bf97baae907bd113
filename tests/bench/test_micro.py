"""pytest-benchmark micro-benchmarks of the oracles and of one algorithm step.

Skipped in the normal test run (``--benchmark-skip`` in pyproject's addopts); run them
with ``pytest tests/bench --benchmark-only``. Each checks its result once against a
reference, so a fast wrong answer does not pass as a benchmark.
"""

from __future__ import annotations

import pytest
import torch

from bibench.algorithm import batch_hyper
from bibench.oracle import Oracle
from bibench.problem import Problem
from bibench.registry import get_algorithm, get_problem
from bibench.rng import BatchedRNG

BATCHES = [1, 256]


def setup(problem_name: str, n: int, **params):
    cls = get_problem(problem_name)
    problem = cls(cls.Params(**params))
    rng = BatchedRNG(torch.arange(n), 1)
    return problem, problem.init_x(rng), problem.init_y(rng), rng


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("problem_name", ["quadratic", "hat"])
@pytest.mark.parametrize("kind", ["grad_y_g", "hvp_yy_g", "cross_xy_g"])
@pytest.mark.parametrize("impl", ["analytic", "autodiff"])
def test_oracle(benchmark, impl, kind, problem_name, n):
    problem, x, y, _ = setup(problem_name, n)
    args = (x, y, torch.ones_like(y)) if kind != "grad_y_g" else (x, y)
    fn = getattr(problem, kind) if impl == "analytic" else getattr(Problem, kind).__get__(problem)
    out = benchmark(fn, *args)
    ref = getattr(Problem, kind)(problem, *args)
    assert (out - ref).abs().max().item() <= 1e-10 * (1 + ref.abs().max().item())


@pytest.mark.parametrize("n", BATCHES)
def test_counting_oracle_call(benchmark, n):
    """One counted HVP: the oracle's bookkeeping on top of the problem's product."""
    problem, x, y, rng = setup("quadratic", n)
    oracle = Oracle(problem, rng.spawn(2))
    v = torch.ones_like(y)
    out = benchmark(oracle.hvp_yy_g, x, y, v)
    assert torch.equal(out, problem.hvp_yy_g(x, y, v))
    assert (oracle.counts["hvp_yy_g"] >= 1).all()


# counted calls per outer step, from the hyperparameters (see each algorithm's docstring)
CALLS_PER_STEP = {
    "aid_cg": lambda hp: hp.n_inner + 2 + hp.n_cg + int(hp.warm_start_v) + 1,
    "stocbio": lambda hp: hp.n_inner + 2 + hp.n_neumann + 1,
}


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("algorithm", sorted(CALLS_PER_STEP))
def test_algorithm_step(benchmark, algorithm, n):
    """One outer step at the defaults, from the same state each round."""
    problem, x, y, rng = setup("quadratic", n)
    cls = get_algorithm(algorithm)
    alg = cls(batch_hyper([cls.Hyper()] * n, torch.device("cpu")))
    oracle = Oracle(problem, rng.spawn(2))
    state = alg.init(problem, oracle, x, y, rng.spawn(3))
    new = benchmark(alg.step, state)
    assert torch.isfinite(new.x).all()
    total, per_step = oracle.total(), CALLS_PER_STEP[algorithm](cls.Hyper())
    assert bool((total > 0).all()) and bool((total % per_step == 0).all())
