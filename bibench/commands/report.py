"""``bibench report``: every figure and table of one or more results folders, from the
stored tables alone (see :mod:`bibench.analysis.report`); ``--html`` adds one
self-contained page (:mod:`bibench.analysis.html`). Several ``--results`` folders are
compared as one table (a new plugin's runs beside stored baselines), ``--problems`` /
``--algorithms`` keep only those registered names."""

from __future__ import annotations

import argparse
from pathlib import Path

from bibench.errors import UserError

FIT_METHODS = ("ols", "theil-sen")  # bibench.analysis.fits.METHODS, without importing it


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"bad value for {what}: '{text}' (comma-separated numbers)") from None
    if not values or any(not v > 0 for v in values):
        raise UserError(f"bad value for {what}: '{text}' (positive numbers)")
    return values


def register(sub) -> None:
    p = sub.add_parser("report", help="figures and tables of a results folder")
    p.add_argument("--results", required=True, nargs="+", action="extend", metavar="DIR",
                   help="results folder(s) of 'run' (several: compared as one)")  # fmt: skip
    p.add_argument("--problems", help="comma list of problem names to keep")
    p.add_argument("--algorithms", help="comma list of algorithm names to keep")
    p.add_argument("--html", action="store_true",
                   help="also write OUT/report.html, one self-contained page")  # fmt: skip
    p.add_argument("--out", metavar="DIR", help="output folder (default DIR/_report)")
    p.add_argument(
        "--metric",
        default="hypergrad_norm",
        help="stationarity measure for N(eps) (default hypergrad_norm)",
    )
    p.add_argument(
        "--eps", default="1e-1,1e-2,1e-3,1e-4", help="targets of the N(eps) table (comma list)"
    )
    p.add_argument(
        "--absolute",
        action="store_true",
        help="targets are absolute (default: relative to the median initial metric)",
    )
    p.add_argument(
        "--fit-range",
        default="1e-1,1e-8",
        dest="fit_range",
        help="declared eps range of the slope fit, 'hi,lo'",
    )
    p.add_argument(
        "--eps-min",
        type=float,
        default=1e-8,
        dest="eps_min",
        help="smallest target of the complexity grid",
    )
    p.add_argument("--fit-method", choices=FIT_METHODS, default="ols", dest="fit_method")
    p.add_argument(
        "--n-boot",
        type=int,
        default=1000,
        dest="n_boot",
        help="bootstrap resamples over seeds for the slope CI",
    )
    p.add_argument("--include-stale", action="store_true", dest="include_stale",
                   help="also count runs a code edit superseded")  # fmt: skip
    p.add_argument("--claims", metavar="DIR",
                   help="add the seed papers' claims, evaluated from the results stored by "
                        "'bibench claims --out DIR' (nothing is computed)")  # fmt: skip
    p.set_defaults(func=run)


def _seed_claims(folder: Path) -> str:
    """The claims section: the table and a line per note."""
    from bibench.analysis.tables import to_markdown
    from bibench.papers import claims_table, stored_claims

    rows, notes = stored_claims(folder)
    text = to_markdown(claims_table(rows)) if rows else "No paper's runs are stored here.\n"
    return text + "".join(f"\n- note: {n}" for n in notes) + "\n"


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def run(args: argparse.Namespace) -> int:
    from bibench.analysis.report import ReportOptions, write_report
    from bibench.analysis.runs import load_results

    fit_range = _floats(args.fit_range, "--fit-range")
    if len(fit_range) != 2:
        raise UserError(f"bad value for --fit-range: '{args.fit_range}' (two numbers)")
    if not 0 < args.eps_min < 1:
        raise UserError(f"bad value for --eps-min: {args.eps_min} (in (0, 1))")
    if args.n_boot < 0:
        raise UserError(f"bad value for --n-boot: {args.n_boot} (>= 0)")
    folders = [Path(r) for r in args.results]
    df = load_results(folders, _names(args.problems), _names(args.algorithms),
                      include_stale=args.include_stale)
    if args.metric not in df.columns:
        where = ", ".join(map(str, folders))
        raise UserError(f"unknown metric '{args.metric}' (not a column of {where})")
    opts = ReportOptions(
        metric=args.metric,
        table_eps=_floats(args.eps, "--eps"),
        relative=not args.absolute,
        eps_min=args.eps_min,
        fit_range=(fit_range[0], fit_range[1]),
        fit_method=args.fit_method,
        n_boot=args.n_boot,
    )
    # "_": pandas.read_parquet(DIR) skips it, as it skips DIR/_runs
    out = Path(args.out) if args.out else folders[0] / "_report"
    claims = _seed_claims(Path(args.claims)) if args.claims else None
    written = write_report(df, out, opts, claims=claims)
    if args.html:
        written.append((html_report(df, out, written, opts), "self-contained HTML page"))
    for path, what in written:
        if path.suffix in (".png", ".md", ".html"):
            print(f"{path}  ({what})")
    print(
        f"bibench: report of {df['run_id'].nunique()} runs written to {out} "
        f"(PNG+PDF figures, MD/TeX/CSV tables; index {out / 'report.md'})"
    )
    return 0


def html_report(df, out: Path, written, opts) -> Path:
    """``out/report.html``: the curves of the report's metrics and the numeric tables."""
    import pandas as pd

    from bibench.analysis import html
    from bibench.analysis.report import CURVE_METRICS, CURVE_X
    from bibench.analysis.runs import METRIC_TEXT, X_LABELS, prepare

    tables = [(what, pd.read_csv(p)) for p, what in written if p.suffix == ".csv"]
    tables.sort(key=lambda t: "leaderboard" not in t[0].lower())  # the leaderboard first
    metrics = list(dict.fromkeys([opts.metric, *CURVE_METRICS]))
    data = html.curve_data(prepare(df), metrics, CURVE_X, n_grid=opts.n_grid)
    return html.write_html(out / "report.html", tables, data, metric_labels=METRIC_TEXT,
                           x_labels=X_LABELS)  # fmt: skip
