r"""The harness: runs of one (problem, algorithm) advance in lockstep as one batch.

:func:`plan` groups runs that share a problem instance, an algorithm, its static
hyperparameters and the budget; seeds and ``float`` hyperparameters then live on the
leading run dimension, and so do the instances of a problem that stacks them
(:meth:`bibench.problem.Problem.stack`: e.g. instance seeds). :func:`execute_batch` owns the loop:

* budgets: counted oracle calls per run, wall time per batch, a step guard;
* checkpoints: a run is recorded when its oracle calls pass a geometric grid
  (ratio ``checkpoint_ratio``), at step 0 and when it stops;
* timing: the device is synchronised before every clock read, and ground-truth
  metrics are evaluated with the clock stopped (uncounted, untimed);
* divergence: a run is stopped and recorded with status ``diverged`` (its rows up to
  then kept, its ``error`` naming the cause) when its iterates are non-finite or exceed
  ``BLOWUP`` in absolute value (every step), or, at a checkpoint, when one of the
  measured metrics ``WATCHED`` (Φ, ‖∇Φ‖, g − g*) that was finite at step 0 is infinite
  or exceeds ``METRIC_BLOWUP`` · max(1, |its value at step 0|) in absolute value (a NaN
  metric alone is not divergence: problems return NaN outside their domain); the
  others go on;
* failure: an exception inside the algorithm fails that batch only (status
  ``failed``, recorded but retried on the next ``run``).

Cost (see ``bibench bench``): per step the harness reads one packed ``(9, R)`` tensor
(call counts, finiteness) from the device, which is synchronised for the clock anyway,
or, between checkpoints while every call counted for every run, one scalar (the largest
``|iterate|`` entry); checkpoint rows are kept as per-checkpoint arrays, put in one
batch table at the end and handed out as per-run row slices of it (no per-run copy),
with the columns a run repeats built once per batch. Batch size: ``plan(..., "auto")``
caps a batch by memory, from a probe of the memory one run adds (:func:`memory_per_run`)
against the free memory (:func:`available_memory`). Rows never depend on the batch
size: every run draws its randomness from its own counter-based stream.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import platform
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bibench import __version__
from bibench.algorithm import Algorithm, batch_hyper
from bibench.config import RunSpec
from bibench.oracle import ORACLE_TYPES, Oracle
from bibench.params import per_run_fields
from bibench.problem import Problem
from bibench.registry import get_algorithm, get_problem
from bibench.rng import BatchedRNG

__all__ = [
    "BLOWUP",
    "auto_batch_size",
    "available_memory",
    "batch_key",
    "execute_batch",
    "failed_frames",
    "memory_per_run",
    "plan",
    "resolve_device",
    "step_cost",
    "sync",
]

BLOWUP = 1e10  # |x| or |y| beyond this counts as divergence
# Measured metrics watched for divergence, and the growth over their step-0 value that
# counts as one (F2BA under oracle noise reaches ‖∇Φ‖ ~ 1e8 from ~30, Φ ~ 1e15 from ~1e2;
# a converging run shrinks them)
WATCHED = ("phi", "hypergrad_norm", "lower_gap")
METRIC_BLOWUP = 1e6
PROGRESS_EVERY = 0.5  # seconds between execute_batch's progress reports
MEMORY_FRACTION = 0.5  # share of the free memory an automatic batch size may fill
PROBE_SIZES = (1, 3)  # runs in the probe batches of memory_per_run
STREAM_INIT, STREAM_ORACLE, STREAM_ALGORITHM = 1, 2, 3


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from bibench.errors import UserError

        raise UserError(f"device '{device}' requested but CUDA is not available")
    return dev


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that a clock read measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_key(spec: RunSpec) -> tuple:
    """Runs with equal keys can share a lockstep batch."""
    static = tuple(
        (f.name, getattr(spec.hyper, f.name))
        for f in dataclasses.fields(spec.hyper)
        if f.name not in per_run_fields(type(spec.hyper))
    )
    instance = get_problem(spec.problem).stack_key(spec.problem_params)  # stackable instances
    return (spec.problem, instance, spec.algorithm, static, spec.budget)


def _start(
    specs: list[RunSpec], device: torch.device, problem: Problem
) -> tuple[Algorithm, Oracle, Any]:
    """The batch's algorithm, its counting oracle and its initial state."""
    seeds = torch.tensor([s.seed for s in specs], dtype=torch.int64, device=device)
    init_rng = BatchedRNG(seeds, STREAM_INIT)
    x0, y0 = problem.init_x(init_rng), problem.init_y(init_rng)
    oracle = Oracle(problem, BatchedRNG(seeds, STREAM_ORACLE))
    algorithm = get_algorithm(specs[0].algorithm)(batch_hyper([s.hyper for s in specs], device))
    state = algorithm.init(problem, oracle, x0, y0, BatchedRNG(seeds, STREAM_ALGORITHM))
    return algorithm, oracle, state


def plan(
    specs: Iterable[RunSpec],
    max_batch: int | str = 0,
    device: str | torch.device = "cpu",
    sharers: int = 1,
) -> list[list[RunSpec]]:
    """Group runs into lockstep batches of at most ``max_batch`` runs (0: no cap;
    ``"auto"``: the cap :func:`auto_batch_size` finds for ``device``, shared by
    ``sharers`` concurrent batches)."""
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(batch_key(spec), []).append(spec)
    batches = []
    for group in groups.values():
        if max_batch == "auto":
            stacked = any(s.problem_params != group[0].problem_params for s in group)
            try:
                cap = auto_batch_size(group[0], device, stacked)
                size = min(len(group), max(1, cap // sharers))
            except Exception:  # a probe that fails: execute_batch records the failure
                size = len(group)
        else:
            size = int(max_batch) if int(max_batch) > 0 else len(group)
        batches.extend(group[i : i + size] for i in range(0, len(group), size))
    return batches


class _AllocatedBytes(TorchDispatchMode):
    """Bytes of the fresh tensors every op returns: an upper bound on the peak memory
    of the code it watches (frees are not seen), for devices without allocator stats."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            a.untyped_storage().data_ptr()
            for a in tree_leaves((args, kwargs))
            if isinstance(a, torch.Tensor)
        }
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.bytes += t.untyped_storage().nbytes()
        return out


def available_memory(device: str | torch.device) -> int:
    """Free bytes: the CUDA driver's count, or the host's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_per_run(
    spec: RunSpec, device: str | torch.device = "cpu", stacked: bool = False
) -> float:
    """Bytes one more run adds to a batch, from probe batches of 1 and 3 runs (init and
    one step each): the growth of the allocator's peak on CUDA, of the bytes allocated
    (:class:`_AllocatedBytes`, an overestimate) elsewhere. Never less than ``x`` and ``y``.
    ``stacked``: the batch stacks instances (:meth:`Problem.stack`), each run its own data."""
    device = torch.device(device)
    problem = get_problem(spec.problem)(spec.problem_params, device)

    def probe(n: int) -> None:
        specs = [dataclasses.replace(spec, seed=spec.seed + i) for i in range(n)]
        batch = type(problem).stack([problem] * n) if stacked else problem  # measured too
        algorithm, _, state = _start(specs, device, batch)
        algorithm.step(state)

    used = []
    for n in PROBE_SIZES:
        if device.type == "cuda":
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            probe(n)
            sync(device)
            used.append(torch.cuda.max_memory_allocated(device) - base)
        else:
            with _AllocatedBytes() as counter:
                probe(n)
            used.append(counter.bytes)
    floor = 8 * (problem.dim_x + problem.dim_y)
    return max((used[1] - used[0]) / (PROBE_SIZES[1] - PROBE_SIZES[0]), floor)


def step_cost(
    specs: list[RunSpec],
    device: str | torch.device = "cpu",
    problem: Problem | None = None,
    steps: int = 3,
    seconds: float = 0.05,
) -> tuple[float, float, float]:
    """``(init seconds, seconds per step, oracle calls per step and run)`` of the batch
    ``specs``, from one untimed warm-up step then ``steps`` timed steps (at least 2, fewer once
    ``seconds`` have passed), the fastest of which gives the step cost (a busy machine
    slows some steps, never speeds one up), timed in CPU time on the CPU (per thread
    summed: probe on one thread); no metrics, nothing recorded. ``problem``: a
    built instance to reuse (building one can cost more than the probe)."""
    device = torch.device(device)
    if problem is None:
        problem = get_problem(specs[0].problem)(specs[0].problem_params, device)
    sync(device)
    start = time.perf_counter()
    algorithm, oracle, state = _start(specs, device, problem)
    sync(device)
    init = time.perf_counter() - start
    state = algorithm.step(state)  # warm-up: first calls pay for lazy set-up
    sync(device)
    calls0 = oracle.total().double().mean().item()
    # on the CPU this process's CPU time: other processes on a busy machine do not count
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    begin, times = time.perf_counter(), []
    while len(times) < steps and (len(times) < 2 or time.perf_counter() - begin < seconds):
        start = clock()
        state = algorithm.step(state)
        sync(device)
        times.append(clock() - start)
    calls = (oracle.total().double().mean().item() - calls0) / len(times)
    return init, min(times), calls


def auto_batch_size(
    spec: RunSpec, device: str | torch.device = "cpu", stacked: bool = False
) -> int:
    """The most runs like ``spec`` that fit in ``MEMORY_FRACTION`` of the free memory
    (``stacked``: in a batch of stacked instances)."""
    per_run = memory_per_run(spec, device, stacked)
    return max(1, int(MEMORY_FRACTION * available_memory(device) / per_run))


def _nan_if_missing(fn: Callable[[], torch.Tensor], n: int, device) -> torch.Tensor:
    try:
        return fn()
    except NotImplementedError:
        return torch.full((n,), math.nan, dtype=torch.float64, device=device)


def _ground_truth(problem, algorithm, state) -> dict[str, torch.Tensor]:
    """Per-run metrics from the problem's exact oracles (uncounted, untimed)."""
    x, y = state.x, state.y
    n, dev = x.shape[0], x.device
    with torch.no_grad():
        out = {
            "hypergrad_norm": _nan_if_missing(
                lambda: torch.linalg.vector_norm(problem.hypergrad(x), dim=-1), n, dev
            ),
            "phi": _nan_if_missing(lambda: problem.phi(x), n, dev),
            "dist_to_solution": _nan_if_missing(lambda: problem.dist_to_solution_set(x, y), n, dev),
            "lower_gap": _nan_if_missing(lambda: problem.g(x, y) - problem.g_star(x), n, dev),
        }
        out["phi_gap"] = out["phi"] - problem.phi_star
        out.update(problem.metrics(x, y))
        out.update(algorithm.metrics(problem, state))
    return {k: v.detach().to("cpu", torch.float64) for k, v in out.items()}


def _fields(params: Any) -> tuple[tuple[str, Any], ...]:
    try:
        return _hashable_fields(params)
    except TypeError:  # a field holds an unhashable value
        return tuple(dataclasses.asdict(params).items())


@functools.lru_cache(maxsize=1024)  # the runs of a batch share their parameter objects
def _hashable_fields(params: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(dataclasses.asdict(params).items())


def _static_columns(specs: list[RunSpec], device: torch.device) -> dict[str, list[Any]]:
    """The columns every row of a run repeats, as one list over the batch's runs (each
    parameter object's fields read once: the runs of a batch share them)."""
    fields: dict[int, tuple[tuple[str, Any], ...]] = {}

    def fields_of(params: Any) -> tuple[tuple[str, Any], ...]:
        if id(params) not in fields:
            fields[id(params)] = _fields(params)
        return fields[id(params)]

    def per_run(params: list[Any], prefix: str) -> dict[str, list[Any]]:
        rows = [fields_of(p) for p in params]
        return {f"{prefix}{k}": [row[j][1] for row in rows] for j, (k, _) in enumerate(rows[0])}

    n = len(specs)
    constant = {
        "device": str(device),
        "batch_size": n,
        "budget": specs[0].budget.max_calls,
    }
    return {
        "run_id": [s.run_id for s in specs],
        "problem": [s.problem for s in specs],
        "algorithm": [s.algorithm for s in specs],
        "seed": [s.seed for s in specs],
        "label": [s.label() for s in specs],
        **{k: [v] * n for k, v in constant.items()},
        "config_id": [s.config_id for s in specs],
        "provenance": [s.provenance for s in specs],
        "bibench_version": [__version__] * n,
        "torch_version": [torch.__version__] * n,
        "hostname": [platform.node()] * n,
        **per_run([s.problem_params for s in specs], "prob_"),
        **per_run([s.hyper for s in specs], "hp_"),
    }


class _Recorder:
    """Checkpoint rows of a batch, kept as per-checkpoint arrays over the runs and cut into
    one frame per run at the end (one DataFrame per run, not one dict per row)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.due: list[np.ndarray] = []
        self.columns: dict[str, list[np.ndarray]] = {}

    def add(self, due: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        k = len(self.due)
        self.due.append(due)
        for name, values in columns.items():
            # a metric that appears late is NaN at the earlier checkpoints
            col = self.columns.setdefault(name, [np.full(self.n, np.nan)] * k)
            col.append(values)
        for col in self.columns.values():
            if len(col) == k:
                col.append(np.full(self.n, np.nan))

    def frames(
        self, static: dict[str, list[Any]], status: list[str], errors: list[str]
    ) -> list[pd.DataFrame]:
        """One frame per run, cut from one batch-wide frame (so that pandas builds and
        infers each column once, not once per run)."""
        if self.due:
            due = np.stack(self.due).T  # (R, checkpoints)
            data: dict[str, Any] = {k: np.stack(c).T[due] for k, c in self.columns.items()}
            lengths = due.sum(1)
        else:  # failed before the first checkpoint: one row with only ``step``
            data, lengths = {"step": np.zeros(self.n, dtype=np.int64)}, np.ones(self.n, int)
        per_run = {**static, "status": status, "error": errors}
        for k, values in per_run.items():
            kind = {type(v) for v in values}
            if len(kind) == 1 and kind <= {int, float, bool}:  # the dtype a scalar would get
                data[k] = np.repeat(np.array(values), lengths)
            else:  # strings and the rest: object columns (arrow strings slice 3x slower)
                column = np.empty(self.n, dtype=object)
                for r, v in enumerate(values):  # one by one: a tuple value stays one cell
                    column[r] = v
                data[k] = pd.Series(np.repeat(column, lengths), dtype=object)
        table = pd.DataFrame(data)
        ends = np.cumsum(lengths)
        # row slices of the one table (no per-run copy: a run's rows are its own), each
        # re-indexed from 0 with a shared RangeIndex (immutable)
        index = {m: pd.RangeIndex(m) for m in set(lengths.tolist())}
        frames = []
        for end, length in zip(ends.tolist(), lengths.tolist()):
            frame = table.iloc[end - length : end]
            frame.index = index[length]
            frames.append(frame)
        return frames


def _metric_divergence(
    metrics: dict[str, torch.Tensor], initial: dict[str, np.ndarray], step: int
) -> dict[int, str]:
    """Runs whose watched metrics diverged (see the module docstring), with the reason."""
    reasons: dict[int, str] = {}
    for key in WATCHED:
        if key not in metrics or key not in initial:
            continue
        value, start = metrics[key].numpy(), initial[key]
        limit = METRIC_BLOWUP * np.maximum(1.0, np.abs(start))
        watched = np.isfinite(start)
        # NaN is left alone: a problem returns it where a closed form is undefined (outside
        # its domain); the NaN of an overflow comes with iterates the step check catches
        with np.errstate(invalid="ignore"):
            bad = watched & (np.isinf(value) | (np.abs(value) > limit))
        for r in np.flatnonzero(bad).tolist():
            if r in reasons:
                continue
            if math.isfinite(value[r]):
                reasons[r] = (f"{key} = {value[r]:.3g} > {METRIC_BLOWUP:g} * max(1, "
                              f"|{start[r]:.3g}| at step 0) at step {step}")  # fmt: skip
            else:
                reasons[r] = f"{key} is {value[r]} at step {step}"
    return reasons


def _bounded(state: Any) -> torch.Tensor:
    """Per run, whether every iterate entry is below ``BLOWUP`` in absolute value, ``(R,)``
    (False for NaN and inf too: one test for non-finite and blow-up)."""
    iterates = torch.cat([state.x.flatten(1), state.y.flatten(1)], 1)
    return (iterates.abs() < BLOWUP).all(-1)


def failed_frames(specs: list[RunSpec], device: str | torch.device, reason: str):
    """One ``failed`` row per run, for a batch that never returned (its worker died)."""
    static = _static_columns(specs, torch.device(device))
    return _Recorder(len(specs)).frames(static, ["failed"] * len(specs), [reason] * len(specs))


def execute_batch(
    specs: list[RunSpec],
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> list[pd.DataFrame]:
    """Run one lockstep batch; return one results frame per run (in ``specs`` order).

    The runs must share a :func:`batch_key` (one problem instance, or instances the
    problem stacks, one algorithm, equal non-float hyperparameters and budget);
    :func:`plan` groups a grid that way.
    Host reads per step: one packed ``(9, R)`` transfer of the call counts and the
    finiteness flags (the device is synchronised for the clock anyway); everything
    else stays on the device until a checkpoint is due.

    ``progress``, if given, is called with the batch's oracle calls so far (each run's
    count capped at the budget, a stopped run counted at the full budget, so the batch
    ends at ``len(specs) * budget.max_calls``) at most every ``PROGRESS_EVERY`` seconds,
    from counts the loop reads anyway (no extra device read).
    """
    if len({batch_key(s) for s in specs}) > 1:
        raise ValueError("execute_batch: the runs do not share a batch_key; group them with plan")
    device = torch.device(device)
    first = specs[0]
    n = len(specs)
    static = _static_columns(specs, device)
    record = _Recorder(n)
    status = ["running"] * n
    errors = [""] * n
    budget = first.budget
    try:
        problem = get_problem(first.problem).for_batch([s.problem_params for s in specs], device)
        sync(device)
        start = time.perf_counter()
        algorithm, oracle, state = _start(specs, device, problem)
        sync(device)
        elapsed = time.perf_counter() - start
        # per-step bookkeeping on host numpy arrays: a numpy op on R values costs a
        # fraction of a torch op, and this loop runs once per step
        active = np.ones(n, dtype=bool)
        next_ckpt = np.zeros(n)
        cuda = device.type == "cuda"  # sync() inlined: this loop runs once per step
        step = 0
        last_total = None

        next_due = 0.0  # smallest next checkpoint of an active run
        initial: dict[str, np.ndarray] | None = None  # watched metrics at step 0
        stopped = None  # ~active on the device, once a run has stopped
        last_uniform = None
        next_report = time.monotonic() + PROGRESS_EVERY
        no_grad = torch.no_grad()

        while True:
            # Fast path: when every call so far counted for every run, the totals are one
            # host integer; if it reaches no checkpoint nor the budget, made progress, and
            # every active run is finite, the full check below would change nothing.
            uniform = oracle.uniform_total()
            fast = (
                uniform is not None
                and last_uniform is not None
                and uniform != last_uniform
                and uniform < min(next_due, budget.max_calls)
                and not (budget.max_time > 0 and elapsed >= budget.max_time)
                and step < budget.max_steps
            )
            if fast:
                with no_grad:
                    if stopped is None:  # the largest |entry|, NaN if any is: no (R, d) copy
                        top = torch.maximum(state.x.abs().max(), state.y.abs().max())
                        ok = top < BLOWUP
                    else:
                        ok = (_bounded(state) | stopped).all()
                fast = bool(ok)
            last_uniform = uniform
            if fast:
                last_total = uniform
            else:
                with no_grad:
                    finite = _bounded(state).to(torch.int64)
                    counts = torch.stack([*(oracle.counts[t] for t in ORACLE_TYPES), finite])
                    packed = counts.cpu().numpy()  # the one host read
                counts, finite = packed[:-1], packed[-1].astype(bool)
                total = counts.sum(0)
                if last_total is not None and (active & (total == last_total)).any():
                    raise RuntimeError("algorithm made no counted oracle call in one step")
                last_total = total
                diverged = active & ~finite
                out_of_calls = active & (total >= budget.max_calls)
                out_of_time = budget.max_time > 0 and elapsed >= budget.max_time
                out_of_steps = step >= budget.max_steps
                stopping = diverged | out_of_calls
                if out_of_time or out_of_steps:
                    stopping = stopping | active
                due = active & ((total >= next_ckpt) | stopping)
                if due.any():
                    metrics = _ground_truth(problem, algorithm, state)
                    columns = {
                        "step": np.full(n, step, dtype=np.int64),
                        "oracle_calls": total,
                        "samples": oracle.samples.cpu().numpy().copy(),  # counts grow in place
                        "wall_time": np.full(n, elapsed),
                        **{f"n_{t}": counts[i] for i, t in enumerate(ORACLE_TYPES)},
                        **{k: v.numpy().copy() for k, v in metrics.items()},
                    }
                    record.add(due, columns)
                    if initial is None:
                        initial = {k: metrics[k].numpy().copy() for k in WATCHED if k in metrics}
                    for r, why in _metric_divergence(metrics, initial, step).items():
                        if due[r]:
                            diverged[r], stopping[r] = True, True
                            errors[r] = why
                    next_ckpt = np.where(
                        due, np.maximum(next_ckpt * budget.checkpoint_ratio, total + 1.0), next_ckpt
                    )
                if stopping.any():
                    for r in np.flatnonzero(stopping).tolist():
                        status[r] = "diverged" if diverged[r] else "done"
                        if diverged[r] and not errors[r]:
                            errors[r] = f"non-finite or |iterate| > {BLOWUP:g} at step {step}"
                    active = active & ~stopping
                    if not active.any():
                        break
                    stopped = torch.from_numpy(~active).to(device)
                next_due = next_ckpt[active].min()

            if progress is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + PROGRESS_EVERY
                capped = np.minimum(last_total, budget.max_calls)
                progress(int(np.where(active, capped, budget.max_calls).sum()))
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            state = algorithm.step(state)
            if cuda:
                torch.cuda.synchronize(device)
            elapsed += time.perf_counter() - start
            step += 1
    except Exception as exc:  # one failing batch must not take the sweep down
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
        where = traceback.extract_tb(exc.__traceback__)[-1]
        msg = f"{msg} ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
        for r in range(n):
            if status[r] == "running":
                status[r], errors[r] = "failed", msg
    return record.frames(static, status, errors)
