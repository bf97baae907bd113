r"""BOME: bilevel optimization made easy (value-function constraint, dynamic barrier)."""

from __future__ import annotations

import dataclasses

import torch

from bibench import Algorithm, HyperParams, State, register_algorithm
from bibench.hypergrad import lower_descent


@dataclasses.dataclass(frozen=True)
class BOMEHyper(HyperParams):
    lr: float = 0.01  # xi, joint step on (x, y)
    eta: float = 0.5  # eta, barrier strength phi = eta ||grad q||^2 (the paper's default)
    lr_y: float = 1.0  # alpha, inner GD step for y_hat
    n_inner: int = 10  # T, inner GD steps for y_hat (the paper's toy default)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


@register_algorithm("bome")
class BOME(Algorithm):
    r"""BOME (Liu, Ye, Wright, Stone, Liu, NeurIPS 2022), Algorithm 1.

    The bilevel problem is the constrained problem :math:`\min_{x,y} f(x, y)` s.t.
    :math:`q(x, y) = g(x, y) - g^*(x) \le 0`. With :math:`v = (x, y)` and ``T`` inner GD
    steps :math:`\hat y_0 = y`, :math:`\hat y_{t+1} = \hat y_t - \alpha\nabla_y g(x, \hat y_t)`
    (no differentiation through them), each step is

    .. math::

        \hat q(v) &= g(x, y) - g(x, \hat y_T), \qquad
        \nabla\hat q = \big(\nabla_x g(x, y) - \nabla_x g(x, \hat y_T),\ \nabla_y g(x, y)\big),\\
        \lambda &= \max\Big(\frac{\phi - \langle\nabla f, \nabla\hat q\rangle}
                  {\|\nabla\hat q\|^2},\ 0\Big), \quad \phi = \eta\|\nabla\hat q\|^2, \qquad
        v \leftarrow v - \xi\,(\nabla f(v) + \lambda\nabla\hat q(v)).

    The dynamic barrier makes :math:`\hat q` decrease at least like
    :math:`\xi\eta\|\nabla\hat q\|^2` per step while the step follows :math:`-\nabla f`
    as far as the constraint allows; limit points are KKT points of the value-function
    reformulation, i.e. optimistic stationary points when ``g`` is PL.
    Oracle calls per step: ``T + 1`` ∇_y g, two ∇_x g, one ∇_x f, one ∇_y f.
    Sampling: each inner step of ``ŷ`` draws its own sample; ∇_x f and ∇_y f share one
    sample of ``f`` at :math:`(x, y)`; the three derivatives of :math:`\hat q` (∇_x g at
    ``y`` and at :math:`\hat y_T`, ∇_y g at ``y``) share one sample of ``g``, as the
    gradient of the sampled :math:`g(x, y) - g(x, \hat y_T)` would.

    Choices: :math:`\phi = \eta\|\nabla\hat q\|^2` with η = 0.5 (the paper's default);
    :math:`\lambda = 0` when :math:`\nabla\hat q = 0` exactly (the barrier is then
    inactive; the authors' code adds 1e-8 to the denominator instead); ``ŷ`` starts from
    the current ``y`` (the paper's :math:`\hat y^{(0)} = y_k`); one step size for ``x``
    and ``y`` (their toys use equal ones). Defaults: η = 0.5 and T = 10 as in the
    paper's toys; ξ = 0.01 instead of their 0.5, because ξ must stay below
    :math:`2/\|\nabla^2 f\|` where the barrier is inactive (‖∇²f‖ ≈ 8 on ``quadratic``).

    No control budget (``control_budget = 0``): with a constant step BOME stalls at a
    level of ‖∇Φ‖ proportional to ξ on ``quadratic`` (measured: 1.7 at ξ = 0.01, 0.35
    at ξ = 0.002, flat from 0.5M to 1.5M calls, T = 50). Its limit needs λ → ∞ (the
    constraint gradient vanishes on the solution set) and, heuristically, the direction of
    :math:`y - y^*` rotates by :math:`O(\xi/\|y - y^*\|)` per step, so
    :math:`\|y - y^*\|` cannot go below :math:`O(\xi)`. On a μ-strongly convex ``g``
    the limit is also biased by :math:`O((1-\alpha\mu)^T)` (the x-part of
    :math:`\nabla\hat q` carries :math:`I-(I-\alpha\nabla^2_{yy}g)^T`).
    Grid: η ∈ {0.1, 0.5, 0.9} and T ∈ {1, 10, 100} as in the paper's toy code (toy/toy_lls.py);
    ξ from their 0.5 down to 0.01.
    """

    Hyper = BOMEHyper
    control_budget = 0
    grid = {"lr": [0.01, 0.1, 0.5], "eta": [0.1, 0.5, 0.9], "n_inner": [1, 10, 100]}

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        return State(x0, y0)

    def step(self, state):
        hp, o = self.hp, self.oracle
        x, y = state.x, state.y
        y_hat = lower_descent(o, x, y, hp.lr_y, hp.n_inner)
        fx, fy = o.grad_f(x, y)
        batch = o.sample("g")  # ∇q̂ on one sample of g, as autograd of g(y) − g(ŷ) would be
        qx = o.grad_x_g(x, y, batch) - o.grad_x_g(x, y_hat, batch)
        qy = o.grad_y_g(x, y, batch)
        qq = _dot(qx, qx) + _dot(qy, qy)
        fq = _dot(fx, qx) + _dot(fy, qy)
        safe = torch.where(qq > 0, qq, torch.ones_like(qq))
        lam = torch.where(qq > 0, torch.clamp(hp.eta - fq / safe, min=0.0), torch.zeros_like(qq))
        return State(x - hp.lr * (fx + lam * qx), y - hp.lr * (fy + lam * qy))
