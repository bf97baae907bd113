r"""Benchmarks of the harness itself (``bibench bench``): how much science fits in a day.

Three measurements, each timed with the device synchronised before every clock read
and reported as the best of ``repeat`` repetitions (the least-disturbed one):

(a) **per-run step time against batch size.** A workload (a problem and an algorithm
    hyperparameter point) runs ``steps`` outer steps through
    :func:`~bibench.runner.execute_batch` for ``R = 1, 2, 4, ...`` lockstep runs, up to
    ``max_batch`` or the memory cap of :func:`~bibench.runner.auto_batch_size`:

    .. math:: t_\text{step}(R) = T_\text{run}(R) / (\text{steps}\cdot R),
              \qquad \text{speedup}(R) = t_\text{step}(1) / t_\text{step}(R).

    :math:`T_\text{run}` is the whole wall time of ``execute_batch`` (problem build,
    checkpoints and ground-truth metrics included), not only the timed steps.
(b) **harness overhead** at a batch ``R``: :math:`T_\text{run}` divided by the time of
    the same oracle calls issued back to back without the harness: the algorithm's
    ``init`` and ``steps`` steps in a bare loop, on an oracle that forwards to the
    problem and counts nothing (no runner, no counting, no checkpoints, no metrics).
    That loop makes the same calls as the run, which is checked by replaying it with a
    counting oracle (untimed) and comparing the counts per type. Reported beside it:
    the time of the problem's raw oracle methods alone (the same count of each type,
    called directly at the run's last iterate), and the shares of :math:`T_\text{run}`
    they take; the rest is the algorithm's own arithmetic and the harness.
(c) **the default benchmark's wall time**: ``bibench run --config configs/default.yml``
    into a temporary folder, in a fresh process, timed from outside; with the pool's
    idle fraction from the workers' per-batch start and end times
    (:func:`bibench.schedule.idle_fraction`).
(d) **torch.compile** (opt-in part ``compile``): per derivative oracle of a workload's
    problem, the eager and the compiled (``torch.compile(dynamic=False)``, one graph
    per batch shape) time per call, the compile time, and the break-even number of
    calls ``compile_seconds / (eager - compiled)`` from which compiling pays. A run
    makes about ``budget`` calls per batch in all, spread over several oracles, so
    compiling pays only where the break-even is well below that.

(e) **the limit** (part ``limit``): the run's wall time :math:`T_\text{run}` against a
    hand-fused torch loop of the same algorithm on the same instance
    (:mod:`bibench.fused`: plain torch, no oracle object, no counting, no checkpoints,
    ``x``-only terms hoisted out of the inner loops; tests/test_fused.py checks that it
    computes the same iterates to 1e-12). The two are timed alternately in this process,
    ``repeat`` times, and the ratio is the median of the per-repetition ratios (robust to
    a machine shared with other work).

(f) **peak memory against batch size** (part ``memory``): for each batch size, a fresh
    process runs ``execute_batch`` on a workload (by default SOBA on a finite-sum
    quadratic with minibatches) and reports its peak resident memory
    (``getrusage``'s ``ru_maxrss``), the peak per run, and the growth per run added to
    a batch of one, :math:`(\text{peak}(R) - \text{peak}(1)) / (R - 1)`: what one more
    run costs, which should be its iterates, not copies of the problem's data.

Memory of (a): on CUDA the allocator's peak for each batch (``torch.cuda.max_memory_allocated``);
on the CPU the estimate :func:`~bibench.runner.memory_per_run` times ``R``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bibench import fused, schedule
from bibench.algorithm import batch_hyper
from bibench.config import Budget, RunConfig, RunSpec, expand, parse_name_list
from bibench.errors import UserError
from bibench.oracle import ORACLE_TYPES, Oracle
from bibench.registry import get_algorithm, get_problem
from bibench.rng import BatchedRNG
from bibench.runner import (
    STREAM_ALGORITHM,
    STREAM_INIT,
    STREAM_ORACLE,
    auto_batch_size,
    execute_batch,
    memory_per_run,
    sync,
)

__all__ = [
    "DEFAULT_WORKLOADS",
    "BenchReport",
    "batch_sizes",
    "check_limit_workload",
    "compile_gain",
    "default_benchmark",
    "harness_overhead",
    "limit_ratio",
    "parse_workload",
    "peak_memory",
    "step_times",
    "workload_specs",
]

LIMIT_WORKLOADS = (
    "quadratic:aid_cg",
    "quadratic:soba",
    "hat:aid_cg[lr_y=0.05,lr_x=0.05]",
    "hat:soba[lr_y=0.5]",
)
"""The workloads of part ``limit`` (every one has a fused loop in :mod:`bibench.fused`)."""
MEMORY_WORKLOAD = "quadratic[dim_x=100,dim_y=100,n_samples=1024,batch_size=128]:soba"
"""Part ``memory``: 1,024 samples of 100 x 100 matrices per level, minibatches of 128."""
DEFAULT_WORKLOADS = ("quadratic:aid_cg", "hat:aid_cg[lr_y=0.05,lr_x=0.05]")
"""aid_cg's defaults diverge on the quartic hat lower level from 2 of 1,024 seeds (200
steps); these steps are stable."""
UNBOUNDED_CALLS = 10**15  # the runs stop on the step count only


def parse_workload(text: str) -> tuple[str, dict, str, dict]:
    """``problem[k=v]:algorithm[k=v]`` -> names and parameter dicts."""
    if ":" not in text:
        raise UserError(f"malformed workload '{text}': expected problem:algorithm")
    prob, alg = text.split(":", 1)
    probs, algs = parse_name_list(prob, "problem"), parse_name_list(alg, "algorithm")
    if len(probs) != 1 or len(algs) != 1:
        raise UserError(f"malformed workload '{text}': expected one problem:algorithm")
    (p_name, p_params), (a_name, a_params) = probs[0], algs[0]
    return p_name, p_params, a_name, a_params


def workload_specs(workload: str, n_runs: int, steps: int) -> list[RunSpec]:
    """``n_runs`` seeds of one workload, stopping after ``steps`` outer steps."""
    p_name, p_params, a_name, a_params = parse_workload(workload)
    cfg = RunConfig(
        problems=[(p_name, p_params)],
        algorithms=[(a_name, a_params)],
        seeds=list(range(n_runs)),
        budget=Budget(max_calls=UNBOUNDED_CALLS, max_steps=steps),
    )
    return expand(cfg)


def _best_time(fn: Callable[[], Any], device: torch.device, repeat: int) -> tuple[float, Any]:
    """Min wall time of ``repeat`` calls (device synced around each) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def _steps_done(frames: list[pd.DataFrame]) -> int:
    return int(max(f["step"].max() for f in frames))


def _statuses(frames: list[pd.DataFrame]) -> str:
    return ",".join(sorted({str(f["status"].iloc[-1]) for f in frames}))


def batch_sizes(cap: int) -> list[int]:
    """1, 2, 4, ... up to ``cap``, and ``cap`` itself."""
    sizes, r = [], 1
    while r < cap:
        sizes.append(r)
        r *= 2
    return [*sizes, cap]


def step_times(
    workload: str, device: torch.device, *, steps: int, max_batch: int, repeat: int
) -> list[dict[str, Any]]:
    """(a): one row per batch size (see the module docstring)."""
    probe = workload_specs(workload, 1, steps)[0]
    per_run_bytes = memory_per_run(probe, device)
    cap = min(max_batch, auto_batch_size(probe, device))
    execute_batch([probe], device)  # warm-up: first-call costs are not per-step costs
    rows = []
    for n in batch_sizes(cap):
        specs = workload_specs(workload, n, steps)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds, frames = _best_time(
            lambda specs=specs: execute_batch(specs, device), device, repeat
        )
        done = _steps_done(frames)
        memory = (
            torch.cuda.max_memory_allocated(device) if device.type == "cuda" else per_run_bytes * n
        )
        rows.append(
            {
                "workload": workload,
                "device": str(device),
                "batch": n,
                "steps": done,
                "run_seconds": seconds,
                "per_run_step_us": 1e6 * seconds / (done * n),
                "memory_mb": memory / 2**20,
                "memory_cap_batch": cap,
                "status": _statuses(frames),
            }
        )
    base = rows[0]["per_run_step_us"]
    for row in rows:
        row["speedup_vs_batch_1"] = base / row["per_run_step_us"]
    return rows


class _Uncounted(Oracle):
    """The oracle minus the counting: what an algorithm would call without the harness."""

    def _count(self, kind: str, batch, active) -> None:
        return None


def _bare_loop(spec_batch: list[RunSpec], device: torch.device, steps: int, oracle_cls):
    """The algorithm's ``init`` and ``steps`` steps in a plain loop (no runner)."""
    first = spec_batch[0]
    problem = get_problem(first.problem)(first.problem_params, device)
    seeds = torch.tensor([s.seed for s in spec_batch], dtype=torch.int64, device=device)
    init_rng = BatchedRNG(seeds, STREAM_INIT)
    x0, y0 = problem.init_x(init_rng), problem.init_y(init_rng)
    oracle = oracle_cls(problem, BatchedRNG(seeds, STREAM_ORACLE))
    algorithm = get_algorithm(first.algorithm)(batch_hyper([s.hyper for s in spec_batch], device))

    def loop():
        state = algorithm.init(problem, oracle, x0, y0, BatchedRNG(seeds, STREAM_ALGORITHM))
        for _ in range(steps):
            state = algorithm.step(state)
        return state

    return problem, oracle, loop


def _raw_oracle_calls(problem, x: torch.Tensor, y: torch.Tensor, counts: dict[str, int]):
    """The problem's oracle methods called back to back, ``counts[type]`` times each."""

    def calls():
        for kind, n in counts.items():
            fn = getattr(problem, kind)
            args = (x, y, y) if kind in ("hvp_yy_g", "cross_xy_g") else (x, y)
            for _ in range(n):
                fn(*args)

    return calls


def harness_overhead(
    workload: str, device: torch.device, *, batch: int, steps: int, repeat: int
) -> dict[str, Any]:
    """(b): the run's wall time over the bare loop's and over the raw oracle calls'."""
    specs = workload_specs(workload, batch, steps)
    execute_batch(specs[:1], device)  # warm-up
    t_run, frames = _best_time(lambda: execute_batch(specs, device), device, repeat)
    done = _steps_done(frames)
    if done != steps:
        raise UserError(f"workload {workload}: every run stopped before {steps} steps")
    # a run that diverged stopped being recorded, not being stepped: take a finished one
    last = max(frames, key=lambda f: int(f["oracle_calls"].iloc[-1]))
    run_counts = {t: int(last[f"n_{t}"].iloc[-1]) for t in ORACLE_TYPES}

    problem, _, loop = _bare_loop(specs, device, steps, _Uncounted)
    t_bare, state = _best_time(loop, device, repeat)
    _, check, replay = _bare_loop(specs, device, steps, Oracle)
    replay()
    bare_counts = {t: int(c.max()) for t, c in check.counts.items()}
    if bare_counts != run_counts:
        raise RuntimeError(f"bare loop made other calls than the run: {bare_counts}")
    calls = _raw_oracle_calls(problem, state.x, state.y, run_counts)
    t_oracle, _ = _best_time(calls, device, repeat)
    return {
        "workload": workload,
        "device": str(device),
        "batch": batch,
        "steps": steps,
        "oracle_calls_per_run": sum(run_counts.values()),
        "calls": run_counts,
        "run_seconds": t_run,
        "bare_loop_seconds": t_bare,
        "raw_oracle_seconds": t_oracle,
        "overhead": t_run / t_bare,
        "run_over_raw_oracles": t_run / t_oracle,
        "raw_oracle_share": t_oracle / t_run,
    }


def default_benchmark(
    config: str | Path, device: str, plugins: list[str], threads: int = 0,
    results: str | Path | None = None,
) -> dict[str, Any]:
    """(c): ``bibench run --config CONFIG`` in a fresh process, into a temporary folder or
    the fresh folder ``results`` (with ``threads`` torch threads, through
    ``OMP_NUM_THREADS``, when not 0)."""
    config = Path(config)
    if not config.is_file():
        raise UserError(f"config file not found: {config}")
    if results is not None and Path(results).exists() and any(Path(results).iterdir()):
        raise UserError(f"--results {results} is not empty: a timed run starts from nothing")
    with tempfile.TemporaryDirectory(prefix="bibench-bench-") as tmp:
        out = str(results or Path(tmp) / "results")
        times = Path(tmp) / "batch_times.txt"  # the workers' per-batch times
        cmd = [
            sys.executable,
            "-m",
            "bibench.cli",
            "run",
            "--config",
            str(config),
            "--out",
            out,
            "--device",
            device,
            "--quiet",
            "--yes",  # no confirmation (and no planning probe) inside a timed run
        ]
        for plugin in plugins:
            cmd += ["--plugin", plugin]
        start = time.perf_counter()
        env = dict(os.environ, **{schedule.TIMES_ENV: str(times)})
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if proc.returncode not in (0, 1):  # 1: some runs failed, still timed
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"default benchmark failed (exit {proc.returncode}): {tail}")
        runs = pd.read_parquet(out).groupby("run_id")["status"].last()
        pool = schedule.idle_fraction(times)
    return {
        "config": str(config),
        "device": device,
        "threads": threads or torch.get_num_threads(),
        "wall_seconds": seconds,
        "runs": len(runs),
        "statuses": {k: int(v) for k, v in runs.value_counts().items()},
        **pool,
    }


def check_limit_workload(workload: str) -> None:
    """A UserError naming a workload of part ``limit`` that has no fused loop."""
    spec = workload_specs(workload, 1, 1)[0]
    try:
        fused.check(spec.problem, spec.problem_params, spec.algorithm)
    except ValueError as exc:
        raise UserError(f"workload {workload}: {exc}") from None


def limit_ratio(
    workload: str, device: torch.device, *, batch: int, steps: int, repeat: int
) -> dict[str, Any]:
    """(e): the run's wall time over the hand-fused loop's (see the module docstring)."""
    specs = workload_specs(workload, batch, steps)
    first = specs[0]
    problem = get_problem(first.problem)(first.problem_params, device)
    seeds = torch.tensor([s.seed for s in specs], dtype=torch.int64, device=device)
    init_rng = BatchedRNG(seeds, STREAM_INIT)
    x0, y0 = problem.init_x(init_rng), problem.init_y(init_rng)

    def hand_fused():
        return fused.fused_loop(first.algorithm, problem, first.hyper, x0, y0, steps)

    execute_batch(specs[:1], device)  # warm-up of both
    hand_fused()
    t_run, t_fused, frames = [], [], []
    for _ in range(repeat):
        seconds, frames = _best_time(lambda: execute_batch(specs, device), device, 1)
        t_run.append(seconds)
        t_fused.append(_best_time(hand_fused, device, 1)[0])
    ratios = torch.tensor(t_run) / torch.tensor(t_fused)
    return {
        "workload": workload,
        "device": str(device),
        "batch": batch,
        "steps": _steps_done(frames),
        "run_seconds": float(torch.tensor(t_run).median()),
        "fused_seconds": float(torch.tensor(t_fused).median()),
        "ratio": float(ratios.median()),
        "ratio_min": float(ratios.min()),
        "ratio_max": float(ratios.max()),
        "status": _statuses(frames),
    }


_PEAK_SCRIPT = """
import json, resource, sys
import torch
from bibench.bench import workload_specs
from bibench.registry import discover
from bibench.runner import execute_batch
workload, batch, steps, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
discover(sys.argv[5:])
frames = execute_batch(workload_specs(workload, batch, steps), torch.device(device))
status = ",".join(sorted({str(f["status"].iloc[-1]) for f in frames}))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
print(json.dumps({"peak_bytes": peak, "status": status}))
"""


def peak_memory(
    workload: str, batches: list[int], *, steps: int, plugins: list[str], threads: int = 0
) -> list[dict[str, Any]]:
    """(f): peak resident memory of ``execute_batch`` at each batch size, each in a fresh
    CPU process (so that one size's high-water mark does not hide the next's)."""
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    for batch in batches:
        cmd = [sys.executable, "-c", _PEAK_SCRIPT, workload, str(batch), str(steps), "cpu"]
        proc = subprocess.run([*cmd, *plugins], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"memory probe of {workload} at batch {batch} failed: {tail}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"workload": workload, "batch": batch, "steps": steps, **out})
    base = rows[0]["peak_bytes"] if rows[0]["batch"] == 1 else math.nan
    for row in rows:
        row["peak_mb"] = row["peak_bytes"] / 2**20
        row["peak_per_run_mb"] = row["peak_mb"] / row["batch"]
        extra = row["batch"] - 1
        row["growth_per_run_mb"] = (row["peak_bytes"] - base) / extra / 2**20 if extra else 0.0
    return rows


DERIVATIVE_ORACLES = ("grad_x_f", "grad_y_f", "grad_x_g", "grad_y_g", "hvp_yy_g", "cross_xy_g")


def compile_gain(
    workload: str, device: torch.device, *, batch: int, calls: int
) -> list[dict[str, Any]]:
    """(d): one row per derivative oracle of the workload's problem."""
    spec = workload_specs(workload, batch, 1)[0]
    problem = get_problem(spec.problem)(spec.problem_params, device)
    rng = BatchedRNG(torch.arange(batch, device=device), STREAM_INIT)
    x, y = problem.init_x(rng), problem.init_y(rng)
    rows = []
    for kind in DERIVATIVE_ORACLES:
        eager = getattr(problem, kind)
        args = (x, y, torch.ones_like(y)) if kind in ("hvp_yy_g", "cross_xy_g") else (x, y)

        def many(fn=eager, args=args):
            for _ in range(calls):
                fn(*args)

        many()  # warm-up
        t_eager, _ = _best_time(many, device, 1)
        compiled = torch.compile(eager, dynamic=False)
        t_compile, out = _best_time(lambda c=compiled, a=args: c(*a), device, 1)
        many(compiled)
        t_compiled, _ = _best_time(lambda c=compiled: many(c), device, 1)
        gain = (t_eager - t_compiled) / calls
        rows.append(
            {
                "workload": workload,
                "device": str(device),
                "batch": batch,
                "oracle": kind,
                "eager_us": 1e6 * t_eager / calls,
                "compiled_us": 1e6 * t_compiled / calls,
                "compile_seconds": t_compile,
                "break_even_calls": t_compile / gain if gain > 0 else float("inf"),
                "max_abs_diff": float((out - eager(*args)).abs().max()),
            }
        )
    return rows


@dataclasses.dataclass
class BenchReport:
    """Everything ``bibench bench`` measured (``to_json`` for the file)."""

    device: str
    torch_version: str = torch.__version__
    threads: int = dataclasses.field(default_factory=torch.get_num_threads)
    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    overhead: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    default: dict[str, Any] | None = None
    compile: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    limit: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    memory: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)
