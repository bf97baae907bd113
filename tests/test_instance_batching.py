"""Problem instances in one batch (Problem.stack): the rows equal those of each instance
run on its own, every row keeps its own labels, and the grouping forms the batches
counted by hand."""

from __future__ import annotations

import dataclasses
import itertools

import pandas as pd
import pytest
import torch

from bibench import executors, store
from bibench.config import Budget, RunConfig, expand
from bibench.registry import get_problem
from bibench.rng import BatchedRNG
from bibench.runner import STREAM_INIT, batch_key, execute_batch, memory_per_run, plan
from bibench.sweep import run_sweep, shard_specs

TIMING = ["wall_time", "batch_size", "hostname"]
INSTANCES = [0, 1, 2]
SEEDS = [0, 1]


def _specs(problem, params, algorithm, hyper=None, budget=600, seeds=SEEDS):
    cfg = RunConfig(
        problems=[(problem, params)],
        algorithms=[(algorithm, hyper or {})],
        seeds=list(seeds),
        budget=Budget(max_calls=budget),
    )
    return expand(cfg)


def _spy_batches(monkeypatch) -> list[list[int]]:
    """The instance seeds of every batch the serial executor runs."""
    seen: list[list[int]] = []
    real = executors.execute_batch

    def spy(specs, *args, **kwargs):
        seen.append([s.problem_params.seed for s in specs])
        return real(specs, *args, **kwargs)

    monkeypatch.setattr(executors, "execute_batch", spy)
    return seen


def _rows(out) -> pd.DataFrame:
    return store.load(out).sort_values(["run_id", "step"]).reset_index(drop=True)


def _assert_same_rows(a: pd.DataFrame, b: pd.DataFrame, tol: float = 1e-12) -> None:
    a, b = a.drop(columns=TIMING), b.drop(columns=TIMING)
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    num = [c for c in a.select_dtypes("number").columns if c in b]
    diff = (a[num] - b[num]).abs()
    both_nan = a[num].isna() & b[num].isna()
    assert ((diff <= tol) | both_nan).all().all(), diff.max()[diff.max() > tol]
    other = a.drop(columns=num)
    assert (other.fillna("") == b.drop(columns=num).fillna("")).all().all()


def _grouped_and_apart(tmp_path, monkeypatch, specs):
    """Rows of one sweep over every instance, and of one sweep per instance (another
    folder); the instance seeds of the batches each formed."""
    seen = _spy_batches(monkeypatch)
    run_sweep(specs, tmp_path / "grouped", progress=False)
    grouped_batches = list(seen)
    seen.clear()
    for seed in INSTANCES:
        mine = [s for s in specs if s.problem_params.seed == seed]
        run_sweep(mine, tmp_path / "apart", progress=False)
    return _rows(tmp_path / "grouped"), _rows(tmp_path / "apart"), grouped_batches, list(seen)


# Noise goes to the Neumann-series and single-loop methods: AID-CG under oracle noise is
# not invariant to 1e-12 even between the seeds of one instance (quadratic, dim_y = 6:
# 5e-4 between a batch of two seeds and each seed alone, before stacking existed too),
# presumably as CG divides by noisy curvatures and so amplifies rounding.
CASES = {
    "deterministic": ({}, "aid_cg", {}),
    "noise": ({"noise_std": 0.1}, "stocbio", {}),
    "minibatch": ({"batch_size": 8}, "soba", {}),
    "minibatch+noise": ({"batch_size": 8, "noise_std": 0.05}, "stocbio", {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_quadratic_instances_in_one_batch_give_the_rows_of_each_alone(tmp_path, monkeypatch, case):
    params, algorithm, hyper = CASES[case]
    specs = _specs("quadratic", {"seed": INSTANCES, **params}, algorithm, hyper)
    assert len(specs) == len(INSTANCES) * len(SEEDS)
    grouped, apart, grouped_batches, apart_batches = _grouped_and_apart(
        tmp_path, monkeypatch, specs
    )
    # one batch of all six runs, against one batch of two per instance
    assert [sorted(b) for b in grouped_batches] == [[0, 0, 1, 1, 2, 2]]
    assert sorted(map(sorted, apart_batches)) == [[0, 0], [1, 1], [2, 2]]
    assert set(grouped["batch_size"]) == {6} and set(apart["batch_size"]) == {2}
    # same run ids both ways, and every metric, count and label equal to 1e-12
    assert set(grouped["run_id"]) == {s.run_id for s in specs}
    _assert_same_rows(grouped, apart)

    # each row is labelled with its own run, and its ground truth is its own instance's:
    # the instances' optima differ visibly, so a swap of instances between runs fails
    cls = get_problem("quadratic")
    by_id = {s.run_id: s for s in specs}
    instances = {s.problem_params.seed: s.problem_params for s in specs}
    phi_star = {seed: cls(params).phi_star for seed, params in instances.items()}
    assert min(abs(a - b) for a, b in itertools.combinations(phi_star.values(), 2)) > 1.0
    for run_id, rows in grouped.groupby("run_id"):
        spec = by_id[run_id]
        assert set(rows["prob_seed"]) == {spec.problem_params.seed}
        assert set(rows["seed"]) == {spec.seed}
        assert set(rows["config_id"]) == {spec.config_id}
        assert set(rows["provenance"]) == {spec.provenance}
        assert set(rows["label"]) == {spec.label()}
        implied = (rows["phi"] - rows["phi_gap"]).to_numpy()
        assert abs(implied - phi_star[spec.problem_params.seed]).max() < 1e-9
        problem = cls(spec.problem_params)
        x0 = problem.init_x(BatchedRNG(torch.tensor([spec.seed]), STREAM_INIT))
        first = rows[rows["step"] == 0].iloc[0]
        assert abs(first["phi"] - problem.phi(x0).item()) < 1e-12

    # resume across groupings: each folder already holds every run, nothing is rerun
    for folder in ("grouped", "apart"):
        again = run_sweep(specs, tmp_path / folder, progress=False)
        assert (again.skipped, again.executed) == (len(specs), 0)
    assert len(_rows(tmp_path / "apart")) == len(apart)


def test_a_shape_changing_parameter_or_a_problem_that_stacks_nothing_keeps_separate_batches():
    specs = _specs("quadratic", {"seed": [0, 1], "dim_y": [4, 5]}, "aid_cg")
    batches = plan(specs)
    assert sorted(len(b) for b in batches) == [4, 4]  # by dim_y; both seeds in each
    for b in batches:
        assert len({s.problem_params.dim_y for s in b}) == 1
        assert sorted(s.problem_params.seed for s in b) == [0, 0, 1, 1]
    assert len(plan(specs, max_batch=3)) == 4  # a cap still cuts stacked batches
    # ``hat`` declares no stack_params: one batch per instance seed, as before
    hat = _specs("hat", {"seed": [0, 1, 2]}, "aid_cg")
    assert sorted(len(b) for b in plan(hat)) == [2, 2, 2]
    with pytest.raises(ValueError, match="do not share a batch_key"):
        execute_batch(hat)


def test_shards_split_stacked_groups_and_their_union_is_the_grid():
    specs = _specs("quadratic", {"seed": INSTANCES}, "aid_cg")
    keys = {batch_key(s) for s in specs}
    assert len(keys) == 1
    shards = [shard_specs(specs, i, 2) for i in (1, 2)]
    assert sorted(len(s) for s in shards) == [3, 3]
    assert sorted(s.run_id for part in shards for s in part) == sorted(s.run_id for s in specs)


def test_for_batch_and_stack_refuse_what_cannot_share_a_batch():
    cls = get_problem("quadratic")
    a, b = cls.Params(seed=0), cls.Params(seed=1, dim_y=4)
    with pytest.raises(ValueError, match="differ in dim_y, seed; only seed may differ"):
        cls.for_batch([a, b])
    with pytest.raises(ValueError, match=r"quadratic.A_i has shapes"):
        cls.stack([cls(a), cls(dataclasses.replace(a, dim_y=4))])
    with pytest.raises(NotImplementedError, match="does not stack"):
        get_problem("hat").stack([get_problem("hat")()] * 2)
    # all runs on one instance: the shared, unstacked problem (no copy of the data per run)
    assert cls.for_batch([a, a]).stacked == 0
    stacked = cls.for_batch([a, cls.Params(seed=1), a])
    assert stacked.stacked == 3 and stacked.A_i.shape == (3, 64, 10, 10)
    assert torch.equal(stacked.A_i[2], cls(a).A_i)
    assert torch.equal(stacked.A_i[1], cls(cls.Params(seed=1)).A_i)


def test_memory_per_run_of_a_stacked_batch_counts_each_runs_data():
    (spec,) = _specs("quadratic", {"batch_size": 8}, "soba", seeds=[0])
    problem = get_problem("quadratic")(spec.problem_params)
    data = sum(getattr(problem, n).nbytes for n in problem.stack_data
               if isinstance(getattr(problem, n), torch.Tensor))  # fmt: skip
    extra = memory_per_run(spec, stacked=True) - memory_per_run(spec)
    # each run's copy of the data, plus the stacked arithmetic's few index tensors
    assert data <= extra < 1.05 * data


# a small wine instance; a reference solve to 1e-13 (at the default 1e-10 the reference
# point of a run is exact to ~1e-11 only, whatever the grouping, see problems/hypercleaning.py)
CLEANING = {"dataset": "wine", "n_train": 60, "n_val": 40, "ref_tol": 1e-13}
CLEANING_CASES = {
    "full sums": ({}, "aid_cg", {"lr_x": 100.0, "lr_y": 10.0, "n_inner": 5, "n_cg": 5}),
    "epoch minibatches": ({"batch_size": 20}, "soba", {"lr_x": 100.0, "lr_y": 5.0}),
}


@pytest.mark.parametrize("case", list(CLEANING_CASES))
def test_hypercleaning_splits_in_one_batch_give_the_rows_of_each_alone(
    tmp_path, monkeypatch, case
):
    params, algorithm, hyper = CLEANING_CASES[case]
    specs = _specs("hypercleaning", {"seed": INSTANCES, **CLEANING, **params}, algorithm, hyper,
                   budget=300)  # fmt: skip
    grouped, apart, grouped_batches, apart_batches = _grouped_and_apart(
        tmp_path, monkeypatch, specs
    )
    assert [sorted(b) for b in grouped_batches] == [[0, 0, 1, 1, 2, 2]]
    assert sorted(map(sorted, apart_batches)) == [[0, 0], [1, 1], [2, 2]]
    _assert_same_rows(grouped, apart)

    # every run is measured on its own split: at step 0 (lambda = 0 for every run) a
    # row's Phi is its own instance's validation loss at the uniform-weights solution,
    # which differs visibly between the splits
    cls = get_problem("hypercleaning")
    by_id = {s.run_id: s for s in specs}
    phi0 = {}
    for spec in specs:
        if spec.problem_params.seed not in phi0:
            problem = cls(spec.problem_params)
            phi0[spec.problem_params.seed] = problem.phi(torch.zeros(1, problem.dim_x)).item()
    assert min(abs(a - b) for a, b in itertools.combinations(phi0.values(), 2)) > 1e-3
    for run_id, rows in grouped.groupby("run_id"):
        spec = by_id[run_id]
        assert set(rows["prob_seed"]) == {spec.problem_params.seed}
        assert set(rows["seed"]) == {spec.seed}
        assert set(rows["config_id"]) == {spec.config_id}
        assert set(rows["status"]) == {"done"}
        first = rows[rows["step"] == 0].iloc[0]
        assert abs(first["phi"] - phi0[spec.problem_params.seed]) < 1e-10
