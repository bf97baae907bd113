r"""``report.html``: one self-contained page to share a report, viewable offline.

The page holds its data as inline JSON and draws it with a small inline script (vanilla
JavaScript, inline SVG): no CDN, no external file, so it works from a ``file://`` URL with
no network. It shows

* the tables, each a ``(title, DataFrame)`` in the given order (a leaderboard first, when
  one is passed first);
* interactive convergence curves: choose the problem setting, the metric and the x-axis;
  toggle algorithms with their check boxes. Each algorithm setting is its median over
  seeds (line) and its 20–80 % band (shaded), on log–log axes; non-finite values
  (diverged, not recorded) are gaps.

State lives in the URL fragment, ``#problem=P&metric=M&x=X&hide=a,b``, so a view can be
linked. After every draw the SVG carries ``data-series`` (the number of curves drawn)
and ``data-shown`` (their algorithm settings, comma-separated), which a headless browser
test reads; ``#selftest`` additionally records that count in ``data-series-before``,
clicks the first check box once and records the count after the click in
``data-series-after``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bibench.analysis.hitting import band, curves

__all__ = ["curve_data", "page", "write_html"]


def _finite(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def curve_data(
    df: pd.DataFrame, metrics: Sequence[str], xs: Sequence[str], n_grid: int = 80
) -> dict[str, dict[str, dict[str, dict]]]:
    """``{metric: {x: {problem setting: {"x": grid, "series": {algorithm setting:
    {"lo", "med", "hi"}}}}}}`` from a :func:`~bibench.analysis.runs.prepare` d table;
    metrics and x-axes the table lacks, or that are nowhere finite, are left out."""
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for metric in metrics:
        if metric not in df.columns or not np.isfinite(df[metric]).any():
            continue
        for x in xs:
            if x not in df.columns:
                continue
            for ps, (grid, per_alg) in curves(df, metric, x, n_grid=n_grid).items():
                series = {}
                for alg, values in per_alg.items():
                    lo, med, hi = band(values)
                    series[alg] = {"lo": _finite(lo), "med": _finite(med), "hi": _finite(hi)}
                out.setdefault(metric, {}).setdefault(x, {})[ps] = {
                    "x": _finite(grid),
                    "series": series,
                }
    return out


def _table(title: str, df: pd.DataFrame) -> str:
    body = df.to_html(index=False, border=0, na_rep="–", escape=True)
    return f"<section><h2>{html.escape(title)}</h2>\n{body}\n</section>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;font-size:13px;margin-bottom:1em}
th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}
th{border-bottom:2px solid #888}
#controls label{margin-right:1em} #algs label{display:inline-block;margin-right:1em}
svg text{font-size:11px} .axis{stroke:#444} .grid{stroke:#e4e4e4}
"""

_SCRIPT = r"""
(function(){
const D = JSON.parse(document.getElementById('bibench-data').textContent);
const $ = id => document.getElementById(id);
const COLORS = ['#0072B2','#E69F00','#009E73','#D55E00','#CC79A7','#56B4E9','#F0E442',
  '#000000','#999999','#882255','#44AA99','#117733'];
const W = 760, H = 440, L = 70, R = 20, T = 20, B = 50;
function frag(){
  const s = {};
  location.hash.replace(/^#/, '').split('&').forEach(kv => {
    const i = kv.indexOf('='); if (kv) s[decodeURIComponent(i < 0 ? kv : kv.slice(0, i))] =
      i < 0 ? '' : decodeURIComponent(kv.slice(i + 1)); });
  return s;
}
function fill(sel, names, want){
  sel.innerHTML = '';
  names.forEach(n => { const o = document.createElement('option'); o.value = n;
    o.textContent = n; sel.appendChild(o); });
  if (names.includes(want)) sel.value = want;
}
const st = frag();
const hidden = new Set((st.hide || '').split(',').filter(Boolean));
const metrics = Object.keys(D.curves);
fill($('metric'), metrics, st.metric);
function xs(){ return Object.keys(D.curves[$('metric').value] || {}); }
function problems(){
  return Object.keys((D.curves[$('metric').value] || {})[$('x').value] || {}); }
fill($('x'), xs(), st.x); fill($('problem'), problems(), st.problem);
const allAlgs = [];
Object.values(D.curves).forEach(bx => Object.values(bx).forEach(bp => Object.values(bp)
  .forEach(p => Object.keys(p.series).forEach(a => {
    if (!allAlgs.includes(a)) allAlgs.push(a); }))));
allAlgs.sort();
const color = a => COLORS[allAlgs.indexOf(a) % COLORS.length];
function checkboxes(names){
  const box = $('algs'); box.innerHTML = '';
  names.forEach(a => {
    const l = document.createElement('label'); const c = document.createElement('input');
    c.type = 'checkbox'; c.checked = !hidden.has(a); c.dataset.alg = a;
    c.addEventListener('change', () => {
      c.checked ? hidden.delete(a) : hidden.add(a); draw(); });
    l.appendChild(c); const s = document.createElement('span');
    s.style.color = color(a); s.textContent = ' ' + a; l.appendChild(s); box.appendChild(l);
  });
}
function el(name, attrs, parent){
  const e = document.createElementNS('http://www.w3.org/2000/svg', name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e); return e;
}
function draw(){
  const p = ((D.curves[$('metric').value] || {})[$('x').value] || {})[$('problem').value];
  const svg = $('plot'); svg.innerHTML = '';
  const shown = [];
  if (!p) { svg.dataset.series = '0'; svg.dataset.shown = ''; return 0; }
  const names = Object.keys(p.series);
  if ($('algs').dataset.for !== JSON.stringify(names)) {
    checkboxes(names); $('algs').dataset.for = JSON.stringify(names); }
  const vis = names.filter(a => !hidden.has(a));
  let ylo = Infinity, yhi = -Infinity;
  vis.forEach(a => ['lo', 'med', 'hi'].forEach(k => p.series[a][k].forEach(v => {
    if (v !== null && v > 0) { ylo = Math.min(ylo, v); yhi = Math.max(yhi, v); } })));
  const xv = p.x.filter(v => v !== null && v > 0);
  const xlo = Math.log10(Math.min(...xv)), xhi = Math.log10(Math.max(...xv)) + 1e-12;
  if (!isFinite(ylo)) { ylo = 1; yhi = 10; }
  ylo = Math.log10(ylo); yhi = Math.log10(yhi); if (yhi - ylo < 1e-9) { ylo -= 0.5; yhi += 0.5; }
  const sx = v => L + (Math.log10(v) - xlo) / (xhi - xlo) * (W - L - R);
  const sy = v => T + (yhi - Math.log10(v)) / (yhi - ylo) * (H - T - B);
  for (let d = Math.ceil(ylo); d <= Math.floor(yhi); d++) {
    el('line', {x1: L, x2: W - R, y1: sy(10 ** d), y2: sy(10 ** d), class: 'grid'}, svg);
    el('text', {x: L - 6, y: sy(10 ** d) + 4, 'text-anchor': 'end'}, svg).textContent =
      '1e' + d;
  }
  for (let d = Math.ceil(xlo); d <= Math.floor(xhi); d++) {
    el('line', {y1: T, y2: H - B, x1: sx(10 ** d), x2: sx(10 ** d), class: 'grid'}, svg);
    el('text', {x: sx(10 ** d), y: H - B + 16, 'text-anchor': 'middle'}, svg).textContent =
      '1e' + d;
  }
  el('rect', {x: L, y: T, width: W - L - R, height: H - T - B, fill: 'none', class: 'axis'}, svg);
  el('text', {x: (L + W - R) / 2, y: H - 12, 'text-anchor': 'middle'}, svg).textContent =
    D.x_labels[$('x').value] || $('x').value;
  el('text', {x: 14, y: (T + H - B) / 2, 'text-anchor': 'middle',
    transform: `rotate(-90 14 ${(T + H - B) / 2})`}, svg).textContent =
    D.metric_labels[$('metric').value] || $('metric').value;
  const ok = (i, ks) => p.x[i] !== null && ks.every(k => k !== null && k > 0);
  vis.forEach(a => {
    const s = p.series[a];
    let band = '', back = '';
    const runs = []; let cur = [];
    p.x.forEach((x, i) => { if (ok(i, [s.lo[i], s.hi[i]])) cur.push(i);
      else if (cur.length) { runs.push(cur); cur = []; } });
    if (cur.length) runs.push(cur);
    runs.forEach(r => { band = r.map(i => `${sx(p.x[i])},${sy(s.hi[i])}`).join(' ');
      back = r.slice().reverse().map(i => `${sx(p.x[i])},${sy(s.lo[i])}`).join(' ');
      el('polygon', {points: band + ' ' + back, fill: color(a), 'fill-opacity': 0.18,
        stroke: 'none'}, svg); });
    const pts = p.x.map((x, i) => ok(i, [s.med[i]]) ? `${sx(x)},${sy(s.med[i])}` : null);
    const g = el('g', {class: 'series', 'data-alg': a}, svg);
    let seg = [];
    const flush = () => { if (seg.length) el('polyline', {points: seg.join(' '), fill: 'none',
      stroke: color(a), 'stroke-width': 1.8}, g); seg = []; };
    pts.forEach(q => q === null ? flush() : seg.push(q)); flush();
    shown.push(a);
  });
  svg.dataset.series = String(shown.length);
  svg.dataset.shown = shown.join(',');
  return shown.length;
}
['metric', 'x'].forEach(id => $(id).addEventListener('change', () => {
  const m = $('x').value, pr = $('problem').value;
  fill($('x'), xs(), m); fill($('problem'), problems(), pr); draw(); }));
$('problem').addEventListener('change', draw);
draw();
if ('selftest' in st) {
  $('plot').dataset.seriesBefore = $('plot').dataset.series;
  const first = document.querySelector('#algs input');
  if (first) first.click();
  $('plot').dataset.seriesAfter = $('plot').dataset.series;
}
})();
"""


def page(
    tables: Sequence[tuple[str, pd.DataFrame]],
    curves_json: Mapping,
    *,
    title: str = "bibench report",
    notes: Sequence[str] = (),
    metric_labels: Mapping[str, str] | None = None,
    x_labels: Mapping[str, str] | None = None,
) -> str:
    """The HTML text: the curves' controls and plot, then ``tables`` in order."""
    data = {
        "curves": curves_json,
        "metric_labels": dict(metric_labels or {}),
        "x_labels": dict(x_labels or {}),
    }
    # "</" inside a <script> element would end it early
    blob = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p>{html.escape(n)}</p>" for n in notes),
        "<section><h2>convergence curves (median, 20–80% band over seeds)</h2>",
        '<div id="controls"><label>problem <select id="problem"></select></label>'
        '<label>metric <select id="metric"></select></label>'
        '<label>x-axis <select id="x"></select></label></div>',
        '<div id="algs"></div>',
        '<svg id="plot" width="760" height="440" xmlns="http://www.w3.org/2000/svg"></svg>',
        "</section>",
        *(_table(t, df) for t, df in tables),
        f'<script type="application/json" id="bibench-data">{blob}</script>',
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_html(path: str | Path, tables: Sequence[tuple[str, pd.DataFrame]], curves_json,
               **kwargs) -> Path:  # fmt: skip
    """Write :func:`page` to ``path``; returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(tables, curves_json, **kwargs), encoding="utf-8")
    return path
