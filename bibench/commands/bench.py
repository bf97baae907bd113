"""``bibench bench``: per-run step time against batch size, harness overhead, and the
default benchmark's wall time (see :mod:`bibench.bench`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from bibench import bench
from bibench.errors import UserError
from bibench.registry import discover
from bibench.runner import resolve_device
from bibench.threads import torch_threads

PARTS = ("steps", "overhead", "default", "compile", "limit", "memory")
DEFAULT_PARTS = ("steps", "overhead", "default")


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark the harness: batching, overhead, wall time")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument(
        "--workloads",
        default=",".join(bench.DEFAULT_WORKLOADS),
        help="comma list of problem[k=v]:algorithm[k=v] "
        f"(default {','.join(bench.DEFAULT_WORKLOADS)})",
    )
    p.add_argument("--steps", type=int, default=50, help="outer steps per timed run")
    p.add_argument(
        "--max-batch",
        type=int,
        default=1024,
        dest="max_batch",
        help="largest batch of (a), also capped by free memory",
    )
    p.add_argument(
        "--overhead-batches",
        default="1,256",
        dest="overhead_batches",
        help="batch sizes at which (b) is measured",
    )
    p.add_argument(
        "--limit-workloads",
        default=",".join(bench.LIMIT_WORKLOADS),
        dest="limit_workloads",
        help="workloads of part limit (each needs a loop in bibench.fused)",
    )
    p.add_argument(
        "--limit-batches",
        default="1,256,4096",
        dest="limit_batches",
        help="batch sizes of part limit",
    )
    p.add_argument(
        "--limit-steps", type=int, default=200, dest="limit_steps", help="steps of part limit"
    )
    p.add_argument(
        "--memory-workload",
        default=bench.MEMORY_WORKLOAD,
        dest="memory_workload",
        help=f"workload of part memory (default {bench.MEMORY_WORKLOAD})",
    )
    p.add_argument(
        "--memory-batches",
        default="1,80,256",
        dest="memory_batches",
        help="batch sizes of part memory (the first should be 1)",
    )
    p.add_argument("--repeat", type=int, default=5, help="repetitions; the best is kept")
    p.add_argument(
        "--config", default="configs/default.yml", help="config of the default benchmark (c)"
    )
    p.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help=f"subset of {','.join(PARTS)} (default {','.join(DEFAULT_PARTS)})",
    )
    p.add_argument("--results", metavar="DIR",
                   help="part default: keep the timed run's results in DIR (a fresh folder; "
                        "default a temporary one)")  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py")
    p.add_argument("--out", default="results/bench", help="folder for bench.json and CSVs")
    p.set_defaults(func=run)


def _workloads(text: str) -> list[str]:
    items, depth, cur = [], 0, ""
    for ch in text:  # split on commas outside brackets
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    items.append(cur.strip())
    return [w for w in items if w]


def _batch_list(flag: str, text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"bad value for --{flag}: {text!r}") from None
    if not batches or min(batches) < 1:
        raise UserError(f"bad value for --{flag}: {text!r}")
    return batches


def _check(args: argparse.Namespace) -> tuple[list[str], list[int], list[int], list[int]]:
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise UserError(f"unknown bench part '{unknown[0]}' (known: {', '.join(PARTS)})")
    for name, value in (
        ("steps", args.steps),
        ("max-batch", args.max_batch),
        ("repeat", args.repeat),
        ("limit-steps", args.limit_steps),
    ):
        if value < 1:
            raise UserError(f"bad value for --{name}: {value} (must be >= 1)")
    if args.threads < 0:
        raise UserError(f"bad value for --threads: {args.threads} (must be >= 0)")
    overhead = _batch_list("overhead-batches", args.overhead_batches)
    limit = _batch_list("limit-batches", args.limit_batches)
    return parts, overhead, limit, _batch_list("memory-batches", args.memory_batches)


def _print_table(title: str, df: pd.DataFrame, columns: list[str]) -> None:
    print(f"\n{title}")
    print(df[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def run(args: argparse.Namespace) -> int:
    checked = _check(args)
    with torch_threads(args.threads):  # not left changed for an in-process caller
        return _bench(args, *checked)


def _bench(
    args: argparse.Namespace,
    parts: list[str],
    overhead_batches: list[int],
    limit_batches: list[int],
    memory_batches: list[int],
) -> int:
    discover(args.plugin)
    device = resolve_device(args.device)
    workloads = _workloads(args.workloads)
    limit_workloads = _workloads(args.limit_workloads) if "limit" in parts else []
    memory_workloads = [args.memory_workload] if "memory" in parts else []
    for w in workloads + limit_workloads + memory_workloads:
        bench.workload_specs(w, 1, 1)  # a bad name or value fails before anything is timed
    for w in limit_workloads:
        bench.check_limit_workload(w)
    report = bench.BenchReport(device=str(device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "steps" in parts:
        for w in workloads:
            report.steps += bench.step_times(
                w, device, steps=args.steps, max_batch=args.max_batch, repeat=args.repeat
            )
        df = pd.DataFrame(report.steps)
        df.to_csv(out / "steps.csv", index=False)
        _print_table(
            "(a) per-run step time against batch size",
            df,
            ["workload", "batch", "per_run_step_us", "speedup_vs_batch_1", "memory_mb", "status"],
        )
    if "overhead" in parts:
        for w in workloads:
            for b in overhead_batches:
                report.overhead.append(
                    bench.harness_overhead(w, device, batch=b, steps=args.steps, repeat=args.repeat)
                )
        df = pd.DataFrame(report.overhead).drop(columns="calls")
        df.to_csv(out / "overhead.csv", index=False)
        _print_table(
            "(b) harness overhead: run / bare loop of the same oracle calls",
            df,
            [
                "workload",
                "batch",
                "run_seconds",
                "bare_loop_seconds",
                "overhead",
                "raw_oracle_seconds",
                "run_over_raw_oracles",
            ],
        )
    if "default" in parts:
        report.default = bench.default_benchmark(
            args.config, device.type, args.plugin, args.threads, results=args.results
        )
        d = report.default
        print(
            f"\n(c) default benchmark ({d['config']}): {d['wall_seconds']:.1f} s wall for "
            f"{d['runs']} runs {d['statuses']}; {d['workers']} workers idle "
            f"{100 * d['idle_fraction']:.1f}% of {d['span_seconds']:.1f} s"
        )
    if "compile" in parts:
        for w in workloads:
            for b in overhead_batches:
                report.compile += bench.compile_gain(w, device, batch=b, calls=10 * args.steps)
        df = pd.DataFrame(report.compile)
        df.to_csv(out / "compile.csv", index=False)
        _print_table(
            "(d) torch.compile per oracle call (break-even: calls from which it pays)",
            df,
            [
                "workload",
                "batch",
                "oracle",
                "eager_us",
                "compiled_us",
                "compile_seconds",
                "break_even_calls",
            ],
        )
    if "limit" in parts:
        for w in limit_workloads:
            for b in limit_batches:
                report.limit.append(
                    bench.limit_ratio(w, device, batch=b, steps=args.limit_steps,
                                      repeat=args.repeat)
                )  # fmt: skip
        df = pd.DataFrame(report.limit)
        df.to_csv(out / "limit.csv", index=False)
        _print_table(
            "(e) the limit: run / hand-fused loop (median of alternating repetitions)",
            df,
            ["workload", "batch", "run_seconds", "fused_seconds", "ratio", "status"],
        )
    if "memory" in parts:
        report.memory = bench.peak_memory(
            args.memory_workload, memory_batches, steps=3, plugins=args.plugin,
            threads=args.threads,
        )  # fmt: skip
        df = pd.DataFrame(report.memory)
        df.to_csv(out / "memory.csv", index=False)
        _print_table(
            f"(f) peak resident memory against batch size ({args.memory_workload}, 3 steps)",
            df,
            ["batch", "peak_mb", "peak_per_run_mb", "growth_per_run_mb", "status"],
        )
    (out / "bench.json").write_text(report.to_json())
    print(f"\nbibench: bench on {device} ({report.threads} threads); results in {out}/bench.json")
    return 0
