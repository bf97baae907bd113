r"""ITD: iterative differentiation, reverse-mode unrolling of the lower-level GD steps."""

from __future__ import annotations

import dataclasses

import torch

from bibench import Algorithm, HyperParams, register_algorithm
from bibench.hypergrad import unrolled_hypergrad


@dataclasses.dataclass(frozen=True)
class ITDHyper(HyperParams):
    lr_x: float = 0.15  # alpha, upper step
    lr_y: float = 1.0  # beta, lower GD step (1/L_g on the quadratic)
    n_unroll: int = 170  # T, differentiated lower GD steps per outer step
    warm_start: bool = True  # start the unrolling from the previous y_T (else from y0)


@dataclasses.dataclass
class ITDState:
    x: torch.Tensor
    y: torch.Tensor
    y_init: torch.Tensor  # y0, the start of every unrolling when warm_start is off
    hypergrad: torch.Tensor  # the last direction d = ∂_x L_T


@register_algorithm("itd")
class ITD(Algorithm):
    r"""ITD: reverse-mode differentiation through T lower-level gradient steps.

    Maclaurin, Duvenaud, Adams 2015; Franceschi, Donini, Frasconi, Pontil 2017 (reverse
    mode); Grazzi et al. 2020 (analysis); Ji, Yang, Liang 2021 (ITD-BiO). Each outer step:

    .. math::

        y_0 &= y_T^{\text{prev}} \ (\text{warm start}) \text{ or } y_{\text{init}}, \qquad
        y_{t+1} = y_t - \beta\nabla_y g(x, y_t), \quad t < T,\\
        d &= \partial_x f(x, \varphi_T(x, y_0))
           = \nabla_x f(x, y_T) - \beta \sum_{t<T} \nabla^2_{xy} g(x, y_t)\, a_{t+1},\\
        a_T &= \nabla_y f(x, y_T), \quad a_t = (I - \beta\nabla^2_{yy} g(x, y_t))\, a_{t+1},
        \qquad x \leftarrow x - \alpha d.

    The reverse pass (:func:`bibench.hypergrad.unrolled_hypergrad`) makes explicit,
    counted HVP and cross calls along the stored trajectory. Oracle calls per step:
    ``T`` ∇_y g, ``T`` cross products, ``T - 1`` HVPs, one ∇_x f and one ∇_y f.

    Choices: the unrolling is warm-started from the previous ``y_T`` by default, as
    ITD-BiO does (Ji, Yang, Liang 2021); ``d`` is then truncated back-propagation, whose
    bias against ∇Φ is of order :math:`(1-\beta\mu)^T` on a μ-strongly convex ``g`` in
    both modes (cold start adds an error of the same order in ``y_T``), so ``T`` sets the
    reachable accuracy: T = 170 gives ‖∇Φ‖ ≈ 1e-7 on ``quadratic`` (κ = 10; T = 150: 1e-6).
    Sampling: step ``t`` reuses one minibatch for its gradient (at :math:`y_t`) and for
    the reverse pass's HVP and cross product at the same :math:`y_t`, so ``d`` is the
    exact derivative of the sampled unrolled map; ∇_x f and ∇_y f share one sample at
    :math:`y_T`.
    Grid: steps around 1/L (0.01–1) and the unroll lengths common in the ITD papers.
    """

    Hyper = ITDHyper
    control_budget = 55_000
    grid = {"lr_x": [0.01, 0.03, 0.1, 0.3], "lr_y": [0.1, 0.5, 1.0], "n_unroll": [10, 50, 150]}

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        return ITDState(x0, y0, y0, torch.zeros_like(x0))

    def step(self, state):
        hp = self.hp
        start = state.y if hp.warm_start else state.y_init
        out = unrolled_hypergrad(self.oracle, state.x, start, hp.lr_y, hp.n_unroll)
        return ITDState(state.x - hp.lr_x * out.d_x, out.y, state.y_init, out.d_x)
