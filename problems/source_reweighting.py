r"""Data-source reweighting, least squares, exact optimistic Φ: HG-MS's experiment
(Masiha, Shen, Kiyavash, He, arXiv 2605.09209) in miniature, on bundled digits.

Sources, target, weights and the over-parameterisation are those of
:mod:`bibench.data.sources`: :math:`x \in \mathbb R^5` are the logits of the mixture
weights :math:`w = \mathrm{softmax}(x)` over the sources clean, noised, shifted,
imbalanced and off-target; the cropped pixels are unobserved by every source but seen by
the target. The model is a linear least-squares classifier :math:`W \in \mathbb R^{d\times C}`
(``y`` is ``W`` flattened row-major) fitted to one-hot targets :math:`B`:

.. math::

    g(x, W) = \frac1n\sum_i c_i(x)\,\tfrac12\|W^\top a_i - b_i\|^2
            = \tfrac12 \langle W, G(x) W\rangle - \ldots, \qquad
    f(W) = \frac1{n_v}\sum_{i\in V} \tfrac12\|W^\top a_i - b_i\|^2,

with :math:`c_i = K w_{k(i)}`, :math:`G(x) = A^\top \mathrm{diag}(c) A / n` and
:math:`\nabla^2_{yy} g = G(x) \otimes I_C`.

Ground truth. Take the SVD :math:`A = U\Sigma V^\top`, :math:`V = [V_r, N]`, with
:math:`N` spanning :math:`\ker A` (the cropped pixels' weights). For every :math:`x`,
:math:`c_i > 0`, so :math:`\ker G(x) = \ker A` does not depend on :math:`x`, and

* :math:`S(x) = W_0(x) + N\,\mathbb R^{(d-r)\times C}`,
  :math:`W_0 = V_r M^{-1} V_r^\top A^\top \mathrm{diag}(c) B / n`,
  :math:`M = V_r^\top G V_r \succ 0` (the min-norm solution :math:`G^\dagger A^\top
  \mathrm{diag}(c) B/n`); :math:`g^* = g(x, W_0)`;
  :math:`\mathrm{dist}(W, S(x)) = \|V_r^\top (W - W_0)\|_F`;
* optimistic selection: :math:`\min_{W \in S(x)} f` is the least-squares problem
  :math:`\min_Z \|A_v N Z - (B_v - A_v W_0)\|_F^2`; :math:`A_v N` has full column rank
  (checked when the instance is built: the target sees every cropped pixel), so
  :math:`Z^* = (A_v N)^\dagger (B_v - A_v W_0)` is unique, :math:`y^* = W_0 + N Z^*` and
  :math:`\Phi = \frac1{2n_v}\|P^\perp_{A_v N}(A_v W_0 - B_v)\|_F^2`;
* :math:`\nabla\Phi`: by the envelope theorem over :math:`Z` (:math:`\nabla_Z f = 0` at
  :math:`Z^*`), :math:`d\Phi = \langle \nabla_W f(y^*), dW_0\rangle`, and differentiating
  :math:`M V_r^\top W_0 = V_r^\top A^\top \mathrm{diag}(c) B / n` gives
  :math:`dW_0 = -G^\dagger A^\top \mathrm{diag}(dc)(A y^* - B)/n` (using :math:`A N = 0`,
  so :math:`A W_0 = A y^*`). With :math:`U = G^\dagger \nabla_W f(y^*)` and
  :math:`u_i = \langle (AU)_i, (Ay^* - B)_i\rangle`,
  :math:`\nabla\Phi = -J^\top s`, :math:`s_k = \frac Kn \sum_{i\in k} u_i`,
  :math:`J = \mathrm{diag}(w) - ww^\top`: the pseudoinverse formula
  :math:`-\nabla^2_{xy} g\,(\nabla^2_{yy} g)^\dagger \nabla_y f` at :math:`y^*`, which the
  tests check against autodiff through :math:`\Phi` and finite differences.

With ``crop: false`` the pooled features have full column rank, :math:`N` is
empty and :math:`S(x)` is the single point :math:`W_0(x)` (a control on which selection
cannot matter).

Baselines (:meth:`baselines`, constant metric columns, test accuracy and loss):
``uniform`` is :math:`y^*(0)`; ``single`` the best single source, the optimistic
solution of :math:`\min_{S_k} f` with :math:`S_k = \arg\min L_k` (same least-squares
selection with :math:`\ker A_k`), the source picked by its validation loss; ``oracle``
is :math:`y^*` at the oracle mixture, :math:`\Phi` minimised by L-BFGS (scipy) from
:math:`x = 0` with the exact :math:`\nabla\Phi` until :math:`\|\nabla\Phi\| \le 10^{-9}`
or 2,000 iterations; :math:`\Phi` there is ``phi_star`` (a local minimum: a run may
reach a slightly lower one, so ``phi_gap`` may dip below 0); its weights are the columns
``oracle_w_<source>``.

Scales (defaults, split 0, :math:`x = 0`): the nonzero spectrum of :math:`G` lies in
about :math:`[0.0014, 0.53]`, so lower steps near 1.5 fit; :math:`\|\nabla\Phi(0)\|`
is about 0.04 (upper steps of a few units, ``configs/papers/hgms_reweighting.yml``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bibench import register_problem
from bibench.data.sources import SourceMixture, SourceParams
from bibench.errors import UserError


@dataclasses.dataclass(frozen=True)
class SourceReweightingParams(SourceParams):
    pass


def optimistic_lstsq(
    a: torch.Tensor, coef: torch.Tensor, b: torch.Tensor, a_val: torch.Tensor, b_val: torch.Tensor
) -> torch.Tensor:
    r"""Optimistic solution of one weighted least-squares lower level, ``(d, C)``:
    :math:`\arg\min f` over :math:`\arg\min_W \sum_i coef_i \|W^\top a_i - b_i\|^2`
    (``coef >= 0``; rows with weight 0 drop out), by SVD of the weighted rows."""
    rows = coef > 0
    aw = a[rows] * coef[rows, None].sqrt()
    _, sv, vt = torch.linalg.svd(aw, full_matrices=True)
    r = int((sv > sv[0] * 1e-10).sum())
    v_r, null = vt[:r].T, vt[r:].T
    w0 = v_r @ torch.linalg.lstsq(aw @ v_r, coef[rows].sqrt()[:, None] * b[rows]).solution
    z = torch.linalg.lstsq(a_val @ null, b_val - a_val @ w0).solution
    return w0 + null @ z


@register_problem("source_reweighting")
class SourceReweighting(SourceMixture):
    """Source reweighting (HG-MS's task), least squares on bundled digits, exact Φ and ∇Φ."""

    Params = SourceReweightingParams
    lbfgs_iters = 2000
    lbfgs_gtol = 1e-9

    def build(self) -> None:
        super().build()
        a = self.a["train"]
        _, sv, vt = torch.linalg.svd(a, full_matrices=True)
        r = int((sv > sv[0] * 1e-10).sum())
        self.V_r, self.N = vt[:r].T.contiguous(), vt[r:].T.contiguous()
        a_vn = self.a["val"] @ self.N
        if self.N.shape[1] and torch.linalg.matrix_rank(a_vn) < self.N.shape[1]:
            raise UserError(
                f"problem source_reweighting: the {self.params.n_val} validation images do "
                f"not see all {self.N.shape[1]} unobserved directions (raise n_val)"
            )
        self.select = torch.linalg.pinv(a_vn)  # (A_v N)^+
        self.B = {
            s: torch.nn.functional.one_hot(lab, self.n_classes).to(a.dtype)
            for s, lab in self.labels.items()
        }
        self._phi_star: float | None = None

    # -- objectives -----------------------------------------------------------------
    def _resid(self, split: str, y: torch.Tensor, batch):
        a, b = self.rows(split, batch)
        return a, self.forward(a, self.weight_matrix(y)) - b

    def f(self, x, y, batch=None):
        _, e = self._resid("val", y, batch)
        return 0.5 * (e * e).sum(-1).mean(-1)

    def g(self, x, y, batch=None):
        _, e = self._resid("train", y, batch)
        return 0.5 * (self.coefficients(x, batch) * (e * e).sum(-1)).mean(-1)

    def grad_x_f(self, x, y, batch=None):
        return torch.zeros_like(x)

    def grad_y_f(self, x, y, batch=None):
        a, e = self._resid("val", y, batch)
        return self.backward(a, e)

    def grad_x_g(self, x, y, batch=None):
        _, e = self._resid("train", y, batch)
        return self.through_weights(x, 0.5 * (e * e).sum(-1), batch)

    def grad_y_g(self, x, y, batch=None):
        a, e = self._resid("train", y, batch)
        return self.backward(a, self.coefficients(x, batch)[..., None] * e)

    def hvp_yy_g(self, x, y, v, batch=None):
        a, _ = self.rows("train", batch)
        av = self.forward(a, self.weight_matrix(v))
        return self.backward(a, self.coefficients(x, batch)[..., None] * av)

    def cross_xy_g(self, x, y, v, batch=None):
        a, e = self._resid("train", y, batch)
        av = self.forward(a, self.weight_matrix(v))
        return self.through_weights(x, (e * av).sum(-1), batch)

    # -- ground truth ---------------------------------------------------------------
    def _g_pinv(self, x: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        r""":math:`G(x)^\dagger` rhs for ``rhs (R, d, C)``."""
        av = self.a["train"] @ self.V_r  # (n, r)
        c = self.coefficients(x, None)
        m = torch.einsum("ni,rn,nj->rij", av, c, av) / av.shape[0]
        return self.V_r @ torch.linalg.solve(m, self.V_r.T @ rhs)

    def min_norm_solution(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`W_0(x)`, flat ``(R, d*C)``."""
        a = self.a["train"]
        rhs = torch.einsum("nd,rn,nc->rdc", a, self.coefficients(x, None), self.B["train"])
        return self._g_pinv(x, rhs / a.shape[0]).reshape(x.shape[0], -1)

    def _select(self, w0: torch.Tensor) -> torch.Tensor:
        w = self.weight_matrix(w0)
        z = self.select @ (self.B["val"] - self.forward(self.a["val"], w))
        return (w + self.N @ z).reshape(w0.shape)

    def y_star(self, x):
        return self._select(self.min_norm_solution(x))

    def hypergrad(self, x):
        ys = self.y_star(x)
        u = self._g_pinv(x, self.weight_matrix(self.grad_y_f(x, ys)))
        a, e = self._resid("train", ys, None)
        return -self.through_weights(x, (self.forward(a, u) * e).sum(-1), None)

    def g_star(self, x):
        return self.g(x, self.min_norm_solution(x))

    def dist_to_solution_set(self, x, y):
        diff = self.weight_matrix(y - self.min_norm_solution(x))
        return torch.linalg.vector_norm(self.V_r.T @ diff, dim=(-2, -1))

    def sample_solution_set(self, x, n):
        gen = torch.Generator().manual_seed(12345)
        z = torch.randn(x.shape[0], n, self.N.shape[1], self.n_classes, generator=gen)
        pts = self.weight_matrix(self.min_norm_solution(x))[:, None] + self.N @ self.tensor(z)
        return pts.reshape(x.shape[0], n, -1)

    # -- baselines and metrics ------------------------------------------------------
    def test_loss(self, y):
        _, e = self._resid("test", y, None)
        return 0.5 * (e * e).sum(-1).mean(-1)

    def oracle_mixture(self) -> tuple[torch.Tensor, float]:
        """``(x_ref (1, K), ||grad Phi(x_ref)||)``: L-BFGS on the exact Phi from 0."""
        from scipy.optimize import minimize

        def fun(z: np.ndarray):
            x = self.tensor(z)[None]
            return float(self.phi(x)), self.hypergrad(x)[0].cpu().numpy()

        res = minimize(fun, np.zeros(self.dim_x), jac=True, method="L-BFGS-B",
                       options={"maxiter": self.lbfgs_iters, "gtol": self.lbfgs_gtol,
                                "ftol": 0.0})  # fmt: skip
        x = self.tensor(res.x)[None]
        return x, float(torch.linalg.vector_norm(self.hypergrad(x)))

    def baselines(self):
        if self._baselines is None:
            zero = torch.zeros(1, self.dim_x, dtype=self.dtype, device=self.device)
            out = {"uniform": self.y_star(zero)}
            a, b = self.a["train"], self.B["train"]
            singles = {}
            for k, name in enumerate(self.names):
                coef = (self.source == k).to(self.dtype)
                singles[name] = optimistic_lstsq(a, coef, b, self.a["val"], self.B["val"])
                singles[name] = singles[name].reshape(1, -1)
            best = min(singles, key=lambda s: float(self.f(zero, singles[s])))
            out["single"] = singles[best]
            self.best_single = best
            x_ref, self.oracle_residual = self.oracle_mixture()
            self.oracle_weights = torch.softmax(x_ref, -1)
            out["oracle"] = self.y_star(x_ref)
            self._phi_star = float(self.phi(x_ref))
            self._baselines = out
        return self._baselines
