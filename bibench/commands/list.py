"""``bibench list``: problems and algorithms with a one-line description each."""

from __future__ import annotations

import argparse

from bibench.registry import ALGORITHMS, PROBLEMS, discover


def register(sub) -> None:
    p = sub.add_parser("list", help="list problems and algorithms")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="extra plugin file (repeatable)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    discover(args.plugin)
    print("problems:")
    width = max([len(n) for n in PROBLEMS.entries] + [len(n) for n in ALGORITHMS.entries] + [4])
    for name in sorted(PROBLEMS.entries):
        cls = PROBLEMS.entries[name]
        print(f"  {name:<{width}}  [{cls.regime}]  {cls.description()}")
    print("algorithms:")
    for name in sorted(ALGORITHMS.entries):
        print(f"  {name:<{width}}  {ALGORITHMS.entries[name].description()}")
    return 0
