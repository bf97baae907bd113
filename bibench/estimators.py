r"""Shared inverse-HVP estimators with one signature: ``solve(matvec, b, init=None) -> v``.

``matvec(v, active=None)`` applies :math:`H = \nabla^2_{yy} g` to a batch ``(R, d)``;
it is usually a closure over a counting oracle, so every product is counted.
``active`` is a bool ``(R,)`` mask of the runs that still need the product (used when
a tolerance freezes converged runs, so their counts stop). All tensors carry the run
dimension first; step sizes may be ``(R, 1)`` tensors.

Factories return configured solvers (``functools.partial``-style), after TorchOpt's
``linear_solve`` and JAXopt's ``linear_solve``:

* :func:`neumann` — :math:`v = \alpha\sum_{k=0}^{Q-1}(I-\alpha H)^k b`, Q products
  (the last term needs no product);
* :func:`cg` — conjugate gradient for SPD ``H``, ``n_iter`` products;
* :func:`min_norm` — CG on the normal equations :math:`H^2 v = H b` from ``v = 0``
  (CGNR). Iterates stay in :math:`\mathrm{range}(H)`, so the limit is the min-norm
  least-squares solution :math:`H^\dagger b` even when ``H`` is singular; 2 products
  per iteration plus one for :math:`H b`;
* :func:`dense_pinv` — materialise ``H`` with ``d`` products and apply
  :math:`H^\dagger` (tests and tiny problems only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

__all__ = ["LinearSolver", "MatVec", "cg", "dense_pinv", "make_estimator", "min_norm", "neumann"]

MatVec = Callable[..., torch.Tensor]
RESIDUAL_FLOOR = 1e-13  # relative residual at which CG treats a run as solved


class LinearSolver(Protocol):
    def __call__(
        self, matvec: MatVec, b: torch.Tensor, init: torch.Tensor | None = None
    ) -> torch.Tensor: ...


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


def neumann(alpha: float | torch.Tensor, n_terms: int) -> LinearSolver:
    r"""Truncated Neumann series :math:`\alpha\sum_{k=0}^{Q-1}(I-\alpha H)^k b`
    (Ghadimi & Wang 2018; Ji, Yang, Liang 2021). Converges to :math:`H^{-1}b` as
    :math:`Q\to\infty` when :math:`0<\alpha<2/\lambda_{\max}(H)`. ``init`` is ignored."""
    if n_terms < 1:
        raise ValueError(f"n_terms must be >= 1, got {n_terms}")

    def solve(matvec: MatVec, b: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
        term, total = b, b
        for _ in range(n_terms - 1):
            term = term - alpha * matvec(term)
            total = total + term
        return alpha * total

    return solve


def _cg(
    matvec: MatVec, b: torch.Tensor, init: torch.Tensor | None, n_iter: int, tol: float
) -> torch.Tensor:
    v = torch.zeros_like(b) if init is None else init.clone()
    r = b - matvec(v) if init is not None else b.clone()
    p = r.clone()
    rr = _dot(r, r)
    # Below this residual a run is solved to rounding; more steps would divide rounding
    # noise by rounding noise (and blow up on singular systems), so the run is frozen.
    floor = (RESIDUAL_FLOOR * torch.linalg.vector_norm(b, dim=-1, keepdim=True)) ** 2
    active: torch.Tensor | None = None
    for _ in range(n_iter):
        if tol > 0:
            active = rr.squeeze(-1).sqrt() > tol
            if not bool(active.any()):
                break
        hp = matvec(p, active=active) if active is not None else matvec(p)
        live = rr > floor
        if active is not None:
            live = live & active[:, None]
        # alpha = rr / <p, Hp> on live runs, 0 elsewhere and where <p, Hp> = 0 (a singular
        # H); the quotient's other entries are discarded. The step ratio needs no guard:
        # a live run has rr > floor >= 0.
        php = _dot(p, hp)
        alpha = torch.where(live & (php != 0), rr / php, 0.0)
        v = v + alpha * p
        r = r - alpha * hp
        rr_new = torch.where(live, _dot(r, r), rr)
        p = torch.where(live, r + (rr_new / rr) * p, p)
        rr = rr_new
    return v


def cg(n_iter: int, tol: float = 0.0) -> LinearSolver:
    r"""Conjugate gradient on :math:`Hv=b` (Hestenes & Stiefel 1952). ``init`` warm-starts
    (costing one extra product). With ``tol > 0`` a run stops, and stops being counted,
    once its residual norm is at most ``tol``."""
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")

    def solve(matvec: MatVec, b: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
        return _cg(matvec, b, init, n_iter, tol)

    return solve


def min_norm(n_iter: int, tol: float = 0.0) -> LinearSolver:
    r"""Min-norm least squares :math:`H^\dagger b` by CG on :math:`H^2 v = Hb` from 0.
    ``init`` (if given) must lie in :math:`\mathrm{range}(H)` to keep the min-norm limit."""

    def solve(matvec: MatVec, b: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
        def normal(v: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
            if active is None:
                return matvec(matvec(v))
            return matvec(matvec(v, active=active), active=active)

        return _cg(normal, matvec(b), init, n_iter, tol)

    return solve


def dense_pinv(rcond: float = 1e-10) -> LinearSolver:
    r"""Exact :math:`H^\dagger b` by materialising ``H`` (``d`` products). Tests only."""

    def solve(matvec: MatVec, b: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
        n, d = b.shape
        eye = torch.eye(d, dtype=b.dtype, device=b.device)
        cols = [matvec(eye[i].expand(n, d)) for i in range(d)]
        h = torch.stack(cols, dim=-1)  # (R, d, d), column i = H e_i
        h = 0.5 * (h + h.transpose(-1, -2))
        return (torch.linalg.pinv(h, rtol=rcond, hermitian=True) @ b[..., None])[..., 0]

    return solve


_FACTORIES = {"neumann": neumann, "cg": cg, "min_norm": min_norm, "dense_pinv": dense_pinv}


def make_estimator(name: str, **kwargs) -> LinearSolver:
    """An estimator by name: ``neumann``, ``cg``, ``min_norm`` or ``dense_pinv``."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown estimator '{name}' (known: {', '.join(_FACTORIES)})")
    return _FACTORIES[name](**kwargs)
