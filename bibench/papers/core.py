r"""What the paper modules share: a claim row, the verdict rules, the evidence statistics,
and running a paper's experiment (a shipped config in ``configs/papers/``).

A verdict is computed from measured evidence by one of the rules below, never written by
hand. The evidence of a comparison is a two-sample statistic with a 95 % percentile
bootstrap interval over seeds (:func:`scipy.stats.bootstrap`; a point interval when every
resample is equal, e.g. deterministic runs whose seeds coincide). A difference counts only
beyond a stated practical margin ``margin`` (a deterministic run can give a CI of width 0
around a difference of 0.002 that no one would call an effect):

* :func:`exceeds`: ``reproduced`` when the whole CI lies above ``margin``, ``not
  reproduced`` otherwise (the reason says whether the CI lies below or straddles it);
* :func:`within`: ``reproduced`` when the whole CI lies inside ``[-margin, margin]`` (a
  claim of no effect), ``not reproduced`` otherwise;
* :func:`only_when`: the claim holds in the paper's design but not in a control design
  (``reproduced only when <condition>``), or in both (``reproduced``), or not in the
  paper's design (``not reproduced``);
* :func:`all_of`: ``reproduced`` when every part is, ``reproduced only when <parts that
  hold>`` when some are, ``not reproduced`` when none is;
* ``not testable here`` when the experiment's data are absent (with why).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bibench import config, store
from bibench.analysis.tables import fmt
from bibench.errors import UserError
from bibench.registry import ALGORITHMS, PROBLEMS, REPO_ROOT, discover
from bibench.runner import resolve_device
from bibench.sweep import run_sweep

__all__ = [
    "NOT_REPRODUCED",
    "NOT_TESTABLE",
    "REPRODUCED",
    "Claim",
    "Interval",
    "all_of",
    "diff_ci",
    "exceeds",
    "mean_ci",
    "not_testable",
    "only_when",
    "run_experiment",
    "stored_experiment",
    "within",
]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable here"
ONLY_WHEN = "reproduced only when"
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """A statistic with its bootstrap interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{fmt(self.value)} [{fmt(self.low)}, {fmt(self.high)}]"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One row of ``bibench claims``."""

    paper: str
    claim: str  # one sentence, with the paper's section or figure
    experiment: str  # the shipped config that tests it
    evidence: str  # the measured numbers with CIs over seeds
    verdict: str  # computed by a rule of this module
    why: str = ""  # the rule's reason (the condition, the CI's side, why not testable)

    def row(self) -> dict[str, str]:
        verdict = f"{self.verdict} ({self.why})" if self.why else self.verdict
        return {
            "paper": self.paper,
            "claim": self.claim,
            "experiment": self.experiment,
            "evidence (95% CI over seeds)": self.evidence,
            "verdict": verdict,
        }


# -- evidence -------------------------------------------------------------------------
def _mean_diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def diff_ci(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> Interval:
    """``mean(a) - mean(b)`` over independent seeds with a 95 % percentile bootstrap CI
    (both samples resampled); a point interval when the samples are constant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return Interval(math.nan, math.nan, math.nan)
    d = float(np.mean(a) - np.mean(b))
    if (np.ptp(a) == 0 and np.ptp(b) == 0) or min(len(a), len(b)) < 2:
        return Interval(d, d, d)
    res = stats.bootstrap(
        (a, b), _mean_diff, n_resamples=2000, confidence_level=LEVEL, method="percentile",
        vectorized=True, random_state=np.random.default_rng(seed),
    )  # fmt: skip
    ci = res.confidence_interval
    return Interval(d, float(ci.low), float(ci.high))


def mean_ci(a: Sequence[float], *, seed: int = 0) -> Interval:
    """``mean(a)`` with a 95 % percentile bootstrap CI (a point when ``a`` is constant)."""
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return Interval(math.nan, math.nan, math.nan)
    m = float(np.mean(a))
    if np.ptp(a) == 0 or len(a) < 2:
        return Interval(m, m, m)
    res = stats.bootstrap(
        (a,), np.mean, n_resamples=2000, confidence_level=LEVEL, method="percentile",
        random_state=np.random.default_rng(seed),
    )  # fmt: skip
    return Interval(m, float(res.confidence_interval.low), float(res.confidence_interval.high))


# -- verdict rules --------------------------------------------------------------------
def exceeds(ci: Interval, margin: float, what: str) -> tuple[str, str]:
    """``reproduced`` iff the whole CI of ``what`` lies above ``margin``."""
    if not all(map(math.isfinite, (ci.low, ci.high))):
        return NOT_TESTABLE, f"{what}: no finite evidence"
    if ci.low > margin:
        return REPRODUCED, ""
    side = "below" if ci.high <= margin else "straddles"
    return NOT_REPRODUCED, f"the CI of {what} {side} the margin {fmt(margin)}"


def within(ci: Interval, margin: float, what: str) -> tuple[str, str]:
    """``reproduced`` iff the whole CI of ``what`` lies inside ``[-margin, margin]`` (no
    practical difference)."""
    if not all(map(math.isfinite, (ci.low, ci.high))):
        return NOT_TESTABLE, f"{what}: no finite evidence"
    if -margin <= ci.low and ci.high <= margin:
        return REPRODUCED, ""
    return NOT_REPRODUCED, f"the CI of {what} leaves [-{fmt(margin)}, {fmt(margin)}]"


def only_when(paper: tuple[str, str], control: tuple[str, str], condition: str,
              control_name: str) -> tuple[str, str]:  # fmt: skip
    """Combine the verdicts of the paper's design and of a control design."""
    (v_paper, why_paper), (v_control, why_control) = paper, control
    if v_paper != REPRODUCED:
        return v_paper, why_paper
    if v_control == REPRODUCED:
        return REPRODUCED, ""
    if v_control == NOT_TESTABLE:
        return REPRODUCED, f"{control_name} not run: {why_control}"
    return f"{ONLY_WHEN} {condition}", f"{control_name}: {why_control}"


def all_of(parts: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """``reproduced`` when every named part is, ``reproduced only when`` the parts that
    are, ``not reproduced`` when none is (``not testable here`` when none was tested)."""
    tested = {k: v for k, v in parts.items() if v[0] != NOT_TESTABLE}
    if not tested:
        return NOT_TESTABLE, "; ".join(f"{k}: {v[1]}" for k, v in parts.items())
    ok = [k for k, v in tested.items() if v[0] == REPRODUCED]
    fails = "; ".join(f"{k}: {v[1]}" for k, v in tested.items() if v[0] != REPRODUCED)
    if len(ok) == len(tested):
        return REPRODUCED, ""
    if not ok:
        return NOT_REPRODUCED, fails
    return f"{ONLY_WHEN} {', '.join(ok)}", fails


def not_testable(paper: str, claim: str, experiment: str, why: str) -> Claim:
    return Claim(paper, claim, experiment, "—", NOT_TESTABLE, why)


# -- running an experiment ------------------------------------------------------------
def config_path(name: str) -> Path:
    return REPO_ROOT / "configs" / "papers" / f"{name}.yml"


def _known(entries, registry, what: str):
    missing = sorted({n for n, _ in entries if n not in registry.entries})
    for name in missing:
        print(f"bibench: note: {what} '{name}' is not registered; its runs are skipped",
              file=sys.stderr)  # fmt: skip
    return [(n, p) for n, p in entries if n in registry.entries]


def _config(data: dict, out: Path, label: str, device: str | None) -> config.RunConfig:
    data = {**data, "out": str(out)}
    if device:
        data["device"] = device
    cfg = config.from_mapping(data)
    discover(cfg.plugins)
    grids = cfg.blocks or [cfg]  # with experiments: blocks, the blocks are the runs
    for grid in grids:
        grid.problems = _known(grid.problems, PROBLEMS, "problem")
        grid.algorithms = _known(grid.algorithms, ALGORITHMS, "algorithm")
    cfg.blocks = [g for g in cfg.blocks if g.problems and g.algorithms]
    if not any(g.problems and g.algorithms for g in grids):
        raise UserError(f"nothing to run for {label}: its problems or algorithms are not "
                        "registered")  # fmt: skip
    return cfg


def stored_experiment(data: dict, out: Path, *, label: str) -> tuple[pd.DataFrame, int]:
    """The stored rows of an experiment's runs in ``out``, computing nothing; and how many
    of its runs are not stored (yet)."""
    ids = {s.run_id for s in config.expand(_config(data, out, label, None))}
    df = _rows_of(out, ids) if out.is_dir() else pd.DataFrame({"run_id": []})
    return df, len(ids - set(df["run_id"]))


def _rows_of(out: Path, ids: set[str]) -> pd.DataFrame:
    """The stored rows of the runs ``ids`` in ``out`` (other runs there are left out)."""
    df = store.load(out)
    return df[df["run_id"].isin(ids)]


def run_experiment(
    data: dict,
    out: Path,
    *,
    label: str,
    device: str | None = None,
    progress: bool = True,
    on_summary: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, bool]:
    """Run a config mapping into ``out`` (resumable), return its rows and whether any
    run failed. Names not registered are skipped with a note."""
    cfg = _config(data, out, label, device)
    specs = config.expand(cfg)
    print(f"bibench: {label}: {len(specs)} runs into {cfg.out}")
    summary = run_sweep(specs, cfg.out, device=str(resolve_device(cfg.device)), progress=progress)
    for msg in summary.messages:
        print(f"bibench: {msg}", file=sys.stderr)
    if on_summary:
        on_summary(summary.line())
    return _rows_of(Path(cfg.out), {s.run_id for s in specs}), bool(summary.failed)
