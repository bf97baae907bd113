r"""The harness: runs of one (problem, algorithm) advance in lockstep as one batch.

:func:`plan` groups runs that share a problem instance, an algorithm, its static
hyperparameters and the budget; seeds and ``float`` hyperparameters then live on the
leading run dimension. :func:`execute_batch` owns the loop:

* budgets: counted oracle calls per run, wall time per batch, a step guard;
* checkpoints: a run is recorded when its oracle calls pass a geometric grid
  (ratio ``checkpoint_ratio``), at step 0 and when it stops;
* timing: the device is synchronised before every clock read, and ground-truth
  metrics are evaluated with the clock stopped (uncounted, untimed);
* divergence: a run whose iterates are non-finite or exceed ``BLOWUP`` in absolute
  value is stopped and recorded with status ``diverged``; the others go on;
* failure: an exception inside the algorithm fails that batch only (status
  ``failed``, recorded but retried on the next ``run``).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import torch

from bibench import __version__
from bibench.algorithm import batch_hyper
from bibench.config import RunSpec
from bibench.oracle import ORACLE_TYPES, Oracle
from bibench.params import per_run_fields
from bibench.registry import get_algorithm, get_problem
from bibench.rng import BatchedRNG

__all__ = ["BLOWUP", "execute_batch", "plan", "resolve_device", "sync"]

BLOWUP = 1e10  # |x| or |y| beyond this counts as divergence
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


def _batch_key(spec: RunSpec) -> tuple:
    static = tuple(
        (f.name, getattr(spec.hyper, f.name))
        for f in dataclasses.fields(spec.hyper)
        if f.name not in per_run_fields(type(spec.hyper))
    )
    return (spec.problem, spec.problem_params, spec.algorithm, static, spec.budget)


def plan(specs: Iterable[RunSpec], max_batch: int = 0) -> list[list[RunSpec]]:
    """Group runs into lockstep batches (at most ``max_batch`` runs each if > 0)."""
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(_batch_key(spec), []).append(spec)
    batches = []
    for group in groups.values():
        size = max_batch if max_batch > 0 else len(group)
        batches.extend(group[i : i + size] for i in range(0, len(group), size))
    return batches


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


def _static_columns(spec: RunSpec, device: torch.device, batch_size: int) -> dict[str, Any]:
    cols: dict[str, Any] = {
        "run_id": spec.run_id,
        "problem": spec.problem,
        "algorithm": spec.algorithm,
        "seed": spec.seed,
        "label": spec.label(),
        "device": str(device),
        "batch_size": batch_size,
        "budget": spec.budget.max_calls,
        "bibench_version": __version__,
        "torch_version": torch.__version__,
        "hostname": platform.node(),
    }
    cols.update({f"prob_{k}": v for k, v in dataclasses.asdict(spec.problem_params).items()})
    cols.update({f"hp_{k}": v for k, v in dataclasses.asdict(spec.hyper).items()})
    return cols


def execute_batch(specs: list[RunSpec], device: str | torch.device = "cpu") -> list[pd.DataFrame]:
    """Run one lockstep batch; return one results frame per run (in ``specs`` order)."""
    device = torch.device(device)
    first = specs[0]
    n = len(specs)
    static = [_static_columns(s, device, n) for s in specs]
    rows: list[list[dict[str, Any]]] = [[] for _ in specs]
    status = ["running"] * n
    errors = [""] * n
    budget = first.budget
    try:
        problem = get_problem(first.problem)(first.problem_params, device)
        seeds = torch.tensor([s.seed for s in specs], dtype=torch.int64, device=device)
        init_rng = BatchedRNG(seeds, STREAM_INIT)
        x0, y0 = problem.init_x(init_rng), problem.init_y(init_rng)
        oracle = Oracle(problem, BatchedRNG(seeds, STREAM_ORACLE))
        algorithm = get_algorithm(first.algorithm)(batch_hyper([s.hyper for s in specs], device))

        sync(device)
        start = time.perf_counter()
        state = algorithm.init(problem, oracle, x0, y0, BatchedRNG(seeds, STREAM_ALGORITHM))
        sync(device)
        elapsed = time.perf_counter() - start
        active = torch.ones(n, dtype=torch.bool)
        next_ckpt = torch.zeros(n, dtype=torch.float64)
        step = 0
        last_total = oracle.total().cpu()

        while True:
            total = oracle.total().cpu()
            with torch.no_grad():
                finite = (
                    torch.isfinite(state.x).all(-1)
                    & torch.isfinite(state.y).all(-1)
                    & (state.x.abs().amax(-1) < BLOWUP)
                    & (state.y.abs().amax(-1) < BLOWUP)
                ).cpu()
            diverged = active & ~finite
            out_of_calls = active & (total >= budget.max_calls)
            out_of_time = budget.max_time > 0 and elapsed >= budget.max_time
            out_of_steps = step >= budget.max_steps
            stopping = diverged | out_of_calls
            if out_of_time or out_of_steps:
                stopping = stopping | active
            due = active & ((total.double() >= next_ckpt) | stopping)
            if bool(due.any()):
                metrics = _ground_truth(problem, algorithm, state)
                counts = {t: c.cpu() for t, c in oracle.counts.items()}
                samples = oracle.samples.cpu()
                for r in torch.nonzero(due).flatten().tolist():
                    row = {
                        "step": step,
                        "oracle_calls": int(total[r]),
                        "samples": int(samples[r]),
                        "wall_time": elapsed,
                        **{f"n_{t}": int(counts[t][r]) for t in ORACLE_TYPES},
                        **{k: float(v[r]) for k, v in metrics.items()},
                    }
                    rows[r].append(row)
                next_ckpt = torch.where(
                    due, torch.maximum(next_ckpt * budget.checkpoint_ratio, total + 1.0), next_ckpt
                )
            for r in torch.nonzero(stopping).flatten().tolist():
                status[r] = "diverged" if diverged[r] else "done"
                if diverged[r]:
                    errors[r] = f"non-finite or |iterate| > {BLOWUP:g} at step {step}"
            active = active & ~stopping
            if not bool(active.any()):
                break

            sync(device)
            start = time.perf_counter()
            state = algorithm.step(state)
            sync(device)
            elapsed += time.perf_counter() - start
            step += 1
            total = oracle.total().cpu()
            if bool((active & (total == last_total)).any()):
                raise RuntimeError("algorithm made no counted oracle call in one step")
            last_total = total
    except Exception as exc:  # one failing batch must not take the sweep down
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
        where = traceback.extract_tb(exc.__traceback__)[-1]
        msg = f"{msg} ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
        for r in range(n):
            if status[r] == "running":
                status[r], errors[r] = "failed", msg
                rows[r] = rows[r] or [{"step": 0}]

    frames = []
    for r in range(n):
        df = pd.DataFrame(rows[r])
        for k, v in static[r].items():
            df[k] = v
        df["status"] = status[r]
        df["error"] = errors[r]
        frames.append(df)
    return frames
