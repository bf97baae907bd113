"""A sweep: skip finished runs, execute the rest batch by batch, store every batch.

Resuming is by run id: a run whose file exists with a status other than ``failed``
is not run again, whichever executor wrote it. Results are written here, in the main
process, whatever executor ran the batches.

Sharding (``shard="i/N"``, ``i`` in ``1..N``) splits a grid over machines without a
scheduler: the runs that could share a lockstep batch are sorted by run id and cut
into ``N`` contiguous, near-equal chunks; shard ``i`` takes chunk ``i`` of every such
group. The split depends only on the grid (not on what is finished), so shards compose
with resume, keep their runs batched, and their union is the grid, without overlap.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from bibench import store
from bibench.config import RunSpec
from bibench.errors import UserError
from bibench.executors import get_executor
from bibench.runner import batch_key, plan
from bibench.schedule import order_batches

__all__ = ["SweepSummary", "parse_shard", "run_sweep", "shard_specs"]

CONSOLIDATE_EVERY = 30.0  # seconds between rebuilds of results.parquet during a sweep


@dataclasses.dataclass
class SweepSummary:
    total: int = 0
    skipped: int = 0
    done: int = 0
    diverged: int = 0
    failed: int = 0
    messages: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.diverged == 0 and self.failed == 0

    def line(self) -> str:
        return (
            f"{self.total} runs: {self.done} done, {self.diverged} diverged, "
            f"{self.failed} failed, {self.skipped} already finished (skipped)"
        )


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``1 <= i <= N``."""
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise UserError(f"bad value for shard: {text!r} (expected i/N, e.g. 1/4)") from None
    if not 1 <= i <= n:
        raise UserError(f"bad value for shard: {text!r} (i/N needs 1 <= i <= N)")
    return i, n


def shard_specs(specs: list[RunSpec], index: int, count: int) -> list[RunSpec]:
    """Shard ``index`` of ``count`` (1-based): chunk ``index`` of every group of runs that
    could share a batch, the group sorted by run id (see the module docstring)."""
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(batch_key(spec), []).append(spec)
    mine = []
    for group in groups.values():
        group = sorted(group, key=lambda s: s.run_id)
        n = len(group)
        mine.extend(group[(index - 1) * n // count : index * n // count])
    return mine


def run_sweep(
    specs: list[RunSpec],
    out: str | Path,
    *,
    device: str = "cpu",
    executor: str = "serial",
    max_batch: int | str = 0,
    shard: str | None = None,
    progress: bool = True,
    **executor_options,
) -> SweepSummary:
    """Run ``specs`` (shard ``shard`` of them, if given) into the results folder ``out``
    with ``executor`` (options: see :class:`bibench.executors.Executor`); return counts
    and one message line per diverged or failed run. ``max_batch``: runs per batch
    (0: all, ``"auto"``: by memory). ``device`` may be ``auto``; it is resolved where
    the batches run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runner = get_executor(executor, device, **executor_options)
    unique = {s.run_id: s for s in specs}
    if shard:
        unique = {s.run_id: s for s in shard_specs(list(unique.values()), *parse_shard(shard))}
    finished = store.finished_run_ids(out)
    todo = [s for rid, s in unique.items() if rid not in finished]
    summary = SweepSummary(total=len(unique), skipped=len(unique) - len(todo))
    batches = order_batches(plan(todo, max_batch, *runner.memory_share()))  # longest first
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress or not todo,
               file=sys.stderr)  # fmt: skip
    last_consolidated = time.monotonic()
    try:
        for batch, frames in runner.map(batches):
            for spec, df in zip(batch, frames):
                store.write_run(out, spec.run_id, df)
                status = df["status"].iloc[-1]
                if status == "done":
                    summary.done += 1
                elif status == "diverged":
                    summary.diverged += 1
                    summary.messages.append(
                        f"run {spec.run_id} ({spec.label()}) diverged: {df['error'].iloc[-1]}"
                    )
                else:
                    summary.failed += 1
                    summary.messages.append(
                        f"run {spec.run_id} ({spec.label()}) failed: {df['error'].iloc[-1]}"
                    )
            bar.update(len(batch))
            if time.monotonic() - last_consolidated > CONSOLIDATE_EVERY:
                store.consolidate(out)
                last_consolidated = time.monotonic()
    finally:
        bar.close()
        store.consolidate(out)
    return summary
