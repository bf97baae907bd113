r"""Scheduling: the sweep hands batches to workers longest first, and the pool's idle time.

A pool that takes batches in plan order can end on one heavy batch while every other
worker waits. Longest-processing-time-first (Graham 1969) bounds the makespan by
:math:`\tfrac43` of the optimum; it needs only an estimate of each batch's time:

.. math:: \widehat T(\text{batch}) = \text{budget} \times t_\text{call}(\text{problem}, R),

with ``budget`` the batch's oracle-call budget (capped by its ``max_time``) and
:math:`t_\text{call}` the problem's measured time of one ``grad_y_g`` and one
``hvp_yy_g`` call at the batch's ``R`` runs (the median of a few, one measurement per
problem instance and batch size). Every run of a batch shares the call budget, so the
batch's size enters through :math:`t_\text{call}`.

Idle fraction: with the environment variable ``BIBENCH_BATCH_TIMES`` naming a file,
every worker appends one line ``pid start end`` per batch (:func:`timed`); then

.. math:: \text{idle} = 1 - \frac{\sum_\text{batches}(\text{end} - \text{start})}
                           {W\,(\max \text{end} - \min \text{start})},

with ``W`` the number of workers that ran a batch (:func:`idle_fraction`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from bibench.config import RunSpec
from bibench.registry import get_problem

__all__ = ["TIMES_ENV", "estimate_cost", "idle_fraction", "order_batches", "timed"]

TIMES_ENV = "BIBENCH_BATCH_TIMES"
PROBE_CALLS = 3


@functools.cache
def _call_seconds(problem: str, params, n_runs: int) -> float:
    """Median time of one ``grad_y_g`` plus one ``hvp_yy_g`` at ``n_runs`` runs (CPU)."""
    from bibench.rng import BatchedRNG

    prob = get_problem(problem)(params, "cpu")
    rng = BatchedRNG(torch.arange(n_runs), 1)
    x, y = prob.init_x(rng), prob.init_y(rng)
    times = []
    with torch.no_grad():
        for _ in range(PROBE_CALLS + 1):  # the first call warms up
            start = time.perf_counter()
            prob.hvp_yy_g(x, y, prob.grad_y_g(x, y))
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) / 2


def estimate_cost(batch: list[RunSpec]) -> float:
    """Estimated seconds of a batch (module docstring); ``inf`` when the probe fails, so
    that a batch that will fail is tried first."""
    first = batch[0]
    try:
        per_call = _call_seconds(first.problem, first.problem_params, len(batch))
    except Exception:
        return float("inf")
    cost = first.budget.max_calls * per_call
    return min(cost, first.budget.max_time) if first.budget.max_time > 0 else cost


def order_batches(
    batches: list[list[RunSpec]], cost: Callable[[list[RunSpec]], float] = estimate_cost
) -> list[list[RunSpec]]:
    """``batches`` by decreasing ``cost`` (ties keep their order)."""
    costs = [cost(b) for b in batches]
    order = sorted(range(len(batches)), key=lambda i: -costs[i])
    return [batches[i] for i in order]


@contextlib.contextmanager
def timed() -> Iterator[None]:
    """Append ``pid start end`` (``time.time()``) to the file ``$BIBENCH_BATCH_TIMES``."""
    path = os.environ.get(TIMES_ENV)
    start = time.time()
    try:
        yield
    finally:
        if path:
            with open(path, "a") as fh:
                fh.write(f"{os.getpid()} {start:.6f} {time.time():.6f}\n")


def idle_fraction(path: str | Path) -> dict[str, float]:
    """Idle share of the pool's time from the lines :func:`timed` wrote (NaN when no
    worker wrote any: the serial executor runs batches in the main process)."""
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if not rows:
        nan = float("nan")
        return {"workers": 0, "batches": 0, "span_seconds": nan, "busy_seconds": nan,
                "idle_fraction": nan}  # fmt: skip
    pids = {r[0] for r in rows}
    starts, ends = [float(r[1]) for r in rows], [float(r[2]) for r in rows]
    busy = sum(e - s for s, e in zip(starts, ends))
    span = max(ends) - min(starts)
    return {
        "workers": len(pids),
        "batches": len(rows),
        "span_seconds": span,
        "busy_seconds": busy,
        "idle_fraction": 1.0 - busy / (len(pids) * span) if span > 0 else 0.0,
    }
