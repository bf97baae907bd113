"""P2 ``ellipsoid`` and ``hat_saddle`` (problems/hat_deformed.py): closed forms against
autodiff, finite differences, the pseudoinverse formula and brute force."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from bibench.problem import Problem
from bibench.registry import get_problem
from bibench.rng import BatchedRNG
from bibench.testing import dense_hessians, ground_truth_errors, oracle_errors


def make(name, **params):
    cls = get_problem(name)
    return cls(cls.Params(**params))


SADDLE_X = torch.tensor([[-2.5], [-1.3], [-0.2], [0.15], [0.9], [3.0]])  # |x| > 0.385: 1 root


@pytest.mark.parametrize(
    ("name", "params"),
    [("ellipsoid", {}), ("ellipsoid", {"dim_x": 3, "dim_y": 5}), ("hat_saddle", {}),
     ("hat_saddle", {"x_target": 0.3})],
)  # fmt: skip
def test_ground_truth_matches_autodiff_fd_pinv_and_sampled_selection(name, params):
    problem = make(name, **params)
    if name == "hat_saddle":
        x = SADDLE_X
    else:
        x = 1.5 * torch.randn(5, problem.dim_x, generator=torch.Generator().manual_seed(0))
    errs = ground_truth_errors(problem, x, n_samples=4096)
    assert max(errs.values()) < 1e-8, errs


# -- ellipsoid ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params"), [("ellipsoid", {}), ("ellipsoid", {"dim_x": 3, "dim_y": 5}),
                         ("hat_saddle", {})]
)  # fmt: skip
def test_analytic_oracles_match_autodiff(name, params):
    problem = make(name, **params)
    gen = torch.Generator().manual_seed(1)
    dims = (problem.dim_x, problem.dim_y, problem.dim_y)
    x, y, v = (torch.randn(6, n, generator=gen) for n in dims)
    assert max(oracle_errors(problem, x, y, v).values()) < 1e-12


def test_ellipsoid_projection_satisfies_kkt_and_beats_samples():
    problem = make("ellipsoid", dim_y=3)
    project = sys.modules[type(problem).__module__].project_ellipsoid
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, generator=gen)
    scale = torch.tensor([[0.01], [0.3], [1.0], [3.0], [0.7], [10.0]])  # inside and outside
    y = scale * torch.randn(6, 3, generator=gen)
    mat = problem.mmat(x)
    z = project(mat, y)
    mz = (mat @ z[..., None])[..., 0]
    assert ((z * mz).sum(-1) - 1).abs().max() < 1e-12  # on the ellipsoid
    s = ((y - z) * mz).sum(-1) / (mz * mz).sum(-1)  # y - z = s M z (normal), s > -1/nu_max
    assert (y - z - s[:, None] * mz).abs().max() < 1e-10
    assert (s > -1 / torch.linalg.eigvalsh(mat)[:, -1]).all()
    dist = problem.dist_to_solution_set(x, y)
    pts = problem.sample_solution_set(x, 20_000)
    assert (dist - torch.linalg.vector_norm(pts - y[:, None], dim=-1).min(-1).values).max() < 1e-12
    # hard case: the centre y = 0 is 1/sqrt(nu_max) from the surface
    nu_max = torch.linalg.eigvalsh(mat)[:, -1]
    assert (problem.dist_to_solution_set(x, torch.zeros(6, 3)) - nu_max**-0.5).abs().max() < 1e-12


def test_ellipsoid_is_well_posed_and_nonconvex():
    problem = make("ellipsoid")
    x = 5 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(2))
    eig = torch.linalg.eigvalsh(problem.mmat(x))
    assert eig.min() >= 0.25 * problem.kappa - 1e-15  # kappa mu0 I <= M
    assert eig.max() <= 0.5 + 1e-15  # M <= I/2: the lower-level Hessian on S is <= 1
    assert torch.linalg.vector_norm(problem.wvec(x), dim=-1).min() >= 0.5 - 1e-12  # w != 0
    xs = problem.init_x(BatchedRNG(torch.arange(12), 1))
    for _ in range(400):
        xs = xs - 0.5 * problem.hypergrad(xs)
    assert torch.linalg.vector_norm(problem.hypergrad(xs), dim=-1).max() < 1e-10
    values = problem.phi(xs)
    assert values.max() - values.min() > 0.1  # two local minima of different values
    sel = problem.metrics(xs, problem.y_star(xs))["selection_gap"]
    assert sel.abs().max() < 1e-12
    gap = problem.metrics(xs, -problem.y_star(xs))["selection_gap"]  # antipode: f = +sqrt(q)
    assert (gap - 2 * (problem.wvec(xs) * -problem.y_star(xs)).sum(-1)).abs().max() < 1e-12


# -- hat_saddle ---------------------------------------------------------------------------


def test_hat_saddle_minimiser_and_the_saddle_it_turns_into():
    problem = make("hat_saddle")
    x = torch.tensor([[-0.3], [-0.1], [0.05], [0.2]])
    t = problem.root(x)[:, 0]
    assert (t**3 - t + x[:, 0]).abs().max() < 1e-14
    assert (torch.sign(t) == -torch.sign(x[:, 0])).all() and (t.abs() > 1).all()
    ys = problem.y_star(x)
    hyy, _ = dense_hessians(problem, x, ys)
    # isolated minimiser: Hessian diag(3t^2 - 1, t^2 - 1) with t^2 - 1 = -x/t > 0
    expected = torch.stack([-x[:, 0] / t, 3 * t**2 - 1], dim=-1)
    assert (torch.linalg.eigvalsh(hyy) - expected).abs().max() < 1e-12
    assert (expected[:, 0] > 0).all()
    # every real root of t^3 - t + x, by numpy: the other pole is a saddle with
    # tangential curvature -x/t < 0, and g there is above g*
    for i, xi in enumerate(x[:, 0].tolist()):
        roots = np.roots([1.0, 0.0, -1.0, xi]).real
        saddle_t = roots[np.argmax(np.sign(xi) * roots)]
        saddle = torch.tensor([[saddle_t, 0.0]])
        h, _ = dense_hessians(problem, x[i : i + 1], saddle)
        eig = torch.linalg.eigvalsh(h)[0]
        assert abs(eig[0].item() - (-xi / saddle_t)) < 1e-12 and eig[0] < 0 < eig[1]
        assert problem.g(x[i : i + 1], saddle).item() > problem.g_star(x[i : i + 1]).item()
        assert abs(min(roots) if xi > 0 else max(roots)) == pytest.approx(abs(t[i].item()), 1e-12)


def test_hat_saddle_solution_map_jumps_at_zero():
    problem = make("hat_saddle", x_target=1.0)
    eps = torch.tensor([[-1e-9], [0.0], [1e-9]])
    ys = problem.y_star(eps)
    assert (ys - torch.tensor([[1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])).abs().max() < 1e-8
    phi = problem.phi(eps)
    assert abs(phi[0].item() - 2.5) < 1e-8 and abs(phi[1].item() - 0.5) < 1e-15
    assert abs(phi[2].item() - 0.5) < 1e-8  # lower semicontinuous: Phi(0) = Phi(0+)
    # S(0) is the unit circle: distance and samples
    zero = torch.zeros(1, 1)
    y = torch.tensor([[0.3, -2.0]])
    assert abs(problem.dist_to_solution_set(zero, y).item() - (np.hypot(0.3, 2.0) - 1)) < 1e-15
    pts = problem.sample_solution_set(zero, 64)[0]
    assert (torch.linalg.vector_norm(pts, dim=-1) - 1).abs().max() < 1e-15
    assert problem.f(zero.expand(64, 1), pts).min() >= problem.phi(zero).item() - 1e-15
    # hypergrad(0) is the right derivative -x_t (Richardson one-sided difference)
    h = 1e-4

    def right(step):
        return (problem.phi(torch.tensor([[step]])) - problem.phi(zero)).item() / step

    assert abs((2 * right(h / 2) - right(h)) - problem.hypergrad(zero).item()) < 1e-8
    assert problem.hypergrad(zero).item() == -1.0


def test_hat_saddle_phi_star():
    problem = make("hat_saddle")
    x_star = torch.tensor([[problem._x_star]])
    assert problem.hypergrad(x_star).abs().item() < 1e-14
    assert 0 < problem._x_star < 1.0
    grid = torch.linspace(-3, 3, 6001)[:, None]
    assert (problem.phi(grid) - problem.phi_star).min() > -1e-14


def test_description_and_initial_points():
    for name in ("ellipsoid", "hat_saddle"):
        problem = make(name)
        assert problem.regime == "manifold"
        rng = BatchedRNG(torch.arange(4), 1)
        x0, y0 = problem.init_x(rng), problem.init_y(rng)
        assert Problem.grad_y_g(problem, x0, problem.y_star(x0)).abs().max() < 1e-12
        assert (problem.g(x0, y0) > problem.g_star(x0)).all()
    assert make("ellipsoid").description().startswith("P2")
    x0 = make("hat_saddle").init_x(BatchedRNG(torch.arange(64), 1))
    assert (x0 < 0).all()  # starts on the far side of the jump at x = 0
