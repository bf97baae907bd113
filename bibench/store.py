"""The results store: a tidy long table, one row per (run, checkpoint).

Layout of an output folder ``OUT``::

    OUT/_runs/<run_id>.parquet   one file per run (the resume cache)
    OUT/results.parquet          all runs, rebuilt after every batch

``pandas.read_parquet(OUT)`` reads the whole folder: pyarrow skips paths that start
with ``_``, so it sees exactly ``results.parquet``. Every write goes to a temporary
file that is then renamed over the target, so an interrupted run never leaves a torn
file. A run is finished when its file exists and its status is not ``failed``;
failed runs are recorded but retried by the next ``run``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

__all__ = ["RESULTS_FILE", "consolidate", "finished_run_ids", "load", "run_path", "write_run"]

RUNS_DIR = "_runs"
RESULTS_FILE = "results.parquet"
FAILED = "failed"


def run_path(out: str | Path, run_id: str) -> Path:
    return Path(out) / RUNS_DIR / f"{run_id}.parquet"


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".parquet")
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_run(out: str | Path, run_id: str, df: pd.DataFrame) -> None:
    atomic_write_parquet(df, run_path(out, run_id))


def finished_run_ids(out: str | Path) -> set[str]:
    """Run ids whose stored status is not ``failed`` (those are skipped on re-run)."""
    done = set()
    for file in (Path(out) / RUNS_DIR).glob("*.parquet"):
        try:
            status = pd.read_parquet(file, columns=["status"])["status"]
        except Exception:  # unreadable file: treat as not finished, it will be rewritten
            continue
        if len(status) and (status != FAILED).all():
            done.add(file.stem)
    return done


def consolidate(out: str | Path) -> pd.DataFrame:
    """Rebuild ``OUT/results.parquet`` from the per-run files and return the table."""
    files = sorted((Path(out) / RUNS_DIR).glob("*.parquet"))
    frames = [pd.read_parquet(f) for f in files]
    frames = [f for f in frames if len(f)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(df):
        atomic_write_parquet(df, Path(out) / RESULTS_FILE)
    return df


def load(out: str | Path) -> pd.DataFrame:
    """The whole results table of an output folder."""
    return pd.read_parquet(Path(out))
