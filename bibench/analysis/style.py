r"""One look per algorithm, the same in every figure: colour, line style and marker.

Colours are the Okabe–Ito palette (Okabe & Ito, "Color Universal Design", 2008; the
palette recommended by Wong, Nature Methods 8:441, 2011), told apart under the common
colour-vision deficiencies; its yellow is left out (it vanishes on white). Seven colours do
not separate twelve algorithms, so each algorithm also has its own (line style, marker)
pair, and algorithms that share a colour never share a line style: every shipped algorithm
differs from every other in at least two of the three channels, and in print in black and
white still in line style or marker.

Plugins get a look from the same channels chosen by a stable hash of their name (CRC-32,
not Python's salted ``hash``), so a plugin keeps its look across runs, machines and
figures. :func:`paper_rc` gives sizes that read at a single column's width (3.3 in).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable

__all__ = ["COLUMN_WIDTH", "OKABE_ITO", "Style", "paper_rc", "style", "styles"]

COLUMN_WIDTH = 3.3  # inches: one column of a two-column paper
OKABE_ITO = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "bluish green": "#009E73",
    "vermillion": "#D55E00",
    "sky blue": "#56B4E9",
    "reddish purple": "#CC79A7",
    "black": "#000000",
}
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")


@dataclasses.dataclass(frozen=True)
class Style:
    """Matplotlib keywords of one algorithm's line."""

    color: str
    linestyle: str
    marker: str

    def kw(self) -> dict[str, str]:
        return {"color": self.color, "linestyle": self.linestyle, "marker": self.marker}


_C = OKABE_ITO
# related methods (soba/ma_soba, unibio/unibio_faithful, stocbio/ttsa, aid_cg/hg_ms) differ
# in colour; equal colours differ in line style
FIXED = {
    "aid_cg": Style(_C["blue"], "-", "o"),
    "bgs_opt": Style(_C["orange"], "-", "s"),
    "bome": Style(_C["bluish green"], "-", "^"),
    "f2ba": Style(_C["vermillion"], "-", "D"),
    "hg_ms": Style(_C["sky blue"], "-", "v"),
    "itd": Style(_C["reddish purple"], "-", "P"),
    "ma_soba": Style(_C["black"], "-", "X"),
    "soba": Style(_C["blue"], "--", "*"),
    "stocbio": Style(_C["orange"], "--", "h"),
    "ttsa": Style(_C["bluish green"], "--", "<"),
    "unibio": Style(_C["vermillion"], "--", ">"),
    "unibio_faithful": Style(_C["sky blue"], ":", "p"),
}


def style(name: str) -> Style:
    """The look of algorithm ``name``; an algorithm *setting* (``soba[lr_x=0.1]``) takes
    its algorithm's colour and a line style/marker of its own."""
    base, _, rest = name.partition("[")
    if not rest and base in FIXED:
        return FIXED[base]
    h = zlib.crc32(name.encode())
    colors = list(OKABE_ITO.values())
    color = FIXED[base].color if base in FIXED else colors[h % len(colors)]
    return Style(color, LINESTYLES[(h // 7) % len(LINESTYLES)], MARKERS[(h // 29) % len(MARKERS)])


def styles(names: Iterable[str]) -> dict[str, Style]:
    """``style`` of each name."""
    return {n: style(n) for n in names}


def paper_rc(scale: float = 1.0) -> dict[str, object]:
    """``matplotlib.rc_context`` settings for a figure printed at its own size (8 pt text
    at 3.3 in wide, thin lines, small markers)."""
    base = 8.0 * scale
    return {
        "font.size": base,
        "axes.titlesize": base,
        "axes.labelsize": base,
        "xtick.labelsize": base - 1,
        "ytick.labelsize": base - 1,
        "legend.fontsize": base - 1.5,
        "lines.linewidth": 1.2,
        "lines.markersize": 3.5,
        "axes.linewidth": 0.6,
        "grid.linewidth": 0.4,
        "savefig.dpi": 300,
        "pdf.fonttype": 42,  # TrueType in the PDF: editable and accepted by publishers
    }
