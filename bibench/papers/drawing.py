"""Drawing helpers shared by the paper modules (figures and tables from stored results)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bibench.analysis import plots
from bibench.analysis.hitting import curves
from bibench.analysis.report import ReportOptions, write_report
from bibench.analysis.tables import to_markdown

Output = tuple[Path, str]


def series(df: pd.DataFrame, by: dict[str, pd.Series], metric: str, x: str, transform="none"):
    """Curves of ``metric`` against ``x`` for each named subset ``by[name]`` (a row mask),
    all on one grid: ``(grid, {name: (runs, grid)})``."""
    parts = [
        df[mask].assign(problem_setting="all", algorithm_setting=name)
        for name, mask in by.items()
        if mask.any()
    ]
    if not parts:
        return None
    ((grid, values),) = curves(
        pd.concat(parts), metric, x, n_grid=120, transform=transform
    ).values()
    return grid, {name: values[name] for name in by if name in values}


def save(fig, stem: Path, what: str) -> list[Output]:
    return [(p, what) for p in plots.save(fig, stem)]


def table(out: Path, stem: str, table: pd.DataFrame, what: str) -> list[Output]:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(to_markdown(table))
    table.to_csv(out / f"{stem}.csv", index=False)
    return [(out / f"{stem}.md", what), (out / f"{stem}.csv", what)]


def report(df: pd.DataFrame, out: Path, what: str) -> list[Output]:
    written = write_report(df, out, ReportOptions(n_boot=300))
    keep = {
        "curves_hypergrad_norm_vs_oracle_calls",
        "curves_dist_to_solution_vs_oracle_calls",
        "n_eps",
        "final",
        "complexity",
        "exponents",
    }
    return [
        (p, f"{what}: {d}") for p, d in written if p.stem in keep and p.suffix in (".png", ".md")
    ]


