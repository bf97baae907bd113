r"""Tables: cells ``median [q20, q80]`` over seeds, written as Markdown, LaTeX and CSV.

Each table exists twice: a *numeric* long frame (one row per setting and column key, with
``median``, ``q20``, ``q80``, ``n`` and ``n_inf``) that goes to CSV for further analysis,
and a *display* wide frame of formatted cells that goes to Markdown and LaTeX. ``inf`` is
a censored (target never reached) or diverged value and prints as ∞; a cell whose median
is censored says how many of its seeds were.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bibench.analysis.hitting import quantiles

__all__ = [
    "cell",
    "fmt",
    "quantile_frame",
    "tex",
    "to_latex",
    "to_markdown",
    "wide",
    "write_table",
]


def fmt(v: float, digits: int = 3) -> str:
    """A number in ``digits`` significant digits; ∞ for ``inf``, – for NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    v = float(v)
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if 10 ** (digits - 1) <= abs(v) < 1e5:
        return f"{v:.0f}"
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        return f"{v:.{digits}g}"
    mant, exp = f"{v:.{digits - 1}e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def cell(median: float, q20: float, q80: float, n: int = 0, n_inf: int = 0) -> str:
    """``median [q20, q80]``, with ``(k/n censored)`` when infinite values are present."""
    text = f"{fmt(median)} [{fmt(q20)}, {fmt(q80)}]"
    return f"{text} ({n_inf}/{n} ∞)" if n_inf else text


def quantile_frame(df: pd.DataFrame, keys: Sequence[str], value: str) -> pd.DataFrame:
    """Per group of ``keys``: ``median``, ``q20``, ``q80`` of ``value`` (inf-aware), ``n``
    values and ``n_inf`` infinite ones."""
    rows = []
    for key, part in df.groupby(list(keys), sort=True):
        v = part[value].to_numpy(dtype=float)
        q20, med, q80 = quantiles(v, (0.2, 0.5, 0.8))
        key = key if isinstance(key, tuple) else (key,)
        rows.append(
            {
                **dict(zip(keys, key)),
                "median": med,
                "q20": q20,
                "q80": q80,
                "n": int((~np.isnan(v)).sum()),
                "n_inf": int(np.isinf(v).sum()),
            }
        )
    return pd.DataFrame(rows)


def wide(
    numeric: pd.DataFrame, rows: Sequence[str], column: str, order: Sequence[str] | None = None
) -> pd.DataFrame:
    """Display frame: one row per ``rows`` key, one column per value of ``column`` (in
    ``order`` if given), cells ``median [q20, q80]``."""
    text = numeric.assign(
        cell=[cell(r.median, r.q20, r.q80, r.n, r.n_inf) for r in numeric.itertuples()]
    )
    out = text.pivot(index=list(rows), columns=column, values="cell")
    if order is not None:
        out = out[[c for c in order if c in out.columns]]
    out.columns = [str(c) for c in out.columns]
    return out.reset_index().fillna("–")


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table."""
    head = [str(c) for c in df.columns]
    body = [[str(v).replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


# LaTeX's ten special characters, escaped as text
_TEXT = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
# Unicode math in cells and captions, as LaTeX math (\ensuremath, so that two neighbours
# never make the display-math token $$)
_MATH = {
    "∞": r"\infty",
    "≤": r"\le",
    "≥": r"\ge",
    "∝": r"\propto",
    "×": r"\times",
    "±": r"\pm",
    "·": r"\cdot",
    "√": r"\surd",
    "∫": r"\int",
    "∇": r"\nabla",
    "‖": r"\|",
    "ε": r"\varepsilon",
    "Φ": r"\Phi",
    "ρ": r"\rho",
    "τ": r"\tau",
    "η": r"\eta",
    "σ": r"\sigma",
    "−": "-",
}
_PLAIN = {"–": "--", "—": "---", "…": r"\dots{}", "°": r"\textdegree{}"}
# the scripts our captions write: "ε^(-b)" and "∫_1^4"
_SCRIPT = re.compile(r"\^\(([^()]*)\)|([∫])_(\w+)\^(\w+)")


def _math(text: str) -> str:
    return "".join(_MATH.get(ch, _TEXT.get(ch, ch)) for ch in text)


def _chars(text: str) -> str:
    out = []
    for ch in text:
        if ch in _MATH:
            out.append(rf"\ensuremath{{{_MATH[ch]}}}" if ch != "−" else "-")
        else:
            out.append(_TEXT.get(ch) or _PLAIN.get(ch) or ch)
    return "".join(out)


def tex(text: object) -> str:
    """``text`` as LaTeX: its special characters escaped, its Unicode math (∞, ≤, ∝, ε,
    ...) as math, and the scripts ``a^(x)`` / ``∫_a^b`` as super- and subscripts."""
    text, out, pos = str(text), [], 0
    for m in _SCRIPT.finditer(text):
        out.append(_chars(text[pos : m.start()]))
        if m.group(1) is not None:
            out.append(rf"\ensuremath{{^{{{_math(m.group(1))}}}}}")
        else:
            out.append(rf"\ensuremath{{{_MATH[m.group(2)]}_{{{m.group(3)}}}^{{{m.group(4)}}}}}")
        pos = m.end()
    out.append(_chars(text[pos:]))
    return "".join(out)


def to_latex(df: pd.DataFrame, caption: str = "") -> str:
    """A booktabs ``table`` environment through :meth:`pandas.io.formats.style.Styler.to_latex`
    (needs ``\\usepackage{booktabs}``); every cell, header and the caption go through
    :func:`tex`."""
    styler = df.style.hide(axis="index").format(tex).format_index(tex, axis=1)
    return styler.to_latex(
        column_format="l" * len(df.columns),
        position="t",
        position_float="centering",
        hrules=True,
        caption=tex(caption) if caption else None,
        environment="table",
    )


def write_table(
    out: Path, stem: str, display: pd.DataFrame, numeric: pd.DataFrame, caption: str
) -> list[Path]:
    """Write ``stem.md`` and ``stem.tex`` (display) and ``stem.csv`` (numeric)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.md", out / f"{stem}.tex", out / f"{stem}.csv"]
    paths[0].write_text(f"{caption}\n\n{to_markdown(display)}")
    paths[1].write_text(to_latex(display, caption))
    numeric.to_csv(paths[2], index=False)
    return paths
