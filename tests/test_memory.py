"""Minibatch means without the ``(R, B, ...)`` gather: memory grows with the runs by what
each run needs, not by ``B`` copies of the problem's data, and the rows do not change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bibench.bench import workload_specs
from bibench.problem import batch_mean
from bibench.registry import discover, get_problem
from bibench.runner import _AllocatedBytes, _start, execute_batch

discover([])
DX, DY, N, B = 6, 20, 128, 32
WORKLOAD = f"quadratic[dim_x={DX},dim_y={DY},n_samples={N},batch_size={B}]:soba"


def test_batch_mean_is_the_mean_of_the_gather():
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(N, 3, 4, generator=gen)
    batch = torch.randint(0, N, (5, B), generator=gen)
    batch[0] = 7  # repeated indices count with their multiplicity
    out = batch_mean(data, batch)
    assert out.shape == (5, 3, 4)
    torch.testing.assert_close(out, data[batch].mean(1), rtol=0, atol=1e-15)
    torch.testing.assert_close(out[0], data[7], rtol=0, atol=1e-15)


def _step_bytes(n_runs: int) -> int:
    """Bytes allocated by the init and one SOBA step of ``n_runs`` runs."""
    specs = workload_specs(WORKLOAD, n_runs, 1)
    problem = get_problem("quadratic")(specs[0].problem_params, "cpu")
    with _AllocatedBytes() as counter:
        algorithm, _, state = _start(specs, torch.device("cpu"), problem)
        algorithm.step(state)
    return counter.bytes


def test_one_more_run_costs_its_iterates_and_its_minibatch_means():
    # Per run and step, SOBA needs the means over one minibatch of each level, once
    # (its gradient, HVP and cross product share the g sample; its two f gradients the
    # f sample): (C, D, c) and (A, B, a), i.e. 2 (DY^2 + DY DX + DY) doubles, and each of
    # the 6 embedding_bag calls returns a few int64 of bookkeeping per run (under 16).
    # The rest is vectors: x, y, z, hyperparameters, counts and about 60 intermediate
    # vectors of at most DX + DY doubles; and random draws (2 B sample indices, the
    # initial x and y as DX + DY normal pairs), each through about 20 int64
    # intermediates of the counter-based RNG (shifts, xors, multiplies). The gather it
    # replaces, data[batch], alone costs 7 B DY DX or more per run (7 calls).
    means = (2 * (DY * DY + DY * DX + DY) + 6 * 16) * 8
    vectors = 64 * (DX + DY) * 8
    draws = 24 * (2 * B + 2 * (DX + DY)) * 8
    bound = means + vectors + draws
    grown = (_step_bytes(17) - _step_bytes(1)) / 16
    assert grown <= bound, (grown, bound)
    assert bound < 7 * B * DY * DX * 8  # the bound would catch the gather


def _rows(specs) -> pd.DataFrame:
    frames = execute_batch(specs, "cpu")
    df = pd.concat(frames, ignore_index=True)
    return df[[c for c in df.columns if c != "wall_time" and df[c].dtype.kind in "if"]]


def test_rows_equal_those_of_the_gathered_means(monkeypatch):
    specs = workload_specs(WORKLOAD, 3, 20)
    new = _rows(specs)

    def gathered(self, level, batch, data, full):  # the former code: gather, no reuse
        return full if batch is None else tuple(t[batch].mean(1) for t in data)

    monkeypatch.setattr(get_problem("quadratic"), "_terms", gathered)
    old = _rows(specs)
    assert list(new.columns) == list(old.columns) and len(new) == len(old) > 3
    assert np.allclose(new.to_numpy(), old.to_numpy(), rtol=1e-12, atol=1e-12, equal_nan=True)
    assert (new["step"].iloc[-1], new["n_hvp_yy_g"].iloc[-1]) == (20, 20)


@pytest.mark.parametrize("n_runs", [1, 4])
def test_reused_minibatch_means_are_computed_once(n_runs, monkeypatch):
    calls = []
    import problems.quadratic as quadratic

    monkeypatch.setattr(quadratic, "batch_mean", lambda d, b: calls.append(1) or d[b].mean(1))
    _step_bytes(n_runs)
    assert len(calls) == 6  # 3 data tensors per level, one minibatch per level
