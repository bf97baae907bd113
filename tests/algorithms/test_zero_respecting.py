"""Negative control: zero-respecting algorithms cannot move on the Chen–Xu–Zhang instance.

On ``cxz_hard`` (P13) with q = 2TK lower coordinates, g does not depend on x and its
gradient couples only neighbouring coordinates, so from y0 = 0 each lower-level query
(gradient or HVP) makes at most one more coordinate non-zero, while ∇x f = ∇y f = 0 until a
coordinate beyond q/2 is reached (Chen, Xu, Zhang 2024, hardness theorem). Every oracle
call is at most one such query, so at every checkpoint with fewer than q/2 oracle calls a
zero-respecting algorithm still has x = x0 = 0, where |Φ′(x)| = |x + 1| = 1 exactly.

Every registered algorithm whose class declares ``zero_respecting = True`` is run at its
defaults (algorithms added later are picked up by the registry).
"""

from __future__ import annotations

import pytest

from bibench.config import Budget, RunConfig, expand
from bibench.registry import ALGORITHMS, discover
from bibench.runner import execute_batch

discover()
ZERO_RESPECTING = sorted(n for n, cls in ALGORITHMS.entries.items() if cls.zero_respecting)
T, K = 25, 40
Q = 2 * T * K  # lower-level dimension


@pytest.mark.parametrize("name", ZERO_RESPECTING)
def test_zero_respecting_defaults_stay_at_unit_hypergradient(name):
    cfg = RunConfig(problems=[("cxz_hard", {"T": T, "K": K})], algorithms=[(name, {})],
                    seeds=[0], budget=Budget(max_calls=Q // 2))  # fmt: skip
    frame = execute_batch(expand(cfg))[0]
    assert frame["status"].iloc[-1] == "done", frame["error"].iloc[-1]
    below = frame[frame["oracle_calls"] < Q // 2]
    assert (below["step"] >= 1).any(), f"{name}: its first step already makes q/2 calls"
    assert (below["hypergrad_norm"] == 1.0).all(), below[["oracle_calls", "hypergrad_norm"]]
    assert (below["active_depth"] <= below["oracle_calls"]).all()  # the chain argument


def test_the_control_detects_an_algorithm_that_reads_the_solution():
    """HG-MS with ``exact`` selection reads y* (all coordinates non-zero): x moves at once."""
    cfg = RunConfig(problems=[("cxz_hard", {"T": T, "K": K})],
                    algorithms=[("hg_ms", {"selection": "exact"})], seeds=[0],
                    budget=Budget(max_calls=Q // 2))  # fmt: skip
    frame = execute_batch(expand(cfg))[0]
    first = frame[frame["step"] >= 1].iloc[0]
    assert first["oracle_calls"] < Q // 2
    assert first["hypergrad_norm"] < 1.0  # Φ′(x) = x + 1 with x < 0 after one step
