r"""Reference solves for problems without a closed-form :math:`y^*(x)`: damped Newton
with per-run Armijo backtracking, and the warm-started cache of the last solution.

:func:`damped_newton` iterates, for each run of a batch independently,

.. math::

    y_{k+1} = y_k + t_k d_k, \qquad d_k = \mathrm{direction}(y_k, \nabla_k)
    \approx -H_k^{-1}\nabla_k,

with :math:`t_k` the first of :math:`1, \tfrac12, \tfrac14, \dots` (at most 40 halvings)
that satisfies the Armijo condition (Nocedal & Wright, *Numerical Optimization*, 2nd
ed., Springer 2006, eq. (3.4) and Alg. 3.1, with :math:`c_1 = 10^{-4}`)

.. math::

    \mathrm{obj}(y_k + t d_k) \le \mathrm{obj}(y_k) + 10^{-4}\, t\,\langle\nabla_k, d_k\rangle
    + 10^{-15}\,|\mathrm{obj}(y_k)|,

the last term a float64 round-off allowance: near the solution the true decrease is
below what ``obj`` resolves, and a full Newton step must still be accepted there. It
stops when every run has :math:`\|\nabla_k\| \le` ``tol`` or after ``max_iter`` steps
(the caller reports the residual it reached); a run already there takes no step. With
``coords`` only those coordinates move: :math:`\nabla_k` is the gradient restricted to
them and :math:`d_k` a step on them.
How :math:`d_k` is computed (a Cholesky solve of a dense Hessian, CG on HVPs) is the
caller's choice.

:class:`WarmStart` keeps the last :math:`(x, y^*(x))`: the same :math:`x` is answered
from the cache (the metrics of one checkpoint ask for it several times), and a new
:math:`x` of the same shape starts from the last solution (the upper iterate moves
little between checkpoints); another shape starts from 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["WarmStart", "damped_newton"]

ARMIJO_C1 = 1e-4
ROUNDOFF = 1e-15  # relative slack of the Armijo test (float64)
MAX_HALVINGS = 40

Tensor = torch.Tensor


def damped_newton(
    obj: Callable[[Tensor], Tensor],
    grad: Callable[[Tensor], Tensor],
    direction: Callable[[Tensor, Tensor], Tensor],
    y: Tensor,
    *,
    tol: float,
    max_iter: int,
    coords: Tensor | None = None,
) -> Tensor:
    """Damped Newton from ``y (R, n)`` (see the module docstring).

    Args:
        obj: ``y -> (R,)``, the objective (one value per run).
        grad: ``y -> (R, n)``, its gradient.
        direction: ``(y, g) -> d``, the Newton step for the gradient ``g`` on the moved
            coordinates, ``(R, k)`` like ``g``.
        tol: a run is solved when the norm of its (restricted) gradient is at most this.
        max_iter: Newton steps at most.
        coords: boolean mask ``(n,)`` of the coordinates that move (None: all).
    """
    for _ in range(max_iter):
        g = grad(y) if coords is None else grad(y)[:, coords]
        todo = (torch.linalg.vector_norm(g, dim=-1) > tol)[:, None]
        if not bool(todo.any()):
            return y
        # a solved run stays put, so that its answer does not depend on its batch
        if coords is None:
            step = torch.where(todo, direction(y, g), 0.0)
            slope = (g * step).sum(-1)
        else:
            step = torch.zeros_like(y)
            step[:, coords] = torch.where(todo, direction(y, g), 0.0)
            slope = (g * step[:, coords]).sum(-1)
        f0 = obj(y)
        t = torch.ones_like(f0)
        for _ in range(MAX_HALVINGS):
            ok = obj(y + t[:, None] * step) <= f0 + ARMIJO_C1 * t * slope + ROUNDOFF * f0.abs()
            if bool(ok.all()):
                break
            t = torch.where(ok, t, 0.5 * t)
        y = y + t[:, None] * step
    return y


class WarmStart:
    """:math:`y^*(x)` by ``solve(x, y0)``, cached and warm-started (module docstring).

    ``last`` is the cached ``(x, y*)`` pair (None before the first solve); a caller that
    solves at an unrelated point (a baseline) can save and restore it so that the next
    run's warm start is not disturbed.
    """

    def __init__(self, solve: Callable[[Tensor, Tensor], Tensor], dim_y: int) -> None:
        self.solve = solve
        self.dim_y = dim_y
        self.last: tuple[Tensor, Tensor] | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if self.last is not None and self.last[0].shape == x.shape:
            if torch.equal(self.last[0], x):
                return self.last[1]
            y0 = self.last[1]
        else:
            y0 = torch.zeros(x.shape[0], self.dim_y, dtype=x.dtype, device=x.device)
        ys = self.solve(x, y0)
        self.last = (x.clone(), ys)
        return ys
