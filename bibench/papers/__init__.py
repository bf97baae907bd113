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

from types import ModuleType

import pandas as pd

from bibench.papers import bgs, chen, hgms, unibio
from bibench.papers.core import NOT_TESTABLE, Claim

__all__ = ["PAPERS", "claims_table", "evaluate_claims"]

PAPERS: dict[str, ModuleType] = {"unibio": unibio, "bgs": bgs, "hgms": hgms, "chen": chen}


def evaluate_claims(df: pd.DataFrame, context: dict | None = None) -> list[Claim]:
    """The claims of every seed paper whose data are present in the results table ``df``
    (claims without data, ``not testable here``, are left out): for ``report``."""
    rows = [c for module in PAPERS.values() for c in module.claims(df, context)]
    return [c for c in rows if c.verdict != NOT_TESTABLE]


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    """One row per claim: paper, claim, experiment, evidence, verdict."""
    return pd.DataFrame([c.row() for c in claims])
