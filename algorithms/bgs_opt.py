r"""BGS-Opt: Arbel & Mairal 2022, Algorithm 1 (warm start, unrolling, implicit correction)."""

from __future__ import annotations

import dataclasses

import torch

from bibench import Algorithm, HyperParams, register_algorithm
from bibench.hypergrad import lower_descent, range_lstsq, unrolled_hypergrad

PRESETS = ("bgs", "game", "unrolled", "custom")


@dataclasses.dataclass(frozen=True)
class BGSOptHyper(HyperParams):
    lr_x: float = 0.1  # gamma, upper step
    lr_y: float = 1.0  # lower GD step of I_M and phi_T (1/L_g on the quadratic)
    preset: str = "bgs"  # bgs | game | unrolled | custom (see the class docstring)
    n_warm: int = 1  # M, detached lower steps (ignored by "unrolled", which has M = 0)
    n_unroll: int = 1  # T, differentiated lower steps (ignored by "bgs" and "game": T = 0)
    correction: bool = True  # AddCorrection (used by "custom" only)
    n_solver: int = 5  # N, CG iterations on the normal equations per step (warm z)

    def validate(self) -> None:
        super().validate()
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got '{self.preset}'")
        m, t, _ = self.structure()
        if m + t < 1:
            raise ValueError(f"preset '{self.preset}' needs n_warm + n_unroll >= 1 (M + T > 0)")

    def structure(self) -> tuple[int, int, bool]:
        """``(M, T, AddCorrection)`` after the preset."""
        if self.preset == "bgs":
            return self.n_warm, 0, True
        if self.preset == "game":
            return self.n_warm, 0, False
        if self.preset == "unrolled":
            return 0, self.n_unroll, False
        return self.n_warm, self.n_unroll, self.correction


@dataclasses.dataclass
class BGSOptState:
    x: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor  # warm start of the correction, xi = A z


@register_algorithm("bgs_opt")
class BGSOpt(Algorithm):
    r"""BGS-Opt (Arbel & Mairal, NeurIPS 2022, Algorithm 1): bilevel game with selection.

    Iteration ``k`` (research/manifold.md §1.2):

    .. math::

        \tilde y_k &= \mathcal I_M(x_{k-1}, y_{k-1}) \quad (M \text{ detached GD steps on }
            g(x_{k-1}, \cdot)),\\
        y_k &= \varphi_T(x_{k-1}, \tilde y_k) \quad (T \text{ differentiated GD steps}),
            \qquad d_k = \partial_x \mathcal L_T(x_{k-1}, \tilde y_k),\\
        \text{if AddCorrection:}\quad v_k &= \partial_y \mathcal L_T(x_{k-1}, \tilde y_k),
            \quad z_k = \mathcal P(A_k, v_k, z_{k-1}), \quad \xi_k = A_k z_k
            \approx -A_k^\dagger v_k,\\
        d_k &\leftarrow d_k + \partial^2_{xy} g(x_{k-1}, y_k)\, \xi_k, \qquad
            x_k = x_{k-1} - \gamma d_k,

    with :math:`A_k = \partial^2_{yy} g(x_{k-1}, y_k)` and
    :math:`\mathcal L_T(x, y) = f(x, \varphi_T(x, y))`. ``T`` = 0 gives
    :math:`d_k = \nabla_x f`, :math:`v_k = \nabla_y f` at :math:`y_k = \tilde y_k`.
    The unrolled derivatives come from :func:`bibench.hypergrad.unrolled_hypergrad`
    (explicit, counted HVP and cross calls along the stored trajectory); :math:`\mathcal P`
    is :func:`bibench.hypergrad.range_lstsq`: ``N`` CG iterations on the normal equations
    of :math:`\min_\xi\|A_k\xi + v_k\|`, carried in :math:`\xi = A_k z` so that the warm
    start from :math:`z_{k-1}` stays in :math:`\mathrm{range}(A_k)` (their Eq. (6)–(7));
    its fixed points are exact least-squares solutions, as Prop. 5 requires.

    Presets (``preset``; the paper's configs, research/manifold.md §1.2 table):

    * ``bgs`` — :math:`T = 0`, correction on, ``M = n_warm`` (default 1, the paper's
      ``BGS.yaml``): warm-started AID, single loop in ``y``;
    * ``game`` — :math:`T = 0`, no correction: alternating GD, :math:`d_k = \nabla_x f`;
    * ``unrolled`` — :math:`M = 0`, :math:`T` = ``n_unroll`` ≥ 1, no correction (ITD
      restarted from the previous ``y``); its limit points satisfy
      :math:`\partial_x\mathcal L_T = 0` (Prop. 3), biased for finite ``T``;
    * ``custom`` — ``n_warm``, ``n_unroll`` and ``correction`` as given (truncated
      back-propagation, ITD + correction, ...). :math:`M + T > 0` is required (Prop. 5).

    Choices the paper leaves open: :math:`\mathcal P` is CG (their code uses one step of
    GD on the normal equations, lr 0.9); ``N`` = 5 by default (their sweeps use 1, 2, 10);
    :math:`z_0 = 0`. With N = 1 the coupled single-loop dynamics need a smaller
    ``lr_x`` (0.02 on ``quadratic``; 0.1 diverges). Oracle calls per step: ``M + T``
    ∇_y g, ``T`` cross and ``T`` HVPs (``T - 1`` without correction), one ∇_x f and one
    ∇_y f; with correction ``3 + 2N`` HVPs (at most) and one cross product.

    Metric ``bgs_stationarity``: :math:`\|\partial_x\mathcal L_\varphi(x_k, y_k)\|`, the
    BGS equilibrium measure of the flow selection, from the problem's
    ``selection_map_grad`` (NaN where the problem has no closed form).
    Grid: ``lr_x`` around the paper's UL step (their toy uses SGD lr 1 on a normalised
    Hessian), ``N`` over their sweep {1, 2, 10}.
    """

    Hyper = BGSOptHyper
    control_budget = 8_000
    grid = {"lr_x": [0.01, 0.03, 0.1, 0.3], "lr_y": [0.1, 0.5, 0.9], "n_solver": [1, 2, 10]}

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        self.m, self.t, self.correct = self.hp.structure()
        return BGSOptState(x0, y0, torch.zeros_like(y0))

    def step(self, state):
        hp, o = self.hp, self.oracle
        x = state.x
        y_tilde = lower_descent(o, x, state.y, hp.lr_y, self.m)
        out = unrolled_hypergrad(o, x, y_tilde, hp.lr_y, self.t, need_dy=self.correct)
        d, y, z = out.d_x, out.y, state.z
        if self.correct:

            def hvp(u, active=None):
                return o.hvp_yy_g(x, y, u, active=active)

            sol = range_lstsq(hvp, -out.d_y, hp.n_solver, z0=state.z)
            d = d + o.cross_xy_g(x, y, sol.xi)
            z = sol.z
        return BGSOptState(x - hp.lr_x * d, y, z)

    def metrics(self, problem, state):
        try:
            grad = problem.selection_map_grad(state.x, state.y)
        except NotImplementedError:
            return {"bgs_stationarity": torch.full_like(state.x[:, 0], float("nan"))}
        return {"bgs_stationarity": torch.linalg.vector_norm(grad, dim=-1)}
