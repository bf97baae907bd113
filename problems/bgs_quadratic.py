r"""P8: the degenerate quadratic of the BGS-Opt repository (Arbel & Mairal 2022).

Source: ``MichaelArbel/BGS-opt``, ``examples/toy/models.py`` (the toy of
Arbel & Mairal (NeurIPS 2022, arXiv 2207.04888), App. E). With :math:`A \succeq 0` singular,
:math:`B = AU` (range condition) and
:math:`Q = B^\top A^\dagger B = U^\top A U`:

.. math::

    g(x, y) = \tfrac12 y^\top A y + y^\top B x + \tfrac12 x^\top Q x, \qquad
    f(x, y) = \tfrac12 x^\top H x + c^\top y + \delta,

    S(x) = -A^\dagger B x + \ker A, \qquad g^* = 0 .

Optimistic :math:`\Phi(x) = \inf_{y \in S(x)} f = -\infty` unless
:math:`P_{\ker A} c = 0`. Gradient descent or the gradient flow on ``g`` from
:math:`y_0` never changes :math:`P_{\ker A} y`, so the flow selection and the BGS
objective are

.. math::

    \varphi(x, y_0) = -A^\dagger B x + P_{\ker A} y_0, \qquad
    \mathcal L_\varphi(x, y_0) = \tfrac12 x^\top H x - v^\top x + \delta
    + c^\top P_{\ker A} y_0, \qquad v = B^\top A^\dagger c,

    \partial_x \mathcal L_\varphi = Hx - v \ (\text{independent of } y_0), \qquad
    x^* = H^{-1} v .

What ``phi`` and ``hypergrad`` report: :math:`\mathcal L_\varphi(x, y_0)` and its
gradient for :math:`y_0 \in \mathrm{range}(A)` (e.g. the default :math:`y_0 = 0`), i.e.
:math:`\tfrac12 (x - x^*)^\top H (x - x^*)` with :math:`\delta = \tfrac12 v^\top x^*`
chosen as in the repo so that :math:`\Phi^* = 0` — the repo's own metric. ``y_star`` is
:math:`-A^\dagger B x`, the flow selection from :math:`y_0 = 0` (the min-norm point of
:math:`S(x)`). With ``c_in_range=True`` (``c`` projected onto :math:`\mathrm{range}(A)`),
``f`` is constant on :math:`S(x)`, the optimistic :math:`\Phi` is finite and equals what
``phi`` reports, and every point of ``S(x)`` is an optimistic selection. With the default
``c_in_range=False`` (the repo's toy) the optimistic problem is unbounded, ``y_star`` is
not an optimistic selection, and methods that chase :math:`\nabla_y f = c` inside
:math:`\ker A` drift: the metric ``ker_norm`` :math:`= \|P_{\ker A} y\|` shows it.

At any :math:`y \in S(x)` the pseudoinverse formula
:math:`\nabla_x f - \nabla^2_{xy} g\, A^\dagger \nabla_y f = Hx - B^\top A^\dagger c`
equals ``hypergrad`` (Arbel & Mairal Prop. 4).

Data (seeded by ``seed``): :math:`A = V_r \mathrm{diag}(\lambda) V_r^\top` with
:math:`V_r` the first :math:`r = d_y - k` columns of a random orthogonal matrix and
:math:`\lambda` log-spaced in :math:`[1/\mathrm{cond}, 1]` (the repo normalises the top
eigenvalue to 1 too); :math:`k` = ``ker_dim`` zero eigenvalues (repo: 99 of 1000);
:math:`U_{ij} \sim \mathcal N(0, 1/d_x)`; ``H`` has spectrum log-spaced in
:math:`[1/\mathrm{cond}_f, 1]`; :math:`c \sim \mathcal N(0, I)`. Defaults are ten times
smaller than the repo (``dim_y = 1000``, ``dim_x = 2000``, ``ker_dim = 99`` reproduce its
sizes) so that the default benchmark stays fast on a CPU. ``x0`` is standard normal per
seed, ``y0 = 0``.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from bibench import Problem, ProblemParams, register_problem


@dataclasses.dataclass(frozen=True)
class BGSQuadraticParams(ProblemParams):
    dim_x: int = 200
    dim_y: int = 100
    ker_dim: int = 10  # dim ker A, the dimension of S(x)
    cond: float = 10.0  # condition number of A on its range (spectrum [1/cond, 1])
    cond_f: float = 10.0  # condition number of H (spectrum [1/cond_f, 1])
    c_in_range: bool = False  # project c onto range(A): the optimistic Phi becomes finite

    def validate(self) -> None:
        super().validate()
        if self.dim_x < 1 or self.dim_y < 1:
            raise ValueError("dim_x and dim_y must be >= 1")
        if not 0 <= self.ker_dim < self.dim_y:
            raise ValueError(f"ker_dim must be in [0, dim_y), got {self.ker_dim}")
        if self.cond < 1 or self.cond_f < 1:
            raise ValueError(f"cond and cond_f must be >= 1, got {self.cond}, {self.cond_f}")


def _logspace(lo: float, n: int) -> torch.Tensor:
    """``n`` values log-spaced from 1 down to ``lo``."""
    return torch.logspace(0, math.log10(lo), n, dtype=torch.float64)


@register_problem("bgs_quadratic")
class BGSQuadratic(Problem):
    """P8: BGS repo's degenerate quadratic; optimistic Φ = −∞, reports the BGS objective."""

    regime = "degenerate"
    Params = BGSQuadraticParams

    def build(self) -> None:
        p = self.params
        gen = self.data_generator()
        dx, dy, k = p.dim_x, p.dim_y, p.ker_dim
        r = dy - k
        self.dim_x, self.dim_y = dx, dy

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64)

        q, _ = torch.linalg.qr(randn(dy, dy))
        v_r, ker = q[:, :r], q[:, r:]
        lam = _logspace(1.0 / p.cond, r)
        a = v_r @ torch.diag(lam) @ v_r.T
        a_pinv = v_r @ torch.diag(1.0 / lam) @ v_r.T
        u = randn(dy, dx) / dx**0.5
        b = a @ u
        qx = u.T @ a @ u
        qh, _ = torch.linalg.qr(randn(dx, dx))
        h = qh @ torch.diag(_logspace(1.0 / p.cond_f, dx)) @ qh.T
        c = randn(dy)
        if p.c_in_range:
            c = v_r @ (v_r.T @ c)
        v = b.T @ a_pinv @ c
        x_star = torch.linalg.solve(h, v)

        t = self.tensor
        self.A, self.A_pinv, self.B, self.Q, self.H, self.c = (
            t(a),
            t(a_pinv),
            t(b),
            t(qx),
            t(h),
            t(c),
        )
        self.V_r, self.ker, self.v, self.x_star = t(v_r), t(ker), t(v), t(x_star)
        self.selection_jac = t(a_pinv @ b)  # A^+ B = P_range U
        self.delta = 0.5 * float(v @ x_star)

    def f(self, x, y, batch=None):
        return 0.5 * (x * (x @ self.H)).sum(-1) + y @ self.c + self.delta

    def g(self, x, y, batch=None):
        return (
            0.5 * (y * (y @ self.A)).sum(-1)
            + (y * (x @ self.B.T)).sum(-1)
            + 0.5 * (x * (x @ self.Q)).sum(-1)
        )

    # analytic oracles (tests/problems/test_bgs_quadratic.py checks them)
    def grad_x_f(self, x, y, batch=None):
        return x @ self.H

    def grad_y_f(self, x, y, batch=None):
        return torch.zeros_like(y) + self.c

    def grad_x_g(self, x, y, batch=None):
        return y @ self.B + x @ self.Q

    def grad_y_g(self, x, y, batch=None):
        return y @ self.A + x @ self.B.T

    def hvp_yy_g(self, x, y, v, batch=None):
        return v @ self.A

    def cross_xy_g(self, x, y, v, batch=None):
        return v @ self.B

    def init_x(self, rng):
        return rng.normal(self.dim_x).to(self.device)

    # ground truth: the flow-selection objective (see the module docstring)
    def y_star(self, x):
        return -x @ self.selection_jac.T

    def phi(self, x):
        d = x - self.x_star
        return 0.5 * (d * (d @ self.H)).sum(-1)

    def hypergrad(self, x):
        return x @ self.H - self.v

    def g_star(self, x):
        return torch.zeros_like(x[:, 0])

    @property
    def phi_star(self) -> float:
        return 0.0

    def dist_to_solution_set(self, x, y):
        return torch.linalg.vector_norm((y - self.y_star(x)) @ self.V_r, dim=-1)

    def sample_solution_set(self, x, n):
        gen = torch.Generator().manual_seed(12345)
        z = torch.randn(x.shape[0], n, self.ker.shape[1], generator=gen, dtype=torch.float64)
        return self.y_star(x)[:, None, :] + z.to(self.device) @ self.ker.T

    def flow_selection(self, x, y0):
        return self.y_star(x) + (y0 @ self.ker) @ self.ker.T

    def selection_map_grad(self, x, y0):
        return self.hypergrad(x)

    def metrics(self, x, y):
        return {"ker_norm": torch.linalg.vector_norm(y @ self.ker, dim=-1)}

    def formulas(self) -> str:
        p = self.params
        return (
            f"P8 BGS degenerate quadratic: dim_x = {p.dim_x}, dim_y = {p.dim_y},"
            f" dim ker A = {p.ker_dim}, c in range(A): {p.c_in_range}\n"
            "g(x, y) = 1/2 y'Ay + y'Bx + 1/2 x'Qx,  B = AU,  Q = B'A^+B,  g* = 0\n"
            "f(x, y) = 1/2 x'Hx + c'y + delta\n"
            "S(x) = -A^+Bx + ker A;  optimistic Phi = -inf unless P_ker c = 0\n"
            "flow selection phi(x, y0) = -A^+Bx + P_ker y0\n"
            "reported Phi(x) = L_phi(x, 0) = 1/2 (x - x*)'H(x - x*),  x* = H^-1 B'A^+c"
        )
