"""``bibench run``: problems × algorithms × hyperparameter points × seeds."""

from __future__ import annotations

import argparse
import sys

from bibench import config, store
from bibench import plan as plan_module
from bibench.errors import UserError
from bibench.executors import EXECUTORS
from bibench.plan import expansions, plan_sweep
from bibench.runner import resolve_device
from bibench.sweep import run_sweep
from bibench.threads import torch_threads


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
    p.add_argument("--batch-size", dest="batch_size",
                   help="max runs per lockstep batch (0: all; auto: by free memory)")  # fmt: skip
    p.add_argument("--executor", choices=sorted(EXECUTORS),
                   help="where batches run (default serial)")  # fmt: skip
    p.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    p.add_argument("--shard", metavar="i/N", help="run only shard i (1..N) of the grid")
    p.add_argument("--devices", help="comma list, e.g. cuda:0,cuda:1: one worker per device")
    p.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler (default: a local one)")
    p.add_argument("--slurm", metavar="KEY=VALUE,...",
                   help="submitit options, e.g. slurm_partition=gpu,timeout_min=60")  # fmt: skip
    p.add_argument("--threads", type=int,
                   help="torch threads per process (default: torch's own)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", dest="dry_run",
                   help="print the plan (runs, batches, expansions, cost); run none")  # fmt: skip
    p.add_argument("--yes", action="store_true",
                   help="start a large sweep without asking (needed without a TTY)")  # fmt: skip
    p.add_argument("--fail-on-diverge", action="store_true", dest="fail_on_diverge",
                   help="exit 1 when a run diverged (default: exit 0, a result)")  # fmt: skip
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
        "executor": args.executor,
        "workers": args.workers,
        "shard": args.shard,
        "devices": args.devices,
        "scheduler": args.scheduler,
        "slurm": _key_values(args.slurm) if args.slurm else None,
        "threads": args.threads,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    # with blocks, --problems/--algorithms select among the blocks' runs by name
    blocked = bool(data.get("experiments") or data.get("tuned"))
    selected = {k: given.pop(k) for k in ("problems", "algorithms") if blocked and k in given}
    data.update(given)
    cfg = config.from_mapping(data)
    for key, text in selected.items():
        cfg.extra["only_" + key] = {n for n, _ in config.parse_name_list(text, key)}
    return cfg


def select(specs: list[config.RunSpec], cfg: config.RunConfig) -> list[config.RunSpec]:
    """Keep the runs whose names ``--problems``/``--algorithms`` picked from a blocked config."""
    only_p = cfg.extra.get("only_problems")
    only_a = cfg.extra.get("only_algorithms")
    for names, known in ((only_p, {s.problem for s in specs}),
                         (only_a, {s.algorithm for s in specs})):  # fmt: skip
        for name in sorted(names or ()):
            if name not in known:
                raise UserError(f"'{name}' is not in this config's experiments")
    return [
        s for s in specs
        if (not only_p or s.problem in only_p) and (not only_a or s.algorithm in only_a)
    ]  # fmt: skip


def _key_values(text: str) -> dict:
    """``k=v,k2=v2`` -> ``{k: v, k2: v2}`` with YAML values (as in ``name[k=v]``)."""
    ((_, values),) = config.parse_name_list(f"slurm[{text}]", "slurm options")
    return values


def _batch_size(value) -> int | str:
    if value == "auto":
        return value
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"bad value for batch_size: {value!r} (an integer >= 0, or auto)")
    return value


def executor_options(cfg: config.RunConfig) -> dict:
    """The sweep's executor keywords from ``cfg.extra``, checked."""
    extra = cfg.extra
    name = extra.get("executor", "serial")
    if name not in EXECUTORS:
        raise UserError(f"unknown executor '{name}' (known: {', '.join(EXECUTORS)})")
    workers = extra.get("workers", 0)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(f"bad value for workers: {workers!r} (an integer >= 0)")
    devices = extra.get("devices") or []
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    if not isinstance(devices, list):
        raise UserError(f"bad value for devices: {devices!r} (a list, e.g. [cuda:0, cuda:1])")
    slurm = extra.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise UserError(f"bad value for slurm: {slurm!r} (a mapping of submitit options)")
    threads = extra.get("threads", 0)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise UserError(f"bad value for threads: {threads!r} (an integer >= 0)")
    if name in ("serial", "processes"):  # local: fail now, not inside a worker
        for dev in devices or [cfg.device]:
            resolve_device(str(dev))
    return {
        "executor": name,
        "workers": workers,
        "devices": [str(d) for d in devices],
        "scheduler": extra.get("scheduler"),
        "slurm": slurm,
        "plugins": cfg.plugins,
        "shard": extra.get("shard"),
        "max_batch": _batch_size(extra.get("batch_size", 0)),
        "threads": threads,
    }


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    specs = select(config.expand(cfg), cfg)
    options = executor_options(cfg)
    with torch_threads(options["threads"]):  # not left changed for an in-process caller
        return _run(args, cfg, specs, options)


def _run(
    args: argparse.Namespace, cfg: config.RunConfig, specs: list[config.RunSpec], options: dict
) -> int:
    if args.dry_run:
        for line in expansions(cfg):
            print(f"expands: {line}")
        for line in plan_sweep(specs, cfg.out, device=cfg.device, **options).lines():
            print(line)
        return 0
    store.check_writable(cfg.out)  # before any batch is computed
    if not args.yes:
        confirm_large(specs, cfg, options)
    summary = run_sweep(specs, cfg.out, device=cfg.device, progress=not args.quiet, **options)
    for msg in summary.report(cfg.out):
        print(f"bibench: {msg}", file=sys.stderr)
    print(f"bibench: {summary.line()}; results in {cfg.out} (pandas.read_parquet('{cfg.out}'))")
    # exit status: 0 when every run has an outcome (diverging is one), 1 on failed runs
    return 1 if summary.failed or (args.fail_on_diverge and summary.diverged) else 0


def confirm_large(specs: list[config.RunSpec], cfg: config.RunConfig, options: dict) -> None:
    """Ask before a sweep of more than ``CONFIRM_RUNS`` runs to do whose estimated wall
    time exceeds ``CONFIRM_SECONDS``; without a terminal, refuse (``--yes`` skips this)."""
    unique = {s.run_id for s in specs}
    if len(unique) <= plan_module.CONFIRM_RUNS:  # cheap bound: no sweep runs more than this
        return
    sweep_plan = plan_sweep(specs, cfg.out, device=cfg.device, probe=False, **options)
    if sweep_plan.to_run <= plan_module.CONFIRM_RUNS:
        return
    sweep_plan = plan_sweep(specs, cfg.out, device=cfg.device,
                            probe_total=plan_module.CONFIRM_PROBE, **options)  # fmt: skip
    if not sweep_plan.wall_seconds > plan_module.CONFIRM_SECONDS:
        return
    what = (f"{sweep_plan.to_run:,} runs to do, estimated {_minutes(sweep_plan.wall_seconds)} "
            f"(above {_minutes(plan_module.CONFIRM_SECONDS)})")  # fmt: skip
    if not sys.stdin.isatty():
        raise UserError(f"large sweep: {what}; pass --yes to start it (--dry-run shows the plan)")
    print("\n".join(sweep_plan.lines()), file=sys.stderr)
    answer = input(f"bibench: large sweep: {what}. Start it? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise UserError("not started")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"
