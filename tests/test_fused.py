"""The hand-fused loops compute the iterates bibench's algorithms compute (so that the
``bench --parts limit`` ratio compares equal work)."""

from __future__ import annotations

import pytest
import torch

from bibench.algorithm import batch_hyper
from bibench.bench import workload_specs
from bibench.fused import fused_loop
from bibench.oracle import Oracle
from bibench.registry import discover, get_algorithm, get_problem
from bibench.rng import BatchedRNG
from bibench.runner import STREAM_ALGORITHM, STREAM_INIT, STREAM_ORACLE

discover([])

WORKLOADS = [
    "quadratic:aid_cg",
    "quadratic:aid_cg[warm_start_v=false,n_cg=3]",
    "quadratic:soba[decay_x=0.6,decay_y=0.4]",
    "hat:aid_cg[lr_y=0.05,lr_x=0.05]",
    "hat:soba[lr_y=0.5]",
]
STEPS, RUNS = 6, 5


def _both(workload: str):
    """bibench's last iterates and the fused loop's, from the same start."""
    specs = workload_specs(workload, RUNS, STEPS)
    first = specs[0]
    problem = get_problem(first.problem)(first.problem_params, "cpu")
    seeds = torch.tensor([s.seed for s in specs])
    init = BatchedRNG(seeds, STREAM_INIT)
    x0, y0 = problem.init_x(init), problem.init_y(init)
    algorithm = get_algorithm(first.algorithm)(batch_hyper([s.hyper for s in specs], "cpu"))
    oracle = Oracle(problem, BatchedRNG(seeds, STREAM_ORACLE))
    state = algorithm.init(problem, oracle, x0, y0, BatchedRNG(seeds, STREAM_ALGORITHM))
    for _ in range(STEPS):
        state = algorithm.step(state)
    x, y = fused_loop(first.algorithm, problem, first.hyper, x0, y0, STEPS)
    return (state.x, state.y), (x, y), x0


@pytest.mark.parametrize("workload", WORKLOADS)
def test_fused_loop_gives_bibench_iterates(workload):
    (bx, by), (fx, fy), x0 = _both(workload)
    assert (bx - x0).abs().max() > 1e-3  # the runs moved: equal iterates are not trivial
    torch.testing.assert_close(fx, bx, rtol=0, atol=1e-12)
    torch.testing.assert_close(fy, by, rtol=0, atol=1e-12)


def test_no_fused_loop_for_stochastic_instances():
    spec = workload_specs("quadratic[batch_size=8]:soba", 1, 1)[0]
    problem = get_problem("quadratic")(spec.problem_params, "cpu")
    x = torch.zeros(1, problem.dim_x)
    with pytest.raises(ValueError, match="no fused loop for problem 'quadratic'"):
        fused_loop("soba", problem, spec.hyper, x, torch.zeros(1, problem.dim_y), 1)
