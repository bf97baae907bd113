r"""BGS-Opt: Arbel & Mairal 2022, Algorithm 1 (warm start, unrolling, implicit correction)."""

from __future__ import annotations

import dataclasses
import math

import torch

from bibench import Algorithm, HyperParams, register_algorithm
from bibench.hypergrad import range_lstsq, unrolled_hypergrad

PRESETS = ("bgs", "game", "unrolled", "custom")
SOLVERS = ("normal_gd", "cg")
AUTHORS_MOMENTUM = 0.9  # configs/selection/{Game,Unrolled}.yaml of the authors' code


@dataclasses.dataclass(frozen=True)
class BGSOptHyper(HyperParams):
    lr_x: float = 0.02  # gamma, upper step (0.05 diverges with the N = 1 normal_gd solver)
    lr_y: float = 1.0  # lower GD step of I_M and phi_T (1/L_g on the quadratic)
    preset: str = "bgs"  # bgs | game | unrolled | custom (see the class docstring)
    n_warm: int = 1  # M, detached lower steps (ignored by "unrolled", which has M = 0)
    n_unroll: int = 1  # T, differentiated lower steps (ignored by "bgs" and "game": T = 0)
    correction: bool = True  # AddCorrection (used by "custom" only)
    solver: str = "normal_gd"  # P: normal_gd (the authors', warm xi) | cg (CGNR, warm z)
    n_solver: int = 1  # N, solver iterations per step (the authors' n_iter = 1)
    lr_solver: float = 0.9  # step of normal_gd on ||A xi + v||^2 / 2 (the authors' 0.9)
    momentum: float = 0.0  # heavy ball of the lower SGD ("custom" only; game/unrolled: 0.9)
    cosine: bool = False  # cosine-annealed lower step ("custom" only; game/unrolled: on)
    t_max: int = 2000  # cosine period T_max in outer steps (the authors' total epochs)

    def validate(self) -> None:
        super().validate()
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got '{self.preset}'")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got '{self.solver}'")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.t_max < 1:
            raise ValueError(f"t_max must be >= 1, got {self.t_max}")
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

    def lower_optimizer(self) -> tuple[float, bool]:
        """``(momentum, cosine)`` of the lower SGD after the preset."""
        if self.preset in ("game", "unrolled"):
            return AUTHORS_MOMENTUM, True
        if self.preset == "bgs":
            return 0.0, False
        return self.momentum, self.cosine


@dataclasses.dataclass
class BGSOptState:
    x: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor  # warm start of the correction: xi (normal_gd) or z with xi = A z (cg)
    buf: torch.Tensor  # heavy-ball buffer of the lower SGD (zero without momentum)
    k: int  # outer step (cosine schedule)


@register_algorithm("bgs_opt")
class BGSOpt(Algorithm):
    r"""BGS-Opt (Arbel & Mairal, NeurIPS 2022, arXiv 2207.04888, Alg. 1): game with selection.

    Iteration ``k``:

    .. math::

        \tilde y_k &= \mathcal I_M(x_{k-1}, y_{k-1}) \quad (M \text{ detached SGD steps on }
            g(x_{k-1}, \cdot)),\\
        y_k &= \varphi_T(x_{k-1}, \tilde y_k) \quad (T \text{ differentiated SGD steps}),
            \qquad d_k = \partial_x \mathcal L_T(x_{k-1}, \tilde y_k),\\
        \text{if AddCorrection:}\quad v_k &= \partial_y \mathcal L_T(x_{k-1}, \tilde y_k),
            \quad \xi_k = \mathcal P(A_k, v_k, \xi_{k-1}) \approx -A_k^\dagger v_k,\\
        d_k &\leftarrow d_k + \partial^2_{xy} g(x_{k-1}, y_k)\, \xi_k, \qquad
            x_k = x_{k-1} - \gamma d_k,

    with :math:`A_k = \partial^2_{yy} g(x_{k-1}, y_k)` and
    :math:`\mathcal L_T(x, y) = f(x, \varphi_T(x, y))`. ``T`` = 0 gives
    :math:`d_k = \nabla_x f`, :math:`v_k = \nabla_y f` at :math:`y_k = \tilde y_k`.
    The lower SGD steps are :math:`b \leftarrow \mu b + \nabla_y g`,
    :math:`y \leftarrow y - \beta_k b` (μ = 0: plain GD), the buffer ``b`` carried across
    outer steps and detached at each one, as TorchOpt's SGD in the authors' code. The
    unrolled derivatives come from :func:`bibench.hypergrad.unrolled_hypergrad` (explicit,
    counted HVP and cross calls along the stored trajectory).

    The correction solver :math:`\mathcal P` (``solver``):

    * ``normal_gd`` (default; the authors' ``core.linear_solvers.Normal_GD``): ``N`` GD
      steps on :math:`\tfrac12\|A_k\xi + v_k\|^2`,
      :math:`\xi \leftarrow \xi - \lambda A_k(A_k\xi + v_k)`, warm-started from
      :math:`\xi_{k-1}` (their ``dual_var_warm_start``), step λ = ``lr_solver`` = 0.9 and
      N = 1 (their ``BGS.yaml``); 2N HVPs. Its fixed points are exact least-squares
      solutions, as Prop. 5 requires; a component of ξ in :math:`\ker A_k` is kept, not
      removed (harmless under their Prop. 6 range condition, where the cross product
      annihilates it);
    * ``cg``: ``N`` CGNR iterations on the normal equations carried in
      :math:`\xi = A_k z`, warm-started from :math:`z_{k-1}` so that the start stays in
      :math:`\mathrm{range}(A_k)` (their Eq. (6)–(7); :func:`bibench.hypergrad.range_lstsq`);
      3 + 2N HVPs.

    Presets (``preset``; the authors' ``configs/selection/*.yaml``):

    * ``bgs`` — :math:`T = 0`, correction on, ``M = n_warm`` (default 1), plain GD at a
      constant step (``BGS.yaml``: momentum 0, no scheduler): warm-started AID, single
      loop in ``y``;
    * ``game`` — :math:`T = 0`, no correction: alternating GD, :math:`d_k = \nabla_x f`,
      with the authors' lower SGD of ``Game.yaml``: momentum μ = 0.9 and a cosine-annealed
      step :math:`\beta_k = \beta(1 + \cos(\pi k/T_{\max}))/2` (``t_max``);
    * ``unrolled`` — :math:`M = 0`, :math:`T` = ``n_unroll`` ≥ 1, no correction (ITD
      restarted from the previous ``y``), momentum 0.9 and the cosine step
      (``Unrolled.yaml``). Prop. 3's limit points satisfy :math:`\partial_x\mathcal L_T = 0`,
      biased for finite ``T``; its closed-form bias is for constant plain GD, i.e.
      ``custom`` with ``n_warm = 0``, ``correction = false``;
    * ``custom`` — ``n_warm``, ``n_unroll``, ``correction``, ``momentum`` and ``cosine``
      as given. :math:`M + T > 0` is required (Prop. 5).

    Choices the paper leaves open: :math:`\xi_0 = 0`, :math:`b_0 = 0`; the cosine
    schedule steps once per outer step, with period :math:`2T_{\max}` past
    :math:`T_{\max}` (torch's closed form; the authors step it per epoch, with
    :math:`T_{\max}` = total epochs, so default ``t_max`` = 2000, their quadratic toy's
    epochs); the lower step β is ours (their lr 0.9 is for a Hessian normalised to
    spectrum in [0, 1]; β = 1 = 1/L_g on ``quadratic``). With N = 1 the coupled
    single-loop dynamics need a small ``lr_x``: 0.02 on ``quadratic`` (0.05 diverges).
    Oracle calls per step: ``M + T`` ∇_y g, ``T`` cross and ``T`` HVPs (``T - 1``
    without correction), one ∇_x f and one ∇_y f; with correction 2N (``normal_gd``) or
    at most 3 + 2N (``cg``) HVPs and one cross product.

    Sampling: each ∇_y g step of :math:`\mathcal I_M` draws its own sample; unrolled step
    ``t`` shares one sample between its gradient, its HVP and its cross product (so
    :math:`d_k` is the exact derivative of the sampled map); ∇_x f and ∇_y f share one
    sample of ``f`` at :math:`(x_{k-1}, y_k)`; each correction HVP and the correction's
    cross product draw their own sample at :math:`(x_{k-1}, y_k)` (the authors'
    stochastic ``HessianOp`` also draws a fresh batch per product).

    Metric ``bgs_stationarity``: :math:`\|\partial_x\mathcal L_\varphi(x_k, y_k)\|`, the
    BGS equilibrium measure of the flow selection, from the problem's
    ``selection_map_grad`` (NaN where the problem has no closed form).
    Grid: ``lr_x`` around the stable range, ``N`` over the authors' sweep {1, 2, 10}.
    """

    Hyper = BGSOptHyper
    control_budget = 30_000
    grid = {"lr_x": [0.003, 0.01, 0.02, 0.05], "lr_y": [0.1, 0.5, 0.9], "n_solver": [1, 2, 10]}

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        self.m, self.t, self.correct = self.hp.structure()
        self.momentum, self.cosine = self.hp.lower_optimizer()
        zeros = torch.zeros_like(y0)
        return BGSOptState(x0, y0, zeros, zeros, 0)

    def lower_lr(self, k: int):
        r""":math:`\beta_k = \beta (1 + \cos(\pi k / T_{\max}))/2` with the cosine schedule,
        else :math:`\beta` (torch's ``CosineAnnealingLR`` closed form)."""
        if not self.cosine:
            return self.hp.lr_y
        return self.hp.lr_y * 0.5 * (1.0 + math.cos(math.pi * k / self.hp.t_max))

    def correction(self, x, y, v, warm):
        r"""``(ξ, warm)``: :math:`\xi \approx -A^\dagger v` by the chosen solver."""
        hp, o = self.hp, self.oracle

        def hvp(u, active=None):
            return o.hvp_yy_g(x, y, u, active=active)

        if hp.solver == "cg":
            sol = range_lstsq(hvp, -v, hp.n_solver, z0=warm)
            return sol.xi, sol.z
        xi = warm
        for _ in range(hp.n_solver):
            xi = xi - hp.lr_solver * hvp(hvp(xi) + v)
        return xi, xi

    def step(self, state):
        hp, o = self.hp, self.oracle
        x, buf = state.x, state.buf
        lr = self.lower_lr(state.k)
        y_tilde = state.y
        for _ in range(self.m):  # I_M: detached (heavy-ball) SGD steps
            buf = self.momentum * buf + o.grad_y_g(x, y_tilde)
            y_tilde = y_tilde - lr * buf
        out = unrolled_hypergrad(o, x, y_tilde, lr, self.t, need_dy=self.correct,
                                 momentum=self.momentum, buf0=buf)  # fmt: skip
        d, y, z = out.d_x, out.y, state.z
        if self.correct:
            xi, z = self.correction(x, y, out.d_y, state.z)
            d = d + o.cross_xy_g(x, y, xi)
        return BGSOptState(x - hp.lr_x * d, y, z, out.buf, state.k + 1)

    def metrics(self, problem, state):
        try:
            grad = problem.selection_map_grad(state.x, state.y)
        except NotImplementedError:
            return {"bgs_stationarity": torch.full_like(state.x[:, 0], float("nan"))}
        return {"bgs_stationarity": torch.linalg.vector_norm(grad, dim=-1)}
