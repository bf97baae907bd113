"""A recording problem for the sampling-semantics tests.

:class:`Spy` wraps a finite-sum problem and logs every derivative call the counting
oracle makes: its type, the ``(x, y)`` it was evaluated at and the minibatch it used.
:func:`trace` turns one step's log into ``(type, x label, y label, batch label)`` rows:
named points (``"x"``, ``"y"`` before the step, ``"y+"`` after it, ...) keep their
names, other points and every minibatch are labelled in order of first appearance
(``y1, y2, ...``; ``b0, b1, ...``), so two calls share a label exactly when they were
evaluated at the same point or on the same sample.
"""

from __future__ import annotations

import dataclasses

import torch

from bibench.algorithm import batch_hyper
from bibench.oracle import ORACLE_TYPES, Oracle
from bibench.registry import discover, get_algorithm, get_problem
from bibench.rng import BatchedRNG

discover()


@dataclasses.dataclass
class Call:
    kind: str
    x: torch.Tensor
    y: torch.Tensor
    batch: torch.Tensor | None


class Spy:
    """Delegates everything to ``problem`` and records its derivative calls in ``log``."""

    def __init__(self, problem) -> None:
        self._problem = problem
        self.log: list[Call] = []

    def __getattr__(self, name):
        target = getattr(self._problem, name)
        if name not in ORACLE_TYPES or name in ("f", "g"):
            return target

        def record(x, y, *args, batch=None):
            self.log.append(Call(name, x.clone(), y.clone(), None if batch is None else batch))
            return target(x, y, *args, batch=batch)

        return record


def start(name: str, hyper: dict, batch_size: int = 4, seed: int = 0):
    """``(algorithm, spy, state)`` on the finite-sum ``quadratic`` with minibatches."""
    base = get_problem("quadratic")
    spy = Spy(base(base.Params(batch_size=batch_size)))
    seeds = torch.tensor([seed])
    cls = get_algorithm(name)
    alg = cls(batch_hyper([cls.Hyper(**hyper)], torch.device("cpu")))
    rng = BatchedRNG(seeds, 1)
    x0, y0 = spy.init_x(rng), spy.init_y(rng)
    state = alg.init(spy, Oracle(spy, BatchedRNG(seeds, 2)), x0, y0, BatchedRNG(seeds, 3))
    return alg, spy, state


def _label(t: torch.Tensor | None, named: dict[str, torch.Tensor], seen: list, prefix: str):
    if t is None:
        return None
    for key, value in named.items():
        if value.shape == t.shape and torch.equal(value, t):
            return key
    for i, value in enumerate(seen):
        if value.shape == t.shape and torch.equal(value, t):
            return f"{prefix}{i}"
    seen.append(t)
    return f"{prefix}{len(seen) - 1}"


def trace(calls: list[Call], xs: dict[str, torch.Tensor], ys: dict[str, torch.Tensor]):
    """The labelled rows of ``calls`` (module docstring)."""
    seen_x: list = []
    seen_y: list = []
    seen_b: list = []
    return [
        (c.kind, _label(c.x, xs, seen_x, "x"), _label(c.y, ys, seen_y, "y"),
         _label(c.batch, {}, seen_b, "b"))
        for c in calls
    ]


def step_trace(alg, spy, state, extra_ys: dict | None = None):
    """Run one step; return ``(rows, new_state)`` with x = x_k, y = y_k, y+ = y_{k+1}."""
    spy.log.clear()
    new = alg.step(state)
    ys = {"y": state.y, "y+": new.y, **(extra_ys or {})}
    return trace(spy.log, {"x": state.x, "x+": new.x}, ys), new
