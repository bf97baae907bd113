r"""Shared hypergradient pieces: lower-level descent, the unrolled reverse pass, and the
min-norm least-squares solve in range coordinates.

Every derivative goes through the counting :class:`~bibench.oracle.Oracle`, so each
product is counted. All tensors carry the run dimension first; step sizes may be
``(R, 1)`` tensors.

* :func:`lower_descent` — :math:`y_{t+1} = y_t - \beta\nabla_y g(x, y_t)`, ``n`` steps.
* :func:`unrolled_hypergrad` — the exact derivative of the unrolled map
  :math:`\mathcal L_T(x, y_0) = f(x, \varphi_T(x, y_0))`, :math:`\varphi_T` = ``T`` GD steps
  on :math:`g(x, \cdot)` (ITD: Maclaurin et al. 2015, Franceschi et al. 2017; the
  :math:`\varphi_T` of Arbel & Mairal 2022). Forward pass
  :math:`y_{t+1} = y_t - \beta\nabla_y g(x, y_t)` storing the trajectory, then the reverse
  pass with adjoint :math:`a_T = \nabla_y f(x, y_T)`:

  .. math::

      d \leftarrow d - \beta\,\nabla^2_{xy} g(x, y_t)\, a_{t+1}, \qquad
      a_t = a_{t+1} - \beta\,\nabla^2_{yy} g(x, y_t)\, a_{t+1}, \qquad t = T-1, \dots, 0,

  from :math:`d = \nabla_x f(x, y_T)`; then :math:`d = \partial_x\mathcal L_T` and
  :math:`a_0 = \partial_{y_0}\mathcal L_T`. Cost: ``T`` gradients, ``T`` cross products,
  ``T`` HVPs (``T - 1`` when :math:`a_0` is not needed), one :math:`\nabla f` pair. On a
  finite-sum problem step ``t`` draws one minibatch and reuses it for its gradient, HVP
  and cross product, so the result is the exact derivative of the sampled unrolled map.
* :func:`soba_directions` — SOBA's three directions (Dagréou et al. 2022), shared by
  SOBA and MA-SOBA.
* :func:`range_lstsq` — :math:`\min_{\xi\in\mathrm{range}(H)}\|H\xi - b\|`, i.e. the
  min-norm least-squares solution :math:`\xi = H^\dagger b`, by conjugate gradient on the
  normal equations :math:`H^2\xi = Hb` (CGNR) carried in the coordinates
  :math:`\xi = Hz` of Arbel & Mairal 2022, Eq. (6)–(7). Every CGNR direction is
  :math:`p = Hq` with :math:`q` a combination of residuals, so ``z`` is updated alongside
  ``ξ`` for free; a warm start from the previous ``z`` gives :math:`\xi_0 = H_k z_{k-1}\in
  \mathrm{range}(H_k)` (warm-starting ``ξ`` itself would keep a stale component outside
  :math:`\mathrm{range}(H_k)`). Fixed points are exact least-squares solutions of
  :math:`\min_z\|H^2z - b\|`, as their Prop. 5 requires. The residual
  :math:`\rho = b - H\xi` is returned too: at convergence it is :math:`P_{\ker H} b`, the
  tangent projection HG-MS steps along. It is :func:`bibench.estimators.min_norm` plus
  the ``z`` and residual bookkeeping that the estimator signature cannot return.
"""

from __future__ import annotations

import dataclasses

import torch

from bibench.estimators import RESIDUAL_FLOOR, MatVec
from bibench.oracle import Oracle

__all__ = [
    "Lstsq",
    "Unrolled",
    "lower_descent",
    "range_lstsq",
    "soba_directions",
    "unrolled_hypergrad",
]

Step = float | torch.Tensor


def soba_directions(oracle: Oracle, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor):
    r"""SOBA's directions at ``(x, y, z)`` on one minibatch of ``g`` (shared by the
    gradient, the HVP and the cross product) and one of ``f``:
    :math:`D_y = \nabla_y g`, :math:`D_z = \nabla^2_{yy} g\, z - \nabla_y f`,
    :math:`D_x = \nabla_x f - \nabla^2_{xy} g\, z`."""
    batch_g = oracle.sample("g")
    grad_x_f, grad_y_f = oracle.grad_f(x, y)
    d_y = oracle.grad_y_g(x, y, batch_g)
    d_z = oracle.hvp_yy_g(x, y, z, batch_g) - grad_y_f
    d_x = grad_x_f - oracle.cross_xy_g(x, y, z, batch_g)
    return d_y, d_z, d_x


def lower_descent(oracle: Oracle, x: torch.Tensor, y: torch.Tensor, lr: Step, n: int):
    r"""``n`` gradient steps :math:`y \leftarrow y - \beta\nabla_y g(x, y)`."""
    for _ in range(n):
        y = y - lr * oracle.grad_y_g(x, y)
    return y


@dataclasses.dataclass
class Unrolled:
    """Result of :func:`unrolled_hypergrad`."""

    d_x: torch.Tensor  # ∂_x L_T(x, y0), (R, dim_x)
    d_y: torch.Tensor | None  # ∂_{y0} L_T(x, y0), (R, dim_y), when asked for
    y: torch.Tensor  # φ_T(x, y0), (R, dim_y)
    buf: torch.Tensor | None = None  # the heavy-ball buffer after the last step


def unrolled_hypergrad(
    oracle: Oracle,
    x: torch.Tensor,
    y0: torch.Tensor,
    lr: Step,
    n_steps: int,
    need_dy=False,
    momentum: Step = 0.0,
    buf0: torch.Tensor | None = None,
) -> Unrolled:
    r"""Forward ``n_steps`` GD steps from ``y0``, then the reverse pass (module docstring).

    With ``momentum`` μ > 0 the steps are heavy ball, :math:`b_{t+1} = \mu b_t +
    \nabla_y g(x, y_t)`, :math:`y_{t+1} = y_t - \beta b_{t+1}`, from the detached buffer
    ``buf0`` (TorchOpt's SGD with momentum, as the BGS-Opt code unrolls it); the reverse
    pass carries the buffer's adjoint too: with :math:`w = a_y - a_b/\beta`,
    :math:`d \mathrel{-}= \beta\nabla^2_{xy} g\, w`, :math:`a_b = -\mu\beta w`,
    :math:`a_y \mathrel{-}= \beta\nabla^2_{yy} g\, w`; same oracle calls as plain GD.
    The final buffer is returned in ``buf``."""
    trajectory = []
    y, buf = y0, buf0
    heavy = buf0 is not None
    for _ in range(n_steps):
        batch = oracle.sample("g")
        trajectory.append((y, batch))
        grad = oracle.grad_y_g(x, y, batch)
        if heavy:
            buf = momentum * buf + grad
            grad = buf
        y = y - lr * grad
    d, a = oracle.grad_f(x, y)
    a_b = torch.zeros_like(a) if heavy else None
    for t in reversed(range(n_steps)):
        y_t, batch = trajectory[t]
        w = a - a_b / lr if heavy else a
        d = d - lr * oracle.cross_xy_g(x, y_t, w, batch)
        if heavy:
            a_b = -momentum * lr * w
        if t > 0 or need_dy:
            a = a - lr * oracle.hvp_yy_g(x, y_t, w, batch)
    return Unrolled(d, a if need_dy else None, y, buf)


@dataclasses.dataclass
class Lstsq:
    """Result of :func:`range_lstsq`: ``xi = H z`` and the residual ``b - H xi``."""

    xi: torch.Tensor
    z: torch.Tensor
    residual: torch.Tensor


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


def _div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with 0 where den == 0."""
    ok = den != 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def range_lstsq(
    matvec: MatVec,
    b: torch.Tensor,
    n_iter: int,
    z0: torch.Tensor | None = None,
    null_tol: Step = 0.0,
) -> Lstsq:
    r"""Min-norm least squares :math:`H^\dagger b` by ``n_iter`` CGNR iterations in
    :math:`\xi = Hz` coordinates (module docstring).

    Cost: one product for :math:`Hb` from ``z0 = None`` (``ξ0 = 0``), three from a warm
    ``z0`` (:math:`Hz_0`, :math:`H\xi_0`, :math:`H\rho_0`); then two per iteration.

    A run stops (and stops being counted) when its normal-equation residual
    :math:`s = H\rho` satisfies :math:`\|s\| \le` ``null_tol`` :math:`\cdot c\,\|\rho\|`,
    with :math:`c = \max_j \|Hp_j\|/\|p_j\|` the largest curvature seen along the CG
    directions (a lower estimate of :math:`\|H\|`): what is left of the residual then
    lies in directions of relative curvature below ``null_tol``, which are treated as
    the null space (the ``rcond`` of a pseudoinverse; without it CG would go on to
    invert the tiny tangent curvature of a point slightly off a solution manifold and
    cancel the tangent component). ``null_tol = 0`` disables the test. A run also stops
    when :math:`\|s\|` falls below ``RESIDUAL_FLOOR`` times its first value.
    """
    if z0 is None:
        z, xi, r = torch.zeros_like(b), torch.zeros_like(b), b.clone()
    else:
        z = z0
        xi = matvec(z)
        r = b - matvec(xi)
    s = matvec(r)
    q, p = r.clone(), s.clone()  # CGNR direction p = H q
    ss = _dot(s, s)
    floor = (RESIDUAL_FLOOR**2) * ss
    curv = torch.zeros_like(ss)  # 0 before the first product: the first iteration always runs
    for _ in range(n_iter):
        live = (ss > floor) & (ss > (null_tol * curv) ** 2 * _dot(r, r))
        if not bool(live.any()):
            break
        active = live.squeeze(-1)
        w = matvec(p, active=active)  # H p
        ww = _dot(w, w)
        curv = torch.where(live, torch.maximum(curv, _div(ww, _dot(p, p)).sqrt()), curv)
        alpha = torch.where(live, _div(ss, ww), torch.zeros_like(ss))
        z = z + alpha * q
        xi = xi + alpha * p
        r = r - alpha * w
        s_new = matvec(r, active=active)
        ss_new = torch.where(live, _dot(s_new, s_new), ss)
        beta = _div(ss_new, ss)
        q = torch.where(live, r + beta * q, q)
        p = torch.where(live, s_new + beta * p, p)
        ss = ss_new
    return Lstsq(xi, z, r)
