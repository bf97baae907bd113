r"""P11: uniformly convex lower levels (UniBiO regime), exact or reference ground truth.

Notation: :math:`z^{[k]} = \mathrm{sign}(z) |z|^k` is the signed power (elementwise);
``p >= 2`` is the uniform-convexity degree. For ``p > 2`` the lower Hessian vanishes
where the relevant residual vanishes, so the classical implicit-function formula can be
0/0; each problem says which hypergradient formula applies. Sources:
UniBiO (ICLR 2026, arXiv 2603.00027) App. E.3 (P11a, exactly the authors'
``synthetic_exp.py``); P11b–e are
ours, in its setting (uniform convexity of degree ``p``).

* ``unibio_synthetic`` (P11a): :math:`g = |y|^p/p - y \sin x`,
  :math:`f = \sin(y^{[p-1]})` clipped to :math:`\pm1`, :math:`\Phi = \sin(\sin x)`.
* ``pp_separable`` (P11b): :math:`g = \tfrac1p \sum_i |y_i - b_i(x)|^p`, totally
  degenerate Hessian at :math:`y^* = b(x)`.
* ``lp_linear`` (P11c): :math:`g = \tfrac1p \|y\|_p^p - \langle y, b(x)\rangle`,
  :math:`y^* = b^{[1/(p-1)]}`; a smooth ``f`` and a negative control.
* ``lp_degenerate`` (P11e): P11c with :math:`b(x_\star) = 0`, so the lower Hessian
  vanishes at :math:`y^*(x_\star) = 0` at order ``p - 2``: a multi-dimensional problem
  on which the inner solves get harder with ``p``.
* ``pnorm_regression`` (P11d): :math:`g = \tfrac1{pn} \|Ay - b(x)\|_p^p`, reference
  solve by damped Newton.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from bibench import Problem, ProblemParams, register_problem
from bibench.problem import Batch, mtv, mv


def abs_pow(z: torch.Tensor, p: float) -> torch.Tensor:
    r""":math:`|z|^p`; a plain power for even integer ``p`` so that autodiff's second
    derivative at 0 is right for ``p = 2`` (that of ``|z|`` is 0 there)."""
    if float(p).is_integer() and int(p) % 2 == 0:
        return z ** int(p)
    return z.abs() ** p


def signed_pow(z: torch.Tensor, k: float) -> torch.Tensor:
    r""":math:`z^{[k]} = \mathrm{sign}(z)|z|^k`; a plain power for odd integer ``k``."""
    if float(k).is_integer() and int(k) % 2 == 1:
        return z ** int(k)
    return torch.sign(z) * z.abs() ** k


def _check_p(p: int) -> None:
    if p < 2:
        raise ValueError(f"p must be >= 2, got {p}")


# ------------------------------------------------------------------------------------
# P11a: the UniBiO synthetic problem
# ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UniBiOSyntheticParams(ProblemParams):
    p: int = 4  # uniform-convexity degree; the paper runs p in {2, 4, 6, 8}

    def validate(self) -> None:
        super().validate()
        _check_p(self.p)


@register_problem("unibio_synthetic")
class UniBiOSynthetic(Problem):
    r"""P11a: UniBiO synthetic 1-D problem, g = |y|^p/p − y sin x, Φ = sin(sin x).

    The authors' ``synthetic_exp.py`` (UniBiO (ICLR 2026, arXiv 2603.00027), App. E.3), with
    :math:`\theta_p = (\pi/2)^{1/(p-1)}`:

    .. math::

        g(x, y) = \frac{|y|^p}{p} - y \sin x, \qquad
        f(y) = \sin\big(\mathrm{clip}(y^{[p-1]}, -\tfrac\pi2, \tfrac\pi2)\big)
        \quad (= \pm1 \text{ for } |y| > \theta_p),

        y^*(x) = (\sin x)^{[1/(p-1)]}, \qquad \Phi(x) = \sin(\sin x), \qquad
        \Phi'(x) = \cos x \cos(\sin x), \qquad \Phi^* = -\sin 1 \ (x = -\pi/2 + 2k\pi).

    :math:`|y^*| \le 1 < \theta_p`, so :math:`\Phi` does not depend on ``p``.
    :math:`\nabla^2_{yy} g = (p-1)|y|^{p-2}` vanishes at :math:`x = k\pi` for ``p > 2``:
    there the pseudoinverse formula :math:`\nabla_x f - \nabla^2_{xy} g\, H^\dagger
    \nabla_y f` returns 0 while :math:`\Phi'(k\pi) = \pm1`. The generalized-Hessian form
    (UniBiO) applies everywhere: in :math:`u = y^{[p-1]}`, :math:`\nabla_y g = u - \sin x`
    has :math:`\partial \nabla_y g / \partial u = 1` and
    :math:`\partial f / \partial u = \cos u`, so
    :math:`\Phi' = -\nabla^2_{xy} g \cdot 1^{-1} \cdot \cos u^* = \cos x \cos(\sin x)`.

    Choices: ``|y|^p`` and the signed power make odd ``p`` valid too (the authors use even
    ``p``, where they equal :math:`y^p` and :math:`y^{p-1}`); ``x0 = 1`` and ``y0 = 1`` as
    the authors (their Epoch-SGD redraws its own start, we keep ``y0``). The authors add
    noise of std 0.01 to the exact hypergradient; here noise enters through the oracle
    (``noise_std``) on every derivative, so estimators see it honestly.
    """

    regime = "uniformly convex"
    Params = UniBiOSyntheticParams

    def build(self) -> None:
        self.dim_x = self.dim_y = 1
        self.p = self.params.p

    def f(self, x, y, batch=None):
        return torch.sin(torch.clamp(signed_pow(y, self.p - 1), -math.pi / 2, math.pi / 2))[:, 0]

    def g(self, x, y, batch=None):
        return (abs_pow(y, self.p) / self.p - y * torch.sin(x))[:, 0]

    # analytic oracles (tests/problems/test_uniformly_convex.py checks them)
    def _curv(self, y: torch.Tensor) -> torch.Tensor:
        """:math:`(p-1)|y|^{p-2}` (the lower Hessian)."""
        return (self.p - 1) * abs_pow(y, self.p - 2)

    def grad_x_f(self, x, y, batch=None):
        return torch.zeros_like(x)

    def grad_y_f(self, x, y, batch=None):
        u = signed_pow(y, self.p - 1)
        inside = (u.abs() <= math.pi / 2).to(y.dtype)
        return inside * torch.cos(u) * self._curv(y)

    def grad_x_g(self, x, y, batch=None):
        return -y * torch.cos(x)

    def grad_y_g(self, x, y, batch=None):
        return signed_pow(y, self.p - 1) - torch.sin(x)

    def hvp_yy_g(self, x, y, v, batch=None):
        return self._curv(y) * v

    def cross_xy_g(self, x, y, v, batch=None):
        return -torch.cos(x) * v

    def init_x(self, rng):
        return torch.ones(len(rng.seeds), 1, dtype=self.dtype, device=self.device)

    def init_y(self, rng):
        return torch.ones(len(rng.seeds), 1, dtype=self.dtype, device=self.device)

    # ground truth
    def y_star(self, x):
        return signed_pow(torch.sin(x), 1.0 / (self.p - 1))

    def phi(self, x):
        return torch.sin(torch.sin(x[:, 0]))

    def hypergrad(self, x):
        return torch.cos(x) * torch.cos(torch.sin(x))

    def g_star(self, x):
        # g(y*) = |y*|^p / p - y* sin x = (1/p - 1) |sin x|^{p/(p-1)}
        return (1.0 / self.p - 1.0) * torch.sin(x[:, 0]).abs() ** (self.p / (self.p - 1))

    @property
    def phi_star(self) -> float:
        return -math.sin(1.0)

    def formulas(self) -> str:
        p = self.p
        return (
            f"P11a UniBiO synthetic, p = {p}\n"
            f"g(x, y) = |y|^{p}/{p} - y sin x\n"
            f"f(y) = sin(clip(y^[{p - 1}], -pi/2, pi/2))\n"
            f"y*(x) = (sin x)^[1/{p - 1}],  Phi(x) = sin(sin x),  Phi'(x) = cos x cos(sin x)\n"
            "Phi* = -sin 1 at x = -pi/2"
        )


# ------------------------------------------------------------------------------------
# shared data for P11b-d: b(x) = sin(Wx) + b0 (P11b, c) or Wx + b0 (P11d)
# ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SeparableParams(ProblemParams):
    dim_x: int = 3
    dim_y: int = 5
    p: int = 4  # uniform-convexity degree (p = 2 is the strongly convex control)

    def validate(self) -> None:
        super().validate()
        if self.dim_x < 1 or self.dim_y < 1:
            raise ValueError("dim_x and dim_y must be >= 1")
        _check_p(self.p)


class _SineMap(Problem):
    r""":math:`b(x) = \sin(Wx) + b_0` with :math:`W_{ij} \sim \mathcal N(0, 1/d_x)`,
    :math:`b_0 \sim \mathcal N(0, \tfrac14 I)` and a hidden :math:`x_{\rm true} \sim
    \mathcal N(0, I)` that defines the target ``t`` (seeded by ``seed``);
    ``x0``, ``y0`` standard normal per seed."""

    Params = SeparableParams

    def build(self) -> None:
        p = self.params
        gen = self.data_generator()
        self.dim_x, self.dim_y, self.p = p.dim_x, p.dim_y, p.p
        w = torch.randn(p.dim_y, p.dim_x, generator=gen, dtype=torch.float64) / p.dim_x**0.5
        b0 = 0.5 * torch.randn(p.dim_y, generator=gen, dtype=torch.float64)
        x_true = torch.randn(p.dim_x, generator=gen, dtype=torch.float64)
        self.W, self.b0, self.x_true = self.tensor(w), self.tensor(b0), self.tensor(x_true)

    def _b(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x @ self.W.T) + self.b0

    def _jbt(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        r""":math:`J_b(x)^\top u = W^\top (\cos(Wx) \odot u)`."""
        return (torch.cos(x @ self.W.T) * u) @ self.W

    def init_x(self, rng):
        return rng.normal(self.dim_x).to(self.device)

    def init_y(self, rng):
        return rng.normal(self.dim_y).to(self.device)


# ------------------------------------------------------------------------------------
# P11b: separable p-power
# ------------------------------------------------------------------------------------


@register_problem("pp_separable")
class PPSeparable(_SineMap):
    r"""P11b: separable p-power g = (1/p)Σ|yᵢ − bᵢ(x)|^p, Hessian exactly 0 at y* = b(x).

    ``b`` as in :class:`_SineMap`:

    .. math::

        g(x, y) = \frac1p \sum_i |y_i - b_i(x)|^p, \qquad
        f(x, y) = \tfrac12 \|y - t\|^2, \quad t = b(x_{\rm true}),

        y^* = b(x), \quad g^* = 0, \quad \Phi(x) = \tfrac12 \|b(x) - t\|^2, \quad
        \nabla\Phi = J_b^\top (b - t), \quad \Phi^* = 0 = \Phi(x_{\rm true}).

    For ``p > 2``, :math:`\nabla^2_{yy} g = (p-1)\,\mathrm{diag}|y - b|^{p-2}` is **zero**
    at :math:`y^*` (totally degenerate) and so is :math:`\nabla^2_{xy} g`: the
    pseudoinverse formula returns :math:`\nabla_x f = 0`, wrong. The generalized-Hessian
    form applies: with :math:`D = (p-1)\mathrm{diag}|y - b|^{p-2}` at any
    :math:`y \ne y^*` near it, :math:`\nabla^2_{yy} g\, D^{-1} = I` and
    :math:`\nabla^2_{xy} g\, D^{-1} = -J_b^\top`, so
    :math:`\nabla\Phi = \nabla_x f - (\nabla^2_{xy} g D^{-1})(\nabla^2_{yy} g D^{-1})^{-1}
    \nabla_y f = J_b^\top(b - t)` at :math:`y^*`. For ``p = 2`` the classical formula holds.
    """

    regime = "uniformly convex"

    def build(self) -> None:
        super().build()
        self.target = self._b(self.x_true[None])[0]

    def f(self, x, y, batch=None):
        return 0.5 * ((y - self.target) ** 2).sum(-1)

    def g(self, x, y, batch=None):
        return abs_pow(y - self._b(x), self.p).sum(-1) / self.p

    # analytic oracles (tests/problems/test_uniformly_convex.py checks them)
    def grad_x_f(self, x, y, batch=None):
        return torch.zeros_like(x)

    def grad_y_f(self, x, y, batch=None):
        return y - self.target

    def grad_x_g(self, x, y, batch=None):
        return -self._jbt(x, signed_pow(y - self._b(x), self.p - 1))

    def grad_y_g(self, x, y, batch=None):
        return signed_pow(y - self._b(x), self.p - 1)

    def hvp_yy_g(self, x, y, v, batch=None):
        return (self.p - 1) * abs_pow(y - self._b(x), self.p - 2) * v

    def cross_xy_g(self, x, y, v, batch=None):
        return -self._jbt(x, (self.p - 1) * abs_pow(y - self._b(x), self.p - 2) * v)

    # ground truth
    def y_star(self, x):
        return self._b(x)

    def phi(self, x):
        return 0.5 * ((self._b(x) - self.target) ** 2).sum(-1)

    def hypergrad(self, x):
        return self._jbt(x, self._b(x) - self.target)

    def g_star(self, x):
        return torch.zeros_like(x[:, 0])

    @property
    def phi_star(self) -> float:
        return 0.0

    def formulas(self) -> str:
        p = self.p
        return (
            f"P11b separable p-power, p = {p}\n"
            f"g(x, y) = 1/{p} sum_i |y_i - b_i(x)|^{p},  b(x) = sin(W x) + b0\n"
            "f(x, y) = 1/2 ||y - t||^2,  t = b(x_true)\n"
            "y* = b(x),  Phi(x) = 1/2 ||b(x) - t||^2,  grad Phi = J_b'(b - t),  Phi* = 0\n"
            "Hessian of g at y* is 0 for p > 2: use the generalized Hessian"
        )


# ------------------------------------------------------------------------------------
# P11c: lp-linear
# ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LpLinearParams(SeparableParams):
    negative_control: bool = False  # f = 1/2 |y - t|^2: grad Phi unbounded as b_i(x) -> 0


@register_problem("lp_linear")
class LpLinear(_SineMap):
    r"""P11c: ℓp-linear g = ‖y‖ₚᵖ/p − ⟨y, b(x)⟩, y* = b^[1/(p−1)]; smooth f or negative control.

    ``b`` as in :class:`_SineMap`, :math:`k = 1/(p-1)`:

    .. math::

        g(x, y) = \frac1p \|y\|_p^p - \langle y, b(x)\rangle, \qquad
        y^* = b^{[k]}, \qquad g^* = \Big(\frac1p - 1\Big) \sum_i |b_i|^{p/(p-1)} .

    The solution map is only :math:`k`-Hölder where :math:`b_i = 0`.

    * default, smooth in the signed power (UniBiO's assumption):
      :math:`f = \tfrac12 \|y^{[p-1]} - t\|^2`, :math:`t = b(x_{\rm true})`, so
      :math:`\Phi = \tfrac12 \|b(x) - t\|^2`, :math:`\nabla\Phi = J_b^\top (b - t)`.
    * ``negative_control=True``: :math:`f = \tfrac12 \|y - t\|^2`,
      :math:`t = b(x_{\rm true})^{[k]}`, so :math:`\Phi = \tfrac12 \|b^{[k]} - t\|^2` and
      :math:`\nabla\Phi = J_b^\top\big((b^{[k]} - t) \odot k |b|^{k - 1}\big)`, which grows
      like :math:`|b_i|^{-(p-2)/(p-1)}` as :math:`b_i(x) \to 0` (for ``p = 4``,
      :math:`|b_i|^{-2/3}`): no Lipschitz hypergradient, no rate.

    Both have :math:`\Phi^* = 0 = \Phi(x_{\rm true})`. :math:`\nabla^2_{yy} g =
    (p-1)\mathrm{diag}|y|^{p-2}` is singular only where :math:`b_i = 0`; elsewhere the
    classical formula :math:`-\nabla^2_{xy} g\, H^{-1} \nabla_y f` holds (``H``
    invertible), and for the smooth ``f`` the generalized Hessian (precondition by
    :math:`D = H`) gives :math:`J_b^\top (b - t)` everywhere, including :math:`b_i = 0`.
    """

    regime = "uniformly convex"
    Params = LpLinearParams

    def build(self) -> None:
        super().build()
        self.control = self.params.negative_control
        b_true = self._b(self.x_true[None])[0]
        self.target = signed_pow(b_true, 1.0 / (self.p - 1)) if self.control else b_true

    def _u(self, y: torch.Tensor) -> torch.Tensor:
        """The argument of ``f``: ``y`` (control) or :math:`y^{[p-1]}` (smooth)."""
        return y if self.control else signed_pow(y, self.p - 1)

    def f(self, x, y, batch=None):
        return 0.5 * ((self._u(y) - self.target) ** 2).sum(-1)

    def g(self, x, y, batch=None):
        return abs_pow(y, self.p).sum(-1) / self.p - (y * self._b(x)).sum(-1)

    # analytic oracles (tests/problems/test_uniformly_convex.py checks them)
    def grad_x_f(self, x, y, batch=None):
        return torch.zeros_like(x)

    def grad_y_f(self, x, y, batch=None):
        res = self._u(y) - self.target
        return res if self.control else (self.p - 1) * abs_pow(y, self.p - 2) * res

    def grad_x_g(self, x, y, batch=None):
        return -self._jbt(x, y)

    def grad_y_g(self, x, y, batch=None):
        return signed_pow(y, self.p - 1) - self._b(x)

    def hvp_yy_g(self, x, y, v, batch=None):
        return (self.p - 1) * abs_pow(y, self.p - 2) * v

    def cross_xy_g(self, x, y, v, batch=None):
        return -self._jbt(x, v)

    # ground truth
    def y_star(self, x):
        return signed_pow(self._b(x), 1.0 / (self.p - 1))

    def phi(self, x):
        return 0.5 * ((self._u(self.y_star(x)) - self.target) ** 2).sum(-1)

    def hypergrad(self, x):
        b = self._b(x)
        if not self.control:
            return self._jbt(x, b - self.target)
        k = 1.0 / (self.p - 1)
        return self._jbt(x, (signed_pow(b, k) - self.target) * k * b.abs() ** (k - 1.0))

    def g_star(self, x):
        return (1.0 / self.p - 1.0) * (self._b(x).abs() ** (self.p / (self.p - 1))).sum(-1)

    @property
    def phi_star(self) -> float:
        return 0.0

    def formulas(self) -> str:
        p = self.p
        f = "1/2 ||y - t||^2 (negative control)" if self.control else f"1/2 ||y^[{p - 1}] - t||^2"
        phi = (
            f"1/2 ||b^[1/{p - 1}] - t||^2  (grad unbounded as b_i -> 0)"
            if self.control
            else "1/2 ||b(x) - t||^2"
        )
        return (
            f"P11c lp-linear, p = {p}\n"
            f"g(x, y) = 1/{p} ||y||_{p}^{p} - <y, b(x)>,  b(x) = sin(W x) + b0\n"
            f"f(x, y) = {f}\n"
            f"y* = b^[1/{p - 1}],  Phi(x) = {phi},  Phi* = 0"
        )


# ------------------------------------------------------------------------------------
# P11e: lp-linear, degenerate at the solution
# ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LpDegenerateParams(SeparableParams):
    dim_x: int = 4
    dim_y: int = 8


@register_problem("lp_degenerate")
class LpDegenerate(LpLinear):
    r"""P11e: ℓp-linear lower level whose curvature vanishes at the solution, y*(x*) = 0.

    P11c (smooth ``f``) with :math:`b(x) = \sin(Wx) - \sin(Wx_\star)`, so
    :math:`b(x_\star) = 0`, and target :math:`t = 0`:

    .. math::

        g(x, y) = \frac1p \|y\|_p^p - \langle y, b(x)\rangle, \qquad
        f(x, y) = \tfrac12 \|y^{[p-1]}\|^2, \qquad y^* = b^{[1/(p-1)]},

        \Phi(x) = \tfrac12 \|b(x)\|^2, \qquad \nabla\Phi = J_b^\top b, \qquad
        \Phi^* = 0 = \Phi(x_\star), \qquad
        g^* = \Big(\frac1p - 1\Big)\sum_i |b_i|^{p/(p-1)} .

    Why p matters here (unlike P11a, where UniBiO's step is a 1-D sign descent whose
    trajectory does not depend on ``p``): ``x`` and ``y`` are multi-dimensional
    (:math:`W \in \mathbb R^{d_y \times d_x}`, :math:`d_y = 8 > d_x = 4`, so
    :math:`x_\star` is an isolated minimiser), and
    :math:`\nabla^2_{yy} g = (p-1)\,\mathrm{diag}|y|^{p-2}` vanishes at
    :math:`y^*(x_\star) = 0` at order ``p - 2``. Near the solution the lower curvature at
    :math:`y^*` is :math:`(p-1)|b_i|^{(p-2)/(p-1)} \to 0`, so reaching a lower accuracy
    :math:`\|\nabla_y g\| \le \delta` takes more inner steps as ``p`` grows (gradient
    descent on :math:`|y|^p/p` contracts like :math:`t^{-1/(p-2)}`), and the hypergradient
    error of the preconditioned estimate, :math:`J_b^\top \nabla_y g(x, y)` (UniBiO's
    :math:`D = (p-1)|y|^{p-2}` is exactly this ``g``'s Hessian), is that inner residual.
    ``x_\star`` is the hidden :math:`x_{\rm true} \sim N(0, I)`; ``x0``, ``y0`` standard
    normal per seed; ``p = 2`` is the strongly convex control.
    """

    Params = LpDegenerateParams

    def build(self) -> None:
        _SineMap.build(self)
        self.control = False
        self.b0 = -torch.sin(self.W @ self.x_true)
        self.target = torch.zeros_like(self.b0)

    def formulas(self) -> str:
        p = self.p
        return (
            f"P11e lp-linear degenerate at the solution, p = {p}\n"
            f"g(x, y) = 1/{p} ||y||_{p}^{p} - <y, b(x)>,  b(x) = sin(W x) - sin(W x*)\n"
            f"f(x, y) = 1/2 ||y^[{p - 1}]||^2\n"
            f"y* = b^[1/{p - 1}] (= 0 at x*),  Phi(x) = 1/2 ||b(x)||^2,  Phi* = 0\n"
            f"Hessian (p-1) diag|y|^{p - 2} vanishes at y*(x*) = 0"
        )


# ------------------------------------------------------------------------------------
# P11d: p-norm regression with data (reference solve)
# ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PNormRegressionParams(ProblemParams):
    dim_x: int = 5
    dim_y: int = 10
    n_samples: int = 50  # rows of A (finite sum of g; minibatch = rows); >= dim_y
    p: int = 4

    def validate(self) -> None:
        super().validate()
        if min(self.dim_x, self.dim_y, self.n_samples) < 1:
            raise ValueError("dim_x, dim_y and n_samples must be >= 1")
        if self.n_samples < self.dim_y:
            raise ValueError(
                f"n_samples must be >= dim_y (A of full column rank), got "
                f"n_samples={self.n_samples}, dim_y={self.dim_y}"
            )
        _check_p(self.p)


@register_problem("pnorm_regression")
class PNormRegression(Problem):
    r"""P11d: p-norm regression g = (1/pn)‖Ay − b(x)‖ₚᵖ, reference solve by damped Newton.

    Rows :math:`(a_i, w_i, b_{0,i})`, :math:`i = 1..n`:

    .. math::

        g(x, y) = \frac1{pn} \sum_i |a_i^\top y - b_i(x)|^p, \quad b(x) = Wx + b_0,
        \qquad f(x, y) = \tfrac12 \|y - t\|^2 .

    ``A`` has full column rank, so ``g`` is uniformly convex of degree ``p`` in ``y``.
    There is no closed form: :math:`y^*(x)` is a batched reference solve, damped Newton
    from the least-squares solution with Armijo backtracking (halvings evaluated in
    parallel for all runs; full steps once the predicted decrease is below the rounding of
    ``g``), until :math:`\|\nabla_y g\|_\infty` reaches its rounding floor
    (:math:`4\epsilon \max_j \frac1n \sum_i |a_{ij}| |r_i|^{p-1}`, at least
    :math:`10^{-14}`; at most ``max_newton`` = 100 steps). With the default data and
    ``p <= 6`` that is :math:`\|\nabla_y g\| \le 10^{-12}`. With generic data the
    residuals :math:`r = Ay^* - b` are all non-zero, so
    :math:`H = \frac{p-1}n A^\top \mathrm{diag}|r|^{p-2} A \succ 0` and the classical
    implicit formula holds:

    .. math::

        \nabla^2_{xy} g = -\frac{p-1}{n} W^\top \mathrm{diag}|r|^{p-2} A, \qquad
        \nabla\Phi = \frac{p-1}{n} W^\top \big(|r|^{p-2} \odot A H^{-1} (y^* - t)\big).

    For autodiff through ``phi``, ``y_star`` ends with one differentiable Newton step from
    the detached solution, whose derivative is the implicit one. Data (seeded by ``seed``):
    :math:`a_i \sim \mathcal N(0, I)`, :math:`W_{ij} \sim \mathcal N(0, 1/d_x)`,
    :math:`b_0 \sim \mathcal N(0, I)`; :math:`t = y^*(x_{\rm true})` for a hidden
    :math:`x_{\rm true} \sim \mathcal N(0, I)`, so :math:`\Phi^* = 0`. ``x0``, ``y0``
    standard normal per seed.
    """

    regime = "uniformly convex"
    Params = PNormRegressionParams
    max_newton = 100

    def build(self) -> None:
        p = self.params
        gen = self.data_generator()
        n, d, dx = p.n_samples, p.dim_y, p.dim_x
        self.dim_x, self.dim_y, self.p = dx, d, p.p
        self.n_samples_g = n

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64)

        a, w, b0, x_true = randn(n, d), randn(n, dx) / dx**0.5, randn(n), randn(dx)
        self.A, self.W, self.b0, self.x_true = map(self.tensor, (a, w, b0, x_true))
        self.A_pinv = torch.linalg.pinv(self.A)
        self.target = torch.zeros(d, dtype=self.dtype, device=self.device)
        self.target = self.y_star(self.x_true[None])[0].detach()

    def _rows(self, batch: Batch):
        if batch is None:
            return self.A, self.W, self.b0
        return self.A[batch], self.W[batch], self.b0[batch]

    def _resid(self, x, y, batch=None):
        a, w, b0 = self._rows(batch)
        return mv(a, y) - mv(w, x) - b0, a, w

    def f(self, x, y, batch=None):
        return 0.5 * ((y - self.target) ** 2).sum(-1)

    def g(self, x, y, batch=None):
        res, _, _ = self._resid(x, y, batch)
        return abs_pow(res, self.p).mean(-1) / self.p

    # analytic oracles (tests/problems/test_uniformly_convex.py checks them)
    def grad_x_f(self, x, y, batch=None):
        return torch.zeros_like(x)

    def grad_y_f(self, x, y, batch=None):
        return y - self.target

    def grad_x_g(self, x, y, batch=None):
        res, _, w = self._resid(x, y, batch)
        return -mtv(w, signed_pow(res, self.p - 1)) / res.shape[-1]

    def grad_y_g(self, x, y, batch=None):
        res, a, _ = self._resid(x, y, batch)
        return mtv(a, signed_pow(res, self.p - 1)) / res.shape[-1]

    def _weights(self, res: torch.Tensor) -> torch.Tensor:
        """:math:`\\frac{p-1}{m} |r|^{p-2}` per row."""
        return (self.p - 1) * abs_pow(res, self.p - 2) / res.shape[-1]

    def hvp_yy_g(self, x, y, v, batch=None):
        res, a, _ = self._resid(x, y, batch)
        return mtv(a, self._weights(res) * mv(a, v))

    def cross_xy_g(self, x, y, v, batch=None):
        res, a, w = self._resid(x, y, batch)
        return -mtv(w, self._weights(res) * mv(a, v))

    def init_x(self, rng):
        return rng.normal(self.dim_x).to(self.device)

    def init_y(self, rng):
        return rng.normal(self.dim_y).to(self.device)

    # reference solve
    def _hessian(self, x, y) -> torch.Tensor:
        res, a, _ = self._resid(x, y)
        return torch.einsum("ni,rn,nj->rij", a, self._weights(res), a)

    def solve(self, x: torch.Tensor) -> torch.Tensor:
        """Damped Newton for :math:`\\min_y g(x, y)`, batched, no gradient.

        Stops when every run's :math:`\\|\\nabla_y g\\|_\\infty` is at its rounding floor
        (``4 eps`` times the size of the summed terms, or ``1e-14``); returns each run's
        iterate with the smallest gradient."""
        x = x.detach()
        y = (mv(self.W, x) + self.b0) @ self.A_pinv.T  # least squares (p = 2) start
        steps = 0.5 ** torch.arange(40, dtype=self.dtype, device=self.device)
        eps = torch.finfo(self.dtype).eps
        best, best_err = y, torch.full_like(y[:, 0], math.inf)
        for _ in range(self.max_newton):
            res, a, _ = self._resid(x, y)
            grad_y = self.grad_y_g(x, y)
            err = grad_y.abs().amax(-1)
            floor = 4 * eps * mtv(a.abs(), abs_pow(res, self.p - 1)).amax(-1) / res.shape[-1]
            better = err < best_err
            best = torch.where(better[:, None], y, best)
            best_err = torch.where(better, err, best_err)
            if bool((best_err <= torch.clamp(floor, min=1e-14)).all()):
                break
            delta = torch.linalg.solve(self._hessian(x, y), grad_y)
            cand = y[:, None, :] - steps[None, :, None] * delta[:, None, :]  # (R, K, d)
            r, k, d = cand.shape
            g_cand = self.g(x.repeat_interleave(k, 0), cand.reshape(r * k, d)).reshape(r, k)
            g_now = self.g(x, y)
            decrement = (grad_y * delta).sum(-1)  # predicted decrease of the Newton step, x2
            armijo = g_cand <= g_now[:, None] - 1e-4 * steps * decrement[:, None]
            # where the predicted decrease is below the rounding of g, Armijo compares noise:
            # this is the region of quadratic convergence, so take the full Newton step
            resolved = decrement > 1e3 * eps * g_now.abs() + 1e-300
            first = torch.where(armijo.any(-1) & resolved, armijo.to(torch.int64).argmax(-1), 0)
            y = cand[torch.arange(r), first]
        return best

    # ground truth
    def y_star(self, x):
        y = self.solve(x)
        # one differentiable Newton step: its derivative in x is the implicit one
        return y - torch.linalg.solve(self._hessian(x, y), self.grad_y_g(x, y))

    def phi(self, x):
        return 0.5 * ((self.y_star(x) - self.target) ** 2).sum(-1)

    def hypergrad(self, x):
        y = self.solve(x)
        v = torch.linalg.solve(self._hessian(x, y), y - self.target)
        return -self.cross_xy_g(x, y, v)

    @property
    def phi_star(self) -> float:
        return 0.0

    def formulas(self) -> str:
        p, n = self.p, self.params.n_samples
        return (
            f"P11d p-norm regression, p = {p}, n = {n} rows, A of full column rank\n"
            f"g(x, y) = 1/({p} n) ||A y - b(x)||_{p}^{p},  b(x) = W x + b0\n"
            "f(x, y) = 1/2 ||y - t||^2,  t = y*(x_true)\n"
            "y*(x): reference damped Newton to the rounding floor of grad_y g\n"
            "grad Phi = -d2g/dxdy H^-1 (y* - t),  Phi* = 0"
        )
