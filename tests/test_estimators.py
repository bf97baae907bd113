"""Inverse-HVP estimators against dense linear algebra on known matrices."""

from __future__ import annotations

import pytest
import torch

from bibench.estimators import cg, dense_pinv, make_estimator, min_norm, neumann


def spd(n_runs: int, d: int, lo: float, hi: float, rank: int | None = None, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n_runs, d, d, generator=gen))
    eig = torch.linspace(lo, hi, d).expand(n_runs, d).clone()
    if rank is not None:
        eig[:, rank:] = 0.0
    return q @ torch.diag_embed(eig) @ q.transpose(1, 2)


class Counting:
    def __init__(self, h):
        self.h, self.calls = h, 0

    def __call__(self, v, active=None):
        self.calls += 1
        return (self.h @ v[..., None])[..., 0]


def test_cg_is_exact_after_d_iterations_and_counts_d_products():
    h = spd(4, 6, 0.1, 1.0)
    b = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    mv = Counting(h)
    v = cg(6)(mv, b)
    assert mv.calls == 6
    assert torch.allclose(v, torch.linalg.solve(h, b), atol=1e-10, rtol=0)


def test_cg_warm_start_from_solution_stays_there():
    h = spd(2, 5, 0.5, 2.0)
    b = torch.randn(2, 5, generator=torch.Generator().manual_seed(2))
    exact = torch.linalg.solve(h, b)
    mv = Counting(h)
    v = cg(3)(mv, b, init=exact)
    assert mv.calls == 4  # one for the initial residual
    assert (v - exact).abs().max() < 1e-12


def test_cg_on_a_direction_of_zero_curvature_stays_put():
    """Run 0 has H = 0, so <p, Hp> = 0 on its first direction: its step is 0 (not inf or
    NaN) and v stays 0; run 1 (H = 2I) is solved in one step, v = b / 2, untouched by it."""
    h = torch.stack([torch.zeros(3, 3), 2.0 * torch.eye(3)])
    b = torch.ones(2, 3)
    v = cg(3)(Counting(h), b)
    assert v[0].tolist() == [0.0, 0.0, 0.0]
    assert v[1].tolist() == [0.5, 0.5, 0.5]


def test_cg_tolerance_freezes_converged_runs_per_run():
    # run 0 is the identity (converges in 1 step), run 1 needs 5
    h = torch.stack([torch.eye(5), spd(1, 5, 0.1, 1.0)[0]])
    b = torch.randn(2, 5, generator=torch.Generator().manual_seed(3))
    masks = []

    def mv(v, active=None):
        masks.append(None if active is None else active.clone())
        return (h @ v[..., None])[..., 0]

    v = cg(20, tol=1e-12)(mv, b)
    assert torch.allclose(v, torch.linalg.solve(h, b), atol=1e-10, rtol=0)
    assert masks[1] is not None and masks[1].tolist() == [False, True]


def test_neumann_matches_truncated_series_and_converges_geometrically():
    h = spd(3, 5, 0.2, 1.0)
    b = torch.randn(3, 5, generator=torch.Generator().manual_seed(4))
    alpha, q = 1.0, 30
    mv = Counting(h)
    v = neumann(alpha, q)(mv, b)
    assert mv.calls == q - 1
    eye = torch.eye(5).expand(3, 5, 5)
    m = eye - alpha * h
    series = sum(torch.linalg.matrix_power(m, k) for k in range(q))
    assert torch.allclose(v, alpha * (series @ b[..., None])[..., 0], atol=1e-12, rtol=0)
    # error = (I - alpha H)^q H^{-1} b, so it shrinks like (1 - alpha * lambda_min)^q = 0.8^q
    exact = torch.linalg.solve(h, b)
    err = torch.linalg.vector_norm(v - exact, dim=-1)
    bound = 0.8**q * torch.linalg.vector_norm(exact, dim=-1)
    assert (err <= bound * (1 + 1e-9)).all()


def test_neumann_accepts_per_run_step_sizes():
    h = spd(2, 4, 0.5, 1.0)
    b = torch.randn(2, 4, generator=torch.Generator().manual_seed(5))
    alpha = torch.tensor([[1.0], [0.5]])
    v = neumann(alpha, 3)(Counting(h), b)
    for r, a in enumerate([1.0, 0.5]):
        vr = neumann(a, 3)(Counting(h[r : r + 1]), b[r : r + 1])
        assert torch.allclose(v[r], vr[0], atol=1e-14, rtol=0)


def test_min_norm_returns_pseudoinverse_solution_on_singular_matrix():
    h = spd(3, 7, 0.3, 1.0, rank=4)
    gen = torch.Generator().manual_seed(6)
    b = torch.randn(3, 7, generator=gen)  # not in range(H): a true least-squares problem
    mv = Counting(h)
    v = min_norm(40)(mv, b)
    assert mv.calls == 1 + 2 * 40
    expected = (torch.linalg.pinv(h, hermitian=True) @ b[..., None])[..., 0]
    assert (v - expected).abs().max() < 1e-9


def test_dense_pinv_is_exact():
    h = spd(2, 5, 0.3, 1.0, rank=3)
    b = torch.randn(2, 5, generator=torch.Generator().manual_seed(7))
    v = make_estimator("dense_pinv")(Counting(h), b)
    expected = (torch.linalg.pinv(h, hermitian=True) @ b[..., None])[..., 0]
    assert (v - expected).abs().max() < 1e-12
    assert dense_pinv is not None


def test_unknown_estimator_names_itself():
    with pytest.raises(ValueError, match="unknown estimator 'foo'"):
        make_estimator("foo")
