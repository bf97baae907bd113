"""The per-run counter-based generator."""

from __future__ import annotations

import math

import numpy as np
import torch

from bibench.rng import BatchedRNG, _shr


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


def test_splitmix_finaliser_matches_the_reference_sequence():
    # Steele, Lea & Flood's SplitMix64 from state 0: the first two outputs are the
    # finaliser at 1 and 2 golden-ratio increments.
    from bibench.rng import _GOLDEN_U, _mix, _mix_np

    z = np.array([1, 2], dtype=np.uint64) * _GOLDEN_U
    assert [int(v) for v in _mix_np(z)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    t = torch.from_numpy(z.view(np.int64).copy())
    assert _mix(t).numpy().view(np.uint64).tolist() == _mix_np(z).tolist()


def test_numpy_and_torch_paths_draw_the_same_bits_and_normals_to_an_ulp():
    seeds = torch.tensor([0, 5, 2**40 + 3])
    a, b = BatchedRNG(seeds, stream=3), BatchedRNG(seeds, stream=3)
    for n in (1, 7, 64):
        bits_torch = a._bits((n,)).numpy().view(np.uint64)
        assert np.array_equal(bits_torch, b._bits_np(n))
    # the normals of the torch path (as on a GPU) against the CPU path, same draw index
    c, d = BatchedRNG(seeds, stream=1), BatchedRNG(seeds, stream=1)
    top = _shr(c._bits((2, 9)), 11).double() / (1 << 53)
    z_torch = torch.sqrt(-2.0 * torch.log(1.0 - top[:, 0])) * torch.cos(2 * math.pi * top[:, 1])
    z_np = d.normal(9)
    assert torch.allclose(z_np, z_torch, rtol=4e-16, atol=4e-16)
    assert c.calls == d.calls == 1
