r"""Settings and per-run summaries of a results table.

A *setting* is a problem with its parameters and an algorithm with its hyperparameters;
the seeds of a setting are its replicates. The store's ``label`` column already names
both halves the way the CLI does (``quadratic[dim_y=20] × aid_cg[lr_x=0.3] seed 0``), so
the setting is read from it and needs no plugin code: a report works on a results folder
alone. Where a problem holds a single hyperparameter point of an algorithm, the
algorithm's setting is its bare name.

Failed runs (an exception inside the algorithm) are incomplete and are retried by the
next ``run``; the analysis leaves them out. Diverged runs are outcomes: they stay, and
their final metric is :math:`+\infty`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bibench.errors import UserError

__all__ = [
    "METRIC_LABELS",
    "METRIC_TEXT",
    "SETTING",
    "X_LABELS",
    "initial_values",
    "load_results",
    "prepare",
    "run_summary",
    "slug",
    "split_label",
]

SETTING = ["problem_setting", "algorithm_setting"]
METRIC_LABELS = {
    "hypergrad_norm": r"$\|\nabla\Phi(x)\|$",
    "phi_gap": r"$\Phi(x) - \Phi^*$",
    "dist_to_solution": r"dist$(y, S(x))$",
    "lower_gap": r"$g(x, y) - g^*(x)$",
}
METRIC_TEXT = {
    "hypergrad_norm": "‖∇Φ(x)‖",
    "phi_gap": "Φ(x) − Φ*",
    "dist_to_solution": "dist(y, S(x))",
    "lower_gap": "g(x, y) − g*(x)",
}
X_LABELS = {
    "oracle_calls": "oracle calls (all types)",
    "samples": "samples",
    "wall_time": "wall time [s]",
    "step": "outer iterations",
}


def split_label(label: str) -> tuple[str, str]:
    """``'quadratic[dim_y=20] × aid_cg[lr_x=0.3] seed 0'`` -> ``('quadratic[dim_y=20]',
    'aid_cg[lr_x=0.3]')``."""
    head = label.rsplit(" seed ", 1)[0]
    problem, _, algorithm = head.partition(" × ")
    return problem, algorithm


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of finished runs (``done`` or ``diverged``) with the two setting columns,
    sorted by run and cost."""
    needed = {"run_id", "label", "status", "oracle_calls", "step"}
    missing = sorted(needed - set(df.columns))
    if missing:
        raise UserError(f"not a bibench results table: missing column '{missing[0]}'")
    df = df[df["status"] != "failed"].copy()
    if df.empty:
        raise UserError("the results table holds no finished run")
    halves = df["label"].map(split_label)
    df["problem_setting"] = halves.str[0]
    df["algorithm_setting"] = halves.str[1]
    # An algorithm run at one hyperparameter point per problem (as in the default
    # benchmark, whose step sizes differ between problem families) is one solver: one
    # colour, one legend entry, one line of the performance profile.
    if "algorithm" in df.columns:
        points = df.groupby(["problem_setting", "algorithm"])["algorithm_setting"].transform(
            "nunique"
        )
        df["algorithm_setting"] = df["algorithm_setting"].where(points > 1, df["algorithm"])
    return df.sort_values(["run_id", "oracle_calls", "step"], kind="stable").reset_index(drop=True)


def run_summary(df: pd.DataFrame, metric: str = "hypergrad_norm") -> pd.DataFrame:
    """One row per run: identity, status, the costs at its end (``oracle_calls``,
    ``samples``, ``wall_time``, ``step``), ``initial`` and ``final`` metric (``+inf`` for a
    diverged run, whatever it last recorded)."""
    g = df.groupby("run_id", sort=False)
    first, last = g.head(1).set_index("run_id"), g.tail(1).set_index("run_id")
    cols = ["problem", "algorithm", "seed", *SETTING, "status", "batch_size"]
    out = last[[c for c in cols if c in last.columns]].copy()
    for c in ("oracle_calls", "samples", "wall_time", "step"):
        if c in last.columns:
            out[f"{c}_end"] = last[c]
    out["initial"] = first[metric] if metric in first.columns else math.nan
    final = last[metric] if metric in last.columns else pd.Series(math.nan, index=last.index)
    out["final"] = np.where(out["status"] == "diverged", np.inf, final)
    return out.reset_index()


def initial_values(df: pd.DataFrame, metric: str = "hypergrad_norm") -> pd.Series:
    """Per problem setting, the median over runs of the metric at step 0 (the scale that
    relative targets multiply; equal for every algorithm on the problem, since the initial
    point depends only on the problem and the seed)."""
    first = df[df["step"] == 0]
    return first.groupby("problem_setting")[metric].median()


def slug(text: str) -> str:
    """A file-name-safe form of a setting name (``hat · stochastic`` -> ``hat_stochastic``)."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def load_results(
    folders: Sequence[str | Path],
    problems: Sequence[str] | None = None,
    algorithms: Sequence[str] | None = None,
    include_stale: bool = False,
) -> pd.DataFrame:
    """The stored tables of several results folders as one, keeping only the rows whose
    ``problem`` / ``algorithm`` (the registered names) are in ``problems`` /
    ``algorithms`` when given. A run stored in two folders (same ``run_id``: same problem,
    algorithm, parameters, seed and budget) is kept once, from the first folder, so a new
    plugin's folder is compared with stored baselines without re-running them. A folder
    without a results table or a filter name that matches nothing is a :class:`UserError`.
    Stale runs (superseded by an edit) are left out unless ``include_stale``."""
    from bibench import store

    frames = []
    for folder in folders:
        if not (Path(folder) / store.RESULTS_FILE).is_file():
            raise UserError(f"no results table in {folder} (expected {store.RESULTS_FILE})")
        df = store.load(folder, include_stale=include_stale)
        if frames and "run_id" in df.columns:
            seen = set().union(*(f["run_id"].unique() for f in frames))
            df = df[~df["run_id"].isin(seen)]
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for column, wanted in (("problem", problems), ("algorithm", algorithms)):
        if wanted:
            present = set(df[column].unique())
            missing = sorted(set(wanted) - present)
            if missing:
                raise UserError(
                    f"no runs of {column} {', '.join(repr(m) for m in missing)} in "
                    f"{', '.join(map(str, folders))} (present: {', '.join(sorted(present))})"
                )
            df = df[df[column].isin(list(wanted))]
    return df.reset_index(drop=True)
