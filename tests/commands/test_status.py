"""``bibench status OUT``: counts per (problem, algorithm) derived by hand."""

from __future__ import annotations

import pandas as pd

from bibench.cli import main
from bibench.status import status_table

PLUGIN = '''
"""Alternating GD (a test plugin): ``fail`` raises in the first step. Version {version}."""
import dataclasses
from bibench import Algorithm, HyperParams, State, register_algorithm


@dataclasses.dataclass(frozen=True)
class Hyper(HyperParams):
    lr_x: float = 1e-4  # small: plain GD on f ignores the implicit term
    lr_y: float = 1.0
    fail: bool = False


@register_algorithm("status_gd")
class StatusGD(Algorithm):
    """Alternating GD on f and g (a test plugin)."""

    Hyper = Hyper

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        return State(x0, y0)

    def step(self, state):
        if self.hp.fail:
            raise RuntimeError("planted failure")
        y = state.y - self.hp.lr_y * self.oracle.grad_y_g(state.x, state.y)
        x = state.x - self.hp.lr_x * self.oracle.grad_x_f(state.x, y)
        return State(x, y)
'''


def test_status_counts_done_diverged_failed_stale_pending(tmp_path, capsys):
    plugin, out = tmp_path / "status_gd.py", tmp_path / "out"
    plugin.write_text(PLUGIN.format(version=1))
    common = ["--budget", "200", "--out", str(out), "--plugin", str(plugin), "--quiet"]
    # 1: quadratic x status_gd: lr_y 1.0 (done) and 50.0 (diverges), fail (fails); 2 seeds
    algorithms = "status_gd[lr_y=[1.0,50.0]],status_gd[fail=true]"
    code = main(["run", "--problems", "quadratic", "--algorithms", algorithms,
                 "--seeds", "2", *common])  # fmt: skip
    assert code == 1  # failed runs
    # 2: the plugin changes; the two lr_y=1.0 runs are redone and the old two become stale
    plugin.write_text(PLUGIN.format(version=2))
    assert main(["run", "--problems", "quadratic", "--algorithms", "status_gd",
                 "--seeds", "2", *common]) == 0  # fmt: skip
    # 3: hat x aid_cg, 4 seeds, shard 1 of 2: 2 run, the other 2 stay pending in the plan
    assert main(["run", "--problems", "hat", "--algorithms", "aid_cg", "--seeds", "4",
                 "--shard", "1/2", *common]) == 0  # fmt: skip
    capsys.readouterr()

    table = status_table(out).set_index(["problem", "algorithm"])
    counts = ["done", "diverged", "failed", "stale", "pending"]
    assert table.loc[("quadratic", "status_gd"), counts].tolist() == [2, 2, 2, 2, 0]
    assert table.loc[("hat", "aid_cg"), counts].tolist() == [2, 0, 0, 0, 2]
    # the wall time of hat x aid_cg: its one batch of 2 runs, each carrying the batch clock
    df = pd.read_parquet(out)
    hat = df[df["problem"] == "hat"].groupby("run_id").tail(1)
    assert table.loc[("hat", "aid_cg"), "wall_s"] == hat["wall_time"].sum() / 2
    assert hat["wall_time"].nunique() == 1

    assert main(["status", str(out), "--errors"]) == 0
    text = capsys.readouterr().out
    assert "total: 4 done, 2 diverged, 2 failed, 2 stale, 2 pending" in text
    listed = [ln for ln in text.splitlines() if ln.startswith("run ")]
    assert len(listed) == 4 and sum("planted failure" in ln for ln in listed) == 2


def test_status_without_a_plan_says_pending_is_unknown(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--problems", "quadratic", "--algorithms", "aid_cg", "--seeds", "1",
                 "--budget", "100", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    (out / "_plan.json").unlink()
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "total: 1 done, 0 diverged, 0 failed, 0 stale, ? pending" in text
    assert "pending unknown" in text


def test_status_of_a_folder_without_results_is_a_user_error(tmp_path, capsys):
    assert main(["status", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no results in" in err[0]
