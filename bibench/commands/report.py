"""``bibench report``: every figure and table of a results folder, from the stored table
alone (see :mod:`bibench.analysis.report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bibench import store
from bibench.analysis.fits import METHODS
from bibench.analysis.report import ReportOptions, write_report
from bibench.errors import UserError


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
    p.add_argument("--results", required=True, metavar="DIR", help="results folder of 'run'")
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
    p.add_argument("--fit-method", choices=sorted(METHODS), default="ols", dest="fit_method")
    p.add_argument(
        "--n-boot",
        type=int,
        default=1000,
        dest="n_boot",
        help="bootstrap resamples over seeds for the slope CI",
    )
    p.add_argument("--include-stale", action="store_true", dest="include_stale",
                   help="also count runs a code edit superseded")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    results = Path(args.results)
    if not (results / store.RESULTS_FILE).is_file():
        raise UserError(f"no results table in {results} (expected {store.RESULTS_FILE})")
    fit_range = _floats(args.fit_range, "--fit-range")
    if len(fit_range) != 2:
        raise UserError(f"bad value for --fit-range: '{args.fit_range}' (two numbers)")
    if not 0 < args.eps_min < 1:
        raise UserError(f"bad value for --eps-min: {args.eps_min} (in (0, 1))")
    if args.n_boot < 0:
        raise UserError(f"bad value for --n-boot: {args.n_boot} (>= 0)")
    df = store.load(results, include_stale=args.include_stale)
    if args.metric not in df.columns:
        raise UserError(f"unknown metric '{args.metric}' (not a column of {results})")
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
    out = Path(args.out) if args.out else results / "_report"
    written = write_report(df, out, opts)
    for path, what in written:
        if path.suffix in (".png", ".md"):
            print(f"{path}  ({what})")
    print(
        f"bibench: report of {df['run_id'].nunique()} runs written to {out} "
        f"(PNG+PDF figures, MD/TeX/CSV tables; index {out / 'report.md'})"
    )
    return 0
