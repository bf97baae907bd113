r"""Classification and cleaning metrics, batched over runs (every result is ``(R,)``).

* :func:`accuracy` — fraction of correct predictions (an accuracy, not an error rate);
* :func:`auc` — area under the ROC curve by the Mann–Whitney statistic,
  :math:`\mathrm{AUC} = P(s_+ > s_-) + \tfrac12 P(s_+ = s_-)` over (positive, negative)
  pairs, so ties (e.g. all weights equal) give exactly 1/2;
* :func:`precision_recall` — of a flagged set against the truth; precision is NaN when
  nothing is flagged, recall is NaN when there is nothing to find.
"""

from __future__ import annotations

import math

import torch

__all__ = ["accuracy", "auc", "precision_recall"]

_PAIR_CHUNK = 1 << 22  # (positive, negative) pairs compared at once, per run


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``predicted (R, m)`` classes, ``labels (m,)`` or ``(R, m)`` -> fraction correct ``(R,)``."""
    return (predicted == labels).to(torch.float64).mean(-1)


def auc(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """AUC of ``scores (R, n)`` for ranking ``positive`` (bool ``(n,)``, or ``(R, n)`` per
    run) examples above the others; NaN when either class is empty."""
    if positive.dim() == 2:  # per-run classes (stacked instances): run by run
        return torch.cat([auc(scores[r : r + 1], positive[r]) for r in range(len(scores))])
    pos, neg = scores[:, positive], scores[:, ~positive]
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    if n_pos == 0 or n_neg == 0:
        return torch.full(scores.shape[:1], math.nan, dtype=torch.float64, device=scores.device)
    wins = torch.zeros(scores.shape[0], dtype=torch.float64, device=scores.device)
    step = max(1, _PAIR_CHUNK // n_neg)
    for i in range(0, n_pos, step):  # chunks of positives bound the (R, chunk, n_neg) memory
        p = pos[:, i : i + step, None]
        wins += (p > neg[:, None, :]).sum((1, 2)) + 0.5 * (p == neg[:, None, :]).sum((1, 2))
    return wins / (n_pos * n_neg)


def precision_recall(
    flagged: torch.Tensor, truth: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision and recall of ``flagged`` (bool ``(R, n)``) against ``truth`` (bool ``(n,)``,
    or ``(R, n)`` per run)."""
    hits = (flagged & truth).sum(-1).to(torch.float64)
    n_flagged = flagged.sum(-1).to(torch.float64)
    n_true = truth.sum(-1).to(torch.float64)
    precision = torch.where(n_flagged > 0, hits / n_flagged.clamp(min=1), math.nan)
    recall = torch.where(n_true > 0, hits / n_true.clamp(min=1), math.nan)
    return precision, recall
