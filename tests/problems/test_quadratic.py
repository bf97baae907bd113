"""The control problem's closed forms against autodiff, finite differences and pinv."""

from __future__ import annotations

import torch

from bibench.registry import get_problem
from bibench.testing import ground_truth_errors


def test_ground_truth_matches_autodiff_fd_and_pinv():
    cls = get_problem("quadratic")
    for seed in range(3):
        problem = cls(cls.Params(seed=seed, dim_x=4, dim_y=6))
        x = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed))
        errs = ground_truth_errors(problem, x)
        assert max(errs.values()) < 1e-8, errs


def test_phi_star_is_the_minimum_and_the_hessian_of_phi_has_the_declared_spectrum():
    cls = get_problem("quadratic")
    problem = cls(cls.Params(cond_phi=20.0))
    x_star = problem.x_star()[None]
    assert problem.hypergrad(x_star).abs().max() < 1e-12
    assert abs(problem.phi(x_star).item() - problem.phi_star) < 1e-12
    eig = torch.linalg.eigvalsh(problem.M)
    assert abs(eig[0].item() - 1.0) < 1e-10 and abs(eig[-1].item() - 20.0) < 1e-9
    # the lower level is strongly convex with the declared condition number
    a_eig = torch.linalg.eigvalsh(problem.A)
    assert abs(a_eig[-1].item() / a_eig[0].item() - problem.params.cond) < 1e-8


def test_the_instance_does_not_depend_on_torch_default_dtype():
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float32)
        a = get_problem("quadratic")()
    finally:
        torch.set_default_dtype(old)
    b = get_problem("quadratic")()
    tensors = [k for k, v in vars(a).items() if isinstance(v, torch.Tensor)]
    assert tensors and all(torch.equal(getattr(a, k), getattr(b, k)) for k in tensors)
