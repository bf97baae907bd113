"""bibench.hypergrad.range_lstsq: min-norm least squares in ξ = Hz coordinates.

Against the dense pseudoinverse: ξ = H†b, residual b − Hξ = (I − HH†)b (the projection
onto ker H), ξ = Hz, and the same limit from a warm z0 (ξ0 = Hz0 ∈ range H). The
unrolled reverse pass is checked in tests/algorithms/test_itd.py.
"""

from __future__ import annotations

import torch

from bibench.hypergrad import range_lstsq

R, D, RANK = 3, 6, 4


def singular_psd(seed: int = 0) -> torch.Tensor:
    """``(R, D, D)`` PSD matrices of rank 4 with nonzero spectrum in [0.5, 2]."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(R, D, D, generator=gen, dtype=torch.float64))
    eig = torch.zeros(R, D, dtype=torch.float64)
    eig[:, :RANK] = 0.5 + 1.5 * torch.rand(R, RANK, generator=gen, dtype=torch.float64)
    return q @ torch.diag_embed(eig) @ q.transpose(1, 2)


def counting(h: torch.Tensor):
    calls = []

    def matvec(v, active=None):
        calls.append(R if active is None else int(active.sum()))
        return (h @ v[..., None])[..., 0]

    return matvec, calls


def test_cold_start_gives_the_pseudoinverse_and_the_null_space_residual():
    h = singular_psd()
    b = torch.randn(R, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    matvec, calls = counting(h)
    sol = range_lstsq(matvec, b, n_iter=RANK)
    pinv = torch.linalg.pinv(h, hermitian=True)
    xi = (pinv @ b[..., None])[..., 0]
    assert torch.allclose(sol.xi, xi, atol=1e-10)
    proj_null = torch.eye(D, dtype=torch.float64) - h @ pinv
    assert torch.allclose(sol.residual, (proj_null @ b[..., None])[..., 0], atol=1e-10)
    assert torch.allclose((h @ sol.z[..., None])[..., 0], sol.xi, atol=1e-10)
    assert len(calls) == 1 + 2 * RANK  # Hb, then two products per iteration


def test_warm_start_in_z_keeps_the_min_norm_limit():
    h = singular_psd()
    gen = torch.Generator().manual_seed(2)
    b = torch.randn(R, D, generator=gen, dtype=torch.float64)
    z0 = 10.0 * torch.randn(R, D, generator=gen, dtype=torch.float64)  # far, with a ker part
    matvec, calls = counting(h)
    sol = range_lstsq(matvec, b, n_iter=RANK, z0=z0)
    xi = (torch.linalg.pinv(h, hermitian=True) @ b[..., None])[..., 0]
    assert torch.allclose(sol.xi, xi, atol=1e-9)
    assert len(calls) == 3 + 2 * RANK  # Hz0, H xi0, H rho0, then two per iteration


def test_null_tol_treats_tiny_curvature_as_null_space():
    """H = diag(1, 0.5, 1e-9): with null_tol = 1e-6 (relative to the curvature seen) the
    1e-9 direction is left in the residual, like a tangent direction at a point slightly
    off a solution manifold; with null_tol = 0 CG goes on and inverts it."""
    h = torch.diag(torch.tensor([1.0, 0.5, 1e-9], dtype=torch.float64)).expand(1, 3, 3)
    b = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    matvec, _ = counting(h)
    cut = range_lstsq(matvec, b, n_iter=10, null_tol=1e-6)
    expected_xi = torch.tensor([[1.0, 2.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(cut.xi, expected_xi, atol=1e-8)
    assert torch.allclose(cut.residual, b - torch.tensor([[1.0, 1.0, 0.0]]), atol=1e-8)
    full = range_lstsq(matvec, b, n_iter=10)
    assert full.xi[0, 2].item() > 1e8  # b3 / 1e-9 = 1e9, up to CG's rounding
