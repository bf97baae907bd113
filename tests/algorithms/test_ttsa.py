r"""TTSA: the randomly truncated Neumann estimator is unbiased, and each run pays its own HVPs.

Estimator: X = Qα(I − αA)^{K'} b with K' ~ U{0..Q−1}, so with M = I − αA (symmetric)

    E[X] = α Σ_{k<Q} M^k b,    E[X Xᵀ] = Qα² Σ_{k<Q} M^k b bᵀ M^k,

both in closed form. The mean of R independent draws has per-coordinate standard error
sqrt(Var_i / R) with Var_i = E[X Xᵀ]_ii − E[X]_i²; it must match E[X] within 5 standard
errors in every coordinate (a false alarm has probability < 1e-5 over the 10 coordinates,
and the seeds are fixed, so the test is deterministic). The authors' copy (α M^K,
K ~ U{1..Q}, no factor Q) has mean α/Q Σ_{k=1}^{Q} M^k b, off by far more than that.
"""

from __future__ import annotations

import inspect

import torch

from bibench.algorithm import batch_hyper
from bibench.oracle import ORACLE_TYPES, Oracle
from bibench.registry import discover, get_algorithm, get_problem
from bibench.rng import BatchedRNG

discover()
TTSA = get_algorithm("ttsa")
random_truncated_neumann = inspect.getmodule(TTSA).random_truncated_neumann


def test_random_truncation_is_unbiased_for_the_q_term_neumann_sum():
    runs, q, alpha = 20_000, 8, 0.5
    problem = get_problem("quadratic")()
    seeds = torch.arange(runs)
    oracle = Oracle(problem, BatchedRNG(seeds, 2))
    x = torch.zeros(runs, problem.dim_x)
    y = problem.y_star(x) + 1.0
    b = oracle.grad_y_f(x, y)  # the same b in every run (deterministic oracle)
    truncation = BatchedRNG(seeds, 3).randint(q)
    assert sorted(truncation.unique().tolist()) == list(range(q))

    def matvec(v, active=None):
        return oracle.hvp_yy_g(x, y, v, active=active)

    draws = random_truncated_neumann(matvec, b, alpha, q, truncation)
    assert torch.equal(oracle.counts["hvp_yy_g"], truncation)

    m = torch.eye(problem.dim_y) - alpha * problem.A
    powers = torch.stack([torch.linalg.matrix_power(m, k) @ b[0] for k in range(q)])  # (Q, d)
    mean = alpha * powers.sum(0)
    var = q * alpha**2 * (powers**2).sum(0) - mean**2
    stderr = (var / runs).sqrt()
    assert ((draws.mean(0) - mean).abs() <= 5 * stderr).all()
    authors = alpha / q * (powers.sum(0) - powers[0] + m @ powers[-1])
    assert ((authors - mean).abs() > 50 * stderr).any()


def test_each_run_makes_its_own_drawn_number_of_hvps():
    seeds = torch.arange(16)
    problem = get_problem("quadratic")(get_problem("quadratic").Params(noise_std=0.1))
    alg = TTSA(batch_hyper([TTSA.Hyper(n_neumann=10)] * len(seeds), torch.device("cpu")))
    init = BatchedRNG(seeds, 1)
    oracle = Oracle(problem, BatchedRNG(seeds, 2))
    state = alg.init(problem, oracle, problem.init_x(init), problem.init_y(init),
                     BatchedRNG(seeds, 3))  # fmt: skip
    drawn = torch.zeros(len(seeds), dtype=torch.int64)
    for _ in range(5):
        state = alg.step(state)
        assert ((state.truncation >= 0) & (state.truncation < 10)).all()
        drawn += state.truncation
    counts = oracle.counts
    assert torch.equal(counts["hvp_yy_g"], drawn)
    assert drawn.unique().numel() > 1  # runs really differ
    for t in ORACLE_TYPES:
        if t in ("grad_y_g", "grad_x_f", "grad_y_f", "cross_xy_g"):
            assert (counts[t] == 5).all(), t
        elif t != "hvp_yy_g":
            assert (counts[t] == 0).all(), t
