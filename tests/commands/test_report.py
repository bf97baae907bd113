"""``bibench report`` on a small real run: every output exists and the tables equal what the
stored rows give when computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bibench.analysis.report import CURVE_METRICS
from bibench.cli import main

EPS = (0.3, 0.1, 0.01)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    code = main(
        [
            "run",
            "--problems",
            "quadratic",
            "--algorithms",
            "aid_cg,stocbio[lr_x=0.05]",
            "--seeds",
            "3",
            "--budget",
            "3000",
            "--out",
            str(results),
            "--quiet",
        ]
    )
    assert code == 0
    return results


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    code = main(
        [
            "report",
            "--results",
            str(results),
            "--out",
            str(out),
            "--n-boot",
            "100",
            "--eps",
            ",".join(map(str, EPS)),
            "--fit-range",
            "1e-1,1e-4",
        ]
    )
    assert code == 0
    return pd.read_parquet(results), out


def test_every_figure_and_table_is_written(report):
    _, out = report
    # one curve figure per family and regime, against oracle calls
    figures = [f"curves/{m}_vs_oracle_calls_quadratic_deterministic" for m in CURVE_METRICS]
    figures += ["complexity", "ecdf", "performance_profile"]
    figures += ["leaderboard_profile_deterministic"]
    for stem in figures:
        for ext in ("png", "pdf"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000, f"{stem}.{ext}"
    for stem in ("n_eps", "final", "exponents", "art", "profile_score"):
        for ext in ("md", "tex", "csv"):
            assert (out / f"{stem}.{ext}").is_file(), f"{stem}.{ext}"
    index = (out / "report.md").read_text()
    assert "![" in index and "| quadratic | aid_cg |" in index
    # the Markdown opens with the leaderboard, before any other table or figure
    assert (
        index.index("## Leaderboard") < index.index("### deterministic") < index.index("## Details")
    )


def by_hand_n_eps(df: pd.DataFrame) -> dict[tuple[str, float], float]:
    """Median over seeds of the first oracle_calls with ||grad Phi|| <= eps * m0, m0 the
    median step-0 value (inf when not reached)."""
    m0 = np.median(df[df["step"] == 0]["hypergrad_norm"])
    out = {}
    for alg, runs in df.groupby("algorithm"):
        for e in EPS:
            ns = []
            for _, run in runs.groupby("run_id"):
                run = run.sort_values("oracle_calls")
                hit = run[run["hypergrad_norm"] <= e * m0]
                ns.append(float(hit["oracle_calls"].iloc[0]) if len(hit) else np.inf)
            out[(alg, e)] = float(np.median(ns))
    return out


def test_n_eps_table_equals_the_stored_rows_by_hand(report):
    df, out = report
    table = pd.read_csv(out / "n_eps.csv")
    expected = by_hand_n_eps(df)
    # numeric targets, sorted numerically (largest first) within each setting
    m0 = np.median(df[df["step"] == 0]["hypergrad_norm"])
    for _, part in table.groupby(["problem_setting", "algorithm_setting"]):
        assert list(part["eps_given"]) == list(EPS)
        np.testing.assert_allclose(part["eps"], np.array(EPS) * m0, rtol=1e-12)
    assert len(table) == len(expected)
    for row in table.itertuples():
        alg = row.algorithm_setting.split("[")[0]
        e = float(row.column.split("= ")[1])
        assert row.median == expected[(alg, e)], (alg, e)
    # the control: AID-CG reaches every target; StocBiO's Neumann bias stops it early
    assert np.isfinite(table[table["algorithm_setting"] == "aid_cg"]["median"]).all()


def test_final_and_art_tables_by_hand(report):
    df, out = report
    last = df.sort_values("oracle_calls").groupby("run_id").tail(1)
    final = pd.read_csv(out / "final.csv").set_index("algorithm_setting")
    aid = last[last["algorithm"] == "aid_cg"]["hypergrad_norm"]
    assert final.loc["aid_cg", "median"] == pytest.approx(np.median(aid), rel=1e-12)
    # aRT when every seed succeeds is the mean of N(eps)
    art = pd.read_csv(out / "art.csv")
    row = art[(art["algorithm_setting"] == "aid_cg") & (art["target"] == 3)].iloc[0]
    m0 = np.median(df[df["step"] == 0]["hypergrad_norm"])
    ns = []
    for _, run in df[df["algorithm"] == "aid_cg"].groupby("run_id"):
        hit = run[run["hypergrad_norm"] <= row["eps"]]
        ns.append(hit["oracle_calls"].min())
    assert row["eps"] == pytest.approx(m0 * 10**-1)  # target 3 of 4 per decade: 1e-1
    assert row["aRT"] == pytest.approx(np.mean(ns)) and row["success"] == 1.0


def test_exponent_table_states_range_and_theory(report):
    _, out = report
    expo = pd.read_csv(out / "exponents.csv").set_index("algorithm_setting")
    assert expo.loc["aid_cg", "theory"] == 0  # deterministic, strongly convex Phi: linear
    assert expo.loc["aid_cg", "ci_low"] <= expo.loc["aid_cg", "exponent"]
    assert expo.loc["aid_cg", "exponent"] <= expo.loc["aid_cg", "ci_high"]
    assert "1e-4" in (out / "exponents.md").read_text()


def test_missing_results_is_one_line(tmp_path, capsys):
    code = main(["report", "--results", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no results table" in err[0]


@pytest.fixture(scope="module")
def two_regimes(tmp_path_factory):
    """Both regimes of one family, and a pair that diverges in each (a step far too
    large): the leaderboard keeps it, as failing."""
    root = tmp_path_factory.mktemp("regimes")
    (root / "c.yml").write_text(
        f"""
seeds: 5
budget: 1500
out: {root / "res"}
experiments:
  - problems: {{quadratic: {{noise_std: 0.0}}}}
    algorithms: {{aid_cg: {{}}, soba: {{lr_x: 30.0}}}}
  - problems: {{quadratic: {{batch_size: 8}}}}
    algorithms: {{aid_cg: {{}}, soba: {{lr_x: 30.0}}}}
"""
    )
    main(["run", "--config", str(root / "c.yml"), "--quiet"])
    out = root / "rep"
    assert (
        main(["report", "--results", str(root / "res"), "--out", str(out), "--n-boot", "50"]) == 0
    )
    return pd.read_parquet(root / "res"), out


def test_leaderboard_covers_both_regimes_and_keeps_failures(two_regimes):
    df, out = two_regimes
    cells = pd.read_csv(out / "leaderboard.csv")
    assert sorted(zip(cells["regime"], cells["algorithm"])) == [
        ("deterministic", "aid_cg"), ("deterministic", "soba"),
        ("stochastic", "aid_cg"), ("stochastic", "soba"),
    ]  # fmt: skip
    soba = cells[cells["algorithm"] == "soba"]
    assert soba["failed"].all() and (soba["reason"] == "diverged").all()
    assert (soba["success"] == 0).all()
    # by hand: aid_cg's median over its 5 seeds of the first oracle_calls with
    # ||grad Phi|| <= 1e-2 m0 (m0: median step-0 value of the problem setting)
    for regime, rows in df.groupby(df["prob_batch_size"] > 0):
        m0 = rows[rows["step"] == 0]["hypergrad_norm"].median()
        aid = rows[rows["algorithm"] == "aid_cg"]
        hit = aid[aid["hypergrad_norm"] <= 1e-2 * m0].groupby("run_id")["oracle_calls"].min()
        ns = hit.reindex(aid["run_id"].unique()).fillna(np.inf)
        name = "stochastic" if regime else "deterministic"
        cell = cells[(cells["regime"] == name) & (cells["algorithm"] == "aid_cg")].iloc[0]
        assert cell["median"] == np.median(ns)
        assert cell["success"] == np.isfinite(ns).mean()
    text = (out / "report.md").read_text()
    assert "### stochastic" in text and "✗ diverged (0%)" in text
    # a failure counts as unsolved in the profile score
    assert "| soba | ✗ diverged (0%) | 0 |" in text


def test_report_over_two_folders_filters_and_keeps_each_run_once(results, tmp_path, capsys):
    """A new folder (soba, plus aid_cg seeds 0-1 that the first folder already holds) is
    compared with the stored baselines: both algorithms appear, the shared runs once."""
    new = tmp_path / "new"
    assert main(["run", "--problems", "quadratic", "--algorithms", "aid_cg,soba", "--seeds", "2",
                 "--budget", "3000", "--out", str(new), "--quiet"]) == 0  # fmt: skip
    out = tmp_path / "rep"
    code = main(["report", "--results", str(results), "--results", str(new), "--algorithms",
                 "aid_cg,soba", "--out", str(out), "--n-boot", "0", "--eps", "0.1",
                 "--html"])  # fmt: skip
    assert code == 0
    table = pd.read_csv(out / "final.csv").set_index("algorithm_setting")
    assert sorted(table.index) == ["aid_cg", "soba"]  # stocbio filtered out
    assert table.loc["aid_cg", "n"] == 3 and table.loc["soba", "n"] == 2
    assert "report of 5 runs" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert '"soba": {"lo"' in page and '"stocbio"' not in page
    code = main(["report", "--results", str(results), "--problems", "quadratc"])
    err = capsys.readouterr().err
    assert code == 2 and "no runs of problem 'quadratc'" in err
