"""``bibench claims [--paper unibio|bgs|hgms|chen] [--quick]``: every claim of the seed
papers, its experiment, the measured evidence and a verdict computed from it.

For each paper the command runs its experiments (shipped configs in ``configs/papers/``,
after the paper's ``configure`` step, e.g. tuning a shared step) into
``results/claims/<paper>[-quick]/<experiment>/`` (resumable), evaluates the paper's claims
on the results (:mod:`bibench.papers`), prints the claims table and writes it to
``results/claims/claims[-quick].md`` and ``.csv``. ``--quick`` uses each experiment's
reduced variant (fewer seeds, shorter runs): a smoke check of the machinery, whose
verdicts rest on less evidence.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bibench.analysis.tables import to_markdown
from bibench.papers import PAPERS, check, claims_table

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("claims", help="each seed-paper claim with evidence and a verdict")
    p.add_argument("--paper", choices=sorted(PAPERS), help="one paper (default: all)")
    p.add_argument("--quick", action="store_true", help="reduced runs (smoke check)")
    p.add_argument("--out", default="results/claims", help="default results/claims")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    suffix = "-quick" if args.quick else ""
    names = [args.paper] if args.paper else list(PAPERS)
    rows, failed, _ = check(names, Path(args.out), quick=args.quick, device=args.device,
                            progress=not args.quiet)  # fmt: skip
    table = claims_table(rows)
    text = to_markdown(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"claims{suffix}.md").write_text(text)
    table.to_csv(out / f"claims{suffix}.csv", index=False)
    print(text)
    print(f"bibench: {len(rows)} claims in {time.perf_counter() - start:.0f} s; table in "
          f"{out / f'claims{suffix}.md'}")  # fmt: skip
    return 1 if failed else 0
