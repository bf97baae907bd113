r"""Planning a sweep before running it: what a config expands to and what it will cost.

:func:`expansions` names every factor that multiplies the run count (a grid, a
list-valued parameter, the seeds), per ``experiments:`` block. :func:`make_plan` counts
the runs, the runs still to do and the lockstep batches per (problem, algorithm), and
estimates the cost from the budgets and a measured per-step cost:

* per batch kind (one :func:`~bibench.runner.batch_key`), the first batch is probed by
  :func:`bibench.runner.step_cost`: its init, one untimed warm-up step, then up to
  ``PROBE_STEPS`` timed steps, the fastest counting, in CPU time on one thread (or the
  ``threads`` given) so that other processes on a busy machine do not inflate it (each
  problem instance is built once);
* a batch then costs ``build + init + min(ceil(max_calls / calls_per_step), max_steps) *
  seconds_per_step``, capped by ``max_time`` (``build``: the wall time to build its
  problem instance, which every batch does); the sweep's wall time is the sum over
  batches divided by the parallel workers (never below the longest batch).

It is an estimate: checkpoint metrics are not charged, runs that diverge stop early,
and on a shared machine the probe's clock is as noisy as the run's. Batch kinds left
when ``PROBE_TOTAL`` seconds of probing are spent take the median per-call cost of the
probed ones.

:func:`write_plan` stores the run ids of a sweep in ``OUT/_plan.json`` (all of the
grid, also for one shard of it), which ``bibench status`` compares with the store to
count the pending runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bibench import store
from bibench.config import RunConfig, RunSpec
from bibench.registry import get_algorithm, get_problem
from bibench.runner import batch_key, plan, step_cost
from bibench.threads import torch_threads

__all__ = [
    "CONFIRM_RUNS",
    "CONFIRM_SECONDS",
    "PLAN_FILE",
    "SweepPlan",
    "expansions",
    "make_plan",
    "plan_sweep",
    "read_plan",
    "write_plan",
]

PLAN_FILE = "_plan.json"
PROBE_STEPS = 5  # timed steps per batch kind, after one warm-up step
PROBE_SECONDS = 0.05  # fewer timed steps once a probe has taken this long
PROBE_TOTAL = 20.0  # seconds of probing, after which the median per-call cost is used
CONFIRM_PROBE = 5.0  # the same before a real run (it only decides whether to ask)
CONFIRM_RUNS = 200  # a sweep with more runs to do is planned before it starts ...
CONFIRM_SECONDS = 600.0  # ... and asks for confirmation (or --yes) if estimated longer


def _points(params: dict[str, Any]) -> tuple[int, list[str]]:
    """Points of a parameter product, and the list-valued keys that multiply it."""
    lists = {k: len(v) for k, v in params.items() if isinstance(v, list)}
    return math.prod(lists.values()), [f"{k} ({n})" for k, n in lists.items()]


def _block_expansions(cfg: RunConfig) -> tuple[list[str], int]:
    lines = []
    n_problems = 0
    for name, params in cfg.problems:
        n, keys = _points(params if isinstance(params, dict) else {})
        n_problems += n
        if n > 1:
            lines.append(f"problem {name}: {' × '.join(keys)} -> {n} points")
    use_grid = bool(cfg.extra.get("grid", False))
    n_algorithms = 0
    for name, hyper in cfg.algorithms:  # the rule of config.expand
        grid = hyper == "grid" or (use_grid and hyper == {})
        hyper = dict(get_algorithm(name).grid) if grid else {} if hyper == "default" else hyper
        n, keys = _points(hyper if isinstance(hyper, dict) else {})
        n_algorithms += n
        if grid:
            lines.append(f"{name}: grid {' × '.join(keys)} -> {n} points")
        elif n > 1:
            lines.append(f"{name}: {' × '.join(keys)} -> {n} points")
    runs = n_problems * n_algorithms * len(cfg.seeds)
    lines.append(f"{n_problems} problem points × {n_algorithms} algorithm points × "
                 f"{len(cfg.seeds)} seeds = {runs:,} runs")  # fmt: skip
    return lines, runs


def expansions(cfg: RunConfig) -> list[str]:
    """One line per factor that multiplies the run count, and the product per block
    (before ``--problems``/``--algorithms`` selection and de-duplication across blocks)."""
    if not cfg.blocks:
        return _block_expansions(cfg)[0]
    lines = []
    for i, block in enumerate(cfg.blocks):
        block_lines, _ = _block_expansions(block)
        lines += [f"experiments[{i}]: {line}" for line in block_lines]
    return lines


@dataclasses.dataclass
class SweepPlan:
    """Counts and cost estimate of a sweep. ``table``: one row per (problem, algorithm)
    with ``runs``, ``finished``, ``to_run``, ``batches``, ``oracle_calls`` (the budgets of
    the runs to do) and ``seconds`` (estimated, NaN where the probe failed)."""

    table: pd.DataFrame
    workers: int
    probe_seconds: float = 0.0
    probed: int = 0  # batch kinds probed
    kinds: int = 0  # batch kinds to run
    failures: list[str] = dataclasses.field(default_factory=list)
    longest: float = 0.0  # estimated seconds of the longest batch

    @property
    def runs(self) -> int:
        return int(self.table["runs"].sum())

    @property
    def to_run(self) -> int:
        return int(self.table["to_run"].sum())

    @property
    def serial_seconds(self) -> float:
        return float(self.table["seconds"].sum())

    @property
    def wall_seconds(self) -> float:
        """Estimated wall time: the serial cost spread over the workers (not below the
        longest batch)."""
        return max(self.serial_seconds / self.workers, self.longest)

    def lines(self) -> list[str]:
        shown = self.table.copy()
        shown["oracle_calls"] = shown["oracle_calls"].map(_si)
        shown["est_time"] = shown.pop("seconds").map(_duration)
        total = (f"{self.runs:,} runs: {self.runs - self.to_run:,} already finished, "
                 f"{self.to_run:,} to run in {int(self.table['batches'].sum())} batches, "
                 f"{_si(self.table['oracle_calls'].sum())} oracle calls")  # fmt: skip
        out = [total, *shown.to_string(index=False).splitlines()]
        if self.kinds:
            out.append(
                f"estimated wall time: {_duration(self.wall_seconds)} on {self.workers} "
                f"worker(s) ({_duration(self.serial_seconds)} of batch time; probe: "
                f"{self.probed} of {self.kinds} batch kinds, {self.probe_seconds:.1f} s). "
                "An estimate: checkpoint metrics are not charged, diverged runs stop early."
            )
        out += self.failures
        return out


def _si(n: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{int(n)}"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _batch_seconds(batch: list[RunSpec], init: float, per_step: float, calls: float) -> float:
    budget = batch[0].budget
    steps = min(math.ceil(budget.max_calls / calls), budget.max_steps) if calls > 0 else 1
    seconds = init + steps * per_step
    return min(seconds, budget.max_time) if budget.max_time > 0 else seconds


def make_plan(
    specs: list[RunSpec],
    finished: set[str],
    *,
    max_batch: int | str = 0,
    device: str | torch.device = "cpu",
    workers: int = 1,
    threads: int = 0,
    probe: bool = True,
    probe_total: float = PROBE_TOTAL,
) -> SweepPlan:
    """Plan ``specs`` (unique runs) given the ``finished`` run ids; ``workers`` batches
    run at once on ``threads`` torch threads each (0: this process's). ``probe=False``
    skips the cost estimate; ``probe_total``: seconds the probe may take."""
    todo = [s for s in specs if s.run_id not in finished]
    batches = plan(todo, max_batch, device)
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for s in specs:
        row = rows.setdefault((s.problem, s.algorithm), dict.fromkeys(
            ("runs", "finished", "to_run", "batches", "oracle_calls", "seconds"), 0))  # fmt: skip
        row["runs"] += 1
        row["finished"] += s.run_id in finished
        row["to_run"] += s.run_id not in finished
        row["oracle_calls"] += 0 if s.run_id in finished else s.budget.max_calls
    for b in batches:
        rows[b[0].problem, b[0].algorithm]["batches"] += 1
    result = SweepPlan(pd.DataFrame(), max(1, workers))
    if probe and batches:
        seconds = _probe(batches, torch.device(device), threads, probe_total, result)
        for b, sec in zip(batches, seconds):
            rows[b[0].problem, b[0].algorithm]["seconds"] += sec
        result.longest = max((s for s in seconds if math.isfinite(s)), default=0.0)
    table = pd.DataFrame([{"problem": p, "algorithm": a, **row} for (p, a), row in rows.items()])
    for col in ("runs", "finished", "to_run", "batches", "oracle_calls"):
        table[col] = table[col].astype(int)
    if not probe or not batches:
        table = table.drop(columns="seconds").assign(seconds=math.nan if batches else 0.0)
    result.table = table
    return result


def _probe(
    batches: list[list[RunSpec]],
    device: torch.device,
    threads: int,
    total: float,
    result: SweepPlan,
) -> list[float]:
    """Estimated seconds of each batch (see the module docstring); fills ``result``'s
    probe fields."""
    first: dict[tuple, list[RunSpec]] = {}
    for b in batches:
        first.setdefault(batch_key(b[0]), b)
    costs: dict[tuple, tuple[float, float, float]] = {}
    problems: dict[tuple, Any] = {}
    builds: dict[tuple, float] = {}  # seconds to build each problem instance
    start = time.perf_counter()
    with torch_threads(threads):
        for key, batch in first.items():
            if time.perf_counter() - start > total:
                break
            spec = batch[0]
            try:
                instance = (spec.problem, spec.problem_params)
                if instance not in problems:
                    built = time.perf_counter()
                    problems[instance] = get_problem(spec.problem)(spec.problem_params, device)
                    builds[instance] = time.perf_counter() - built
                costs[key] = step_cost(batch, device, problems[instance], PROBE_STEPS,
                                       PROBE_SECONDS)  # fmt: skip
            except Exception as exc:  # the run itself will record the failure
                msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
                result.failures.append(f"probe of {spec.problem} × {spec.algorithm} failed: {msg}")
                costs[key] = (math.nan, math.nan, math.nan)
    result.probe_seconds = time.perf_counter() - start
    result.kinds, result.probed = len(first), len(costs)
    per_call = [c[1] / c[2] for c in costs.values() if c[2] > 0]
    fallback = statistics.median(per_call) if per_call else math.nan
    build = statistics.median(builds.values()) if builds else 0.0
    seconds = []
    for b in batches:
        init, per_step, calls = costs.get(batch_key(b[0]), (0.0, fallback, 1.0))
        init += builds.get((b[0].problem, b[0].problem_params), build)  # every batch builds one
        seconds.append(_batch_seconds(b, init, per_step, calls))
    return seconds


def write_plan(out: str | Path, specs: list[RunSpec]) -> None:
    """Store the run ids of a sweep (with their problem and algorithm) in
    ``OUT/_plan.json``, replacing the previous sweep's."""
    path = Path(out) / PLAN_FILE
    data = {"runs": {s.run_id: [s.problem, s.algorithm] for s in specs}}
    tmp = store._tmp_path(path)  # the store's temporary name: a leftover is cleaned
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_plan(out: str | Path) -> dict[str, tuple[str, str]] | None:
    """Run id -> (problem, algorithm) of the last sweep into ``out``; None without one."""
    try:
        data = json.loads((Path(out) / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return {rid: (p, a) for rid, (p, a) in data["runs"].items()}


def plan_sweep(
    specs: list[RunSpec],
    out: str | Path,
    *,
    device: str = "cpu",
    executor: str = "serial",
    workers: int = 0,
    devices: list[str] | None = None,
    shard: str | None = None,
    max_batch: int | str = 0,
    threads: int = 0,
    probe: bool = True,
    probe_total: float = PROBE_TOTAL,
    **_: Any,
) -> SweepPlan:
    """:func:`make_plan` for what ``run_sweep`` with these options would execute into
    ``out`` (the same shard, the runs already stored there skipped). Reads the store's
    index only; creates nothing."""
    from bibench.runner import resolve_device
    from bibench.sweep import parse_shard, shard_specs

    unique = list({s.run_id: s for s in specs}.values())
    if shard:
        unique = shard_specs(unique, *parse_shard(shard))
    runs = Path(out) / store.RUNS_DIR
    finished = store.finished_run_ids(out) if runs.is_dir() else set()
    cores = os.cpu_count() or 1
    if executor == "serial":
        workers, per_worker = 1, threads or 1
    else:
        workers = workers or len(devices or []) or cores
        per_worker = threads or max(1, cores // workers)
    return make_plan(unique, finished, max_batch=max_batch, device=resolve_device(device),
                     workers=workers, threads=per_worker, probe=probe,
                     probe_total=probe_total)  # fmt: skip
