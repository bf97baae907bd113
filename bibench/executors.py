"""Executors: where lockstep batches run. Every executor yields, for each batch, the
frames :func:`bibench.runner.execute_batch` returns; the sweep writes them. So the
same runs give the same rows whichever executor ran them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from bibench.config import RunSpec
from bibench.errors import UserError
from bibench.runner import execute_batch

__all__ = ["EXECUTORS", "Executor", "SerialExecutor", "get_executor"]

BatchResult = tuple[list[RunSpec], list[pd.DataFrame]]


class Executor:
    """Runs batches; ``map`` yields ``(batch, frames)`` as batches complete."""

    def __init__(self, device: str = "cpu", **options) -> None:
        self.device = device
        self.options = options

    def map(self, batches: list[list[RunSpec]]) -> Iterator[BatchResult]:
        raise NotImplementedError


class SerialExecutor(Executor):
    """Batches one after another in this process (the default)."""

    def map(self, batches: list[list[RunSpec]]) -> Iterator[BatchResult]:
        for batch in batches:
            yield batch, execute_batch(batch, self.device)


EXECUTORS: dict[str, type[Executor]] = {"serial": SerialExecutor}


def get_executor(name: str, device: str, **options) -> Executor:
    if name not in EXECUTORS:
        raise UserError(f"unknown executor '{name}' (known: {', '.join(EXECUTORS)})")
    return EXECUTORS[name](device=device, **options)
