r"""Analysis of a results store: what a bilevel paper shows, computed from the table alone.

Everything here reads the tidy table of :mod:`bibench.store` (one row per run and
checkpoint), so a figure or a table can be redrawn without re-running anything.

* :mod:`~bibench.analysis.runs`: settings (problem + its parameters, algorithm + its
  hyperparameters; seeds are the replicates) and per-run summaries.
* :mod:`~bibench.analysis.hitting`: :math:`N(\varepsilon)`, the oracle calls to first reach
  :math:`\|\nabla\Phi\| \le \varepsilon`, with censoring; curves on a common log grid and
  their median with a 20–80 % band.
* :mod:`~bibench.analysis.fits`: OLS and Theil–Sen slopes on log–log data with a bootstrap
  confidence interval over seeds.
* :mod:`~bibench.analysis.theory`: the declared theoretical exponents, with sources.
* :mod:`~bibench.analysis.profiles`: Dolan–Moré performance profiles and their integrated
  score, COCO ECDFs over (problem, target, seed) triples, aRT and success rates.
* :mod:`~bibench.analysis.tables`: median [q20, q80] cells in Markdown, LaTeX and CSV.
* :mod:`~bibench.analysis.plots`: matplotlib (Agg) figures, data in, PNG + PDF out.
* :mod:`~bibench.analysis.report`: the whole report of a results folder.
"""
