r"""Offline data hypercleaning: multinomial logistic regression on scikit-learn's bundled
data (default ``digits``: 1,797 8×8 images, 10 classes), no download.

The bilevel problem is that of :mod:`bibench.data.cleaning` (UniBiO §6 with a linear
model): training labels flipped once with probability ``q`` (seeded by ``seed``),

.. math::

    g(\lambda, y) = \frac1n\sum_i \sigma(\lambda_i)\,\ell_i(y) + c\sum_j |y_j|^p, \qquad
    f(y) = \frac1{n_v}\sum_{i\in V} \ell_i(y), \qquad
    \ell_i(y) = -\log \mathrm{softmax}(W^\top a_i + b)_{\tilde y_i},

with :math:`y = (W, b)`, :math:`W \in \mathbb R^{d\times K}`. Splits: a seeded random
partition into train (``n_train``), a clean validation set (``n_val``) and a test set
(``n_test``; 0 = the rest); features standardised on train (:mod:`bibench.data.tabular`).

Analytic oracles (checked against ``torch.func`` in the tests), with
:math:`P = \mathrm{softmax}(Z)`, :math:`Z = AW + b`, :math:`E = P - \mathrm{onehot}(\tilde y)`,
:math:`s_i = \sigma(\lambda_i)` and :math:`m` the (mini)batch size:

.. math::

    \nabla_W g = \tfrac1m A^\top(s \odot E) + c\,p\,y^{[p-1]},\qquad
    \nabla_{\lambda_i} g = \tfrac1m \sigma'(\lambda_i)\,\ell_i,\\
    \nabla^2_{yy} g\,v: \; \dot Z = A V_W + v_b,\;
    \dot P = P\odot\dot Z - P\,(P\cdot\dot Z),\;
    \tfrac1m (A^\top(s\odot\dot P),\, \textstyle\sum_i s_i\dot P_i) + c\,p(p-1)|y|^{p-2}\odot v,\\
    (\nabla^2_{\lambda y} g\, v)_i = \tfrac1m\sigma'(\lambda_i)\,\langle E_i, \dot Z_i\rangle .

Ground truth (a high-accuracy reference solve; the lower level is strictly convex for
``c > 0``): :math:`y^*(\lambda)` by damped Newton–CG on the full sum until
:math:`\|\nabla_y g\| \le` ``ref_tol`` (warm-started from the previous reference
point), :math:`\Phi = f(y^*)`, and :math:`\nabla\Phi = -\nabla^2_{\lambda y} g\,
[\nabla^2_{yy} g]^{-1}\nabla_y f` at :math:`y^*` by CG (``f`` does not depend on
:math:`\lambda`). For ``p > 2`` the Hessian stays invertible at :math:`y^* \ne 0`: the
regulariser's curvature :math:`c\,p(p-1)|y_j|^{p-2}` covers the softmax's shift direction.

Scales: at the defaults the spectrum of :math:`\nabla^2_{yy} g` at :math:`\lambda = 0`
lies in :math:`[0.002, 0.054]` (the lower end is :math:`2c`), so lower step sizes near 10
fit; the entries of :math:`\nabla\Phi` carry a :math:`1/n` factor, so upper step sizes
are in the hundreds (``configs/hypercleaning.yml``).

The reference solve is per run: a run's Newton iterations stop when its own gradient
norm is at most ``ref_tol``, and its CG tolerances are its own, so the other runs of its
batch change its reference point only through rounding and, when they put checkpoints
at other steps, through the warm start; both stay inside the solve's tolerance
(``ref_tol`` on :math:`\|\nabla_y g\|`). Instances of other ``seed`` (splits and label
flips; the sizes are fixed by the other parameters) stack into one batch
(:meth:`bibench.problem.Problem.stack`): features, labels and flip masks then carry the
run dimension, each run trains on and is measured against its own splits.

The uniform-weights baseline is the lower level solved exactly at :math:`\lambda = 0`
(every :math:`\sigma(\lambda_i) = 1/2`, where every run starts): its test accuracy is
the constant column ``test_acc_uniform``, and ``test_acc_at_y_star`` is the test
accuracy of :math:`y^*(\lambda)` at the current weights.
"""

from __future__ import annotations

import dataclasses

import torch

from bibench import register_problem
from bibench.data.cleaning import CleaningParams, CleaningProblem
from bibench.data.models import ParamLayout, linear_logits
from bibench.data.tabular import DATASETS, load_tabular
from bibench.estimators import cg
from bibench.newton import WarmStart, damped_newton
from bibench.problem import take


@dataclasses.dataclass(frozen=True)
class HypercleaningParams(CleaningParams):
    q: float = 0.5  # half the training labels flipped, as Franceschi et al. 2017 on MNIST
    dataset: str = "digits"  # one of bibench.data.tabular.DATASETS (bundled with sklearn)
    n_train: int = 1000
    n_val: int = 200
    n_test: int = 0  # 0: every example left after train and validation
    ref_tol: float = 1e-10  # gradient norm at which the reference solve stops

    def validate(self) -> None:
        super().validate()
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.n_train < 2 or self.n_val < 1 or self.n_test < 0:
            raise ValueError("n_train must be >= 2, n_val >= 1 and n_test >= 0")
        if self.c <= 0:
            raise ValueError(f"c must be > 0 (the reference solve needs a unique y*), got {self.c}")
        if self.ref_tol <= 0:
            raise ValueError(f"ref_tol must be > 0, got {self.ref_tol}")


@register_problem("hypercleaning")
class Hypercleaning(CleaningProblem):
    """Offline data hypercleaning: weighted logistic regression on bundled sklearn data."""

    Params = HypercleaningParams
    max_newton = 100
    stack_params = ("seed",)
    stack_data = ("features", "labels", "flipped")

    def build(self) -> None:
        p = self.params
        data = load_tabular(p.dataset, p.n_train, p.n_val, p.n_test, p.seed)
        t = self.tensor
        self.features = {"train": t(data.a_train), "val": t(data.a_val), "test": t(data.a_test)}
        self.set_labels(data.y_train, data.y_val, data.y_test, data.n_classes)
        d, k = data.a_train.shape[1], data.n_classes
        self.layout = ParamLayout({"W": (d, k), "b": (k,)})
        self.dim_y = self.layout.size
        self._y_star = WarmStart(self._solve, self.dim_y)
        self._uniform_y: torch.Tensor | None = None

    @classmethod
    def stack(cls, instances):
        out = super().stack(instances)
        out._y_star = WarmStart(out._solve, out.dim_y)  # not the first instance's solutions
        out._uniform_y = None
        return out

    def logits(self, y, split, idx):
        a = take(self.features[split], idx, bool(self.stacked))
        return linear_logits(self.layout.unflatten(y), a)

    # -- analytic oracles -------------------------------------------------------------
    def _rows(self, split: str, batch) -> tuple[torch.Tensor, torch.Tensor]:
        stacked = bool(self.stacked)
        return take(self.features[split], batch, stacked), take(self.labels[split], batch, stacked)

    def _residual(self, y, split, batch):
        """Features, ``P - onehot`` ``(R, m, K)`` and per-example losses ``(R, m)``."""
        a, lab = self._rows(split, batch)
        z = linear_logits(self.layout.unflatten(y), a)
        logp = torch.log_softmax(z, -1)
        onehot = torch.nn.functional.one_hot(lab, self.n_classes).to(z.dtype)
        onehot = onehot.expand(z.shape)
        loss = -(logp * onehot).sum(-1)
        return a, logp.exp() - onehot, loss

    def _back(self, a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Flat ``(A^T e, sum_i e_i) / m`` for ``e (R, m, K)``."""
        m = e.shape[1]
        gw = torch.einsum("md,rmk->rdk", a, e) if a.dim() == 2 else torch.bmm(a.transpose(1, 2), e)
        return self.layout.flatten({"W": gw / m, "b": e.sum(1) / m})

    def _forward_dir(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Directional derivative of the logits, ``A V_W + v_b``, ``(R, m, K)``."""
        return linear_logits(self.layout.unflatten(v), a)

    def _scatter(self, vals: torch.Tensor, batch) -> torch.Tensor:
        """Per-example values ``(R, m)`` placed into ``(R, n)`` (divided by ``m``)."""
        vals = vals / vals.shape[1]
        if batch is None:
            return vals
        out = torch.zeros(vals.shape[0], self.dim_x, dtype=vals.dtype, device=vals.device)
        return out.scatter_add_(1, batch, vals)

    def _reg_grad(self, y):
        p, c = self.params.p, self.params.c
        return c * p * (y if p == 2 else torch.sign(y) * y.abs() ** (p - 1))

    def _reg_curv(self, y):
        p, c = self.params.p, self.params.c
        return c * p * (p - 1) * (torch.ones_like(y) if p == 2 else y.abs() ** (p - 2))

    def grad_x_f(self, x, y, batch=None):
        return torch.zeros_like(x)

    def grad_y_f(self, x, y, batch=None):
        a, e, _ = self._residual(y, "val", batch)
        return self._back(a, e)

    def grad_x_g(self, x, y, batch=None):
        _, _, loss = self._residual(y, "train", batch)
        s = self.weights(x, batch)
        return self._scatter(s * (1 - s) * loss, batch)

    def grad_y_g(self, x, y, batch=None):
        a, e, _ = self._residual(y, "train", batch)
        return self._back(a, self.weights(x, batch)[..., None] * e) + self._reg_grad(y)

    def hvp_yy_g(self, x, y, v, batch=None):
        a, e, _ = self._residual(y, "train", batch)
        prob = e + torch.nn.functional.one_hot(self._rows("train", batch)[1], self.n_classes)
        dz = self._forward_dir(a, v)
        dp = prob * dz - prob * (prob * dz).sum(-1, keepdim=True)
        return self._back(a, self.weights(x, batch)[..., None] * dp) + self._reg_curv(y) * v

    def cross_xy_g(self, x, y, v, batch=None):
        a, e, _ = self._residual(y, "train", batch)
        s = self.weights(x, batch)
        return self._scatter(s * (1 - s) * (e * self._forward_dir(a, v)).sum(-1), batch)

    # -- reference solve (ground truth) ----------------------------------------------
    def _solve(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Damped Newton–CG on the full sum from ``y`` (:func:`bibench.newton.damped_newton`,
        Armijo backtracking per run; a solved run stays put)."""
        ref_tol = self.params.ref_tol

        def direction(y_: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
            # inexact Newton: a CG tolerance that tightens with the gradient, down to what
            # the stopping test needs (a tighter one is out of reach in float64); per run,
            # by solving for step / tol with tolerance 1 (CG is invariant to that scaling)
            gnorm = torch.linalg.vector_norm(grad, dim=-1)
            tol = torch.clamp(gnorm * torch.clamp(gnorm, max=0.1), min=0.1 * ref_tol)[:, None]
            hvp = lambda v, active=None: self.hvp_yy_g(x, y_, v)  # noqa: E731
            return cg(4 * self.dim_y, 1.0)(hvp, -grad / tol) * tol

        return damped_newton(lambda y_: self.g(x, y_), lambda y_: self.grad_y_g(x, y_),
                             direction, y, tol=ref_tol, max_iter=self.max_newton)  # fmt: skip

    def y_star(self, x):
        return self._y_star(x)

    def hypergrad(self, x):
        ys = self.y_star(x)
        rhs = self.grad_y_f(x, ys)
        # relative tolerance 1e-12 per run: CG on the unit right-hand side
        norm = torch.linalg.vector_norm(rhs, dim=-1, keepdim=True)
        norm = torch.where(norm > 0, norm, torch.ones_like(norm))
        hvp = lambda u, active=None: self.hvp_yy_g(x, ys, u)  # noqa: E731
        v = cg(4 * self.dim_y, 1e-12)(hvp, rhs / norm) * norm
        return self.grad_x_f(x, ys) - self.cross_xy_g(x, ys, v)

    def uniform_solution(self) -> torch.Tensor:
        """:math:`y^*(0)`, the lower level trained with uniform weights, ``(1, dim_y)``
        (``(R, dim_y)``, one per run's instance, when stacked)."""
        if self._uniform_y is None:
            n = max(self.stacked, 1)
            x0 = torch.zeros(n, self.dim_x, dtype=self.dtype, device=self.device)
            y0 = torch.zeros(n, self.dim_y, dtype=self.dtype, device=self.device)
            self._uniform_y = self._solve(x0, y0)
        return self._uniform_y

    def metrics(self, x, y):
        out = super().metrics(x, y)
        with torch.no_grad():
            base = self.accuracy(self.uniform_solution(), "test")
            out["test_acc_uniform"] = base.expand(x.shape[0]).clone()
            out["test_acc_at_y_star"] = self.accuracy(self.y_star(x), "test")
        return out
