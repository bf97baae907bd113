r"""The data hypercleaning bilevel problem (Franceschi et al. 2017; Shaban et al. 2019;
UniBiO (ICLR 2026, arXiv 2603.00027), Sec. 6), shared by ``hypercleaning`` and ``snli_cleaning``.

Upper variable :math:`x = \lambda \in \mathbb R^n`, one weight logit per training
example; lower variable :math:`y` = the model's parameters (flat, see
:mod:`bibench.data.models`). With training labels :math:`\tilde y_i` corrupted once
(:mod:`bibench.data.corruption`) and per-example cross entropy :math:`\ell_i(y)`:

.. math::

    g(\lambda, y) = \frac1n \sum_{i=1}^n \sigma(\lambda_i)\, \ell_i(y; \tilde y_i)
                    + c \sum_j |y_j|^p, \qquad
    f(\lambda, y) = \frac1{n_v} \sum_{i \in V} \ell_i(y; y_i),

with :math:`V` a clean validation split (the UniBiO code corrupts it too; we do not).
For :math:`p > 2` the regulariser is uniformly convex of degree :math:`p`, not strongly
convex. Both objectives are finite sums (``n_samples_g = n``, ``n_samples_f = n_v``); a
minibatch ``(R, B)`` replaces a mean by the mean over its indices, and minibatches come
from per-run epochs (``epoch_sampling``: each run reshuffles its own permutation every
epoch, so seeds differ).

Metrics (``Problem.metrics``; accuracies are fractions correct, never error rates):
``train_acc`` (on the corrupted labels the model is trained on), ``train_acc_clean``
(on the true training labels), ``val_acc``, ``test_acc``; ``auc``, the probability that
a clean example outweighs a corrupted one, :math:`P(\sigma(\lambda_i) >
\sigma(\lambda_j) \mid i \text{ clean}, j \text{ corrupted})` (ties count 1/2, so the
uniform start scores exactly 0.5); ``precision`` / ``recall`` of the examples flagged as
corrupted, :math:`\lambda_i <` ``flag_below`` (default 0: weight fell below its uniform
start :math:`\sigma(0) = 1/2`); ``weight_clean`` / ``weight_corrupted``, the mean
:math:`\sigma(\lambda_i)` of each group.
"""

from __future__ import annotations

import dataclasses

import torch

from bibench.data.corruption import corrupt_labels
from bibench.data.metrics import accuracy, auc, precision_recall
from bibench.problem import Batch, Problem, ProblemParams, take

__all__ = ["CleaningParams", "CleaningProblem", "abs_pow"]

Index = torch.Tensor | None
"""Examples of a split: None (all), ``(m,)`` shared by the runs, or ``(R, B)`` per run."""


def abs_pow(z: torch.Tensor, p: float) -> torch.Tensor:
    r""":math:`|z|^p`; ``z * z`` for ``p = 2`` so autodiff's second derivative at 0 is 2."""
    return z * z if p == 2 else z.abs() ** p


@dataclasses.dataclass(frozen=True)
class CleaningParams(ProblemParams):
    """Parameters every hypercleaning problem has.

    Attributes:
        q: probability that a training label is flipped (once, seeded by ``seed``).
        p: exponent of the regulariser ``c * sum |y_j|^p`` (>= 2).
        c: weight of the regulariser (> 0 keeps the lower level uniformly convex).
        flag_below: an example is flagged as corrupted when its weight logit is below this.
    """

    q: float = 0.3
    p: float = 2.0
    c: float = 1e-3
    flag_below: float = 0.0

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.q < 1.0:
            raise ValueError(f"q must be in [0, 1), got {self.q}")
        if self.p < 2:
            raise ValueError(f"p must be >= 2, got {self.p}")
        if self.c < 0:
            raise ValueError(f"c must be >= 0, got {self.c}")


class CleaningProblem(Problem):
    """Base of the hypercleaning problems. A subclass's ``build`` loads its data, calls
    :meth:`set_labels` and defines :meth:`logits`."""

    regime = "real data"
    epoch_sampling = True
    eval_chunk = 1024  # examples per forward pass in the metrics
    n_classes: int
    labels: dict[str, torch.Tensor]  # "train" (corrupted), "train_clean", "val", "test"
    flipped: torch.Tensor  # bool (n_train,): the corrupted training examples
    # (stacked instances, Problem.stack: labels and flipped lead with the run dimension)

    def set_labels(
        self, train: torch.Tensor, val: torch.Tensor, test: torch.Tensor, n_classes: int
    ) -> None:
        """Corrupt the training labels once (seed ``params.seed``) and set the sizes:
        ``dim_x = n_samples_g = n_train``, ``n_samples_f = n_val``."""
        noisy, flipped = corrupt_labels(train, n_classes, self.params.q, self.params.seed)
        dev = self.device
        self.labels = {
            "train": noisy.to(dev),
            "train_clean": train.to(dev),
            "val": val.to(dev),
            "test": test.to(dev),
        }
        self.flipped = flipped.to(dev)
        self.n_classes = n_classes
        self.dim_x = self.n_samples_g = train.shape[0]
        self.n_samples_f = val.shape[0]

    def split_size(self, split: str) -> int:
        return self.labels[split].shape[-1]

    # -- the model ------------------------------------------------------------------
    def logits(self, y: torch.Tensor, split: str, idx: Index) -> torch.Tensor:
        """Logits ``(R, m, K)`` of the examples ``idx`` of ``split`` (train, val, test)."""
        raise NotImplementedError

    def cross_entropy(self, y: torch.Tensor, split: str, idx: Index) -> torch.Tensor:
        """Per-example cross entropy ``(R, m)`` against the split's (training: corrupted) labels."""
        z = self.logits(y, split, idx)
        lab = take(self.labels[split], idx, bool(self.stacked)).expand(z.shape[:2])
        return -torch.log_softmax(z, -1).gather(-1, lab[..., None])[..., 0]

    def regularizer(self, y: torch.Tensor) -> torch.Tensor:
        return self.params.c * abs_pow(y, self.params.p).sum(-1)

    # -- objectives -----------------------------------------------------------------
    def weights(self, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        r""":math:`\sigma(\lambda_i)` of the examples in ``batch``, ``(R, m)``."""
        lam = x if batch is None else torch.gather(x, 1, batch)
        return torch.sigmoid(lam)

    def g(self, x, y, batch=None):
        ce = self.cross_entropy(y, "train", batch)
        return (self.weights(x, batch) * ce).mean(-1) + self.regularizer(y)

    def f(self, x, y, batch=None):
        return self.cross_entropy(y, "val", batch).mean(-1)

    # -- metrics --------------------------------------------------------------------
    def predictions(self, y: torch.Tensor, split: str) -> torch.Tensor:
        """Argmax class ``(R, m)`` of every example of ``split``, in chunks."""
        n = self.split_size(split)
        out = []
        for start in range(0, n, self.eval_chunk):
            idx = torch.arange(start, min(n, start + self.eval_chunk), device=self.device)
            out.append(self.logits(y, split, idx).argmax(-1))
        return torch.cat(out, dim=1)

    def accuracy(self, y: torch.Tensor, split: str) -> torch.Tensor:
        """Accuracy ``(R,)`` of ``y`` on ``split`` (val or test) against its labels."""
        with torch.no_grad():
            return accuracy(self.predictions(y, split), self.labels[split])

    def metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            train = self.predictions(y, "train")
            clean = ~self.flipped  # (n,), or (R, n) for stacked instances
            w = torch.sigmoid(x)
            precision, recall = precision_recall(x < self.params.flag_below, self.flipped)
            return {
                "train_acc": accuracy(train, self.labels["train"]),
                "train_acc_clean": accuracy(train, self.labels["train_clean"]),
                "val_acc": self.accuracy(y, "val"),
                "test_acc": self.accuracy(y, "test"),
                "auc": auc(x, clean),  # sigma is increasing; x avoids saturated ties
                "precision": precision,
                "recall": recall,
                "weight_clean": (w * clean).sum(-1) / clean.sum(-1),
                "weight_corrupted": (w * self.flipped).sum(-1) / self.flipped.sum(-1),
            }
