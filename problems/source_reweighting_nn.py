r"""Data-source reweighting with a softmax (cross-entropy) model: the nonlinear variant of
``source_reweighting`` (HG-MS's task, Masiha, Shen, Kiyavash, He, arXiv 2605.09209).

Same sources, target, mixture weights :math:`w = \mathrm{softmax}(x)` and crop as
:mod:`bibench.data.sources`. The model is multinomial logistic regression, logits
:math:`z_i = W^\top a_i` (the intercept is a feature), :math:`W \in \mathbb R^{d\times C}`
split into the rows :math:`W_o` of the features the sources observe and :math:`W_h` of
the 12 cropped pixels, which are zero in every training row:

.. math::

    g(x, W) = \frac1n\sum_i c_i(x)\,\ell_i(W) + \frac c2\|W_o\|^2, \qquad
    f(W) = \frac1{n_v}\sum_{i\in V}\ell_i(W) + \frac{c_f}2\|W_h\|^2,

:math:`\ell_i = -\log\mathrm{softmax}(z_i)_{y_i}`, :math:`c_i = K w_{k(i)}`. The
training loss does not see :math:`W_h`, so :math:`g` is strongly convex in :math:`W_o`
and flat in :math:`W_h`: :math:`S(x) = \{W_o^*(x)\} \times \mathbb R^{12\times C}`, a
flat manifold of dimension 120 on which :math:`f` varies (the target sees the cropped
pixels). The ridge :math:`c_f` on the selected block makes the optimistic selection
unique (the unregularised validation loss need not attain its infimum over
:math:`W_h`); the model is nonlinear in :math:`W`, so no closed form.

Why this model and not an MLP or a character-level language model: a reference must be
a certified optimistic selection. For a hidden layer the solution set is a curved,
non-isolated union of manifolds whose optimistic point no solver certifies; here both
stages are strongly convex, so a tight Newton solve is the reference, and its residual
is a certificate. No text corpus ships inside an installed package at a pinned version
(scikit-learn's text sets are fetched on first use), so the char-level LM is left out.

Reference (ground truth; ``ref_tol``): stage 1, damped Newton on :math:`W_o` until
:math:`\|\nabla_{W_o} g\| \le` ``ref_tol``; stage 2, damped Newton on :math:`W_h` for
:math:`f` at fixed :math:`W_o^*` until :math:`\|\nabla_{W_h} f\| \le` ``ref_tol``
(dense Hessians, Armijo backtracking, warm-started from the previous reference point).
:meth:`reference_residual` reports both gradient norms. Then :math:`\Phi = f(y^*)` and,
by the envelope theorem over :math:`W_h` and the implicit function theorem on
:math:`W_o^*`, :math:`\nabla\Phi = -\nabla^2_{xy} g\,\xi`,
:math:`\xi = (H_{oo}^{-1}\nabla_{W_o} f, 0)`: the pseudoinverse formula, as
:math:`\nabla^2_{yy} g = \mathrm{diag}(H_{oo}, 0)` and :math:`\nabla_{W_h} f(y^*) = 0`.
:math:`g^* = g(x, y^*)`, :math:`\mathrm{dist}(W, S(x)) = \|W_o - W_o^*(x)\|`.

Analytic oracles, with :math:`P = \mathrm{softmax}(Z)`, :math:`E = P - Y`,
:math:`\dot Z = A V`, :math:`\dot P = P\odot\dot Z - P(P\cdot\dot Z)` and :math:`M` the
mask of observed rows: :math:`\nabla_W g = \frac1m A^\top(c\odot E) + c\,M\odot W`,
:math:`\nabla^2_{yy} g\,V = \frac1m A^\top(c\odot\dot P) + c\,M\odot V`,
:math:`\nabla_x g = J^\top s` with :math:`u_i = \ell_i` and
:math:`\nabla^2_{xy}g\,V` with :math:`u_i = \langle E_i, \dot Z_i\rangle`
(:meth:`~bibench.data.sources.SourceMixture.through_weights`).

Baselines (constant metric columns, as ``source_reweighting``): ``uniform``
(:math:`y^*(0)`), ``single`` (one source alone, the best on validation), ``oracle``
(:math:`y^*` at L-BFGS on :math:`\Phi`, up to 200 iterations from 0, ``phi_star``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bibench import register_problem
from bibench.data.sources import SourceMixture, SourceParams
from bibench.newton import WarmStart, damped_newton


@dataclasses.dataclass(frozen=True)
class SourceReweightingNNParams(SourceParams):
    c: float = 1e-3  # ridge of g on the observed rows (strong convexity there)
    c_f: float = 1e-3  # ridge of f on the cropped rows (a unique optimistic selection)
    ref_tol: float = 1e-10  # gradient norm at which each reference stage stops

    def validate(self) -> None:
        super().validate()
        if self.c <= 0 or self.c_f <= 0 or self.ref_tol <= 0:
            raise ValueError("c, c_f and ref_tol must be > 0")


@register_problem("source_reweighting_nn")
class SourceReweightingNN(SourceMixture):
    """Source reweighting (HG-MS's task), softmax model on bundled digits, Newton reference."""

    Params = SourceReweightingNNParams
    max_newton = 100
    lbfgs_iters = 200

    def build(self) -> None:
        super().build()
        # mask of W's observed rows, broadcast over classes, flat (d*C,)
        rows = (~self.hidden).to(self.dtype)
        self.observed = rows[:, None].expand(-1, self.n_classes).reshape(-1)
        self._y_star = WarmStart(
            lambda x, y0: self._reference(self.coefficients(x, None), y0), self.dim_y
        )
        self._phi_star: float | None = None

    # -- model pieces -----------------------------------------------------------------
    def _probs(self, split: str, y: torch.Tensor, batch):
        """Features, ``P - onehot`` ``(R, m, C)``, per-example losses, ``P``."""
        a, onehot = self.rows(split, batch)
        logp = torch.log_softmax(self.forward(a, self.weight_matrix(y)), -1)
        prob = logp.exp()
        return a, prob - onehot, -(logp * onehot).sum(-1), prob

    def _dprob(self, a, prob, v):
        dz = self.forward(a, self.weight_matrix(v))
        return dz, prob * dz - prob * (prob * dz).sum(-1, keepdim=True)

    # -- objectives -------------------------------------------------------------------
    def f(self, x, y, batch=None):
        _, _, loss, _ = self._probs("val", y, batch)
        hid = y * (1 - self.observed)
        return loss.mean(-1) + 0.5 * self.params.c_f * (hid * hid).sum(-1)

    def g(self, x, y, batch=None):
        _, _, loss, _ = self._probs("train", y, batch)
        obs = y * self.observed
        return (self.coefficients(x, batch) * loss).mean(-1) + 0.5 * self.params.c * (
            obs * obs
        ).sum(-1)

    def grad_x_f(self, x, y, batch=None):
        return torch.zeros_like(x)

    def grad_y_f(self, x, y, batch=None):
        a, e, _, _ = self._probs("val", y, batch)
        return self.backward(a, e) + self.params.c_f * (1 - self.observed) * y

    def _grad_y_g(self, coef, y, batch=None):
        a, e, _, _ = self._probs("train", y, batch)
        return self.backward(a, coef[..., None] * e) + self.params.c * self.observed * y

    def grad_y_g(self, x, y, batch=None):
        return self._grad_y_g(self.coefficients(x, batch), y, batch)

    def grad_x_g(self, x, y, batch=None):
        _, _, loss, _ = self._probs("train", y, batch)
        return self.through_weights(x, loss, batch)

    def hvp_yy_g(self, x, y, v, batch=None):
        a, _, _, prob = self._probs("train", y, batch)
        _, dp = self._dprob(a, prob, v)
        coef = self.coefficients(x, batch)
        return self.backward(a, coef[..., None] * dp) + self.params.c * self.observed * v

    def cross_xy_g(self, x, y, v, batch=None):
        a, e, _, prob = self._probs("train", y, batch)
        dz, _ = self._dprob(a, prob, v)
        return self.through_weights(x, (e * dz).sum(-1), batch)

    # -- reference solve --------------------------------------------------------------
    def _hessian(self, split: str, coef: torch.Tensor, y: torch.Tensor, rows: torch.Tensor):
        r"""Dense Hessian of :math:`\frac1m\sum_i coef_i \ell_i` in the rows ``rows`` of
        ``W``, ``(R, |rows| C, |rows| C)``."""
        a, _, _, prob = self._probs(split, y, None)
        sub = a[:, rows]
        s = torch.diag_embed(prob) - prob[..., :, None] * prob[..., None, :]
        h = torch.einsum("rn,na,nb,rnjk->rajbk", coef, sub, sub, s) / a.shape[0]
        k = sub.shape[1] * self.n_classes
        return h.reshape(-1, k, k)

    def _newton(self, obj, grad, hess, y, mask: torch.Tensor) -> torch.Tensor:
        """Damped Newton on the coordinates ``mask`` of ``y`` (:mod:`bibench.newton`),
        the step by Cholesky of the dense Hessian (SPD: a convex loss + c I)."""

        def direction(y, gr):
            return -torch.cholesky_solve(gr[..., None], torch.linalg.cholesky(hess(y)))[..., 0]

        return damped_newton(obj, grad, direction, y, tol=self.params.ref_tol,
                             max_iter=self.max_newton, coords=mask)  # fmt: skip

    def _reference(self, coef: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        """Both reference stages for per-example coefficients ``coef (R, n)``."""
        p, obs_rows = self.params, ~self.hidden
        obs, hid = self.observed.bool(), ~self.observed.bool()
        zero = torch.zeros(y0.shape[0], self.dim_x, dtype=y0.dtype, device=y0.device)

        def g(y):
            _, _, loss, _ = self._probs("train", y, None)
            return (coef * loss).mean(-1) + 0.5 * p.c * ((y * self.observed) ** 2).sum(-1)

        def h_obs(y):
            eye = torch.eye(int(obs.sum()), dtype=y.dtype, device=y.device)
            return self._hessian("train", coef, y, obs_rows) + p.c * eye

        def h_hid(y):
            ones = torch.ones(y.shape[0], self.n_samples_f, dtype=y.dtype, device=y.device)
            eye = torch.eye(int(hid.sum()), dtype=y.dtype, device=y.device)
            return self._hessian("val", ones, y, self.hidden) + p.c_f * eye

        y = self._newton(g, lambda y: self._grad_y_g(coef, y), h_obs, y0, obs)
        return self._newton(
            lambda y: self.f(zero, y), lambda y: self.grad_y_f(zero, y), h_hid, y, hid
        )

    def y_star(self, x):
        return self._y_star(x)

    def reference_residual(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\max(\|\nabla_{W_o} g\|, \|\nabla_{W_h} f\|)` at ``y_star(x)``, ``(R,)``."""
        ys = self.y_star(x)
        obs = self.observed.bool()
        r_g = torch.linalg.vector_norm(self.grad_y_g(x, ys)[:, obs], dim=-1)
        r_f = torch.linalg.vector_norm(self.grad_y_f(x, ys)[:, ~obs], dim=-1)
        return torch.maximum(r_g, r_f)

    def hypergrad(self, x):
        ys = self.y_star(x)
        obs = self.observed.bool()
        h = self._hessian("train", self.coefficients(x, None), ys, ~self.hidden)
        h = h + self.params.c * torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
        xi = torch.zeros_like(ys)
        rhs = self.grad_y_f(x, ys)[:, obs, None]
        xi[:, obs] = torch.cholesky_solve(rhs, torch.linalg.cholesky(h))[..., 0]  # SPD
        return self.grad_x_f(x, ys) - self.cross_xy_g(x, ys, xi)

    def dist_to_solution_set(self, x, y):
        return torch.linalg.vector_norm((y - self.y_star(x)) * self.observed, dim=-1)

    def sample_solution_set(self, x, n):
        gen = torch.Generator().manual_seed(12345)
        z = torch.randn(x.shape[0], n, self.dim_y, generator=gen, dtype=self.dtype)
        return self.y_star(x)[:, None] + self.tensor(z) * (1 - self.observed)

    # -- baselines and metrics --------------------------------------------------------
    def test_loss(self, y):
        _, _, loss, _ = self._probs("test", y, None)
        return loss.mean(-1)

    def oracle_mixture(self) -> tuple[torch.Tensor, float]:
        """``(x_ref (1, K), ||grad Phi(x_ref)||)``: L-BFGS on Phi from 0."""
        from scipy.optimize import minimize

        def fun(z: np.ndarray):
            x = self.tensor(z)[None]
            return float(self.phi(x)), self.hypergrad(x)[0].cpu().numpy()

        res = minimize(fun, np.zeros(self.dim_x), jac=True, method="L-BFGS-B",
                       options={"maxiter": self.lbfgs_iters, "gtol": 1e-7})  # fmt: skip
        x = self.tensor(res.x)[None]
        return x, float(torch.linalg.vector_norm(self.hypergrad(x)))

    def baselines(self):
        if self._baselines is None:
            zero = torch.zeros(1, self.dim_x, dtype=self.dtype, device=self.device)
            y0 = torch.zeros(1, self.dim_y, dtype=self.dtype, device=self.device)
            out = {"uniform": self._reference(self.coefficients(zero, None), y0)}
            singles = {
                name: self._reference(self.dim_x * (self.source == k).to(self.dtype)[None], y0)
                for k, name in enumerate(self.names)
            }
            self.best_single = min(singles, key=lambda s: float(self.f(zero, singles[s])))
            out["single"] = singles[self.best_single]
            cache = self._y_star.last  # the oracle's solves must not move the warm start
            x_ref, self.oracle_residual = self.oracle_mixture()
            self.oracle_weights = torch.softmax(x_ref, -1)
            out["oracle"] = self.y_star(x_ref)
            self._phi_star = float(self.phi(x_ref))
            self._y_star.last = cache
            self._baselines = out
        return self._baselines

    def metrics(self, x, y):
        out = super().metrics(x, y)
        out["reference_residual"] = self.reference_residual(x)
        return out
