r"""AID-CG: approximate implicit differentiation with conjugate gradient."""

from __future__ import annotations

import dataclasses

import torch

from bibench import Algorithm, HyperParams, register_algorithm
from bibench.estimators import cg


@dataclasses.dataclass(frozen=True)
class AIDCGHyper(HyperParams):
    lr_x: float = 0.1  # alpha, upper step
    lr_y: float = 1.0  # beta, lower GD step (1/L_g on the quadratic)
    n_inner: int = 10  # T, lower GD steps per outer step
    n_cg: int = 10  # N, CG iterations per outer step
    warm_start_v: bool = True  # start CG from the previous v


@dataclasses.dataclass
class AIDCGState:
    x: torch.Tensor
    y: torch.Tensor
    v: torch.Tensor


@register_algorithm("aid_cg")
class AIDCG(Algorithm):
    r"""AID-CG: warm-started inner GD, CG solve of the adjoint system, then an upper step.

    Each outer step ``k`` (Pedregosa 2016, HOAG; Grazzi et al. 2020; Ji, Yang, Liang 2021,
    AID-BiO):

    .. math::

        y &\leftarrow y - \beta \nabla_y g(x, y) \quad (T \text{ times, from the previous } y)\\
        v &\approx [\nabla^2_{yy} g(x, y)]^{-1} \nabla_y f(x, y) \quad (N \text{ CG steps})\\
        h &= \nabla_x f(x, y) - \nabla^2_{xy} g(x, y)\, v, \qquad x \leftarrow x - \alpha h.

    Oracle calls per step: ``T`` × ∇_y g, one ∇_x f, one ∇_y f, ``N`` HVPs (plus one for
    the initial residual when warm-starting ``v``) and one cross product.

    Choices: ``v`` is warm-started from the previous step (AID-BiO does; set
    ``warm_start_v=False`` for ``v_0 = 0``). Sampling: a deterministic algorithm, so on a
    stochastic problem every call draws its own minibatch (∇_x f and ∇_y f too); the
    inner steps at their own iterates, everything else at :math:`(x_k, y_{k+1})`, the
    output of the inner loop.
    """

    Hyper = AIDCGHyper
    control_budget = 10_000
    grid = {"lr_x": [0.01, 0.03, 0.1, 0.3], "lr_y": [0.1, 0.5, 1.0]}

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        self.solver = cg(self.hp.n_cg)
        return AIDCGState(x0, y0, torch.zeros_like(y0))

    def step(self, state):
        hp, o = self.hp, self.oracle
        x, y = state.x, state.y
        for _ in range(hp.n_inner):
            y = y - hp.lr_y * o.grad_y_g(x, y)
        gx, gy = o.grad_x_f(x, y), o.grad_y_f(x, y)
        v = self.solver(
            lambda u, active=None: o.hvp_yy_g(x, y, u, active=active),
            gy,
            init=state.v if hp.warm_start_v else None,
        )
        x = x - hp.lr_x * (gx - o.cross_xy_g(x, y, v))
        return AIDCGState(x, y, v)
