r"""``bibench tune``: fair hyperparameter tuning in the AlgoPerf style (the protocol and
its code: :mod:`bibench.tuning`).

Two forms:

* ``bibench tune --problems P --algorithms A [--budget ...]``: tune, then evaluate the
  winners on fresh seeds, and write best-parameter YAML per problem setting and a report;
* ``bibench tune --config configs/tuning.yml --write configs/tuned.yml``: tune every
  (family, regime) of a tuning file and write the tuned file that ``configs/default.yml``
  reads (its ``tuned:`` key); the default benchmark's run is then the evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bibench import config, store, tuning
from bibench.analysis.runs import SETTING, prepare
from bibench.analysis.tables import cell, fmt, quantile_frame, to_markdown
from bibench.commands.run import executor_options
from bibench.errors import UserError
from bibench.runner import resolve_device
from bibench.sweep import run_sweep

__all__ = ["register"]

CRITERIA = tuning.CRITERIA


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
    p.add_argument(
        "--write",
        metavar="TUNED.yml",
        help="with --config TUNING.yml (families x regimes): write the tuned file that "
        "configs/default.yml reads (the file's tuning: options replace the flags above)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# -- the command --------------------------------------------------------------------------
def _options(args: argparse.Namespace) -> tuning.TuneOptions:
    return tuning.TuneOptions(
        tuning_seeds=args.tuning_seeds,
        eval_seeds=args.eval_seeds,
        points=args.points,
        random=args.random,
        search_seed=args.search_seed,
        criterion=args.criterion,
        metric=args.metric,
        target=args.target,
    )


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
    return config.from_mapping(data)


def _write_tuned(args: argparse.Namespace) -> int:
    """``--config TUNING.yml --write TUNED.yml``: the tuned file of the default benchmark."""
    if not args.config:
        raise UserError("--write needs --config TUNING.yml (a tuning file: families x regimes)")
    _, base, _ = tuning.read_tuning_file(args.config)
    if args.out:
        base.out = args.out
    sweep = {k: v for k, v in executor_options(base).items() if k != "threads"}
    command = f"bibench tune --config {args.config} --write {args.write}"
    path, result = tuning.tune_file(
        args.config, args.write, device=str(resolve_device(base.device)),
        progress=not args.quiet, sweep_options=sweep, command=command, out=args.out,
    )  # fmt: skip
    data = yaml.safe_load(path.read_text())
    missed = [o for o in data["outcomes"] if not o["converged"]]
    cost = data["cost"]
    print(
        f"bibench: tuned {len(data['outcomes'])} (family, regime, algorithm) pairs in "
        f"{cost['wall_time_s']} s ({cost['runs']} runs, {cost['oracle_calls']} oracle calls);"
        f" {len(missed)} with no point reaching the target on S_tune (kept, reported as "
        f"failing); written to {path}"
    )
    return 1 if result.failed else 0


def run(args: argparse.Namespace) -> int:
    if args.write:
        return _write_tuned(args)
    cfg = _request(args)
    opts = _options(args)
    out = Path(cfg.out)
    device = str(resolve_device(cfg.device))
    result = tuning.tune([("", cfg)], opts, out / "tuning", device=device, progress=not args.quiet)
    table, per_run = result.table, result.per_run
    s_tune, s_eval = opts.s_tune, opts.s_eval
    first = per_run.groupby(["group", "algorithm", "point"])["run_id"].first()

    # best-parameter YAML per problem setting, then the evaluation from those files
    yamls = []
    for i, (ps, part) in enumerate(table[table["best"]].groupby("group", sort=True)):
        spec = {
            r.algorithm: result.specs[first[(ps, r.algorithm, r.point)]] for r in part.itertuples()
        }
        one = next(iter(spec.values()))
        body: dict[str, Any] = {
            "problems": {one.problem: dataclasses.asdict(one.problem_params)},
            "algorithms": {a: dataclasses.asdict(s.hyper) for a, s in spec.items()},
            "seeds": s_eval,
            "budget": cfg.budget.max_calls,
            "out": str(out / "eval"),
        }
        if cfg.budget.max_time > 0:
            body["max_time"] = cfg.budget.max_time
        if cfg.plugins:
            body["plugin"] = [str(Path(p).resolve()) for p in cfg.plugins]
        header = (
            f"# bibench tune: best points for {ps}, selected by median {opts.criterion} "
            f"({opts.metric}) over tuning seeds {s_tune};\n"
            f"# evaluation on fresh seeds {s_eval}. Run: bibench run --config THIS_FILE\n"
        )
        path = out / f"best_{i}_{tuning.slug(ps)}.yml"
        path.write_text(header + yaml.safe_dump(body, sort_keys=False, default_flow_style=None))
        yamls.append(path)
    eval_specs = [s for p in yamls for s in config.expand(config.from_mapping(config.load_yaml(p)))]
    eval_summary = run_sweep(eval_specs, out / "eval", device=device, progress=not args.quiet)
    for msg in eval_summary.messages:
        print(f"bibench: evaluation {msg}", file=sys.stderr)
    ev = prepare(store.load(out / "eval"))
    ev = tuning._criterion(ev[ev["run_id"].isin({s.run_id for s in eval_specs})], opts)

    text = _report(args, cfg, result, ev, yamls, s_tune, s_eval)
    (out / "tune_report.md").write_text(text)
    table.to_csv(out / "tuning_points.csv", index=False)
    print(text)
    print(
        f"bibench: tuning report in {out / 'tune_report.md'}; best-parameter YAML: "
        + ", ".join(str(p) for p in yamls)
    )
    return 1 if result.failed or eval_summary.failed else 0  # divergence is an outcome


def _report(args, cfg, result: tuning.TuneResult, ev, yamls, s_tune, s_eval) -> str:
    spaces = {name: s for (_, name), s in result.spaces.items()}
    per_run, elapsed = result.per_run, result.elapsed
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
        lines.append(f"- {name}: {space}{fixed}; {s['points']} points")

    # tuning cost
    per_run = per_run.assign(share=per_run["wall_time_end"] / per_run["batch_size"])
    cost = per_run.groupby("algorithm").agg(
        runs=("run_id", "size"), oracle_calls=("oracle_calls_end", "sum"), time=("share", "sum")
    )
    lines += ["", "## Tuning cost (on S_tune)", ""]
    cost_tab = pd.DataFrame(
        {
            "algorithm": cost.index,
            "points": [spaces[a]["points"] for a in cost.index],
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
    keys = ["group", "algorithm", "point", "algorithm_setting"]
    table = quantile_frame(per_run, keys, "value").sort_values(["group", "algorithm", "point"])
    chosen = result.table[result.table["best"]].set_index(["group", "algorithm"])["point"]
    table["best"] = [chosen.get((r.group, r.algorithm)) == r.point for r in table.itertuples()]
    tab = pd.DataFrame(
        {
            "problem": table["group"],
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
