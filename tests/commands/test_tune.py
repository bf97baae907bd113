"""``bibench tune``: selection on tuning seeds only, fresh evaluation seeds, YAML that
``bibench run --config`` accepts, and the search-space samplers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from bibench.cli import main
from bibench.tuning import grid_points, random_points, search_points

PLUGIN = '''
"""Test plugins: a 1-D problem with Phi(x) = x^2/2 and a gradient step whose effective size
depends on the seed, so that seeds {0, 1} and seeds {2, 3} prefer different step sizes."""
import dataclasses

import torch

from bibench import Algorithm, HyperParams, Problem, ProblemParams, State
from bibench import register_algorithm, register_problem


@register_problem("tune_toy")
class TuneToy(Problem):
    """f = x^2/2, g = (y - x)^2/2: y*(x) = x, Phi = x^2/2, grad Phi = x."""

    regime = "strongly convex"

    def build(self):
        self.dim_x = self.dim_y = 1

    def f(self, x, y, batch=None):
        return 0.5 * (x**2).sum(-1)

    def g(self, x, y, batch=None):
        return 0.5 * ((y - x) ** 2).sum(-1)

    def init_x(self, rng):
        return torch.ones(len(rng.seeds), 1, dtype=self.dtype)

    def y_star(self, x):
        return x

    def hypergrad(self, x):
        return x


@dataclasses.dataclass(frozen=True)
class Hyper(HyperParams):
    lr_x: float = 0.5


@register_algorithm("seed_scaled_gd")
class SeedScaledGD(Algorithm):
    """x <- x - lr s grad_x f with s = 1 on seeds < 2 and s = 1/2 otherwise."""

    Hyper = Hyper
    grid = {"lr_x": [0.5, 1.9]}

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        self.scale = torch.where(rng.seeds < 2, 1.0, 0.5).to(x0.dtype)[:, None]
        return State(x0, y0)

    def step(self, state):
        grad = self.oracle.grad_x_f(state.x, state.y)
        return State(state.x - self.hp.lr_x * self.scale * grad, state.y)
'''


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    plugin = root / "toy_plugin.py"
    plugin.write_text(PLUGIN)
    out = root / "out"
    code = main(
        [
            "tune",
            "--problems",
            "tune_toy",
            "--algorithms",
            "seed_scaled_gd",
            "--plugin",
            str(plugin),
            "--budget",
            "20",
            "--tuning-seeds",
            "2",
            "--eval-seeds",
            "2",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    return root, plugin, out


def final_by_seed(folder) -> pd.Series:
    df = pd.read_parquet(folder)
    last = df.sort_values("oracle_calls").groupby("run_id").tail(1)
    return last.set_index(["hp_lr_x", "seed"])["hypergrad_norm"].sort_index()


def test_selection_uses_the_tuning_seeds_only(tuned, capsys):
    root, plugin, out = tuned
    (best,) = out.glob("best_*.yml")
    chosen = yaml.safe_load(best.read_text())["algorithms"]["seed_scaled_gd"]["lr_x"]
    # on seeds {0, 1}: |1 - lr| = 0.5 for lr 0.5 beats 0.9 for lr 1.9
    assert chosen == 0.5
    tuning = final_by_seed(out / "tuning")
    assert sorted(tuning.index.get_level_values("seed").unique()) == [0, 1]
    assert tuning.loc[0.5].max() == pytest.approx(0.5**20)
    assert tuning.loc[1.9].min() == pytest.approx(0.9**20)
    # the evaluation seeds would have picked the other point: |1 - lr/2| = 0.05 < 0.75
    code = main(
        [
            "run",
            "--problems",
            "tune_toy",
            "--algorithms",
            "seed_scaled_gd",
            "--grid",
            "--plugin",
            str(plugin),
            "--budget",
            "20",
            "--seeds",
            "4",
            "--out",
            str(root / "all"),
            "--quiet",
        ]
    )
    assert code == 0
    every = final_by_seed(root / "all")
    on_eval = every[every.index.get_level_values("seed") >= 2]
    assert on_eval.loc[1.9].max() < on_eval.loc[0.5].min()
    # the report is drawn from the fresh seeds and says so
    evaluation = final_by_seed(out / "eval")
    assert sorted(evaluation.index.get_level_values("seed")) == [2, 3]
    assert evaluation.index.get_level_values("hp_lr_x").unique().tolist() == [0.5]
    assert evaluation.to_numpy() == pytest.approx([0.75**20] * 2)
    report = (out / "tune_report.md").read_text()
    assert "Selection used only the tuning seeds S_tune = [0, 1]" in report
    assert "fresh seeds S_eval = [2, 3]" in report
    # tuning cost: 2 points x 2 seeds x 20 calls
    assert "Total: 80 oracle calls" in report


def test_best_yaml_round_trips_through_run_config(tuned):
    _, _, out = tuned
    (best,) = out.glob("best_*.yml")
    data = yaml.safe_load(best.read_text())
    assert data["seeds"] == [2, 3] and data["budget"] == 20
    fresh = out.parent / "fresh"
    data["out"] = str(fresh)
    copy = out.parent / "copy.yml"
    copy.write_text(yaml.safe_dump(data))
    assert main(["run", "--config", str(copy), "--quiet"]) == 0
    assert final_by_seed(fresh).to_numpy() == pytest.approx(
        final_by_seed(out / "eval").to_numpy(), rel=0, abs=0
    )
    # run as written (same out folder): every run is already there, nothing re-runs
    assert main(["run", "--config", str(best), "--quiet"]) == 0


def test_random_search_draws_inside_the_grid_range():
    grid = {"lr": [0.01, 0.1, 1.0], "c": [0.2, 0.4], "n": [1, 100], "flag": [True, False]}
    pts = random_points(grid, 4000, seed=1)
    lr = np.array([p["lr"] for p in pts])
    c = np.array([p["c"] for p in pts])
    n = np.array([p["n"] for p in pts])
    assert lr.min() >= 0.01 and lr.max() <= 1.0
    # log-uniform over two decades: half the draws below 0.1
    assert abs((lr < 0.1).mean() - 0.5) < 0.03
    # uniform over [0.2, 0.4] (less than a decade): half below 0.3
    assert abs((c < 0.3).mean() - 0.5) < 0.03
    assert all(type(p["n"]) is int for p in pts) and n.min() >= 1 and n.max() <= 100
    assert {p["flag"] for p in pts} == {True, False}
    assert random_points(grid, 5, seed=1) == pts[:5]


def test_grid_search_takes_the_product_or_an_equal_size_subset():
    grid = {"a": [1, 2, 3], "b": [0.1, 0.2]}
    assert len(grid_points(grid)) == 6
    assert search_points(grid, 10, random=False, seed=0) == grid_points(grid)
    sub = search_points(grid, 4, random=False, seed=0)
    assert len(sub) == 4 and all(p in grid_points(grid) for p in sub)
    assert len({tuple(p.items()) for p in sub}) == 4


TUNING = """
tuning: {{tuning_seeds: 2, eval_seeds: 3, points: 2, criterion: final}}
regimes:
  deterministic: {{noise_std: 0.0}}
  stochastic: {{noise_std: 0.001}}
budget: 20
out: {out}
plugin: [{plugin}]
algorithms: {{seed_scaled_gd: steps}}
families:
  - {{problem: tune_toy}}
"""


@pytest.fixture(scope="module")
def tuned_file(tmp_path_factory, tuned):
    root = tmp_path_factory.mktemp("tunefile")
    plugin = tuned[1]  # one plugin file per session: a second one would redefine its names
    spec = root / "tuning.yml"
    spec.write_text(TUNING.format(out=root / "tuning", plugin=plugin))
    written = root / "tuned.yml"
    args = ["tune", "--config", str(spec), "--write", str(written), "--quiet"]
    assert main(args) == 0
    bench = root / "default.yml"
    bench.write_text(f"tuned: {written}\nout: {root / 'bench'}\nplugin: [{plugin}]\n")
    assert main(["run", "--config", str(bench), "--quiet"]) == 0
    return root, yaml.safe_load(written.read_text())


def test_tuned_file_holds_the_best_point_on_the_tuning_seeds(tuned_file):
    root, data = tuned_file
    tuning = pd.read_parquet(root / "tuning")
    assert sorted(tuning["seed"].unique()) == [0, 1]
    last = tuning.sort_values("oracle_calls").groupby("run_id").tail(1)
    for block in data["experiments"]:
        ((_, params),) = block["problems"].items()
        mine = last[last["prob_noise_std"] == params["noise_std"]]
        by_point = mine.groupby("hp_lr_x")["hypergrad_norm"].median()
        assert len(by_point) == 2  # both points of the grid, on both seeds
        assert block["algorithms"]["seed_scaled_gd"]["lr_x"] == by_point.idxmin()
    assert data["seeds"] == [2, 3, 4]
    # cost: 2 regimes x 2 points x 2 seeds x 20 calls
    assert data["cost"]["runs"] == 8 and data["cost"]["oracle_calls"] == 160
    assert {o["regime"] for o in data["outcomes"]} == {"deterministic", "stochastic"}
    assert [b["budget"] for b in data["experiments"]] == [20, 20]  # the tuning budget


def test_the_benchmark_reports_only_the_evaluation_seeds(tuned_file, tmp_path):
    root, _ = tuned_file
    bench = pd.read_parquet(root / "bench")
    assert sorted(bench["seed"].unique()) == [2, 3, 4]  # never a tuning seed
    assert bench["hp_lr_x"].unique().tolist() == [0.5]
    assert bench["oracle_calls"].max() == 20  # evaluated at the budget it was tuned at
    assert main(["report", "--results", str(root / "bench"), "--out", str(tmp_path),
                 "--n-boot", "50"]) == 0  # fmt: skip
    cells = pd.read_csv(tmp_path / "leaderboard.csv")
    assert sorted(cells["regime"]) == ["deterministic", "stochastic"]
    assert (cells["n"] == 3).all()
    # deterministic: seeds 2-4 scale the step by 1/2, |x_k| = 0.75^k <= 1e-2 |x_0| first
    # at k = 17 steps (one call each), so N is the first checkpoint at or after 17 calls,
    # the same on every evaluation seed
    det = cells[cells["regime"] == "deterministic"].iloc[0]
    k = math.ceil(math.log(1e-2) / math.log(0.75))
    rows = bench[bench["prob_noise_std"] == 0]
    first = rows[rows["hypergrad_norm"] <= 1e-2].groupby("run_id")["oracle_calls"].min()
    assert len(first) == 3 and first.nunique() == 1 and first.iloc[0] >= k
    assert det["median"] == det["lo"] == det["hi"] == first.iloc[0]
    assert det["success"] == 1.0 and det["rank"] == 1


def test_a_missing_tuned_file_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "default.yml"
    cfg.write_text(f"tuned: {tmp_path / 'nope.yml'}\n")
    assert main(["run", "--config", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bibench: error: tuned file not found: {tmp_path / 'nope.yml'} "
                   "(bibench tune --write makes it)"]  # fmt: skip


def test_write_needs_a_tuning_file(capsys):
    assert main(["tune", "--write", "x.yml", "--quiet"]) == 2
    assert "--write needs --config TUNING.yml" in capsys.readouterr().err
