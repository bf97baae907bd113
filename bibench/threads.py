"""Torch's intra-op thread count for one block of code, restored after it.

:func:`torch.set_num_threads` changes the whole process, so an in-process caller of
``bibench run --threads`` (a test, a notebook, ``bibench claims``) would keep the count
afterwards, and MKL's threaded LU (``getrf``) has been seen to fail after such a change.
In-process code therefore sets the count only for its own work, through
:func:`torch_threads`; worker processes set theirs once for good
(:mod:`bibench.executors`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block on ``threads`` torch threads (0: leave the count as it is), then put
    back the count the process had before, also when the block raises. Nothing is
    changed when the count already is ``threads`` (each change resets the thread pools)."""
    before = torch.get_num_threads()
    if threads and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
