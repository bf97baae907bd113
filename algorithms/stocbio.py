r"""StocBiO: stochastic bilevel optimizer with a Neumann-series hypergradient."""

from __future__ import annotations

import dataclasses

from bibench import Algorithm, HyperParams, State, register_algorithm
from bibench.estimators import neumann


@dataclasses.dataclass(frozen=True)
class StocBiOHyper(HyperParams):
    lr_x: float = 0.1  # alpha, upper step
    lr_y: float = 1.0  # beta, lower SGD step
    alpha_neumann: float = 1.0  # eta, Neumann step (< 2 / L_g)
    n_inner: int = 10  # D, lower SGD steps per outer step
    n_neumann: int = 10  # Q, Hessian-vector products per hypergradient


@register_algorithm("stocbio")
class StocBiO(Algorithm):
    r"""StocBiO (Ji, Yang, Liang, ICML 2021, Algorithm 2).

    Each outer step ``k``:

    .. math::

        y &\leftarrow y - \beta \nabla_y g(x, y; S_t) \quad (t = 1..D, \text{ warm start})\\
        v_Q &= \eta \sum_{q=-1}^{Q-1} \prod_{j=Q-q}^{Q} (I - \eta \nabla^2_{yy} g(x, y; B_j))\,
               \nabla_y f(x, y; D_F)\\
        h &= \nabla_x f(x, y; D_F) - \nabla^2_{xy} g(x, y; D_G)\, v_Q, \qquad
        x \leftarrow x - \alpha h.

    Oracle calls per step: ``D`` × ∇_y g, one ∇_x f and one ∇_y f on a shared sample
    ``D_F``, ``Q`` HVPs (each on its own sample ``B_j``) and one cross product on
    ``D_G``: ``D + Q + 3`` in total.

    Choices: the inner loop is warm-started from the previous ``y`` (as in the paper's
    code); gradients are not accumulated across inner steps (the UniBiO authors' copy
    does accumulate them, a bug we do not copy). Defaults suit lower levels with
    ``L_g = 1``; ``alpha_neumann`` must stay below ``2 / L_g``.
    """

    Hyper = StocBiOHyper
    grid = {
        "lr_x": [0.01, 0.03, 0.1, 0.3],
        "lr_y": [0.1, 0.5, 1.0],
        "alpha_neumann": [0.1, 0.5, 1.0],
    }

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        self.solver = neumann(self.hp.alpha_neumann, self.hp.n_neumann + 1)
        return State(x0, y0)

    def step(self, state):
        hp, o = self.hp, self.oracle
        x, y = state.x, state.y
        for _ in range(hp.n_inner):
            y = y - hp.lr_y * o.grad_y_g(x, y)
        gx, gy = o.grad_f(x, y)
        v = self.solver(lambda u, active=None: o.hvp_yy_g(x, y, u, active=active), gy)
        x = x - hp.lr_x * (gx - o.cross_xy_g(x, y, v))
        return State(x, y)
