"""Interrupted and failed runs: a killed ``run`` resumes with only the unfinished runs,
and a failed run is recorded but retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from bibench.cli import main

SLOW_PLUGIN = '''
"""Gradient descent that sleeps when BIBENCH_TEST_SLOW is set, and fails when
BIBENCH_TEST_FAIL is set (a test plugin)."""
import dataclasses, os, time
from bibench import Algorithm, HyperParams, State, register_algorithm


@dataclasses.dataclass(frozen=True)
class Hyper(HyperParams):
    lr_y: float = 1.0


@register_algorithm("sleepy_plugin")
class Sleepy(Algorithm):
    """Lower-level gradient descent only (a test plugin)."""

    Hyper = Hyper

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        return State(x0, y0)

    def step(self, state):
        if os.environ.get("BIBENCH_TEST_SLOW"):
            time.sleep(0.05)
        if os.environ.get("BIBENCH_TEST_FAIL"):
            raise FloatingPointError("planted failure")
        y = state.y - self.hp.lr_y * self.oracle.grad_y_g(state.x, state.y)
        return State(state.x, y)
'''


def cli_args(out: Path, plugin: Path) -> list[str]:
    return ["run", "--problems", "quadratic[dim_y=[4,5,6]]", "--algorithms",
            "aid_cg,sleepy_plugin", "--seeds", "2", "--budget", "300", "--plugin", str(plugin),
            "--out", str(out), "--quiet"]  # fmt: skip


def files(out: Path) -> dict[str, int]:
    # run files only: pathlib's glob also matches the hidden temporary file of a write
    return {p.stem: p.stat().st_mtime_ns for p in (out / "_runs").glob("[!.]*.parquet")}


def test_killed_run_resumes_with_only_the_unfinished_runs(tmp_path):
    plugin = tmp_path / "sleepy.py"
    plugin.write_text(SLOW_PLUGIN)
    out = tmp_path / "out"
    env = dict(os.environ, BIBENCH_TEST_SLOW="1")
    proc = subprocess.Popen([sys.executable, "-m", "bibench.cli", *cli_args(out, plugin)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while len(files(out)) < 2:  # the fast aid_cg batch writes its 2 runs; sleepy takes ~15 s
        assert time.time() < deadline
        time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    first = files(out)
    # the first batch (aid_cg, 2 seeds) finished; the sleepy batch was cut mid-way
    assert len(first) == 2

    code = main(cli_args(out, plugin))
    assert code == 0
    second = files(out)
    assert len(second) == 12  # 3 problem sizes x 2 algorithms x 2 seeds
    assert {k: second[k] for k in first} == first  # finished runs were not redone
    df = pd.read_parquet(out)
    assert df["run_id"].nunique() == 12 and set(df["status"]) == {"done"}


def test_failed_run_is_recorded_then_retried(tmp_path, capsys, monkeypatch):
    plugin = tmp_path / "sleepy2.py"
    plugin.write_text(SLOW_PLUGIN.replace("sleepy_plugin", "sleepy_plugin2"))
    out = tmp_path / "out"
    args = ["run", "--problems", "quadratic", "--algorithms", "aid_cg,sleepy_plugin2",
            "--seeds", "1", "--budget", "200", "--plugin", str(plugin), "--out", str(out),
            "--quiet"]  # fmt: skip
    monkeypatch.setenv("BIBENCH_TEST_FAIL", "1")
    assert main(args) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("bibench: run")]
    assert len(lines) == 1 and "failed" in lines[0] and "planted failure" in lines[0]
    df = pd.read_parquet(out)
    assert set(df.groupby("algorithm")["status"].last().items()) == {
        ("aid_cg", "done"), ("sleepy_plugin2", "failed")}  # fmt: skip
    before = files(out)

    monkeypatch.delenv("BIBENCH_TEST_FAIL")
    assert main(args) == 0
    out_text = capsys.readouterr().out
    assert "1 done" in out_text and "1 already finished" in out_text
    after = files(out)
    aid_id = df.loc[df["algorithm"] == "aid_cg", "run_id"].iloc[0]
    assert after[aid_id] == before[aid_id]  # the finished run was kept
    df = pd.read_parquet(out)
    assert set(df["status"]) == {"done"}
