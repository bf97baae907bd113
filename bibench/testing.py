r"""Checks that problems' closed forms are right (used by the tests; useful to plugin authors).

Every function returns the largest absolute error it found, so a test can assert a
tolerance. All of them work on a batch ``x`` of shape ``(R, dim_x)``.

* :func:`fd_grad` — central differences with one Richardson step (error
  :math:`O(h^4)`), per run;
* :func:`oracle_errors` — analytic oracle overrides against the ``torch.func``
  defaults of :class:`~bibench.problem.Problem`;
* :func:`dense_hessians` — :math:`\nabla^2_{yy} g` and :math:`\nabla^2_{xy} g` by autodiff;
* :func:`pinv_hypergrad` — :math:`\nabla_x f - \nabla^2_{xy} g\,(\nabla^2_{yy} g)^\dagger
  \nabla_y f` at a given ``y`` (the HG-MS / BGS formula);
* :func:`ground_truth_errors` — ``hypergrad`` against autodiff through ``phi``, against
  finite differences of ``phi`` and against the pseudoinverse formula at ``y_star``;
  ``y_star`` against stationarity of ``g`` and ``g_star``; and, where the problem can
  sample its solution set, optimality of ``y_star`` for ``f`` over those samples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad, jacfwd

from bibench.problem import Problem

__all__ = [
    "dense_hessians",
    "fd_grad",
    "ground_truth_errors",
    "oracle_errors",
    "pinv_hypergrad",
]


def fd_grad(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, h: float = 1e-3
) -> torch.Tensor:
    """Per-run gradient of ``fn: (R, n) -> (R,)`` by Richardson-extrapolated central
    differences: ``(4 D(h/2) - D(h)) / 3``."""
    out = torch.zeros_like(x)
    for i in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, i] = 1.0

        def central(step: float, e=e) -> torch.Tensor:
            return (fn(x + step * e) - fn(x - step * e)) / (2 * step)

        out[:, i] = (4 * central(h / 2) - central(h)) / 3
    return out


def oracle_errors(
    problem: Problem, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, batch=None
) -> dict[str, float]:
    """Max abs difference between the problem's oracles and the autodiff defaults."""
    errs = {}
    for name in ("grad_x_f", "grad_y_f", "grad_x_g", "grad_y_g"):
        mine = getattr(problem, name)(x, y, batch=batch)
        ref = getattr(Problem, name)(problem, x, y, batch=batch)
        errs[name] = (mine - ref).abs().max().item()
    for name in ("hvp_yy_g", "cross_xy_g"):
        mine = getattr(problem, name)(x, y, v, batch=batch)
        ref = getattr(Problem, name)(problem, x, y, v, batch=batch)
        errs[name] = (mine - ref).abs().max().item()
    return errs


def dense_hessians(
    problem: Problem, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H_yy (R, dy, dy), H_xy (R, dx, dy))`` of ``g`` by autodiff, per run."""
    hyy, hxy = [], []
    for r in range(x.shape[0]):
        xr, yr = x[r : r + 1], y[r : r + 1]

        def gy(x_, y_):
            return grad(lambda yy: problem.g(x_[None], yy[None]).sum())(y_)

        hyy.append(jacfwd(gy, argnums=1)(xr[0], yr[0]))
        hxy.append(jacfwd(gy, argnums=0)(xr[0], yr[0]).T)
    return torch.stack(hyy), torch.stack(hxy)


def pinv_hypergrad(
    problem: Problem, x: torch.Tensor, y: torch.Tensor, rcond: float = 1e-10
) -> torch.Tensor:
    r""":math:`\nabla_x f - \nabla^2_{xy} g\,(\nabla^2_{yy} g)^\dagger \nabla_y f` at ``(x, y)``."""
    hyy, hxy = dense_hessians(problem, x, y)
    gx = Problem.grad_x_f(problem, x, y)
    gy = Problem.grad_y_f(problem, x, y)
    pinv = torch.linalg.pinv(hyy, rtol=rcond, hermitian=True)
    return gx - (hxy @ (pinv @ gy[..., None]))[..., 0]


def ground_truth_errors(
    problem: Problem, x: torch.Tensor, *, n_samples: int = 256, fd_step: float = 1e-3
) -> dict[str, float]:
    """Max abs errors of the problem's ground truth at ``x`` (see the module docstring).

    Keys: ``hypergrad_vs_autodiff``, ``hypergrad_vs_fd``, ``hypergrad_vs_pinv``,
    ``grad_g_at_y_star``, ``g_star``, and ``selection`` (how far below ``f(x, y*)`` the
    best sampled point of ``S(x)`` is; 0 when ``y*`` beats every sample).
    """
    hg = problem.hypergrad(x)
    ys = problem.y_star(x)
    errs = {
        "hypergrad_vs_autodiff": (grad(lambda x_: problem.phi(x_).sum())(x) - hg)
        .abs()
        .max()
        .item(),
        "hypergrad_vs_fd": (fd_grad(problem.phi, x, fd_step) - hg).abs().max().item(),
        "hypergrad_vs_pinv": (pinv_hypergrad(problem, x, ys) - hg).abs().max().item(),
        "grad_g_at_y_star": Problem.grad_y_g(problem, x, ys).abs().max().item(),
        "g_star": (problem.g(x, ys) - problem.g_star(x)).abs().max().item(),
        "phi_vs_f_at_y_star": (problem.phi(x) - problem.f(x, ys)).abs().max().item(),
    }
    try:
        pts = problem.sample_solution_set(x, n_samples)  # (R, n, dy)
    except NotImplementedError:
        return errs
    r, n, dy = pts.shape
    xs = x[:, None, :].expand(r, n, x.shape[1]).reshape(r * n, -1)
    f_pts = problem.f(xs, pts.reshape(r * n, dy)).reshape(r, n)
    g_pts = problem.g(xs, pts.reshape(r * n, dy)).reshape(r, n)
    errs["samples_in_S"] = (g_pts - problem.g_star(x)[:, None]).abs().max().item()
    errs["selection"] = (problem.phi(x)[:, None] - f_pts).clamp(min=0).max().item()
    return errs
