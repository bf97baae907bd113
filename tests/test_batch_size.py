"""Batch size: rows do not depend on it, and ``auto`` fills the memory it is given."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bibench import runner, store
from bibench.config import Budget, RunConfig, expand
from bibench.runner import MEMORY_FRACTION, _AllocatedBytes, memory_per_run, plan
from bibench.sweep import run_sweep

TIMING = ["wall_time", "hostname", "batch_size"]


def grid():
    """8 runs of one lockstep group: stochastic, two float hyperparameter points."""
    cfg = RunConfig(
        problems=[("quadratic", {"dim_y": 6, "noise_std": 0.1, "batch_size": 4})],
        algorithms=[("stocbio", {"lr_x": [0.05, 0.1], "n_inner": 2, "n_neumann": 3})],
        seeds=[0, 1, 2, 3],
        budget=Budget(max_calls=200),
    )
    return expand(cfg)


def test_rows_do_not_depend_on_the_batch_size(tmp_path):
    tables = {}
    for max_batch in (1, 3, 0):
        out = tmp_path / f"b{max_batch}"
        run_sweep(grid(), out, max_batch=max_batch, progress=False)
        df = store.load(out)
        assert (
            sorted(df.groupby("run_id")["batch_size"].first())
            == {1: [1] * 8, 3: [2, 2, 3, 3, 3, 3, 3, 3], 0: [8] * 8}[max_batch]
        )
        tables[max_batch] = df.drop(columns=TIMING).sort_values(["run_id", "step"])
    ref = tables[0].reset_index(drop=True)
    num = ref.select_dtypes("number").columns
    for max_batch in (1, 3):
        other = tables[max_batch].reset_index(drop=True)
        assert list(other.columns) == list(ref.columns)
        assert (other[num] - ref[num]).abs().max().max() <= 1e-12
        pd.testing.assert_frame_equal(other.drop(columns=num), ref.drop(columns=num))
    # the runs moved: noise and minibatches make the iterates differ between seeds
    assert ref.groupby("run_id")["hypergrad_norm"].last().nunique() == 8


def test_allocated_bytes_counts_fresh_tensors_only():
    a = torch.ones(5, dtype=torch.float64)
    with _AllocatedBytes() as counter:
        b = a * 2.0  # 40 fresh bytes
        b.add_(1.0)  # in place: nothing new
        c = torch.zeros(3, 4, dtype=torch.float32)  # 48 bytes
        d = c.view(12)  # a view shares its input's storage: nothing new
    assert d.numel() == 12
    assert counter.bytes == 40 + 48


def test_memory_per_run_is_at_least_the_iterates():
    spec = grid()[0]
    per_run = memory_per_run(spec)
    assert per_run >= 8 * (5 + 6)  # x and y in float64
    # a bigger lower level costs more per run
    bigger = expand(
        RunConfig(
            problems=[("quadratic", {"dim_y": 24, "noise_std": 0.1, "batch_size": 4})],
            algorithms=[("stocbio", {"n_neumann": 3})],
        )
    )[0]
    assert memory_per_run(bigger) > per_run


@pytest.mark.parametrize(("fits", "sizes"), [(3, [3, 3, 2]), (8, [8]), (100, [8]), (0, [1] * 8)])
def test_auto_batch_size_caps_batches_by_free_memory(fits, sizes, monkeypatch):
    specs = grid()
    per_run = memory_per_run(specs[0])
    # free memory such that exactly `fits` runs fill MEMORY_FRACTION of it
    free = (fits + 0.5) * per_run / MEMORY_FRACTION
    monkeypatch.setattr(runner, "available_memory", lambda device: free)
    assert [len(b) for b in plan(specs, "auto")] == sizes
    # two batches running at once share it
    half = plan(specs, "auto", "cpu", sharers=2)
    assert max(len(b) for b in half) == min(8, max(1, fits // 2))
