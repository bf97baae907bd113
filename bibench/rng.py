"""A counter-based random generator with one independent stream per run.

Runs advance in lockstep as one batch, so the randomness of run ``r`` must depend on
its own seed only, never on which other runs share its batch. ``torch.Generator`` is
one stream for the whole tensor; keeping one per run would cost a Python call per run.
Instead every draw hashes ``(seed_r, stream, call, index)`` with SplitMix64 in int64
tensor arithmetic: one vectorised call per draw, and bit-identical numbers for a run
whether it is alone or in a batch of 1,000.
"""

from __future__ import annotations

import math

import torch

__all__ = ["BatchedRNG"]


def _i64(u: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return u - (1 << 64) if u >= 1 << 63 else u


_GOLDEN = _i64(0x9E3779B97F4A7C15)
_M1 = _i64(0xBF58476D1CE4E5B9)
_M2 = _i64(0x94D049BB133111EB)
_STREAM = _i64(0xD1B54A32D192ED03)
_CALL = _i64(0x8CB92BA72F3D8DD7)


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser; int64 multiplication wraps modulo 2**64."""
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


class BatchedRNG:
    """Independent random numbers per run.

    Args:
        seeds: int64 tensor of shape ``(R,)``, one seed per run.
        stream: separates uses that must not share numbers (initial points, oracle
            sampling, algorithm randomness).

    Every draw returns a tensor with leading dimension ``R``. Draw ``k`` of run ``r``
    depends only on ``(seeds[r], stream, k)``.
    """

    def __init__(self, seeds: torch.Tensor, stream: int = 0) -> None:
        self.seeds = seeds.to(torch.int64)
        self.stream = int(stream)
        self.calls = 0

    @property
    def device(self) -> torch.device:
        return self.seeds.device

    def _bits(self, shape: tuple[int, ...]) -> torch.Tensor:
        n = math.prod(shape)
        stream = torch.tensor(self.stream, dtype=torch.int64, device=self.device)
        call = torch.tensor(self.calls, dtype=torch.int64, device=self.device)
        key = _mix(_mix(self.seeds * _GOLDEN + stream * _STREAM) + call * _CALL)  # (R,)
        self.calls += 1
        idx = torch.arange(1, n + 1, device=self.device, dtype=torch.int64) * _GOLDEN
        return _mix(key[:, None] + idx[None, :]).reshape(len(self.seeds), *shape)

    def uniform(self, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Uniform on [0, 1), shape ``(R, *shape)``, 53 random bits each."""
        top = _shr(self._bits(tuple(shape)), 11)
        return top.to(dtype) * (1.0 / (1 << 53))

    def normal(self, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Standard normal, shape ``(R, *shape)`` (Box–Muller)."""
        u = self.uniform(2, *shape, dtype=torch.float64)
        u1 = 1.0 - u[:, 0]  # in (0, 1], safe for log
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u[:, 1])
        return z.to(dtype)

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        """Integers uniform in ``[0, high)``, shape ``(R, *shape)``."""
        u = self.uniform(*shape)
        return torch.clamp((u * high).long(), max=high - 1)

    def spawn(self, stream: int) -> BatchedRNG:
        """A new generator on the same seeds and another stream."""
        return BatchedRNG(self.seeds, stream)

    def select(self, mask: torch.Tensor) -> BatchedRNG:
        """The generator restricted to the runs in ``mask`` (state kept)."""
        out = BatchedRNG(self.seeds[mask], self.stream)
        out.calls = self.calls
        return out
