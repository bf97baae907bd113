r"""Deformed Mexican hats (HG-MS / BGS regime): P2 and the
deformation of Arbel & Mairal (NeurIPS 2022, arXiv 2207.04888) Fig. 2 (right) whose minima
turn into saddles.

* ``ellipsoid`` (P2): :math:`g = \tfrac14(y^\top M(x) y - 1)^2`, a manifold of minimisers
  (an ellipsoid) whose shape moves with ``x``; linear ``f``.
* ``hat_saddle``: :math:`g = \tfrac14(\|y\|^2 - 1)^2 + x y_1`; for :math:`x \ne 0` the ring
  of minima breaks into one minimiser and one saddle, at :math:`x = 0` it is the circle,
  so the solution map is discontinuous there.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from bibench import Problem, ProblemParams, register_problem

ELL_MU0 = 0.25  # B B^T + ELL_MU0 I >= ELL_MU0 I
ELL_SPREAD = 0.3  # size of the x-dependent part of B(x)
ELL_W = 0.5  # |w(x) - w0| <= ELL_W < |w0| = 1, so w(x) != 0 and the selection is unique


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _sphere_samples(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """Deterministic uniform points of the unit sphere in ``R^dim``, ``(R, n, dim)``."""
    z = _randn(torch.Generator().manual_seed(2024), x.shape[0], n, dim).to(x.device, x.dtype)
    return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)


def project_ellipsoid(mat: torch.Tensor, y: torch.Tensor, iters: int = 200) -> torch.Tensor:
    r"""Nearest point of :math:`\{z : z^\top M z = 1\}` to ``y``, per run (``mat`` (R, d, d)).

    With :math:`M = P\,\mathrm{diag}(\nu)P^\top` and :math:`\tilde y = P^\top y`, the
    nearest point is :math:`\tilde z_i = \tilde y_i/(1 + s\nu_i)` with the root
    :math:`s > -1/\nu_{\max}` of :math:`\sum_i \nu_i\tilde z_i^2 = 1` (the Lagrangian's
    Hessian :math:`I + sM` is PSD there), found by bisection in
    :math:`\sigma = s + 1/\nu_{\max} \ge 0` (no cancellation near the pole). Hard case
    (:math:`\tilde y` has no component on the top eigenvector and the other components
    alone do not reach the surface, e.g. :math:`y = 0`): :math:`\sigma = 0` and the top
    component fills the constraint (one of two tied points).
    """
    nu, vecs = torch.linalg.eigh(mat)
    yt = (vecs.transpose(1, 2) @ y[..., None])[..., 0]
    top = nu[:, -1:]
    gap = 1.0 - nu / top  # >= 0, exactly 0 on the top eigenvector
    # at s = sqrt(nu_max)|y|/nu_min the constraint is already met from the outside
    hi = torch.sqrt(top[:, 0]) * torch.linalg.vector_norm(y, dim=-1) / nu[:, 0] + 1 / top[:, 0]
    lo = torch.zeros_like(hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        zt = yt / (gap + mid[:, None] * nu)
        inside = (nu * zt**2).sum(-1) > 1  # sigma too small
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    zt = yt / (gap + hi[:, None] * nu)
    rest = torch.where(gap > 0, yt / gap.clamp(min=1e-300), 0.0)
    hard = (yt[:, -1] == 0) & ((nu * rest**2).sum(-1) <= 1)
    fill = torch.sqrt((1 - (nu * rest**2).sum(-1)).clamp(min=0) / top[:, 0])
    zt_hard = torch.cat([rest[:, :-1], fill[:, None]], dim=-1)
    zt = torch.where(hard[:, None], zt_hard, zt)
    return (vecs @ zt[..., None])[..., 0]


# ------------------------------------------------------------------------------------
# P2: ellipsoid
# ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EllipsoidParams(ProblemParams):
    dim_x: int = 2
    dim_y: int = 2
    lam: float = 0.1  # h(x) = lam/2 |x|^2 (makes Phi coercive)

    def validate(self) -> None:
        super().validate()
        if self.dim_x < 1 or self.dim_y < 1:
            raise ValueError(f"dim_x and dim_y must be >= 1, got {self.dim_x}, {self.dim_y}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")


@register_problem("ellipsoid")
class Ellipsoid(Problem):
    r"""P2: deformed hat, S(x) the ellipsoid yᵀM(x)y = 1, linear f; closed-form selection.

    P2:

    .. math::

        g(x, y) = \tfrac14\big(y^\top M(x) y - 1\big)^2, \qquad
        f(x, y) = w(x)^\top y + \tfrac{\lambda}2\|x\|^2,

        y^* = -M^{-1}w/\sqrt q, \quad q = w^\top M^{-1} w, \quad
        \Phi = -\sqrt q + \tfrac{\lambda}2\|x\|^2,

        \partial_i\Phi = -\frac{2 v^\top \partial_i w - v^\top(\partial_i M) v}{2\sqrt q}
                         + \lambda x_i, \quad v = M^{-1} w.

    Choices: :math:`M(x) = \kappa\,(B(x)B(x)^\top + \mu_0 I)` with
    :math:`B(x) = B_0 + \sum_j \sin(x_j) B_j`, :math:`B_0 = Q_0\,\mathrm{diag}(1 \to 0.5)`,
    :math:`B_j \sim 0.3\,N(0, I/m)`, :math:`\mu_0 = 0.25`, and
    :math:`\kappa = 1/(2((\|B_0\| + \sum_j\|B_j\|)^2 + \mu_0))`, so
    :math:`\kappa\mu_0 I \preceq M \preceq I/2` and the Hessian on :math:`S(x)`,
    :math:`2(My)(My)^\top`, has norm :math:`\le 2\lambda_{\max}(M) \le 1` (the
    algorithms' default lower step 1 is stable near S);
    :math:`\partial_j M = \kappa\cos(x_j)(B_j B^\top + B B_j^\top)`;
    :math:`w(x) = w_0 + \tfrac{0.5}{\sqrt d}\tanh(Wx)` with :math:`\|w_0\| = 1`, so
    :math:`w \ne 0` and the selection is unique for every ``x`` (ties only at
    :math:`w = 0`). Φ is nonconvex, bounded below and coercive for :math:`\lambda > 0`; Φ*
    is unknown (NaN). :math:`\mathrm{dist}(y, S(x))` by the secular equation of
    :func:`project_ellipsoid`; :math:`g^* = 0`. ``x0 ~ N(0, I)``, ``y0 ~ N(0, I)`` (almost
    surely not the critical point ``y = 0``).
    """

    regime = "manifold"
    Params = EllipsoidParams

    def build(self) -> None:
        p = self.params
        gen = self.data_generator()
        m, d = p.dim_x, p.dim_y
        self.dim_x, self.dim_y = m, d
        q0, _ = torch.linalg.qr(_randn(gen, d, d))
        t = self.tensor
        self.B0 = t(q0 @ torch.diag(torch.linspace(1.0, 0.5, d, dtype=torch.float64)))
        self.Bj = t(ELL_SPREAD * _randn(gen, m, d, d) / math.sqrt(m))
        w0 = _randn(gen, d)
        self.w0 = t(w0 / torch.linalg.vector_norm(w0))
        self.W = t(_randn(gen, d, m) / math.sqrt(m))
        self.lam = p.lam
        bound = (
            torch.linalg.matrix_norm(self.B0, ord=2)
            + torch.linalg.matrix_norm(self.Bj, ord=2).sum()
        )
        self.kappa = 0.5 / float(bound**2 + ELL_MU0)  # lambda_max(M) <= 1/2

    def bmat(self, x: torch.Tensor) -> torch.Tensor:
        return self.B0 + torch.einsum("rj,jab->rab", torch.sin(x), self.Bj)

    def mmat(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """M(x), from ``b = B(x)`` when the caller has it."""
        b = self.bmat(x) if b is None else b
        eye = torch.eye(self.dim_y, dtype=x.dtype, device=x.device)
        return self.kappa * (b @ b.transpose(1, 2) + ELL_MU0 * eye)

    def wvec(self, x: torch.Tensor) -> torch.Tensor:
        return self.w0 + ELL_W / math.sqrt(self.dim_y) * torch.tanh(x @ self.W.T)

    def f(self, x, y, batch=None):
        return (self.wvec(x) * y).sum(-1) + 0.5 * self.lam * (x**2).sum(-1)

    def g(self, x, y, batch=None):
        quad = (y * (self.mmat(x) @ y[..., None])[..., 0]).sum(-1)
        return 0.25 * (quad - 1.0) ** 2

    # analytic oracles (autodiff through M(x) costs ~3 ms a call): with s = yᵀMy − 1,
    # ∇_y g = s My, ∇²_yy g v = 2 My (My·v) + s Mv, ∂_i M = κ cos x_i (B_i Bᵀ + B B_iᵀ),
    # ∂_i g = ½ s yᵀ∂_iM y, ∂_i⟨∇_y g, v⟩ = (yᵀ∂_iM y)(My·v) + s yᵀ∂_iM v
    def _dw(self, x):
        return ELL_W / math.sqrt(self.dim_y) * (1 - torch.tanh(x @ self.W.T) ** 2)

    def _sides(self, x, y):
        """M, M y, s, and (a, c) -> aᵀ(∂_i M)c for every i (B(x) built once)."""
        b = self.bmat(x)
        m = self.mmat(x, b)
        my = (m @ y[..., None])[..., 0]
        s = (y * my).sum(-1) - 1.0

        def dm(a, c):  # aᵀ (∂_i M) c for every i, (R, m)
            bt_a, bt_c = torch.einsum("rab,ra->rb", b, a), torch.einsum("rab,ra->rb", b, c)
            bj_a = torch.einsum("jab,ra->rjb", self.Bj, a)
            bj_c = torch.einsum("jab,ra->rjb", self.Bj, c)
            inner = torch.einsum("rjb,rb->rj", bj_a, bt_c) + torch.einsum("rjb,rb->rj", bj_c, bt_a)
            return self.kappa * torch.cos(x) * inner

        return m, my, s, dm

    def grad_x_f(self, x, y, batch=None):
        return (y * self._dw(x)) @ self.W + self.lam * x

    def grad_y_f(self, x, y, batch=None):
        return self.wvec(x)

    def grad_x_g(self, x, y, batch=None):
        _, _, s, dm = self._sides(x, y)
        return 0.5 * s[:, None] * dm(y, y)

    def grad_y_g(self, x, y, batch=None):
        _, my, s, _ = self._sides(x, y)
        return s[:, None] * my

    def hvp_yy_g(self, x, y, v, batch=None):
        m, my, s, _ = self._sides(x, y)
        mv = (m @ v[..., None])[..., 0]
        return 2 * my * (my * v).sum(-1, keepdim=True) + s[:, None] * mv

    def cross_xy_g(self, x, y, v, batch=None):
        _, my, s, dm = self._sides(x, y)
        return dm(y, y) * (my * v).sum(-1, keepdim=True) + s[:, None] * dm(y, v)

    # ground truth
    def _solve(self, x):
        w = self.wvec(x)
        v = torch.linalg.solve(self.mmat(x), w)
        return w, v, (w * v).sum(-1)

    def y_star(self, x):
        _, v, q = self._solve(x)
        return -v / torch.sqrt(q)[:, None]

    def phi(self, x):
        _, _, q = self._solve(x)
        return -torch.sqrt(q) + 0.5 * self.lam * (x**2).sum(-1)

    def hypergrad(self, x):
        _, v, q = self._solve(x)
        dw = ELL_W / math.sqrt(self.dim_y) * (1 - torch.tanh(x @ self.W.T) ** 2)
        v_dw = (v * dw) @ self.W  # v^T d_i w
        bt_v = torch.einsum("rab,ra->rb", self.bmat(x), v)  # B^T v
        bj_v = torch.einsum("jab,ra->rjb", self.Bj, v)  # B_j^T v
        v_dm_v = 2 * self.kappa * torch.cos(x) * torch.einsum("rjb,rb->rj", bj_v, bt_v)
        return -(2 * v_dw - v_dm_v) / (2 * torch.sqrt(q))[:, None] + self.lam * x

    def g_star(self, x):
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def dist_to_solution_set(self, x, y):
        return torch.linalg.vector_norm(y - project_ellipsoid(self.mmat(x), y), dim=-1)

    def sample_solution_set(self, x, n):
        nu, vecs = torch.linalg.eigh(self.mmat(x))
        root_inv = vecs @ torch.diag_embed(nu**-0.5) @ vecs.transpose(1, 2)  # M^{-1/2}
        return _sphere_samples(x, n, self.dim_y) @ root_inv.transpose(1, 2)

    def metrics(self, x, y):
        """``selection_gap`` :math:`= f(x, \\Pi_S y) - \\Phi(x) \\ge 0` with
        :math:`\\Pi_S` the nearest-point projection onto the ellipsoid."""
        proj = project_ellipsoid(self.mmat(x), y)
        return {"selection_gap": self.f(x, proj) - self.phi(x)}

    def init_x(self, rng):
        return rng.normal(self.dim_x).to(self.device)

    def init_y(self, rng):
        return rng.normal(self.dim_y).to(self.device)

    def formulas(self) -> str:
        p = self.params
        return "\n".join([
            f"P2 ellipsoid: dim_x = {self.dim_x}, dim_y = {self.dim_y}, lam = {p.lam:g}",
            "g(x, y) = 1/4 (y^T M(x) y - 1)^2,  S(x) = {y : y^T M(x) y = 1},  g* = 0",
            f"M(x) = {self.kappa:.4g} (B(x) B(x)^T + {ELL_MU0:g} I),"
            "  B(x) = B0 + sum_j sin(x_j) B_j",
            f"f(x, y) = w(x)^T y + {p.lam:g}/2 |x|^2,  w(x) = w0 + "
            f"{ELL_W / math.sqrt(self.dim_y):.4g} tanh(W x),  |w0| = 1",
            "y*(x) = -M^-1 w / sqrt(q),  q = w^T M^-1 w,  Phi(x) = -sqrt(q) + lam/2 |x|^2",
            "d_i Phi = -(2 v^T d_i w - v^T (d_i M) v) / (2 sqrt(q)) + lam x_i,  v = M^-1 w",
        ])  # fmt: skip


# ------------------------------------------------------------------------------------
# The hat whose minima become saddles (Arbel & Mairal 2022, Fig. 2 right)
# ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HatSaddleParams(ProblemParams):
    x_target: float = 1.0  # x_t in f; > 0 so that Phi* sits at some x > 0
    x_init: float = -0.5  # x0 = x_init + 0.1 N(0, 1): starts on the other side of the jump

    def validate(self) -> None:
        super().validate()
        if self.x_target <= 0:
            raise ValueError(f"x_target must be > 0, got {self.x_target}")


@register_problem("hat_saddle")
class HatSaddle(Problem):
    r"""Deformed hat whose minima turn into saddles (Arbel & Mairal Fig. 2 right); S jumps at x = 0.

    Arbel & Mairal (NeurIPS 2022, arXiv 2207.04888) Fig. 2 right (the paper gives no
    formula; this one is ours). :math:`x \in \mathbb R`,
    :math:`y \in \mathbb R^2`:

    .. math::

        g(x, y) = \tfrac14(\|y\|^2 - 1)^2 + x\, y_1, \qquad
        f(x, y) = \tfrac12\|y + e_1\|^2 + \tfrac12(x - x_t)^2.

    Critical points of ``g`` satisfy :math:`(\|y\|^2 - 1) y_2 = 0` and
    :math:`(\|y\|^2 - 1) y_1 + x = 0`; for :math:`x \ne 0` they all lie on :math:`y_2 = 0`
    at the real roots of :math:`t^3 - t + x = 0`. The minimiser is
    :math:`y^* = (t(x), 0)` with :math:`t(x)` the smallest root for :math:`x > 0` and the
    largest for :math:`x < 0` (:math:`|t| > 1`, Hessian :math:`\mathrm{diag}(3t^2 - 1,
    t^2 - 1) \succ 0`); the root near the other pole is a saddle (tangential curvature
    :math:`-x/t < 0`) and the root near 0 a local maximum. So :math:`S(x)` is a singleton
    for :math:`x \ne 0` and the unit circle at :math:`x = 0`: the ring's minima become
    saddles and the solution map jumps from :math:`\approx e_1` to :math:`\approx -e_1`
    as ``x`` crosses 0 from below. Roots by Newton's method from
    :math:`\mp(1 + |x|^{1/3})` (monotone, machine precision). With
    :math:`t' = -1/(3t^2 - 1)`,

    .. math::

        \Phi(x) = \tfrac12(t(x) + 1)^2 + \tfrac12(x - x_t)^2, \qquad
        \Phi'(x) = -\frac{t + 1}{3t^2 - 1} + x - x_t \quad (x \ne 0).

    At :math:`x = 0` (no exact gradient there): :math:`S(0)` is the circle,
    :math:`y^*(0) = -e_1`, :math:`\Phi(0) = x_t^2/2 = \Phi(0^+)` while
    :math:`\Phi(0^-) = 2 + x_t^2/2`: Φ is lower semicontinuous with a downward jump at 0;
    ``hypergrad(0)`` returns the right derivative :math:`-x_t`. Φ is convex on
    :math:`x > 0` and :math:`\ge 2` on :math:`x < 0`, so Φ* (computed in ``build`` by
    Newton on Φ') is at the unique :math:`x^* \in (0, x_t)`. Starting at
    :math:`x_0 < 0`, gradient descent on Φ crosses the jump; a follower sitting at
    :math:`\approx e_1` is then at a saddle (the BGS flow selection jumps, Fig. 2 right).
    ``y0`` is uniform in direction with radius in :math:`[0.5, 1.5)`. Scale: the Hessian
    on :math:`S(x)` has norm :math:`3t^2 - 1 \ge 2`, so lower gradient steps must stay
    below :math:`2/(3t^2 - 1)` (about 0.6 for :math:`|x| \le 0.5`), not the usual 1.
    """

    regime = "manifold"
    Params = HatSaddleParams

    def build(self) -> None:
        self.dim_x, self.dim_y = 1, 2
        self.x_t = self.params.x_target
        x = torch.tensor([[self.x_t]], dtype=torch.float64)
        for _ in range(50):  # Newton on Phi' over x > 0, where Phi is convex
            t = self.root(x)
            dt = -1 / (3 * t**2 - 1)
            d2t = 6 * t * dt / (3 * t**2 - 1) ** 2
            x = x - ((t + 1) * dt + x - self.x_t) / (dt**2 + (t + 1) * d2t + 1)
        self._x_star = float(x)
        self._phi_star = float(self.phi(self.tensor(x)))

    def f(self, x, y, batch=None):
        return 0.5 * ((y[:, 0] + 1) ** 2 + y[:, 1] ** 2) + 0.5 * (x[:, 0] - self.x_t) ** 2

    def g(self, x, y, batch=None):
        return 0.25 * ((y**2).sum(-1) - 1) ** 2 + x[:, 0] * y[:, 0]

    # analytic oracles (autodiff costs ~2 ms a call): ∇_y g = (|y|² − 1) y + x e1,
    # ∇²_yy g v = (|y|² − 1) v + 2 y (y·v), ∇_x g = y1, ∇²_xy g v = v1
    def grad_x_f(self, x, y, batch=None):
        return x - self.x_t

    def grad_y_f(self, x, y, batch=None):
        return y + torch.cat([torch.ones_like(x), torch.zeros_like(x)], dim=-1)

    def grad_x_g(self, x, y, batch=None):
        return y[:, :1]

    def grad_y_g(self, x, y, batch=None):
        e1 = torch.cat([x, torch.zeros_like(x)], dim=-1)
        return ((y**2).sum(-1, keepdim=True) - 1) * y + e1

    def hvp_yy_g(self, x, y, v, batch=None):
        return ((y**2).sum(-1, keepdim=True) - 1) * v + 2 * y * (y * v).sum(-1, keepdim=True)

    def cross_xy_g(self, x, y, v, batch=None):
        return v[:, :1]

    def root(self, x: torch.Tensor) -> torch.Tensor:
        """The minimising root ``t(x)`` (R, 1) of :math:`t^3 - t + x` (``t(0) = -1``)."""
        sgn = torch.where(x >= 0, 1.0, -1.0).detach()
        t = -sgn * (1 + x.detach().abs() ** (1 / 3))
        for _ in range(60):
            t = t - (t**3 - t + x.detach()) / (3 * t**2 - 1)
        return t - (t**3 - t + x) / (3 * t**2 - 1)  # attached: the implicit derivative

    def y_star(self, x):
        return torch.cat([self.root(x), torch.zeros_like(x)], dim=-1)

    def phi(self, x):
        return 0.5 * (self.root(x)[:, 0] + 1) ** 2 + 0.5 * (x[:, 0] - self.x_t) ** 2

    def hypergrad(self, x):
        t = self.root(x)
        return -(t + 1) / (3 * t**2 - 1) + x - self.x_t

    def g_star(self, x):
        return self.g(x, self.y_star(x))

    def dist_to_solution_set(self, x, y):
        on_circle = (torch.linalg.vector_norm(y, dim=-1) - 1).abs()
        to_point = torch.linalg.vector_norm(y - self.y_star(x), dim=-1)
        return torch.where(x[:, 0] == 0, on_circle, to_point)

    def sample_solution_set(self, x, n):
        circle = _sphere_samples(x, n, 2)
        point = self.y_star(x)[:, None, :].expand(-1, n, 2)
        return torch.where((x[:, 0] == 0)[:, None, None], circle, point)

    @property
    def phi_star(self) -> float:
        return self._phi_star

    def init_x(self, rng):
        return self.params.x_init + 0.1 * rng.normal(1).to(self.device)

    def init_y(self, rng):
        """A uniform direction at radius ``U[0.5, 1.5)``: near the ring, away from the
        critical point 0 and from the region where the quartic is steep."""
        z = rng.normal(2).to(self.device)
        radius = 0.5 + rng.uniform(1).to(self.device)
        return radius * z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)

    def plot_plane(self, x):
        """``bibench show`` draws the whole ring (S(x) is a single point for x != 0)."""
        eye = torch.eye(2, dtype=x.dtype, device=x.device)
        return torch.zeros_like(self.y_star(x)), eye.expand(x.shape[0], 2, 2), 1.6 + 0 * x[:, 0]

    def formulas(self) -> str:
        return "\n".join([
            f"hat_saddle (Arbel & Mairal Fig. 2 right): dim_x = 1, dim_y = 2, "
            f"x_target = {self.x_t:g}, x_init = {self.params.x_init:g}",
            "g(x, y) = 1/4 (|y|^2 - 1)^2 + x y1",
            f"f(x, y) = 1/2 |y + e1|^2 + 1/2 (x - {self.x_t:g})^2",
            "S(x) = {(t(x), 0)}, t^3 - t + x = 0: smallest root for x > 0, largest for x < 0;"
            " S(0) = unit circle",
            "Phi(x) = 1/2 (t + 1)^2 + 1/2 (x - x_t)^2,  Phi'(x) = -(t + 1)/(3 t^2 - 1) + x - x_t",
            f"Phi jumps at 0: Phi(0-) = {2 + self.x_t**2 / 2:g} > Phi(0) = Phi(0+) = "
            f"{self.x_t**2 / 2:g};  Phi* = {self.phi_star:.12g} at x* = {self._x_star:.12g}",
        ])  # fmt: skip
