"""P1, P1′, P3, P4 (problems/mexican_hat.py): closed forms against autodiff, finite
differences, the pseudoinverse formula and brute-force selection over S(x)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import grad, jacfwd

from bibench.problem import Problem
from bibench.registry import get_problem
from bibench.rng import BatchedRNG
from bibench.testing import fd_grad, ground_truth_errors, oracle_errors, pinv_hypergrad

CASES = [
    ("hat", {}),  # dim_y = 10, k = 9: the instance HG-MS is run on
    ("hat", {"dim_x": 3, "dim_y": 6, "k": 2}),  # S^2 x {e(x)} in R^6
    ("hat", {"dim_x": 2, "dim_y": 2}),  # k + 1 <= m: ties possible, not at these x
    ("hat", {"dim_x": 3, "dim_y": 4, "k": 0, "radius": 0.7}),  # S^0: two points
    ("hat_kink", {}),
    ("hat_kink", {"dim_y": 3}),
    ("hat_trs", {}),
    ("hat_trs", {"dim_x": 3, "dim_y": 3}),
    ("circle_multimodal", {}),
    ("circle_multimodal", {"dim_x": 3, "beta": 1.0, "radius": 2.0}),
]


def make(name, **params):
    cls = get_problem(name)
    return cls(cls.Params(**params))


def points(problem, n=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = 1.5 * torch.randn(n, problem.dim_x, generator=gen)
    if problem.name == "hat_kink":  # away from the kink at 0
        x = torch.tensor([[0.3], [-0.7], [1.5], [-2.0], [0.05]])
    return x


@pytest.mark.parametrize(("name", "params"), CASES)
def test_ground_truth_matches_autodiff_fd_pinv_and_sampled_selection(name, params):
    problem = make(name, **params)
    errs = ground_truth_errors(problem, points(problem), n_samples=2048)
    assert max(errs.values()) < 1e-8, errs


@pytest.mark.parametrize(("name", "params"), CASES)
def test_analytic_oracles_match_autodiff(name, params):
    problem = make(name, **params)
    gen = torch.Generator().manual_seed(1)
    x = points(problem)
    y, v = torch.randn(2, x.shape[0], problem.dim_y, generator=gen)
    errs = oracle_errors(problem, x, y, v)
    assert max(errs.values()) < 1e-12, errs


@pytest.mark.parametrize(("name", "params"), CASES)
def test_dist_to_solution_set_is_attained_by_the_radial_projection(name, params):
    problem = make(name, **params)
    x = points(problem)
    y = 2.0 * torch.randn(x.shape[0], problem.dim_y, generator=torch.Generator().manual_seed(2))
    proj = problem.flow_selection(x, y)  # radial projection onto the sphere, y_b -> e(x)
    dist = problem.dist_to_solution_set(x, y)
    assert problem.dist_to_solution_set(x, proj).abs().max() < 1e-12
    assert problem.g(x, proj).abs().max() < 1e-12
    assert (torch.linalg.vector_norm(y - proj, dim=-1) - dist).abs().max() < 1e-12
    pts = problem.sample_solution_set(x, 4096)
    nearest_sample = torch.linalg.vector_norm(pts - y[:, None], dim=-1).min(-1).values
    assert (dist - nearest_sample).max() < 1e-12  # no point of S(x) is closer


# -- P1 ---------------------------------------------------------------------------------


def test_hat_selection_is_unique_everywhere_when_k_plus_1_exceeds_dim_x():
    """|a_a - c|^2 = (rho0 r0)^2 + |Gx - c~(x)|^2 >= (r0/4)^2: no ties, for every x."""
    problem = make("hat")  # r0 = 0.5
    x = 4.0 * torch.randn(4000, problem.dim_x, generator=torch.Generator().manual_seed(3))
    mv, aa, _, rho, _ = problem._selection(x)
    assert rho.min() >= 0.25 - 1e-12
    normal = aa - mv.c - (aa - mv.c) @ problem.U @ problem.U.T  # part off the centre's plane
    assert (torch.linalg.vector_norm(normal, dim=-1) - 0.25).abs().max() < 1e-12


def test_hat_gradient_descent_reaches_nondegenerate_stationary_points():
    """What HG-MS relies on (dim_y = 10, k = 9): GD on Phi from the initial x's reaches
    |grad Phi| <= 1e-10 at points where the Hessian of Phi is positive definite (on the
    instance with unit-norm G, B, C, E; the Gaussian one also had a second local minimum)."""
    problem = make("hat")
    x = problem.init_x(BatchedRNG(torch.arange(16), 1))
    for _ in range(2500):
        x = x - 0.4 * problem.hypergrad(x)
    assert torch.linalg.vector_norm(problem.hypergrad(x), dim=-1).max() < 1e-10
    hess = torch.stack([jacfwd(lambda z: problem.hypergrad(z[None])[0])(xi) for xi in x[:4]])
    assert torch.linalg.eigvalsh(hess).min() > 0.02


def test_hat_flow_selection_is_the_limit_of_gradient_descent_on_g():
    problem = make("hat", dim_x=3, dim_y=6, k=2)
    x = points(problem, n=4)
    y = problem.init_y(BatchedRNG(torch.arange(4), 1))
    for _ in range(3000):
        y = y - 0.05 * problem.grad_y_g(x, y)
    assert (
        y - problem.flow_selection(x, problem.init_y(BatchedRNG(torch.arange(4), 1)))
    ).abs().max() < 1e-10


@pytest.mark.parametrize("params", [{}, {"dim_x": 3, "dim_y": 6, "k": 2}])
def test_hat_selection_map_grad_matches_autodiff_and_fd(params):
    problem = make("hat", **params)
    x = points(problem, n=4)
    y0 = 1.3 * torch.randn(4, problem.dim_y, generator=torch.Generator().manual_seed(4))

    def loss(x_):
        return problem.f(x_, problem.flow_selection(x_, y0))

    mine = problem.selection_map_grad(x, y0)
    assert (mine - grad(lambda x_: loss(x_).sum())(x)).abs().max() < 1e-12
    assert (mine - fd_grad(loss, x)).abs().max() < 1e-8


def test_hat_selection_map_grad_on_the_manifold_is_the_pinv_formula():
    """Arbel & Mairal Thm. 2 / Prop. 4: for y0 in S(x), d_x L_phi equals
    grad_x f - H_xy H_yy^+ grad_y f at y0, which is not grad Phi unless y0 = y*."""
    problem = make("hat", dim_x=3, dim_y=6, k=2)
    x = points(problem, n=4)
    y0 = problem.sample_solution_set(x, 3)[:, 1]
    assert (problem.selection_map_grad(x, y0) - pinv_hypergrad(problem, x, y0)).abs().max() < 1e-10
    assert (problem.selection_map_grad(x, y0) - problem.hypergrad(x)).abs().max() > 1e-2


def test_hat_selection_gap_metric_closed_form():
    """At the antipode c - r u of y*, f exceeds Phi by 2 rho r."""
    problem = make("hat", dim_x=3, dim_y=6, k=2)
    x = points(problem, n=4)
    mv, _, _, rho, u = problem._selection(x)
    antipode = torch.cat([mv.c - mv.r[:, None] * u, mv.e], dim=-1)
    gap = problem.metrics(x, antipode)["selection_gap"]
    assert (gap - 2 * rho * mv.r).abs().max() < 1e-12
    assert problem.metrics(x, problem.y_star(x))["selection_gap"].abs().max() < 1e-12


# -- P1′ --------------------------------------------------------------------------------


def test_hat_kink_is_not_differentiable_at_zero():
    problem = make("hat_kink")
    zero = torch.zeros(1, 1)
    h = 1e-3

    def one_sided(sign):  # Richardson-extrapolated one-sided difference, exact for quadratics
        def diff(step):
            return sign * (problem.phi(sign * step * torch.ones(1, 1)) - problem.phi(zero)) / step

        return (2 * diff(h / 2) - diff(h)).item()

    assert abs(one_sided(+1) - (-1.0)) < 1e-8 and abs(one_sided(-1) - 1.0) < 1e-8
    near = torch.tensor([[1e-9], [-1e-9]])
    assert (problem.hypergrad(near)[:, 0] - torch.tensor([-1.0, 1.0])).abs().max() < 1e-8
    # the documented choice at the tie: y*(0) = e1 and the right derivative -1
    assert problem.hypergrad(zero).item() == -1.0
    assert (problem.y_star(zero) - torch.tensor([[1.0, 0.0]])).abs().max() == 0
    assert abs(problem.phi(zero).item() - 0.5) < 1e-15
    # every point of S(0) is optimal: a tie over the whole sphere
    f_on_sphere = problem.f(zero.expand(512, 1), problem.sample_solution_set(zero, 512)[0])
    assert (f_on_sphere - 0.5).abs().max() < 1e-12


def test_hat_kink_phi_closed_form_and_minima():
    problem = make("hat_kink", dim_y=3)
    x = torch.linspace(-2.5, 2.5, 11)[:, None]
    assert (problem.phi(x) - 0.5 * (x[:, 0].abs() - 1) ** 2).abs().max() < 1e-15
    minima = torch.tensor([[1.0], [-1.0]])
    assert problem.hypergrad(minima).abs().max() == 0 and problem.phi(minima).abs().max() == 0


# -- P3 ---------------------------------------------------------------------------------


def riemannian_descent(problem, x, u, steps=4000):
    """Projected gradient on the unit sphere for u -> f(x, c + r u)."""
    mv = problem.moving(x)
    u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    for _ in range(steps):
        gu = mv.r[:, None] * problem.grad_y_f(x, mv.c + mv.r[:, None] * u)
        rgrad = gu - (gu * u).sum(-1, keepdim=True) * u
        u = u - 0.2 * rgrad
        u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    return u, rgrad


@pytest.mark.parametrize("dim_y", [3, 6])
def test_hat_trs_exact_selection_beats_dense_sampling(dim_y):
    problem = make("hat_trs", dim_y=dim_y)
    x = points(problem, n=4)
    pts = problem.sample_solution_set(x, 200_000)
    xs = x[:, None].expand(-1, pts.shape[1], -1)
    best_sample = problem.f(xs.reshape(-1, x.shape[1]), pts.reshape(-1, dim_y)).view(4, -1)
    gap = best_sample.min(-1).values - problem.phi(x)
    assert gap.min() >= -1e-12  # nothing sampled beats the exact selection
    if dim_y == 3:  # dense enough on S^2 to come close
        assert gap.max() < 1e-3
    # KKT of the trust-region subproblem: (K + mu I) u = -b with K + mu I >= 0
    mv, u, t = problem.trs(x)
    b = (mv.c @ problem.K + problem.wvec) / mv.r[:, None]
    mu = t - problem.eig[0]
    assert (u @ problem.K + mu[:, None] * u + b).abs().max() < 1e-12
    assert t.min() > 0.1  # strictly inside: unique, non-degenerate selection


def test_hat_trs_has_a_local_non_global_minimiser():
    """From the pole opposite the selection, projected gradient converges to a worse local
    minimiser whose multiplier lies in (-lambda_2, -lambda_1) (Martínez 1994)."""
    problem = make("hat_trs")
    x = problem.init_x(BatchedRNG(torch.arange(4), 1))
    q1 = problem.Q[:, 0].expand(4, -1)
    _, u_global, _ = problem.trs(x)
    start = torch.where((u_global * q1).sum(-1, keepdim=True) < 0, q1, -q1)
    u, rgrad = riemannian_descent(problem, x, start + 0.05)
    mv = problem.moving(x)
    y_local = mv.c + mv.r[:, None] * u
    assert rgrad.abs().max() < 1e-10  # stationary on S(x)
    assert (problem.f(x, y_local) - problem.phi(x)).min() > 1e-2  # and worse than the global
    b = (mv.c @ problem.K + problem.wvec) / mv.r[:, None]
    mu = -((u @ problem.K + b) * u).sum(-1)
    assert ((mu > -problem.eig[1]) & (mu < -problem.eig[0])).all()
    # a local minimiser: the Riemannian Hessian P (K + mu I) P is positive on the tangent space
    eye = torch.eye(problem.dim_y)
    proj = eye - u[:, :, None] * u[:, None, :]
    hess = proj @ (problem.K + mu[:, None, None] * eye) @ proj
    eig = torch.linalg.eigvalsh(hess)  # one zero eigenvalue along u, the rest tangent
    assert (eig[:, 1:].min(-1).values > 1e-3).all() and eig[:, 0].abs().max() < 1e-12
    # the global selection is also what projected gradient finds from a start near it
    u_g, _ = riemannian_descent(problem, x, u_global + 0.05)
    assert (u_g - u_global).abs().max() < 1e-10


def test_hat_trs_hard_case_is_a_tie_between_two_global_minimisers():
    """b~_1 = 0 and |b~_rest / delta_rest| <= 1: t = 0, u~ = (+-tau, -b~_rest/delta_rest)."""
    problem = make("hat_trs", dim_y=3)
    problem.Q = torch.eye(3)  # K diagonal, centre fixed at 0, w~_1 = 0 exactly
    problem.K = torch.diag(problem.eig)
    problem.c_scale = 0.0
    problem.wvec = problem.r0 * torch.tensor([0.0, 0.3, 0.5])
    x = points(problem, n=3)
    mv, u, t = problem.trs(x)
    b_rest = problem.wvec[1:] / mv.r[:, None]
    assert (t == 0).all()
    assert (u[:, 1:] + b_rest / (problem.eig[1:] - problem.eig[0])).abs().max() < 1e-15
    assert (torch.linalg.vector_norm(u, dim=-1) - 1).abs().max() < 1e-15 and (u[:, 0] > 0).all()
    mirror = mv.c + mv.r[:, None] * u * torch.tensor([-1.0, 1.0, 1.0])
    assert (problem.f(x, mirror) - problem.phi(x)).abs().max() < 1e-15  # the tie
    pts = problem.sample_solution_set(x, 100_000)
    best = problem.f(x[:, None].expand(-1, 100_000, -1).reshape(-1, 2), pts.reshape(-1, 3))
    assert (best.view(3, -1).min(-1).values - problem.phi(x)).min() >= -1e-12


# -- P4 ---------------------------------------------------------------------------------


def test_circle_selection_is_the_global_minimum_over_a_dense_angle_grid():
    problem = make("circle_multimodal")
    x = points(problem, n=6)
    theta = torch.linspace(0, 2 * math.pi, 200_001)[:-1]
    vals = problem.big_f(x[:, None].expand(-1, theta.numel(), -1).reshape(-1, 2),
                         theta.repeat(6)).view(6, -1)  # fmt: skip
    exact = problem.big_f(x, problem.theta_star(x))
    assert (vals.min(-1).values - exact).min() >= -1e-12
    assert (vals.min(-1).values - exact).max() < 1e-8
    n_local = ((vals < vals.roll(1, -1)) & (vals <= vals.roll(-1, -1))).sum(-1)
    assert (n_local >= 2).all()  # multimodal at every one of these x


def test_circle_phi_star_is_the_best_stationary_value():
    problem = make("circle_multimodal")
    x = problem.init_x(BatchedRNG(torch.arange(32), 1))
    for _ in range(1000):
        x = x - 0.3 * problem.hypergrad(x)
    assert torch.linalg.vector_norm(problem.hypergrad(x), dim=-1).max() < 1e-10
    assert (problem.phi(x) - problem.phi_star).min() > -1e-12
    assert (problem.phi(x) - problem.phi_star).min() < 1e-10
    grid = 3 * torch.rand(4000, 2, generator=torch.Generator().manual_seed(5)) - 1.5
    assert (problem.phi(grid) - problem.phi_star).min() > -1e-12


# -- all --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "params"), CASES)
def test_initial_points_and_description(name, params):
    problem = make(name, **params)
    rng = BatchedRNG(torch.arange(8), 1)
    x0, y0 = problem.init_x(rng), problem.init_y(rng)
    mv = problem.moving(x0)
    # y0 is at least r0/4 from the critical centre c(x0), where grad_y g = 0 but g > g*
    gap = torch.linalg.vector_norm(y0[:, : problem.ka] - mv.c, dim=-1) - 0.25 * problem.r0
    assert gap.min() > -1e-12
    assert problem.regime == "manifold"
    assert problem.description().startswith(("P1", "P3", "P4"))
    assert Problem.grad_y_g(problem, x0, problem.y_star(x0)).abs().max() < 1e-12


@pytest.mark.parametrize("dim_y,k", [(16, -1), (16, 1), (64, -1), (64, 1), (64, 7), (64, 15)])
def test_hat_smoothness_constants_do_not_depend_on_d_and_k(dim_y, k):
    """The docstring's constants: ||G|| = ||B|| = ||C|| = ||E|| = 1 exactly (Gaussian B of
    variance 1/m gave ||B||^2 = 5.9 at d = 16 and 22.6 at d = 64), |w| = 1, and at random x
    the autodiff Hessian of f has norm <= 3 + lam, ||J_c|| <= eps_c r0 / sqrt(m) and
    ||J_e|| <= eps_e."""
    problem = make("hat", dim_y=dim_y, k=k)
    for name in ("G", "B", "C", "E"):
        mat = getattr(problem, name)
        if mat.numel():
            assert abs(torch.linalg.matrix_norm(mat, 2).item() ** 2 - 1.0) < 1e-12, name
    assert abs(torch.linalg.vector_norm(problem.w).item() - 1.0) < 1e-14
    m, dy = problem.dim_x, problem.dim_y
    gen = torch.Generator().manual_seed(dim_y + k)
    for _ in range(3):
        x = 2.0 * torch.randn(1, m, generator=gen, dtype=torch.float64)
        y = torch.randn(1, dy, generator=gen, dtype=torch.float64)
        z = torch.cat([x, y], dim=-1)[0]
        hess = torch.func.hessian(lambda v: problem.f(v[None, :m], v[None, m:])[0])(z)
        assert torch.linalg.matrix_norm(hess, 2) <= 3.0 + problem.lam + 1e-12
        jc = jacfwd(lambda v: problem.moving(v[None]).c[0])(x[0])
        assert torch.linalg.matrix_norm(jc, 2) <= problem.eps_c * problem.r0 / math.sqrt(m) + 1e-12
        if problem.kb:
            je = jacfwd(lambda v: problem.moving(v[None]).e[0])(x[0])
            assert torch.linalg.matrix_norm(je, 2) <= problem.eps_e + 1e-12


def _fresh(problem, x, y, v):
    """Every lower-level oracle and the ground truth, each on fresh copies of its inputs
    (no reuse possible)."""
    c = lambda t: t.clone()  # noqa: E731
    return [
        problem.grad_y_g(c(x), c(y)),
        problem.grad_x_g(c(x), c(y)),
        problem.hvp_yy_g(c(x), c(y), c(v)),
        problem.cross_xy_g(c(x), c(y), c(v)),
        problem.grad_x_f(c(x), c(y)),
        problem.phi(c(x)),
        problem.hypergrad(c(x)),
    ]


def test_hat_reuses_pieces_only_at_the_same_unmodified_tensors():
    """``last_call``: repeated calls at one ``(x, y)`` give a fresh call's numbers bit for
    bit; an in-place change of ``x`` or ``y`` is seen (not served stale); and gradients
    through the oracles still flow when ``x`` requires them."""
    problem = make("hat", dim_x=3, dim_y=6, k=2)
    x = points(problem)
    y, v = torch.randn(2, x.shape[0], problem.dim_y, generator=torch.Generator().manual_seed(5))
    assert problem.moving(x) is problem.moving(x)  # reused
    for _ in range(2):  # the second round hits the memo everywhere
        got = [
            problem.grad_y_g(x, y),
            problem.grad_x_g(x, y),
            problem.hvp_yy_g(x, y, v),
            problem.cross_xy_g(x, y, v),
            problem.grad_x_f(x, y),
            problem.phi(x),
            problem.hypergrad(x),
        ]
        for a, b in zip(got, _fresh(problem, x, y, v)):
            assert torch.equal(a, b)
    before = problem.grad_y_g(x, y)
    x.mul_(1.1)  # in place: same object, new version
    y.add_(0.05)
    after = problem.grad_y_g(x, y)
    assert not torch.equal(after, before)
    assert torch.equal(after, _fresh(problem, x, y, v)[0])
    with torch.inference_mode():  # inference tensors carry no version: computed afresh
        xi, yi = x.clone(), y.clone()
        assert torch.equal(problem.grad_y_g(xi, yi), after)
    # autodiff through a memoised piece: d/dx of <grad_y g, v> is the cross product
    problem.grad_y_g(x, y)  # fills the memo at this x without a graph
    x.requires_grad_(True)
    (dx,) = torch.autograd.grad((problem.grad_y_g(x, y) * v).sum(), x)
    torch.testing.assert_close(dx, problem.cross_xy_g(x.detach(), y, v), rtol=1e-12, atol=1e-12)
