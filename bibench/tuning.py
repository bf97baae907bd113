r"""Equal-budget hyperparameter tuning in the AlgoPerf style (Dahl et al., "Benchmarking
Neural Network Training Algorithms", arXiv:2306.07179, §4: a shared search budget,
selection on held-out trials).

Protocol:

1. **Search space.** Each algorithm declares it through its class ``grid`` (a dict of
   lists); a config may fix keys (``name: {k: v}``: ``k`` is then not searched), declare
   lists of its own, or keep only the grid's step sizes (``name: steps``: the grid's
   ``float`` keys, which vary inside one lockstep batch; the structural integers stay at
   their defaults). A block may ``scale`` the range of named keys for every algorithm
   that has them alike (real data whose curvature is 1000× the synthetic problems').
2. **Equal budget.** Every algorithm gets the same number of points ``P`` and the same
   oracle budget per run. Grid search takes the whole grid product when it has at most
   ``P`` points, else ``P`` of them drawn without replacement; random search draws
   exactly ``P`` points inside the grid's range: for each key, log-uniform between the
   smallest and largest listed value when they are positive and span at least a decade,
   uniform otherwise (rounded for integers, to 3 significant digits for floats), and a
   uniform choice for bools and strings.
3. **Selection on tuning seeds.** Every point runs on the tuning seeds
   ``S_tune = 0..K-1`` (points and seeds share lockstep batches). Per *selection group*
   (a problem setting, or in :func:`tune_file` a family and regime, whose problem
   instances such as data splits count as repetitions like seeds) and algorithm, the
   point with the smallest criterion wins: the median over its runs of the final metric
   (``final``, diverged = ∞), or of :math:`N(\varepsilon)` (``n_eps``, censored = ∞;
   ties broken by the final metric), then by the order of points. The target
   :math:`\varepsilon` is absolute, or relative to the median initial metric of each
   problem setting.
4. **Evaluation on fresh seeds.** The winners run on the evaluation seeds
   ``S_eval = K..K+M-1`` (disjoint from ``S_tune``); only ``S_eval`` numbers are
   reported as results. The problem instance (its ``seed`` parameter) is the same for
   tuning and evaluation; only the run seeds (initial points, sampling, algorithm
   randomness) differ.

A pair none of whose points reaches the target on the tuning seeds keeps its best point
(by the tie-break: final metric) and is recorded as not converged: failure is a result,
never a reason to drop a pair.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bibench import config, store
from bibench.analysis.hitting import first_hit
from bibench.analysis.runs import initial_values, prepare, run_summary, slug
from bibench.errors import UserError
from bibench.params import build_params, per_run_fields
from bibench.registry import discover, get_algorithm
from bibench.sweep import run_sweep

__all__ = [
    "CRITERIA",
    "TuneOptions",
    "TuneResult",
    "grid_points",
    "random_points",
    "search_points",
    "search_space",
    "select",
    "slug",
    "tune",
    "tune_file",
]

CRITERIA = ("final", "n_eps")
STEPS = "steps"  # an algorithm entry that searches only its grid's float keys
TUNING_KEYS = {"tuning_seeds", "eval_seeds", "points", "random", "search_seed", "criterion",
               "metric", "target", "relative"}  # fmt: skip
FAMILY_KEYS = {"problem", "params", "stochastic", "budget", "checkpoint_ratio", "scale"}


@dataclasses.dataclass(frozen=True)
class TuneOptions:
    """The protocol's knobs (the ``bibench tune`` flags, or ``tuning:`` of a tuning file)."""

    tuning_seeds: int = 3
    eval_seeds: int = 5
    points: int = 16
    random: bool = False
    search_seed: int = 0
    criterion: str = "final"
    metric: str = "hypergrad_norm"
    target: float | None = None
    relative: bool = False

    def __post_init__(self) -> None:
        if self.tuning_seeds < 1 or self.eval_seeds < 1:
            raise UserError("bad value for tuning_seeds/eval_seeds: both must be >= 1")
        if self.points < 1:
            raise UserError(f"bad value for points: {self.points} (>= 1)")
        if self.criterion not in CRITERIA:
            raise UserError(f"bad value for criterion: {self.criterion!r} (one of {CRITERIA})")
        if self.criterion == "n_eps" and not (self.target and self.target > 0):
            raise UserError("criterion n_eps needs a target eps (> 0)")

    @property
    def s_tune(self) -> list[int]:
        return list(range(self.tuning_seeds))

    @property
    def s_eval(self) -> list[int]:
        return list(range(self.tuning_seeds, self.tuning_seeds + self.eval_seeds))


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
    return round(v) if integer else float(f"{v:.3g}")


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


def search_space(
    name: str, entry: Any, scale: dict[str, float] | None = None
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """``(space, fixed)`` of one algorithm entry: ``{}``/``grid`` (its declared grid),
    ``steps`` (the grid's float keys), or a mapping whose lists are searched and whose
    scalars are fixed (fixed keys leave the grid). ``scale`` multiplies the range of the
    keys it names."""
    cls = get_algorithm(name)
    if entry in (None, "grid"):
        entry = {}
    if entry == STEPS:
        floats = set(per_run_fields(cls.Hyper))
        space = {k: list(v) for k, v in cls.grid.items() if k in floats}
        fixed: dict[str, Any] = {}
    elif isinstance(entry, dict):
        fixed = {k: v for k, v in entry.items() if not isinstance(v, list)}
        declared = {k: list(v) for k, v in entry.items() if isinstance(v, list)}
        space = {k: list(v) for k, v in cls.grid.items() if k not in fixed and k not in declared}
        space.update(declared)
    else:
        raise UserError(f"malformed hyperparameters for algorithm {name}: {entry!r}")
    for k, factor in (scale or {}).items():
        if k in space:
            space[k] = [v * factor for v in space[k]]
    return space, fixed


# -- tuning -------------------------------------------------------------------------------
@dataclasses.dataclass
class TuneResult:
    """Everything a tuning sweep produced: per point the selection table (``best`` marks
    each group's winner), per run the criterion, the search spaces and the cost."""

    table: pd.DataFrame
    per_run: pd.DataFrame
    spaces: dict[tuple[str, str], dict[str, Any]]
    hypers: dict[tuple[str, str, int], dict[str, Any]]
    elapsed: float
    failed: int
    specs: dict[str, config.RunSpec]


def _criterion(df: pd.DataFrame, opts: TuneOptions) -> pd.DataFrame:
    """Per run: the final metric, ``value`` (the criterion) and ``hit`` (target reached)."""
    summary = run_summary(df, opts.metric)
    if opts.criterion == "n_eps":
        scale = initial_values(df, opts.metric) if opts.relative else None
        n = {}
        for rid, r in df.groupby("run_id", sort=False):
            ps = r["problem_setting"].iloc[0]
            eps = opts.target * (float(scale[ps]) if scale is not None else 1.0)
            n[rid] = first_hit(r["oracle_calls"], r[opts.metric], [eps])[0]
        summary["value"] = summary["run_id"].map(n)
    else:
        summary["value"] = summary["final"]
    summary["hit"] = np.isfinite(summary["value"])
    return summary


def select(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (group, algorithm, point): median criterion and final metric over its tuning
    runs, the fraction of runs that hit, and ``best``, the winner of each (group,
    algorithm): smallest median criterion, then smallest median final metric, then first
    point. ``summary`` has ``group``, ``algorithm``, ``point``, ``value``, ``final``,
    ``hit``."""
    keys = ["group", "algorithm", "point"]
    g = summary.groupby(keys, sort=True)
    table = pd.DataFrame(
        {
            "median": g["value"].median(),
            "final_median": g["final"].median(),
            "success": g["hit"].mean(),
            "n": g.size(),
            "diverged": g["status"].apply(lambda s: float((s == "diverged").mean())),
        }
    ).reset_index()
    order = table.sort_values(["median", "final_median", "point"], kind="stable")
    winners = order.groupby(["group", "algorithm"], sort=False).head(1).index
    table["best"] = table.index.isin(winners)
    return table


def tune(
    groups: list[tuple[str, config.RunConfig]],
    opts: TuneOptions,
    out: str | Path,
    *,
    device: str = "cpu",
    progress: bool = True,
    sweep_options: dict[str, Any] | None = None,
    scales: dict[str, dict[str, float]] | None = None,
) -> TuneResult:
    """Run every point of every algorithm of each ``(group name, config)`` on the tuning
    seeds into ``out`` (one sweep, so a process pool sees every batch) and select. A group
    named ``""`` selects per problem setting of its config instead."""
    spaces: dict[tuple[str, str], dict[str, Any]] = {}
    hypers: dict[tuple[str, str, int], dict[str, Any]] = {}
    point_of: dict[str, tuple[str, str, int]] = {}
    specs: list[config.RunSpec] = []
    for group, cfg in groups:
        discover(cfg.plugins)
        for name, entry in cfg.algorithms:
            space, fixed = search_space(name, entry, (scales or {}).get(group))
            points = search_points(space, opts.points, random=opts.random, seed=opts.search_seed)
            spaces[(group, name)] = {"space": space, "fixed": fixed, "points": len(points)}
            for i, pt in enumerate(points):
                hyper = {**fixed, **pt}
                build_params(get_algorithm(name).Hyper, f"algorithm {name}", hyper)
                hypers[(group, name, i)] = hyper
                one = dataclasses.replace(cfg, algorithms=[(name, hyper)], seeds=opts.s_tune)
                for spec in config.expand(one):
                    point_of.setdefault(spec.run_id, (group, name, i))
                    specs.append(spec)
    start = time.perf_counter()
    summary = run_sweep(specs, out, device=device, progress=progress, **(sweep_options or {}))
    elapsed = time.perf_counter() - start
    df = prepare(store.load(out))
    df = df[df["run_id"].isin(point_of)]
    per_run = _criterion(df, opts)
    where = per_run["run_id"].map(point_of)
    per_run["point"] = where.str[2]
    per_run["group"] = where.str[0].where(where.str[0] != "", per_run["problem_setting"])
    by_id = {s.run_id: s for s in specs}
    return TuneResult(select(per_run), per_run, spaces, hypers, elapsed, summary.failed, by_id)


# -- the tuning file: families x regimes -> configs/tuned.yml -----------------------------
def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"malformed {what}: expected a mapping, got {value!r}")
    return value


def read_tuning_file(path: str | Path) -> tuple[TuneOptions, config.RunConfig, list[dict]]:
    """A tuning file: ``tuning:`` (the :class:`TuneOptions`), ``regimes:`` (name ->
    problem parameters; a family's ``stochastic:`` replaces those of the regime named
    ``stochastic``), ``families:`` (a list of ``{problem, params, stochastic, budget,
    checkpoint_ratio, scale}``), ``algorithms:`` and the ``run`` keys (budget, executor,
    out, ...). Returns the options, the base config and one block per (family, regime):
    ``{"group", "family", "regime", "config", "scale", "block"}``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tuning file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"malformed YAML in {path}: {str(exc).splitlines()[0]}") from None
    data = _mapping(data, f"tuning file {path}")
    raw = _mapping(data.pop("tuning", None), f"tuning: in {path}")
    unknown = sorted(set(raw) - TUNING_KEYS)
    if unknown:
        raise UserError(f"unknown key '{unknown[0]}' in tuning: of {path}")
    opts = TuneOptions(**raw)
    regimes = _mapping(data.pop("regimes", None), f"regimes: in {path}")
    families = data.pop("families", None)
    if not regimes or not isinstance(families, list) or not families:
        raise UserError(f"{path}: a tuning file needs 'regimes:' and a list 'families:'")
    bad = sorted(set(data) - config.CONFIG_KEYS - {"experiments"})
    if bad or "experiments" in data or "problems" in data:
        key = bad[0] if bad else "experiments" if "experiments" in data else "problems"
        raise UserError(f"unknown key '{key}' in {path} (problems come from 'families:')")
    base = config.from_mapping(data)
    if not base.algorithms:
        raise UserError(f"{path}: no algorithms given")
    blocks = []
    for fam in families:
        fam = _mapping(fam, f"families entry in {path}")
        unknown = sorted(set(fam) - FAMILY_KEYS)
        if unknown or "problem" not in fam:
            raise UserError(
                f"{path}: families entry {fam!r}: "
                + (f"unknown key '{unknown[0]}'" if unknown else "needs 'problem'")
            )
        for regime, params in regimes.items():
            params = _mapping(params, f"regime {regime}")
            if regime == "stochastic" and "stochastic" in fam:
                params = _mapping(fam["stochastic"], f"stochastic of {fam['problem']}")
            problem = {**_mapping(fam.get("params"), "params"), **params}
            block: dict[str, Any] = {"problems": {fam["problem"]: problem}}
            for key in ("budget", "checkpoint_ratio"):
                if key in fam:
                    block[key] = fam[key]
            cfg = config.from_mapping(block, dataclasses.replace(base, extra=dict(base.extra)))
            blocks.append(
                {
                    "group": f"{fam['problem']} · {regime}",
                    "family": fam["problem"],
                    "regime": regime,
                    "config": cfg,
                    "scale": _mapping(fam.get("scale"), "scale"),
                    "block": block,
                }
            )
    return opts, base, blocks


def _plain(value: Any) -> Any:
    """numpy scalars -> Python, for YAML."""
    return value.item() if isinstance(value, np.generic) else value


def tune_file(
    path: str | Path,
    write: str | Path,
    *,
    device: str = "cpu",
    progress: bool = True,
    sweep_options: dict[str, Any] | None = None,
    command: str = "",
    out: str | Path | None = None,
) -> tuple[Path, TuneResult]:
    """Tune every (family, regime) of the tuning file ``path`` and write the tuned file
    ``write``: one ``experiments:`` block per (family, regime) with every algorithm at its
    selected point, the evaluation seeds ``S_eval``, the protocol, each pair's tuning
    outcome and the cost. ``bibench run`` reads it through a config's ``tuned:`` key."""
    opts, base, blocks = read_tuning_file(path)
    groups = [(b["group"], b["config"]) for b in blocks]
    scales = {b["group"]: b["scale"] for b in blocks}
    out = Path(out or base.out)
    result = tune(
        groups, opts, out, device=device, progress=progress,
        sweep_options=sweep_options, scales=scales,
    )  # fmt: skip
    table, per_run = result.table, result.per_run
    best = table[table["best"]].set_index(["group", "algorithm"])
    experiments, outcomes = [], []
    for b in blocks:
        algorithms = {}
        for name, _ in b["config"].algorithms:
            row = best.loc[(b["group"], name)]
            hyper = result.hypers[(b["group"], name, int(row["point"]))]
            algorithms[name] = {k: _plain(v) for k, v in hyper.items()}
            outcomes.append(
                {
                    "family": b["family"],
                    "regime": b["regime"],
                    "algorithm": name,
                    "point": int(row["point"]),
                    "converged": bool(np.isfinite(row["median"])),
                    "tuning_success": float(row["success"]),
                    "tuning_median": float(row["median"]) if np.isfinite(row["median"]) else None,
                    "diverged_fraction": float(row["diverged"]),
                }
            )
        # the benchmark runs at the budget the points were tuned at, never its own default
        budget = b["config"].budget
        run = {"budget": budget.max_calls, "checkpoint_ratio": budget.checkpoint_ratio}
        experiments.append({**b["block"], **run, "algorithms": algorithms})
    share = per_run["wall_time_end"] / per_run["batch_size"]
    body = {
        "generated_by": command or f"bibench tune --config {path} --write {write}",
        "protocol": {
            **dataclasses.asdict(opts),
            "s_tune": opts.s_tune,
            "selection": "per (family, regime, algorithm): smallest median criterion over "
            "S_tune runs (problem instances and seeds), then smallest median final metric",
        },
        "cost": {
            "runs": len(per_run),
            "points_per_algorithm": opts.points,
            "oracle_calls": int(per_run["oracle_calls_end"].sum()),
            "algorithm_time_s": round(float(share.sum()), 1),
            "wall_time_s": round(result.elapsed, 1),
        },
        "seeds": opts.s_eval,
        "experiments": experiments,
        "outcomes": outcomes,
    }
    write = Path(write)
    write.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Generated: do not edit by hand. Tuned hyperparameters of the default benchmark\n"
        f"# (see bibench/tuning.py for the protocol). Regenerate with\n#   {body['generated_by']}\n"
    )
    write.write_text(header + yaml.safe_dump(body, sort_keys=False, default_flow_style=None))
    table.to_csv(out / "_tuning_points.csv", index=False)  # "_": read_parquet(out) skips it
    return write, result
