"""Control check for every registered algorithm on the strongly convex quadratic.

Deterministic: the defaults reach ||grad Phi|| <= 1e-6 within the algorithm's stated
``control_budget``. Stochastic: the final ||grad Phi|| shrinks as the noise std shrinks
(median over seeds, same budget, same seeds).
"""

from __future__ import annotations

import pytest

from bibench.config import Budget, RunConfig, expand
from bibench.registry import ALGORITHMS, discover
from bibench.runner import execute_batch

discover()
NAMES = sorted(ALGORITHMS.entries)
# Exempt, each for a stated reason (see the algorithm's docstring):
# - unibio_faithful copies the authors' script: sign descent with its own fixed noise;
# - bome stalls at a level of ||grad Phi|| proportional to its constant step (measured
#   1.7 at lr = 0.01 after 1.5M calls): its limit needs lambda -> infinity;
# - ttsa's randomly truncated Neumann series is noise of its own even with exact
#   oracles, and its steps decay as k^-3/5, k^-2/5: sublinear, never 1e-6 in CI budgets;
# - unibio's default is the paper's constant normalized step, which moves exactly eta per
#   step and oscillates at scale L_Phi * eta (its "clipped" schedule converges: tested in
#   test_unibio.py).
EXEMPT = {"unibio_faithful", "bome", "ttsa", "unibio"}
NO_LIMIT = ["bome", "ttsa", "unibio"]


def final_norms(name: str, budget: int, seeds, **params) -> list[float]:
    cfg = RunConfig(problems=[("quadratic", params)], algorithms=[(name, {})], seeds=list(seeds),
                    budget=Budget(max_calls=budget))  # fmt: skip
    frames = execute_batch(expand(cfg))
    for f in frames:
        assert f["status"].iloc[-1] == "done", f["error"].iloc[-1]
    return [f["hypergrad_norm"].iloc[-1] for f in frames]


@pytest.mark.parametrize("name", [n for n in NAMES if n not in EXEMPT])
def test_deterministic_defaults_reach_1e_6_within_the_stated_budget(name):
    budget = ALGORITHMS.entries[name].control_budget
    assert budget > 0, f"{name} states no control_budget"
    norms = final_norms(name, budget, seeds=[0, 1])
    assert max(norms) <= 1e-6, norms


@pytest.mark.parametrize("name", [n for n in NAMES if n not in EXEMPT])
def test_stochastic_final_hypergrad_shrinks_with_the_noise(name):
    budget = ALGORITHMS.entries[name].control_budget
    seeds = range(5)
    median = []
    for std in (1.0, 0.1, 0.01):
        norms = sorted(final_norms(name, budget, seeds, noise_std=std))
        median.append(norms[len(norms) // 2])
    assert median[0] > median[1] > median[2], median


@pytest.mark.parametrize("name", NO_LIMIT)
def test_methods_without_a_1e_6_limit_still_descend_on_the_control(name):
    """Their known behaviour: a steady decrease from ||grad Phi(x0)|| ~ 31 (factor >= 2.5
    in 20k calls; measured 2.8-5.6 for ttsa, 4.1 for bome, 15-17 for unibio), not
    convergence to 0."""
    cfg = RunConfig(problems=[("quadratic", {})], algorithms=[(name, {})], seeds=[0, 1],
                    budget=Budget(max_calls=20_000))  # fmt: skip
    for f in execute_batch(expand(cfg)):
        assert f["status"].iloc[-1] == "done", f["error"].iloc[-1]
        assert f["hypergrad_norm"].iloc[-1] <= f["hypergrad_norm"].iloc[0] / 2.5
