r"""Label corruption for hypercleaning, drawn once with a recorded seed.

Each training label is flipped independently with probability ``q``; a flipped label
becomes one of the *other* ``K - 1`` classes uniformly, :math:`\tilde y = (y + r) \bmod K`
with :math:`r \sim U\{1, \dots, K-1\}` (Shaban, Cheng, Hatch & Boots, AISTATS 2019,
arXiv 1810.10667; UniBiO, ICLR 2026, arXiv 2603.00027, Sec. 6). The flips are
drawn once from ``seed`` and returned with their mask, so the corrupted examples are
known exactly (the UniBiO authors' loader re-draws them on every access, a bug we do
not copy).
"""

from __future__ import annotations

import torch

__all__ = ["corrupt_labels", "flip_mask"]


def flip_mask(n: int, q: float, seed: int) -> torch.Tensor:
    """Bool ``(n,)``: which of ``n`` examples are corrupted, each with probability ``q``."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(n, generator=gen, dtype=torch.float64) < q


def corrupt_labels(
    labels: torch.Tensor, n_classes: int, q: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noisy labels, flipped mask)``: ``labels`` (int64 ``(n,)``) with each entry moved
    to a uniformly chosen other class with probability ``q``; draws depend only on
    ``seed`` and ``n``."""
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    n = labels.shape[0]
    flipped = flip_mask(n, q, seed)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    shift = torch.randint(1, n_classes, (n,), generator=gen)
    noisy = torch.where(flipped, (labels.cpu() + shift) % n_classes, labels.cpu())
    return noisy.to(labels.device), flipped.to(labels.device)
