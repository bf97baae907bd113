"""Real data for the hypercleaning problems, and what they share.

* :mod:`bibench.data.corruption` — label flips with a recorded seed (once, not per access);
* :mod:`bibench.data.snli` — SNLI 1.0 in its official jsonl format;
* :mod:`bibench.data.glove` — GloVe vectors in their text format, with OOV handling;
* :mod:`bibench.data.tabular` — scikit-learn's bundled datasets (no download), split once;
* :mod:`bibench.data.models` — models on a flat, batched parameter vector ``y (R, dim_y)``;
* :mod:`bibench.data.metrics` — accuracy, AUC, precision and recall, batched over runs;
* :mod:`bibench.data.cleaning` — the shared hypercleaning bilevel problem.

Nothing here downloads anything: a missing file is one :class:`~bibench.errors.UserError`
line that names the file and where to get it.
"""
