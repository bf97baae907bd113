"""StocBiO: exact per-step oracle counts, and the Neumann adjoint's geometric convergence.

Counts (Ji, Yang, Liang 2021, Algorithm 2): each outer step makes D ∇y g, one ∇x f and one
∇y f, Q HVPs and one cross product, D + Q + 3 in all, whatever the problem.

Neumann adjoint on the quadratic (H = A, exact oracles): v_Q = η Σ_{k=0}^{Q} (I − ηA)^k b,
so v_Q − A⁻¹b = −(I − ηA)^{Q+1} A⁻¹b; the error shrinks by (1 − ηλ_min(A)) per extra term
once the smallest eigenvalue dominates.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bibench.algorithm import batch_hyper
from bibench.estimators import cg
from bibench.oracle import ORACLE_TYPES, Oracle
from bibench.registry import discover, get_algorithm, get_problem
from bibench.rng import BatchedRNG

discover()
SEEDS = torch.tensor([0, 1, 2])


def setup(problem_params=None, **hyper):
    problem = get_problem("quadratic")(get_problem("quadratic").Params(**(problem_params or {})))
    cls = get_algorithm("stocbio")
    alg = cls(batch_hyper([cls.Hyper(**hyper)] * len(SEEDS), torch.device("cpu")))
    init = BatchedRNG(SEEDS, 1)
    oracle = Oracle(problem, BatchedRNG(SEEDS, 2))
    state = alg.init(problem, oracle, problem.init_x(init), problem.init_y(init), None)
    return problem, alg, oracle, state


@pytest.mark.parametrize("n_inner, n_neumann", [(10, 200), (3, 5), (0, 0), (7, 1)])
@pytest.mark.parametrize("problem_params", [{}, {"batch_size": 8, "noise_std": 0.1}])
def test_each_outer_step_makes_d_plus_q_plus_3_calls_by_type(n_inner, n_neumann, problem_params):
    _, alg, oracle, state = setup(problem_params, n_inner=n_inner, n_neumann=n_neumann)
    before = {t: oracle.counts[t].clone() for t in ORACLE_TYPES}
    for _ in range(2):
        state = alg.step(state)
    per_step = {t: ((oracle.counts[t] - before[t]) / 2).tolist() for t in ORACLE_TYPES}
    expected = {t: 0 for t in ORACLE_TYPES}
    expected.update(grad_y_g=n_inner, grad_x_f=1, grad_y_f=1, hvp_yy_g=n_neumann, cross_xy_g=1)
    assert per_step == {t: [expected[t]] * len(SEEDS) for t in ORACLE_TYPES}
    assert sum(expected.values()) == n_inner + n_neumann + 3


def test_neumann_adjoint_converges_to_the_cg_solution_at_the_predicted_rate():
    eta = 0.8
    problem, alg, oracle, state = setup(alpha_neumann=eta)
    x, y = state.x, state.y
    b = oracle.grad_y_f(x, y)
    a = problem.A
    v_cg = cg(60)(lambda v, active=None: v @ a, b)  # dim_y = 10: CG is exact
    assert torch.allclose(v_cg, torch.linalg.solve(a, b.T).T, rtol=0, atol=1e-10)

    lam_min = torch.linalg.eigvalsh(a)[0].item()
    contraction = torch.eye(a.shape[0]) - eta * a
    errors = {}
    for q in (20, 150, 200):
        alg.hp = dataclasses.replace(alg.hp, n_neumann=q)
        alg.init(problem, oracle, x, y, None)
        v = alg.adjoint(x, y, b)
        errors[q] = torch.linalg.vector_norm(v - v_cg, dim=-1)
        closed = torch.linalg.matrix_power(contraction, q + 1) @ v_cg.T
        assert torch.allclose(v - v_cg, -closed.T, rtol=1e-6, atol=1e-11)  # rounding of |v| ~ 10
    rate = (errors[200] / errors[150]) ** (1 / 50)
    assert torch.allclose(rate, torch.full_like(rate, 1 - eta * lam_min), rtol=1e-3)
    assert (errors[200] < errors[150]).all() and (errors[150] < 1e-4 * errors[20]).all()
