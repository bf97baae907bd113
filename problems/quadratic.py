r"""Strongly convex quadratic control problem (benchopt's ``simulated``), finite sum.

With samples :math:`i = 1..n`,

.. math::

    g_i(x, y) = \tfrac12 y^\top A_i y + y^\top B_i x + a_i^\top y, \qquad
    f_i(x, y) = \tfrac12 y^\top C_i y + y^\top D_i x + c_i^\top y
                + \tfrac12 x^\top P x + p^\top x,

and :math:`f, g` the sample means. :math:`A = \bar A \succ 0` has spectrum in
:math:`[1/\kappa, 1]`, so :math:`y^*(x) = -A^{-1}(Bx + a) = Jx + y_0` with
:math:`J = -A^{-1}B`. Then :math:`\Phi(x) = \tfrac12 x^\top M x + m^\top x + k` with

.. math::

    M = J^\top C J + J^\top D + D^\top J + P, \quad
    m = J^\top C y_0 + D^\top y_0 + J^\top c + p, \quad
    k = \tfrac12 y_0^\top C y_0 + c^\top y_0,

and :math:`P = Q\,\mathrm{diag}(\lambda)\,Q^\top - (M - P)` is chosen so that :math:`M` has
spectrum :math:`\lambda` log-spaced in :math:`[1, \kappa_\Phi]`:
:math:`\nabla\Phi(x) = Mx + m`, :math:`x^* = -M^{-1}m`,
:math:`\Phi^* = k - \tfrac12 m^\top M^{-1} m`.

Instances of other ``seed`` stack into one batch (:meth:`bibench.problem.Problem.stack`):
every matrix and vector above, per-sample or not, then carries the run dimension.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from bibench import Problem, ProblemParams, register_problem
from bibench.problem import batch_mean, mtv, mv, stacked_batch_mean


@dataclasses.dataclass(frozen=True)
class QuadraticParams(ProblemParams):
    dim_x: int = 5
    dim_y: int = 10
    n_samples: int = 64
    cond: float = 10.0  # condition number of the lower-level Hessian A (L = 1, mu = 1/cond)
    spread: float = 0.1  # size of the per-sample deviations A_i - A, B_i - B, ...
    cond_phi: float = 10.0  # condition number of the Hessian M of Phi (spectrum [1, cond_phi])

    def validate(self) -> None:
        super().validate()
        if self.dim_x < 1 or self.dim_y < 1 or self.n_samples < 1:
            raise ValueError("dim_x, dim_y and n_samples must be >= 1")
        if self.cond < 1 or self.cond_phi < 1:
            raise ValueError(f"cond and cond_phi must be >= 1, got {self.cond}, {self.cond_phi}")
        if self.spread < 0:
            raise ValueError(f"spread must be >= 0, got {self.spread}")


@register_problem("quadratic")
class Quadratic(Problem):
    """Strongly convex quadratic with exact hypergradient (control problem)."""

    regime = "strongly convex"
    Params = QuadraticParams
    stack_params = ("seed",)
    stack_data = ("A_i", "B_i", "C_i", "D_i", "a_i", "c_i", "A", "B", "C", "D", "a", "c",
                  "P", "p", "J", "y0", "M", "m", "k", "_phi_star")  # fmt: skip

    def build(self) -> None:
        p = self.params
        gen = self.data_generator()
        dx, dy, n = p.dim_x, p.dim_y, p.n_samples
        self.dim_x, self.dim_y = dx, dy
        self.n_samples_f = self.n_samples_g = n

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64)

        def centred(t: torch.Tensor) -> torch.Tensor:
            return p.spread * (t - t.mean(0, keepdim=True))

        q, _ = torch.linalg.qr(randn(dy, dy))
        eig = torch.logspace(0, -torch.log10(torch.tensor(p.cond)).item(), dy, dtype=torch.float64)
        a_mean = q @ torch.diag(eig) @ q.T
        e = randn(n, dy, dy)
        a_i = a_mean + centred(0.5 * (e + e.transpose(1, 2)) / dy**0.5)
        b_i = a_mean @ randn(dy, dx) / dx**0.5 + centred(randn(n, dy, dx) / dx**0.5)  # J = O(1)
        g_c = randn(dy, dy) / dy**0.5
        ce = randn(n, dy, dy)
        c_i = g_c @ g_c.T + centred(0.5 * (ce + ce.transpose(1, 2)) / dy**0.5)
        d_i = 0.5 * randn(dy, dx) / dx**0.5 + centred(randn(n, dy, dx) / dx**0.5)
        lin_a = randn(dy) + centred(randn(n, dy))
        lin_c = randn(dy) + centred(randn(n, dy))
        lin_p = randn(dx)

        # Ground truth (float64, CPU) from the means.
        a, b, c, d = a_i.mean(0), b_i.mean(0), c_i.mean(0), d_i.mean(0)
        la, lc = lin_a.mean(0), lin_c.mean(0)
        jac = -torch.linalg.solve(a, b)
        y0 = -torch.linalg.solve(a, la)
        m0 = jac.T @ c @ jac + jac.T @ d + d.T @ jac
        m0 = 0.5 * (m0 + m0.T)
        qx, _ = torch.linalg.qr(randn(dx, dx))
        eig_phi = torch.logspace(0, math.log10(p.cond_phi), dx, dtype=torch.float64)
        mmat = qx @ torch.diag(eig_phi) @ qx.T
        pmat = mmat - m0
        mvec = jac.T @ c @ y0 + d.T @ y0 + jac.T @ lc + lin_p
        k = 0.5 * y0 @ c @ y0 + lc @ y0
        self._phi_star = (k - 0.5 * mvec @ torch.linalg.solve(mmat, mvec)).item()

        t = self.tensor
        self.A_i, self.B_i, self.C_i, self.D_i = t(a_i), t(b_i), t(c_i), t(d_i)
        self.a_i, self.c_i = t(lin_a), t(lin_c)
        self.A, self.B, self.C, self.D = t(a), t(b), t(c), t(d)
        self.a, self.c, self.P, self.p = t(la), t(lc), t(pmat), t(lin_p)
        self.J, self.y0, self.M, self.m, self.k = t(jac), t(y0), t(mmat), t(mvec), float(k)
        self._last: dict[str, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    @classmethod
    def stack(cls, instances):
        out = super().stack(instances)
        out._last = {}  # the minibatch cache is per problem object
        return out

    # Per-run means over a minibatch (R, B), or the full means. An algorithm that reuses
    # one minibatch for several calls (SOBA: gradient, HVP and cross product) gets the
    # means computed once: the last minibatch of each level is kept with its means.
    def _terms(self, level: str, batch, data: tuple[torch.Tensor, ...], full):
        if batch is None:
            return full
        last = self._last.get(level)
        if last is not None and last[0] is batch:
            return last[1]
        mean = stacked_batch_mean if self.stacked else batch_mean
        terms = tuple(mean(t, batch) for t in data)
        self._last[level] = (batch, terms)
        return terms

    def _g_terms(self, batch):
        return self._terms("g", batch, (self.A_i, self.B_i, self.a_i), (self.A, self.B, self.a))

    def _f_terms(self, batch):
        return self._terms("f", batch, (self.C_i, self.D_i, self.c_i), (self.C, self.D, self.c))

    def f(self, x, y, batch=None):
        c, d, lc = self._f_terms(batch)
        return (
            0.5 * (y * mv(c, y)).sum(-1)
            + (y * mv(d, x)).sum(-1)
            + (lc * y).sum(-1)
            + 0.5 * (x * mv(self.P, x)).sum(-1)
            + (x * self.p).sum(-1)
        )

    def g(self, x, y, batch=None):
        a, b, la = self._g_terms(batch)
        return 0.5 * (y * mv(a, y)).sum(-1) + (y * mv(b, x)).sum(-1) + (la * y).sum(-1)

    # analytic oracles (checked against torch.func in tests/problems/test_quadratic.py)
    def grad_x_f(self, x, y, batch=None):
        _, d, _ = self._f_terms(batch)
        return mtv(d, y) + mv(self.P, x) + self.p

    def grad_y_f(self, x, y, batch=None):
        c, d, lc = self._f_terms(batch)
        return mv(c, y) + mv(d, x) + lc

    def grad_x_g(self, x, y, batch=None):
        _, b, _ = self._g_terms(batch)
        return mtv(b, y)

    def grad_y_g(self, x, y, batch=None):
        a, b, la = self._g_terms(batch)
        return mv(a, y) + mv(b, x) + la

    def hvp_yy_g(self, x, y, v, batch=None):
        a, _, _ = self._g_terms(batch)
        return mv(a, v)

    def cross_xy_g(self, x, y, v, batch=None):
        _, b, _ = self._g_terms(batch)
        return mtv(b, v)

    def init_x(self, rng):
        return rng.normal(self.dim_x).to(self.device)

    def init_y(self, rng):
        return rng.normal(self.dim_y).to(self.device)

    # ground truth
    def y_star(self, x):
        return mv(self.J, x) + self.y0

    def phi(self, x):
        return 0.5 * (x * mv(self.M, x)).sum(-1) + (x * self.m).sum(-1) + self.k

    def hypergrad(self, x):
        return mv(self.M, x) + self.m

    @property
    def phi_star(self) -> float | torch.Tensor:
        return self._phi_star

    def x_star(self) -> torch.Tensor:
        return -torch.linalg.solve(self.M, self.m)
