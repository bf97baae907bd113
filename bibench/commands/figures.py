"""``bibench figures --paper unibio|bgs|hgms|chen``: regenerate a seed paper's experiments.

The paper's first experiment (``configs/papers/<paper>.yml``, keys as in
:mod:`bibench.config`, so ``bibench run --config`` runs it too) runs into
``results/figures/<paper>/`` (resumable: finished runs are skipped); the figures are drawn
from the stored results only into ``results/figures/<paper>/_figures/`` (the leading
underscore keeps ``pandas.read_parquet`` of the results folder blind to it, as for
``_runs``), and the command prints which figure or table of which paper each output
corresponds to. ``--quick`` is a reduced variant (fewer seeds, shorter runs) for tests and
smoke checks; it writes to ``<paper>-quick``. Names in a config that are not registered
(yet) are skipped with a note. What each paper draws is in its module of
:mod:`bibench.papers`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from bibench import config
from bibench.papers import PAPERS
from bibench.papers.core import config_path, run_experiment

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("figures", help="regenerate a seed paper's figures and tables")
    p.add_argument("--paper", required=True, choices=sorted(PAPERS))
    p.add_argument("--out", default="results/figures", help="default results/figures")
    p.add_argument("--config", metavar="FILE.yml", help="default configs/papers/<paper>.yml")
    p.add_argument("--quick", action="store_true", help="reduced run (fewer seeds, shorter)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paper = PAPERS[args.paper]
    names = [None] if args.config else getattr(paper, "FIGURE_EXPERIMENTS", paper.EXPERIMENTS[:1])
    out = Path(args.out) / f"{args.paper}{'-quick' if args.quick else ''}"
    lines: list[str] = []
    frames, failed = [], False
    for i, name in enumerate(names):
        path = Path(args.config) if name is None else config_path(name)
        data = config.load_yaml(path)
        if args.quick and name is not None:
            data.update(paper.QUICK[name])
        # the first experiment in OUT itself, any further one in OUT/<name>
        df, bad = run_experiment(data, out if i == 0 else out / name,
                                 label=f"{paper.TITLE} from {path}", device=args.device,
                                 progress=not args.quiet, on_summary=lines.append)  # fmt: skip
        frames.append(df)
        failed |= bad
    df = pd.concat(frames, ignore_index=True)
    outputs = paper.draw(df, out / "_figures")
    for line in lines:
        print(f"bibench: {line}")
    grouped: dict[str, list[Path]] = {}
    for out_path, what in outputs:
        grouped.setdefault(what, []).append(out_path)
    for what, paths in grouped.items():
        print(f"{what}\n    -> {', '.join(str(p) for p in paths)}")
    return 1 if failed else 0
