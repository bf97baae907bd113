"""The results store: a tidy long table, one row per (run, checkpoint).

Layout of an output folder ``OUT``::

    OUT/_runs/<run_id>.parquet   one file per run (the resume cache)
    OUT/_runs/.index             one JSON line per stored run: the fast list of finished runs
    OUT/_runs/.lock              the folder lock (writes, index, consolidation, claims)
    OUT/_runs/.claims/           which live ``run`` process executes which runs
    OUT/results.parquet          the current runs, rebuilt after every batch

Load results with :func:`load` (``bibench.store.load(OUT)``), or with pandas as
``pandas.read_parquet(OUT / "results.parquet")``. Both read only what bibench wrote;
``pandas.read_parquet(OUT)`` would also merge any other parquet file put in the folder,
and fails on a file that is not parquet.

Crash safety. A run file is written under a hidden temporary name that carries the
writer's pid (``.tmp-<pid>-...``) and renamed over its target, so a killed write leaves
at most a temporary file: it is never read (only ``<16 hex digits>.parquet`` names are
run files) and is deleted by the next ``run`` once its writer is dead. The index line is
appended after the rename, under the folder lock; a run file the index lacks (a kill
between the two) is read once and indexed. Files in ``_runs`` that are not bibench run
files, and parquet files next to ``results.parquet``, are ignored with one warning line
naming them. Reading and consolidating take the folder lock (:mod:`filelock`), so they
never see each other half done.

Stale runs. A run id hashes the config and the code that ran it
(:attr:`bibench.config.RunSpec.provenance`), so an edit to a plugin or to the framework
gives new ids and the old runs stay on disk. Runs of one config (equal ``config_id``)
are ordered by when a sweep last wrote or reused them; the latest is current, the rest
are *stale*. ``results.parquet`` and :func:`load` hold the current runs only;
``load(OUT, include_stale=True)`` returns all of them with a ``stale`` column.

A run is finished when it is stored with a status other than ``failed``; failed runs
are recorded but retried by the next ``run``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
from filelock import FileLock, Timeout

from bibench.errors import UserError

__all__ = [
    "RESULTS_FILE",
    "RUNS_DIR",
    "Claims",
    "IndexEntry",
    "check_writable",
    "clean_leftovers",
    "consolidate",
    "finished_run_ids",
    "folder_lock",
    "load",
    "mark_current",
    "read_index",
    "run_path",
    "write_run",
]

RUNS_DIR = "_runs"
RESULTS_FILE = "results.parquet"
INDEX_FILE = ".index"
LOCK_FILE = ".lock"
CLAIMS_DIR = ".claims"
TMP_PREFIX = ".tmp-"
FAILED = "failed"
LOCK_TIMEOUT = 120.0  # seconds to wait for the folder lock before giving up
LEFTOVER_AGE = 3600.0  # a temporary file without a readable pid is removed after this
RUN_FILE = re.compile(r"[0-9a-f]{16}\.parquet")
HOST = hashlib.sha1(platform.node().encode()).hexdigest()[:6]


def run_path(out: str | Path, run_id: str) -> Path:
    return Path(out) / RUNS_DIR / f"{run_id}.parquet"


def _runs(out: str | Path) -> Path:
    return Path(out) / RUNS_DIR


_locks: dict[str, FileLock] = {}


@contextlib.contextmanager
def folder_lock(out: str | Path) -> Iterator[None]:
    """Hold the folder lock of ``out``; a folder that cannot be written (read-only
    results) is read without it."""
    runs = _runs(out)
    if not runs.is_dir():  # nothing stored yet: nothing to race on (and nothing created)
        yield
        return
    try:
        path = str((runs / LOCK_FILE).resolve())
        # one FileLock per path in this process: it is reentrant, while two would block
        # each other (flock locks belong to the open file)
        lock = _locks.setdefault(path, FileLock(path, timeout=LOCK_TIMEOUT))
        lock.acquire()
    except Timeout:
        raise UserError(f"results folder {out} stayed locked for {LOCK_TIMEOUT:g} s") from None
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def check_writable(out: str | Path) -> None:
    """A UserError naming ``out`` unless it is (or can be made) a writable folder; called
    before any run starts."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out} lies under {parent}, which is a file")
            break
    try:
        _runs(out).mkdir(parents=True, exist_ok=True)
        probe = _runs(out) / f"{TMP_PREFIX}{os.getpid()}-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {out} is not writable: {exc.strerror or exc}") from None


def _tmp_path(path: Path, pid: int | None = None) -> Path:
    """``.tmp-<pid>-<host>-<random>-<name>``: the writer, so that a leftover can be
    told from a write in progress (on this host, or another one sharing the folder)."""
    pid = os.getpid() if pid is None else pid
    return path.parent / f"{TMP_PREFIX}{pid}-{HOST}-{uuid.uuid4().hex[:8]}-{path.name}"


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` through a temporary file renamed over it (ordinary
    permissions: the umask's, as for any file the user writes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _last(df: pd.DataFrame, column: str, default: str) -> str:
    return str(df[column].iloc[-1]) if column in df.columns and len(df) else default


def write_run(out: str | Path, run_id: str, df: pd.DataFrame) -> None:
    """Store one run's frame and index it."""
    path = run_path(out, run_id)
    atomic_write_parquet(df, path)
    entry = {"run": run_id, "status": _last(df, "status", FAILED),
             "config": _last(df, "config_id", run_id)}  # fmt: skip
    with folder_lock(out):
        _append_index(out, [entry])


# ---------------------------------------------------------------------------- the index


@dataclasses.dataclass(frozen=True)
class IndexEntry:
    """What the index knows of a stored run: its status, its config, and ``seq``, the
    order in which sweeps last wrote or reused it (higher: later)."""

    status: str
    config: str
    seq: int


def _append_index(out: str | Path, entries: Iterable[dict]) -> None:
    text = "".join(json.dumps(e) + "\n" for e in entries)
    if text:
        with open(_runs(out) / INDEX_FILE, "a", encoding="utf-8") as fh:
            fh.write(text)


def _parse_index(out: str | Path) -> dict[str, IndexEntry]:
    entries: dict[str, IndexEntry] = {}
    try:
        lines = (_runs(out) / INDEX_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return entries
    for seq, line in enumerate(lines):
        try:
            e = json.loads(line)
            entries[e["run"]] = IndexEntry(str(e["status"]), str(e["config"]), seq)
        except (ValueError, KeyError, TypeError):  # a torn last line (killed mid-append)
            continue
    return entries


def _run_files(out: str | Path) -> tuple[dict[str, Path], list[Path]]:
    """Run files by id, and the files in ``_runs`` that are neither run files nor the
    store's own (lock, index, claims, temporary files)."""
    runs, foreign = {}, []
    try:
        names = os.listdir(_runs(out))
    except OSError:
        return runs, foreign
    for name in names:
        if RUN_FILE.fullmatch(name):
            runs[name[:16]] = _runs(out) / name
        elif name not in (INDEX_FILE, LOCK_FILE, CLAIMS_DIR) and not name.startswith(TMP_PREFIX):
            foreign.append(_runs(out) / name)
    return runs, sorted(foreign)


def read_index(out: str | Path) -> dict[str, IndexEntry]:
    """Every stored run (status, config id, recency), from the index; run files it lacks
    (written by an older bibench, or killed between rename and index) are read once and
    indexed, and entries whose file was deleted are dropped. Reads no run file otherwise,
    so a no-op re-run costs one small file."""
    with folder_lock(out):
        entries = _parse_index(out)
        files, _ = _run_files(out)
        entries = {rid: e for rid, e in entries.items() if rid in files}
        missing = sorted(set(files) - set(entries), key=lambda r: files[r].stat().st_mtime_ns)
        new = []
        for rid in missing:
            try:
                df = pd.read_parquet(files[rid], columns=None)
            except Exception:  # not a parquet file: reported by the loaders
                continue
            if "status" not in df.columns:
                continue
            new.append({"run": rid, "status": _last(df, "status", FAILED),
                        "config": _last(df, "config_id", rid)})  # fmt: skip
        if new:
            with contextlib.suppress(OSError):  # a read-only folder: index in memory only
                _append_index(out, new)
            base = max((e.seq for e in entries.values()), default=-1) + 1
            for i, e in enumerate(new):
                entries[e["run"]] = IndexEntry(e["status"], e["config"], base + i)
    return entries


def finished_run_ids(out: str | Path) -> set[str]:
    """Run ids stored with a status other than ``failed`` (those are skipped on re-run)."""
    return {rid for rid, e in read_index(out).items() if e.status != FAILED}


def stale_run_ids(entries: dict[str, IndexEntry]) -> set[str]:
    """Runs that a later run of the same config superseded."""
    latest: dict[str, tuple[int, str]] = {}
    for rid, e in entries.items():
        if e.config not in latest or e.seq > latest[e.config][0]:
            latest[e.config] = (e.seq, rid)
    current = {rid for _, rid in latest.values()}
    return set(entries) - current


def mark_current(out: str | Path, run_ids: Iterable[str]) -> None:
    """Record that a sweep reused the stored runs ``run_ids``: each becomes the current run
    of its config again (after a plugin edit was reverted, say). Appends only for runs
    that were not current, so a no-op re-run writes nothing."""
    with folder_lock(out):
        entries = _parse_index(out)
        stale = stale_run_ids(entries)
        _append_index(out, [{"run": r, "status": entries[r].status, "config": entries[r].config}
                            for r in sorted(set(run_ids) & stale)])  # fmt: skip


# ----------------------------------------------------------------- leftovers and warnings


def clean_leftovers(out: str | Path) -> list[Path]:
    """Delete the temporary files of writes that were killed (their writer, on this host,
    is dead; elsewhere: untouched for ``LEFTOVER_AGE``); return them."""
    removed = []
    for folder in (Path(out), _runs(out)):
        try:
            names = [n for n in os.listdir(folder) if n.startswith(TMP_PREFIX)]
        except OSError:
            continue
        for name in names:
            path = folder / name
            pid, _, rest = name[len(TMP_PREFIX):].partition("-")
            try:
                if pid.isdigit() and rest.startswith(f"{HOST}-"):  # written on this host
                    dead = not _alive(int(pid))
                else:  # another host's (or an older bibench's): only when long abandoned
                    dead = time.time() - path.stat().st_mtime > LEFTOVER_AGE
                if dead:
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_warned: set[str] = set()


def _warn_foreign(out: str | Path, paths: list[Path]) -> None:
    """One line naming the files that are not bibench's (once per process and folder)."""
    names = [str(p.relative_to(out)) for p in paths]
    key = f"{Path(out).resolve()}:{names}"
    if names and key not in _warned:
        _warned.add(key)
        print(f"bibench: warning: ignored {len(names)} file(s) in {out} that are not bibench "
              f"run files: {', '.join(names)}", file=sys.stderr)  # fmt: skip


def _stray_parquet(out: str | Path) -> list[Path]:
    """Parquet files next to ``results.parquet`` (``pandas.read_parquet(OUT)`` would merge
    them; bibench does not)."""
    try:
        return sorted(p for p in Path(out).glob("*.parquet")
                      if p.name != RESULTS_FILE and not p.name.startswith(TMP_PREFIX))
    except OSError:
        return []


# ------------------------------------------------------------------ consolidation, loading


def _read_runs(out: str | Path) -> pd.DataFrame:
    """All stored runs with a ``stale`` column (under the folder lock)."""
    entries = read_index(out)
    stale = stale_run_ids(entries)
    files, foreign = _run_files(out)
    frames = []
    for rid in sorted(files):
        try:
            df = pd.read_parquet(files[rid])
        except Exception:
            foreign.append(files[rid])
            continue
        if "run_id" not in df.columns or (len(df) and (df["run_id"] != rid).any()):
            foreign.append(files[rid])
            continue
        if len(df):
            frames.append(df.assign(stale=rid in stale))
    _warn_foreign(out, sorted(foreign) + _stray_parquet(out))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _fresh(out: str | Path) -> bool:
    """Whether ``results.parquet`` is newer than the last index change."""
    try:
        results = (Path(out) / RESULTS_FILE).stat().st_mtime_ns
    except OSError:
        return False
    try:
        index = (_runs(out) / INDEX_FILE).stat().st_mtime_ns
    except OSError:
        return True
    return results >= index


def consolidate(out: str | Path, *, force: bool = True) -> pd.DataFrame | None:
    """Rebuild ``OUT/results.parquet`` (the current runs) from the per-run files and return
    that table; with ``force=False``, only when a run was stored since the last rebuild
    (otherwise return None without reading anything)."""
    with folder_lock(out):
        if not force and _fresh(out):
            return None
        df = _read_runs(out)
        if len(df):
            df = df[~df.pop("stale")].reset_index(drop=True)
            atomic_write_parquet(df, Path(out) / RESULTS_FILE)
        return df


def load(out: str | Path, *, include_stale: bool = False) -> pd.DataFrame:
    """The results table of an output folder: the current runs (see the module docstring),
    or, with ``include_stale``, every stored run and a ``stale`` column. Files that are
    not bibench's are ignored with a warning; a ``results.parquet`` that lags the runs
    (a killed sweep) is rebuilt first."""
    out = Path(out)
    if include_stale:
        with folder_lock(out):
            return _read_runs(out)
    with folder_lock(out):
        if not _fresh(out):
            try:
                df = consolidate(out)
            except OSError:  # read-only folder: the table in memory
                df = _read_runs(out)
                df = df[~df.pop("stale")] if len(df) else df
            return df.reset_index(drop=True) if df is not None else pd.DataFrame()
        _warn_foreign(out, _run_files(out)[1] + _stray_parquet(out))
        return pd.read_parquet(out / RESULTS_FILE)


# ------------------------------------------------------------------------------ claims


class Claims:
    """This process's claim on the runs it executes, so that two ``run`` processes on one
    folder never execute the same run.

    Each process holds its own :class:`filelock.FileLock` (``.claims/<id>.lock``) for as
    long as it lives, and lists its claimed runs in ``.claims/<id>.json``. Under the
    folder lock, :meth:`take` grants the runs that are neither finished nor listed by a
    live process. A process that died (kill -9, a lost node) lost its lock with it, so
    its claims are void: the lock is free, and the next :meth:`take` deletes them.
    """

    def __init__(self, out: str | Path) -> None:
        self.dir = _runs(out) / CLAIMS_DIR
        self.out = Path(out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lock = FileLock(self.dir / f"{self.name}.lock", timeout=0)
        self.lock.acquire()
        self.mine: set[str] = set()

    def _others(self) -> set[str]:
        taken: set[str] = set()
        for claim in self.dir.glob("*.json"):
            if claim.stem == self.name:
                continue
            owner = FileLock(claim.with_suffix(".lock"), timeout=0)
            try:
                owner.acquire()
            except Timeout:  # alive
                with contextlib.suppress(OSError, ValueError):
                    taken.update(json.loads(claim.read_text()))
                continue
            claim.unlink(missing_ok=True)  # its owner is dead: the claim is void
            owner.release()
            claim.with_suffix(".lock").unlink(missing_ok=True)
        return taken

    def _save(self) -> None:
        path = self.dir / f"{self.name}.json"
        tmp = self.dir / f"{TMP_PREFIX}{os.getpid()}-{self.name}.json"
        tmp.write_text(json.dumps(sorted(self.mine)))
        os.replace(tmp, path)

    def take(self, run_ids: list[str]) -> tuple[list[str], list[str], list[str]]:
        """Claim ``run_ids``: ``(granted, finished meanwhile, taken by another process)``."""
        with folder_lock(self.out):
            index = _parse_index(self.out)
            finished = {r for r in run_ids if r in index and index[r].status != FAILED
                        and run_path(self.out, r).exists()}  # fmt: skip
            others = self._others()
            granted = [r for r in run_ids if r not in finished and r not in others]
            self.mine.update(granted)
            self._save()
        return (granted, [r for r in run_ids if r in finished],
                [r for r in run_ids if r not in finished and r in others])  # fmt: skip

    def release(self, run_ids: Iterable[str]) -> None:
        with folder_lock(self.out):
            self.mine.difference_update(run_ids)
            self._save()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            (self.dir / f"{self.name}.json").unlink(missing_ok=True)
        self.lock.release()
        with contextlib.suppress(OSError):
            (self.dir / f"{self.name}.lock").unlink(missing_ok=True)
