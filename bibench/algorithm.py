r"""The algorithm contract.

An algorithm plugin is a class registered with ``@register_algorithm("name")``:

.. code-block:: python

    @dataclasses.dataclass(frozen=True)
    class Hyper(HyperParams):
        lr_x: float = 0.1          # float fields may differ between runs of a batch
        n_inner: int = 10          # int / bool / str fields are the same in a batch

    @register_algorithm("my_alg")
    class MyAlg(Algorithm):
        '''One-line description.

        Update equations, the paper, and every choice the paper left open.
        '''
        Hyper = Hyper
        grid = {"lr_x": [0.01, 0.1, 1.0]}   # default grid (the paper's tuning range)

        def init(self, problem, oracle, x0, y0, rng) -> State: ...
        def step(self, state) -> State: ...

Contract:

* ``self.hp`` holds the hyperparameters: ``float`` fields are tensors of shape
  ``(R, 1)`` (one value per run, so hyperparameter points share a batch), other fields
  are plain Python values, equal across the batch.
* ``init`` receives the problem (for dims and, where an algorithm documents it, exact
  oracle-free helpers), the counting :class:`~bibench.oracle.Oracle`, initial points
  ``x0 (R, dim_x)`` and ``y0 (R, dim_y)``, and a per-run :class:`~bibench.rng.BatchedRNG`
  for the algorithm's own randomness. Everything about ``f`` and ``g`` must go through
  the oracle, so it is counted.
* ``step`` advances every run by one outer iteration and returns the new state. The
  state is any object with tensor attributes ``x`` and ``y`` (leading run dimension);
  :class:`State` is the plain default.
* The harness owns the loop, budgets, checkpoints, timing and divergence detection.
  ``metrics(problem, state)`` may return extra untimed per-run columns.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from bibench.oracle import Oracle
from bibench.params import ParamsBase, per_run_fields
from bibench.problem import Problem
from bibench.rng import BatchedRNG

__all__ = ["Algorithm", "HyperParams", "State", "batch_hyper"]


@dataclasses.dataclass(frozen=True)
class HyperParams(ParamsBase):
    """Base of algorithm hyperparameter dataclasses. Fields whose name starts with
    ``lr``, ``alpha``, ``beta``, ``eta`` or ``gamma`` must be positive by default."""

    def validate(self) -> None:
        super().validate()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            positive = f.name.startswith(("lr", "alpha", "eta", "gamma"))
            if positive and isinstance(value, (int, float)) and value <= 0:
                raise ValueError(f"{f.name} must be > 0, got {value}")
            if f.name.startswith(("n_", "num_")) and isinstance(value, int) and value < 0:
                raise ValueError(f"{f.name} must be >= 0, got {value}")


@dataclasses.dataclass
class State:
    """Default algorithm state: the iterates (extend with your own fields)."""

    x: torch.Tensor
    y: torch.Tensor


class Algorithm:
    """Base class of every algorithm plugin (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    Hyper: ClassVar[type[HyperParams]] = HyperParams
    grid: ClassVar[dict[str, list[Any]]] = {}
    control_budget: ClassVar[int] = 0
    """Oracle calls within which the defaults reach ||grad Phi|| <= 1e-6 on the
    deterministic ``quadratic`` at its default parameters (the stated control budget)."""
    zero_respecting: ClassVar[bool] = True
    """Whether iterates stay in the span of oracle outputs (Chen, Xu, Zhang 2024)."""
    oracle: Oracle
    problem: Problem

    def __init__(self, hp: Any) -> None:
        self.hp = hp

    def init(
        self, problem: Problem, oracle: Oracle, x0: torch.Tensor, y0: torch.Tensor, rng: BatchedRNG
    ) -> Any:
        raise NotImplementedError

    def step(self, state: Any) -> Any:
        raise NotImplementedError

    def metrics(self, problem: Problem, state: Any) -> dict[str, torch.Tensor]:
        return {}

    @classmethod
    def description(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def batch_hyper(points: list[Any], device: torch.device, dtype=torch.float64) -> Any:
    """Merge hyperparameter points of one batch: ``float`` fields become ``(R, 1)``
    tensors, the other fields must agree (the runner groups runs so that they do)."""
    first = points[0]
    values: dict[str, Any] = {}
    floats = set(per_run_fields(type(first)))
    for f in dataclasses.fields(first):
        vals = [getattr(p, f.name) for p in points]
        if f.name in floats:
            values[f.name] = torch.tensor(vals, dtype=dtype, device=device)[:, None]
        else:
            if any(v != vals[0] for v in vals):
                raise ValueError(f"static hyperparameter {f.name} differs inside a batch")
            values[f.name] = vals[0]
    return dataclasses.replace(first, **values)
