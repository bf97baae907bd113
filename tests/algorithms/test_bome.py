"""BOME on its own toy (P9): the optimistic solution x* = 1, and one step by hand.

P9: g = y1²/2 − x y1, f = (x − y2)²/2 + (y1 − 1)²/2. One inner step of size 1 gives
ŷ = (x, y2) exactly, so q̂ = g(x, y) − g(x, ŷ) = (y1 − x)²/2 is the exact value gap and
∇q̂ = (x − y1, y1 − x, 0), ∇f = (x − y2, y1 − 1, y2 − x),
λ = max(η − ⟨∇f, ∇q̂⟩/‖∇q̂‖², 0), (x, y) ← (x, y) − ξ(∇f + λ∇q̂).
"""

from __future__ import annotations

import pytest
import torch

from bibench.algorithm import batch_hyper
from bibench.config import Budget, RunConfig, expand
from bibench.oracle import Oracle
from bibench.registry import get_algorithm, get_problem
from bibench.rng import BatchedRNG
from bibench.runner import execute_batch


@pytest.mark.parametrize("y2_init", [0.0, 0.4])
def test_bome_reaches_the_optimistic_solution_on_its_toy(y2_init):
    """The paper's toy settings (ξ = α = 0.5, η = 0.5, T = 10): |x − 1| ≤ 1e-10, while
    BGS-Opt converges to (1 + y2⁰)/2 from the same start."""
    hyper = {"lr": 0.5, "eta": 0.5, "lr_y": 0.5, "n_inner": 10}
    cfg = RunConfig(problems=[("bome_toy", {"y2_init": y2_init})], algorithms=[("bome", hyper)],
                    seeds=[0], budget=Budget(max_calls=3000))  # fmt: skip
    frame = execute_batch(expand(cfg))[0]
    assert frame["status"].iloc[-1] == "done"
    assert frame["hypergrad_norm"].iloc[-1] <= 1e-10  # |Φ'(x)| = |x − 1|
    assert frame["dist_to_solution"].iloc[-1] <= 1e-10  # |y1 − x|


def step_from(x0: float, y0: tuple[float, float], eta: float = 0.5, lr: float = 0.1):
    problem = get_problem("bome_toy")()
    seeds = torch.zeros(1, dtype=torch.int64)
    cls = get_algorithm("bome")
    alg = cls(batch_hyper([cls.Hyper(lr=lr, eta=eta, lr_y=1.0, n_inner=1)], torch.device("cpu")))
    oracle = Oracle(problem, BatchedRNG(seeds, 2))
    x = torch.tensor([[x0]], dtype=torch.float64)
    y = torch.tensor([y0], dtype=torch.float64)
    return alg.step(alg.init(problem, oracle, x, y, BatchedRNG(seeds, 3)))


@pytest.mark.parametrize("x, y1, y2, eta", [
    (0.3, 0.8, -0.5, 0.5),  # λ = 1.5
    (0.3, -0.2, 0.1, 2.0),  # λ = 0.6
    (0.3, 1.5, 1.5, 0.5),  # ⟨∇f, ∇q̂⟩/‖∇q̂‖² = 0.708 > η: λ clamped to 0
])  # fmt: skip
def test_one_step_matches_the_dynamic_barrier_by_hand(x, y1, y2, eta):
    df = torch.tensor([x - y2, y1 - 1.0, y2 - x], dtype=torch.float64)
    dq = torch.tensor([x - y1, y1 - x, 0.0], dtype=torch.float64)
    lam = max(eta - float(df @ dq) / float(dq @ dq), 0.0)
    expected = torch.tensor([x, y1, y2], dtype=torch.float64) - 0.1 * (df + lam * dq)
    state = step_from(x, (y1, y2), eta=eta)
    got = torch.cat([state.x[0], state.y[0]])
    assert torch.allclose(got, expected, rtol=0, atol=1e-14)


def test_barrier_is_off_when_the_constraint_gradient_vanishes():
    """y1 = x: ∇q̂ = 0, λ = 0 (not 0/0) and the step is plain descent on f."""
    state = step_from(0.3, (0.3, -0.5))
    expected = torch.tensor([0.3 - 0.1 * 0.8, 0.3 - 0.1 * (0.3 - 1.0), -0.5 - 0.1 * (-0.8)])
    assert torch.allclose(torch.cat([state.x[0], state.y[0]]), expected.double(), atol=1e-15)
