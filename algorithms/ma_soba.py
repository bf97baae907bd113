r"""MA-SOBA: SOBA with a moving-average hypergradient (Chen, Xiao, Balasubramanian 2023)."""

from __future__ import annotations

import dataclasses

import torch

from bibench import Algorithm, HyperParams, register_algorithm
from bibench.hypergrad import soba_directions


@dataclasses.dataclass(frozen=True)
class MASOBAHyper(HyperParams):
    lr_x: float = 0.01  # α, upper step along the moving average
    lr_y: float = 1.0  # β, lower SGD step (1 / L_g on the quadratic)
    lr_z: float = 1.0  # γ, adjoint SGD step
    theta: float = 0.1  # θ, moving-average weight (the UniBiO authors' momentum 0.9 = 1 - θ)
    radius_z: float = 0.0  # ρ, radius of the ball z is projected on; 0: no projection

    def validate(self) -> None:
        super().validate()
        if not 0 < self.theta <= 1:
            raise ValueError(f"theta must be in (0, 1], got {self.theta}")
        if self.radius_z < 0:
            raise ValueError(f"radius_z must be >= 0 (0: no projection), got {self.radius_z}")


@dataclasses.dataclass
class MASOBAState:
    x: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor  # adjoint iterate, tends to H^{-1} ∇_y f
    h: torch.Tensor  # moving average of the hypergradient directions


def project_ball(z: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """Each run's ``z`` projected on the centred ball of its ``radius`` (0: unchanged)."""
    norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    scale = torch.clamp(radius / torch.clamp(norm, min=torch.finfo(z.dtype).tiny), max=1.0)
    return torch.where(torch.as_tensor(radius) > 0, z * scale, z)


@register_algorithm("ma_soba")
class MASOBA(Algorithm):
    r"""MA-SOBA (Chen, Xiao, Balasubramanian 2023, arXiv 2306.12067, Algorithm 1).

    SOBA's three directions at the current ``(x_k, y_k, z_k)``
    (:func:`~bibench.hypergrad.soba_directions`: one sample of ``g`` for the gradient,
    HVP and cross product, one of ``f`` for both gradients), then

    .. math::

        y_{k+1} &= y_k - \beta\, \nabla_y g(x_k, y_k),\\
        z_{k+1} &= \Pi_{B(\rho)}\big(z_k - \gamma\,(\nabla^2_{yy} g(x_k, y_k)\, z_k
                   - \nabla_y f(x_k, y_k))\big),\\
        x_{k+1} &= x_k - \alpha\, h_k,\\
        h_{k+1} &= (1-\theta)\, h_k + \theta\,\big(\nabla_x f(x_k, y_k)
                   - \nabla^2_{xy} g(x_k, y_k)\, z_k\big),

    from :math:`z_0 = 0` and :math:`h_0 = 0`. Oracle calls per step: 5, as SOBA.
    Sampling: one sample of ``g`` shared by ∇_y g, the HVP and the cross product, one of
    ``f`` shared by ∇_x f and ∇_y f, all five at :math:`(x_k, y_k, z_k)`.

    Choices: constant steps (the paper's analysis); :math:`z_0 = 0` makes the method
    zero-respecting (the UniBiO authors initialise ``z`` Xavier-uniform, a nonzero random
    vector, not copied); the lower step uses :math:`\nabla_y g` only (in the authors' copy
    the previous upper loss's :math:`\nabla_y f` stays in ``.grad`` and leaks into it, a
    bug not copied); :math:`h_0 = 0`, so the first step leaves ``x`` in place. The ball
    of radius ρ (the paper's bound on :math:`\|H^{-1}\nabla_y f\|`, unknown to a
    benchmark) is off by default. Defaults: β = γ = 1 = 1 / L_g and θ = 0.1 (the UniBiO
    authors' β = 0.9). With exact ``y`` and ``z`` the pair (x, h) on a strongly convex Φ
    is stable for :math:`\alpha\mu_\Phi < 1`; the lag of ``y`` and ``z`` (contraction
    0.9 per step at μ_g = 0.1) shrinks that range: on ``quadratic`` (μ_Φ ∈ [1, 10])
    α = 0.03 diverges and α = 0.01 converges linearly. Grid: log grids of the three steps
    and θ around the authors' 0.1.
    """

    Hyper = MASOBAHyper
    control_budget = 8_000
    zero_respecting = True
    grid = {
        "lr_x": [0.001, 0.003, 0.01],
        "lr_y": [0.1, 1.0],
        "lr_z": [0.1, 1.0],
        "theta": [0.01, 0.1, 0.5],
    }

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        return MASOBAState(x0, y0, torch.zeros_like(y0), torch.zeros_like(x0))

    def step(self, state):
        hp = self.hp
        x, y, z, h = state.x, state.y, state.z, state.h
        d_y, d_z, d_x = soba_directions(self.oracle, x, y, z)
        return MASOBAState(
            x - hp.lr_x * h,
            y - hp.lr_y * d_y,
            project_ball(z - hp.lr_z * d_z, hp.radius_z),
            (1 - hp.theta) * h + hp.theta * d_x,
        )
