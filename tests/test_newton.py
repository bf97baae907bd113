r"""bibench/newton.py: damped Newton with per-run Armijo backtracking, and WarmStart.

The test function is :math:`\mathrm{obj}(y) = \sum_j \sqrt{1 + y_j^2}`, minimised at 0,
with :math:`\nabla = y/\sqrt{1+y^2}`, :math:`H = \mathrm{diag}((1+y^2)^{-3/2})`, so the
Newton step is :math:`d = -y(1+y^2)`: from :math:`|y| > 1` a full step overshoots
(:math:`y = 2 \to -8`), near 0 it is :math:`y \to -y^3`. By hand, from :math:`y = 2`:
:math:`t = 1` gives :math:`\sqrt{65} > \sqrt5`, :math:`t = 1/2` gives
:math:`\sqrt{10} > \sqrt5`, :math:`t = 1/4` gives :math:`y = -1/2` and
:math:`\sqrt{5/4} < \sqrt5 - 10^{-4}\cdot\tfrac14\cdot 4\sqrt5`: accepted. From
:math:`y = 1/2` the full step is accepted: :math:`y = -1/8`.
"""

from __future__ import annotations

import torch

from bibench.newton import WarmStart, damped_newton


def obj(y):
    return torch.sqrt(1 + y * y).sum(-1)


def grad(y):
    return y / torch.sqrt(1 + y * y)


def newton_step(y, g):
    # -H^{-1} g on the coordinates of g (all, or the first one with coords)
    yy = y[:, : g.shape[1]]
    return -g * (1 + yy * yy) ** 1.5


def test_one_step_damps_each_run_on_its_own():
    y0 = torch.tensor([[2.0], [0.5]])
    y1 = damped_newton(obj, grad, newton_step, y0, tol=1e-12, max_iter=1)
    # run 0 backtracks to t = 1/4, run 1 keeps its full step
    assert torch.equal(y1, torch.tensor([[-0.5], [-0.125]]))


def test_converges_from_where_a_full_step_diverges():
    y0 = torch.tensor([[2.0, -3.0], [0.5, 10.0]])
    y = damped_newton(obj, grad, newton_step, y0, tol=1e-12, max_iter=100)
    assert torch.linalg.vector_norm(grad(y), dim=-1).max() <= 1e-12
    assert y.abs().max() <= 1e-12


def test_stops_at_once_when_every_gradient_is_below_tol():
    y0 = torch.tensor([[2.0], [0.5]])
    assert damped_newton(obj, grad, newton_step, y0, tol=10.0, max_iter=5) is y0


def test_a_solved_run_takes_no_step_while_another_still_needs_one():
    # run 1 starts at |grad| = 1e-3 / sqrt(1 + 1e-6) < tol = 1e-2: it must stay exactly put
    # (a Newton step would take it to about -1e-9), whatever run 0 still needs
    y0 = torch.tensor([[2.0], [1e-3]], dtype=torch.float64)
    y = damped_newton(obj, grad, newton_step, y0, tol=1e-2, max_iter=1)
    assert y[1, 0].item() == 1e-3 and y[0, 0].item() == -0.5
    alone = damped_newton(obj, grad, newton_step, y0[1:], tol=1e-2, max_iter=1)
    assert torch.equal(alone, y[1:])


def test_coords_move_only_the_masked_coordinates():
    y0 = torch.tensor([[2.0, 3.0]])
    coords = torch.tensor([True, False])
    y = damped_newton(obj, grad, newton_step, y0, tol=1e-12, max_iter=100, coords=coords)
    assert abs(y[0, 0].item()) <= 1e-12
    assert y[0, 1].item() == 3.0  # the gradient there (0.95) does not stop the solve


def test_a_full_step_within_round_off_is_accepted():
    # the objective rises by 2 ulp of 1.0 (4.4e-16, below the 1e-15 relative allowance)
    start = 1e-9

    def flat(y):
        return torch.where(y[:, 0] == start, 1.0, 1.0 + 2 * torch.finfo(y.dtype).eps)

    y = damped_newton(flat, lambda y: y, lambda y, g: -g, torch.tensor([[start]]),
                      tol=0.0, max_iter=1)  # fmt: skip
    assert y.item() == 0.0  # t = 1; without the allowance t would be 2^-40


def test_backtracking_gives_up_after_40_halvings():
    # an ascent direction never satisfies Armijo: the step is taken with t = 2^-40
    y = damped_newton(obj, grad, lambda y, g: g, torch.tensor([[1.0]]), tol=0.0, max_iter=1)
    assert y.item() == 1.0 + 2.0**-40 * (1 / 2**0.5)


def test_warm_start_reuses_and_warm_starts_the_last_solution():
    calls = []

    def solve(x, y0):
        calls.append((x.clone(), y0.clone()))
        return 2 * x[:, :1].expand(-1, 3).clone()

    ws = WarmStart(solve, dim_y=3)
    x1 = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    y1 = ws(x1)
    assert torch.equal(calls[0][1], torch.zeros(2, 3))  # first call: from 0
    assert ws(x1.clone()) is y1 and len(calls) == 1  # same x: from the cache
    x1[0, 0] = 5.0  # the caller mutating its x does not fool the cache
    ws(x1)
    assert len(calls) == 2 and torch.equal(calls[1][1], y1)  # warm start: the last y*
    ws(torch.ones(1, 2))  # another batch shape: from 0 again
    assert torch.equal(calls[2][1], torch.zeros(1, 3))
