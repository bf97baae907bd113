"""A sweep: skip finished runs, execute the rest batch by batch, store every batch.

Resuming is by run id: a run whose file exists with a status other than ``failed``
is not run again, whichever executor wrote it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from bibench import store
from bibench.config import RunSpec
from bibench.executors import get_executor
from bibench.runner import plan

__all__ = ["SweepSummary", "run_sweep"]

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


def run_sweep(
    specs: list[RunSpec],
    out: str | Path,
    *,
    device: str = "cpu",
    executor: str = "serial",
    max_batch: int = 0,
    progress: bool = True,
    **executor_options,
) -> SweepSummary:
    """Run ``specs`` into the results folder ``out``; return counts and one message line
    per diverged or failed run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unique = {s.run_id: s for s in specs}
    finished = store.finished_run_ids(out)
    todo = [s for rid, s in unique.items() if rid not in finished]
    summary = SweepSummary(total=len(unique), skipped=len(unique) - len(todo))
    batches = plan(todo, max_batch)
    runner = get_executor(executor, device, **executor_options)
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
