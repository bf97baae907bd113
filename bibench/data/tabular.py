r"""Offline real data: scikit-learn's bundled datasets (shipped inside the wheel, never
fetched), split once into train / validation / test with a recorded seed.

Features are standardised with the *training* split's mean and std (constant features
get std 1), then divided by :math:`\sqrt{d}` so that :math:`\mathbb E\|a_i\|^2 \approx 1`
and the lower-level smoothness constant is at most about 1 (so step sizes near 1 work
across datasets). The three splits are disjoint.
"""

from __future__ import annotations

import dataclasses

import torch

from bibench.errors import UserError

__all__ = ["DATASETS", "TabularSplits", "load_tabular"]

DATASETS = ("digits", "wine", "breast_cancer", "iris")


@dataclasses.dataclass(frozen=True)
class TabularSplits:
    """Float64 features and int64 labels of three disjoint splits."""

    a_train: torch.Tensor
    y_train: torch.Tensor
    a_val: torch.Tensor
    y_val: torch.Tensor
    a_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int


def _bundled(name: str):
    from sklearn import datasets

    loaders = {
        "digits": datasets.load_digits,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "iris": datasets.load_iris,
    }
    if name not in loaders:
        raise UserError(f"unknown offline dataset '{name}' (known: {', '.join(DATASETS)})")
    return loaders[name](return_X_y=True)


def load_tabular(name: str, n_train: int, n_val: int, n_test: int, seed: int) -> TabularSplits:
    """A random split (seeded) of the bundled dataset ``name``; ``n_test = 0`` takes every
    example left after train and validation."""
    data, target = _bundled(name)
    a = torch.as_tensor(data, dtype=torch.float64)
    labels = torch.as_tensor(target, dtype=torch.int64)
    n = a.shape[0]
    n_test = n_test or n - n_train - n_val
    if n_train < 1 or n_val < 1 or n_test < 1 or n_train + n_val + n_test > n:
        raise UserError(
            f"dataset {name} has {n} examples; cannot split into n_train={n_train}, "
            f"n_val={n_val}, n_test={n_test}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    tr, va, te = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :][:n_test]
    mean, std = a[tr].mean(0), a[tr].std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    a = (a - mean) / (std * a.shape[1] ** 0.5)
    k = int(labels.max()) + 1
    return TabularSplits(a[tr], labels[tr], a[va], labels[va], a[te], labels[te], k)
