r"""HG-MS's own task in miniature: matched-budget data-source reweighting (Masiha, Shen,
Kiyavash, He, arXiv 2605.09209), on the ``source_reweighting`` problem.

:func:`run` runs ``configs/papers/hgms_reweighting.yml`` (HG-MS against AID-CG, ITD, SOBA,
StocBiO, BGS-Opt and F2BA at an equal budget of counted oracle calls, over data splits =
problem seeds, with deterministic and minibatch oracles); :func:`table` summarises the
final checkpoint of every run, :func:`figure` draws the target test accuracy against
oracle calls, and :func:`claims` computes the verdicts. Everything downstream of
:func:`run` reads the stored results only.

Per (oracle, algorithm), :func:`table` gives the median [q20, q80] over runs of: the
target test accuracy of the algorithm's own lower iterate ``y`` (``test_acc``) and of the
exact optimistic :math:`y^*(x)` at its upper iterate (``test_acc_at_y_star``: what its
learned weights are worth once the selection is exact), :math:`\|\nabla\Phi(x)\|` and
the gap :math:`\Phi(x) - \Phi(x_{\rm ref})` to the oracle mixture, and the median learned
weight of each source. Baseline rows, one value per split: ``uniform``
(:math:`y^*(0)`), ``best single source`` (chosen on validation) and ``oracle mixture``
(:math:`y^*` at the L-BFGS minimiser of the exact :math:`\Phi`, its weights beside).

Verdicts (:func:`claims`): for each oracle and each other method, the paired difference
(same split and seed) of HG-MS's final value minus the other's, for ``test_acc`` (the
selection and the weights together) and ``test_acc_at_y_star`` (the weights alone); the
mean difference gets a two-sided 90% Student-t interval over the pairs
(``scipy.stats.ttest_1samp``). "HG-MS higher" / "HG-MS lower" when the interval excludes
0, else "no measurable difference"; pairs where either run diverged are left out, and
with fewer than two pairs left the verdict says how many HG-MS runs diverged. A separate
claim checks the weights: the learned weight of ``clean`` exceeds those of ``noised`` and
``off_target`` in every HG-MS run that finished. Table cells summarise finished runs
only; the ``diverged`` column counts the others.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bibench import config, store
from bibench.analysis import plots
from bibench.analysis.hitting import curves
from bibench.analysis.tables import cell, to_markdown
from bibench.data.sources import SOURCES
from bibench.registry import REPO_ROOT
from bibench.sweep import run_sweep

__all__ = ["CONFIG", "QUICK", "claims", "figure", "finals", "run", "specs", "table"]

CONFIG = REPO_ROOT / "configs" / "papers" / "hgms_reweighting.yml"
QUICK = {
    "budget": 600,
    "problems": {"source_reweighting": {"seed": [1, 2], "batch_size": [0, 32]}},
}
"""Overrides of ``--quick``: two splits, 600 oracle calls (a smoke run, not a result)."""
SELECTING = "hg_ms"
CONFIDENCE = 0.9
METRICS = ("test_acc", "test_acc_at_y_star")


def specs(quick: bool = False) -> list[config.RunSpec]:
    """The runs of the experiment config (``QUICK`` applied when ``quick``)."""
    data = config.load_yaml(CONFIG)
    if quick:
        data.update(QUICK)
    return config.expand(config.from_mapping(data))


def run(
    out: str | Path, quick: bool = False, progress: bool = False, only: set[str] | None = None
) -> pd.DataFrame:
    """Run the experiment (only the algorithms ``only``, if given) into ``out``
    (resumable) and return its stored results."""
    todo = [s for s in specs(quick) if only is None or s.algorithm in only]
    summary = run_sweep(todo, out, progress=progress)
    for msg in summary.messages:
        print(f"bibench: {msg}")
    df = store.load(out)
    return df[df["run_id"].isin({s.run_id for s in todo})]


def _oracle(batch_size: pd.Series) -> pd.Series:
    return np.where(batch_size > 0, "minibatch " + batch_size.astype(str), "deterministic")


def finals(df: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of every run, with ``oracle`` and ``split`` columns."""
    last = df.sort_values("oracle_calls").groupby("run_id").tail(1)
    return last.assign(oracle=_oracle(last["prob_batch_size"]), split=last["prob_seed"])


def _cell(v: pd.Series) -> str:
    q20, med, q80 = np.quantile(v.to_numpy(float), [0.2, 0.5, 0.8])
    return cell(med, q20, q80)


def table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (oracle, method) and three baseline rows (module docstring)."""
    last = finals(df)
    rows = []
    for (oracle, alg), runs in last.groupby(["oracle", "algorithm"], sort=True):
        part = runs[runs["status"] == "done"]
        row = {"oracle": oracle, "method": alg, "runs": len(runs),
               "diverged": int((runs["status"] == "diverged").sum())}  # fmt: skip
        if part.empty:
            rows.append(row)
            continue
        row["test_acc"] = _cell(part["test_acc"])
        row["test_acc_at_y_star"] = _cell(part["test_acc_at_y_star"])
        row["hypergrad_norm"] = _cell(part["hypergrad_norm"])
        row["phi_gap"] = _cell(part["phi_gap"])
        row["oracle_calls"] = int(part["oracle_calls"].median())
        row.update({f"w_{s}": f"{part[f'w_{s}'].median():.3f}" for s in SOURCES})
        rows.append(row)
    per_split = last.groupby("split").first()
    names = {"uniform": "uniform weights", "single": "best single source",
             "oracle": "oracle mixture"}  # fmt: skip
    for key, name in names.items():
        row = {"oracle": "baseline", "method": name, "runs": len(per_split), "diverged": 0}
        row["test_acc"] = row["test_acc_at_y_star"] = _cell(per_split[f"test_acc_{key}"])
        if key == "uniform":
            row.update({f"w_{s}": f"{1 / len(SOURCES):.3f}" for s in SOURCES})
        if key == "oracle":
            row["phi_gap"] = "0 (reference)"
            row.update({f"w_{s}": f"{per_split[f'oracle_w_{s}'].median():.3f}" for s in SOURCES})
        rows.append(row)
    return pd.DataFrame(rows).astype(object).fillna("–")


def _interval(diff: np.ndarray) -> tuple[float, float, float]:
    """Mean and two-sided ``CONFIDENCE`` Student-t interval of paired differences."""
    mean = float(diff.mean())
    if len(diff) < 2 or np.allclose(diff, diff[0]):
        return mean, mean, mean
    ci = stats.ttest_1samp(diff, 0.0).confidence_interval(CONFIDENCE)
    return mean, float(ci.low), float(ci.high)


def claims(df: pd.DataFrame) -> list[dict]:
    """Computed verdicts (module docstring): one row per (oracle, metric, other method)
    and one for the learned weights."""
    last = finals(df)
    out = []
    keys = ["oracle", "split", "seed"]
    mine = last[last["algorithm"] == SELECTING].set_index(keys)
    for alg in sorted(set(last["algorithm"]) - {SELECTING}):
        other = last[last["algorithm"] == alg].set_index(keys)
        both = mine.merge(other, left_index=True, right_index=True, suffixes=("_hgms", "_other"))
        for oracle, pairs in both.groupby(level="oracle"):
            ok = (pairs["status_hgms"] == "done") & (pairs["status_other"] == "done")
            part = pairs[ok]
            for metric in METRICS:
                diff = (part[f"{metric}_hgms"] - part[f"{metric}_other"]).to_numpy(float)
                mean, lo, hi = _interval(diff) if len(diff) else (np.nan,) * 3
                lost = int((pairs["status_hgms"] != "done").sum())
                verdict = (
                    f"not comparable: {len(diff)}/{len(pairs)} pairs finished "
                    f"(HG-MS diverged in {lost})"
                    if len(diff) < 2 else "HG-MS higher" if lo > 0
                    else "HG-MS lower" if hi < 0 else "no measurable difference"
                )  # fmt: skip
                out.append({
                    "paper": "hgms",
                    "claim": f"HG-MS vs {alg}: target {metric} at a matched budget",
                    "setting": f"source_reweighting, {oracle}",
                    "measured": f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}] "
                                f"({int(CONFIDENCE * 100)}% t, {len(diff)} pairs)",
                    "n": len(diff), "mean": mean, "ci_low": lo, "ci_high": hi,
                    "verdict": verdict,
                })  # fmt: skip
    hg = last[(last["algorithm"] == SELECTING) & (last["status"] == "done")]
    if not hg.empty:
        margin = hg["w_clean"] - hg[["w_noised", "w_off_target"]].max(axis=1)
        ok = bool((margin > 0).all())
        out.append({
            "paper": "hgms",
            "claim": "HG-MS's learned weights favour the clean source over noised and off-target",
            "setting": "source_reweighting, all oracles",
            "measured": f"min over runs of w_clean - max(w_noised, w_off_target) = "
                        f"{margin.min():.3f} ({len(margin)} runs)",
            "n": len(margin), "mean": float(margin.mean()), "ci_low": float(margin.min()),
            "ci_high": float(margin.max()),
            "verdict": "reproduced" if ok else "not reproduced",
        })  # fmt: skip
    return out


def figure(df: pd.DataFrame, out: str | Path) -> list[Path]:
    """Target test accuracy of ``y`` against counted oracle calls, one panel per oracle,
    median and 20-80% band over runs; the baselines as horizontal lines."""
    df = df.assign(oracle=_oracle(df["prob_batch_size"]))
    oracles = sorted(df["oracle"].unique())
    fig, axes = plots.panels(len(oracles), ncols=2, width=4.6)
    algs = sorted(df["algorithm"].unique())
    cmap = plots.colors(algs)
    last = finals(df).groupby("split").first()
    for ax, oracle in zip(axes, oracles):
        part = df[df["oracle"] == oracle].assign(
            problem_setting="all", algorithm_setting=df["algorithm"]
        )
        for grid, per_alg in curves(part, "test_acc", "oracle_calls", n_grid=80).values():
            for alg, v in per_alg.items():
                plots.draw_band(ax, grid, v, cmap[alg], alg)
        for key, ls in (("uniform", ":"), ("single", "-."), ("oracle", "--")):
            ax.axhline(last[f"test_acc_{key}"].median(), color="k", ls=ls, lw=1,
                       label=f"{key} (median)")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("oracle calls")
        ax.set_ylabel("target test accuracy")
        ax.set_title(oracle, fontsize="medium")
        ax.grid(True, alpha=0.3)
    plots.legend_outside(fig, axes, "median, 20–80% band")
    return plots.save(fig, Path(out) / "hgms_reweighting_test_acc")


def main(argv: list[str] | None = None) -> int:
    """Temporary entry point until ``bibench figures --paper hgms`` runs this module."""
    parser = argparse.ArgumentParser(prog="python -m bibench.papers.hgms_reweighting")
    parser.add_argument("--out", default="results/figures/hgms_reweighting")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out + ("-quick" if args.quick else ""))
    df = run(out, args.quick, progress=True)
    tab = table(df)
    figs = out / "_figures"
    figs.mkdir(parents=True, exist_ok=True)
    (figs / "hgms_reweighting.md").write_text(to_markdown(tab))
    print(to_markdown(tab))
    for row in claims(df):
        print(f"{row['verdict']}: {row['claim']} ({row['setting']}): {row['measured']}")
    for path in figure(df, figs):
        print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
