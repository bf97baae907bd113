"""``bibench claims --quick`` end to end (the CI smoke run of every paper's claims)."""

from __future__ import annotations

import re

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
    # the report's section re-evaluates the same claims from the stored runs alone
    report = tmp_path / "report"
    code = main(["report", "--results", str(tmp_path / "chen-quick" / "chen"), "--claims",
                 str(tmp_path), "--out", str(report), "--n-boot", "20"])  # fmt: skip
    assert code == 0
    text = (report / "report.md").read_text()
    assert "## Seed-paper claims" in text
    section = (report / "seed_claims.md").read_text()
    rows = [re.split(r"(?<!\\)\|", line) for line in section.splitlines()[2:]
            if line.startswith("| ")]  # fmt: skip
    assert [r[-2].strip().replace("\\|", "|") for r in rows] == list(table["verdict"])
    assert "from the --quick runs" in section
    # a folder with no stored runs: the papers are named as absent, nothing is run
    empty = tmp_path / "none"
    empty.mkdir()
    assert main(["report", "--results", str(tmp_path / "chen-quick" / "chen"), "--claims",
                 str(empty), "--out", str(tmp_path / "r2"), "--n-boot", "20"]) == 0  # fmt: skip
    assert "unibio: no stored results in" in (tmp_path / "r2" / "seed_claims.md").read_text()
    assert not list(empty.iterdir())
