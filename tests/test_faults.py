"""Fault injection, for real: ``kill -9`` of a running ``bibench run`` at random moments and
inside a write, SIGINT, a killed pool worker, a killed main process with a pool (and no
worker left behind), two concurrent runs on one folder. After each, the re-run's table
equals an uninterrupted run's (but for the timing, host and batch-size columns), has no
duplicate (run_id, step) row, and no finished run was executed again.

The test plugin logs every run it starts (worker pid, dim_y, seed, lr_y) to a marks file,
so executions are counted, not inferred.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
from faults_common import check_rerun, finished_files, plugin_fixture, reference_fixture, table

from bibench import store
from bibench.cli import build_parser, main
from bibench.commands.run import config_from_args
from bibench.config import expand
from bibench.sweep import run_sweep

PLUGIN = '''
"""Lower-level gradient descent that logs the runs it starts to $FAULT_MARKS and sleeps
$FAULT_SLEEP seconds a step (a test plugin)."""
import dataclasses, os, time
from bibench import Algorithm, HyperParams, State, register_algorithm


@dataclasses.dataclass(frozen=True)
class Hyper(HyperParams):
    lr_y: float = 0.5


@register_algorithm("fault_gd")
class FaultGD(Algorithm):
    """Lower-level gradient descent only (a test plugin)."""

    Hyper = Hyper

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        marks = os.environ.get("FAULT_MARKS")
        if marks:
            lines = "".join(
                f"{os.getpid()} {y0.shape[-1]} {seed} {lr:g}\\n"
                for seed, lr in zip(rng.seeds.tolist(), self.hp.lr_y.flatten().tolist())
            )
            with open(marks, "a") as fh:
                fh.write(lines)
        return State(x0, y0)

    def step(self, state):
        time.sleep(float(os.environ.get("FAULT_SLEEP", "0")))
        y = state.y - self.hp.lr_y * self.oracle.grad_y_g(state.x, state.y)
        return State(state.x, y)
'''

# Kills the process from inside one of the store's writes: "rename" after the temporary
# file is complete (never renamed), "empty" with a zero-byte temporary file, "index"
# between the rename and the index line.
KILLER = '''
import os, signal, sys
import pandas as pd
from bibench import store

mode, after = sys.argv[1], int(sys.argv[2])
count = [0]


def due():
    count[0] += 1
    return count[0] > after


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if mode == "rename":
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".parquet") and store.RUNS_DIR in str(dst) and due():
            die()
        return real_replace(src, dst)

    os.replace = replace
elif mode == "empty":
    real_to_parquet = pd.DataFrame.to_parquet

    def to_parquet(self, path, *args, **kwargs):
        if store.RUNS_DIR in str(path) and due():
            open(path, "wb").close()
            die()
        return real_to_parquet(self, path, *args, **kwargs)

    pd.DataFrame.to_parquet = to_parquet
else:
    real_append = store._append_index

    def append(out, entries):
        if due():
            die()
        return real_append(out, entries)

    store._append_index = append
from bibench.cli import main

sys.exit(main(sys.argv[3:]))
'''

RUNS = 16  # 4 problem sizes x 2 step sizes x 2 seeds: 4 lockstep batches of 4 runs


def cli(out: Path, plugin: Path, *extra: str) -> list[str]:
    return ["run", "--problems", "quadratic[dim_y=[3,4,5,6]]", "--algorithms",
            "fault_gd[lr_y=[0.3,0.5]]", "--seeds", "2", "--budget", "100", "--plugin",
            str(plugin), "--out", str(out), "--quiet", "--yes", *extra]  # fmt: skip


plugin = plugin_fixture("fault_gd", PLUGIN)
reference = reference_fixture(cli, RUNS)


def env(marks: Path, sleep: float = 0.01) -> dict[str, str]:
    return dict(os.environ, FAULT_MARKS=str(marks), FAULT_SLEEP=str(sleep))


def marks_of(marks: Path) -> list[tuple[str, ...]]:
    """(dim_y, seed, lr_y) of every run start, in order."""
    if not marks.exists():
        return []
    return [tuple(line.split()[1:]) for line in marks.read_text().splitlines() if line]


def run_key(df: pd.DataFrame) -> dict[tuple[str, ...], str]:
    """(dim_y, seed, lr_y) -> run_id, as the plugin writes them."""
    first = df.groupby("run_id").head(1)
    return {(str(r.prob_dim_y), str(r.seed), f"{r.hp_lr_y:g}"): r.run_id
            for r in first.itertuples()}  # fmt: skip


def wait_for(predicate, proc=None, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        if proc is not None and proc.poll() is not None:
            return
        time.sleep(0.02)


def test_ten_kill_9_at_random_moments_and_inside_writes(plugin, reference, tmp_path,
                                                          monkeypatch):  # fmt: skip
    out, marks = tmp_path / "out", tmp_path / "marks"
    rng = random.Random(10)
    # 7 kills at a random moment after a batch started, 3 inside the store's writes
    faults = ["random"] * 7 + ["rename", "empty", "index"]
    rng.shuffle(faults)
    kept: dict[str, int] = {}  # finished runs at each kill and their file times
    starts_at_kill: list[tuple[int, set[str]]] = []
    for fault in faults:
        started = len(marks_of(marks))
        if fault == "random":
            cmd = [sys.executable, "-m", "bibench.cli", *cli(out, plugin)]
        else:
            cmd = [sys.executable, "-c", KILLER, fault, "1", *cli(out, plugin)]
        proc = subprocess.Popen(cmd, env=env(marks), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        if fault == "random":
            wait_for(lambda s=started: len(marks_of(marks)) > s, proc)
            time.sleep(rng.uniform(0.0, 1.5))
            proc.kill()
        proc.wait(timeout=120)
        # every kill leaves a readable folder; finished runs were not touched again
        now = finished_files(out)
        assert {k: now[k] for k in kept} == kept
        kept = now
        starts_at_kill.append((len(marks_of(marks)), set(now)))
        if fault in ("rename", "empty"):
            leftovers = list((out / store.RUNS_DIR).glob(".tmp-*.parquet"))
            assert len(leftovers) == 1
            assert (leftovers[0].stat().st_size == 0) == (fault == "empty")
    assert len(starts_at_kill) == 10

    monkeypatch.setenv("FAULT_MARKS", str(marks))
    assert main(cli(out, plugin)) == 0
    assert not list((out / store.RUNS_DIR).glob(".tmp-*"))  # the leftovers were cleaned
    check_rerun(out, reference)
    # no run finished at a kill was started again after it
    keys = run_key(table(out))
    starts = [keys[m] for m in marks_of(marks)]
    for n, finished in starts_at_kill:
        assert not finished & set(starts[n:])
    assert set(starts) == set(keys.values())


def _interruptible() -> None:
    """Ctrl-C as from a terminal: a test session started in the background (``cmd &`` in a
    script) ignores SIGINT, and a child would inherit that and finish the grid."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_stops_cleanly_and_the_rerun_completes(plugin, reference, tmp_path):
    out, marks = tmp_path / "out", tmp_path / "marks"
    proc = subprocess.Popen([sys.executable, "-m", "bibench.cli", *cli(out, plugin)],
                            env=env(marks, 0.02), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible)  # fmt: skip
    wait_for(lambda: len(marks_of(marks)) > 4, proc)  # the second batch started
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("bibench: interrupted")
    before = finished_files(out)
    assert 4 <= len(before) < RUNS
    assert main(cli(out, plugin)) == 0
    after = finished_files(out)
    assert {k: after[k] for k in before} == before
    check_rerun(out, reference)


def test_killed_pool_worker_fails_its_batch_only_and_is_retried(plugin, reference, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    out, marks = tmp_path / "out", tmp_path / "marks"
    monkeypatch.setenv("FAULT_MARKS", str(marks))
    monkeypatch.setenv("FAULT_SLEEP", "0.02")
    victim: list[int] = []

    def kill_first_worker() -> None:
        wait_for(lambda: marks.exists() and marks.read_text().strip())
        pid = int(marks.read_text().split()[0])
        victim.append(pid)
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    specs = expand(config_from_args(build_parser().parse_args(cli(out, plugin))))
    summary = run_sweep(specs, out, executor="processes", workers=2, progress=False,
                        plugins=[str(plugin)])  # fmt: skip
    killer.join()
    # the killed worker's batch (4 runs) failed with one line naming the death; the
    # worker pool's other batches were resubmitted and completed
    assert (summary.done, summary.failed) == (RUNS - 4, 4)
    assert len(summary.messages) == 4
    assert all(f"worker process {victim[0]} died (killed by SIGKILL" in m
               for m in summary.messages)  # fmt: skip
    before = finished_files(out)
    assert len(before) == RUNS - 4

    monkeypatch.delenv("FAULT_SLEEP")
    assert main(cli(out, plugin)) == 0  # the failed batch is retried
    after = finished_files(out)
    assert {k: after[k] for k in before} == before
    check_rerun(out, reference)


def test_killed_main_process_leaves_no_pool_worker(plugin, reference, tmp_path):
    out, marks = tmp_path / "out", tmp_path / "marks"
    cmd = [sys.executable, "-m", "bibench.cli",
           *cli(out, plugin, "--executor", "processes", "--workers", "2")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env(marks, 0.05), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(lambda: len({m.split()[0] for m in marks.read_text().splitlines()}) == 2
             if marks.exists() else False, proc)  # fmt: skip  # both workers busy
    children = psutil.Process(proc.pid).children(recursive=True)
    workers = {int(m.split()[0]) for m in marks.read_text().splitlines()}
    assert workers <= {c.pid for c in children}
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=15)
    assert alive == []  # every worker (and helper process) exited with the main process

    assert main(cli(out, plugin)) == 0
    check_rerun(out, reference)


def test_two_concurrent_runs_on_one_folder_execute_each_run_once(plugin, reference, tmp_path):
    out, marks = tmp_path / "out", tmp_path / "marks"
    cmd = [sys.executable, "-m", "bibench.cli", *cli(out, plugin)]
    procs = [
        subprocess.Popen(cmd, env=env(marks, 0.02), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    starts = marks_of(marks)
    assert len(starts) == RUNS and len(set(starts)) == RUNS  # each run executed once
    by_process = collections.Counter(
        line.split()[0] for line in marks.read_text().splitlines()
    )
    assert sum(by_process.values()) == RUNS
    # each process says how many it ran and how many the other one had
    done = [int(o.split(" runs: ", 1)[1].split(" done")[0]) for o, _ in outputs]
    assert sum(done) == RUNS
    print(f"runs executed by each process: {done}")
    check_rerun(out, reference)
