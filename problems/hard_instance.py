r"""P13: the Chen–Xu–Zhang hard nonconvex–convex instance (negative control).

Chen, Xu, Zhang, "On finding small hyper-gradients in bilevel optimization: hardness
results and improved analysis", COLT 2024 (arXiv 2301.00712), proof of the hardness
theorem (appendix E). With :math:`d_x = 1`, :math:`q = 2TK` (``T`` outer iterations of
``K`` lower-level steps each) and :math:`\beta = 1/\sqrt q`:

.. math::

    g(x, y) = \beta^2 h_q(y/\beta) = \tfrac12 y^\top A y - \tfrac{\beta}{4} y_1, \qquad
    h_q(v) = \tfrac12 v^\top A v - \tfrac14 v_1, \qquad
    A = \tfrac14\,\mathrm{tridiag}(-1, 2, -1),

    f(x, y) = 2 (x + 1)^2 r(y), \qquad r(y) = \sum_{j = q/2 + 1}^{q} \psi(y_j).

:math:`v^\top A v = \frac14 (v_1^2 + \sum_j (v_j - v_{j+1})^2 + v_q^2) \le \|v\|^2`, so
``g`` is a strictly convex quadratic with 1-Lipschitz gradient whose smallest eigenvalue
is :math:`\sin^2(\pi / (2(q+1))) = \Theta(q^{-2})`. ``g`` does not depend on ``x``. Its
unique minimiser solves :math:`\mathrm{tridiag}(-1,2,-1)\, v = e_1`:

.. math::

    y^*_j = \beta \Big(1 - \frac{j}{q + 1}\Big) \ne 0 \quad (j = 1..q), \qquad
    g^* = -\frac{1}{8 (q + 1)}.

Hence :math:`\Phi(x) = 2 (x+1)^2 r(y^*) = \tfrac12 (x + 1)^2` (since ``r(y*) = 1/4``),
:math:`\Phi'(x) = x + 1`, :math:`\Phi'(0) = 1`, :math:`\Phi^* = 0` at :math:`x = -1`.

Zero-respecting chain: :math:`\nabla_y g(x, y) = Ay - \tfrac\beta4 e_1` couples only
neighbouring coordinates, so from :math:`y_0 = 0` each lower-level gradient query makes at
most one more coordinate non-zero. ``psi(0) = psi'(0) = 0``, so while the last ``q/2``
coordinates are zero, :math:`\nabla_x f = 4(x+1) r(y) = 0` and :math:`\nabla_y f = 0`
(and :math:`\nabla_x g = \nabla^2_{xy} g = 0` always): any zero-respecting method that
makes fewer than ``q/2`` lower-level queries (gradients or HVPs) stays at
:math:`x_t = x_0 = 0`, where :math:`|\Phi'(0)| = 1`.

Choices the paper leaves open (its own :math:`\psi` is a piecewise bump, partly lost in
the available text):

* :math:`\psi(t) = a\,s\,(\sqrt{1 + (t/s)^2} - 1)` (pseudo-Huber) with :math:`s = \beta`,
  the scale of :math:`y^*`. It is :math:`C^\infty`, :math:`\psi(0) = \psi'(0) = 0`,
  :math:`|\psi'| < a` (bounded slope, so ``f`` is Lipschitz in ``y`` on bounded ``x``)
  and :math:`0 < \psi'' \le a / s` (Lipschitz gradient). :math:`a` is set so that
  :math:`r(y^*) = \tfrac14`:
  :math:`a = 1 / (4 \beta \sum_{j > q/2} (\sqrt{1 + (y^*_j/\beta)^2} - 1))`.
* the linear term of Nesterov's chain is :math:`-\tfrac14 v_1` (Nesterov's function with
  ``L = 1``), which makes every :math:`y^*_j` non-zero and :math:`\|y^*\| \le 1`.
* ``x0 = 0`` and ``y0 = 0`` for every seed (the paper's start; a random ``y0`` would not be
  zero-respecting). In the stochastic variant the Gaussian oracle noise touches every
  coordinate, so the hardness no longer applies: that variant is a different experiment.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from bibench import Problem, ProblemParams, register_problem


@dataclasses.dataclass(frozen=True)
class CXZHardParams(ProblemParams):
    T: int = 10  # outer iterations the lower bound is stated for
    K: int = 10  # lower-level steps per outer iteration; q = 2 T K coordinates

    def validate(self) -> None:
        super().validate()
        if self.T < 1 or self.K < 1:
            raise ValueError(f"T and K must be >= 1, got T={self.T}, K={self.K}")


def tridiag_matvec(v: torch.Tensor) -> torch.Tensor:
    r""":math:`A v` with :math:`A = \tfrac14 \mathrm{tridiag}(-1, 2, -1)`, per run; exact zeros
    stay zero (no dense product), which keeps the chain zero-respecting."""
    left = torch.nn.functional.pad(v[:, 1:], (0, 1))  # v_{j+1}
    right = torch.nn.functional.pad(v[:, :-1], (1, 0))  # v_{j-1}
    return 0.25 * (2.0 * v - left - right)


@register_problem("cxz_hard")
class CXZHard(Problem):
    """P13: Chen–Xu–Zhang hard nonconvex–convex chain, |Φ'| = 1 before q/2 queries."""

    regime = "convex (hard)"
    Params = CXZHardParams

    def build(self) -> None:
        p = self.params
        q = 2 * p.T * p.K
        self.q = q
        self.dim_x, self.dim_y = 1, q
        self.beta = 1.0 / math.sqrt(q)
        j = torch.arange(1, q + 1, dtype=torch.float64)
        v_star = 1.0 - j / (q + 1)
        tail = v_star[q // 2 :]
        self.psi_scale = self.beta
        self.psi_slope = 1.0 / (4.0 * self.beta * (torch.sqrt(1.0 + tail**2) - 1.0).sum().item())
        self.y_opt = self.tensor(self.beta * v_star)
        self.e1 = self.tensor(torch.nn.functional.one_hot(torch.tensor(0), q))

    # psi and r ------------------------------------------------------------------------
    def _psi(self, t: torch.Tensor) -> torch.Tensor:
        s = self.psi_scale
        u2 = (t / s) ** 2
        # sqrt(1 + u^2) - 1 without cancellation, so psi(t) > 0 for every t != 0
        return self.psi_slope * s * u2 / (torch.sqrt(1.0 + u2) + 1.0)

    def _dpsi(self, t: torch.Tensor) -> torch.Tensor:
        u = t / self.psi_scale
        return self.psi_slope * u / torch.sqrt(1.0 + u**2)

    def r(self, y: torch.Tensor) -> torch.Tensor:
        r""":math:`r(y) = \sum_{j > q/2} \psi(y_j)`, ``(R,)``."""
        return self._psi(y[:, self.q // 2 :]).sum(-1)

    # objectives -----------------------------------------------------------------------
    def f(self, x, y, batch=None):
        return 2.0 * (x[:, 0] + 1.0) ** 2 * self.r(y)

    def g(self, x, y, batch=None):
        return 0.5 * (y * tridiag_matvec(y)).sum(-1) - 0.25 * self.beta * y[:, 0]

    # analytic oracles (tests/problems/test_hard_instance.py checks them against autodiff)
    def grad_x_f(self, x, y, batch=None):
        return 4.0 * (x + 1.0) * self.r(y)[:, None]

    def grad_y_f(self, x, y, batch=None):
        head = torch.zeros_like(y[:, : self.q // 2])
        tail = 2.0 * (x + 1.0) ** 2 * self._dpsi(y[:, self.q // 2 :])
        return torch.cat([head, tail], dim=-1)

    def grad_x_g(self, x, y, batch=None):
        return torch.zeros_like(x)

    def grad_y_g(self, x, y, batch=None):
        return tridiag_matvec(y) - 0.25 * self.beta * self.e1

    def hvp_yy_g(self, x, y, v, batch=None):
        return tridiag_matvec(v)

    def cross_xy_g(self, x, y, v, batch=None):
        return torch.zeros_like(x)

    # the paper's start: x0 = 0, y0 = 0 for every seed (base-class defaults)

    # ground truth ---------------------------------------------------------------------
    def y_star(self, x):
        return self.y_opt.expand(x.shape[0], -1)

    def phi(self, x):
        return 0.5 * (x[:, 0] + 1.0) ** 2

    def hypergrad(self, x):
        return x + 1.0

    def g_star(self, x):
        return torch.full_like(x[:, 0], -1.0 / (8.0 * (self.q + 1)))

    @property
    def phi_star(self) -> float:
        return 0.0

    def metrics(self, x, y):
        r"""``active_depth``: the largest ``j`` with :math:`y_j \ne 0` (0 if none); the chain
        argument says it grows by at most one per lower-level query."""
        idx = torch.arange(1, self.q + 1, device=y.device, dtype=torch.float64)
        return {"active_depth": ((y != 0) * idx).amax(-1)}

    def formulas(self) -> str:
        return (
            f"P13 Chen-Xu-Zhang hard instance, q = 2TK = {self.q}, beta = 1/sqrt(q)\n"
            "g(y) = 1/2 y'Ay - beta/4 y_1,  A = 1/4 tridiag(-1, 2, -1)   (independent of x)\n"
            "f(x, y) = 2 (x+1)^2 sum_{j>q/2} psi(y_j),"
            f"  psi(t) = a s (sqrt(1 + (t/s)^2) - 1), s = beta, a = {self.psi_slope:.6g}\n"
            "y*_j = beta (1 - j/(q+1)),  Phi(x) = (x+1)^2 / 2,  Phi'(x) = x + 1,  Phi* = 0\n"
            "zero-respecting methods with < q/2 lower-level queries stay at x = 0, |Phi'| = 1"
        )
