r"""TTSA: two-timescale stochastic approximation with a randomly truncated Neumann series."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from bibench import Algorithm, HyperParams, register_algorithm


@dataclasses.dataclass(frozen=True)
class TTSAHyper(HyperParams):
    lr_x: float = 0.05  # α_0, upper step scale
    lr_y: float = 1.0  # β_0, lower step scale (1 / L_g on the quadratic)
    decay_x: float = 0.6  # α_k = α_0 (k+1)^-decay_x (Hong et al.: k^-3/5)
    decay_y: float = 0.4  # β_k = β_0 (k+1)^-decay_y (Hong et al.: k^-2/5)
    alpha_neumann: float = 1.0  # c_h / L_g, Neumann step
    n_neumann: int = 50  # Q = t_max, truncation range: K' ~ U{0, ..., Q-1}

    def validate(self) -> None:
        super().validate()
        if self.decay_x < 0 or self.decay_y < 0:
            raise ValueError("decay_x and decay_y must be >= 0")
        if self.n_neumann < 1:
            raise ValueError(f"n_neumann must be >= 1, got {self.n_neumann}")


@dataclasses.dataclass
class TTSAState:
    x: torch.Tensor
    y: torch.Tensor
    k: int  # iteration
    truncation: torch.Tensor  # K' of the last step, per run, (R,) int64


def random_truncated_neumann(
    matvec: Callable[..., torch.Tensor],
    b: torch.Tensor,
    alpha: float | torch.Tensor,
    n_terms: int,
    truncation: torch.Tensor,
) -> torch.Tensor:
    r""":math:`Q\alpha (I - \alpha H)^{K'} b` per run, with ``truncation`` the per-run
    :math:`K' \in \{0, \dots, Q-1\}` (``(R,)`` int). Run ``r`` makes exactly
    :math:`K'_r` products: the others are masked out with ``active``, so they are neither
    applied nor counted. For :math:`K' \sim U\{0..Q-1\}` its mean is the Q-term Neumann
    sum :math:`\alpha \sum_{k<Q} (I - \alpha H)^k b` (Ghadimi & Wang 2018)."""
    term = b
    for j in range(int(truncation.max())):
        active = truncation > j
        term = torch.where(active[:, None], term - alpha * matvec(term, active=active), term)
    return n_terms * alpha * term


@register_algorithm("ttsa")
class TTSA(Algorithm):
    r"""TTSA (Hong, Wai, Wang, Yang, SIAM J. Optim. 2023, Algorithm 1).

    Single loop, the lower level on the faster time scale:

    .. math::

        y_{k+1} &= y_k - \beta_k \nabla_y g(x_k, y_k),\\
        h_k &= \nabla_x f(x_k, y_{k+1}) - \nabla^2_{xy} g(x_k, y_{k+1})\,
               Q\alpha\,(I - \alpha \nabla^2_{yy} g(x_k, y_{k+1}))^{K'} \nabla_y f(x_k, y_{k+1}),
               \quad K' \sim U\{0, \dots, Q-1\},\\
        x_{k+1} &= x_k - \alpha_k h_k, \qquad
        \alpha_k = \alpha_0 (k+1)^{-3/5}, \quad \beta_k = \beta_0 (k+1)^{-2/5}.

    :math:`K'` is drawn per run and per step (:func:`random_truncated_neumann`), so in
    expectation the adjoint is the Q-term Neumann sum, whose bias is
    :math:`(I - \alpha H)^Q H^{-1}\nabla_y f`. Oracle calls per step: one ∇_y g, one
    ∇_x f and one ∇_y f on a shared sample, :math:`K'` HVPs (each on its own sample;
    :math:`(Q-1)/2` on average) and one cross product on its own sample. Evaluation
    points: the ∇_y g step at :math:`(x_k, y_k)`, every hypergradient call at
    :math:`(x_k, y_{k+1})`, after the lower step (Hong et al.'s Algorithm 1).

    Choices: the factor :math:`Q` of the unbiased estimator is kept (the UniBiO authors'
    copy returns :math:`\alpha v_K` with :math:`K \sim U\{1..Q\}`, which drops it, a bug
    not copied). Hong et al.'s nonconvex theorem takes constant steps
    :math:`\alpha \propto K^{-3/5}`, :math:`\beta \propto K^{-2/5}` for a known horizon
    ``K``; without one we decay them at those rates (benchopt's TTSA does the same);
    ``decay_x = decay_y = 0`` gives constant steps. :math:`\alpha = c_h/L_g = 1` and
    :math:`Q = t_{\max} = 50 \approx \kappa \ln(100)` (their :math:`t_{\max} \propto
    (L_g/\mu_g)\log K`) leave a truncation bias :math:`0.9^{50} \approx 0.5\,\%` on
    ``quadratic`` (κ = 10). ``control_budget`` is 0: TTSA's defaults never reach the 1e-6
    control target. The random truncation is noise of its own, whatever the oracle: its
    second moment is about :math:`Q\alpha\lambda/(2 - \alpha\lambda)` times the square of
    its mean along an eigenvalue λ of H, at least :math:`\ln(1/\text{bias})/2`, so exact
    oracles still leave a stochastic method with decaying steps and a sublinear rate.
    Grid: the step scales on log grids, Q ∈ {3, 10, 50} (the UniBiO authors' SNLI value,
    benchopt's ``n_hia_steps``, the default).
    """

    Hyper = TTSAHyper
    control_budget = 0
    grid = {"lr_x": [0.005, 0.02, 0.05], "lr_y": [0.1, 0.5, 1.0], "n_neumann": [3, 10, 50]}

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        self.rng = rng
        return TTSAState(x0, y0, 0, torch.zeros(len(x0), dtype=torch.int64, device=x0.device))

    def adjoint(self, x: torch.Tensor, y: torch.Tensor, grad_y_f: torch.Tensor, truncation):
        r""":math:`Q\alpha(I - \alpha H)^{K'}\nabla_y f` with per-run counted HVPs."""
        o, hp = self.oracle, self.hp

        def matvec(v: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
            return o.hvp_yy_g(x, y, v, active=active)

        return random_truncated_neumann(
            matvec, grad_y_f, hp.alpha_neumann, hp.n_neumann, truncation
        )

    def step(self, state):
        hp, o = self.hp, self.oracle
        x, k = state.x, state.k
        y = state.y - hp.lr_y * (k + 1.0) ** -hp.decay_y * o.grad_y_g(x, state.y)
        truncation = self.rng.randint(hp.n_neumann).to(x.device)
        gx, gy = o.grad_f(x, y)
        h = gx - o.cross_xy_g(x, y, self.adjoint(x, y, gy, truncation))
        x = x - hp.lr_x * (k + 1.0) ** -hp.decay_x * h
        return TTSAState(x, y, k + 1, truncation)
