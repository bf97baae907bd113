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


def test_divergence_is_one_line_per_run_exit_0_others_finish(finished, capsys):
    before = snapshot(finished)
    code, _, err = run_cli(capsys, "run", *QUAD, "--algorithms", "aid_cg[lr_x=50.0],stocbio",
                           "--seeds", 1, "--budget", 2000, "--out", finished)  # fmt: skip
    assert code == 0  # a diverged run has a recorded outcome (exit 1 only on failures)
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


# ---------------------------------------------------------------- planning, exit codes

PLAN_CONFIG = """
problems:
  quadratic: {dim_y: [4, 6]}
algorithms:
  aid_cg: {lr_x: [0.1, 0.3]}
  stocbio: grid
seeds: 3
budget: 200
"""


def table_rows(out: str) -> dict[tuple[str, str], list[str]]:
    """The per-(problem, algorithm) rows of the dry-run table."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0] == "quadratic":
            rows[parts[0], parts[1]] = parts[2:]
    return rows


def test_dry_run_counts_runs_batches_and_expansions(tmp_path, capsys):
    cfg = tmp_path / "c.yml"
    cfg.write_text(PLAN_CONFIG)
    out = tmp_path / "o"
    code, text, _ = run_cli(capsys, "run", "--config", cfg, "--out", out, "--dry-run")
    assert code == 0
    assert not out.exists()  # nothing run, nothing created
    # by hand: aid_cg 2 dim_y x 2 lr_x x 3 seeds = 12 runs; lr_x is per run (a float), so
    # one batch per problem point: 2. stocbio's grid 4 lr_x x 3 lr_y x 3 alpha x 3 n_neumann
    # = 108 points, x 2 x 3 = 648 runs; n_neumann (an int) splits batches: 3 x 2 = 6
    assert "expands: problem quadratic: dim_y (2) -> 2 points" in text
    assert "expands: aid_cg: lr_x (2) -> 2 points" in text
    assert ("expands: stocbio: grid lr_x (4) × lr_y (3) × alpha_neumann (3) × n_neumann (3)"
            " -> 108 points") in text  # fmt: skip
    assert "2 problem points × 110 algorithm points × 3 seeds = 660 runs" in text
    assert "660 runs: 0 already finished, 660 to run in 8 batches, 132k oracle calls" in text
    rows = table_rows(text)
    # runs, finished, to_run, batches, oracle calls (200 a run)
    assert rows["quadratic", "aid_cg"][:5] == ["12", "0", "12", "2", "2.4k"]
    assert rows["quadratic", "stocbio"][:5] == ["648", "0", "648", "6", "130k"]
    assert "estimated wall time" in text

    # after the aid_cg runs, the plan counts them finished and leaves stocbio to do
    run_cli(capsys, "run", "--problems", "quadratic[dim_y=[4,6]]", "--algorithms",
            "aid_cg[lr_x=[0.1,0.3]]", "--seeds", 3, "--budget", 200, "--out", out,
            "--quiet")  # fmt: skip
    code, text, _ = run_cli(capsys, "run", "--config", cfg, "--out", out, "--dry-run")
    rows = table_rows(text)
    assert rows["quadratic", "aid_cg"][:5] == ["12", "12", "0", "0", "0"]
    assert rows["quadratic", "stocbio"][:4] == ["648", "0", "648", "6"]
    assert "660 runs: 12 already finished, 648 to run in 6 batches" in text


def test_batch_estimate_from_the_probe_and_the_budget():
    from bibench.config import Budget, RunSpec
    from bibench.plan import _batch_seconds

    def batch(**budget):
        return [RunSpec("quadratic", None, "aid_cg", None, 0, Budget(**budget))]

    # 100 calls at 10 a step: 10 steps of 0.5 s after 1 s of init
    assert _batch_seconds(batch(max_calls=100), 1.0, 0.5, 10.0) == 6.0
    assert _batch_seconds(batch(max_calls=101), 1.0, 0.5, 10.0) == 6.5  # 11 steps
    assert _batch_seconds(batch(max_calls=100, max_time=3.0), 1.0, 0.5, 10.0) == 3.0
    assert _batch_seconds(batch(max_calls=100, max_steps=4), 1.0, 0.5, 10.0) == 3.0


SMALL = ["run", "--problems", "quadratic", "--algorithms", "aid_cg,stocbio", "--seeds", "2",
         "--budget", "200"]  # fmt: skip


def test_a_large_sweep_needs_yes_without_a_terminal(tmp_path, capsys, monkeypatch):
    import io

    from bibench import plan

    monkeypatch.setattr(plan, "CONFIRM_RUNS", 3)  # 4 runs: "large" ...
    monkeypatch.setattr(plan, "CONFIRM_SECONDS", 0.0)  # ... and estimated above 0 s
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, *SMALL, "--out", out, "--quiet")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "large sweep: 4 runs to do" in lines[0] and "--yes" in lines[0]
    assert not list(out.glob("_runs/*.parquet"))  # refused before any run
    code, _, _ = run_cli(capsys, *SMALL, "--out", out, "--quiet", "--yes")
    assert code == 0 and len(list(out.glob("_runs/*.parquet"))) == 4
    # below the time threshold the same count runs without asking
    monkeypatch.setattr(plan, "CONFIRM_SECONDS", 1e9)
    code, _, _ = run_cli(capsys, *SMALL, "--out", tmp_path / "o2", "--quiet")
    assert code == 0
    # at most CONFIRM_RUNS runs left to do: no question either
    monkeypatch.setattr(plan, "CONFIRM_SECONDS", 0.0)
    code, _, _ = run_cli(capsys, *SMALL, "--out", out, "--quiet")
    assert code == 0


def test_a_large_sweep_asks_on_a_terminal(tmp_path, capsys, monkeypatch):
    from bibench import plan

    class Tty:
        def isatty(self):
            return True

    monkeypatch.setattr(plan, "CONFIRM_RUNS", 3)
    monkeypatch.setattr(plan, "CONFIRM_SECONDS", 0.0)
    monkeypatch.setattr("sys.stdin", Tty())
    answers = iter(["n", "y"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, *SMALL, "--out", out, "--quiet")
    assert code == 2 and "not started" in err and not list(out.glob("_runs/*.parquet"))
    code, _, _ = run_cli(capsys, *SMALL, "--out", out, "--quiet")
    assert code == 0 and len(list(out.glob("_runs/*.parquet"))) == 4


def test_many_diverged_runs_print_a_compact_summary_and_exit_0(tmp_path, capsys):
    out = tmp_path / "o"
    args = ["run", *QUAD, "--algorithms", "aid_cg[lr_x=50.0],stocbio", "--seeds", 8,
            "--budget", 2000, "--out", out]  # fmt: skip
    code, _, err = run_cli(capsys, *args)
    assert code == 0  # divergence is a result
    lines = [ln.removeprefix("bibench: ") for ln in err.splitlines() if ln.startswith("bibench:")]
    assert lines[0] == "8 runs diverged and 0 failed:"
    assert lines[1] == "  quadratic × aid_cg: 8 diverged"
    runs = [ln for ln in lines if ln.startswith("run ")]
    assert len(runs) == 5 and all("diverged" in ln for ln in runs)  # the first 5 of 8
    assert lines[-1] == f"... 3 more; all of them: bibench status {out} --errors"
    status = pd.read_parquet(out).groupby("run_id")["status"].last()
    assert (status == "diverged").sum() == 8 and (status == "done").sum() == 8
    # made fatal on request (nothing left to run: the stored outcome does not count)
    code, _, _ = run_cli(capsys, *args[:-2], "--out", tmp_path / "o2", "--fail-on-diverge")
    assert code == 1
