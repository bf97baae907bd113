"""``bibench bench``: its numbers are consistent with its own measurements and with the
hand-derived oracle counts of the workload."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bibench.bench import batch_sizes, parse_workload
from bibench.cli import main

WORKLOAD = "quadratic[dim_y=4]:aid_cg[n_inner=2,n_cg=2]"
STEPS = 5


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    config = tmp / "tiny.yml"
    config.write_text(
        "problems: {quadratic: {dim_y: 4}}\nalgorithms: {aid_cg: {}}\nseeds: 2\nbudget: 300\n"
    )
    out = tmp / "out"
    code = main(
        [
            "bench",
            "--device",
            "cpu",
            "--workloads",
            WORKLOAD,
            "--steps",
            str(STEPS),
            "--max-batch",
            "4",
            "--repeat",
            "1",
            "--overhead-batches",
            "2",
            "--config",
            str(config),
            "--out",
            str(out),
            "--results",
            str(tmp / "kept"),
        ]
    )
    assert code == 0
    return out


def test_step_times_are_per_run_per_step_and_speedups_their_ratio(bench_out):
    df = pd.read_csv(bench_out / "steps.csv")
    assert df["batch"].tolist() == [1, 2, 4]
    assert (df["steps"] == STEPS).all()
    expected = 1e6 * df["run_seconds"] / (STEPS * df["batch"])
    assert (df["per_run_step_us"] - expected).abs().max() <= 1e-9 * expected.max()
    speedup = df["per_run_step_us"].iloc[0] / df["per_run_step_us"]
    assert (df["speedup_vs_batch_1"] - speedup).abs().max() <= 1e-12 * speedup.max()


def test_overhead_counts_the_same_oracle_calls_and_divides_its_own_times(bench_out):
    (row,) = json.loads((bench_out / "bench.json").read_text())["overhead"]
    # aid_cg per step: T = 2 grad_y_g, one grad_x_f and grad_y_f, N + 1 = 3 HVPs (warm CG
    # start), one cross product
    assert row["calls"] == {
        "f": 0,
        "g": 0,
        "grad_x_f": STEPS,
        "grad_y_f": STEPS,
        "grad_x_g": 0,
        "grad_y_g": 2 * STEPS,
        "hvp_yy_g": 3 * STEPS,
        "cross_xy_g": STEPS,
    }
    assert row["oracle_calls_per_run"] == 8 * STEPS and row["batch"] == 2
    assert row["overhead"] == pytest.approx(row["run_seconds"] / row["bare_loop_seconds"])
    assert row["raw_oracle_share"] == pytest.approx(row["raw_oracle_seconds"] / row["run_seconds"])
    # the run makes these calls and more (the algorithm's arithmetic, the harness)
    assert row["run_over_raw_oracles"] >= 1


def test_default_benchmark_ran_every_run_of_the_config(bench_out):
    default = json.loads((bench_out / "bench.json").read_text())["default"]
    assert default["runs"] == 2 and default["statuses"] == {"done": 2}
    assert default["wall_seconds"] > 0
    kept = pd.read_parquet(bench_out.parent / "kept")  # --results keeps the timed run's rows
    assert kept["run_id"].nunique() == 2 and kept["oracle_calls"].max() >= 300


def test_default_benchmark_refuses_a_results_folder_with_files(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    assert main(["bench", "--parts", "default", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"bibench: error: --results {tmp_path} is not empty: a timed run starts from nothing")


def test_batch_sizes_double_up_to_the_cap():
    assert batch_sizes(1) == [1]
    assert batch_sizes(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert batch_sizes(100) == [1, 2, 4, 8, 16, 32, 64, 100]


def test_workload_parses_both_parameter_lists():
    assert parse_workload(WORKLOAD) == (
        "quadratic",
        {"dim_y": 4},
        "aid_cg",
        {"n_inner": 2, "n_cg": 2},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parts", "steps,speed"], "unknown bench part 'speed'"),
        (["--workloads", "quadratic"], "malformed workload 'quadratic'"),
        (["--workloads", "quadratic:"], "malformed workload 'quadratic:'"),
        (["--workloads", "quadratic:nope"], "unknown algorithm 'nope'"),
        (["--steps", "0"], "bad value for --steps"),
        (["--device", "cuda:7"], "CUDA is not available"),
    ],
)
def test_bad_input_is_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code = main(["bench", *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


@pytest.fixture(scope="module")
def limit_memory_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_limit")
    code = main(
        [
            "bench", "--device", "cpu", "--parts", "limit,memory", "--repeat", "1",
            "--limit-workloads", "quadratic[dim_y=4]:aid_cg[n_inner=2,n_cg=2],hat:soba",
            "--limit-batches", "1,3", "--limit-steps", str(STEPS),
            "--memory-workload", "quadratic[dim_y=4,n_samples=16,batch_size=4]:soba",
            "--memory-batches", "1,3", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    return json.loads((out / "bench.json").read_text())


def test_limit_ratio_is_the_run_over_the_fused_loop(limit_memory_out):
    rows = limit_memory_out["limit"]
    assert [(r["workload"].split(":")[1][:6], r["batch"]) for r in rows] == [
        ("aid_cg", 1), ("aid_cg", 3), ("soba", 1), ("soba", 3)
    ]  # fmt: skip
    for r in rows:  # one repetition: the median ratio is that repetition's
        assert r["ratio"] == pytest.approx(r["run_seconds"] / r["fused_seconds"])
        assert r["ratio_min"] == r["ratio"] == r["ratio_max"]
        assert r["steps"] == STEPS and r["status"] == "done"


def test_memory_rows_are_peaks_per_run_and_growth_over_batch_one(limit_memory_out):
    one, three = limit_memory_out["memory"]
    assert (one["batch"], three["batch"]) == (1, 3)
    assert one["peak_bytes"] > 2**20  # a python process with torch: megabytes at least
    assert three["peak_per_run_mb"] == pytest.approx(three["peak_bytes"] / 2**20 / 3)
    growth = (three["peak_bytes"] - one["peak_bytes"]) / 2 / 2**20
    assert three["growth_per_run_mb"] == pytest.approx(growth) and one["growth_per_run_mb"] == 0


def test_limit_refuses_a_workload_without_a_fused_loop(capsys, tmp_path):
    code = main(["bench", "--parts", "limit", "--limit-workloads", "quadratic:itd",
                 "--device", "cpu", "--out", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no fused loop for algorithm 'itd'" in err[0]
