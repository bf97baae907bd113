"""``bibench claims --quick`` end to end (the CI smoke run of every paper's claims)."""

from __future__ import annotations

import pandas as pd

from bibench.cli import main
from bibench.papers import PAPERS

VERDICTS = ("reproduced", "reproduced only when", "not reproduced", "not testable here")


def test_claims_quick_runs_every_paper_and_prints_the_table(tmp_path, capsys):
    code = main(["claims", "--quick", "--quiet", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    table = pd.read_csv(tmp_path / "claims-quick.csv")
    assert list(table["paper"].unique()) == [m.PAPER for m in PAPERS.values()]
    # 3 UniBiO, 2 BGS-Opt, 3 HG-MS + 3 reweighting (2 oracles, weights), 2 Chen-Xu-Zhang
    assert len(table) == 13
    assert all(v.startswith(VERDICTS) for v in table["verdict"])
    ordering = table["claim"].str.startswith("Larger p converges more slowly")
    assert "one shared tuned step eta =" in table[ordering]["evidence (95% CI over seeds)"].iloc[0]
    assert "| paper | claim | experiment |" in out
    assert (tmp_path / "claims-quick.md").read_text().startswith("| paper |")
    # the shared step came from `bibench tune`'s protocol: its best-parameter file exists
    assert list((tmp_path / "unibio-quick" / "tune_unibio").glob("best_*.yml"))
