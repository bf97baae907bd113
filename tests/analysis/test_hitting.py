"""N(ε), censoring, log-grid interpolation and quantile bands on curves known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bibench.analysis.hitting import (
    band,
    curves,
    first_hit,
    hitting_times,
    interpolate_run,
    quantiles,
    running_mean,
    targets,
)
from bibench.analysis.runs import prepare, split_label


def test_first_hit_is_the_first_checkpoint_at_or_below_eps():
    cost = np.array([0, 10, 20, 40, 80])
    metric = np.array([1.0, 0.5, 0.6, 0.1, 0.01])  # not monotone: 0.6 after 0.5
    eps = np.array([2.0, 0.7, 0.5, 0.2, 0.1, 0.05, 0.01, 1e-3])
    assert first_hit(cost, metric, eps).tolist() == [0, 10, 10, 40, 40, 80, 80, np.inf]


def test_nan_metric_never_counts_as_reached():
    cost = np.array([0, 1, 2, 3])
    metric = np.array([1.0, np.nan, 0.3, np.nan])
    assert first_hit(cost, metric, np.array([0.5, 0.1])).tolist() == [2, np.inf]


def synthetic_table(rates: dict[int, float], budget: int = 1000) -> pd.DataFrame:
    """Runs with metric m(c) = 1 / c^rate (checkpoints c = 1, 2, 4, ...), seeds as keys;
    rate 0 is a run that never improves (censored below 1)."""
    rows = []
    costs = 2 ** np.arange(0, int(np.log2(budget)) + 1)
    for seed, rate in rates.items():
        for step, c in enumerate(costs):
            rows.append(
                {
                    "run_id": f"r{seed}",
                    "label": f"toy[a=1] × alg[lr=0.5] seed {seed}",
                    "problem": "toy",
                    "algorithm": "alg",
                    "seed": seed,
                    "status": "done",
                    "step": step,
                    "oracle_calls": int(c),
                    "hypergrad_norm": float(c) ** -rate,
                }
            )
    return pd.DataFrame(rows)


def test_hitting_times_on_power_law_runs_with_censoring():
    df = prepare(synthetic_table({0: 1.0, 1: 0.5, 2: 0.0}))
    hits = hitting_times(df, np.array([0.25, 0.05]))
    n = hits.pivot(index="seed", columns="target", values="N")
    # m = 1/c: first power of two with 1/c <= 0.25 is 4, <= 0.05 is 32
    assert n.loc[0].tolist() == [4, 32]
    # m = c^-1/2: c >= 16 and c >= 400 -> 512
    assert n.loc[1].tolist() == [16, 512]
    # flat run: censored at both targets, its lower bound is the total cost
    cens = hits[hits["seed"] == 2]
    assert cens["censored"].all() and np.isinf(cens["N"]).all()
    assert (cens["cost_end"] == 512).all()
    assert set(hits["problem_setting"]) == {"toy[a=1]"}
    assert set(hits["algorithm_setting"]) == {"alg"}  # one point on the problem: bare name


def test_settings_keep_their_hyperparameters_when_a_problem_holds_several_points():
    other = synthetic_table({5: 1.0})
    other["label"] = other["label"].str.replace("lr=0.5", "lr=0.1")
    other["run_id"] = "r5b"
    df = prepare(pd.concat([synthetic_table({0: 1.0}), other]))
    assert set(df["algorithm_setting"]) == {"alg[lr=0.5]", "alg[lr=0.1]"}


def test_relative_targets_scale_by_the_median_initial_metric():
    df = synthetic_table({0: 1.0, 1: 0.5, 2: 0.0})
    df.loc[df["step"] == 0, "hypergrad_norm"] = [2.0, 4.0, 10.0]
    tg = targets(prepare(df), np.array([0.1, 0.01]), relative=True)
    np.testing.assert_allclose(tg["toy[a=1]"], [0.4, 0.04])


def test_split_label():
    assert split_label("quadratic[dim_y=20] × aid_cg[lr_x=0.3] seed 12") == (
        "quadratic[dim_y=20]",
        "aid_cg[lr_x=0.3]",
    )


def test_log_log_interpolation_is_exact_on_a_power_law_and_nan_outside():
    x = np.array([1.0, 10.0, 1000.0])
    grid = np.array([0.5, 3.0, 42.0, 1000.0, 2000.0])
    out = interpolate_run(x, 5 * x**-0.5, grid, diverged=False, floor=1e-300)
    assert np.isnan(out[0]) and np.isnan(out[-1])
    np.testing.assert_allclose(out[1:4], 5 * grid[1:4] ** -0.5, rtol=1e-12)
    div = interpolate_run(x, 5 * x**-0.5, grid, diverged=True, floor=1e-300)
    assert np.isposinf(div[-1])


def test_values_below_the_floor_are_raised_to_it():
    out = interpolate_run(
        np.array([1.0, 2.0]), np.array([1.0, 0.0]), np.array([2.0]), diverged=False, floor=1e-9
    )
    assert out[0] == pytest.approx(1e-9)


def test_quantiles_treat_inf_as_largest_and_ignore_nan():
    v = np.array([[1.0, 1.0], [2.0, np.nan], [3.0, 3.0], [np.inf, 5.0], [np.inf, np.nan]])
    q20, med, q80 = quantiles(v, (0.2, 0.5, 0.8))
    # column 0: sorted 1, 2, 3, inf, inf; positions 0.8, 2, 3.2
    assert q20[0] == pytest.approx(1.8) and med[0] == 3.0 and np.isposinf(q80[0])
    # column 1: 1, 3, 5; positions 0.4, 1, 1.6
    assert q20[1] == pytest.approx(1.8) and med[1] == 3.0 and q80[1] == pytest.approx(4.2)
    np.testing.assert_allclose(
        quantiles(np.arange(10.0), (0.2, 0.5, 0.8)), np.quantile(np.arange(10.0), [0.2, 0.5, 0.8])
    )


def test_band_needs_half_the_runs_present():
    v = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, np.nan]])
    _, med, _ = band(v)
    assert med[0] == 3.0 and np.isnan(med[1])


def test_running_mean_of_a_linear_metric_is_half_of_it():
    x = np.array([0.0, 1.0, 3.0, 7.0])
    np.testing.assert_allclose(running_mean(x, x)[1:], x[1:] / 2)
    np.testing.assert_allclose(running_mean(x, np.full(4, 2.0)), 2.0)


def test_curves_put_every_seed_on_one_grid():
    df = prepare(synthetic_table({0: 1.0, 1: 0.5}))
    ((grid, per_alg),) = curves(df, "hypergrad_norm", n_grid=11).values()
    assert grid[0] == 1 and grid[-1] == 512
    values = per_alg["alg"]
    assert values.shape == (2, 11)
    np.testing.assert_allclose(values[0], 1 / grid, rtol=1e-12)
    np.testing.assert_allclose(values[1], grid**-0.5, rtol=1e-12)
