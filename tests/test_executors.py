"""Executors and shards: the same runs give the same rows whichever executor ran them,
shards partition the grid, and a sweep resumes across executors."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from bibench import store
from bibench.cli import main
from bibench.config import Budget, RunConfig, expand
from bibench.errors import UserError
from bibench.executors import from_payload, get_executor, to_payload
from bibench.runner import batch_key
from bibench.sweep import parse_shard, run_sweep, shard_specs

TIMING = ["wall_time", "hostname"]  # the columns that may differ between executors

PLUGIN = '''
"""Lower-level gradient descent with a per-run step (a test plugin for workers)."""
import dataclasses
from bibench import Algorithm, HyperParams, State, register_algorithm


@dataclasses.dataclass(frozen=True)
class Hyper(HyperParams):
    lr_y: float = 0.5


@register_algorithm("worker_plugin_gd")
class WorkerGD(Algorithm):
    """Lower-level gradient descent only (a test plugin)."""

    Hyper = Hyper

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        return State(x0, y0)

    def step(self, state):
        y = state.y - self.hp.lr_y * self.oracle.grad_y_g(state.x, state.y)
        return State(state.x, y)
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "worker_gd.py"
    path.write_text(PLUGIN)
    return str(path)


def grid(plugin: str):
    """10 runs in 3 lockstep groups (4, 2 and 4 runs): a stochastic problem, float grids,
    a plugin."""
    cfg = RunConfig(
        problems=[("quadratic", {"dim_y": 6, "noise_std": 0.05, "batch_size": 8})],
        algorithms=[
            ("stocbio", {"lr_x": [0.05, 0.1]}),
            ("aid_cg", {}),
            ("worker_plugin_gd", {"lr_y": [0.3, 0.6]}),
        ],
        seeds=[0, 1],
        budget=Budget(max_calls=600),
        plugins=[plugin],
    )
    return expand(cfg)


def rows(out, ignore: tuple[str, ...] = ()) -> pd.DataFrame:
    df = store.load(out).drop(columns=[*TIMING, *ignore])
    return df.sort_values(["run_id", "step"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def serial_rows(plugin, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    summary = run_sweep(grid(plugin), out, progress=False, plugins=[plugin])
    assert summary.done == 10
    return rows(out)


def test_dask_local_cluster_rows_equal_serial_rows(plugin, serial_rows, tmp_path):
    pytest.importorskip("distributed")
    summary = run_sweep(
        grid(plugin), tmp_path, executor="dask", workers=2, progress=False, plugins=[plugin]
    )
    assert summary.done == 10 and summary.ok
    pd.testing.assert_frame_equal(rows(tmp_path), serial_rows)
    # the workers imported the plugin file and ran both of its hyperparameter points
    df = rows(tmp_path)
    assert sorted(df.loc[df["algorithm"] == "worker_plugin_gd", "hp_lr_y"].unique()) == [0.3, 0.6]


def test_submitit_debug_cluster_rows_equal_serial_rows(plugin, serial_rows, tmp_path):
    pytest.importorskip("submitit")
    slurm = {"cluster": "debug", "folder": str(tmp_path / "jobs")}
    summary = run_sweep(
        grid(plugin),
        tmp_path / "out",
        executor="slurm",
        slurm=slurm,
        progress=False,
        plugins=[plugin],
    )
    assert summary.done == 10
    pd.testing.assert_frame_equal(rows(tmp_path / "out"), serial_rows)


def test_shards_partition_the_grid_and_keep_groups_balanced(plugin):
    specs = grid(plugin)
    ids = {s.run_id for s in specs}
    for count in (1, 2, 3, 8, 11):
        shards = [{s.run_id for s in shard_specs(specs, i, count)} for i in range(1, count + 1)]
        assert set().union(*shards) == ids
        assert sum(len(s) for s in shards) == len(ids)  # disjoint
        # each lockstep group (sizes 4, 2, 4) is cut into near-equal chunks
        for key in {batch_key(s) for s in specs}:
            group = [s.run_id for s in specs if batch_key(s) == key]
            sizes = [len(shard & set(group)) for shard in shards]
            assert max(sizes) - min(sizes) <= 1
    # the split depends on the grid, not on the order it is listed in
    forward, backward = shard_specs(specs, 2, 3), shard_specs(specs[::-1], 2, 3)
    assert {s.run_id for s in forward} == {s.run_id for s in backward}


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shard_is_one_clear_error(text):
    with pytest.raises(UserError, match="bad value for shard"):
        parse_shard(text)


def test_process_pool_resumes_a_serial_shard_and_gives_the_same_rows(plugin, serial_rows, tmp_path):
    specs = grid(plugin)
    first = run_sweep(specs, tmp_path, shard="1/2", progress=False, plugins=[plugin])
    half = {s.run_id for s in shard_specs(specs, 1, 2)}
    assert first.total == first.done == len(half) == 5  # 2 + 1 + 2
    runs = tmp_path / store.RUNS_DIR
    before = {p.stem: p.stat().st_mtime_ns for p in runs.glob("*.parquet")}
    assert set(before) == half

    second = run_sweep(specs, tmp_path, executor="processes", workers=2, progress=False,
                       plugins=[plugin])  # fmt: skip
    assert (second.total, second.skipped, second.done) == (10, 5, 5)
    after = {p.stem: p.stat().st_mtime_ns for p in runs.glob("*.parquet")}
    assert {k: after[k] for k in half} == before  # the serial shard's runs were kept
    # a shard splits lockstep groups, so only the recorded batch size differs
    pd.testing.assert_frame_equal(
        rows(tmp_path, ("batch_size",)), serial_rows.drop(columns="batch_size")
    )


def test_worker_refuses_a_plugin_whose_source_differs(plugin):
    payload = to_payload(grid(plugin)[:1])
    payload[0]["algorithm_source"] = "0" * 40
    with pytest.raises(UserError, match="differs from the main process"):
        from_payload(payload)


@pytest.mark.parametrize(
    ("executor", "module", "extra"),
    [("dask", "distributed", "dask"), ("slurm", "submitit", "slurm")],
)
def test_missing_extra_is_a_one_line_error(executor, module, extra, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(UserError, match=rf"pip install 'bibench\[{extra}\]'"):
        get_executor(executor, "cpu")
    code = main(
        [
            "run",
            "--problems",
            "quadratic",
            "--algorithms",
            "aid_cg",
            "--out",
            str(tmp_path),
            "--executor",
            executor,
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"bibench: error: executor '{executor}' needs")
