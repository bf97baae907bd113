"""``bibench run``: problems × algorithms × hyperparameter points × seeds."""

from __future__ import annotations

import argparse
import sys

from bibench import config
from bibench.errors import UserError
from bibench.runner import resolve_device
from bibench.sweep import run_sweep


def register(sub) -> None:
    p = sub.add_parser("run", help="run a benchmark grid (resumable)")
    p.add_argument("--config", metavar="FILE.yml", help="YAML whose keys mirror these flags")
    p.add_argument("--problems", help="comma list, e.g. quadratic[dim_y=20],p1")
    p.add_argument("--algorithms", help="comma list, e.g. aid_cg[lr_x=0.3],stocbio")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    p.add_argument("--budget", type=int, help="oracle calls per run")
    p.add_argument("--max-time", type=float, dest="max_time", help="seconds per batch")
    p.add_argument("--out", help="results folder (default results/run)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument("--plugin", action="append", metavar="FILE.py", help="extra plugin file")
    p.add_argument("--grid", action="store_true", default=None,
                   help="use each algorithm's default grid instead of its defaults")  # fmt: skip
    p.add_argument("--batch-size", type=int, dest="batch_size",
                   help="max runs per lockstep batch (0: all)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> config.RunConfig:
    data = config.load_yaml(args.config) if args.config else {}
    flags = {
        "problems": args.problems,
        "algorithms": args.algorithms,
        "seeds": args.seeds,
        "budget": args.budget,
        "max_time": args.max_time,
        "out": args.out,
        "device": args.device,
        "plugin": args.plugin,
        "grid": args.grid,
        "batch_size": args.batch_size,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    return config.from_mapping(data)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    specs = config.expand(cfg)
    device = resolve_device(cfg.device)
    batch_size = cfg.extra.get("batch_size", 0)
    if not isinstance(batch_size, int) or batch_size < 0:
        raise UserError(f"bad value for batch_size: {batch_size!r} (an integer >= 0)")
    summary = run_sweep(
        specs, cfg.out, device=str(device), max_batch=batch_size, progress=not args.quiet
    )
    for msg in summary.messages:
        print(f"bibench: {msg}", file=sys.stderr)
    print(f"bibench: {summary.line()}; results in {cfg.out} (pandas.read_parquet('{cfg.out}'))")
    return 0 if summary.ok else 1
