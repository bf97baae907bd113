"""``bibench status OUT``: done, diverged, failed, stale and pending runs per (problem,
algorithm), and the wall time spent (see :mod:`bibench.status`)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("status", help="counts of done/diverged/failed/stale/pending runs")
    p.add_argument("out", metavar="OUT", help="results folder")
    p.add_argument("--errors", action="store_true",
                   help="also list every diverged or failed run with its message")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bibench import status

    table = status.status_table(args.out)
    if args.errors:
        for row in status.errors(args.out).itertuples():
            print(f"run {row.run_id} ({row.label}) {row.status}: {row.error}")
    if table.empty:
        print(f"{args.out}: no runs")
        return 0
    shown = table.assign(wall_s=table["wall_s"].round(2))
    print(shown.to_string(index=False, na_rep="?"))
    totals = {k: table[k].sum(min_count=1) for k in (*status.COUNTS, "wall_s")}
    text = ", ".join(
        f"{'?' if v != v else int(v)} {k}" for k, v in totals.items() if k != "wall_s"
    )
    print(f"total: {text}; {totals['wall_s']:.1f} s of batch wall time")
    if table["pending"].isna().all():
        print(f"pending unknown: no plan file in {args.out} (a 'run' writes one)")
    return 0
