"""Label corruption: exactly the recorded examples flip, to another class, at rate q."""

from __future__ import annotations

import math

import torch

from bibench.data.corruption import corrupt_labels, flip_mask


def test_exactly_the_recorded_examples_flip_and_always_to_another_class():
    labels = torch.arange(3000) % 3
    noisy, flipped = corrupt_labels(labels, 3, 0.3, seed=5)
    assert torch.equal(noisy != labels, flipped)
    assert int(noisy.min()) >= 0 and int(noisy.max()) <= 2


def test_the_flip_rate_is_q_and_the_new_class_is_uniform_over_the_others():
    n, q = 20000, 0.2
    labels = torch.zeros(n, dtype=torch.int64)
    noisy, flipped = corrupt_labels(labels, 4, q, seed=1)
    rate = flipped.double().mean().item()
    assert abs(rate - q) < 4 * math.sqrt(q * (1 - q) / n)
    counts = torch.bincount(noisy[flipped], minlength=4)[1:].double()
    expected = float(flipped.sum()) / 3
    assert counts.sub(expected).abs().max() < 4 * math.sqrt(expected)


def test_the_draw_depends_on_the_seed_only():
    labels = torch.arange(500) % 10
    a = corrupt_labels(labels, 10, 0.4, seed=3)
    b = corrupt_labels(labels.clone(), 10, 0.4, seed=3)
    c = corrupt_labels(labels, 10, 0.4, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # the mask is the same one flip_mask records
    assert torch.equal(a[1], flip_mask(500, 0.4, seed=3))


def test_q_zero_changes_nothing():
    labels = torch.arange(100) % 3
    noisy, flipped = corrupt_labels(labels, 3, 0.0, seed=0)
    assert torch.equal(noisy, labels) and not bool(flipped.any())
