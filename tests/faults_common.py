"""Shared pieces of the fault tests (tests/test_faults.py, tests/test_faults_cluster.py):
the plugin file and the uninterrupted reference run as module-scoped fixtures, and the
comparison of a re-run folder with that reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from bibench import store
from bibench.cli import main

IGNORE = ["wall_time", "hostname", "batch_size"]  # timing, host, how the runs were batched


def table(out: Path) -> pd.DataFrame:
    df = store.load(out).drop(columns=IGNORE)
    return df.sort_values(["run_id", "step"]).reset_index(drop=True)


def finished_files(out: Path) -> dict[str, int]:
    """run_id -> modification time (ns) of its finished run file."""
    ids = store.finished_run_ids(out)
    return {rid: store.run_path(out, rid).stat().st_mtime_ns for rid in ids}


def check_rerun(out: Path, reference: pd.DataFrame) -> None:
    """The folder's table equals the uninterrupted one, without duplicate rows."""
    df = store.load(out, include_stale=True)
    assert not df.duplicated(["run_id", "step"]).any()
    assert not df["stale"].any()
    pd.testing.assert_frame_equal(table(out), reference)


def plugin_fixture(name: str, source: str):
    """A module-scoped fixture: the plugin ``source`` written to ``<name>.py``."""

    @pytest.fixture(scope="module")
    def plugin(tmp_path_factory) -> Path:
        path = tmp_path_factory.mktemp("plugin") / f"{name}.py"
        path.write_text(source)
        return path

    return plugin


def reference_fixture(cli: Callable[..., list[str]], runs: int):
    """A module-scoped fixture: the table of the uninterrupted (serial) run of
    ``cli(out, plugin)``, checked to hold ``runs`` finished runs."""

    @pytest.fixture(scope="module")
    def reference(plugin, tmp_path_factory) -> pd.DataFrame:
        out = tmp_path_factory.mktemp("reference")
        assert main(cli(out, plugin)) == 0
        df = table(out)
        assert df["run_id"].nunique() == runs and set(df["status"]) == {"done"}
        return df

    return reference
