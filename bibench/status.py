"""Where a results folder stands: ``bibench status OUT``.

Per (problem, algorithm), from the store's index, the last sweep's plan
(``OUT/_plan.json``, see :mod:`bibench.plan`) and one small read per run file:

* ``done``, ``diverged``, ``failed``: the current stored runs by status (every run in
  the folder, planned by the last sweep or an earlier one);
* ``stale``: stored runs that a later run of the same config superseded (the code
  changed, see :mod:`bibench.store`); not counted as done;
* ``pending``: runs of the last sweep's plan that are not stored yet (a sweep that was
  killed, another shard's runs); unknown (``NaN``) in a folder without a plan;
* ``wall_s``: the wall time spent, summed over batches: every run of a batch carries
  the batch's clock (``wall_time``, checkpoint metrics excluded), so a run adds its last
  ``wall_time / batch_size``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bibench import store
from bibench.errors import UserError
from bibench.plan import read_plan

__all__ = ["COUNTS", "errors", "status_table"]

COUNTS = ("done", "diverged", "failed", "stale", "pending")
_COLUMNS = ["problem", "algorithm", "wall_time", "batch_size"]


def _runs_dir(out: str | Path) -> Path:
    runs = Path(out) / store.RUNS_DIR
    if not runs.is_dir():
        raise UserError(f"no results in {out} (no {store.RUNS_DIR}/ folder)")
    return runs


def _last_rows(out: str | Path, run_ids: list[str], columns: list[str]) -> pd.DataFrame:
    """The last row of each run file (only ``columns``, those it has), indexed by run id."""
    rows = {}
    for rid in run_ids:
        try:
            df = pd.read_parquet(store.run_path(out, rid))
        except Exception:  # unreadable: the store warns about it when loading
            continue
        if len(df):
            rows[rid] = df.iloc[-1].reindex(columns)
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def status_table(out: str | Path) -> pd.DataFrame:
    """One row per (problem, algorithm) with the counts ``COUNTS`` and ``wall_s`` (see
    the module docstring), sorted by problem and algorithm."""
    _runs_dir(out)
    entries = store.read_index(out)
    stale = store.stale_run_ids(entries)
    planned = read_plan(out)
    last = _last_rows(out, sorted(entries), _COLUMNS)
    records = []
    for rid, entry in entries.items():
        if rid not in last.index:
            continue
        row = last.loc[rid]
        kind = "stale" if rid in stale else entry.status
        wall = row["wall_time"] / row["batch_size"] if row["batch_size"] else math.nan
        records.append({"problem": row["problem"], "algorithm": row["algorithm"],
                        "kind": kind, "wall_s": 0.0 if kind == "stale" else wall})  # fmt: skip
    for rid, (problem, algorithm) in (planned or {}).items():
        if rid not in entries:
            records.append({"problem": problem, "algorithm": algorithm, "kind": "pending",
                            "wall_s": 0.0})  # fmt: skip
    if not records:
        return pd.DataFrame(columns=["problem", "algorithm", *COUNTS, "wall_s"])
    df = pd.DataFrame(records)
    counts = pd.crosstab([df["problem"], df["algorithm"]], df["kind"])
    table = counts.reindex(columns=list(COUNTS), fill_value=0)
    table["wall_s"] = df.groupby(["problem", "algorithm"])["wall_s"].sum(min_count=1)
    table = table.reset_index()
    if planned is None:
        table["pending"] = math.nan
    return table.sort_values(["problem", "algorithm"]).reset_index(drop=True)


def errors(out: str | Path) -> pd.DataFrame:
    """Every current diverged or failed run: ``run_id``, ``label``, ``status``, ``error``."""
    _runs_dir(out)
    entries = store.read_index(out)
    stale = store.stale_run_ids(entries)
    ids = sorted(r for r, e in entries.items()
                 if e.status in ("diverged", "failed") and r not in stale)  # fmt: skip
    rows = _last_rows(out, ids, ["label", "status", "error"])
    return rows.rename_axis("run_id").reset_index()
