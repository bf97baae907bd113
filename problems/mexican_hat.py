r"""Mexican-hat lower levels (HG-MS / BGS regime): P1, P1′, P3, P4.

All four problems share the lower level (the Mexican hat of Arbel & Mairal, NeurIPS 2022,
arXiv 2207.04888, Fig. 2)

.. math::

    g(x, y) = \tfrac14\big(\|y_a - c(x)\|^2 - r(x)^2\big)^2 + \tfrac12\|y_b - e(x)\|^2,
    \qquad y = (y_a, y_b),\ y_a \in \mathbb R^{k+1},\ y_b \in \mathbb R^{d-k-1},

whose solution set is a manifold of minimisers, :math:`S(x) = \{c(x) + r(x)u : \|u\| = 1\}
\times \{e(x)\} = S^k \times \{e(x)\}`, with :math:`g^* = 0` and

.. math::

    \mathrm{dist}(y, S(x)) = \sqrt{(\|y_a - c\| - r)^2 + \|y_b - e\|^2}.

``g`` is only locally PL: :math:`y_a = c(x)` is a critical point (a local maximum in
:math:`y_a`, :math:`g = r^4/4`), so initial points avoid it. At :math:`y \in S(x)` with
:math:`u = (y_a - c)/r`,

.. math::

    \nabla^2_{yy} g = \mathrm{diag}(2r^2 uu^\top, I), \qquad
    \nabla^2_{xy} g = \big[-2r^2 (J_c^\top u + \nabla r) u^\top,\ -J_e^\top\big],

so :math:`\ker \nabla^2_{yy} g = T_y S(x)` (Morse–Bott) and the pseudoinverse hypergradient
:math:`\nabla_x f - \nabla^2_{xy} g (\nabla^2_{yy} g)^\dagger \nabla_y f` at the optimistic
selection equals :math:`\nabla\Phi` (HG-MS (Masiha, Shen, Kiyavash, He; arXiv 2605.09209)).

The moving pieces (chosen here; Arbel & Mairal give no formulas) are smooth and bounded:

.. math::

    c(x) = \varepsilon_c r_0 U \tanh(Cx)/\sqrt p, \quad
    r(x) = r_0 \exp(\varepsilon_r \sin(w^\top x)), \quad e(x) = \varepsilon_e \sin(Ex),

with :math:`U` of :math:`p` orthonormal columns (so :math:`\|c\| \le \varepsilon_c r_0`),
:math:`\varepsilon_c = \varepsilon_e = 0.5`, :math:`\varepsilon_r = 0.3` and Gaussian
:math:`C, w, E` drawn from the instance seed.

Scale: on :math:`S(x)` the Hessian is :math:`2r^2 \le 2 r_0^2 e^{0.6}`, below 1 for the
default :math:`r_0 = 0.5` (as for ``y_b``), and from ``init_y`` (at most
:math:`2.75 r_0` from the centre) gradient descent on ``g`` with step 1 contracts
radially, so the algorithms' default lower step of 1 (:math:`1/L_g`) is stable.
Analytic oracles for ``g`` (and for ``f`` in P1, P1′, P3) are checked against autodiff in
tests/problems/test_mexican_hat.py.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from typing import NamedTuple

import torch

from bibench import Problem, ProblemParams, register_problem

EPS_C, EPS_R, EPS_E = 0.5, 0.3, 0.5  # motion of the centre, log-radius and y_b-target
RHO0 = 0.5  # P1: distance (in units of r0) of a(x) from the plane the centre moves in


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _orthogonal(gen: torch.Generator, n: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(_randn(gen, n, n))
    return q


def _semi_orthogonal(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
    """A random ``(rows, cols)`` matrix whose singular values are all 1 (orthonormal
    columns or rows), so its spectral norm is 1 whatever its shape."""
    q, _ = torch.linalg.qr(_randn(gen, max(rows, cols), min(rows, cols)))
    return q if rows >= cols else q.T


def _sphere_samples(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """Deterministic uniform points of the unit sphere in ``R^dim``, ``(R, n, dim)``."""
    gen = torch.Generator().manual_seed(2024)
    z = _randn(gen, x.shape[0], n, dim).to(x.device, x.dtype)
    return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)


_version = operator.attrgetter("_version")
_requires_grad = operator.attrgetter("requires_grad")


def last_call(method):
    r"""Reuse a method's last result while it is called again on the very same tensors.

    An algorithm calls several oracles at one point: AID's ``T`` inner gradients share
    ``x``, its CG products share ``(x, y)``, SOBA's five calls share both, and the
    ground-truth metrics share ``x``. The pieces that depend on ``x`` (or ``(x, y)``)
    alone are then computed once, as a hand-written loop would hoist them. A hit needs
    the same tensor objects, not modified in place since (``_version``; inference tensors,
    which keep no version, are never reused), and no autograd graph to build through them;
    the result is the one a fresh call returns, bit for bit.
    """
    name = method.__name__

    @functools.wraps(method)
    def cached(self, *args: torch.Tensor):
        if torch.is_grad_enabled() and any(map(_requires_grad, args)):
            return method(self, *args)
        try:  # the ids stay the arguments' own while the memo holds them
            key = (*map(id, args), *map(_version, args))
        except RuntimeError:  # an inference tensor
            return method(self, *args)
        memo = self.__dict__.setdefault("_last_call", {})
        hit = memo.get(name)
        if hit is not None and hit[0] == key:
            return hit[2]
        out = method(self, *args)
        memo[name] = (key, args, out)
        return out

    return cached


class Moving(NamedTuple):
    """c, r, e at a batch of ``x`` with what their Jacobians need."""

    c: torch.Tensor  # (R, ka)
    dc: torch.Tensor  # (R, p): c_scale tanh'(Cx), so J_c = U diag(dc) C
    r: torch.Tensor  # (R,)
    grad_r: torch.Tensor  # (R, m)
    e: torch.Tensor  # (R, kb)
    de: torch.Tensor  # (R, kb): eps_e cos(Ex), so J_e = diag(de) E
    rr: torch.Tensor  # (R, 1): r^2, for the lower-level oracles at many y


class HatLowerLevel(Problem):
    """Base of the Mexican-hat family: the lower level ``g`` above and its ground truth.

    A subclass's ``build`` calls :meth:`set_lower_level` and defines ``f`` and the
    optimistic selection. The moving pieces at ``x`` and the lower-level terms at
    ``(x, y)`` are computed once for repeated calls at the same tensors (:func:`last_call`).
    """

    regime = "manifold"

    def set_lower_level(
        self,
        dim_x: int,
        ka: int,
        kb: int,
        *,
        basis: torch.Tensor,
        cmat: torch.Tensor,
        eps_c: float,
        w: torch.Tensor,
        r0: float,
        eps_r: float,
        emat: torch.Tensor,
        eps_e: float,
        c_scale: float | None = None,
    ) -> None:
        r"""``basis`` (ka, p) orthonormal, ``cmat`` (p, m), ``w`` (m,), ``emat`` (kb, m);
        ``c_scale`` multiplies ``tanh(Cx)`` in ``c`` (default :math:`\varepsilon_c r_0/\sqrt p`,
        so that :math:`\|c(x)\| \le \varepsilon_c r_0`)."""
        self.dim_x, self.dim_y, self.ka, self.kb = dim_x, ka + kb, ka, kb
        t = self.tensor
        self.U, self.C, self.w, self.E = t(basis), t(cmat), t(w), t(emat)
        self.eps_c, self.r0, self.eps_r, self.eps_e = eps_c, r0, eps_r, eps_e
        self.c_scale = eps_c * r0 / math.sqrt(basis.shape[1]) if c_scale is None else c_scale

    # -- the moving pieces -----------------------------------------------------------
    @last_call
    def moving(self, x: torch.Tensor) -> Moving:
        th = torch.tanh(x @ self.C.T)
        wx = x @ self.w
        r = self.r0 * torch.exp(self.eps_r * torch.sin(wx))
        ex = x @ self.E.T
        return Moving(
            c=self.c_scale * th @ self.U.T,
            dc=self.c_scale * (1.0 - th**2),
            r=r,
            grad_r=(r * self.eps_r * torch.cos(wx))[:, None] * self.w,
            e=self.eps_e * torch.sin(ex),
            de=self.eps_e * torch.cos(ex),
            rr=r[:, None] ** 2,
        )

    def jct(self, mv: Moving, v: torch.Tensor) -> torch.Tensor:
        """:math:`J_c^\\top v`, ``(R, m)`` for ``v`` ``(R, ka)``."""
        return ((v @ self.U) * mv.dc) @ self.C

    def jet(self, mv: Moving, v: torch.Tensor) -> torch.Tensor:
        """:math:`J_e^\\top v`, ``(R, m)`` for ``v`` ``(R, kb)``."""
        return (v * mv.de) @ self.E

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y[:, : self.ka], y[:, self.ka :]

    # -- lower level and its analytic oracles -----------------------------------------
    def g(self, x, y, batch=None):
        mv = self.moving(x)
        ya, yb = self.split(y)
        s = ((ya - mv.c) ** 2).sum(-1) - mv.r**2
        return 0.25 * s**2 + 0.5 * ((yb - mv.e) ** 2).sum(-1)

    @last_call
    def _zs(self, x, y):
        r"""``(moving, z, s, z_b)``: :math:`z = y_a - c`, :math:`s = \|z\|^2 - r^2` as
        ``(R, 1)``, :math:`z_b = y_b - e`."""
        mv = self.moving(x)
        ya, yb = self.split(y)
        z = ya - mv.c
        return mv, z, (z**2).sum(-1, keepdim=True) - mv.rr, yb - mv.e

    def grad_y_g(self, x, y, batch=None):
        _, z, s, zb = self._zs(x, y)
        return torch.cat([s * z, zb], dim=-1)

    def grad_x_g(self, x, y, batch=None):
        mv, z, s, zb = self._zs(x, y)
        radial = self.jct(mv, z) + mv.r[:, None] * mv.grad_r
        return -s * radial - self.jet(mv, zb)

    def hvp_yy_g(self, x, y, v, batch=None):
        _, z, s, _ = self._zs(x, y)
        va, vb = self.split(v)
        return torch.cat([s * va + 2.0 * (z * va).sum(-1, keepdim=True) * z, vb], -1)

    def cross_xy_g(self, x, y, v, batch=None):
        mv, z, s, _ = self._zs(x, y)
        va, vb = self.split(v)
        radial = self.jct(mv, z) + mv.r[:, None] * mv.grad_r
        zv = (z * va).sum(-1, keepdim=True)
        return -2.0 * zv * radial - s * self.jct(mv, va) - self.jet(mv, vb)

    # -- solution set ------------------------------------------------------------------
    def g_star(self, x):
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def dist_to_solution_set(self, x, y):
        mv = self.moving(x)
        ya, yb = self.split(y)
        radial = torch.linalg.vector_norm(ya - mv.c, dim=-1) - mv.r
        return torch.sqrt(radial**2 + ((yb - mv.e) ** 2).sum(-1))

    def sample_solution_set(self, x, n):
        mv = self.moving(x)
        u = _sphere_samples(x, n, self.ka)
        pts_a = mv.c[:, None, :] + mv.r[:, None, None] * u
        return torch.cat([pts_a, mv.e[:, None, :].expand(-1, n, self.kb)], dim=-1)

    def flow_selection(self, x, y0):
        r"""The gradient flow of ``g`` is radial in :math:`y_a` (it keeps the direction of
        :math:`y_{0,a} - c`) and contracts :math:`y_b` to :math:`e`:
        :math:`\varphi(x, y_0) = (c + r\,v,\ e)`, :math:`v = (y_{0,a} - c)/\|y_{0,a} - c\|`
        (undefined at :math:`y_{0,a} = c`, a critical point)."""
        mv = self.moving(x)
        z0 = self.split(y0)[0] - mv.c
        v = z0 / torch.linalg.vector_norm(z0, dim=-1, keepdim=True)
        return torch.cat([mv.c + mv.r[:, None] * v, mv.e], dim=-1)

    def metrics(self, x, y):
        r"""``selection_gap`` :math:`= f(x, \Pi_S y) - \Phi(x) \ge 0`, with
        :math:`\Pi_S y = (c + r(y_a - c)/\|y_a - c\|, e)` the nearest point of
        :math:`S(x)` (the flow selection): how far from optimistic the point the lower
        iterate is closest to is."""
        return {"selection_gap": self.f(x, self.flow_selection(x, y)) - self.phi(x)}

    def init_y(self, rng):
        r""":math:`y_{0,a} = (\bar c + r_0(0.25 + 1.5\,s))\,z_a/\|z_a\|`,
        :math:`y_{0,b} = z_b`, with :math:`z \sim N(0, I)`, :math:`s \sim U[0, 1)` and
        :math:`\bar c = \varepsilon_c r_0 \ge \|c(x)\|`: a uniform direction at a
        distance of at least :math:`r_0/4` from the critical centre :math:`c(x_0)`."""
        z = rng.normal(self.dim_y).to(self.device)
        s = rng.uniform(1).to(self.device)
        c_bound = self.eps_c * self.r0
        za = z[:, : self.ka] / torch.linalg.vector_norm(z[:, : self.ka], dim=-1, keepdim=True)
        return torch.cat([(c_bound + self.r0 * (0.25 + 1.5 * s)) * za, z[:, self.ka :]], dim=-1)

    def init_x(self, rng):
        return rng.normal(self.dim_x).to(self.device)

    def plot_plane(self, x):
        """The 2-D plane ``bibench show`` draws: :math:`y_b = e(x)`, :math:`y_a` free, when
        :math:`k = 1` (then all of :math:`S(x)` lies in it); ``(origin, basis, half_width)``."""
        if self.ka != 2:
            raise NotImplementedError(f"S(x) = S^{self.ka - 1} x {{e(x)}} is not a plane curve")
        mv = self.moving(x)
        origin = torch.cat([mv.c, mv.e], dim=-1)
        basis = torch.eye(self.dim_y, dtype=x.dtype, device=x.device)[:2]
        return origin, basis.expand(x.shape[0], 2, self.dim_y), 1.6 * mv.r

    def describe_lower_level(self) -> str:
        k, kb, p = self.ka - 1, self.kb, self.U.shape[1]
        centre = f"c(x) = {self.eps_c * self.r0:g} U tanh(C x)/sqrt({p})"
        radius = f"r(x) = {self.r0:g} exp({self.eps_r:g} sin(w.x))"
        if not kb:
            return "\n".join([
                f"g(x, y) = 1/4 (|y - c(x)|^2 - r(x)^2)^2,  y in R^{self.ka}",
                f"{centre},  {radius}",
                f"S(x) = S^{k}: c(x) + r(x) u, |u| = 1;  dist(y, S(x)) = ||y - c| - r|,  g* = 0",
            ])  # fmt: skip
        return "\n".join([
            f"g(x, y) = 1/4 (|y_a - c(x)|^2 - r(x)^2)^2 + 1/2 |y_b - e(x)|^2,  y_a in "
            f"R^{self.ka}, y_b in R^{kb}",
            f"{centre},  {radius},  e(x) = {self.eps_e:g} sin(E x)",
            f"S(x) = S^{k} x {{e(x)}}: (c(x) + r(x) u, e(x)), |u| = 1",
            "dist(y, S(x)) = sqrt((|y_a - c| - r)^2 + |y_b - e|^2),  g* = 0",
        ])  # fmt: skip


# ------------------------------------------------------------------------------------
# P1: the hat (sphere with moving centre and radius), intrinsic-dimension variant
# ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HatParams(ProblemParams):
    dim_x: int = 4
    dim_y: int = 10  # ambient dimension d
    k: int = -1  # intrinsic dimension of the sphere factor S^k (k + 1 <= d); -1: k = d - 1
    radius: float = 0.5  # r0; 2 r^2 <= 0.91 < 1 = L of y_b: lower step 1 is stable near S
    lam: float = 0.3  # h(x) = lam/2 |x|^2 (makes Phi coercive; class docstring)

    def validate(self) -> None:
        super().validate()
        if self.dim_x < 1 or self.dim_y < 1:
            raise ValueError(f"dim_x and dim_y must be >= 1, got {self.dim_x}, {self.dim_y}")
        if not -1 <= self.k <= self.dim_y - 1:
            raise ValueError(f"k must be in [0, dim_y - 1] = [0, {self.dim_y - 1}] or -1, "
                             f"got {self.k}")  # fmt: skip
        if self.radius <= 0:
            raise ValueError(f"radius must be > 0, got {self.radius}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")


@register_problem("hat")
class Hat(HatLowerLevel):
    r"""P1: Mexican hat, S(x) = S^k × {e(x)} (moving centre and radius), quadratic f.

    The lower level of Arbel & Mairal (NeurIPS 2022, arXiv 2207.04888) Fig. 2 (left). With
    the lower level of this module and

    .. math::

        f(x, y) = \tfrac12\|y - a(x)\|^2 + h(x), \quad
        a(x) = (UGx + \rho_0 r_0 n,\ Bx), \quad h(x) = \tfrac{\lambda}2\|x\|^2,

    the optimistic selection is the point of the sphere closest to :math:`a_a`, unique iff
    :math:`a_a \ne c`:

    .. math::

        \rho = \|a_a - c\|, \quad u = (a_a - c)/\rho, \quad y^* = (c + ru,\ e), \quad
        \Phi(x) = \tfrac12(\rho - r)^2 + \tfrac12\|e - a_b\|^2 + h(x),

        \nabla\Phi = (\rho - r)\big[(J_a - J_c)^\top u - \nabla r\big]
                     + (J_e - B)^\top (e - a_b) + \lambda x.

    Choices. :math:`U` holds :math:`p = \min(m, k+1)` orthonormal columns of a random
    rotation and :math:`n` its last column; when :math:`k + 1 > m`, :math:`n \perp U`, so
    :math:`\rho^2 = \rho_0^2 r_0^2 + \|Gx - \varepsilon_c r_0 m^{-1/2}\tanh(Cx)\|^2
    \ge (\rho_0 r_0)^2`
    with :math:`\rho_0 = 1/2`: the selection is unique and non-degenerate (Riemannian
    Hessian of :math:`f|_S` is :math:`\rho/r > 0`) for every ``x``. When :math:`k + 1 \le m`
    the ties :math:`a_a = c` form a set of dimension :math:`m - k - 1` where Φ has a
    concave kink; there ``y_star`` breaks the tie with :math:`u = e_1`. Since
    :math:`\rho_0 r_0 < r(x)`, Φ vanishes (apart from the other terms) on the nonconvex
    shell :math:`\rho(x) = r(x)`, so Φ is nonconvex, :math:`\Phi \ge 0` and coercive for
    :math:`\lambda > 0`; gradient descent from any ``x`` reaches a stationary point.
    Φ* is not known in closed form (NaN). ``x0 ~ N(0, I)``.

    Constants that do not depend on ``d`` or ``k``. :math:`G, B, C, E` are random
    matrices with all singular values 1 (orthonormal columns or rows, whatever their
    shape), :math:`\|w\| = 1`, and here :math:`c(x) = \varepsilon_c r_0 U\tanh(Cx)/\sqrt m`
    (:math:`\sqrt m`, not :math:`\sqrt p`, so that it does not change with ``k``). Hence
    :math:`\|G\| = \|B\| = \|C\| = \|E\| = 1` and, for every ``d``, ``k`` and ``x``:

    * :math:`\|J_a\|^2 = \|G^\top G + B^\top B\| \le 2`, so
      :math:`L_f = \|\nabla^2 f\| \le 1 + \|J_a\|^2 + \lambda \le 3 + \lambda`;
    * :math:`\|J_c\| \le \varepsilon_c r_0/\sqrt m`, :math:`\|c\| \le \varepsilon_c r_0`,
      :math:`\|\nabla r\| \le \varepsilon_r r_0 e^{\varepsilon_r}`,
      :math:`r \in [r_0 e^{-\varepsilon_r}, r_0 e^{\varepsilon_r}]`,
      :math:`\|J_e\| \le \varepsilon_e`;
    * on :math:`S(x)`, :math:`\|\nabla^2_{yy} g\| = \max(2r^2, 1) = 1` for
      :math:`r_0 = 0.5`.

    :math:`\lambda = 0.3` (it was 0.1 with Gaussian :math:`G, B` of norm about 2 at
    ``d = 10``): at the minimisers that gradient descent reaches, the Hessian of Φ then
    has its smallest eigenvalue about 0.03, as it had there, not 0.009.
    (With Gaussian :math:`B` of variance :math:`1/m`, :math:`\|B\|^2 \approx
    (1 + \sqrt{(d-k-1)/m})^2` grew with ``d``: 5.9 at d = 16, 22.6 at d = 64, and every
    method diverged at the default upper step at d = 64.)

    Gradient-flow selection (BGS): :math:`\varphi(x, y_0) = (c + rv, e)`,
    :math:`v = (y_{0,a} - c)/\|y_{0,a} - c\|`, and
    :math:`\nabla_x f(x, \varphi(x, y_0))` in closed form (``selection_map_grad``).
    """

    Params = HatParams

    def build(self) -> None:
        p = self.params
        gen = self.data_generator()
        m, d = p.dim_x, p.dim_y
        ka = d if p.k < 0 else p.k + 1
        kb, q = d - ka, min(m, ka)
        rot = _orthogonal(gen, ka)
        w = _randn(gen, m)
        self.set_lower_level(
            m, ka, kb,
            basis=rot[:, :q], cmat=_semi_orthogonal(gen, q, m), eps_c=EPS_C,
            w=w / torch.linalg.vector_norm(w), r0=p.radius, eps_r=EPS_R,
            emat=_semi_orthogonal(gen, kb, m), eps_e=EPS_E, c_scale=EPS_C * p.radius / math.sqrt(m),
        )  # fmt: skip
        t = self.tensor
        self.G = t(_semi_orthogonal(gen, q, m))
        self.B = t(_semi_orthogonal(gen, kb, m))
        self.a0 = t(RHO0 * p.radius * rot[:, ka - 1])
        self.lam = p.lam

    @last_call
    def a(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(a_a, a_b)` of :math:`f`."""
        return x @ self.G.T @ self.U.T + self.a0, x @ self.B.T

    def jat(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`J_a^\\top v` for the sphere block."""
        return (v @ self.U) @ self.G

    def f(self, x, y, batch=None):
        aa, ab = self.a(x)
        ya, yb = self.split(y)
        h = 0.5 * self.lam * (x**2).sum(-1)
        return 0.5 * ((ya - aa) ** 2).sum(-1) + 0.5 * ((yb - ab) ** 2).sum(-1) + h

    def grad_x_f(self, x, y, batch=None):
        aa, ab = self.a(x)
        ya, yb = self.split(y)
        return -self.jat(ya - aa) - (yb - ab) @ self.B + self.lam * x

    def grad_y_f(self, x, y, batch=None):
        aa, ab = self.a(x)
        return y - torch.cat([aa, ab], dim=-1)

    # ground truth
    @last_call
    def _selection(self, x):
        mv = self.moving(x)
        aa, ab = self.a(x)
        diff = aa - mv.c
        rho = torch.linalg.vector_norm(diff, dim=-1)
        tie = rho == 0
        e1 = torch.zeros_like(diff)
        e1[:, 0] = 1.0
        u = torch.where(tie[:, None], e1, diff / torch.where(tie, 1.0, rho)[:, None])
        return mv, aa, ab, rho, u

    def y_star(self, x):
        mv, _, _, _, u = self._selection(x)
        return torch.cat([mv.c + mv.r[:, None] * u, mv.e], dim=-1)

    def phi(self, x):
        mv, _, ab, rho, _ = self._selection(x)
        h = 0.5 * self.lam * (x**2).sum(-1)
        return 0.5 * (rho - mv.r) ** 2 + 0.5 * ((mv.e - ab) ** 2).sum(-1) + h

    def hypergrad(self, x):
        mv, _, ab, rho, u = self._selection(x)
        sphere = (rho - mv.r)[:, None] * (self.jat(u) - self.jct(mv, u) - mv.grad_r)
        rest = self.jet(mv, mv.e - ab) - (mv.e - ab) @ self.B
        return sphere + rest + self.lam * x

    def selection_map_grad(self, x, y0):
        r""":math:`\nabla_x \mathcal L_\varphi = \nabla_x f(x, \varphi) + D_x\varphi^\top
        \nabla_y f(x, \varphi)` with :math:`D_x\varphi_a = J_c + v\nabla r^\top
        - \tfrac{r}{\|z_0\|}(I - vv^\top) J_c`, :math:`D_x\varphi_b = J_e`,
        :math:`z_0 = y_{0,a} - c`; at :math:`y_0 \in S(x)` this is
        :math:`u(J_c^\top u + \nabla r)^\top` (Arbel & Mairal Thm. 2)."""
        mv = self.moving(x)
        aa, ab = self.a(x)
        z0 = self.split(y0)[0] - mv.c
        n0 = torch.linalg.vector_norm(z0, dim=-1, keepdim=True)
        v = z0 / n0
        pa = mv.c + mv.r[:, None] * v - aa  # grad_{y_a} f at phi
        pb = mv.e - ab
        vp = (v * pa).sum(-1, keepdim=True)
        dphi_t = (
            self.jct(mv, pa)
            + mv.grad_r * vp
            - (mv.r[:, None] / n0) * self.jct(mv, pa - v * vp)
            + self.jet(mv, pb)
        )
        return -self.jat(pa) - pb @ self.B + self.lam * x + dphi_t

    def formulas(self) -> str:
        p, off = self.params, RHO0 * self.params.radius
        head = (
            f"P1 hat: dim_x = {self.dim_x}, dim_y = {self.dim_y}, k = {self.ka - 1}, "
            f"radius r0 = {p.radius:g}, lam = {p.lam:g}"
        )
        if not self.kb:
            return "\n".join([
                head,
                self.describe_lower_level(),
                f"f(x, y) = 1/2 |y - a(x)|^2 + {p.lam:g}/2 |x|^2,  a(x) = U G x + {off:g} n",
                "y*(x) = c + r u,  u = (a - c)/|a - c|",
                "Phi(x) = 1/2 (|a - c| - r)^2 + lam/2 |x|^2",
                "grad Phi = (|a - c| - r) [(J_a - J_c)^T u - grad r] + lam x",
                "flow selection phi(x, y0) = c + r (y0 - c)/|y0 - c|",
            ])  # fmt: skip
        return "\n".join([
            head,
            self.describe_lower_level(),
            f"f(x, y) = 1/2 |y - a(x)|^2 + {p.lam:g}/2 |x|^2,  a(x) = (U G x + {off:g} n, B x)",
            "y*(x) = (c + r u, e),  u = (a_a - c)/|a_a - c|",
            "Phi(x) = 1/2 (|a_a - c| - r)^2 + 1/2 |e - a_b|^2 + lam/2 |x|^2",
            "grad Phi = (|a_a - c| - r) [(J_a - J_c)^T u - grad r] + (J_e - B)^T (e - a_b)"
            " + lam x",
            "flow selection phi(x, y0) = (c + r (y0_a - c)/|y0_a - c|, e)",
        ])  # fmt: skip


# ------------------------------------------------------------------------------------
# P1′: the tie / kink
# ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HatKinkParams(ProblemParams):
    dim_y: int = 2

    def validate(self) -> None:
        super().validate()
        if self.dim_y < 1:
            raise ValueError(f"dim_y must be >= 1, got {self.dim_y}")


@register_problem("hat_kink")
class HatKink(Hat):
    r"""P1′: unit sphere with a(x) = x e1; Φ = ½(|x| − 1)² has a concave kink at x = 0.

    P1 with :math:`c \equiv 0`, :math:`r \equiv 1`,
    :math:`a(x) = x e_1` (:math:`x \in \mathbb R`), :math:`h = 0`, full sphere in
    :math:`\mathbb R^d`:

    .. math::

        g = \tfrac14(\|y\|^2 - 1)^2, \quad f = \tfrac12\|y - x e_1\|^2, \quad
        y^*(x) = \mathrm{sign}(x) e_1, \quad \Phi(x) = \tfrac12(|x| - 1)^2,
        \quad \Phi'(x) = x - \mathrm{sign}(x).

    At :math:`x = 0` every point of the sphere is optimal (a tie), Φ is not
    differentiable and its Clarke subdifferential is :math:`[-1, 1]`; the local minima are
    :math:`x = \pm 1` with :math:`\Phi^* = 0`. Choice at the tie: ``y_star(0)`` is
    :math:`+e_1` and ``hypergrad(0)`` returns :math:`-1`, the right derivative, i.e. the
    gradient of :math:`f(\cdot, y^*(0))` (consistent with ``phi = f(x, y_star)``). This is
    the HG-MS "failure of uniqueness" test. ``x0 ~ N(0, 0.5^2)``, near the kink. Scale: the
    Hessian on :math:`S(x)` is :math:`2uu^\top` (:math:`r = 1` is fixed by P1′), so lower
    gradient steps must be below 1 (the default step 1 only oscillates around S).
    """

    Params = HatKinkParams

    def build(self) -> None:
        d = self.params.dim_y
        eye = torch.eye(d, dtype=torch.float64)
        self.set_lower_level(
            1, d, 0, basis=eye[:, :1], cmat=torch.zeros(1, 1), eps_c=0.0, w=torch.zeros(1),
            r0=1.0, eps_r=0.0, emat=torch.zeros(0, 1), eps_e=0.0,
        )  # fmt: skip
        self.G = self.tensor(torch.ones(1, 1))
        self.B = self.tensor(torch.zeros(0, 1))
        self.a0 = self.tensor(torch.zeros(d))
        self.lam = 0.0

    def init_x(self, rng):
        return 0.5 * rng.normal(1).to(self.device)

    @property
    def phi_star(self) -> float:
        return 0.0

    def formulas(self) -> str:
        return "\n".join([
            f"P1' hat_kink: dim_x = 1, dim_y = {self.dim_y}",
            "g(x, y) = 1/4 (|y|^2 - 1)^2,  S(x) = unit sphere S^{d-1}",
            "f(x, y) = 1/2 |y - x e1|^2,  y*(x) = sign(x) e1 (tie at x = 0: e1)",
            "Phi(x) = 1/2 (|x| - 1)^2,  Phi'(x) = x - sign(x) (x != 0; -1 at x = 0),"
            "  Clarke subdifferential at 0: [-1, 1]",
            "local minima x = +-1, Phi* = 0",
        ])  # fmt: skip


# ------------------------------------------------------------------------------------
# P3: sphere + indefinite quadratic f (exact trust-region selection)
# ------------------------------------------------------------------------------------

TRS_EPS_C = 0.3  # the centre moves in span(q_2..q_d), keeping b~_1 = 0.2 / r away from 0
TRS_W1, TRS_W_STD = 0.2, 0.1  # w~_1 (tie-breaker between the two poles) and the rest


@dataclasses.dataclass(frozen=True)
class HatTRSParams(ProblemParams):
    dim_x: int = 2
    dim_y: int = 6
    radius: float = 0.5  # r0: the Hessian 2 r^2 uu^T on S(x) stays below 1
    lam: float = 0.1  # h(x) = lam/2 |x|^2

    def validate(self) -> None:
        super().validate()
        if self.dim_x < 1 or self.dim_y < 2:
            raise ValueError(f"need dim_x >= 1 and dim_y >= 2, got {self.dim_x}, {self.dim_y}")
        if self.radius <= 0:
            raise ValueError(f"radius must be > 0, got {self.radius}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")


@register_problem("hat_trs")
class HatTRS(HatLowerLevel):
    r"""P3: sphere + indefinite quadratic f; the selection is an exact trust-region subproblem.

    P1's lower level on the full sphere (:math:`k = d - 1`) and

    .. math::

        f(x, y) = \tfrac12 y^\top K y + w^\top y + \tfrac{\lambda}2\|x\|^2,
        \qquad K = Q\,\mathrm{diag}(\lambda_1, \dots, \lambda_d)\,Q^\top \text{ indefinite}.

    With :math:`y = c + ru` the selection is the trust-region subproblem
    :math:`\min_{\|u\|=1} \tfrac12 u^\top K u + b^\top u`, :math:`b = (Kc + w)/r`. In the
    eigenbasis (:math:`\tilde b = Q^\top b`, :math:`\delta_i = \lambda_i - \lambda_1`) the
    global minimiser is :math:`\tilde u_i = -\tilde b_i/(\delta_i + t)` with the unique
    :math:`t > 0` solving the secular equation :math:`\|\tilde u(t)\| = 1`, found by
    Newton's method on the concave :math:`1/\|\tilde u(t)\| - 1` from the left (Moré &
    Sorensen 1983), to machine precision. Then :math:`y^* = c + rQ\tilde u` and, by the
    envelope theorem,

    .. math::

        \nabla\Phi = \lambda x + J_c^\top \nabla_y f(x, y^*)
                     + \nabla r\, \langle u, \nabla_y f(x, y^*)\rangle,
        \quad \nabla_y f = K y^* + w,

    equal to the pseudoinverse formula at :math:`y^*`.

    Hard case (:math:`\tilde b_1 = 0` and :math:`\|\tilde b_{2:}/\delta_{2:}\| \le 1`):
    :math:`t = 0` and :math:`\tilde u = (\tau, -\tilde b_{2:}/\delta_{2:})`,
    :math:`\tau = \sqrt{1 - \|\tilde b_{2:}/\delta_{2:}\|^2}`; the sign of :math:`\tau` is a
    tie (``y_star`` takes :math:`\tau \ge 0`) and Φ need not be differentiable there.

    Choices: :math:`\lambda = (-1, \mathrm{linspace}(0, 2, d-1))`, :math:`Q` random,
    :math:`w = r_0 Q\tilde w` with :math:`\tilde w = (0.2, 0.1\,N(0, I))`, and the centre
    moves only in :math:`\mathrm{span}(q_2, \dots, q_d)`:
    :math:`c = 0.3\,r_0 Q_{2:} \tanh(Cx)/\sqrt{d-1}` (so ``b`` does not depend on
    :math:`r_0`). Hence :math:`\tilde b_1 = 0.2\,r_0/r(x) \ge 0.2e^{-0.3}` for every
    ``x``: the instance never enters the hard case, the global selection (near the pole
    :math:`-q_1`) is unique and non-degenerate (:math:`t > 0` bounded away from 0), and
    since :math:`\tilde b_1, \tilde b_2` are small against the gap
    :math:`\lambda_2 - \lambda_1 = 1` the sphere also carries a local-non-global minimiser
    near the other pole :math:`+q_1` (multiplier in :math:`(-\lambda_2, -\lambda_1)`,
    Martínez 1994) where local selection methods can get stuck. Φ* is unknown (NaN).
    """

    Params = HatTRSParams

    def build(self) -> None:
        p = self.params
        gen = self.data_generator()
        m, d = p.dim_x, p.dim_y
        q = _orthogonal(gen, d)
        lam_k = torch.cat([torch.tensor([-1.0], dtype=torch.float64), torch.linspace(0, 2, d - 1)])
        w_tilde = torch.cat([torch.tensor([TRS_W1]), TRS_W_STD * _randn(gen, d - 1)])
        self.set_lower_level(
            m, d, 0,
            basis=q[:, 1:], cmat=_randn(gen, d - 1, m) / math.sqrt(m), eps_c=TRS_EPS_C,
            w=_randn(gen, m) / math.sqrt(m), r0=p.radius, eps_r=EPS_R,
            emat=torch.zeros(0, m), eps_e=EPS_E,
        )  # fmt: skip
        t = self.tensor
        self.Q, self.eig = t(q), t(lam_k)
        self.K = t(q @ torch.diag(lam_k) @ q.T)
        self.wvec = t(p.radius * q @ w_tilde)  # scaled with r0: b = (Kc + w)/r is scale-free
        self.lam = p.lam

    def f(self, x, y, batch=None):
        return 0.5 * (y * (y @ self.K)).sum(-1) + y @ self.wvec + 0.5 * self.lam * (x**2).sum(-1)

    def grad_x_f(self, x, y, batch=None):
        return self.lam * x

    def grad_y_f(self, x, y, batch=None):
        return y @ self.K + self.wvec

    def trs(self, x) -> tuple[Moving, torch.Tensor, torch.Tensor]:
        """``(moving, u, t)``: the global minimiser ``u`` (R, d) of the trust-region
        subproblem and the shifted multiplier :math:`t = \\mu + \\lambda_1 \\ge 0`."""
        mv = self.moving(x)
        bt = ((mv.c @ self.K + self.wvec) / mv.r[:, None]) @ self.Q
        delta = self.eig - self.eig[0]

        def secular(t):
            ut = -bt / (delta + t[:, None])
            n = torch.linalg.vector_norm(ut, dim=-1)
            slope = (bt**2 / (delta + t[:, None]) ** 3).sum(-1) / n**3
            return ut, 1.0 / n - 1.0, slope

        n_rest = torch.linalg.vector_norm(bt[:, 1:] / delta[1:], dim=-1)
        hard = (bt[:, 0] == 0) & (n_rest <= 1)
        t = bt[:, 0].abs().clamp(min=1e-300).detach()  # |u~(t)| >= |b~_1|/t = 1: left of root
        for _ in range(100):
            _, phi, slope = secular(t)
            step = (phi / slope).detach()
            t = t - step
            if bool((step.abs() <= 1e-15 * t).all()):
                break
        t = torch.where(hard, 0.0, t)
        _, phi, slope = secular(torch.where(hard, 1.0, t))
        t = torch.where(hard, t, t - phi / slope)  # one attached step: the implicit derivative
        ut, _, _ = secular(torch.where(hard, 1.0, t))
        tau = torch.sqrt((1.0 - n_rest**2).clamp(min=0.0))
        ut_hard = torch.cat([tau[:, None], -bt[:, 1:] / delta[1:]], dim=-1)
        ut = torch.where(hard[:, None], ut_hard, ut)
        return mv, ut @ self.Q.T, t

    def y_star(self, x):
        mv, u, _ = self.trs(x)
        return mv.c + mv.r[:, None] * u

    def hypergrad(self, x):
        mv, u, _ = self.trs(x)
        gy = self.grad_y_f(x, mv.c + mv.r[:, None] * u)
        return self.lam * x + self.jct(mv, gy) + mv.grad_r * (u * gy).sum(-1, keepdim=True)

    def formulas(self) -> str:
        p = self.params
        eig = ", ".join(f"{v:g}" for v in self.eig.tolist())
        return "\n".join([
            f"P3 hat_trs: dim_x = {self.dim_x}, dim_y = {self.dim_y}, radius r0 = {p.radius:g},"
            f" lam = {p.lam:g}",
            self.describe_lower_level().replace(" U tanh", " Q[:, 1:] tanh"),
            f"f(x, y) = 1/2 y^T K y + w^T y + {p.lam:g}/2 |x|^2,  eig(K) = ({eig})",
            "selection: min_{|u|=1} 1/2 u^T K u + b^T u,  b = (K c + w)/r  (trust-region "
            "subproblem)",
            "u~_i = -b~_i/(lambda_i - lambda_1 + t),  |u~(t)| = 1 (secular equation, t > 0)",
            "y*(x) = c + r Q u~,  grad Phi = lam x + J_c^T (K y* + w) + grad r <u, K y* + w>",
        ])  # fmt: skip


# ------------------------------------------------------------------------------------
# P4: circle with a multimodal f
# ------------------------------------------------------------------------------------

N_GRID = 1024  # theta grid for the global minimum (then Newton on each grid local minimum)
ALPHA0 = math.pi / 3  # alpha(0): puts cos(theta - alpha) and cos(3 theta) at odds at x = 0


@dataclasses.dataclass(frozen=True)
class CircleParams(ProblemParams):
    dim_x: int = 2
    radius: float = 0.5  # r0: the Hessian 2 r^2 uu^T on S(x) stays below 1
    rho: float = 1.0  # weight of -cos(theta - alpha(x))
    beta: float = 0.5  # weight of -cos(3 theta): beta > rho/9 gives several local minima

    def validate(self) -> None:
        super().validate()
        if self.dim_x < 1:
            raise ValueError(f"dim_x must be >= 1, got {self.dim_x}")
        if self.radius <= 0:
            raise ValueError(f"radius must be > 0, got {self.radius}")
        if self.rho < 0 or self.beta < 0:
            raise ValueError(f"rho and beta must be >= 0, got {self.rho}, {self.beta}")


@register_problem("circle_multimodal")
class CircleMultimodal(HatLowerLevel):
    r"""P4: moving circle in R² with a multimodal f of the angle; Φ by grid + Newton.

    P1's lower level with :math:`d = 2`,
    :math:`y = c(x) + r(x)(\cos\theta, \sin\theta)`, and

    .. math::

        f(x, y) = F(x, \theta(y)) = -\rho\cos(\theta - \alpha(x)) - \beta\cos 3\theta
                  + \tfrac12\|x\|^2, \qquad \theta = \mathrm{atan2}(y - c(x)),
        \quad \alpha(x) = \alpha_0 + v^\top x.

    :math:`\Phi(x) = \min_\theta F(x, \theta)`: every local minimum of ``F`` on a grid of
    1024 angles is refined by Newton's method on
    :math:`\partial_\theta F = \rho\sin(\theta - \alpha) + 3\beta\sin 3\theta` (machine
    precision) and the best is kept. By the envelope theorem
    :math:`\nabla\Phi = -\rho\sin(\theta^* - \alpha)\, v + x` and
    :math:`y^* = c + r(\cos\theta^*, \sin\theta^*)`. Φ has kinks where two local minima
    of ``F`` tie (a set of codimension 1 in ``x``); there ``y_star`` returns one of them.
    Since ``x`` enters Φ only through :math:`v^\top x` and :math:`\tfrac12\|x\|^2`, the
    minimisers lie on :math:`x = s\, v/\|v\|` and Φ* is computed in ``build`` by a 2-D grid
    in :math:`(s, \theta)` plus Newton. Choices: :math:`\alpha_0 = \pi/3`, where
    :math:`\cos(\theta - \alpha_0)` peaks at a minimum of :math:`\cos 3\theta` (with
    :math:`\alpha_0 = 0` the minimum would be the trivial :math:`x = 0`, :math:`\theta = 0`);
    :math:`v \sim N(0, I/m)`; ``x0 ~ N(0, I)``.
    """

    Params = CircleParams

    def build(self) -> None:
        p = self.params
        gen = self.data_generator()
        m = p.dim_x
        q = min(m, 2)
        self.set_lower_level(
            m, 2, 0,
            basis=_orthogonal(gen, 2)[:, :q], cmat=_randn(gen, q, m) / math.sqrt(m),
            eps_c=EPS_C, w=_randn(gen, m) / math.sqrt(m), r0=p.radius, eps_r=EPS_R,
            emat=torch.zeros(0, m), eps_e=EPS_E,
        )  # fmt: skip
        self.v = self.tensor(_randn(gen, m) / math.sqrt(m))
        self.rho, self.beta = p.rho, p.beta
        self.grid = self.tensor(torch.arange(N_GRID, dtype=torch.float64) * (2 * math.pi / N_GRID))
        self.cos_grid, self.sin_grid = torch.cos(self.grid), torch.sin(self.grid)
        self.cos3_grid = torch.cos(3 * self.grid)
        self._phi_star = self._min_over_line()

    def angle(self, x, y):
        z = y - self.moving(x).c
        return torch.atan2(z[:, 1], z[:, 0])

    def big_f(self, x, theta):
        """:math:`F(x, \\theta)` without the :math:`\\tfrac12\\|x\\|^2` term."""
        alpha = ALPHA0 + x @ self.v
        return -self.rho * torch.cos(theta - alpha) - self.beta * torch.cos(3.0 * theta)

    def f(self, x, y, batch=None):
        return self.big_f(x, self.angle(x, y)) + 0.5 * (x**2).sum(-1)

    def _newton(self, theta, alpha, iters: int = 30):
        """Newton on :math:`\\partial_\\theta F = 0` (steps capped at one grid spacing)."""
        cap = 2 * math.pi / N_GRID
        for _ in range(iters):
            d1 = self.rho * torch.sin(theta - alpha) + 3 * self.beta * torch.sin(3 * theta)
            d2 = self.rho * torch.cos(theta - alpha) + 9 * self.beta * torch.cos(3 * theta)
            step = (d1 / d2).clamp(-cap, cap)
            theta = theta - step
            if iters > 1 and bool((step.abs() < 1e-15).all()):
                break
        return theta

    def theta_star(self, x):
        alpha = (ALPHA0 + x @ self.v)[:, None]
        grid = self.grid
        # cos(theta - alpha) expanded: no transcendental on the (R, N_GRID) grid
        cos_shift = self.cos_grid * torch.cos(alpha) + self.sin_grid * torch.sin(alpha)
        vals = -self.rho * cos_shift - self.beta * self.cos3_grid
        local = (vals < vals.roll(1, -1)) & (vals <= vals.roll(-1, -1))
        masked = torch.where(local, vals, math.inf).detach()
        cand_vals, idx = torch.topk(-masked, k=3, dim=-1)  # at most 3 local minima
        theta = self._newton(grid[idx], alpha.detach())
        fvals = -self.rho * torch.cos(theta - alpha) - self.beta * torch.cos(3 * theta)
        fvals = torch.where(torch.isfinite(cand_vals), fvals, math.inf)
        best = theta.gather(-1, fvals.argmin(-1, keepdim=True))[:, 0].detach()
        return self._newton(best, alpha[:, 0], iters=1)  # attached: the implicit derivative

    def y_star(self, x):
        mv = self.moving(x)
        th = self.theta_star(x)
        return mv.c + mv.r[:, None] * torch.stack([torch.cos(th), torch.sin(th)], dim=-1)

    def phi(self, x):
        return self.big_f(x, self.theta_star(x)) + 0.5 * (x**2).sum(-1)

    def hypergrad(self, x):
        th = self.theta_star(x)
        return -self.rho * torch.sin(th - ALPHA0 - x @ self.v)[:, None] * self.v + x

    def _min_over_line(self) -> float:
        r"""Φ* = min over :math:`x = s v/\|v\|` and θ of
        :math:`-\rho\cos(\theta - \alpha_0 - \|v\|s) - \beta\cos 3\theta + s^2/2`; stationarity in
        ``s`` gives :math:`|s| \le \rho\|v\|`."""
        nv = float(torch.linalg.vector_norm(self.v))

        def obj(s, th):
            return (
                -self.rho * torch.cos(th - ALPHA0 - nv * s)
                - self.beta * torch.cos(3 * th)
                + 0.5 * s**2
            )

        smax = self.rho * nv + 1e-3
        s = torch.linspace(-smax, smax, 801, dtype=torch.float64)[:, None]
        th = torch.arange(720, dtype=torch.float64)[None] * (2 * math.pi / 720)
        i = int(obj(s, th).argmin())
        z = torch.tensor([s[i // 720, 0].item(), th[0, i % 720].item()], dtype=torch.float64)
        for _ in range(30):
            gz = torch.func.grad(lambda z: obj(z[0], z[1]))(z)
            hz = torch.func.hessian(lambda z: obj(z[0], z[1]))(z)
            z = z - torch.linalg.solve(hz, gz)
        return float(obj(z[0], z[1]))

    @property
    def phi_star(self) -> float:
        return self._phi_star

    def formulas(self) -> str:
        p = self.params
        return "\n".join([
            f"P4 circle_multimodal: dim_x = {self.dim_x}, dim_y = 2, radius r0 = {p.radius:g},"
            f" rho = {p.rho:g}, beta = {p.beta:g}",
            self.describe_lower_level(),
            f"f(x, y) = -{p.rho:g} cos(theta - pi/3 - v.x) - {p.beta:g} cos(3 theta) + 1/2 |x|^2,"
            "  theta = atan2(y - c(x))",
            "Phi(x) = min_theta f (grid + Newton),  y* = c + r (cos theta*, sin theta*)",
            f"grad Phi = -{p.rho:g} sin(theta* - pi/3 - v.x) v + x,  Phi* = {self.phi_star:.12g}",
        ])  # fmt: skip
