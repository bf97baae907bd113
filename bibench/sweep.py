"""A sweep: skip finished runs, execute the rest batch by batch, store every batch.

Resuming is by run id: a run whose file exists with a status other than ``failed``
is not run again, whichever executor wrote it (the store's index says which, without
reading the run files). Results are written here, in the main process, whatever
executor ran the batches.

Concurrency: every batch is claimed (:class:`bibench.store.Claims`) when it is handed
to the executor, so two ``run`` processes on one folder split the work and never
execute a run twice; runs another live process holds are counted as ``elsewhere``. A
killed process's claims die with it, and the next ``run`` takes its runs.

Sharding (``shard="i/N"``, ``i`` in ``1..N``) splits a grid over machines without a
scheduler: the runs that could share a lockstep batch are sorted by run id and cut
into ``N`` contiguous, near-equal chunks; shard ``i`` takes chunk ``i`` of every such
group. The split depends only on the grid (not on what is finished), so shards compose
with resume, keep their runs batched, and their union is the grid, without overlap.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from bibench import store
from bibench.config import RunSpec
from bibench.errors import UserError
from bibench.executors import SerialExecutor, get_executor
from bibench.plan import write_plan
from bibench.runner import batch_key, plan
from bibench.schedule import order_batches

__all__ = ["SweepSummary", "parse_shard", "run_sweep", "shard_specs"]

CONSOLIDATE_EVERY = 30.0  # seconds between rebuilds of results.parquet during a sweep
SHOW_FIRST = 5  # messages on diverged/failed runs printed in full, the rest summarised
SHOW_PAIRS = 10  # (problem, algorithm) pairs listed in that summary


@dataclasses.dataclass
class SweepSummary:
    total: int = 0
    skipped: int = 0
    done: int = 0
    diverged: int = 0
    failed: int = 0
    elsewhere: int = 0  # runs another live process had claimed
    messages: list[str] = dataclasses.field(default_factory=list)
    # (problem, algorithm) -> Counter of the statuses "diverged" and "failed"
    trouble: dict[tuple[str, str], collections.Counter] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )

    @property
    def ok(self) -> bool:
        return self.diverged == 0 and self.failed == 0

    @property
    def executed(self) -> int:
        """Runs this process executed."""
        return self.done + self.diverged + self.failed

    def report(self, out: str | Path, first: int = SHOW_FIRST) -> list[str]:
        """Lines on the diverged and failed runs, compact however many there are: every
        message when there are at most ``first``, else the counts per (problem,
        algorithm), the first ``first`` messages and where to see them all."""
        if len(self.messages) <= first:
            return list(self.messages)
        lines = [f"{self.diverged} runs diverged and {self.failed} failed:"]
        pairs = sorted(self.trouble.items(), key=lambda kv: -sum(kv[1].values()))
        for (problem, algorithm), counts in pairs[:SHOW_PAIRS]:
            what = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            lines.append(f"  {problem} × {algorithm}: {what}")
        if len(pairs) > SHOW_PAIRS:
            lines.append(f"  ... and {len(pairs) - SHOW_PAIRS} more (problem, algorithm) pairs")
        lines += self.messages[:first]
        lines.append(f"... {len(self.messages) - first} more; all of them: "
                     f"bibench status {out} --errors")  # fmt: skip
        return lines

    def line(self) -> str:
        text = (
            f"{self.total} runs: {self.done} done, {self.diverged} diverged, "
            f"{self.failed} failed, {self.skipped} already finished (skipped)"
        )
        if self.elsewhere:
            text += f", {self.elsewhere} being run by another process"
        return text


def _calls(specs: list[RunSpec]) -> int:
    return sum(s.budget.max_calls for s in specs)


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
    store.check_writable(out)
    runner = get_executor(executor, device, **executor_options)
    unique = unique_all = {s.run_id: s for s in specs}
    if shard:
        unique = {s.run_id: s for s in shard_specs(list(unique.values()), *parse_shard(shard))}
    store.clean_leftovers(out)
    finished = store.finished_run_ids(out)
    todo = [s for rid, s in unique.items() if rid not in finished]
    summary = SweepSummary(total=len(unique), skipped=len(unique) - len(todo))
    store.mark_current(out, [rid for rid in unique if rid in finished])
    batches = order_batches(plan(todo, max_batch, *runner.memory_share()))  # longest first
    write_plan(out, list(unique_all.values()))
    # the bar counts oracle calls (a run: its budget), so that it moves inside a batch
    bar = tqdm(total=_calls(todo), desc="oracle calls", unit="call", unit_scale=True,
               disable=not progress or not todo, file=sys.stderr)  # fmt: skip
    inside = [0]  # calls the running batch has reported (serial executor only)

    def on_progress(calls: int) -> None:
        bar.update(calls - inside[0])
        inside[0] = calls

    if isinstance(runner, SerialExecutor) and progress:
        runner.on_progress = on_progress
    claims = store.Claims(out)

    def claimed():
        """The batches, each cut to the runs this process could claim when its turn came."""
        for batch in batches:
            granted, finished_now, elsewhere = claims.take([s.run_id for s in batch])
            summary.skipped += len(finished_now)
            summary.elsewhere += len(elsewhere)
            mine = set(granted)
            bar.update(_calls([s for s in batch if s.run_id not in mine]))
            part = [s for s in batch if s.run_id in mine]
            if part:
                yield part

    last_consolidated = time.monotonic()
    try:
        for batch, frames in runner.map(claimed()):
            for spec, df in zip(batch, frames):
                store.write_run(out, spec.run_id, df)
                status = df["status"].iloc[-1]
                if status == "done":
                    summary.done += 1
                elif status == "diverged":
                    summary.diverged += 1
                    summary.trouble[spec.problem, spec.algorithm]["diverged"] += 1
                    summary.messages.append(
                        f"run {spec.run_id} ({spec.label()}) diverged: {df['error'].iloc[-1]}"
                    )
                else:
                    summary.failed += 1
                    summary.trouble[spec.problem, spec.algorithm]["failed"] += 1
                    summary.messages.append(
                        f"run {spec.run_id} ({spec.label()}) failed: {df['error'].iloc[-1]}"
                    )
            claims.release(s.run_id for s in batch)
            bar.update(_calls(batch) - inside[0])
            inside[0] = 0
            bar.set_postfix_str(f"{summary.executed}/{len(todo)} runs", refresh=False)
            if time.monotonic() - last_consolidated > CONSOLIDATE_EVERY:
                store.consolidate(out)
                last_consolidated = time.monotonic()
    finally:
        bar.close()
        claims.close()
        store.consolidate(out, force=False)
    return summary
