r"""SOBA: stochastic bilevel algorithm, one SGD step on y, on the adjoint z and on x."""

from __future__ import annotations

import dataclasses

import torch

from bibench import Algorithm, HyperParams, register_algorithm
from bibench.hypergrad import soba_directions


@dataclasses.dataclass(frozen=True)
class SOBAHyper(HyperParams):
    lr_x: float = 0.02  # γ, upper step (joint stability with ρ = 1: 0.05 diverges on quadratic)
    lr_y: float = 1.0  # ρ, step of y and of z (1 / L_g on the quadratic)
    decay_x: float = 0.0  # γ_t = γ (t+1)^-decay_x; the paper's decreasing steps: 0.6
    decay_y: float = 0.0  # ρ_t = ρ (t+1)^-decay_y; the paper's decreasing steps: 0.4

    def validate(self) -> None:
        super().validate()
        if self.decay_x < 0 or self.decay_y < 0:
            raise ValueError("decay_x and decay_y must be >= 0")


@dataclasses.dataclass
class SOBAState:
    x: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor  # adjoint iterate, tends to H^{-1} ∇_y f
    t: int


@register_algorithm("soba")
class SOBA(Algorithm):
    r"""SOBA (Dagréou, Ablin, Vaiter, Moreau, NeurIPS 2022, Algorithm 1).

    Single loop; all three directions are evaluated at the current ``(x_t, y_t, z_t)``
    and the updates are simultaneous:

    .. math::

        y_{t+1} &= y_t - \rho_t \nabla_y g(x_t, y_t),\\
        z_{t+1} &= z_t - \rho_t \big(\nabla^2_{yy} g(x_t, y_t)\, z_t - \nabla_y f(x_t, y_t)\big),\\
        x_{t+1} &= x_t - \gamma_t \big(\nabla_x f(x_t, y_t) - \nabla^2_{xy} g(x_t, y_t)\, z_t\big),

    from :math:`z_0 = 0`. ``z`` is SGD on :math:`\tfrac12 z^\top H z - \nabla_y f^\top z`,
    so it tracks :math:`H^{-1}\nabla_y f`; the paper's ``v`` is :math:`-z` (same
    iterates, sign flipped). Oracle calls per step: one ∇_y g, one HVP and one cross
    product on a shared sample of ``g``, one ∇_x f and one ∇_y f on a shared sample of
    ``f`` (5 in total).

    Choices: :math:`\rho_t = \rho (t+1)^{-a}`, :math:`\gamma_t = \gamma (t+1)^{-b}` with
    ``a = decay_y``, ``b = decay_x``. The paper's Theorem 1 takes decreasing steps
    (a, b) = (2/5, 3/5); the default is constant steps (a = b = 0), which its analysis
    also covers up to a noise floor, and with which exact oracles converge linearly on a
    strongly convex problem (the control check). benchopt's SOBA (benchmark_bilevel,
    ``solvers/soba.py``) decays both steps as :math:`1/\sqrt{t}` (exponents .5, .5, from
    step size .1 and γ = ρ / r with an "outer ratio" r = 1); ``decay_x = decay_y = 0.5``
    gives that schedule here. The same step ρ drives ``y`` and ``z`` (the paper's choice,
    and benchopt's). Grid: as benchopt's bilevel benchmark, log grids of the inner step ρ
    and of the outer step γ, here ρ up to 1 / L_g and γ up to 1 / L_Φ.

    Sampling (:func:`~bibench.hypergrad.soba_directions`): ∇_y g, the HVP and the cross
    product share one sample of ``g``; ∇_x f and ∇_y f share one sample of ``f``; all five
    at :math:`(x_t, y_t, z_t)`, before any update (as benchopt's SOBA).
    """

    Hyper = SOBAHyper
    control_budget = 6_000
    grid = {"lr_y": [0.01, 0.1, 1.0], "lr_x": [0.001, 0.01, 0.02, 0.05]}

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        hp = self.hp
        # constant steps (the default) skip the schedule: (t + 1)^0 = 1 exactly
        self.decaying = any(bool((torch.as_tensor(d) != 0).any()) for d in (hp.decay_x, hp.decay_y))
        return SOBAState(x0, y0, torch.zeros_like(y0), 0)

    def step(self, state):
        hp = self.hp
        x, y, z, t = state.x, state.y, state.z, state.t
        d_y, d_z, d_x = soba_directions(self.oracle, x, y, z)
        rho, gamma = hp.lr_y, hp.lr_x
        if self.decaying:
            rho = rho * (t + 1.0) ** -hp.decay_y
            gamma = gamma * (t + 1.0) ** -hp.decay_x
        return SOBAState(x - gamma * d_x, y - rho * d_y, z - rho * d_z, t + 1)
