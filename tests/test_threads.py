"""In-process code leaves torch's thread count as it found it (bibench/threads.py).

Checked in a fresh interpreter that first sets 3 threads, so that this test process's own
count is never changed (a change is what breaks MKL's threaded LU later) and the starting
count, 3, differs from every count asked for. There, through the API (no command's
restore around it): :func:`bibench.plan.plan_sweep` probes on 1 thread (serial), and
:func:`bibench.sweep.run_sweep` on submitit's ``debug`` cluster (which runs the batch in
this very process) runs it on ``cores // workers = 1`` thread; through
``bibench.cli.main``: ``run --threads 1`` runs its batch on 1 thread, ``run --dry-run``
probes on 1 thread, ``run --executor slurm --slurm cluster=debug`` runs on 1 thread, and
``bench --threads 1`` times on 1 thread. After each the count is 3 again. Spies on
``execute_batch``, ``step_cost`` and ``bench.step_times`` read the count the work ran
with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
import torch
from bibench import bench, executors, plan
from bibench.cli import build_parser, main
from bibench.commands.run import config_from_args, executor_options
from bibench.config import expand
from bibench.sweep import run_sweep
from bibench.threads import torch_threads

seen = {"batch": [], "probe": [], "bench": []}


def spy(kind, real):
    def wrapped(*args, **kwargs):
        seen[kind].append(torch.get_num_threads())
        return real(*args, **kwargs)
    return wrapped


torch.set_num_threads(3)
executors.execute_batch = spy("batch", executors.execute_batch)
plan.step_cost = spy("probe", plan.step_cost)
bench.step_times = spy("bench", bench.step_times)
out = sys.argv[1]
common = ["--problems", "quadratic", "--algorithms", "aid_cg", "--seeds", "1",
          "--budget", "200", "--quiet", "--yes"]
cases = {
    "threads": ["--threads", "1"],
    "dry_run": ["--dry-run"],
    "debug_cluster": ["--executor", "slurm", "--slurm", f"cluster=debug,folder={out}/jobs"],
}
result = {"start": torch.get_num_threads()}


def parsed(name, extra):
    return config_from_args(build_parser().parse_args(
        ["run", *common, "--out", f"{out}/{name}", *extra]))


# first through the API, without a command's own restore around it: the plan's probe and
# a sweep on submitit's debug cluster
cfg = parsed("api_plan", [])
plan.plan_sweep(expand(cfg), cfg.out, device=cfg.device, **executor_options(cfg))
result["api_plan"] = {"probe": list(seen["probe"]), "after": torch.get_num_threads()}
cfg = parsed("api_debug_cluster", cases["debug_cluster"])
summary = run_sweep(expand(cfg), cfg.out, progress=False, **executor_options(cfg))
result["api_debug_cluster"] = {"done": summary.done, "batch": list(seen["batch"]),
                               "after": torch.get_num_threads()}
for name, extra in cases.items():
    seen["batch"].clear()
    seen["probe"].clear()
    code = main(["run", *common, "--out", f"{out}/{name}", *extra])
    result[name] = {"code": code, "batch": list(seen["batch"]), "probe": list(seen["probe"]),
                    "after": torch.get_num_threads()}
code = main(["bench", "--device", "cpu", "--parts", "steps", "--workloads",
             "quadratic[dim_y=4]:aid_cg", "--steps", "2", "--max-batch", "1", "--repeat", "1",
             "--threads", "1", "--out", f"{out}/bench"])
result["bench"] = {"code": code, "steps": list(seen["bench"]), "after": torch.get_num_threads()}
try:
    with torch_threads(2):
        result["inside"] = torch.get_num_threads()
        raise KeyError("x")
except KeyError:
    result["after_raise"] = torch.get_num_threads()
with torch_threads(0):
    result["inside_zero"] = torch.get_num_threads()
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("threads")
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_fresh_process_starts_on_three_threads(result):
    assert result["start"] == 3


def test_run_threads_1_runs_on_one_thread_and_restores_the_count(result):
    case = result["threads"]
    assert case["code"] == 0
    assert case["batch"] == [1]
    assert case["after"] == 3


def test_dry_run_probes_on_one_thread_and_restores_the_count(result):
    case = result["dry_run"]
    assert case["code"] == 0
    assert case["batch"] == [] and case["probe"] == [1]
    assert case["after"] == 3


def test_a_batch_run_in_the_main_process_by_submitit_restores_the_count(result):
    pytest.importorskip("submitit")
    case = result["debug_cluster"]
    assert case["code"] == 0
    assert case["batch"] == [1]  # cores // workers, workers = cores
    assert case["after"] == 3


def test_the_plan_probe_through_the_api_restores_the_count(result):
    case = result["api_plan"]
    assert case["probe"] == [1]  # serial: one thread, as the plan's docstring says
    assert case["after"] == 3


def test_a_sweep_run_through_the_api_on_submitit_debug_restores_the_count(result):
    pytest.importorskip("submitit")
    case = result["api_debug_cluster"]
    assert case["done"] == 1
    assert case["batch"] == [1]
    assert case["after"] == 3


def test_bench_threads_1_times_on_one_thread_and_restores_the_count(result):
    case = result["bench"]
    assert case["code"] == 0
    assert case["steps"] == [1]
    assert case["after"] == 3


def test_torch_threads_restores_after_an_exception_and_0_leaves_the_count(result):
    assert result["inside"] == 2
    assert result["after_raise"] == 3
    assert result["inside_zero"] == 3
