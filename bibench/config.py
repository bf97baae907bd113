"""Run configuration: YAML files whose keys mirror the ``run`` flags, expanded to runs.

Example ``configs/example.yml``::

    problems:
      quadratic: {dim_y: [10, 20], noise_std: 0.0}   # lists expand to products
    algorithms:
      aid_cg: {lr_x: [0.1, 0.5]}
      stocbio: grid                                 # the algorithm's default grid
    seeds: 3              # 3 -> seeds 0, 1, 2; or an explicit list
    budget: 5000          # oracle calls per run
    max_time: 0           # seconds per batch, 0 = no limit
    out: results/example
    device: auto
    plugin: [my_alg.py]

A config may instead (or also) hold ``experiments:``, a list of blocks, each with its
own ``problems`` and ``algorithms`` (and optionally ``seeds``, ``budget``, ...); every
block is crossed on its own and inherits the top-level keys it does not set. This is how one file
gives each problem family the step sizes that are stable on it::

    seeds: 5
    experiments:
      - problems: {quadratic: {}}
        algorithms: {aid_cg: {}, stocbio: {}}
      - problems: {hat_kink: {}}
        algorithms: {aid_cg: {lr_y: 0.5}}
        budget: 2000

``tuned: FILE`` appends the blocks of a tuned file written by ``bibench tune --config
TUNING.yml --write FILE`` (each at the file's evaluation seeds): the default benchmark
reads its hyperparameters this way.

On the command line the same names are ``--problems quadratic[dim_y=20],p1``,
``--algorithms aid_cg[lr_x=0.5],stocbio``, ``--seeds``, ``--budget`` and so on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from bibench import __version__
from bibench.errors import UserError
from bibench.params import build_params, unknown_names
from bibench.registry import (
    ALGORITHMS,
    PROBLEMS,
    discover,
    framework_hash,
    get_algorithm,
    get_problem,
    source_hash,
)

__all__ = ["Budget", "RunConfig", "RunSpec", "expand", "load_yaml", "parse_name_list"]

CONFIG_KEYS = {
    "problems", "algorithms", "seeds", "budget", "max_time", "max_steps",
    "checkpoint_ratio", "out", "device", "plugin", "batch_size", "executor", "workers",
    "shard", "devices", "grid", "scheduler", "slurm", "threads", "experiments", "tuned",
}  # fmt: skip
# keys a block of ``experiments:`` may set for itself
BLOCK_KEYS = {"problems", "algorithms", "seeds", "budget", "max_time", "max_steps",
              "checkpoint_ratio", "grid"}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Budget:
    """When a run stops: ``max_calls`` counted oracle calls (all types), ``max_time``
    seconds of batch wall time (0: none), or ``max_steps`` outer steps (a guard)."""

    max_calls: int = 10_000
    max_time: float = 0.0
    max_steps: int = 1_000_000
    checkpoint_ratio: float = 1.25

    def __post_init__(self) -> None:
        for key, value in (("budget", self.max_calls), ("max_steps", self.max_steps),
                           ("checkpoint_ratio", self.checkpoint_ratio)):  # fmt: skip
            if not math.isfinite(value):
                raise UserError(f"bad value for {key}: {value} (must be a finite number)")
        if math.isnan(self.max_time):
            raise UserError("bad value for max_time: nan (seconds >= 0, 0 = no limit)")
        if self.max_calls < 1:
            raise UserError(f"bad value for budget: {self.max_calls} (must be >= 1 oracle call)")
        if self.max_time < 0:
            raise UserError(f"bad value for max_time: {self.max_time} (must be >= 0)")
        if self.max_steps < 1:
            raise UserError(f"bad value for max_steps: {self.max_steps} (must be >= 1)")
        if not self.checkpoint_ratio > 1:
            raise UserError(f"bad value for checkpoint_ratio: {self.checkpoint_ratio} (> 1)")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: a problem instance, an algorithm hyperparameter point, a seed, a budget."""

    problem: str
    problem_params: Any
    algorithm: str
    hyper: Any
    seed: int
    budget: Budget

    def config(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "problem_params": dataclasses.asdict(self.problem_params),
            "algorithm": self.algorithm,
            "hyper": dataclasses.asdict(self.hyper),
            "seed": self.seed,
            "budget": dataclasses.asdict(self.budget),
        }

    @cached_property
    def config_id(self) -> str:
        """Hash of the full config alone: runs of one config made by different code share
        it (the store keeps the latest of them and marks the others stale)."""
        text = json.dumps(self.config(), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    @cached_property
    def provenance(self) -> str:
        """Hash of the code that produces this run's rows: both plugins' files with the local
        modules they import (:func:`~bibench.registry.source_hash`), the framework's
        sources (:func:`~bibench.registry.framework_hash`) and the bibench version."""
        payload = {
            "problem_source": source_hash(get_problem(self.problem)),
            "algorithm_source": source_hash(get_algorithm(self.algorithm)),
            "framework": framework_hash(),
            "bibench": __version__,
        }
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    @cached_property
    def run_id(self) -> str:
        """Hash of the config and of the code that runs it (:attr:`provenance`): an edit to a
        plugin, a module it imports or the framework gives new run ids, never a reused row."""
        text = json.dumps({"config": self.config_id, "provenance": self.provenance})
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def label(self) -> str:
        """``problem[changed params] × algorithm[changed hyper] seed s``."""
        return (
            f"{self.problem}{_changed(self.problem_params)} × "
            f"{self.algorithm}{_changed(self.hyper)} seed {self.seed}"
        )


def _changed(obj: Any) -> str:
    default = type(obj)()
    diff = {
        f.name: getattr(obj, f.name)
        for f in dataclasses.fields(obj)
        if getattr(obj, f.name) != getattr(default, f.name)
    }
    return "[" + ",".join(f"{k}={v}" for k, v in diff.items()) + "]" if diff else ""


@dataclasses.dataclass
class RunConfig:
    """The user's request, from YAML and flags (flags win)."""

    problems: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    algorithms: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    budget: Budget = dataclasses.field(default_factory=Budget)
    out: str = "results/run"
    device: str = "auto"
    plugins: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # executor options etc.
    blocks: list[RunConfig] = dataclasses.field(default_factory=list)  # ``experiments:``


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; any problem is one UserError naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"malformed YAML in {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"malformed config {path}: the top level must be a mapping of keys")
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise UserError(unknown_names("key", unknown, CONFIG_KEYS, f"in {path}"))
    return data


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_name_list(text: str, what: str) -> list[tuple[str, dict[str, Any]]]:
    """``a[k=v,k2=v2],b`` -> ``[("a", {"k": v, "k2": v2}), ("b", {})]``; values are YAML."""
    out = []
    for item in _split_top(text):
        if "[" in item:
            if not item.endswith("]"):
                raise UserError(f"malformed {what} '{item}': expected name[key=value,...]")
            name, inner = item[:-1].split("[", 1)
            params: dict[str, Any] = {}
            for kv in _split_top(inner):
                if "=" not in kv:
                    raise UserError(f"malformed {what} parameter '{kv}' in '{item}'")
                k, v = kv.split("=", 1)
                params[k.strip()] = _yaml_value(v, f"{what} parameter '{k.strip()}' in '{item}'")
            out.append((name.strip(), params))
        else:
            out.append((item, {}))
    return out


def _yaml_value(text: str, what: str) -> Any:
    """One bracket value, safe-loaded as YAML: a value YAML cannot parse, or a tag that would
    build a Python object (``!!python/...``), is a UserError naming ``what``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"malformed value {text.strip()!r} for {what}: {problem}") from None


def _entries(value: Any, what: str) -> list[tuple[str, Any]]:
    """Normalise the YAML forms of ``problems`` / ``algorithms`` to (name, params)."""
    if isinstance(value, str):
        return parse_name_list(value, what)
    if isinstance(value, dict):
        return [(str(k), {} if v is None else v) for k, v in value.items()]
    if isinstance(value, list):
        out: list[tuple[str, Any]] = []
        for item in value:
            if isinstance(item, str):
                out.extend(parse_name_list(item, what))
            elif isinstance(item, dict) and "name" in item:
                item = dict(item)
                out.append((str(item.pop("name")), item))
            elif isinstance(item, dict) and len(item) == 1:
                ((k, v),) = item.items()
                out.append((str(k), {} if v is None else v))
            else:
                raise UserError(f"malformed {what} entry: {item!r}")
        return out
    raise UserError(f"malformed {what}: expected a mapping, a list or a comma list, got {value!r}")


def _product(params: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(params)
    lists = [v if isinstance(v, list) else [v] for v in params.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*lists)]


def _seeds(value: Any) -> list[int]:
    if isinstance(value, bool):
        raise UserError(f"bad value for seeds: {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise UserError(f"bad value for seeds: {value} (must be >= 1)")
        return list(range(value))
    ints = isinstance(value, list) and all(type(s) is int for s in value)
    if ints:
        return list(value)
    raise UserError(f"bad value for seeds: {value!r} (a count or a list of integers)")


def from_mapping(data: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Build a RunConfig from YAML-like data (missing keys keep ``base``'s values)."""
    cfg = dataclasses.replace(base) if base else RunConfig()
    if "problems" in data:
        cfg.problems = _entries(data["problems"], "problems")
    if "algorithms" in data:
        cfg.algorithms = _entries(data["algorithms"], "algorithms")
    if "seeds" in data:
        cfg.seeds = _seeds(data["seeds"])
    b = {}
    names = {"budget": "max_calls", "max_time": "max_time", "max_steps": "max_steps",
             "checkpoint_ratio": "checkpoint_ratio"}  # fmt: skip
    for key, field in names.items():
        if key in data:
            val = data[key]
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise UserError(f"bad value for {key}: {val!r} (expected a number)")
            if not math.isfinite(val) and not (key == "max_time" and val == math.inf):
                raise UserError(f"bad value for {key}: {val} (expected a finite number)")
            b[field] = int(val) if field in ("max_calls", "max_steps") else float(val)
    if b:
        cfg.budget = dataclasses.replace(cfg.budget, **b)
    if "out" in data:
        cfg.out = str(data["out"])
    if "device" in data:
        cfg.device = str(data["device"])
    if "plugin" in data:
        plug = data["plugin"]
        cfg.plugins = [plug] if isinstance(plug, str) else list(plug)
    for key in ("batch_size", "executor", "workers", "shard", "devices", "grid", "scheduler",
                "slurm", "threads"):  # fmt: skip
        if key in data:
            cfg.extra[key] = data[key]
    if "experiments" in data:
        cfg.blocks = [_block(i, b, cfg) for i, b in enumerate(_block_list(data["experiments"]))]
    if "tuned" in data:
        cfg.blocks += _tuned_blocks(data["tuned"], cfg)
    return cfg


def _tuned_blocks(path: Any, parent: RunConfig) -> list[RunConfig]:
    """The ``experiments:`` of a tuned file (``bibench tune --write``), each run on the
    file's ``seeds`` (the evaluation seeds, disjoint from the tuning seeds)."""
    path = Path(str(path))
    if not path.is_file():
        raise UserError(f"tuned file not found: {path} (bibench tune --write makes it)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or "experiments" not in data:
        raise UserError(f"malformed tuned file {path}: no 'experiments:'")
    blocks = _block_list(data["experiments"])
    if "seeds" in data:
        blocks = [{"seeds": data["seeds"], **b} for b in blocks]
    return [_block(i, b, parent) for i, b in enumerate(blocks)]


def _block_list(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(b, dict) for b in value):
        raise UserError("malformed experiments: expected a list of mappings")
    return value


def _block(i: int, data: dict[str, Any], parent: RunConfig) -> RunConfig:
    unknown = sorted(set(data) - BLOCK_KEYS)
    if unknown:
        raise UserError(unknown_names("key", unknown, BLOCK_KEYS, f"in experiments[{i}]"))
    base = dataclasses.replace(parent, extra=dict(parent.extra), blocks=[])
    return from_mapping(data, base)


def expand(cfg: RunConfig) -> list[RunSpec]:
    """All runs: problems × algorithm hyperparameter points × seeds, validated; with
    ``experiments:`` blocks, the union of each block's runs (duplicates once)."""
    discover(cfg.plugins)
    if cfg.blocks:
        specs = [s for block in cfg.blocks for s in _expand_one(block)]
        return list({s.run_id: s for s in specs}.values())
    return _expand_one(cfg)


def _expand_one(cfg: RunConfig) -> list[RunSpec]:
    if not cfg.problems:
        raise UserError("no problems given (use --problems or 'problems:' in the config)")
    if not cfg.algorithms:
        raise UserError("no algorithms given (use --algorithms or 'algorithms:' in the config)")
    PROBLEMS.check([name for name, _ in cfg.problems])  # every unknown name at once
    ALGORITHMS.check([name for name, _ in cfg.algorithms])
    use_grid = bool(cfg.extra.get("grid", False))
    problems = []
    for name, params in cfg.problems:
        cls = get_problem(name)
        if not isinstance(params, dict):
            raise UserError(f"malformed parameters for problem {name}: {params!r}")
        for point in _product(params):
            problems.append((name, build_params(cls.Params, f"problem {name}", point)))
    algorithms = []
    for name, hyper in cfg.algorithms:
        cls = get_algorithm(name)
        if hyper == "grid" or (use_grid and hyper == {}):
            hyper = dict(cls.grid)
        if hyper == "default":
            hyper = {}
        if not isinstance(hyper, dict):
            raise UserError(f"malformed hyperparameters for algorithm {name}: {hyper!r}")
        for point in _product(hyper):
            algorithms.append((name, build_params(cls.Hyper, f"algorithm {name}", point)))
    return [
        RunSpec(p, pp, a, hp, seed, cfg.budget)
        for (p, pp), (a, hp), seed in itertools.product(problems, algorithms, cfg.seeds)
    ]
