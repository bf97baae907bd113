"""PL problems (P5, P6, P7, P9, P10): closed forms against autodiff, finite differences,
the pseudoinverse formula and sampled solution sets; the BGS selection of P9."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import brentq, minimize, minimize_scalar
from torch.func import grad

from bibench import BatchedRNG
from bibench.registry import get_problem
from bibench.testing import fd_grad, ground_truth_errors, oracle_errors


def make(name: str, **params):
    cls = get_problem(name)
    return cls(cls.Params(**params))


def rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- P9 bome_toy ---------------------------------------------------------------------


def test_bome_toy_ground_truth_and_oracles():
    problem = make("bome_toy")
    x = rand(6, 1, scale=2.0)
    errs = ground_truth_errors(problem, x)
    assert max(errs.values()) < 1e-10, errs
    y, v = rand(6, 2, seed=1), rand(6, 2, seed=2)
    assert max(oracle_errors(problem, x, y, v).values()) == 0
    # dist to the line S(x) = {(x, t)} against the closest of many sampled points
    pts = problem.sample_solution_set(x, 4000)
    brute = torch.linalg.vector_norm(pts - y[:, None], dim=-1).min(1).values
    exact = problem.dist_to_solution_set(x, y)
    assert (exact <= brute + 1e-15).all() and (brute - exact).max() < 1e-2


def _flow(problem, x: torch.Tensor, y0: torch.Tensor, dt: float = 0.1, n: int = 600):
    """Explicit Euler on dy/dt = -grad_y g(x, y), independent of the closed form."""
    y = y0.clone()
    for _ in range(n):
        y = y - dt * problem.grad_y_g(x, y)
    return y


def test_bome_toy_flow_selection_and_its_gradient():
    problem = make("bome_toy")
    x, y0 = rand(5, 1, seed=3), rand(5, 2, seed=4)
    assert (_flow(problem, x, y0) - problem.flow_selection(x, y0)).abs().max() < 1e-12
    l_phi = lambda x_: problem.f(x_, problem.flow_selection(x_, y0))  # noqa: E731
    sel = problem.selection_map_grad(x, y0)
    assert (grad(lambda x_: l_phi(x_).sum())(x) - sel).abs().max() < 1e-14
    assert (fd_grad(l_phi, x) - sel).abs().max() < 1e-10


def test_bome_toy_bgs_and_optimistic_minimisers_differ():
    problem = make("bome_toy", y2_init=2.0)
    rng_y0 = problem.init_y(BatchedRNG(torch.zeros(1, dtype=torch.int64)))
    y2 = rng_y0[0, 1].item()
    assert y2 == 2.0
    # closed forms: the selection-map gradient vanishes at (1 + y2)/2, the hypergradient at 1
    x_bgs = torch.tensor([[(1 + y2) / 2]])
    assert problem.selection_map_grad(x_bgs, rng_y0).abs().item() == 0
    assert problem.hypergrad(torch.ones(1, 1)).abs().item() == 0
    assert abs(problem.hypergrad(x_bgs).item()) == 0.5

    # numerically: L_phi through the integrated flow, Phi as min over the solution line
    def l_phi(x: float) -> float:
        xt = torch.tensor([[x]])
        return problem.f(xt, _flow(problem, xt, rng_y0)).item()

    def phi(x: float) -> float:
        xt = torch.tensor([[x]])
        inner = minimize_scalar(lambda t: problem.f(xt, torch.tensor([[x, t]])).item(), tol=1e-12)
        return inner.fun

    opt = dict(bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-10})
    assert abs(minimize_scalar(l_phi, **opt).x - 1.5) < 1e-6
    assert abs(minimize_scalar(phi, **opt).x - 1.0) < 1e-6


# -- P5, P6, P7, P10: ground truth and oracles ----------------------------------------

CASES = [
    ("lstsq_rank_deficient", {}),
    ("lstsq_rank_deficient", {"dim_x": 2, "dim_y": 6, "n_samples": 4, "rank": 3, "cond": 100.0}),
    ("pl_curved", {}),
    ("pl_curved", {"dim_x": 3, "dim_y": 5, "n_samples": 8, "rank": 2}),
    ("pl_graph", {}),
    ("pl_graph", {"dim_x": 1, "dim_y": 1}),
    ("vpbgd_toy", {}),
]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_ground_truth_matches_autodiff_fd_pinv_and_samples(name, params):
    for seed in range(2):
        problem = make(name, seed=seed, **params)
        x = rand(5, problem.dim_x, seed=seed)
        if name == "vpbgd_toy":
            x = -1.0 + 4.5 * torch.rand(5, 1, generator=torch.Generator().manual_seed(seed))
        errs = ground_truth_errors(problem, x)
        assert max(errs.values()) < 1e-9, errs
        y, v = rand(5, problem.dim_y, seed=10 + seed), rand(5, problem.dim_y, seed=20 + seed)
        assert max(oracle_errors(problem, x, y, v).values()) < 1e-12
        if problem.n_samples_g:
            batch = torch.randint(0, problem.n_samples_g, (5, 3))
            assert max(oracle_errors(problem, x, y, v, batch=batch).values()) < 1e-12
            # the minibatch terms average to the full g
            rows = torch.arange(problem.n_samples_g).expand(5, -1)
            assert (problem.g(x, y, rows) - problem.g(x, y)).abs().max() < 1e-13


@pytest.mark.parametrize("name", ["lstsq_rank_deficient", "pl_curved"])
def test_least_squares_phi_star_is_attained_and_the_spectrum_is_as_declared(name):
    problem = make(name, cond=20.0)
    x_true = problem.x_true[None]
    assert problem.phi(x_true).item() < 1e-28
    assert problem.hypergrad(x_true).abs().max() < 1e-14
    # A'A/n: dim_y - rank zero eigenvalues, the rest in [1/cond, 1] (P5: L = 1, mu = 1/cond)
    eig = torch.linalg.eigvalsh(problem.A.T @ problem.A / problem.params.n_samples)
    k = problem.params.dim_y - problem.params.rank
    assert eig[:k].abs().max() < 1e-13
    assert abs(eig[k].item() - 1 / 20.0) < 1e-12 and abs(eig[-1].item() - 1.0) < 1e-12


def test_lstsq_distance_is_the_orthogonal_projection():
    problem = make("lstsq_rank_deficient")
    x, y = rand(4, problem.dim_x, seed=1), rand(4, problem.dim_y, seed=2)
    # nearest point of the affine set by an independent least-squares solve over ker A
    u = problem.u_star(x)
    z = torch.linalg.lstsq(problem.ker.expand(4, -1, -1), (y - u)[..., None]).solution
    proj = u + (problem.ker @ z)[..., 0]
    assert (problem.dist_to_solution_set(x, y) - (y - proj).norm(dim=-1)).abs().max() < 1e-13


def test_curved_projection_is_exact_near_the_manifold():
    problem = make("pl_curved")
    x = rand(4, problem.dim_x, seed=3)
    # a point w of S(x), pushed off along the normal space range(diag(psi'(w)) V_r)
    w = problem.sample_solution_set(x, 1)[:, 0]
    normal = (torch.cos(w) * 0.5 + 1.0)[:, :, None] * problem.V_r
    offset = 0.05 * (normal @ rand(4, problem.params.rank, 1, seed=4))[..., 0]
    y = w + offset
    assert (problem.dist_to_solution_set(x, y) - offset.norm(dim=-1)).abs().max() < 1e-13
    assert (problem.project(x, y) - w).abs().max() < 1e-13


def _brute_distance(problem, x, y, n_starts: int = 12) -> float:
    """min over z of |psi^-1(u* + N z) - y| by scipy BFGS from many starts."""
    ker, u = problem.ker.numpy(), problem.u_star(x[None])[0].numpy()
    yv, rng = y.numpy(), np.random.default_rng(0)

    def s_inv(v):
        t = v.copy()
        for _ in range(30):
            t = t - (t + 0.5 * np.sin(t) - v) / (1.0 + 0.5 * np.cos(t))
        return t

    def loss(z):
        return 0.5 * np.sum((s_inv(u + ker @ z) - yv) ** 2)

    z0 = ker.T @ (yv - u)
    starts = [z0] + [z0 + 3.0 * rng.standard_normal(len(z0)) for _ in range(n_starts - 1)]
    return min(np.sqrt(2 * minimize(loss, z, method="BFGS", options={"gtol": 1e-11}).fun)
               for z in starts)  # fmt: skip


def test_curved_distance_far_from_the_manifold_is_exact_or_nan():
    """At y* + 3 N(0, I) (where an undamped KKT Newton returned points with g - g* up to
    1e19): every finite distance equals a brute-force one, its projection lies on S(x),
    and most (on this instance 80 %) are known."""
    problem = make("pl_curved")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, problem.dim_x, generator=gen, dtype=torch.float64)
    y = problem.y_star(x) + 3.0 * torch.randn(40, problem.dim_y, generator=gen, dtype=torch.float64)
    proj = problem.project(x, y)
    dist = problem.dist_to_solution_set(x, y)
    known = torch.isfinite(dist)
    assert known.float().mean() >= 0.6
    assert (problem.g(x[known], proj[known]) - problem.g_star(x[known])).abs().max() < 1e-13
    for i in torch.nonzero(known)[:12, 0].tolist():
        assert abs(dist[i].item() - _brute_distance(problem, x[i], y[i])) < 1e-7, i
    # a start whose Newton did not converge is never reported: cap the iterations
    capped = make("pl_curved")
    capped.n_newton = 1
    assert torch.isnan(capped.dist_to_solution_set(x, y)).all()


def test_pl_graph_pl_constant_and_attained_phi_star():
    problem = make("pl_graph")
    # PL: 1/2 |grad_y g|^2 >= mu (g - g*) with mu = min s'^2 = 1/4, attained at y_1 = pi
    y1 = torch.linspace(-10, 10, 4001)
    x = torch.zeros(len(y1), problem.dim_x)
    y = torch.zeros(len(y1), problem.dim_y)
    y[:, 0] = y1
    ratio = 0.5 * problem.grad_y_g(x, y).norm(dim=-1) ** 2 / problem.g(x, y)
    assert ratio.min() >= 0.25 - 1e-12 and ratio.min() < 0.25 + 1e-5
    # Phi* = 0: t*(x) = a_1(x) has a root along the direction of M_1
    m1 = problem.M[0]

    def h(c: float) -> float:
        xc = (c * m1)[None]
        return (problem.t_star(xc) - problem._a(xc)[:, 0]).item()

    root = brentq(h, -50.0, 50.0, xtol=1e-14)
    x_root = (root * m1)[None]
    assert problem.phi(x_root).item() < 1e-26 and problem.hypergrad(x_root).abs().max() < 1e-12


def test_vpbgd_toy_formula_minimum_and_domain():
    problem = make("vpbgd_toy")
    x = torch.linspace(-1.0, 20.0, 20001)[:, None]
    s = 2 - 4 * x
    es = torch.exp(s)
    # the closed form of Phi' in Shen & Chen (ICML 2023, arXiv 2302.05185), toy example
    paper = 4 * (torch.sin(s) * (1 + es) + torch.cos(s) * es) / (1 + es) ** 2 - 4 * s / (s**2 + 1)
    assert (problem.hypergrad(x) - paper).abs().max() < 1e-12
    assert problem.phi(x).min() >= problem.phi_star - 1e-15
    assert problem.hypergrad(problem.x_star).abs().item() < 1e-14
    assert 0.0 < problem.x_star.item() < 3.0
    # the box boundary gradients point inside [0, 3]
    box = problem.hypergrad(torch.tensor([[0.0], [3.0]]))[:, 0]
    assert box[0] < 0 < box[1]
    # y* = -x is the unique minimiser of g for x >= -1 (g = 0 only there) ...
    xs = torch.linspace(-1.0, 3.0, 41)[:, None, None].expand(-1, 2001, 1)
    z = torch.linspace(-6.0, 6.0, 2001)[None, :, None].expand(41, -1, 1)
    gz = problem.g(xs.reshape(-1, 1), (z - xs).reshape(-1, 1)).reshape(41, 2001)
    assert gz[:, z[0, :, 0].abs() > 1e-2].min() > 0
    # ... and below -1 it is not: g(x, -x) = 0 is beaten, and the ground truth is NaN
    xb = torch.full((1, 1), -1.5)
    assert problem.g(xb, -xb + 1.0).item() < 0
    assert torch.isnan(problem.phi(xb)).all() and torch.isnan(problem.hypergrad(xb)).all()
    metrics = problem.metrics(torch.tensor([[0.0], [1.0], [3.0]]), torch.zeros(3, 1))
    hg = problem.hypergrad(torch.tensor([[0.0], [1.0], [3.0]]))[:, 0]
    expected = torch.stack([torch.minimum(-hg[0], torch.tensor(3.0)), hg[1].abs(), hg[2]])
    assert (metrics["proj_grad_norm"] - expected).abs().max() < 1e-14
