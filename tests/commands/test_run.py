"""``bibench run`` / ``bibench list`` end to end, including every bad-input path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from bibench.cli import main

QUAD = ["--problems", "quadratic", "--quiet"]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-algorithm run; the error tests check it survives them."""
    out = tmp_path_factory.mktemp("out")
    code = main(["run", *QUAD, "--algorithms", "aid_cg,stocbio", "--seeds", "3",
                 "--budget", "20000", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def snapshot(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "_runs").glob("*.parquet")}


def test_run_writes_the_long_table(finished):
    df = pd.read_parquet(finished)
    assert df["run_id"].nunique() == 6
    assert sorted(df["algorithm"].unique()) == ["aid_cg", "stocbio"]
    assert sorted(df["seed"].unique()) == [0, 1, 2]
    last = df.sort_values("oracle_calls").groupby("run_id").tail(1)
    assert (last["status"] == "done").all()
    aid = last[last["algorithm"] == "aid_cg"]
    assert (aid["hypergrad_norm"] < 1e-8).all()


def test_rerun_skips_finished_runs(finished, capsys):
    before = snapshot(finished)
    code, out, _ = run_cli(capsys, "run", *QUAD, "--algorithms", "aid_cg,stocbio", "--seeds", 3,
                           "--budget", 20000, "--out", finished)  # fmt: skip
    assert code == 0
    assert "6 already finished (skipped)" in out
    assert snapshot(finished) == before


def test_yaml_config_mirrors_flags(tmp_path, capsys):
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        textwrap.dedent(f"""
        problems:
          quadratic: {{dim_y: [4, 6]}}
        algorithms:
          aid_cg: {{lr_x: 0.05}}
        seeds: 2
        budget: 500
        out: {tmp_path / "o"}
    """)
    )
    code, _, _ = run_cli(capsys, "run", "--config", cfg, "--quiet")
    assert code == 0
    df = pd.read_parquet(tmp_path / "o")
    assert sorted(df["prob_dim_y"].unique()) == [4, 6]
    assert (df["hp_lr_x"] == 0.05).all()
    assert df["run_id"].nunique() == 4
    assert df.groupby("run_id")["oracle_calls"].max().min() >= 500


EXPERIMENTS = """
seeds: 2
budget: 300
experiments:
  - problems: {quadratic: {dim_y: 4}}
    algorithms: {aid_cg: {lr_x: 0.05}, stocbio: {}}
  - problems: {hat: {}}
    algorithms: {aid_cg: {lr_y: 0.1}}
    seeds: 1
    budget: 400
"""


def test_experiment_blocks_are_crossed_separately_and_inherit(tmp_path, capsys):
    cfg = tmp_path / "c.yml"
    cfg.write_text(EXPERIMENTS)
    code, _, _ = run_cli(capsys, "run", "--config", cfg, "--quiet", "--out", tmp_path / "o")
    assert code == 0
    runs = pd.read_parquet(tmp_path / "o").groupby("run_id").last()
    quad, hat = runs[runs["problem"] == "quadratic"], runs[runs["problem"] == "hat"]
    assert len(quad) == 4 and len(hat) == 1  # 2 algorithms x 2 seeds; 1 x 1
    assert (quad["prob_dim_y"] == 4).all() and (hat["hp_lr_y"] == 0.1).all()
    assert (quad["budget"] == 300).all() and (quad["oracle_calls"] >= 300).all()
    assert (hat["budget"] == 400).all() and (hat["oracle_calls"] >= 400).all()
    assert set(quad.loc[quad["algorithm"] == "aid_cg", "hp_lr_x"]) == {0.05}


def test_flags_pick_runs_out_of_experiment_blocks(tmp_path, capsys):
    cfg = tmp_path / "c.yml"
    cfg.write_text(EXPERIMENTS)
    args = ["run", "--config", cfg, "--quiet", "--out", tmp_path / "o", "--algorithms", "aid_cg"]
    assert run_cli(capsys, *args)[0] == 0
    runs = pd.read_parquet(tmp_path / "o").groupby("run_id").last()
    assert sorted(zip(runs["problem"], runs["algorithm"])) == [
        ("hat", "aid_cg"), ("quadratic", "aid_cg"), ("quadratic", "aid_cg")]  # fmt: skip
    code, _, err = run_cli(capsys, *args[:-1], "itd")
    assert code == 2 and "'itd' is not in this config's experiments" in err


def test_unknown_key_in_an_experiment_block_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("experiments:\n  - problems: quadratic\n    algo: aid_cg\n")
    code, _, err = run_cli(capsys, "run", "--config", bad)
    assert code == 2 and "unknown key 'algo' in experiments[0]" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--problems", "nosuch", "--algorithms", "aid_cg"], "unknown problem 'nosuch'"),
        (["--problems", "quadratic", "--algorithms", "nosuch"], "unknown algorithm 'nosuch'"),
        (["--problems", "quadratic", "--algorithms", "aid_cg[lr_x=-1]"], "lr_x must be > 0"),
        (["--problems", "quadratic", "--algorithms", "aid_cg[n_cg=abc]"], "'n_cg'"),
        (["--problems", "quadratic[dim_q=3]", "--algorithms", "aid_cg"], "'dim_q'"),
        (["--problems", "quadratic", "--algorithms", "aid_cg", "--seeds", "0"], "seeds"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(finished, capsys, args, needle):
    before = snapshot(finished)
    code, _, err = run_cli(capsys, "run", "--quiet", "--out", finished, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bibench: error:"), err
    assert needle in lines[0]
    assert snapshot(finished) == before


def test_malformed_yaml_names_the_file_and_line(finished, tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("problems: [quadratic\nalgorithms: aid_cg\n")
    code, _, err = run_cli(capsys, "run", "--config", bad, "--out", finished)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "line" in lines[0]


def test_unknown_yaml_key_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("problems: quadratic\nalgorithm: aid_cg\n")
    code, _, err = run_cli(capsys, "run", "--config", bad)
    assert code == 2 and "unknown key 'algorithm'" in err


def test_plugin_that_raises_on_import_is_named(finished, tmp_path, capsys):
    plugin = tmp_path / "broken_plugin.py"
    plugin.write_text("raise RuntimeError('boom at import')\n")
    before = snapshot(finished)
    code, _, err = run_cli(capsys, "run", *QUAD, "--algorithms", "aid_cg", "--plugin", plugin,
                           "--out", finished)  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(plugin) in lines[0] and "boom at import" in lines[0]
    assert snapshot(finished) == before


def test_divergence_is_one_line_per_run_nonzero_exit_others_finish(finished, capsys):
    before = snapshot(finished)
    code, _, err = run_cli(capsys, "run", *QUAD, "--algorithms", "aid_cg[lr_x=50.0],stocbio",
                           "--seeds", 1, "--budget", 2000, "--out", finished)  # fmt: skip
    assert code == 1
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("bibench:")]
    assert len(lines) == 1 and "diverged" in lines[0] and "lr_x=50.0" in lines[0]
    df = pd.read_parquet(finished)
    df = df[df["budget"] == 2000]
    last = df.sort_values("step").groupby("run_id").tail(1).set_index("label")
    assert last.loc["quadratic × aid_cg[lr_x=50.0] seed 0", "status"] == "diverged"
    assert last.loc["quadratic × stocbio seed 0", "status"] == "done"
    after = snapshot(finished)
    assert {k: after[k] for k in before} == before  # nothing already computed was touched


PLUGIN = '''
"""A loose plugin file: plain alternating gradient descent (no hypergradient)."""
import dataclasses
from bibench import Algorithm, HyperParams, State, register_algorithm


@dataclasses.dataclass(frozen=True)
class Hyper(HyperParams):
    lr_x: float = 0.05
    lr_y: float = 1.0


@register_algorithm("alt_gd_plugin")
class AltGD(Algorithm):
    """Alternating GD on f and g, ignoring the implicit term (a test plugin)."""

    Hyper = Hyper

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        return State(x0, y0)

    def step(self, state):
        y = state.y - self.hp.lr_y * self.oracle.grad_y_g(state.x, state.y)
        x = state.x - self.hp.lr_x * self.oracle.grad_x_f(state.x, y)
        return State(x, y)
'''


def test_plugin_file_outside_the_repo_adds_an_algorithm(tmp_path, capsys):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(PLUGIN)
    code, out, _ = run_cli(capsys, "list", "--plugin", plugin)
    assert code == 0 and "alt_gd_plugin" in out and "test plugin" in out
    code, _, _ = run_cli(capsys, "run", *QUAD, "--algorithms", "alt_gd_plugin", "--plugin", plugin,
                         "--budget", 400, "--out", tmp_path / "o")  # fmt: skip
    assert code == 0
    df = pd.read_parquet(tmp_path / "o")
    assert (df["algorithm"] == "alt_gd_plugin").all()
    # two oracle calls per step, counted by the harness, not declared by the plugin
    assert (df["n_grad_y_g"] == df["step"]).all() and (df["oracle_calls"] == 2 * df["step"]).all()
    # ignoring the implicit term leaves a biased fixed point: ||grad Phi|| stays away from 0
    assert df["hypergrad_norm"].iloc[-1] > 1e-3


def test_list_shows_problems_with_regime_and_algorithms(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    assert "quadratic" in out and "[strongly convex]" in out
    assert "aid_cg" in out and "stocbio" in out


def test_run_bench_py_is_the_same_cli():
    import runpy

    root = Path(__file__).resolve().parents[2]
    ns = runpy.run_path(str(root / "run_bench.py"), run_name="not_main")
    assert ns["main"] is main
