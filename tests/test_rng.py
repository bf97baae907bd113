"""The per-run counter-based generator."""

from __future__ import annotations

import math

import torch

from bibench.rng import BatchedRNG


def test_a_run_draws_the_same_numbers_alone_or_in_a_batch():
    batch = BatchedRNG(torch.tensor([3, 7, 11]), stream=2)
    alone = BatchedRNG(torch.tensor([7]), stream=2)
    for _ in range(3):
        assert torch.equal(batch.normal(5)[1], alone.normal(5)[0])
        assert torch.equal(batch.randint(10, 4)[1], alone.randint(10, 4)[0])


def test_streams_and_seeds_differ():
    a = BatchedRNG(torch.tensor([0, 1]), stream=0).uniform(100)
    b = BatchedRNG(torch.tensor([0, 1]), stream=1).uniform(100)
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a, b)


def test_moments_within_statistical_tolerance():
    n = 200_000
    rng = BatchedRNG(torch.tensor([0, 1]))
    u = rng.uniform(n)
    z = rng.normal(n)
    k = rng.randint(6, n)
    # 6 standard errors: false alarm probability ~ 1e-9
    assert ((u.mean(1) - 0.5).abs() < 6 * math.sqrt(1 / 12 / n)).all()
    assert (z.mean(1).abs() < 6 / math.sqrt(n)).all()
    assert ((z.var(1) - 1).abs() < 6 * math.sqrt(2 / n)).all()
    assert k.min() == 0 and k.max() == 5
    freq = torch.stack([(k == j).double().mean(1) for j in range(6)])
    assert ((freq - 1 / 6).abs() < 6 * math.sqrt(5 / 36 / n)).all()
    assert u.min() >= 0 and u.max() < 1
