"""Longest batches first, by budget x measured per-call cost; the pool's idle fraction."""

from __future__ import annotations

import dataclasses
import math

import pytest

from bibench.bench import workload_specs
from bibench.config import Budget
from bibench.registry import discover
from bibench.schedule import estimate_cost, idle_fraction, order_batches

discover([])


def _batch(workload: str, runs: int, **budget):
    specs = workload_specs(workload, runs, 10)
    return [dataclasses.replace(s, budget=Budget(**budget)) for s in specs]


def test_order_batches_sorts_by_decreasing_cost_and_keeps_ties_in_order():
    batches = [[f"b{i}"] for i in range(5)]
    costs = {"b0": 1.0, "b1": 5.0, "b2": 3.0, "b3": 5.0, "b4": math.inf}
    ordered = order_batches(batches, cost=lambda b: costs[b[0]])
    assert [b[0] for b in ordered] == ["b4", "b1", "b3", "b2", "b0"]


def test_cost_is_the_budget_times_one_measured_per_call_time():
    small = _batch("quadratic[dim_y=7]:soba", 2, max_calls=100)
    large = _batch("quadratic[dim_y=7]:soba", 2, max_calls=1000)
    capped = _batch("quadratic[dim_y=7]:soba", 2, max_calls=1000, max_time=1e-9)
    # one measurement per (problem instance, batch size): the ratio is the budgets'
    assert estimate_cost(large) == pytest.approx(10 * estimate_cost(small), rel=1e-12)
    assert estimate_cost(capped) == 1e-9
    assert order_batches([small, large]) == [large, small]


def test_a_batch_whose_probe_fails_goes_first():
    broken = _batch("quadratic[dim_y=7]:soba", 1, max_calls=10)
    broken = [dataclasses.replace(s, problem="no_such_problem") for s in broken]
    assert estimate_cost(broken) == math.inf


def test_idle_fraction_from_per_batch_times(tmp_path):
    # two workers over [0, 10]: busy 10 + 4 = 14 of 20 worker-seconds
    times = tmp_path / "t.txt"
    times.write_text("1 0 6\n2 0 4\n1 6 10\n")
    pool = idle_fraction(times)
    assert (pool["workers"], pool["batches"], pool["span_seconds"]) == (2, 3, 10.0)
    assert pool["idle_fraction"] == pytest.approx(6 / 20)
    assert math.isnan(idle_fraction(tmp_path / "absent.txt")["idle_fraction"])
