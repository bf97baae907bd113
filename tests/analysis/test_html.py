"""The HTML report: its data equal the medians by hand, it is self-contained, and a real
headless Chromium draws the right number of curves and reacts to a toggle."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from bibench.analysis.html import curve_data, page, write_html
from bibench.analysis.runs import prepare

ALGS = ("aid_cg", "soba", "stocbio")
CALLS = np.array([10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0])


def table() -> pd.DataFrame:
    """Two problems; on each, three algorithms × two seeds with exact power laws
    ``m = c_s * calls^(-k_alg)`` (log–log interpolation is then exact)."""
    rows = []
    for problem in ("quadratic", "hat"):
        for k, alg in enumerate(ALGS, start=1):
            for seed, c in enumerate((1.0, 3.0)):
                for step, n in enumerate(CALLS):
                    rows.append({
                        "run_id": f"{problem}-{alg}-{seed}", "problem": problem,
                        "algorithm": alg, "seed": seed,
                        "label": f"{problem} × {alg} seed {seed}", "status": "done",
                        "oracle_calls": n, "step": step, "samples": 2 * n,
                        "hypergrad_norm": c * n ** (-0.5 * k),
                    })  # fmt: skip
    return pd.DataFrame(rows)


def test_curve_data_is_the_median_over_seeds():
    data = curve_data(prepare(table()), ["hypergrad_norm", "phi_gap"], ["oracle_calls"], 20)
    assert list(data) == ["hypergrad_norm"]  # phi_gap is not a column: left out
    p = data["hypergrad_norm"]["oracle_calls"]["quadratic"]
    assert sorted(p["series"]) == list(ALGS)
    x = np.array(p["x"])
    assert x[0] == pytest.approx(10.0) and x[-1] == pytest.approx(1000.0) and len(x) == 20
    med = np.array(p["series"]["soba"]["med"])  # k = 2: median of 1 and 3 is 2
    np.testing.assert_allclose(med, 2.0 * x ** (-1.0), rtol=1e-9)
    lo = np.array(p["series"]["soba"]["lo"])  # 20% quantile of {1, 3}: 1.4
    np.testing.assert_allclose(lo, 1.4 * x ** (-1.0), rtol=1e-9)


def test_page_is_self_contained_and_escapes_cells():
    tables = [("lead <b>", pd.DataFrame({"a": ["</script><script>alert(1)"], "b": [1.5]}))]
    text = page(tables, curve_data(prepare(table()), ["hypergrad_norm"], ["oracle_calls"]))
    assert not re.search(r"(src|href)\s*=", text)
    assert "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        "'http://www.w3.org/2000/svg'", ""
    )
    assert "&lt;/script&gt;" in text and "lead &lt;b&gt;" in text
    assert text.count("<script") == 2  # the data and the program, nothing injected
    blob = text.split('id="bibench-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(blob)["curves"]["hypergrad_norm"]["oracle_calls"]["hat"]["series"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dump(url: str) -> str:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def plot_attrs(dom: str) -> dict[str, str]:
    tag = re.search(r'<svg id="plot"[^>]*>', dom).group(0)
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', tag))


@pytest.fixture(scope="module")
def html_file(tmp_path_factory):
    tables = [("leaderboard", pd.DataFrame({"algorithm": list(ALGS), "score": [0.9, 0.5, 0.1]}))]
    data = curve_data(prepare(table()), ["hypergrad_norm"], ["oracle_calls", "samples"])
    return write_html(tmp_path_factory.mktemp("html") / "report.html", tables, data)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_chromium_draws_one_curve_per_algorithm(html_file):
    dom = dump(html_file.as_uri())
    attrs = plot_attrs(dom)
    assert attrs["series"] == "3" and attrs["shown"] == "aid_cg,soba,stocbio"
    assert dom.count('class="series"') == 3
    assert len(re.findall(r"<polyline", dom)) == 3  # every median is finite: one line each
    assert "<td>leaderboard</td>" not in dom and "<h2>leaderboard</h2>" in dom


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_chromium_fragment_hides_and_toggle_changes_the_curves(html_file):
    attrs = plot_attrs(dump(html_file.as_uri() + "#problem=quadratic&x=samples&hide=soba"))
    assert attrs["series"] == "2" and attrs["shown"] == "aid_cg,stocbio"
    attrs = plot_attrs(dump(html_file.as_uri() + "#selftest"))
    # the self-test unticks the first box (aid_cg): 3 curves before, 2 after
    assert attrs["series-before"] == "3" and attrs["series-after"] == "2"
    assert attrs["shown"] == "soba,stocbio"
