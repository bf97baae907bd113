r"""HG-MS: select-then-differentiate (optimistic selection + pseudoinverse hypergradient)."""

from __future__ import annotations

import dataclasses

import torch

from bibench import Algorithm, HyperParams, register_algorithm
from bibench.hypergrad import lower_descent, range_lstsq

SELECTIONS = ("riemannian", "penalty", "exact")


@dataclasses.dataclass(frozen=True)
class HGMSHyper(HyperParams):
    lr_x: float = 0.1  # upper step
    lr_y: float = 1.0  # lower GD step (lower solve and retraction), about 1/L_g
    selection: str = "riemannian"  # riemannian | penalty | exact
    lr_select: float = 0.5  # Riemannian step along -P_T grad_y f (about 1/L_f)
    n_inner: int = 10  # lower GD steps per outer step (lands on S(x))
    n_select: int = 1  # selection steps per outer step
    n_retract: int = 2  # lower GD steps after each selection step (retraction onto S)
    n_cg: int = 10  # CGNR iterations per least-squares solve (warm z)
    null_tol: float = 1e-3  # relative curvature below which a direction is tangent (rcond)
    sigma0: float = 1.0  # penalty path: sigma_k = max(sigma0 * sigma_decay^k, sigma_min)
    sigma_decay: float = 0.95
    sigma_min: float = 1e-6
    n_starts: int = 1  # population of selection candidates (1: local selection)
    explore_radius: float = 1.0  # std of the initial perturbations of candidates 2..P

    def validate(self) -> None:
        super().validate()
        if self.selection not in SELECTIONS:
            raise ValueError(
                f"selection must be one of {', '.join(SELECTIONS)}, got '{self.selection}'"
            )
        if self.n_starts < 1:
            raise ValueError(f"n_starts must be >= 1, got {self.n_starts}")
        if self.null_tol < 0 or self.sigma_min < 0:
            raise ValueError("null_tol and sigma_min must be >= 0")
        if not 0 < self.sigma_decay <= 1:
            raise ValueError(f"sigma_decay must be in (0, 1], got {self.sigma_decay}")


@dataclasses.dataclass
class HGMSState:
    x: torch.Tensor
    y: torch.Tensor  # the selected point, (R, dim_y)
    pop: torch.Tensor  # selection candidates, (P, R, dim_y)
    pop_z: torch.Tensor  # their warm starts of xi = H z, (P, R, dim_y)
    k: int  # outer step count (penalty path)


@register_algorithm("hg_ms")
class HGMS(Algorithm):
    r"""HG-MS (Masiha, Shen, Kiyavash, He, arXiv 2605.09209): select, then differentiate.

    For a lower level whose solution set :math:`S(x)` is a manifold (local PL /
    Morse–Bott), :math:`\Phi(x) = \min_{y \in S(x)} f(x, y)` is differentiable wherever
    the optimistic selection :math:`y^\star(x)` is unique, with (research/manifold.md §2.2)

    .. math::

        \nabla\Phi(x) = \nabla_x f(x, y^\star) + \nabla^2_{xy} g(x, y^\star)\,\xi, \qquad
        \xi = -H^\dagger \nabla_y f(x, y^\star), \quad H = \nabla^2_{yy} g(x, y^\star),

    no curvature terms: at the selection :math:`P_T\nabla_y f = 0`, with
    :math:`T = \ker H` the tangent space of :math:`S(x)`. Each outer step, for every
    candidate ``y`` of the population (``n_starts``; 1 by default):

    1. lower solve: ``n_inner`` warm-started GD steps :math:`y \leftarrow y - \beta\nabla_y g`;
    2. selection, ``n_select`` times (``selection``):

       * ``riemannian``: :math:`\xi = -H^\dagger u`, :math:`u = \nabla_y f(x, y)`, by
         min-norm CG, whose residual :math:`\rho = -u - H\xi = -P_T u` (since
         :math:`HH^\dagger = P_{\mathrm{range} H} = I - P_T`) is the Riemannian descent
         direction; :math:`y \leftarrow y + \eta_s \rho`, then ``n_retract`` GD steps on
         ``g`` as the retraction;
       * ``penalty``: :math:`y \leftarrow y - \frac{\beta}{1 + \sigma_k}(\sigma_k \nabla_y f
         + \nabla_y g)`, a warm-started path :math:`\sigma_k = \max(\sigma_0 \delta^k,
         \sigma_{\min}) \downarrow 0` over the outer steps ``k``, then ``n_retract`` GD
         steps on ``g``; the selection bias is :math:`O(\sigma_{\min})` and motion along
         ``S`` slows to rate :math:`\beta\sigma_k` (Kwon et al. 2024; Chen, Xu, Zhang 2024);
       * ``exact``: :math:`y = y^\star(x)` from the problem's closed form, oracle-free and
         uncounted — an upper bound on what any selection can achieve, not an algorithm;

    3. with ``n_starts`` > 1 the candidate with the lowest :math:`f(x, y)` (one counted
       ``f`` call each) is selected;
    4. hypergradient: :math:`h = \nabla_x f + \nabla^2_{xy} g\,\xi`,
       :math:`\xi = -H^\dagger \nabla_y f` by min-norm CG warm-started in :math:`\xi = Hz`
       (:func:`bibench.hypergrad.range_lstsq`), then :math:`x \leftarrow x - \alpha h`.

    Every choice is ours (only the abstract and a summary of the paper were available,
    research/manifold.md §2.3; no public code): the three selection routines are the
    ones the notes list as plausible; :math:`P_T` comes from the least-squares residual
    with an ``rcond``-like ``null_tol`` (default 1e-3: directions whose curvature is
    below 1e-3 of the largest seen count as tangent; CG would otherwise go on to invert
    the tiny tangent curvature at a point slightly off ``S`` and cancel the tangent
    step); the penalty step :math:`\beta/(1+\sigma)` assumes :math:`L_f \lesssim L_g`;
    global exploration, which the abstract's "complexity governed by the intrinsic
    dimension k" suggests, is a population of ``n_starts`` candidates, candidate ``p > 1``
    started at :math:`y_0 + r\,\mathcal N(0, I)` and kept, warm-started, across steps
    (a candidate whose lower solve blows up restarts from the selected point). Defaults
    suit ``L_g`` = 1 (``quadratic``); the quartic Mexican hats need ``lr_y`` ≈ 0.1.

    ``zero_respecting``: true for ``riemannian`` and ``penalty`` with ``n_starts`` = 1
    (every iterate is a combination of oracle outputs); false for ``exact`` (reads
    :math:`y^\star`) and for ``n_starts`` > 1 (random candidates). The class attribute
    describes the defaults; an instance reports its own mode.

    Oracle calls per step (``riemannian``, one candidate): ``n_inner`` + ``n_select`` ×
    ``n_retract`` ∇_y g, ``n_select`` + 1 ∇_y f, at most (``n_select`` + 1)(3 + 2
    ``n_cg``) HVPs (fewer when CG stops), one ∇_x f and one cross product.
    Grid: steps around 1/L; local (1) or population (8) selection.
    """

    Hyper = HGMSHyper
    control_budget = 15_000
    grid = {
        "lr_x": [0.01, 0.03, 0.1, 0.3],
        "lr_select": [0.1, 0.5, 1.0],
        "n_starts": [1, 8],
    }

    def __init__(self, hp) -> None:
        super().__init__(hp)
        self.zero_respecting = hp.selection != "exact" and hp.n_starts == 1

    def init(self, problem, oracle, x0, y0, rng):
        self.problem, self.oracle = problem, oracle
        pop = [y0]
        for _ in range(self.hp.n_starts - 1):
            noise = rng.normal(y0.shape[1], dtype=y0.dtype).to(y0.device)
            pop.append(y0 + self.hp.explore_radius * noise)
        pop_t = torch.stack(pop)
        return HGMSState(x0, y0, pop_t, torch.zeros_like(pop_t), 0)

    def _hvp(self, x, y):
        o = self.oracle
        return lambda u, active=None: o.hvp_yy_g(x, y, u, active=active)

    def _select(self, x, y, z, k):
        """Lower solve + selection steps for one candidate; returns ``(y, z)``."""
        hp, o = self.hp, self.oracle
        y = lower_descent(o, x, y, hp.lr_y, hp.n_inner)
        if hp.selection == "riemannian":
            for _ in range(hp.n_select):
                sol = range_lstsq(self._hvp(x, y), -o.grad_y_f(x, y), hp.n_cg, z, hp.null_tol)
                z = sol.z
                y = lower_descent(o, x, y + hp.lr_select * sol.residual, hp.lr_y, hp.n_retract)
        else:
            sigma = torch.clamp(hp.sigma0 * hp.sigma_decay**k, min=hp.sigma_min)
            for _ in range(hp.n_select):
                grad = sigma * o.grad_y_f(x, y) + o.grad_y_g(x, y)
                y = y - hp.lr_y / (1.0 + sigma) * grad
            y = lower_descent(o, x, y, hp.lr_y, hp.n_retract)
        return y, z

    def step(self, state):
        hp, o = self.hp, self.oracle
        x = state.x
        if hp.selection == "exact":
            pop = self.problem.y_star(x).detach()[None]
            pop_z = state.pop_z[:1]
        else:
            cands = [self._select(x, y, z, state.k) for y, z in zip(state.pop, state.pop_z)]
            pop = torch.stack([c[0] for c in cands])
            pop_z = torch.stack([c[1] for c in cands])
        best = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        runs = torch.arange(x.shape[0], device=x.device)
        if len(pop) > 1:
            fvals = torch.stack([o.f(x, y) for y in pop])
            fvals = torch.where(torch.isfinite(fvals), fvals, torch.inf)
            best = fvals.argmin(0)
            # a candidate whose lower solve blew up restarts from the selected point
            lost = torch.isinf(fvals)[..., None]
            pop = torch.where(lost, pop[best, runs], pop)
            pop_z = torch.where(lost, pop_z[best, runs], pop_z)
        y, z = pop[best, runs], pop_z[best, runs]
        gx, gy = o.grad_f(x, y)
        sol = range_lstsq(self._hvp(x, y), -gy, hp.n_cg, z, hp.null_tol)
        pop_z = pop_z.clone()
        pop_z[best, runs] = sol.z
        h = gx + o.cross_xy_g(x, y, sol.xi)
        return HGMSState(x - hp.lr_x * h, y, pop, pop_z, state.k + 1)
