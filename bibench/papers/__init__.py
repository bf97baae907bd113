"""Seed-paper reproductions, one module per paper: :mod:`~bibench.papers.unibio`,
:mod:`~bibench.papers.bgs`, :mod:`~bibench.papers.hgms`, :mod:`~bibench.papers.chen`.

Each module gives ``TITLE``, ``EXPERIMENTS`` (names of shipped configs in
``configs/papers/``, the first one drawn by ``bibench figures``), ``QUICK`` (config
overrides of ``--quick`` per experiment), ``draw(df, out)`` (figures and tables from stored
results) and ``claims(df, context)`` (one :class:`~bibench.papers.core.Claim` per claim,
its verdict computed by :mod:`bibench.papers.core`'s rules); optionally
``configure(data, out, quick)``, which may edit the experiments' config mappings before
they run (e.g. set a tuned step) and returns the ``context`` of ``claims``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pandas as pd

from bibench import config
from bibench.papers import bgs, chen, hgms, unibio
from bibench.papers.core import Claim, config_path, run_experiment, stored_experiment

__all__ = ["PAPERS", "check", "claims_table", "stored_claims"]

PAPERS: dict[str, ModuleType] = {"unibio": unibio, "bgs": bgs, "hgms": hgms, "chen": chen}


def check(
    names: list[str],
    out: Path,
    *,
    quick: bool = False,
    stored: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> tuple[list[Claim], bool, list[str]]:
    """Every claim of the papers ``names``, from their experiments in
    ``out/<paper>[-quick]/<experiment>/``: run them (resumable) and evaluate; with
    ``stored``, compute nothing new and evaluate only the papers all of whose runs are
    stored (``report --claims``; a paper's ``configure`` step, e.g. its tuning, is then a
    no-op rerun). Returns the claims, whether any run failed, and a note per skipped
    paper."""
    rows: list[Claim] = []
    failed, notes = False, []
    suffix = "-quick" if quick else ""
    for name in names:
        paper = PAPERS[name]
        folder = Path(out) / f"{name}{suffix}"
        if stored and not folder.is_dir():
            notes.append(f"{name}: no stored results in {folder} (bibench claims makes them)")
            continue
        data = {}
        for exp in paper.EXPERIMENTS:
            data[exp] = config.load_yaml(config_path(exp))
            if quick:
                data[exp].update(paper.QUICK[exp])
        configure = getattr(paper, "configure", None)
        context = configure(data, folder, quick) if configure else {}
        frames, missing = [], 0
        for exp, mapping in data.items():
            label = f"{paper.TITLE}: {exp}"
            if stored:
                df, absent = stored_experiment(mapping, folder / exp, label=label)
                missing += absent
            else:
                df, bad = run_experiment(mapping, folder / exp, label=label, device=device,
                                         progress=progress)  # fmt: skip
                failed |= bad
            frames.append(df)
        if missing:
            notes.append(f"{name}: {missing} runs not stored in {folder} (bibench claims "
                         "completes them)")  # fmt: skip
            continue
        rows += paper.claims(pd.concat(frames, ignore_index=True), context)
    return rows, failed, notes


def stored_claims(folder: Path) -> tuple[list[Claim], list[str]]:
    """Every paper's claims from the runs stored in ``folder`` (``bibench claims --out``),
    computing nothing: the full runs where stored, else the ``--quick`` ones. Returns the
    claims and a note per paper that is absent or comes from the quick runs."""
    rows, notes = [], []
    for name in PAPERS:
        quick = not (folder / name).is_dir() and (folder / f"{name}-quick").is_dir()
        got, _, why = check([name], folder, quick=quick, stored=True, progress=False)
        rows += got
        notes += why
        if got and quick:
            notes.append(f"{name}: from the --quick runs (smoke evidence)")
    return rows, notes


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    """One row per claim: paper, claim, experiment, evidence, verdict."""
    return pd.DataFrame([c.row() for c in claims])
