"""The results store on disk: leftovers of killed writes, foreign files, permissions, the
index a no-op re-run reads, and provenance (stale runs after a code edit)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bibench import registry, store
from bibench.cli import main

PLUGIN = '''
"""Lower-level gradient descent whose step size comes from a local module (a test plugin)."""
import dataclasses, os, sys
sys.path.insert(0, os.path.dirname(__file__))
import store_helper
from bibench import Algorithm, HyperParams, State, register_algorithm


@dataclasses.dataclass(frozen=True)
class Hyper(HyperParams):
    lr_y: float = 0.5


@register_algorithm("store_gd")
class StoreGD(Algorithm):
    """Lower-level gradient descent only (a test plugin)."""

    Hyper = Hyper

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        return State(x0, y0)

    def step(self, state):
        lr = self.hp.lr_y * store_helper.SCALE
        return State(state.x, state.y - lr * self.oracle.grad_y_g(state.x, state.y))
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "store_helper.py").write_text("SCALE = 1.0\n")
    path = folder / "store_gd.py"
    path.write_text(PLUGIN)
    return path


def args(out: Path, plugin: Path) -> list[str]:
    return ["run", "--problems", "quadratic[dim_y=[3,4]]", "--algorithms", "store_gd",
            "--seeds", "2", "--budget", "50", "--plugin", str(plugin), "--out", str(out),
            "--quiet", "--yes"]  # fmt: skip


def run_files(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / store.RUNS_DIR).glob("[0-9a-f]*")}


def test_leftovers_of_killed_writes_are_ignored_then_cleaned(plugin, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(args(out, plugin)) == 0
    before = run_files(out)
    runs = out / store.RUNS_DIR
    one = sorted(runs.glob("[0-9a-f]*.parquet"))[0]
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    zero = store._tmp_path(one, pid=dead)
    zero.write_bytes(b"")
    complete = store._tmp_path(one, pid=dead)
    shutil.copy(one, complete)  # a whole run file that was never renamed
    capsys.readouterr()
    # the folder still loads, with no duplicate rows, and no warning (they are ours)
    df = store.load(out)
    assert len(df) == len(df.drop_duplicates(["run_id", "step"])) and df["run_id"].nunique() == 4
    assert "warning" not in capsys.readouterr().err
    # the next run works, runs nothing again, and deletes them
    assert main(args(out, plugin)) == 0
    assert "4 already finished (skipped)" in capsys.readouterr().out
    assert not zero.exists() and not complete.exists()
    assert run_files(out) == before
    # another host's temporary file may be a write in progress: kept until long abandoned
    other = runs / f".tmp-{dead}-ffffff-cccccccc-{one.name}"
    other.write_bytes(b"")
    assert store.clean_leftovers(out) == [] and other.exists()
    old = time.time() - store.LEFTOVER_AGE - 10
    os.utime(other, (old, old))
    assert store.clean_leftovers(out) == [other] and not other.exists()


def test_foreign_files_are_ignored_with_one_warning_and_never_merged(plugin, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(args(out, plugin)) == 0
    rows = len(store.load(out))
    foreign = pd.DataFrame({"run_id": ["x"], "step": [0], "status": ["done"]})
    foreign.to_parquet(out / "other.parquet")
    foreign.to_parquet(out / store.RUNS_DIR / "copy.parquet")
    (out / "notes.txt").write_text("my notes")
    (out / store.RUNS_DIR / "notes.txt").write_text("my notes")
    capsys.readouterr()
    df = store.load(out, include_stale=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bibench: warning: ignored 3 file(s)")
    for name in ("other.parquet", "_runs/copy.parquet", "_runs/notes.txt"):
        assert name in err[0]
    assert len(df) == rows and "x" not in set(df["run_id"])
    # report reads through the same loader
    report = ["report", "--results", str(out), "--out", str(out / "_report"), "--n-boot", "0"]
    assert main(report) == 0
    assert "report of 4 runs" in capsys.readouterr().out


def test_results_files_have_ordinary_permissions(plugin, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        assert main(args(out, plugin)) == 0
    finally:
        os.umask(old)
    files = [out / store.RESULTS_FILE, *(out / store.RUNS_DIR).glob("[0-9a-f]*.parquet")]
    assert len(files) == 5
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o644}


def test_a_no_op_rerun_reads_only_the_index(plugin, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert main(args(out, plugin)) == 0
    reads = []
    real = pd.read_parquet
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: reads.append(a) or real(*a, **k))
    assert main(args(out, plugin)) == 0
    assert "4 already finished" in capsys.readouterr().out
    assert reads == []
    # a run file the index lacks (killed between rename and index) is read once, indexed
    (out / store.RUNS_DIR / ".index").write_text("")
    assert len(store.finished_run_ids(out)) == 4 and len(reads) == 4
    assert len(store.finished_run_ids(out)) == 4 and len(reads) == 4


def test_an_edit_to_a_local_import_gives_new_ids_and_marks_the_old_runs_stale(plugin, tmp_path,
                                                                              capsys):  # fmt: skip
    out = tmp_path / "out"
    assert main(args(out, plugin)) == 0
    first = set(store.load(out)["run_id"])
    helper = plugin.parent / "store_helper.py"
    helper.write_text("SCALE = 0.5\n")  # the plugin file itself is unchanged
    capsys.readouterr()
    assert main(args(out, plugin)) == 0
    assert "4 done" in capsys.readouterr().out  # nothing reused
    df = store.load(out)
    assert df["run_id"].nunique() == 4 and not set(df["run_id"]) & first
    everything = store.load(out, include_stale=True)
    assert everything["run_id"].nunique() == 8
    assert set(everything.loc[everything["stale"], "run_id"]) == first
    assert pd.read_parquet(out / store.RESULTS_FILE)["run_id"].nunique() == 4
    assert main(["report", "--results", str(out), "--out", str(out / "_r"), "--n-boot", "0"]) == 0
    assert "report of 4 runs" in capsys.readouterr().out
    # reverting the edit reuses the first runs and makes them current again
    helper.write_text("SCALE = 1.0\n")
    assert main(args(out, plugin)) == 0
    assert "4 already finished" in capsys.readouterr().out
    assert set(store.load(out)["run_id"]) == first


def test_framework_hash_covers_the_sources_that_make_rows(tmp_path, monkeypatch):
    copy = tmp_path / "bibench"
    shutil.copytree(registry.FRAMEWORK, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(registry, "FRAMEWORK", copy)
    base = registry.framework_hash()
    (copy / "commands" / "report.py").write_text("# edited\n")  # the CLI: no row changes
    (copy / "plan.py").write_text("# edited\n")
    (copy / "store.py").write_text("# edited\n")
    (copy / "papers" / "core.py").write_text("# edited\n")  # configs and verdicts only
    assert registry.framework_hash() == base
    with open(copy / "oracle.py", "a") as fh:
        fh.write("# edited\n")
    assert registry.framework_hash() != base


WRITER = """
import sys, pandas as pd
from bibench import store
out, n = sys.argv[1], int(sys.argv[2])
frame = pd.read_parquet(sys.argv[3])
for i in range(n):
    rid = f"{i:016x}"
    store.write_run(out, rid, frame.assign(run_id=rid, config_id=rid))
    if i % 5 == 0:
        store.consolidate(out)
"""


def test_reading_while_another_process_writes_and_consolidates(plugin, tmp_path):
    out = tmp_path / "out"
    assert main(args(out, plugin)) == 0
    one = sorted((out / store.RUNS_DIR).glob("[0-9a-f]*.parquet"))[0]
    frame = pd.read_parquet(one)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(out), "60", str(one)])
    seen = []
    while writer.poll() is None:
        df = store.load(out)  # never a torn file, a half-built table or a lock error
        seen.append(len(df))
        assert len(df) % len(frame) == 0 and not df.duplicated(["run_id", "step"]).any()
    assert writer.returncode == 0 and len(seen) > 1
    df = store.load(out)
    assert df["run_id"].nunique() == 4 + 60 and len(df) == (4 + 60) * len(frame)
