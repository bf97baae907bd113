r"""``bibench tune``: fair hyperparameter tuning in the AlgoPerf style.

Protocol (research/ecosystem.md §2.3):

1. **Search space.** Each algorithm declares it through its class ``grid`` (a dict of
   lists). ``--algorithms name[k=v]`` fixes ``k`` (it is then not searched).
2. **Equal budget.** Every algorithm gets the same number of points ``--points P`` and the
   same oracle budget per run ``--budget``. Grid search takes the whole grid product when it
   has at most ``P`` points, else ``P`` of them drawn without replacement; random search
   draws ``P`` points inside the grid's range: for each key, log-uniform between the
   smallest and largest listed value when they are positive and span at least a decade,
   uniform otherwise (rounded for integers), and a uniform choice for bools and strings.
3. **Selection on tuning seeds.** Every point runs on the tuning seeds
   ``S_tune = 0..K-1`` (points and seeds share lockstep batches). Per problem setting and
   algorithm the point with the smallest criterion wins: the median over ``S_tune`` of the
   final metric (``final``, diverged = ∞), or of :math:`N(\varepsilon)` at ``--target``
   (``n_eps``, censored = ∞; ties broken by the final metric), then by the order of points.
4. **Evaluation on fresh seeds.** The winners are written as YAML that ``bibench run
   --config`` accepts, one file per problem setting, with the evaluation seeds
   ``S_eval = K..K+M-1`` (disjoint from ``S_tune``), and run from those files. Only
   ``S_eval`` numbers are reported as results; the report says so, and gives the tuning
   cost (oracle calls and time spent on ``S_tune``).

The problem instance (its ``seed`` parameter) is the same for tuning and evaluation; only
the run seeds (initial points, sampling, algorithm randomness) differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bibench import config, store
from bibench.analysis.hitting import first_hit
from bibench.analysis.runs import SETTING, prepare, run_summary
from bibench.analysis.tables import cell, fmt, quantile_frame, to_markdown
from bibench.errors import UserError
from bibench.params import build_params
from bibench.registry import discover, get_algorithm
from bibench.runner import resolve_device
from bibench.sweep import run_sweep

__all__ = ["grid_points", "random_points", "register", "search_points"]

CRITERIA = ("final", "n_eps")


def register(sub) -> None:
    p = sub.add_parser("tune", help="fair tuning: select on tuning seeds, report on fresh seeds")
    p.add_argument("--config", metavar="FILE.yml", help="YAML with problems/algorithms/budget")
    p.add_argument("--problems", help="comma list, e.g. quadratic[dim_y=20]")
    p.add_argument("--algorithms", help="comma list; name[k=v] fixes k (not searched)")
    p.add_argument("--budget", type=int, help="oracle calls per run (equal for every algorithm)")
    p.add_argument("--max-time", type=float, dest="max_time", help="seconds per batch")
    p.add_argument(
        "--tuning-seeds",
        type=int,
        default=3,
        dest="tuning_seeds",
        help="K: select on seeds 0..K-1 (default 3)",
    )
    p.add_argument(
        "--eval-seeds",
        type=int,
        default=5,
        dest="eval_seeds",
        help="M: report on fresh seeds K..K+M-1 (default 5)",
    )
    p.add_argument(
        "--points", type=int, default=16, help="hyperparameter points per algorithm (default 16)"
    )
    p.add_argument("--random", action="store_true", help="random search inside the grid's range")
    p.add_argument(
        "--search-seed", type=int, default=0, dest="search_seed", help="seed of the point sampler"
    )
    p.add_argument(
        "--criterion",
        choices=CRITERIA,
        default="final",
        help="final: median final metric; n_eps: median N(eps) at --target",
    )
    p.add_argument("--metric", default="hypergrad_norm", help="default hypergrad_norm")
    p.add_argument("--target", type=float, help="absolute eps for --criterion n_eps")
    p.add_argument("--out", help="output folder (default results/tune)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument("--plugin", action="append", metavar="FILE.py", help="extra plugin file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# -- search space -------------------------------------------------------------------------
def _draw(values: list[Any], rng: np.random.Generator) -> Any:
    """One value inside the range of a grid list (see the module docstring)."""
    if len(values) == 1 or any(isinstance(v, (bool, str)) for v in values):
        return values[int(rng.integers(len(values)))]
    lo, hi = min(values), max(values)
    integer = all(isinstance(v, int) for v in values)
    if lo > 0 and hi / lo >= 10:
        v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    else:
        v = rng.uniform(lo, hi)
    return round(v) if integer else float(v)


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The product of the grid's lists (one empty point for an empty grid)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def random_points(grid: dict[str, list[Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` points drawn inside the grid's range."""
    rng = np.random.default_rng(seed)
    return [{k: _draw(list(v), rng) for k, v in grid.items()} for _ in range(n)]


def search_points(
    grid: dict[str, list[Any]], n: int, *, random: bool, seed: int
) -> list[dict[str, Any]]:
    """Grid search (the product, or ``n`` of its points when larger) or random search."""
    if random and grid:
        return random_points(grid, n, seed)
    points = grid_points(grid)
    if len(points) > n:
        keep = np.random.default_rng(seed).choice(len(points), size=n, replace=False)
        points = [points[i] for i in sorted(keep)]
    return points


# -- the command --------------------------------------------------------------------------
def _request(args: argparse.Namespace) -> config.RunConfig:
    data = config.load_yaml(args.config) if args.config else {}
    flags = {
        "problems": args.problems,
        "algorithms": args.algorithms,
        "budget": args.budget,
        "max_time": args.max_time,
        "out": args.out,
        "device": args.device,
        "plugin": args.plugin,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    data.setdefault("out", "results/tune")
    if data.get("experiments"):
        raise UserError(
            f"{args.config}: tune takes one problems x algorithms grid, not 'experiments:' "
            "blocks (pass --problems and --algorithms, or a config without blocks)"
        )
    cfg = config.from_mapping(data)
    if args.tuning_seeds < 1 or args.eval_seeds < 1:
        raise UserError("bad value for --tuning-seeds/--eval-seeds: both must be >= 1")
    if args.points < 1:
        raise UserError(f"bad value for --points: {args.points} (>= 1)")
    if args.criterion == "n_eps" and not (args.target and args.target > 0):
        raise UserError("--criterion n_eps needs --target EPS (> 0)")
    return cfg


def _plan(cfg: config.RunConfig, args) -> tuple[config.RunConfig, dict[str, dict]]:
    """The tuning config (every point of every algorithm on the tuning seeds) and, per
    algorithm, its search space and points."""
    discover(cfg.plugins)
    algorithms, spaces = [], {}
    for name, fixed in cfg.algorithms:
        cls = get_algorithm(name)
        if not isinstance(fixed, dict):
            raise UserError(f"malformed hyperparameters for algorithm {name}: {fixed!r}")
        space = {k: list(v) for k, v in cls.grid.items() if k not in fixed}
        points = search_points(space, args.points, random=args.random, seed=args.search_seed)
        hypers = [build_params(cls.Hyper, f"algorithm {name}", {**fixed, **pt}) for pt in points]
        spaces[name] = {"space": space, "fixed": fixed, "points": points, "hypers": hypers}
        algorithms += [(name, {**fixed, **pt}) for pt in points]
    tuning = dataclasses.replace(cfg, algorithms=algorithms, seeds=list(range(args.tuning_seeds)))
    return tuning, spaces


def _criterion(df: pd.DataFrame, args) -> pd.DataFrame:
    """Per run: the final metric and, for ``n_eps``, N(target)."""
    summary = run_summary(df, args.metric)
    if args.criterion == "n_eps":
        n = {
            rid: first_hit(r["oracle_calls"], r[args.metric], [args.target])[0]
            for rid, r in df.groupby("run_id", sort=False)
        }
        summary["value"] = summary["run_id"].map(n)
    else:
        summary["value"] = summary["final"]
    return summary


def _select(summary: pd.DataFrame, point_of: dict[str, int]) -> pd.DataFrame:
    """Per problem setting, algorithm and point: median criterion and final metric over the
    tuning seeds; ``best`` marks the winner of each (problem setting, algorithm)."""
    summary = summary.assign(point=summary["run_id"].map(point_of))
    keys = ["problem_setting", "algorithm", "point", "algorithm_setting"]
    crit = quantile_frame(summary, keys, "value")
    final = quantile_frame(summary, keys, "final")[["median"]].rename(
        columns={"median": "final_median"}
    )
    table = pd.concat([crit, final], axis=1).sort_values(["problem_setting", "algorithm", "point"])
    order = table.sort_values(["median", "final_median", "point"], kind="stable")
    winners = order.groupby(["problem_setting", "algorithm"], sort=False).head(1).index
    table["best"] = table.index.isin(winners)
    return table.reset_index(drop=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def _write_yaml(path: Path, body: dict[str, Any], header: str) -> None:
    path.write_text(header + yaml.safe_dump(body, sort_keys=False, default_flow_style=None))


def run(args: argparse.Namespace) -> int:
    cfg = _request(args)
    out = Path(cfg.out)
    device = str(resolve_device(cfg.device))
    tuning, spaces = _plan(cfg, args)
    specs = config.expand(tuning)
    s_tune = list(range(args.tuning_seeds))
    s_eval = list(range(args.tuning_seeds, args.tuning_seeds + args.eval_seeds))

    start = time.perf_counter()
    summary = run_sweep(specs, out / "tuning", device=device, progress=not args.quiet)
    tuning_elapsed = time.perf_counter() - start
    for msg in summary.messages:
        print(f"bibench: tuning {msg}", file=sys.stderr)

    # which point each run is, and the full hyperparameters / problem parameters of each
    index = {}
    for name, s in spaces.items():
        for i, hyper in enumerate(s["hypers"]):
            index.setdefault((name, hyper), i)
    point_of = {spec.run_id: index[(spec.algorithm, spec.hyper)] for spec in specs}
    hyper_of = {spec.run_id: dataclasses.asdict(spec.hyper) for spec in specs}
    params_of = {
        spec.run_id: (spec.problem, dataclasses.asdict(spec.problem_params)) for spec in specs
    }
    df = prepare(store.load(out / "tuning"))
    df = df[df["run_id"].isin(point_of)]
    per_run = _criterion(df, args)
    table = _select(per_run, point_of)

    # best-parameter YAML per problem setting, then the evaluation from those files
    first_run = per_run.groupby(["problem_setting", "algorithm", per_run["run_id"].map(point_of)])[
        "run_id"
    ].first()
    yamls = []
    for i, (ps, part) in enumerate(table[table["best"]].groupby("problem_setting", sort=True)):
        rid0 = first_run[(ps, part["algorithm"].iloc[0], part["point"].iloc[0])]
        problem, params = params_of[rid0]
        body: dict[str, Any] = {
            "problems": {problem: params},
            "algorithms": {
                r.algorithm: hyper_of[first_run[(ps, r.algorithm, r.point)]]
                for r in part.itertuples()
            },
            "seeds": s_eval,
            "budget": cfg.budget.max_calls,
            "out": str(out / "eval"),
        }
        if cfg.budget.max_time > 0:
            body["max_time"] = cfg.budget.max_time
        if cfg.plugins:
            body["plugin"] = [str(Path(p).resolve()) for p in cfg.plugins]
        header = (
            f"# bibench tune: best points for {ps}, selected by median {args.criterion} "
            f"({args.metric}) over tuning seeds {s_tune};\n"
            f"# evaluation on fresh seeds {s_eval}. Run: bibench run --config THIS_FILE\n"
        )
        path = out / f"best_{i}_{_slug(ps)}.yml"
        _write_yaml(path, body, header)
        yamls.append(path)
    eval_specs = [s for p in yamls for s in config.expand(config.from_mapping(config.load_yaml(p)))]
    eval_summary = run_sweep(eval_specs, out / "eval", device=device, progress=not args.quiet)
    for msg in eval_summary.messages:
        print(f"bibench: evaluation {msg}", file=sys.stderr)
    ev = prepare(store.load(out / "eval"))
    ev = _criterion(ev[ev["run_id"].isin({s.run_id for s in eval_specs})], args)

    text = _report(args, cfg, spaces, table, per_run, ev, yamls, s_tune, s_eval, tuning_elapsed)
    (out / "tune_report.md").write_text(text)
    table.to_csv(out / "tuning_points.csv", index=False)
    print(text)
    print(
        f"bibench: tuning report in {out / 'tune_report.md'}; best-parameter YAML: "
        + ", ".join(str(p) for p in yamls)
    )
    return 1 if summary.failed or eval_summary.failed else 0  # divergence is an outcome


def _report(args, cfg, spaces, table, per_run, ev, yamls, s_tune, s_eval, elapsed) -> str:
    crit = (
        f"median over S_tune of the final {args.metric} (diverged = ∞)"
        if args.criterion == "final"
        else f"median over S_tune of N(ε = {fmt(args.target)}) on {args.metric} (censored = ∞)"
    )
    lines = [
        "# bibench tune report",
        "",
        f"**Selection used only the tuning seeds S_tune = {s_tune}; every number under "
        f"'Evaluation' comes from the fresh seeds S_eval = {s_eval}, which selection never "
        "saw.**",
        "",
        f"- search: {'random' if args.random else 'grid'}, up to {args.points} points per "
        f"algorithm (sampler seed {args.search_seed})",
        f"- budget: {cfg.budget.max_calls} oracle calls per run, equal for every algorithm",
        f"- criterion: {crit}",
        "",
        "## Search spaces",
        "",
    ]
    for name, s in spaces.items():
        space = ", ".join(f"{k} ∈ {v}" for k, v in s["space"].items()) or "(no grid: defaults)"
        fixed = f"; fixed {s['fixed']}" if s["fixed"] else ""
        lines.append(f"- {name}: {space}{fixed}; {len(s['points'])} points")

    # tuning cost
    per_run = per_run.assign(share=per_run["wall_time_end"] / per_run["batch_size"])
    cost = per_run.groupby("algorithm").agg(
        runs=("run_id", "size"), oracle_calls=("oracle_calls_end", "sum"), time=("share", "sum")
    )
    lines += ["", "## Tuning cost (on S_tune)", ""]
    cost_tab = pd.DataFrame(
        {
            "algorithm": cost.index,
            "points": [len(spaces[a]["points"]) for a in cost.index],
            "runs": cost["runs"].to_numpy(),
            "oracle calls": [fmt(v) for v in cost["oracle_calls"]],
            "compute time [s]": [fmt(v) for v in cost["time"]],
        }
    )
    lines += [to_markdown(cost_tab)]
    lines += [
        f"Total: {fmt(float(cost['oracle_calls'].sum()))} oracle calls, "
        f"{fmt(float(cost['time'].sum()))} s of algorithm time (each run's share of its "
        f"lockstep batch), {fmt(elapsed)} s wall time for this invocation's tuning sweep "
        "(finished runs are reused, not re-run)."
    ]

    lines += ["", "## Tuning (S_tune): every point", ""]
    tab = pd.DataFrame(
        {
            "problem": table["problem_setting"],
            "point": table["algorithm_setting"],
            "criterion": [cell(r.median, r.q20, r.q80, r.n, r.n_inf) for r in table.itertuples()],
            "selected": np.where(table["best"], "yes", ""),
        }
    )
    lines += [to_markdown(tab)]

    lines += ["", "## Evaluation (S_eval): the selected points on fresh seeds", ""]
    keys = [*SETTING]
    final = quantile_frame(ev, keys, "final")
    tab = pd.DataFrame(
        {
            "problem": final["problem_setting"],
            "selected point": final["algorithm_setting"],
            f"final {args.metric}": [
                cell(r.median, r.q20, r.q80, r.n, r.n_inf) for r in final.itertuples()
            ],
        }
    )
    if args.criterion == "n_eps":
        n = quantile_frame(ev, keys, "value")
        tab[f"N(ε = {fmt(args.target)})"] = [
            cell(r.median, r.q20, r.q80, r.n, r.n_inf) for r in n.itertuples()
        ]
    lines += [to_markdown(tab)]
    lines += ["", "## Best-parameter files (`bibench run --config FILE`)", ""]
    lines += [f"- {p}" for p in yamls]
    return "\n".join(lines) + "\n"
