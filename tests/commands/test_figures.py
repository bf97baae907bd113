"""``bibench figures``: reduced runs of the paper configs, checked against what the papers'
constructions guarantee."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from bibench.cli import main
from bibench.registry import ALGORITHMS, REPO_ROOT, discover

PAPERS = ("unibio", "bgs", "hgms", "chen")


@pytest.mark.parametrize("paper", PAPERS)
def test_shipped_configs_are_run_configs(paper):
    """Each paper config is a plain run config (``bibench run --config`` accepts it)."""
    from bibench.config import load_yaml

    data = load_yaml(REPO_ROOT / "configs" / "papers" / f"{paper}.yml")
    assert data["out"] == f"results/figures/{paper}"
    assert data["problems"] and data["algorithms"] and data["seeds"] >= 5


def test_chen_hard_instance_keeps_the_hypergradient_at_one(tmp_path, capsys):
    """A reduced chen config: zero-respecting methods have |Phi'(x)| = 1 exactly while they
    have made fewer than q/2 lower-level queries (Chen, Xu, Zhang, hardness theorem)."""
    cfg = tmp_path / "chen.yml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "problems": {"cxz_hard": {"T": 2, "K": 10}},
                "algorithms": {"aid_cg": {}, "itd": {"n_unroll": 10}},
                "seeds": 2,
                "budget": 600,
                "out": "ignored",
            }
        )
    )
    code = main(
        ["figures", "--paper", "chen", "--config", str(cfg), "--out", str(tmp_path), "--quiet"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Chen, Xu, Zhang (COLT 2024) hardness theorem" in out
    png = tmp_path / "chen" / "_figures" / "chen_hard_instance.png"
    assert str(png) in out and png.stat().st_size > 1000
    df = pd.read_parquet(tmp_path / "chen")  # the figures folder does not disturb the store
    q = 2 * 2 * 10
    queries = df["n_grad_y_g"] + df["n_hvp_yy_g"]
    early = df[queries < q / 2]
    assert len(early) > 5 and (early["hypergrad_norm"] == 1.0).all()
    assert (df["active_depth"] <= queries).all()  # one new coordinate per query at most


def registered(name: str) -> bool:
    discover()
    return name in ALGORITHMS.entries


@pytest.mark.skipif(not registered("unibio"), reason="unibio not registered yet")
def test_unibio_quick_prints_the_slope_table(tmp_path, capsys):
    code = main(["figures", "--paper", "unibio", "--quick", "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "UniBiO (ICLR 2026) Fig. 1(a)-(d)" in out and "Fig. 5(a)-(b)" in out
    table = pd.read_csv(tmp_path / "unibio-quick" / "_figures" / "unibio_slopes.csv")
    assert sorted(table["p"].unique()) == [2, 8]  # the quick variant: p = 2 and 8
    assert (table["theory b = 5p-6"] == 5 * table["p"] - 6).all()
    assert "Fitted slope s of log10(running mean of ||grad Phi(x_t)||)" in out
