r"""Data-source reweighting on scikit-learn's bundled digits (no download), shared by the
``source_reweighting`` (least squares, exact) and ``source_reweighting_nn`` (softmax) problems.

The upper variable is :math:`x \in \mathbb R^K`, the logits of the mixture weights
:math:`w = \mathrm{softmax}(x)` over :math:`K` training sources of equal size :math:`m`
(``n_per_source``); the lower level trains a model on the weighted mixture, the upper
level is the loss on a *target* domain (clean, full digits). As a finite sum over the
:math:`n = Km` pooled examples, with :math:`k(i)` the source of example :math:`i`,

.. math::

    g(x, y) = \sum_k w_k L_k(y) = \frac1n \sum_{i=1}^n c_i(x)\,\ell_i(y), \qquad
    c_i(x) = K\, w_{k(i)}(x), \qquad L_k = \frac1m \sum_{i \in k} \ell_i,

so a uniform minibatch mean is unbiased. With
:math:`J = \partial w / \partial x = \mathrm{diag}(w) - w w^\top`,
:math:`\partial_x \frac1B\sum_{i\in B} c_i\,u_i = J^\top s`,
:math:`s_k = \frac KB \sum_{i \in B,\,k(i)=k} u_i` (:meth:`SourceMixture.through_weights`;
:math:`u_i = \ell_i` gives :math:`\nabla_x g`, :math:`u_i = \langle\nabla_y\ell_i, v\rangle`
the cross product :math:`\nabla^2_{xy} g\, v`).

The five sources, drawn from disjoint parts of a seeded split (``seed``) of the 1,797
images (pixel values 0..16), in this order (``SOURCES``):

* ``clean``: images with their labels;
* ``noised``: each label moved to a uniformly chosen other class with probability
  ``noise`` (default 0.8, :mod:`bibench.data.corruption`);
* ``shifted``: images translated one pixel to the right (covariate shift), true labels;
* ``imbalanced``: only the classes ``0 .. C/2 - 1``, true labels;
* ``off_target``: another task on the same kind of inputs, label ``(y + 1) mod C``.

Over-parameterisation: the sources' images are cropped (``crop``): the 12 inner pixels
(columns 1..6) of the top and bottom rows are zero in every training source, but the
target's images are whole. The model has one weight per pixel and class, so the pooled
training features have rank :math:`r < d < n` and the weights of the cropped pixels are
free on :math:`S(x)`; the target sees them, so which point of :math:`S(x)` is selected
changes the target loss. (Not :math:`n < d` with full row rank: then every :math:`w > 0`
interpolates the same data and :math:`S(x)` does not depend on :math:`x`.)

Features: pixels inked in under 10% of all images (the first and last columns, 16
pixels, which a split of a few hundred images may see as constant) are dropped, leaving
48; they are standardised with the pooled clean images' mean and std, divided by
:math:`\sqrt{48}`, and a constant :math:`1/\sqrt 2` (the intercept) is appended:
:math:`d = 49`. Validation and test are clean, whole images of the target, disjoint from
the sources.
"""

from __future__ import annotations

import dataclasses

import torch

from bibench.data.corruption import corrupt_labels
from bibench.data.metrics import accuracy
from bibench.errors import UserError
from bibench.problem import Batch, Problem, ProblemParams

__all__ = ["SOURCES", "SourceData", "SourceMixture", "SourceParams", "load_sources"]

SOURCES = ("clean", "noised", "shifted", "imbalanced", "off_target")
SIDE = 8  # digits are 8 x 8 images
BIAS = 2**-0.5  # value of the constant (intercept) feature
MIN_INK = 0.1  # a pixel is a feature when inked in at least this share of all images


@dataclasses.dataclass(frozen=True)
class SourceData:
    """Float64 features and int64 labels; ``source`` gives each training row's source."""

    a_train: torch.Tensor  # (n, d), hidden features zero
    y_train: torch.Tensor  # (n,), labels as each source gives them
    source: torch.Tensor  # (n,) in 0..K-1
    a_val: torch.Tensor
    y_val: torch.Tensor
    a_test: torch.Tensor
    y_test: torch.Tensor
    hidden: torch.Tensor  # bool (d,): features the sources never observe
    n_classes: int


def _cropped() -> torch.Tensor:
    """Bool ``(64,)``: the pixels the sources miss (top and bottom rows, columns 1..6)."""
    mask = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    mask[0, 1:-1], mask[-1, 1:-1] = True, True
    return mask.flatten()


def load_sources(
    n_per_source: int, n_val: int, n_test: int, seed: int, noise: float, crop: bool
) -> SourceData:
    """The five sources and the target splits of one seeded split (see the module
    docstring); ``n_test = 0`` takes every image left."""
    from sklearn.datasets import load_digits

    data, target = load_digits(return_X_y=True)
    img = torch.as_tensor(data, dtype=torch.float64)
    labels = torch.as_tensor(target, dtype=torch.int64)
    k, n_all = len(SOURCES), img.shape[0]
    n_src = k * n_per_source
    n_test = n_test or n_all - n_src - n_val
    if n_per_source < 1 or n_val < 1 or n_test < 1 or n_src + n_val + n_test > n_all:
        raise UserError(
            f"digits has {n_all} images; cannot split into {k} sources of "
            f"n_per_source={n_per_source}, n_val={n_val}, n_test={n_test}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n_all, generator=gen)
    # the imbalanced source draws from the first half of the classes only
    half = labels[perm] < 5
    pools = [[], [], [], [], []]
    taken = torch.zeros(n_all, dtype=torch.bool)
    imb = perm[half][:n_per_source]
    taken[imb] = True
    rest = perm[~taken[perm]]
    for s in (0, 1, 2, 4):
        pools[s] = rest[:n_per_source]
        rest = rest[n_per_source:]
    pools[3] = imb
    va, te = rest[:n_val], rest[n_val : n_val + n_test]

    rows, labs = [], []
    for s, idx in enumerate(pools):
        x, lab = img[idx], labels[idx]
        if SOURCES[s] == "noised":
            lab, _ = corrupt_labels(lab, 10, noise, int(seed) + 17)
        elif SOURCES[s] == "shifted":
            x = x.reshape(-1, SIDE, SIDE).roll(1, dims=2)
            x[:, :, 0] = 0.0
            x = x.reshape(-1, SIDE * SIDE)
        elif SOURCES[s] == "off_target":
            lab = (lab + 1) % 10
        rows.append(x)
        labs.append(lab)
    a_train = torch.cat(rows)
    keep = (img > 0).double().mean(0) >= MIN_INK  # the first and last columns: rarely inked
    clean = img[torch.cat(pools)]
    mean, std = clean.mean(0), clean.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    d = int(keep.sum())

    def features(x: torch.Tensor) -> torch.Tensor:
        z = ((x - mean) / (std * d**0.5))[:, keep]
        return torch.cat([z, torch.full((z.shape[0], 1), BIAS, dtype=z.dtype)], 1)

    hidden = torch.cat([_cropped()[keep], torch.tensor([False])]) & crop
    a_tr = features(a_train)
    a_tr[:, hidden] = 0.0
    source = torch.arange(k).repeat_interleave(n_per_source)
    return SourceData(
        a_tr, torch.cat(labs), source, features(img[va]), labels[va], features(img[te]),
        labels[te], hidden, 10,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SourceParams(ProblemParams):
    """Attributes:
    n_per_source: training examples per source (m; n = 5 m pooled).
    n_val: target validation examples (the upper objective's finite sum).
    n_test: target test examples (0: every image left).
    noise: label-flip probability of the ``noised`` source.
    crop: the sources miss the cropped pixels (False: S(x) is a single point).
    """

    n_per_source: int = 60
    n_val: int = 150
    n_test: int = 0
    noise: float = 0.8
    crop: bool = True

    def validate(self) -> None:
        super().validate()
        if self.n_per_source < 1 or self.n_val < 1 or self.n_test < 0:
            raise ValueError("need n_per_source >= 1, n_val >= 1 and n_test >= 0")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {self.noise}")


class SourceMixture(Problem):
    """Base of the source-reweighting problems: data, mixture weights, shared metrics.
    A subclass defines :meth:`scores` (model outputs) and the objectives."""

    regime = "manifold"
    epoch_sampling = True
    names = SOURCES
    n_classes: int

    def build(self) -> None:
        p = self.params
        data = load_sources(p.n_per_source, p.n_val, p.n_test, p.seed, p.noise, p.crop)
        t = self.tensor
        self.a = {"train": t(data.a_train), "val": t(data.a_val), "test": t(data.a_test)}
        dev = self.device
        self.labels = {
            "train": data.y_train.to(dev), "val": data.y_val.to(dev), "test": data.y_test.to(dev)
        }  # fmt: skip
        self.source = data.source.to(dev)
        self.hidden = data.hidden.to(dev)
        self.n_classes = data.n_classes
        self.n_features = data.a_train.shape[1]
        self.dim_x = len(SOURCES)
        self.dim_y = self.n_features * self.n_classes
        self.n_samples_g, self.n_samples_f = data.a_train.shape[0], data.a_val.shape[0]
        self._baselines: dict[str, torch.Tensor] | None = None

    # -- data access --------------------------------------------------------------------
    def weight_matrix(self, y: torch.Tensor) -> torch.Tensor:
        """``y (R, d*C)`` as ``W (R, d, C)`` (row-major: feature, then class)."""
        return y.reshape(y.shape[0], self.n_features, self.n_classes)

    def rows(self, split: str, batch: Batch):
        """Features ``(m, d)`` or ``(R, B, d)`` and one-hot targets of ``split``."""
        a, lab = self.a[split], self.labels[split]
        if batch is not None:
            a, lab = a[batch], lab[batch]
        return a, torch.nn.functional.one_hot(lab, self.n_classes).to(a.dtype)

    @staticmethod
    def forward(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``a W`` per run: ``(R, m, C)`` for shared ``a (m, d)`` or ``a (R, B, d)``."""
        return torch.einsum("md,rdc->rmc", a, w) if a.dim() == 2 else torch.bmm(a, w)

    @staticmethod
    def backward(a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``a^T e / m`` per run, flat ``(R, d*C)``, for ``e (R, m, C)``."""
        m = e.shape[1]
        out = torch.einsum("md,rmc->rdc", a, e) if a.dim() == 2 else torch.bmm(a.transpose(1, 2), e)
        return (out / m).reshape(e.shape[0], -1)

    def coefficients(self, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        r""":math:`c_i = K w_{k(i)}` of the training examples in ``batch``, ``(R, m)``."""
        c = self.dim_x * torch.softmax(x, -1)
        src = self.source if batch is None else self.source[batch]
        return c[:, src] if batch is None else torch.gather(c, 1, src)

    def through_weights(self, x: torch.Tensor, u: torch.Tensor, batch: Batch) -> torch.Tensor:
        r""":math:`\partial_x \frac1m\sum_i c_i(x) u_i = J^\top s` for per-example ``u (R, m)``
        (module docstring)."""
        src = self.source.expand(u.shape) if batch is None else self.source[batch]
        s = torch.zeros(u.shape[0], self.dim_x, dtype=u.dtype, device=u.device)
        s = s.scatter_add_(1, src, u) * (self.dim_x / u.shape[1])
        w = torch.softmax(x, -1)
        return w * (s - (w * s).sum(-1, keepdim=True))

    # -- metrics ------------------------------------------------------------------------
    def accuracy(self, y: torch.Tensor, split: str) -> torch.Tensor:
        with torch.no_grad():
            z = self.forward(self.a[split], self.weight_matrix(y))
            return accuracy(z.argmax(-1), self.labels[split])

    def test_loss(self, y: torch.Tensor) -> torch.Tensor:
        """The upper objective's loss on the target *test* split, ``(R,)``."""
        raise NotImplementedError

    def baselines(self) -> dict[str, torch.Tensor]:
        """Reference points ``name -> y (1, dim_y)``: ``uniform`` (the optimistic
        :math:`y^*(0)`), ``single_<source>`` (the optimistic solution of one source alone),
        ``oracle`` (:math:`y^*` at a long tight minimisation of :math:`\\Phi`)."""
        raise NotImplementedError

    def metrics(self, x, y):
        with torch.no_grad():
            w = torch.softmax(x, -1)
            out = {f"w_{name}": w[:, k] for k, name in enumerate(self.names)}
            out["test_acc"] = self.accuracy(y, "test")
            out["test_loss"] = self.test_loss(y)
            out["val_acc"] = self.accuracy(y, "val")
            ys = self.y_star(x)
            out["test_acc_at_y_star"] = self.accuracy(ys, "test")
            out["test_loss_at_y_star"] = self.test_loss(ys)
            for name, yb in self.baselines().items():
                out[f"test_acc_{name}"] = self.accuracy(yb, "test").expand(x.shape[0]).clone()
                out[f"test_loss_{name}"] = self.test_loss(yb).expand(x.shape[0]).clone()
            for k, name in enumerate(self.names):
                out[f"oracle_w_{name}"] = self.oracle_weights[:, k].expand(x.shape[0]).clone()
            return out

    @property
    def phi_star(self) -> float:
        """Φ at the oracle mixture (set by :meth:`baselines`)."""
        self.baselines()
        return float(self._phi_star)
