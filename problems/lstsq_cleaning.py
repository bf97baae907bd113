r"""P12: least-squares data cleaning with rank-deficient features and an exact optimistic Φ.

Training rows :math:`a_i` (the rows of :math:`A \in \mathbb R^{n\times d}`) have
:math:`\mathrm{rank}\,A = r < d < n`: the last :math:`d - r` features are fixed linear
combinations of the first :math:`r` (collinear features). Not :math:`n < d` with full row
rank: then :math:`S(x)` is the interpolating set, independent of :math:`x`, and
:math:`\Phi` is constant. Targets :math:`b = A w_\circ + \epsilon`, and a fraction ``q``
of them is corrupted once (seeded): :math:`b_i \to -b_i`. With weights
:math:`D(x) = \mathrm{diag}(\sigma(x))`, a clean validation set :math:`(A_v, b_v)` whose
features are not collinear, and means over the samples (finite sums, minibatches):

.. math::

    g(x, w) = \frac1{2n}\sum_i \sigma(x_i)(a_i^\top w - b_i)^2, \qquad
    f(w) = \frac1{2m}\|A_v w - b_v\|^2 .

With the SVD :math:`A = U\Sigma V^\top`, :math:`V = [V_r, N]` (:math:`N` spans
:math:`\ker A`) and :math:`H(x) = A^\top D A / n`:

* :math:`S(x) = w_0(x) + \ker A`, :math:`w_0 = V_r (V_r^\top H V_r)^{-1} V_r^\top A^\top D b / n`
  (the min-norm solution :math:`H^\dagger A^\top D b / n`); :math:`g^* = g(x, w_0)`,
  :math:`\mathrm{dist}(w, S(x)) = \|V_r^\top (w - w_0)\|`;
* optimistic selection :math:`y^* = w_0 + N z^*`,
  :math:`z^* = (A_v N)^\dagger (b_v - A_v w_0)`, unique as :math:`A_v N` has full column
  rank; :math:`\Phi = f(y^*) = \frac1{2m}\|P^\perp_{A_v N}(A_v w_0 - b_v)\|^2`;
* :math:`\nabla\Phi = -\nabla^2_{xw} g\, H^\dagger \nabla_w f(y^*)`, i.e.
  :math:`\partial_{x_i}\Phi = -\tfrac1n \sigma'(x_i)\,(a_i^\top y^* - b_i)\,
  a_i^\top H^\dagger \nabla_w f(y^*)` (envelope theorem over :math:`z`; :math:`w_0` moves
  in :math:`\mathrm{range}\,A^\top`, where :math:`H` is invertible).

Metrics: ``auc`` of :math:`\sigma(x)` ranking clean above corrupted samples, and the
``precision`` / ``recall`` of the samples flagged corrupted (:math:`x_i < 0`).
"""

from __future__ import annotations

import dataclasses

import torch

from bibench import Problem, ProblemParams, register_problem
from bibench.data.corruption import flip_mask
from bibench.data.metrics import auc, precision_recall
from bibench.problem import Batch


@dataclasses.dataclass(frozen=True)
class LstsqCleaningParams(ProblemParams):
    n_train: int = 40
    n_val: int = 30
    dim: int = 8  # d, features (= dim_y)
    rank: int = 5  # r = rank A < d
    q: float = 0.3  # fraction of corrupted targets
    target_noise: float = 0.1  # std of the clean targets' noise

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.rank < self.dim < self.n_train:
            raise ValueError(
                f"need 1 <= rank < dim < n_train, got rank={self.rank}, dim={self.dim}, "
                f"n_train={self.n_train}"
            )
        if self.n_val < self.dim - self.rank:
            raise ValueError(f"n_val must be >= dim - rank = {self.dim - self.rank}")
        if not 0.0 <= self.q < 1.0:
            raise ValueError(f"q must be in [0, 1), got {self.q}")
        if self.target_noise < 0:
            raise ValueError(f"target_noise must be >= 0, got {self.target_noise}")


@register_problem("lstsq_cleaning")
class LstsqCleaning(Problem):
    """P12: least-squares cleaning, rank-deficient features, exact optimistic Φ and ∇Φ."""

    regime = "PL"
    Params = LstsqCleaningParams

    def build(self) -> None:
        p = self.params
        gen = self.data_generator()
        n, m, d, r = p.n_train, p.n_val, p.dim, p.rank

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64)

        base = randn(n, r)
        a = torch.cat([base, base @ randn(r, d - r) / r**0.5], dim=1) / d**0.5
        w_true = randn(d)
        b = a @ w_true + p.target_noise * randn(n)
        flipped = flip_mask(n, p.q, p.seed)
        b = torch.where(flipped, -b, b)
        a_val = randn(m, d) / d**0.5
        b_val = a_val @ w_true + p.target_noise * randn(m)
        _, _, vt = torch.linalg.svd(a)
        v_r, null = vt[:r].T, vt[r:].T

        t = self.tensor
        self.A, self.b, self.A_val, self.b_val = t(a), t(b), t(a_val), t(b_val)
        self.V_r, self.N = t(v_r), t(null)
        self.select = t(torch.linalg.pinv(a_val @ null))  # (A_v N)^+, (d - r, m)
        self.flipped = flipped.to(self.device)
        self.dim_x, self.dim_y = n, d
        self.n_samples_g, self.n_samples_f = n, m

    # -- objectives -----------------------------------------------------------------
    def _train(self, x, y, batch: Batch):
        """Rows ``(R, B, d)`` or shared, residuals ``(R, B)``, weights ``(R, B)``."""
        a, b = (self.A, self.b) if batch is None else (self.A[batch], self.b[batch])
        lam = x if batch is None else torch.gather(x, 1, batch)
        resid = (a @ y[..., None])[..., 0] if a.dim() == 3 else y @ a.T
        return a, resid - b, lam

    def _val(self, y, batch: Batch):
        a, b = (self.A_val, self.b_val) if batch is None else (self.A_val[batch], self.b_val[batch])
        resid = (a @ y[..., None])[..., 0] if a.dim() == 3 else y @ a.T
        return a, resid - b

    @staticmethod
    def _back(a: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """``sum_i coef_i a_i / B`` per run, ``(R, d)``."""
        out = (coef[..., None] * a).sum(-2) if a.dim() == 3 else coef @ a
        return out / coef.shape[-1]

    def f(self, x, y, batch=None):
        _, e = self._val(y, batch)
        return 0.5 * (e * e).mean(-1)

    def g(self, x, y, batch=None):
        _, e, lam = self._train(x, y, batch)
        return 0.5 * (torch.sigmoid(lam) * e * e).mean(-1)

    def grad_x_f(self, x, y, batch=None):
        return torch.zeros_like(x)

    def grad_y_f(self, x, y, batch=None):
        a, e = self._val(y, batch)
        return self._back(a, e)

    def _scatter(self, vals: torch.Tensor, batch: Batch) -> torch.Tensor:
        vals = vals / vals.shape[-1]
        if batch is None:
            return vals
        out = torch.zeros(vals.shape[0], self.dim_x, dtype=vals.dtype, device=vals.device)
        return out.scatter_add_(1, batch, vals)

    def grad_x_g(self, x, y, batch=None):
        _, e, lam = self._train(x, y, batch)
        s = torch.sigmoid(lam)
        return self._scatter(0.5 * s * (1 - s) * e * e, batch)

    def grad_y_g(self, x, y, batch=None):
        a, e, lam = self._train(x, y, batch)
        return self._back(a, torch.sigmoid(lam) * e)

    def hvp_yy_g(self, x, y, v, batch=None):
        a, _, lam = self._train(x, y, batch)
        av = (a @ v[..., None])[..., 0] if a.dim() == 3 else v @ a.T
        return self._back(a, torch.sigmoid(lam) * av)

    def cross_xy_g(self, x, y, v, batch=None):
        a, e, lam = self._train(x, y, batch)
        s = torch.sigmoid(lam)
        av = (a @ v[..., None])[..., 0] if a.dim() == 3 else v @ a.T
        return self._scatter(s * (1 - s) * e * av, batch)

    # -- ground truth ---------------------------------------------------------------
    def _reduced_hessian(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`V_r^\top H(x) V_r`, ``(R, r, r)``, positive definite."""
        av = self.A @ self.V_r  # (n, r)
        return torch.einsum("ni,rn,nj->rij", av, torch.sigmoid(x), av) / self.dim_x

    def _h_pinv(self, x: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        r""":math:`H(x)^\dagger` rhs, ``(R, d)``."""
        sol = torch.linalg.solve(self._reduced_hessian(x), (rhs @ self.V_r)[..., None])
        return sol[..., 0] @ self.V_r.T

    def min_norm_solution(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`w_0(x)`, the min-norm point of :math:`S(x)`, ``(R, d)``."""
        atdb = (torch.sigmoid(x) * self.b) @ self.A / self.dim_x
        return self._h_pinv(x, atdb)

    def y_star(self, x):
        w0 = self.min_norm_solution(x)
        z = (self.b_val - w0 @ self.A_val.T) @ self.select.T
        return w0 + z @ self.N.T

    def hypergrad(self, x):
        ys = self.y_star(x)
        u = self._h_pinv(x, self.grad_y_f(x, ys))
        s = torch.sigmoid(x)
        return -s * (1 - s) * (ys @ self.A.T - self.b) * (u @ self.A.T) / self.dim_x

    def g_star(self, x):
        return self.g(x, self.min_norm_solution(x))

    def dist_to_solution_set(self, x, y):
        return torch.linalg.vector_norm((y - self.min_norm_solution(x)) @ self.V_r, dim=-1)

    def sample_solution_set(self, x, n):
        gen = torch.Generator().manual_seed(12345)
        z = torch.randn(x.shape[0], n, self.N.shape[1], generator=gen, dtype=torch.float64)
        return self.min_norm_solution(x)[:, None, :] + self.tensor(z) @ self.N.T

    def metrics(self, x, y):
        precision, recall = precision_recall(x < 0, self.flipped)
        return {
            "auc": auc(x, ~self.flipped),  # ranks sigma(x), without saturated ties
            "precision": precision,
            "recall": recall,
        }
