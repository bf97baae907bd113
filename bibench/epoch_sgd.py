r"""The two building blocks of UniBiO (ICLR 2026, arXiv 2603.00027, Algorithms 1 and 2):
Epoch-SGD with a shrinking ball (its Algorithm 1, the lower-level solver) and the
preconditioned Neumann hypergradient on the generalized Hessian. Shared by the
``unibio`` and ``unibio_faithful`` plugins.

**Epoch-SGD.** For a lower level that is :math:`(\mu, p)`-uniformly convex in ``y``, with
:math:`\tau = 2(p-1)/p`, stage :math:`k = 1, 2, \dots` runs

.. math::

    T_k = \lfloor T_1 2^{\tau(k-1)} \rfloor, \quad D_k = D_1 2^{-(k-1)/p}, \quad
    \gamma_k = \gamma_1 2^{-(k-1)},

    w_{s+1} = \Pi_{B(c_k, D_k)}\big(w_s - \gamma_k \nabla_y g(x, w_s)\big), \quad s < T_k,
    \qquad c_{k+1} = \tfrac{1}{T_k} \textstyle\sum_{s=1}^{T_k} w_s,

from :math:`w_0 = c_1 = y_{\rm start}`: every stage starts at the previous stage's mean
and projects onto the Euclidean ball of radius :math:`D_k` around that start; the output
is the last stage's mean. For ``p = 2`` this is Hazan & Kale's (2014) Epoch-SGD (step
halved, stage length doubled).

Stages are added while the cumulative un-floored length :math:`\sum_{i<k} T_1 2^{\tau i}`
stays within the budget ``K``, at most 49 stages: the rule of the UniBiO authors'
``synthetic_exp.py`` (repository MingruiLiu-ML-Lab/bilevel-optimization-lower-level-uniform-
convexity on GitHub), which the paper's schedule leaves open.
Every gradient goes through the counting oracle, one call (and on a finite sum one fresh
minibatch) per step.

**Generalized-Hessian hypergradient** (:func:`generalized_neumann_hypergrad`). With
:math:`u = y^{[p-1]}` the paper's implicit-function theorem reads
:math:`\nabla\Phi = \nabla_x f - \nabla^2_{xy} g\,(d\nabla_y g/du)^{-1}\, df/du`, and by the
chain rule :math:`d\nabla_y g/du = D^{-1} H` (transposed), :math:`df/du = D^{-1}\nabla_y f`
with :math:`H = \nabla^2_{yy} g` and :math:`D = \mathrm{diag}((p-1)|y|^{p-2})`. The
Neumann series on that system,

.. math::

    v_0 = D^{-1}\nabla_y f, \quad v_{k+1} = (I - \alpha D^{-1} H)\, v_k, \quad
    u = \alpha \sum_{k=0}^{Q-1} v_k, \qquad \hat h = \nabla_x f - \nabla^2_{xy} g\, u,

tends to :math:`(D^{-1}H)^{-1} D^{-1}\nabla_y f = H^{-1}\nabla_y f` where ``H`` is
invertible, and stays finite where ``H`` degenerates but :math:`D^{-1}H` does not. Choices
(ours, not the authors' code, ``methods/unibio.py`` of the same repository): the
preconditioner is
:math:`D = \mathrm{diag}((p-1)\max(|y|, \varepsilon)^{p-2})` (the authors use the signed
:math:`y^{p-2}`, no floor, which flips sign or divides by 0 for odd ``p``); the recursion
multiplies by :math:`D^{-1}H` on the left (the authors' :math:`HD^{-1}` is the transpose,
right only when ``D`` and ``H`` commute); the sum starts at :math:`k = 0` (the authors
drop that term). ``Q - 1`` HVPs, one :math:`\nabla f` pair on one shared sample, one cross
product.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from bibench.estimators import neumann
from bibench.oracle import Oracle

__all__ = ["MAX_STAGES", "epoch_sgd", "generalized_neumann_hypergrad", "stage_lengths"]

MAX_STAGES = 49  # the authors' loop guard (k < 50)
Step = float | torch.Tensor


def stage_lengths(p: int, t1: int, budget: int) -> list[int]:
    r"""Stage lengths :math:`T_k = \lfloor T_1 2^{\tau(k-1)} \rfloor` that fit the budget
    (cumulative un-floored length at most ``budget``); their sum is the gradient count."""
    tau = 2.0 * (p - 1) / p
    lengths: list[int] = []
    total = 0.0
    for k in range(MAX_STAGES):
        nxt = t1 * 2.0 ** (tau * k)
        if total + nxt > budget:
            break
        total += nxt
        lengths.append(math.floor(nxt))
    return lengths


def _project(w: torch.Tensor, centre: torch.Tensor, radius: Step) -> torch.Tensor:
    """Euclidean projection of each run's ``w`` onto the ball ``B(centre, radius)``."""
    d = w - centre
    norm = torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    scale = torch.clamp(radius / torch.clamp(norm, min=torch.finfo(w.dtype).tiny), max=1.0)
    return centre + d * scale


def epoch_sgd(
    oracle: Oracle,
    x: torch.Tensor,
    y_start: torch.Tensor,
    *,
    p: int,
    gamma1: Step,
    radius1: Step,
    t1: int,
    budget: int,
    grad_noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run the stages of :func:`stage_lengths` from ``y_start`` (module docstring).

    ``gamma1`` and ``radius1`` may be ``(R, 1)`` tensors. ``grad_noise`` maps each
    gradient to a perturbed one (used to emulate a script's own noise model); the oracle
    adds its own ``noise_std`` noise regardless.
    """
    centre = y_start
    for k, length in enumerate(stage_lengths(p, t1, budget)):
        gamma = gamma1 * 2.0**-k
        radius = radius1 * 2.0 ** (-k / p)
        w, total = centre, torch.zeros_like(centre)
        for _ in range(length):
            grad = oracle.grad_y_g(x, w)
            if grad_noise is not None:
                grad = grad_noise(grad)
            w = _project(w - gamma * grad, centre, radius)
            total = total + w
        centre = total / length
    return centre


def generalized_neumann_hypergrad(
    oracle: Oracle,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    p: int,
    alpha: Step,
    n_terms: int,
    eps: Step,
) -> torch.Tensor:
    """The preconditioned Neumann hypergradient :math:`\\hat h` (module docstring)."""
    grad_x_f, grad_y_f = oracle.grad_f(x, y)
    precond = (p - 1) * torch.clamp(y.abs(), min=eps) ** (p - 2)

    def matvec(v: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        return oracle.hvp_yy_g(x, y, v, active=active) / precond

    u = neumann(alpha, n_terms)(matvec, grad_y_f / precond)
    return grad_x_f - oracle.cross_xy_g(x, y, u)
