r"""Hand-fused loops: the limit ``bibench bench --parts limit`` compares the harness with.

Each loop is what a researcher would write for one algorithm on one problem with no
framework: plain torch on the ``(R, d)`` iterates, no oracle object, no counting, no
checkpoints, and every term that depends on ``x`` alone computed once per outer step,
every term of ``(x, y)`` once per point (the hat's oracles get the same through
:func:`problems.mexican_hat.last_call`; the quadratic's recompute their affine terms).
It makes the algorithm's oracle calls, per type and step, with the hyperparameters as
Python floats (one point for the whole batch) and CG without bibench's guard against
zero curvature (two small ops per iteration). The arithmetic is otherwise the
algorithm's own, so the iterates agree with :func:`bibench.runner.execute_batch` to
rounding (tests/test_fused.py checks 1e-12 in float64); only deterministic instances
(``batch_size = 0``, ``noise_std = 0``) have a fused loop.

Per problem, :func:`lower_level` returns the closures an outer step needs at a fixed
``x``; per algorithm, a loop advances ``(x, y, ...)``:

* AID-CG (:class:`algorithms.aid_cg.AIDCG`): ``T`` steps
  :math:`y \leftarrow y - \beta\nabla_y g`, warm-started CG on
  :math:`\nabla^2_{yy} g\, v = \nabla_y f` (runs whose residual is below the CG floor are
  frozen, as in :func:`bibench.estimators.cg`), :math:`x \leftarrow x - \alpha(\nabla_x f
  - \nabla^2_{xy} g\, v)`.
* SOBA (:class:`algorithms.soba.SOBA`): the three simultaneous updates of
  :func:`bibench.hypergrad.soba_directions`, all at one ``(x, y)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from bibench.estimators import RESIDUAL_FLOOR
from bibench.problem import Problem

__all__ = ["FUSED", "Point", "check", "fused_loop", "lower_level"]

Vec = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class Point:
    """The oracles at one ``(x, y)``: both gradients of ``f`` and the two products."""

    grad_x_f: torch.Tensor
    grad_y_f: torch.Tensor
    hvp: Vec  # v -> ∇²_yy g(x, y) v
    cross: Vec  # v -> ∇²_xy g(x, y) v


@dataclasses.dataclass
class LowerLevel:
    """The oracles at one ``x``: ``∇_y g(x, ·)`` and the :class:`Point` at ``(x, y)``."""

    grad_y_g: Vec
    at: Callable[[torch.Tensor], Point]


def _quadratic(problem, x: torch.Tensor) -> LowerLevel:
    """The full-sum quadratic (problems/quadratic.py): every oracle is affine."""
    a_t, d_t, c_t = problem.A.T, problem.D.T, problem.C.T
    bx = x @ problem.B.T
    gx_x = x @ problem.P.T

    def at(y: torch.Tensor) -> Point:
        return Point(
            grad_x_f=y @ problem.D + gx_x + problem.p,
            grad_y_f=y @ c_t + x @ d_t + problem.c,
            hvp=lambda v: v @ a_t,
            cross=lambda v: v @ problem.B,
        )

    return LowerLevel(grad_y_g=lambda y: y @ a_t + bx + problem.a, at=at)


def _hat(problem, x: torch.Tensor) -> LowerLevel:
    """The hat (problems/mexican_hat.py, P1): ``c(x), r(x), e(x)`` once per ``x``."""
    mv = problem.moving(x)
    ka = problem.ka
    aa, ab = problem.a(x)
    target = torch.cat([aa, ab], dim=-1)
    rr = mv.r**2
    r_grad_r = mv.r[:, None] * mv.grad_r

    def grad_y_g(y: torch.Tensor) -> torch.Tensor:
        z = y[:, :ka] - mv.c
        s = (z**2).sum(-1) - rr
        return torch.cat([s[:, None] * z, y[:, ka:] - mv.e], dim=-1)

    def at(y: torch.Tensor) -> Point:
        ya, yb = y[:, :ka], y[:, ka:]
        z = ya - mv.c
        s = ((z**2).sum(-1) - rr)[:, None]
        radial = problem.jct(mv, z) + r_grad_r

        def hvp(v: torch.Tensor) -> torch.Tensor:
            va = v[:, :ka]
            return torch.cat([s * va + 2.0 * (z * va).sum(-1, keepdim=True) * z, v[:, ka:]], -1)

        def cross(v: torch.Tensor) -> torch.Tensor:
            va = v[:, :ka]
            zv = (z * va).sum(-1, keepdim=True)
            return -2.0 * zv * radial - s * problem.jct(mv, va) - problem.jet(mv, v[:, ka:])

        return Point(
            grad_x_f=-problem.jat(ya - aa) - (yb - ab) @ problem.B + problem.lam * x,
            grad_y_f=y - target,
            hvp=hvp,
            cross=cross,
        )

    return LowerLevel(grad_y_g=grad_y_g, at=at)


LOWER_LEVELS = {"quadratic": _quadratic, "hat": _hat}


def check(problem: str, params, algorithm: str) -> None:
    """A ``ValueError`` naming what has no fused loop, if anything."""
    if problem not in LOWER_LEVELS or params.batch_size or params.noise_std:
        raise ValueError(
            f"no fused loop for problem '{problem}' with batch_size={params.batch_size}, "
            f"noise_std={params.noise_std} (fused: {', '.join(LOWER_LEVELS)}, deterministic)"
        )
    if algorithm not in FUSED:
        raise ValueError(f"no fused loop for algorithm '{algorithm}' (fused: {', '.join(FUSED)})")


def lower_level(problem: Problem, x: torch.Tensor) -> LowerLevel:
    """The fused oracles of ``problem`` at ``x``."""
    return LOWER_LEVELS[problem.name](problem, x)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


def _aid_cg(problem, hp, x, y, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.zeros_like(y)
    zero = torch.zeros((), dtype=y.dtype, device=y.device)
    for _ in range(steps):
        low = lower_level(problem, x)
        for _ in range(hp.n_inner):
            y = y - hp.lr_y * low.grad_y_g(y)
        pt = low.at(y)
        b = pt.grad_y_f
        if hp.warm_start_v:
            r = b - pt.hvp(v)
        else:
            v, r = torch.zeros_like(y), b.clone()
        d = r
        rr = _dot(r, r)
        floor = (RESIDUAL_FLOOR * torch.linalg.vector_norm(b, dim=-1, keepdim=True)) ** 2
        for _ in range(hp.n_cg):
            hd = pt.hvp(d)
            live = rr > floor  # frozen once solved to rounding, as bibench's cg
            alpha = torch.where(live, rr / _dot(d, hd), zero)
            v = v + alpha * d
            r = r - alpha * hd
            rr_new = torch.where(live, _dot(r, r), rr)
            d = torch.where(live, r + (rr_new / rr) * d, d)
            rr = rr_new
        x = x - hp.lr_x * (pt.grad_x_f - pt.cross(v))
    return x, y


def _soba(problem, hp, x, y, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.zeros_like(y)
    for t in range(steps):
        low = lower_level(problem, x)
        pt = low.at(y)
        d_y = low.grad_y_g(y)
        d_z = pt.hvp(z) - pt.grad_y_f
        d_x = pt.grad_x_f - pt.cross(z)
        rho = hp.lr_y * (t + 1.0) ** -hp.decay_y
        gamma = hp.lr_x * (t + 1.0) ** -hp.decay_x
        x, y, z = x - gamma * d_x, y - rho * d_y, z - rho * d_z
    return x, y


FUSED = {"aid_cg": _aid_cg, "soba": _soba}


def fused_loop(
    algorithm: str, problem: Problem, hp, x: torch.Tensor, y: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` outer steps of ``algorithm`` (hyperparameters ``hp``, one point shared by
    all runs) from ``(x, y)``; returns the last ``(x, y)``."""
    check(problem.name, problem.params, algorithm)
    with torch.no_grad():
        return FUSED[algorithm](problem, hp, x, y, steps)
