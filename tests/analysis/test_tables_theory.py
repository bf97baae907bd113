"""Table cells and writers; the declared theoretical exponents."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from bibench.analysis.tables import cell, fmt, quantile_frame, tex, to_latex, to_markdown, wide
from bibench.analysis.theory import regime, theoretical_exponent


def test_fmt_keeps_three_significant_digits():
    assert fmt(1416.0) == "1416"
    assert fmt(0.0123456) == "0.0123"
    assert fmt(1.5e-8) == "1.5e-8"
    assert fmt(2.0e6) == "2e6"
    assert fmt(math.inf) == "∞" and fmt(math.nan) == "–"


def test_quantile_frame_and_cells_with_censored_values():
    df = pd.DataFrame({"k": ["a"] * 5 + ["b"] * 2, "v": [1.0, 2.0, 3.0, 4.0, np.inf, 7.0, 9.0]})
    q = quantile_frame(df, ["k"], "v").set_index("k")
    assert q.loc["a", "median"] == 3.0 and q.loc["a", "n_inf"] == 1 and q.loc["a", "n"] == 5
    assert q.loc["a", "q20"] == 1.8 and math.isinf(q.loc["a", "q80"])
    assert q.loc["b", "median"] == 8.0
    assert cell(3.0, 1.8, math.inf, 5, 1) == "3 [1.8, ∞] (1/5 ∞)"


def test_wide_markdown_and_latex():
    num = pd.DataFrame(
        {
            "s": ["x", "x"],
            "c": ["e=0.1", "e=0.01"],
            "median": [1.0, 2.0],
            "q20": [0.5, 1.5],
            "q80": [1.5, 2.5],
            "n": [3, 3],
            "n_inf": [0, 0],
        }
    )
    disp = wide(num, ["s"], "c", order=["e=0.1", "e=0.01"])
    assert list(disp.columns) == ["s", "e=0.1", "e=0.01"]
    md = to_markdown(disp)
    assert md.splitlines()[2] == "| x | 1 [0.5, 1.5] | 2 [1.5, 2.5] |"
    tex = to_latex(pd.DataFrame({"a_b": ["∞ × 2"]}), "N(ε)")
    assert r"a\_b" in tex and r"\ensuremath{\infty} \ensuremath{\times} 2" in tex
    assert r"\caption{N(\ensuremath{\varepsilon})}" in tex


NASTY = pd.DataFrame(
    {
        "algorithm_setting": ["aid_cg[lr_x=0.3]", "stocbio"],
        "ε / m(x0) = 1e-3": ["5 [1, ∞] (1/5 ∞)", "‖∇Φ(x)‖ ≤ ε, −2 – 3"],
        "50% & #1": ["{x} ~ \\ $", "a^b ± 1 · √2"],
    }
)
CAPTION = "fitted b of N(ε) ∝ ε^(-b); (1/(4-1)) ∫_1^4 ρ(τ) dτ; ∞ = diverged"


@pytest.mark.parametrize(
    ("text", "latex"),
    [
        ("a_b & 50%", r"a\_b \& 50\%"),
        ("#{x}~$", r"\#\{x\}\textasciitilde{}\$"),
        ("\\", r"\textbackslash{}"),
        ("a^b", r"a\textasciicircum{}b"),
        ("ε ≤ 1e-3", r"\ensuremath{\varepsilon} \ensuremath{\le} 1e-3"),
        ("N ∝ ε^(-b)", r"N \ensuremath{\propto} \ensuremath{\varepsilon}\ensuremath{^{-b}}"),
        ("∫_1^4 ρ", r"\ensuremath{\int_{1}^{4}} \ensuremath{\rho}"),
        ("‖∇Φ‖", r"\ensuremath{\|}\ensuremath{\nabla}\ensuremath{\Phi}\ensuremath{\|}"),
        ("−2 – 3", "-2 -- 3"),
    ],
)
def test_tex_escapes_specials_and_maps_unicode_math(text, latex):
    assert tex(text) == latex


def test_latex_table_is_booktabs_through_the_styler():
    out = to_latex(NASTY, CAPTION)
    lines = out.splitlines()
    assert lines[0] == r"\begin{table}[t]" and lines[-1] == r"\end{table}"
    assert r"\begin{tabular}{lll}" in out and r"\toprule" in out and r"\bottomrule" in out
    assert r"aid\_cg[lr\_x=0.3] & 5 [1, \ensuremath{\infty}] (1/5 \ensuremath{\infty})" in out
    assert "≤" not in out and "∝" not in out and "∞" not in out and r"\^{}" not in out
    assert len([ln for ln in lines if ln.endswith(r"\\")]) == 3  # header + 2 rows


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no LaTeX engine installed")
def test_latex_tables_compile(tmp_path):
    body = to_latex(NASTY, CAPTION) + to_latex(pd.DataFrame({"a": [1.5, math.inf]}), "ε")
    doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
    (tmp_path / "t.tex").write_text(doc + body + "\\end{document}\n", encoding="utf-8")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    log = (tmp_path / "t.log").read_text(errors="replace")
    assert "Missing character" not in log and "Undefined control sequence" not in log
    assert (tmp_path / "t.pdf").read_bytes()[:4] == b"%PDF"


def test_theoretical_exponents():
    assert regime({"noise_std": 0.0, "batch_size": 0}) == "deterministic"
    assert regime({"noise_std": 0.1}) == "stochastic"
    assert regime({"batch_size": 8}) == "stochastic"
    # UniBiO: O~(eps^(-5p+6)); p = 2 recovers the eps^-4 of stochastic strongly convex methods
    for p in (2, 4, 6, 8):
        assert theoretical_exponent("unibio", "unibio_synthetic", {"p": p})[0] == 5 * p - 6
    assert theoretical_exponent("stocbio", "pl_graph", {"noise_std": 1.0})[0] == 4
    assert theoretical_exponent("f2ba", "pl_graph", {"noise_std": 0.0})[0] == 2
    # strongly convex Phi: deterministic methods converge linearly
    assert theoretical_exponent("aid_cg", "quadratic", {"noise_std": 0.0})[0] == 0
    assert math.isnan(theoretical_exponent("hg_ms", "hat", {})[0])
    assert math.isnan(theoretical_exponent("aid_cg", "hat", {"noise_std": 1.0})[0])
