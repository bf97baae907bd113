"""Faults on the cluster executors, for real: a Dask ``LocalCluster`` worker and a submitit
local job are killed (``kill -9`` of their own process, by the test plugin) while they run
one batch. That batch's runs are recorded as ``failed`` with a one-line reason, every other
batch completes, and the re-run executes only the failed runs: its table equals an
uninterrupted run's (but for the timing, host and batch-size columns), with no duplicate
(run_id, step) row.

The plugin logs every run it starts to a marks file, so executions are counted, not
inferred, and kills its process every time it starts the batch that was logged first (so
Dask's retries of it die too).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from faults_common import check_rerun, finished_files, plugin_fixture, reference_fixture

from bibench import store
from bibench.cli import build_parser, main
from bibench.commands.run import config_from_args, executor_options
from bibench.config import expand
from bibench.sweep import run_sweep

PLUGIN = '''
"""Lower-level gradient descent that logs the runs it starts to $FAULT_MARKS and, with
$FAULT_KILL set, kills its own process in the batch logged first (a test plugin)."""
import dataclasses, os, signal
from bibench import Algorithm, HyperParams, State, register_algorithm


@dataclasses.dataclass(frozen=True)
class Hyper(HyperParams):
    lr_y: float = 0.5


@register_algorithm("cluster_fault_gd")
class ClusterFaultGD(Algorithm):
    """Lower-level gradient descent only (a test plugin)."""

    Hyper = Hyper

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        marks, dim = os.environ.get("FAULT_MARKS"), y0.shape[-1]
        if marks:
            with open(marks, "a") as fh:
                fh.write("".join(f"{os.getpid()} {dim} {seed}\\n" for seed in rng.seeds.tolist()))
            with open(marks) as fh:
                first = int(fh.readline().split()[1])
            if os.environ.get("FAULT_KILL") and dim == first:
                os.kill(os.getpid(), signal.SIGKILL)
        return State(x0, y0)

    def step(self, state):
        y = state.y - self.hp.lr_y * self.oracle.grad_y_g(state.x, state.y)
        return State(state.x, y)
'''

RUNS = 8  # 2 problem sizes x 2 step sizes x 2 seeds: 2 lockstep batches of 4 runs


def cli(out: Path, plugin: Path, *extra: str) -> list[str]:
    return ["run", "--problems", "quadratic[dim_y=[3,4]]", "--algorithms",
            "cluster_fault_gd[lr_y=[0.3,0.5]]", "--seeds", "2", "--budget", "100",
            "--plugin", str(plugin), "--out", str(out), "--quiet", "--yes", *extra]  # fmt: skip


plugin = plugin_fixture("cluster_fault_gd", PLUGIN)
reference = reference_fixture(cli, RUNS)


def started(marks: Path) -> Counter:
    """dim_y -> how many runs were started with it (a batch of 4 runs counts 4), in the
    order first logged."""
    return Counter(int(line.split()[1]) for line in marks.read_text().splitlines())


def fail_then_rerun(plugin: Path, reference: pd.DataFrame, tmp_path: Path, monkeypatch,
                    executor: list[str], reason: str) -> tuple[int, int, Counter]:  # fmt: skip
    """Sweep with the first batch's process killed every time it runs; check the failed
    batch (its messages match the regular expression ``reason``) and the re-run. Returns
    the killed and the other batch's dim_y, and the first sweep's run starts per dim_y."""
    out, marks = tmp_path / "out", tmp_path / "marks"
    monkeypatch.setenv("FAULT_MARKS", str(marks))
    monkeypatch.setenv("FAULT_KILL", "1")
    args = build_parser().parse_args(cli(out, plugin, *executor))
    cfg = config_from_args(args)
    summary = run_sweep(expand(cfg), out, progress=False, **executor_options(cfg))
    # the killed batch (4 runs) failed with one line naming the loss; the other completed
    assert (summary.total, summary.done, summary.failed) == (RUNS, RUNS - 4, 4)
    assert len(summary.messages) == 4
    assert all(re.search(reason, m) for m in summary.messages), summary.messages[0]
    first = started(marks)
    killed, other = first  # in the order first logged
    status = store.load(out).groupby("run_id").last()
    assert set(status.loc[status["prob_dim_y"] == killed, "status"]) == {"failed"}
    assert set(status.loc[status["prob_dim_y"] == other, "status"]) == {"done"}
    errors = status.loc[status["prob_dim_y"] == killed, "error"]
    assert all(re.search(reason.removeprefix("failed: "), e) and "\n" not in e for e in errors)
    before = finished_files(out)
    assert len(before) == RUNS - 4

    # the re-run, same executor, no kill: only the failed batch is executed again
    monkeypatch.delenv("FAULT_KILL")
    marks.unlink()
    assert main(cli(out, plugin, *executor)) == 0
    assert started(marks) == {killed: 4}
    after = finished_files(out)
    assert len(after) == RUNS and {k: after[k] for k in before} == before
    check_rerun(out, reference)
    return killed, other, first


def test_dask_lost_worker_fails_its_batch_only_and_is_retried(plugin, reference, tmp_path,
                                                               monkeypatch):  # fmt: skip
    pytest.importorskip("distributed")
    import dask

    # Each attempt at the batch kills its worker; Dask gives up after allowed-failures
    # retries on the restarted worker and raises KilledWorker. One worker holds both
    # batches (two tasks for one thread are not queued on the scheduler), so Dask blames
    # the waiting one for each death too: it must be resubmitted, not recorded failed.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        killed, other, first = fail_then_rerun(plugin, reference, tmp_path, monkeypatch,
                                               ["--executor", "dask", "--workers", "1"],
                                               r"failed: KilledWorker: Attempted to run task "
                                               r".* tcp://127\.0\.0\.1:\d+\. ")  # fmt: skip
    assert (first[killed], first[other]) == (2 * 4, 4)  # the first attempt and its retry


def test_submitit_killed_job_fails_its_batch_only_and_is_retried(plugin, reference, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    pytest.importorskip("submitit")
    jobs = tmp_path / "jobs"
    reason = (r"failed: submitit job \d+ ended without a result \(state \w+\); "
              rf"its logs are in {re.escape(str(jobs))}$")  # fmt: skip
    killed, other, first = fail_then_rerun(plugin, reference, tmp_path, monkeypatch,
                                           ["--executor", "slurm", "--slurm",
                                            f"cluster=local,folder={jobs},poll=0.2"],
                                           reason)  # fmt: skip
    assert (first[killed], first[other]) == (4, 4)  # submitit does not resubmit a dead job
