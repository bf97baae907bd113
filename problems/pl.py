r"""PL lower levels (Chen–Xu–Zhang regime): P5, P6, P7, P9, P10 (Chen, Xu, Zhang,
COLT 2024, arXiv 2301.00712).

:math:`g(x, \cdot)` satisfies the Polyak–Łojasiewicz inequality
:math:`\tfrac12\|\nabla_y g\|^2 \ge \mu (g - g^*)` for every ``x`` (P10: on ``x >= 0``), and
:math:`S(x)` is an affine set (P5, P9), a hyperplane (P6), a curved manifold (P7) or a
point (P10). Every problem knows :math:`\Phi`, :math:`\nabla\Phi`, the optimistic
selection :math:`y^*` and :math:`\mathrm{dist}(y, S(x))` exactly (float64).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from bibench import Problem, ProblemParams, register_problem
from bibench.problem import Batch, mtv, mv


def _solution_samples(n_runs: int, n: int, dim: int, dtype, device) -> torch.Tensor:
    """Deterministic standard normal draws ``(R, n, dim)`` for ``sample_solution_set``."""
    gen = torch.Generator().manual_seed(12345)
    return torch.randn(n_runs, n, dim, generator=gen, dtype=torch.float64).to(device, dtype)


# s(t) = t + sin(t)/2: the monotone map of P6 and, elementwise, the diffeomorphism psi of P7.
# s' = 1 + cos(t)/2 in [1/2, 3/2], |s''| <= 1/2.


def _s(t: torch.Tensor) -> torch.Tensor:
    return t + 0.5 * torch.sin(t)


def _ds(t: torch.Tensor) -> torch.Tensor:
    return 1.0 + 0.5 * torch.cos(t)


def _d2s(t: torch.Tensor) -> torch.Tensor:
    return -0.5 * torch.sin(t)


def _s_inv(u: torch.Tensor, n_newton: int = 8) -> torch.Tensor:
    r""":math:`s^{-1}(u)` elementwise by Newton from :math:`t_0 = u`.

    :math:`|s^{-1}(u) - u| = \tfrac12|\sin t| \le \tfrac12` and Newton's error obeys
    :math:`e_{k+1} \le \frac{\max|s''|}{2 \min s'} e_k^2 = \tfrac12 e_k^2`, so six steps
    reach machine precision from any ``u``; eight are taken. Differentiable: at the fixed
    point autodiff through the steps gives :math:`1/s'(t^*)`, the implicit derivative.
    """
    t = u
    for _ in range(n_newton):
        t = t - (_s(t) - u) / _ds(t)
    return t


# ------------------------------------------------------------------------------------
# P9: BOME / BDA toy
# ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BOMEToyParams(ProblemParams):
    y2_init: float = 0.0  # y0 = (0, y2_init); BGS-Opt then converges to x = (1 + y2_init) / 2


@register_problem("bome_toy")
class BOMEToy(Problem):
    r"""P9: BOME/BDA toy, S(x) a line; the BGS flow selection and the optimistic Φ disagree.

    Liu et al. 2022 (BOME, ``toy/toy_lls.py``), going back to BDA (Liu et al. 2020);
    :math:`x \in \mathbb R`, :math:`y \in \mathbb R^2`:

    .. math::

        g(x, y) = \tfrac12 y_1^2 - x y_1, \qquad
        f(x, y) = \tfrac12 (x - y_2)^2 + \tfrac12 (y_1 - 1)^2,

        S(x) = \{(x, t): t \in \mathbb R\}, \quad y^*(x) = (x, x), \quad
        \Phi(x) = \tfrac12 (x - 1)^2, \quad \Phi'(x) = x - 1, \quad x^* = 1.

    ``g`` is PL with :math:`\mu = 1` (Hessian :math:`\mathrm{diag}(1, 0)`),
    :math:`g^* = -x^2/2`, :math:`\mathrm{dist}(y, S(x)) = |y_1 - x|`.

    Gradient-flow selection (Arbel & Mairal 2022): the flow
    :math:`\dot\varphi = -\nabla_y g = (x - \varphi_1, 0)` never moves :math:`y_2`, so
    :math:`\varphi(x, y_0) = (x, y_{0,2})` and

    .. math::

        \mathcal L_\varphi(x, y_0) = \tfrac12 (x - y_{0,2})^2 + \tfrac12 (x - 1)^2, \qquad
        \partial_x \mathcal L_\varphi = 2x - 1 - y_{0,2},

    minimised at :math:`x = (1 + y_{0,2})/2 \ne 1` unless :math:`y_{0,2} = 1`: BGS-Opt
    converges there, penalty methods (which move :math:`y_2 \to x`) to :math:`x^* = 1`.

    Choices: ``x0 = 0`` and ``y0 = (0, y2_init)`` for every seed (BOME starts at 0), so
    the BGS limit :math:`(1 + y_{2,\mathrm{init}})/2` is known in advance.
    """

    regime = "PL"
    Params = BOMEToyParams

    def build(self) -> None:
        self.dim_x, self.dim_y = 1, 2

    def f(self, x, y, batch=None):
        return 0.5 * (x[:, 0] - y[:, 1]) ** 2 + 0.5 * (y[:, 0] - 1.0) ** 2

    def g(self, x, y, batch=None):
        return 0.5 * y[:, 0] ** 2 - x[:, 0] * y[:, 0]

    # analytic oracles (tests/problems/test_pl.py checks them against autodiff)
    def grad_x_f(self, x, y, batch=None):
        return x - y[:, 1:]

    def grad_y_f(self, x, y, batch=None):
        return torch.cat([y[:, :1] - 1.0, y[:, 1:] - x], dim=-1)

    def grad_x_g(self, x, y, batch=None):
        return -y[:, :1]

    def grad_y_g(self, x, y, batch=None):
        return torch.cat([y[:, :1] - x, torch.zeros_like(x)], dim=-1)

    def hvp_yy_g(self, x, y, v, batch=None):
        return torch.cat([v[:, :1], torch.zeros_like(x)], dim=-1)

    def cross_xy_g(self, x, y, v, batch=None):
        return -v[:, :1]

    def init_y(self, rng):
        y0 = torch.zeros(len(rng.seeds), 2, dtype=self.dtype, device=self.device)
        y0[:, 1] = self.params.y2_init
        return y0

    # ground truth
    def y_star(self, x):
        return torch.cat([x, x], dim=-1)

    def phi(self, x):
        return 0.5 * (x[:, 0] - 1.0) ** 2

    def hypergrad(self, x):
        return x - 1.0

    def g_star(self, x):
        return -0.5 * x[:, 0] ** 2

    @property
    def phi_star(self) -> float:
        return 0.0

    def dist_to_solution_set(self, x, y):
        return (y[:, 0] - x[:, 0]).abs()

    def sample_solution_set(self, x, n):
        t = _solution_samples(x.shape[0], n, 1, self.dtype, self.device)
        return torch.cat([x[:, None, :].expand(-1, n, 1), x[:, None, :] + 3.0 * t], dim=-1)

    def flow_selection(self, x, y0):
        return torch.cat([x, y0[:, 1:]], dim=-1)

    def selection_map_grad(self, x, y0):
        return 2.0 * x - 1.0 - y0[:, 1:]

    def formulas(self) -> str:
        return (
            "P9 BOME toy\n"
            "g(x, y) = y1^2/2 - x y1,  f(x, y) = (x - y2)^2/2 + (y1 - 1)^2/2\n"
            "S(x) = {(x, t)},  y*(x) = (x, x),  Phi(x) = (x - 1)^2/2,  x* = 1\n"
            "flow selection phi(x, y0) = (x, y0_2):  L_phi = (x - y0_2)^2/2 + (x - 1)^2/2,"
            "  argmin (1 + y0_2)/2"
        )


# ------------------------------------------------------------------------------------
# P5 and P7: rank-deficient least squares, flat (P5) or through psi (P7), finite sum
# ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RowLeastSquaresParams(ProblemParams):
    dim_x: int = 5
    dim_y: int = 20
    n_samples: int = 50  # rows of A: g is the mean of n per-row terms (minibatch = rows)
    rank: int = 10  # rank of A < dim_y: S(x) has dimension dim_y - rank
    cond: float = 10.0  # condition number of A'A/n on its range: L = 1, PL mu = 1/cond (P5)

    def validate(self) -> None:
        super().validate()
        if min(self.dim_x, self.dim_y, self.n_samples, self.rank) < 1:
            raise ValueError("dim_x, dim_y, n_samples and rank must be >= 1")
        if self.rank > min(self.dim_y, self.n_samples):
            raise ValueError(
                f"rank must be <= min(dim_y, n_samples), got rank={self.rank}, "
                f"dim_y={self.dim_y}, n_samples={self.n_samples}"
            )
        if self.cond < 1:
            raise ValueError(f"cond must be >= 1, got {self.cond}")


class _RowLeastSquares(Problem):
    r"""Shared data and oracles of P5 and P7: with :math:`u = \psi(y)` elementwise,

    .. math::

        g(x, y) = \frac1n \sum_{i=1}^n \tfrac12 (a_i^\top u - b_i(x))^2, \qquad
        f(x, y) = \tfrac12 \|u - t\|^2, \qquad b(x) = \sin(Wx) + b_0,

    ``psi`` the identity (P5) or :math:`s(t) = t + \tfrac12\sin t` (P7). In ``u``
    coordinates both are P5, with :math:`A^\dagger` the
    pseudoinverse:

    .. math::

        u^*(x) = t + A^\dagger (b(x) - A t), \qquad
        \Phi(x) = \tfrac12 \|A^\dagger (b(x) - A t)\|^2, \qquad
        \nabla\Phi(x) = W^\top \big(\cos(Wx) \odot A^{\dagger\top} A^\dagger (b - At)\big),

        g^*(x) = \tfrac1{2n} \|(I - A A^\dagger) b(x)\|^2 .

    Data (seeded by ``seed``): :math:`A = \sqrt n\, U \mathrm{diag}(\sigma) V_r^\top` with
    orthonormal :math:`U \in \mathbb R^{n\times r}`, :math:`V_r \in \mathbb R^{d\times r}`
    and :math:`\sigma^2` log-spaced in :math:`[1/\mathrm{cond}, 1]`, so
    :math:`A^\top A / n` has non-zero spectrum :math:`[1/\mathrm{cond}, 1]`;
    :math:`W_{ij} \sim \mathcal N(0, 1/d_x)` (so ``Phi`` is nonconvex),
    :math:`b_0 \sim \mathcal N(0, \tfrac14 I)`. The target is
    :math:`t = A^\dagger b(x_{\rm true}) + N z` (``N`` a basis of :math:`\ker A`, ``x_true``
    and ``z`` standard normal), so :math:`\Phi(x_{\rm true}) = 0 = \Phi^*`.
    Minibatches are rows of ``A``, ``W``, ``b0``; ``f`` is not a finite sum.
    ``x0`` and ``y0`` are standard normal per seed.
    """

    Params = RowLeastSquaresParams

    def build(self) -> None:
        p = self.params
        gen = self.data_generator()
        n, d, r, dx = p.n_samples, p.dim_y, p.rank, p.dim_x
        self.dim_x, self.dim_y = dx, d
        self.n_samples_g = n

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64)

        u_n, _ = torch.linalg.qr(randn(n, r))
        q, _ = torch.linalg.qr(randn(d, d))
        v_r, ker = q[:, :r], q[:, r:]
        sigma = torch.logspace(0, -0.5 * math.log10(p.cond), r, dtype=torch.float64)
        a = n**0.5 * u_n @ torch.diag(sigma) @ v_r.T
        pinv = v_r @ torch.diag(1.0 / sigma) @ u_n.T / n**0.5
        w = randn(n, dx) / dx**0.5
        b0 = 0.5 * randn(n)
        x_true = randn(dx)
        target = pinv @ (torch.sin(w @ x_true) + b0) + ker @ randn(d - r)

        t = self.tensor
        self.A, self.A_pinv, self.W, self.b0 = t(a), t(pinv), t(w), t(b0)
        self.U_n, self.V_r, self.ker = t(u_n), t(v_r), t(ker)
        self.target, self.A_target, self.x_true = t(target), t(a @ target), t(x_true)

    # psi hooks: u = psi(y) elementwise
    def _psi(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _dpsi(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _d2psi(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _psi_inv(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # rows of the finite sum
    def _rows(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if batch is None:
            return self.A, self.W, self.b0
        return self.A[batch], self.W[batch], self.b0[batch]

    def _resid(self, x, y, batch):
        a, w, b0 = self._rows(batch)
        wx = mv(w, x)
        return mv(a, self._psi(y)) - torch.sin(wx) - b0, a, w, wx

    def f(self, x, y, batch=None):
        return 0.5 * ((self._psi(y) - self.target) ** 2).sum(-1)

    def g(self, x, y, batch=None):
        res, *_ = self._resid(x, y, batch)
        return 0.5 * (res**2).mean(-1)

    # analytic oracles (tests/problems/test_pl.py checks them, with and without minibatch)
    def grad_x_f(self, x, y, batch=None):
        return torch.zeros_like(x)

    def grad_y_f(self, x, y, batch=None):
        return self._dpsi(y) * (self._psi(y) - self.target)

    def grad_x_g(self, x, y, batch=None):
        res, _, w, wx = self._resid(x, y, batch)
        return -mtv(w, torch.cos(wx) * res) / res.shape[-1]

    def grad_y_g(self, x, y, batch=None):
        res, a, _, _ = self._resid(x, y, batch)
        return self._dpsi(y) * mtv(a, res) / res.shape[-1]

    def hvp_yy_g(self, x, y, v, batch=None):
        res, a, _, _ = self._resid(x, y, batch)
        m = res.shape[-1]
        gauss_newton = self._dpsi(y) * mtv(a, mv(a, self._dpsi(y) * v)) / m
        return gauss_newton + self._d2psi(y) * v * mtv(a, res) / m

    def cross_xy_g(self, x, y, v, batch=None):
        res, a, w, wx = self._resid(x, y, batch)
        return -mtv(w, torch.cos(wx) * mv(a, self._dpsi(y) * v)) / res.shape[-1]

    def init_x(self, rng):
        return rng.normal(self.dim_x).to(self.device)

    def init_y(self, rng):
        return rng.normal(self.dim_y).to(self.device)

    # ground truth
    def _b(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(mv(self.W, x)) + self.b0

    def _e(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`A^\\dagger (b(x) - At)`, the normal component of ``u* - t``."""
        return mv(self.A_pinv, self._b(x) - self.A_target)

    def u_star(self, x: torch.Tensor) -> torch.Tensor:
        return self.target + self._e(x)

    def y_star(self, x):
        return self._psi_inv(self.u_star(x))

    def phi(self, x):
        return 0.5 * (self._e(x) ** 2).sum(-1)

    def hypergrad(self, x):
        z = mtv(self.A_pinv, self._e(x))
        return mtv(self.W, torch.cos(mv(self.W, x)) * z)

    def g_star(self, x):
        b = self._b(x)
        res = b - mv(self.U_n, mtv(self.U_n, b))
        return 0.5 * (res**2).mean(-1)

    @property
    def phi_star(self) -> float:
        return 0.0

    def sample_solution_set(self, x, n):
        z = _solution_samples(x.shape[0], n, self.ker.shape[1], self.dtype, self.device)
        return self._psi_inv(self.u_star(x)[:, None, :] + z @ self.ker.T)


@register_problem("lstsq_rank_deficient")
class LstsqRankDeficient(_RowLeastSquares):
    r"""P5: rank-deficient least squares, S(x) = A†b(x) + ker A, b(x) = sin(Wx) + b0.

    :math:`g = \frac1n \sum_i \tfrac12 (a_i^\top y - b_i(x))^2`,
    :math:`f = \tfrac12 \|y - t\|^2` (``psi`` = identity in :class:`_RowLeastSquares`):

    .. math::

        S(x) = A^\dagger b(x) + \ker A, \qquad
        y^*(x) = A^\dagger b(x) + (I - A^\dagger A) t, \qquad
        \Phi(x) = \tfrac12 \|A^\dagger (b(x) - At)\|^2,

        \mathrm{dist}(y, S(x)) = \|V_r^\top (y - y^*(x))\| \quad
        (\text{projection onto the affine set}).

    ``g`` is PL with :math:`\mu = 1/\mathrm{cond}` (smallest non-zero eigenvalue of
    :math:`A^\top A/n`) and ``L = 1``. :math:`\nabla^2_{yy} g = A^\top A / n` is singular
    (kernel = tangent space of ``S``); :math:`\nabla\Phi` equals the pseudoinverse formula
    at :math:`y^*`. The residual outside :math:`\mathrm{range}(A)` makes :math:`g^* > 0`.
    """

    regime = "PL"

    def _psi(self, y):
        return y

    def _dpsi(self, y):
        return torch.ones_like(y)

    def _d2psi(self, y):
        return torch.zeros_like(y)

    def _psi_inv(self, u):
        return u

    def dist_to_solution_set(self, x, y):
        return torch.linalg.vector_norm((y - self.u_star(x)) @ self.V_r, dim=-1)

    def formulas(self) -> str:
        p = self.params
        return (
            f"P5 rank-deficient least squares: A is {p.n_samples}x{p.dim_y} of rank {p.rank},"
            f" cond(A'A/n on range) = {p.cond:g}\n"
            "g(x, y) = 1/(2n) ||A y - b(x)||^2,  b(x) = sin(W x) + b0\n"
            "f(x, y) = 1/2 ||y - t||^2\n"
            "S(x) = A^+ b(x) + ker A,  y*(x) = t + A^+ (b(x) - A t)\n"
            "Phi(x) = 1/2 ||A^+ (b(x) - A t)||^2,"
            "  grad Phi = W' (cos(W x) * A^+' A^+ (b(x) - A t)),  Phi* = 0"
        )


@register_problem("pl_curved")
class PLCurved(_RowLeastSquares):
    r"""P7: curved PL manifold, g = (1/2n)‖Aψ(y) − b(x)‖², ψ(y) = y + ½ sin y elementwise.

    With :math:`f = \tfrac12 \|\psi(y) - t\|^2` the problem is P5 in the coordinates
    :math:`u = \psi(y)` (:class:`_RowLeastSquares`):

    .. math::

        S(x) = \psi^{-1}\big(A^\dagger b(x) + \ker A\big), \qquad
        y^*(x) = \psi^{-1}\big(t + A^\dagger(b(x) - At)\big), \qquad
        \Phi = \Phi_{P5}, \ \nabla\Phi = \nabla\Phi_{P5}.

    :math:`\psi' = 1 + \tfrac12 \cos y \in [\tfrac12, \tfrac32]`, so ``g`` is PL with
    :math:`\mu \ge \tfrac14 / \mathrm{cond}` (P5's :math:`1/\mathrm{cond}` times
    :math:`\min\psi'^2 = 1/4`), and ``S(x)``
    is a curved ``(dim_y - rank)``-manifold whenever :math:`\ker A` is not spanned by
    coordinate axes (a random rotation here). :math:`\psi^{-1}` is elementwise Newton.
    At :math:`y^*`, :math:`A^\top (A\psi(y^*) - b) = 0`, so
    :math:`\nabla^2_{yy} g = D A^\top A D / n` with :math:`D = \mathrm{diag}(\psi'(y^*))`.

    ``dist_to_solution_set`` (and ``project``): with ``N`` the orthonormal basis of
    :math:`\ker A`, :math:`S(x) = \{w(z) = \psi^{-1}(u^*(x) + Nz)\}`, so
    :math:`\mathrm{dist}(y, S)^2 = 2\min_z F(z)`, :math:`F(z) = \tfrac12\|w(z) - y\|^2`.
    Damped Newton (Levenberg-Marquardt on the exact Hessian; a step is kept only if ``F``
    decreases) runs at most ``n_newton`` iterations from ``n_starts`` = 8 starts: the
    projections taken in ``u`` and in ``y`` coordinates, :math:`z = N^\top(\psi(y) - u^*)` and
    :math:`N^\top(y - u^*)`, and 6 fixed random draws around the first. A start counts
    if it converged (:math:`\|\nabla F\| \le 10^{-10}(1 + \mathrm{dist})`); its point is
    on ``S(x)`` by construction. The smallest converged distance ``D`` is returned when

    * :math:`D < \sqrt 3` (certified global): on the convex polytope
      :math:`P = \{z : |w_i(z) - y_i| \le D\ \forall i\}`, which holds every ``z`` with
      :math:`F(z) \le D^2/2` (``w_i`` is monotone in :math:`(u^* + Nz)_i`), the Hessian
      :math:`N^\top \mathrm{diag}\big((\psi'(w_i) - (w_i - y_i)\psi''(w_i))/\psi'(w_i)^3\big) N`
      is positive definite because :math:`1 + \tfrac12\cos t + \tfrac12 s \sin t
      \ge 1 - \tfrac12\sqrt{1 + s^2} > 0` for :math:`|s| < \sqrt 3`; ``F`` is strictly convex
      on ``P``, so the stationary point found is the unique minimiser;
    * or every start converged to the same value (to 1e-9 relative): not a proof, the
      agreement of 8 local searches;

    and NaN otherwise ("unknown"). It never returns a point off ``S(x)``. (An undamped
    KKT Newton without a convergence check returned, at :math:`y^* + 3N(0, I)`, points with
    :math:`g - g^*` up to 1e19 and distances below the true one.)
    """

    regime = "PL"
    n_starts = 8  # K starts of the projection (class docstring)
    n_newton = 60  # damped Newton iterations per start

    def _psi(self, y):
        return _s(y)

    def _dpsi(self, y):
        return _ds(y)

    def _d2psi(self, y):
        return _d2s(y)

    def _psi_inv(self, u):
        return _s_inv(u)

    def _on_s(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r"""The point :math:`\psi^{-1}(u^*(x) + Nz)` of ``S(x)``, ``z`` ``(R, K, d - r)``."""
        return _s_inv(self.u_star(x)[:, None, :] + z @ self.ker.T)

    def _newton_terms(self, w: torch.Tensor, y: torch.Tensor):
        r"""Gradient and Hessian of :math:`F(z) = \tfrac12\|w(z) - y\|^2` at ``w = w(z)``:
        :math:`N^\top (r/\psi')` and :math:`N^\top \mathrm{diag}((\psi' - r\psi'')/\psi'^3) N`,
        :math:`r = w - y`."""
        n, ds, res = self.ker, _ds(w), w - y
        grad = (res / ds) @ n
        curv = (ds - res * _d2s(w)) / ds**3
        return grad, n.T @ (curv[..., None] * n)

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The point of ``S(x)`` nearest ``y``, NaN where it is not known (class docstring)."""
        n = self.ker
        u0 = self.u_star(x)[:, None, :]
        base = torch.stack([_s(y) - u0[:, 0], y - u0[:, 0]], dim=1) @ n  # (R, 2, d - r)
        spread = torch.linalg.vector_norm(base[:, :1] - base[:, 1:], dim=-1, keepdim=True)
        gen = torch.Generator().manual_seed(7)
        kick = torch.randn(self.n_starts - 2, n.shape[1], generator=gen, dtype=torch.float64)
        kicks = base[:, :1] + (1.0 + spread) * kick.to(y.device, y.dtype)
        z = torch.cat([base, kicks], dim=1)  # (R, K, d - r)
        yk = y[:, None, :]
        w = self._on_s(x, z)
        loss = 0.5 * ((w - yk) ** 2).sum(-1)
        mu = torch.full_like(loss, 1e-3)
        eye = torch.eye(n.shape[1], dtype=y.dtype, device=y.device)
        for _ in range(self.n_newton):
            grad, hess = self._newton_terms(w, yk)
            if bool((grad.norm(dim=-1) <= 1e-10 * (1.0 + torch.sqrt(2.0 * loss))).all()):
                break
            step = torch.linalg.solve(hess + mu[..., None, None] * eye, -grad[..., None])[..., 0]
            w_new = self._on_s(x, z + step)
            loss_new = 0.5 * ((w_new - yk) ** 2).sum(-1)
            ok = loss_new <= loss
            z = torch.where(ok[..., None], z + step, z)
            w = torch.where(ok[..., None], w_new, w)
            loss = torch.where(ok, loss_new, loss)
            mu = torch.where(ok, mu / 10.0, mu * 10.0).clamp(1e-14, 1e12)
        grad = torch.linalg.vector_norm(self._newton_terms(w, yk)[0], dim=-1)
        dist = torch.sqrt(2.0 * loss)
        converged = grad <= 1e-10 * (1.0 + dist)
        dist = torch.where(converged, dist, torch.inf)
        best, idx = dist.min(dim=1)
        point = torch.gather(w, 1, idx[:, None, None].expand(-1, 1, w.shape[-1]))[:, 0]
        certified = best < math.sqrt(3.0)
        agree = (dist - best[:, None]).abs().max(1).values <= 1e-9 * (1.0 + best)
        known = torch.isfinite(best) & (certified | agree)
        return torch.where(known[:, None], point, torch.nan)

    def dist_to_solution_set(self, x, y):
        return torch.linalg.vector_norm(self.project(x, y) - y, dim=-1)

    def formulas(self) -> str:
        p = self.params
        return (
            f"P7 curved PL manifold: A is {p.n_samples}x{p.dim_y} of rank {p.rank}\n"
            "g(x, y) = 1/(2n) ||A psi(y) - b(x)||^2,  psi(y) = y + sin(y)/2,"
            "  b(x) = sin(W x) + b0\n"
            "f(x, y) = 1/2 ||psi(y) - t||^2\n"
            "S(x) = psi^-1(A^+ b(x) + ker A),  y*(x) = psi^-1(t + A^+ (b(x) - A t))\n"
            "Phi(x) = 1/2 ||A^+ (b(x) - A t)||^2  (as P5),  Phi* = 0"
        )


# ------------------------------------------------------------------------------------
# P6: graph of a monotone map (hyperplane solution set)
# ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PLGraphParams(ProblemParams):
    dim_x: int = 3
    dim_y: int = 4  # S(x) is a hyperplane of dimension dim_y - 1

    def validate(self) -> None:
        super().validate()
        if self.dim_x < 1 or self.dim_y < 1:
            raise ValueError("dim_x and dim_y must be >= 1")


@register_problem("pl_graph")
class PLGraph(Problem):
    r"""P6: nonconvex PL, g = ½(s(y₁) − b(x))² with s(t) = t + ½ sin t; S(x) a hyperplane.

    P6:

    .. math::

        g(x, y) = \tfrac12 \big(s(y_1) - b(x)\big)^2, \qquad
        f(x, y) = \tfrac12 \|y - a(x)\|^2, \qquad
        b(x) = 2 \sin(w^\top x), \quad a(x) = Mx + a_0,

        S(x) = \{y: y_1 = t^*(x)\}, \quad t^* = s^{-1}(b(x)), \quad
        y^* = (t^*, a_2(x), \dots, a_d(x)),

        \Phi(x) = \tfrac12 (t^* - a_1(x))^2, \qquad
        \nabla\Phi = (t^* - a_1)\Big(\frac{\nabla b}{s'(t^*)} - \nabla a_1\Big).

    :math:`s' = 1 + \tfrac12\cos t \in [\tfrac12, \tfrac32]`, so ``g`` is nonconvex in
    :math:`y_1` and PL with :math:`\mu = \tfrac14`. (Not :math:`s(t) = t + \sin t`:
    :math:`s'(\pi) = 0` creates critical points with :math:`g > 0`, and PL fails.)
    :math:`g^* = 0`, :math:`\mathrm{dist}(y, S(x)) = |y_1 - t^*|`, and
    :math:`\Phi^* = 0` (``t*`` is bounded and :math:`a_1` is linear and non-constant, so
    :math:`t^* = a_1` has solutions). :math:`t^*` comes from elementwise Newton, exact to
    machine precision. Data (seeded by ``seed``): :math:`w \sim \mathcal N(0, I/d_x)`,
    :math:`M_{ij} \sim \mathcal N(0, 1/d_x)`, :math:`a_0 \sim \mathcal N(0, I)`; the
    amplitude 2 of ``b`` makes :math:`t^*` sweep the region where :math:`s'` varies.
    ``x0`` and ``y0`` are standard normal per seed.
    """

    regime = "PL"
    Params = PLGraphParams

    def build(self) -> None:
        p = self.params
        gen = self.data_generator()
        dx, dy = p.dim_x, p.dim_y
        self.dim_x, self.dim_y = dx, dy

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64)

        self.w = self.tensor(randn(dx) / dx**0.5)
        self.M = self.tensor(randn(dy, dx) / dx**0.5)
        self.a0 = self.tensor(randn(dy))

    def _b(self, x):
        return 2.0 * torch.sin(x @ self.w)

    def _grad_b(self, x):
        return 2.0 * torch.cos(x @ self.w)[:, None] * self.w

    def _a(self, x):
        return x @ self.M.T + self.a0

    def f(self, x, y, batch=None):
        return 0.5 * ((y - self._a(x)) ** 2).sum(-1)

    def g(self, x, y, batch=None):
        return 0.5 * (_s(y[:, 0]) - self._b(x)) ** 2

    # analytic oracles (tests/problems/test_pl.py checks them)
    def grad_x_f(self, x, y, batch=None):
        return -(y - self._a(x)) @ self.M

    def grad_y_f(self, x, y, batch=None):
        return y - self._a(x)

    def _e1(self, col: torch.Tensor) -> torch.Tensor:
        """``(R,)`` -> ``(R, dim_y)`` with ``col`` in the first coordinate."""
        out = torch.zeros(len(col), self.dim_y, dtype=col.dtype, device=col.device)
        out[:, 0] = col
        return out

    def grad_x_g(self, x, y, batch=None):
        return -(_s(y[:, 0]) - self._b(x))[:, None] * self._grad_b(x)

    def grad_y_g(self, x, y, batch=None):
        y1 = y[:, 0]
        return self._e1((_s(y1) - self._b(x)) * _ds(y1))

    def hvp_yy_g(self, x, y, v, batch=None):
        y1 = y[:, 0]
        curv = _ds(y1) ** 2 + (_s(y1) - self._b(x)) * _d2s(y1)
        return self._e1(curv * v[:, 0])

    def cross_xy_g(self, x, y, v, batch=None):
        return -(_ds(y[:, 0]) * v[:, 0])[:, None] * self._grad_b(x)

    def init_x(self, rng):
        return rng.normal(self.dim_x).to(self.device)

    def init_y(self, rng):
        return rng.normal(self.dim_y).to(self.device)

    # ground truth
    def t_star(self, x: torch.Tensor) -> torch.Tensor:
        return _s_inv(self._b(x))

    def y_star(self, x):
        return torch.cat([self.t_star(x)[:, None], self._a(x)[:, 1:]], dim=-1)

    def phi(self, x):
        return 0.5 * (self.t_star(x) - self._a(x)[:, 0]) ** 2

    def hypergrad(self, x):
        t = self.t_star(x)
        inner = self._grad_b(x) / _ds(t)[:, None] - self.M[0]
        return (t - self._a(x)[:, 0])[:, None] * inner

    def g_star(self, x):
        return torch.zeros_like(x[:, 0])

    @property
    def phi_star(self) -> float:
        return 0.0

    def dist_to_solution_set(self, x, y):
        return (y[:, 0] - self.t_star(x)).abs()

    def sample_solution_set(self, x, n):
        z = _solution_samples(x.shape[0], n, self.dim_y, self.dtype, self.device)
        z[:, :, 0] = self.t_star(x)[:, None]
        return z

    def formulas(self) -> str:
        return (
            "P6 graph of a monotone map (nonconvex PL, mu = 1/4)\n"
            "g(x, y) = 1/2 (s(y_1) - b(x))^2,  s(t) = t + sin(t)/2,  b(x) = 2 sin(w'x)\n"
            "f(x, y) = 1/2 ||y - a(x)||^2,  a(x) = M x + a0\n"
            "S(x) = {y_1 = t*(x) = s^-1(b(x))},  y* = (t*, a_2(x), ..., a_d(x))\n"
            "Phi(x) = 1/2 (t* - a_1(x))^2,  grad Phi = (t* - a_1)(grad b / s'(t*) - M_1),"
            "  Phi* = 0"
        )


# ------------------------------------------------------------------------------------
# P10: V-PBGD toy
# ------------------------------------------------------------------------------------


@register_problem("vpbgd_toy")
class VPBGDToy(Problem):
    r"""P10: V-PBGD toy, singleton nonconvex-PL lower level y* = −x, nonconvex Φ on [0, 3].

    Shen & Chen, ICML 2023 (arXiv 2302.05185, ``V-PBGD/toy/toy.py``).
    :math:`x, y \in \mathbb R`, :math:`z = x + y`, :math:`s = 2 - 4x`:

    .. math::

        g(x, y) = z^2 + x \sin^2 z, \qquad
        f(x, y) = \frac{\cos(4y + 2)}{1 + e^{2 - 4x}} + \tfrac12 \ln\big((4x - 2)^2 + 1\big),

        y^*(x) = -x, \quad g^* = 0, \quad
        \Phi(x) = \frac{\cos s}{1 + e^s} + \tfrac12 \ln(s^2 + 1), \quad
        \Phi'(x) = \frac{4(\sin s\,(1 + e^s) + \cos s\, e^s)}{(1 + e^s)^2} - \frac{4s}{s^2 + 1}.

    On :math:`[0, 3]`, :math:`\Phi` has local minima near 0.382, 1.215 (global,
    :math:`\Phi^* \approx 0.19991`) and 2.829, and local maxima near 0.747 and 2.109.

    How ``x`` outside :math:`[0, 3]` is handled. The paper projects ``x`` onto
    :math:`[0, 3]`; the benchmark's algorithms are unconstrained, so ``f`` and ``g`` are
    the formulas above on all of :math:`\mathbb R`, unchanged. This loses nothing near the
    box: :math:`\Phi'(0) \approx -1.34 < 0` and :math:`\Phi'(3) \approx 2.57 > 0` point
    back inside, so descent started in :math:`[0, 3]` with small steps stays there and
    the constrained and unconstrained stationary points in the box coincide. The
    extra metric ``proj_grad_norm`` :math:`= |x - \Pi_{[0,3]}(x - \Phi'(x))|` is the
    paper's constrained stationarity measure. The ground truth is exact for
    :math:`x \ge -1`: there :math:`z^2 + x\sin^2 z > 0` for :math:`z \ne 0`, so
    :math:`y^* = -x` is the unique global minimiser of ``g``. For :math:`x < -1`,
    :math:`z = 0` is a local maximum of ``g``, ``S(x)`` is two points and ``phi``,
    ``hypergrad`` and ``y_star`` return NaN (the problem is outside its domain).
    ``g`` is PL in ``y`` for ``x`` in the box (its only critical point is ``z = 0`` for
    :math:`-1 < x \le 3`); for much larger ``x`` spurious critical points appear.

    Choices: ``x0 ~ U(0, 3)`` and ``y0 ~ U(-5, 8.5)`` per seed (the paper draws
    ``x0 ~ U(0, 3.5)`` and projects; we draw inside the box). The repo's hand-written
    :math:`\partial_x f` has :math:`1 + e^{2s}` where :math:`(1 + e^s)^2` belongs; the
    oracles here are the exact derivatives (tested against autodiff).
    """

    regime = "PL"

    def build(self) -> None:
        self.dim_x = self.dim_y = 1
        # Phi* at the root of Phi' near 1.215, by Newton on Phi' (Phi'' by autodiff)
        x = self.tensor([[1.215]])
        for _ in range(20):
            dh = torch.func.grad(lambda x_: self.hypergrad(x_).sum())(x)
            x = x - self.hypergrad(x) / dh
        self.x_star = x
        self._phi_star = float(self.phi(x))

    def f(self, x, y, batch=None):
        s = 2.0 - 4.0 * x[:, 0]
        return torch.cos(4.0 * y[:, 0] + 2.0) * torch.sigmoid(-s) + 0.5 * torch.log1p(s**2)

    def g(self, x, y, batch=None):
        z = (x + y)[:, 0]
        return z**2 + x[:, 0] * torch.sin(z) ** 2

    # analytic oracles (tests/problems/test_pl.py checks them)
    def grad_x_f(self, x, y, batch=None):
        s = 2.0 - 4.0 * x
        sig = torch.sigmoid(s)
        return 4.0 * torch.cos(4.0 * y + 2.0) * sig * (1.0 - sig) - 4.0 * s / (1.0 + s**2)

    def grad_y_f(self, x, y, batch=None):
        return -4.0 * torch.sin(4.0 * y + 2.0) * torch.sigmoid(4.0 * x - 2.0)

    def grad_x_g(self, x, y, batch=None):
        z = x + y
        return 2.0 * z + torch.sin(z) ** 2 + x * torch.sin(2.0 * z)

    def grad_y_g(self, x, y, batch=None):
        z = x + y
        return 2.0 * z + x * torch.sin(2.0 * z)

    def hvp_yy_g(self, x, y, v, batch=None):
        return (2.0 + 2.0 * x * torch.cos(2.0 * (x + y))) * v

    def cross_xy_g(self, x, y, v, batch=None):
        z = x + y
        return (2.0 + torch.sin(2.0 * z) + 2.0 * x * torch.cos(2.0 * z)) * v

    def init_x(self, rng):
        return 3.0 * rng.uniform(1).to(self.device)

    def init_y(self, rng):
        return (-5.0 + 13.5 * rng.uniform(1)).to(self.device)

    # ground truth (exact for x >= -1, NaN below)
    def _in_domain(self, x, value):
        return torch.where(x >= -1.0, value, torch.full_like(value, math.nan))

    def y_star(self, x):
        return self._in_domain(x, -x)

    def phi(self, x):
        s = 2.0 - 4.0 * x[:, 0]
        value = torch.cos(s) * torch.sigmoid(-s) + 0.5 * torch.log1p(s**2)
        return self._in_domain(x[:, 0], value)

    def hypergrad(self, x):
        s = 2.0 - 4.0 * x
        sig = torch.sigmoid(s)  # e^s / (1 + e^s)
        value = 4.0 * (torch.sin(s) * (1.0 - sig) + torch.cos(s) * sig * (1.0 - sig))
        return self._in_domain(x, value - 4.0 * s / (1.0 + s**2))

    def g_star(self, x):
        return self._in_domain(x[:, 0], torch.zeros_like(x[:, 0]))

    @property
    def phi_star(self) -> float:
        return self._phi_star

    def metrics(self, x, y):
        hg = self.hypergrad(x)
        return {"proj_grad_norm": (x - (x - hg).clamp(0.0, 3.0)).abs()[:, 0]}

    def formulas(self) -> str:
        return (
            "P10 V-PBGD toy, x in [0, 3] (formulas used unchanged outside)\n"
            "g(x, y) = (x + y)^2 + x sin^2(x + y),  y*(x) = -x\n"
            "f(x, y) = cos(4y + 2) / (1 + exp(2 - 4x)) + 1/2 log((4x - 2)^2 + 1)\n"
            "Phi(x) = cos(s) / (1 + e^s) + 1/2 log(s^2 + 1),  s = 2 - 4x\n"
            f"Phi* = {self.phi_star:.12g} at x ~ 1.215;"
            "  proj_grad_norm = |x - clip(x - Phi'(x), 0, 3)|"
        )
