r"""UniBiO (clean and faithful) and their shared pieces in bibench/epoch_sgd.py.

* Epoch-SGD stage lengths T_k = ⌊5·2^{τ(k−1)}⌋, τ = 2(p−1)/p, within K = 100, as in the
  authors' synthetic_exp.py (5,10,20,40 / 5,14,40 / 5,15,50 / 5,16,56 for p = 2,4,6,8), and
  a one-step call is the projected step y − min(1, D₁/‖γ₁∇g‖) γ₁∇g.
* Generalized-Hessian hypergradient: on unibio_synthetic D⁻¹H = 1, so with α = 1 the
  estimate is cos x · cos(y^{p−1}) inside |y| ≤ θ_p = (π/2)^{1/(p−1)} and 0 outside
  (the script's gate), for any Q; on lp_linear (g = ‖y‖ₚᵖ/p − ⟨y, b(x)⟩) H = D at every
  y ≠ 0, so one term is the exact ∇Φ at y = y*(x); on the quadratic (p = 2, D = I) it is
  the plain Neumann series, exact to (1 − μ_g)^Q.
* UniBiO reaches |∇Φ| ≤ 1e-3 on unibio_synthetic for p ∈ {2, 4, 6, 8}.
* unibio_faithful is sign descent from x₀ = 1 with step η_p: it first passes −π/2 after
  ⌈(1 + π/2)/η_p⌉ steps (the authors' script), and each Epoch-SGD call costs the
  table's 75, 59, 70, 77 gradients.
"""

from __future__ import annotations

import math

import pytest
import torch

from bibench.algorithm import batch_hyper
from bibench.config import Budget, RunConfig, expand
from bibench.epoch_sgd import epoch_sgd, generalized_neumann_hypergrad, stage_lengths
from bibench.errors import UserError
from bibench.oracle import Oracle
from bibench.params import build_params
from bibench.registry import discover, get_algorithm, get_problem
from bibench.rng import BatchedRNG
from bibench.runner import execute_batch

discover()
SEEDS = torch.tensor([0, 1, 2])
TABLE = {2: [5, 10, 20, 40], 4: [5, 14, 40], 6: [5, 15, 50], 8: [5, 16, 56]}


def make(name, **params):
    return get_problem(name)(get_problem(name).Params(**params))


def start(name, problem, **hyper):
    cls = get_algorithm(name)
    alg = cls(batch_hyper([cls.Hyper(**hyper)] * len(SEEDS), torch.device("cpu")))
    init = BatchedRNG(SEEDS, 1)
    oracle = Oracle(problem, BatchedRNG(SEEDS, 2))
    state = alg.init(problem, oracle, problem.init_x(init), problem.init_y(init),
                     BatchedRNG(SEEDS, 3))  # fmt: skip
    return alg, oracle, state


@pytest.mark.parametrize("p", sorted(TABLE))
def test_stage_lengths_match_the_schedule_table(p):
    assert stage_lengths(p, 5, 100) == TABLE[p]
    problem = make("unibio_synthetic", p=p)
    oracle = Oracle(problem, BatchedRNG(SEEDS, 2))
    x = torch.ones(len(SEEDS), 1)
    epoch_sgd(oracle, x, torch.zeros(len(SEEDS), 1), p=p, gamma1=0.5, radius1=1.0, t1=5,
              budget=100)  # fmt: skip
    assert (oracle.counts["grad_y_g"] == sum(TABLE[p])).all()


@pytest.mark.parametrize("radius", [0.05, 100.0])
def test_one_step_epoch_sgd_is_the_projected_gradient_step(radius):
    problem = make("quadratic")
    rng = BatchedRNG(SEEDS, 1)
    x, y = problem.init_x(rng), problem.init_y(rng)
    oracle = Oracle(problem, BatchedRNG(SEEDS, 2))
    out = epoch_sgd(oracle, x, y, p=2, gamma1=0.5, radius1=radius, t1=1, budget=1)
    step = 0.5 * problem.grad_y_g(x, y)
    scale = torch.clamp(radius / torch.linalg.vector_norm(step, dim=-1, keepdim=True), max=1)
    assert torch.allclose(out, y - scale * step, rtol=0, atol=1e-14)


@pytest.mark.parametrize("p", [2, 3, 4, 8])
@pytest.mark.parametrize("n_terms", [1, 5])
def test_generalized_hypergrad_on_the_synthetic_problem(p, n_terms):
    problem = make("unibio_synthetic", p=p)
    x = torch.linspace(-3, 3, 12)[:, None]
    y = torch.linspace(-1.3, 1.3, 12)[:, None]  # not 0, where the ε floor acts
    oracle = Oracle(problem, BatchedRNG(torch.arange(12), 2))
    h = generalized_neumann_hypergrad(oracle, x, y, p=p, alpha=1.0, n_terms=n_terms, eps=1e-9)
    theta = (math.pi / 2) ** (1 / (p - 1))
    u = torch.sign(y) * y.abs() ** (p - 1)
    expected = torch.where(y.abs() <= theta, torch.cos(x) * torch.cos(u), torch.zeros_like(x))
    assert torch.allclose(h, expected, rtol=0, atol=1e-12)
    y_star = problem.y_star(x)
    h_star = generalized_neumann_hypergrad(oracle, x, y_star, p=p, alpha=1.0, n_terms=n_terms,
                                           eps=1e-9)  # fmt: skip
    assert torch.allclose(h_star, problem.hypergrad(x), rtol=0, atol=1e-12)
    assert (oracle.counts["hvp_yy_g"] == 2 * (n_terms - 1)).all()


def test_generalized_hypergrad_is_exact_at_the_solution_when_h_equals_d():
    problem = make("lp_linear", p=4)
    rng = BatchedRNG(SEEDS, 1)
    x = problem.init_x(rng)
    oracle = Oracle(problem, BatchedRNG(SEEDS, 2))
    h = generalized_neumann_hypergrad(oracle, x, problem.y_star(x), p=4, alpha=1.0, n_terms=1,
                                      eps=1e-12)  # fmt: skip
    assert torch.allclose(h, problem.hypergrad(x), rtol=1e-10, atol=1e-12)


def test_generalized_hypergrad_is_the_plain_neumann_series_for_p_2():
    problem = make("quadratic")
    x = problem.init_x(BatchedRNG(SEEDS, 1))
    oracle = Oracle(problem, BatchedRNG(SEEDS, 2))
    q = 300  # (1 - 0.1)^300 ~ 2e-14
    h = generalized_neumann_hypergrad(oracle, x, problem.y_star(x), p=2, alpha=1.0, n_terms=q,
                                      eps=1e-3)  # fmt: skip
    assert torch.allclose(h, problem.hypergrad(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("p", [2, 4, 6, 8])
def test_clipped_unibio_reaches_1e_3_on_the_synthetic_problem(p):
    cfg = RunConfig(problems=[("unibio_synthetic", {"p": p})],
                    algorithms=[("unibio", {"schedule": "clipped"})],
                    seeds=[0, 1], budget=Budget(max_calls=50_000))  # fmt: skip
    for frame in execute_batch(expand(cfg)):
        assert frame["status"].iloc[-1] == "done", frame["error"].iloc[-1]
        assert frame["hypergrad_norm"].iloc[-1] <= 1e-3


def test_default_is_the_paper_s_constant_step_and_clipped_passes_the_control():
    """The default moves exactly eta per step, so it stalls at scale L_Phi * eta on the
    quadratic (measured 2.0-2.2 after 20k calls); clipped reaches 1e-6 within 110k
    (measured 6e-8, 9e-8)."""
    assert get_algorithm("unibio").Hyper().schedule == "constant"
    for hyper, bound, budget in [({}, (0.5, 5.0), 20_000), ({"schedule": "clipped"},
                                 (0.0, 1e-6), 110_000)]:  # fmt: skip
        cfg = RunConfig(problems=[("quadratic", {})], algorithms=[("unibio", hyper)],
                        seeds=[0, 1], budget=Budget(max_calls=budget))  # fmt: skip
        for frame in execute_batch(expand(cfg)):
            assert bound[0] <= frame["hypergrad_norm"].iloc[-1] <= bound[1], hyper


@pytest.mark.parametrize("p, inv_eps", [(2, 3), (4, 2), (4, 0)])
def test_inner_budget_grows_as_the_theorem_s_eps_power(p, inv_eps):
    """K = n_lower * (1/eps)^(2p-4): at p = 4, 1/eps = 2 the warm start's budget is
    100 * 16 = 1600 gradients' worth of stages; at p = 2 it is 100 whatever eps."""
    budget = 100 * (inv_eps ** (2 * p - 4) if inv_eps else 1)
    problem = make("lp_linear", p=p)
    alg, oracle, state = start("unibio", problem, inv_eps=inv_eps)
    assert (oracle.counts["grad_y_g"] == sum(stage_lengths(p, 5, budget))).all()
    for _ in range(3):  # refresh at t = 2 only
        state = alg.step(state)
    assert (oracle.counts["grad_y_g"] == 2 * sum(stage_lengths(p, 5, budget))).all()


@pytest.mark.parametrize("schedule", ["constant", "clipped"])
def test_upper_step_is_normalized_then_clipped(schedule):
    problem = make("quadratic")
    alg, _, state = start("unibio", problem, schedule=schedule, eta=0.2, lr_x=0.05)
    for _ in range(40):
        new = alg.step(state)
        moved = torch.linalg.vector_norm(new.x - state.x, dim=-1)
        m_norm = torch.linalg.vector_norm(new.m, dim=-1)
        cap = 0.2 if schedule == "constant" else torch.clamp(0.05 * m_norm, max=0.2)
        assert torch.allclose(moved, torch.as_tensor(cap).expand_as(moved), rtol=1e-12)
        state = new


def test_bad_schedule_is_one_clear_error():
    with pytest.raises(UserError, match="schedule"):
        build_params(get_algorithm("unibio").Hyper, "unibio", {"schedule": "cosine"})


@pytest.mark.parametrize("p, eta, per_call", [(2, 0.05, 75), (4, 0.03, 59), (6, 0.02, 70),
                                              (8, 0.01, 77)])  # fmt: skip
def test_faithful_sign_descent_hits_minus_pi_over_2_on_time(p, eta, per_call):
    alg, oracle, state = start("unibio_faithful", make("unibio_synthetic", p=p))
    n_steps = math.ceil((1 + math.pi / 2) / eta)
    xs = [state.x[:, 0]]
    for _ in range(n_steps + 3):
        state = alg.step(state)
        xs.append(state.x[:, 0])
    hit = (torch.stack(xs) <= -math.pi / 2).to(torch.int64).argmax(0)
    assert ((hit - n_steps).abs() <= 2).all(), hit
    calls = math.ceil((n_steps + 3) / 2)  # Epoch-SGD at t = 0, 2, 4, ...
    assert (oracle.counts["grad_y_g"] == calls * per_call).all()
    assert (oracle.counts["cross_xy_g"] == n_steps + 3).all()
    assert (oracle.counts["hvp_yy_g"] == 0).all()


def test_faithful_without_a_script_step_for_p_is_one_clear_error():
    with pytest.raises(UserError, match="p = 3"):
        start("unibio_faithful", make("unibio_synthetic", p=3))


FIRST_HIT = {2: 50, 4: 84, 6: 124, 8: 248}  # the reference run of the script


@pytest.mark.parametrize("p", sorted(FIRST_HIT))
def test_faithful_plotted_value_first_falls_below_005_when_the_script_s_does(p):
    """``script_hypergrad`` is the script's plotted |gate · ∇Φ(x_t) + ξ_t|: its first
    iteration below 0.05 is within 3 of the reference for each of 5 seeds (measured 50;
    83-84; 123-125; 247-249). The estimate's own norm lags by up to 5 at p = 8, so a
    metric that recorded the estimate instead would fail here."""
    seeds = torch.arange(5)
    problem = make("unibio_synthetic", p=p)
    cls = get_algorithm("unibio_faithful")
    alg = cls(batch_hyper([cls.Hyper()] * 5, torch.device("cpu")))
    rng = BatchedRNG(seeds, 1)
    state = alg.init(problem, Oracle(problem, BatchedRNG(seeds, 2)), problem.init_x(rng),
                     problem.init_y(rng), BatchedRNG(seeds, 3))  # fmt: skip
    plotted, x_t = [], []
    for _ in range(FIRST_HIT[p] + 10):
        x_t.append(state.x[:, 0])
        state = alg.step(state)
        plotted.append(alg.metrics(problem, state)["script_hypergrad"])
    # the recorded point is the step's x_t and the value is the exact formula + ξ_t
    exact = torch.cos(x_t[-1]) * torch.cos(torch.sin(x_t[-1]))
    assert torch.allclose(plotted[-1], (exact + state.xi[:, 0]).abs(), rtol=0, atol=1e-15)
    first = (torch.stack(plotted) < 0.05).to(torch.int64).argmax(0)
    assert ((first - FIRST_HIT[p]).abs() <= 3).all(), first.tolist()
