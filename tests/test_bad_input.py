"""Bad input is one line naming the culprit, exit status 2, no traceback, and nothing
computed or written: non-finite budgets, bracket values YAML cannot parse or that carry a
tag, an ``--out`` that cannot hold results, and YAML tags that would run code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bibench.cli import main

PLUGIN = '''
"""Lower-level gradient descent that logs every batch it starts (a test plugin)."""
import dataclasses, os
from bibench import Algorithm, HyperParams, State, register_algorithm


@dataclasses.dataclass(frozen=True)
class Hyper(HyperParams):
    lr_y: float = 0.5


@register_algorithm("input_gd")
class InputGD(Algorithm):
    """Lower-level gradient descent only (a test plugin)."""

    Hyper = Hyper

    def init(self, problem, oracle, x0, y0, rng):
        with open(os.environ["INPUT_MARKS"], "a") as fh:
            fh.write("started\\n")
        self.oracle = oracle
        return State(x0, y0)

    def step(self, state):
        return State(state.x, state.y - self.hp.lr_y * self.oracle.grad_y_g(state.x, state.y))
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plugin") / "input_gd.py"
    path.write_text(PLUGIN)
    return path


@pytest.fixture
def marks(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "marks"
    monkeypatch.setenv("INPUT_MARKS", str(path))
    return path


def one_line_error(capsys, argv: list[str]) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("bibench: error: ") and "Traceback" not in err
    return lines[0]


def run_args(out: Path, plugin: Path, *extra) -> list:
    return ["run", "--problems", "quadratic", "--algorithms", "input_gd", "--plugin", plugin,
            "--budget", "50", "--out", out, "--quiet", "--yes", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("yaml_line", "message"),
    [
        ("budget: .nan", "bad value for budget: nan"),
        ("budget: .inf", "bad value for budget: inf"),
        ("max_time: .nan", "bad value for max_time: nan"),
    ],
)
def test_non_finite_budget_in_yaml(yaml_line, message, plugin, marks, tmp_path, capsys):
    cfg = tmp_path / "c.yml"
    out = tmp_path / "out"
    cfg.write_text(f"problems: quadratic\nalgorithms: input_gd\nout: {out}\n{yaml_line}\n")
    line = one_line_error(capsys, ["run", "--config", cfg, "--plugin", plugin, "--quiet",
                                   "--yes"])  # fmt: skip
    assert message in line
    assert not marks.exists() and not out.exists()


def test_nan_max_time_flag(plugin, marks, tmp_path, capsys):
    out = tmp_path / "out"
    line = one_line_error(capsys, run_args(out, plugin, "--max-time", "nan"))
    assert "bad value for max_time: nan" in line
    assert not marks.exists() and not out.exists()


@pytest.mark.parametrize(
    ("algorithms", "message"),
    [
        ("input_gd[lr_y={]", "malformed value '{' for algorithms parameter 'lr_y'"),
        ("input_gd[lr_y=!!python/name:os.system]",
         "malformed value '!!python/name:os.system' for algorithms parameter 'lr_y'"),
        ("input_gd[lr_y=!!python/object/apply:os.system [touch PWNED]]",
         "could not determine a constructor for the tag"),
    ],
)  # fmt: skip
def test_bracket_values_yaml_rejects(algorithms, message, plugin, marks, tmp_path, capsys,
                                     monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = run_args(out, plugin)
    argv[argv.index("input_gd")] = algorithms
    assert message in one_line_error(capsys, argv)
    assert not marks.exists() and not out.exists() and not (tmp_path / "PWNED").exists()


def test_a_python_tag_in_a_config_file_runs_nothing(plugin, marks, tmp_path, capsys,
                                                    monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yml"
    cfg.write_text("problems: !!python/object/apply:os.system ['touch PWNED']\n"
                   "algorithms: input_gd\n")  # fmt: skip
    line = one_line_error(capsys, ["run", "--config", cfg, "--plugin", plugin, "--quiet"])
    assert f"malformed YAML in {cfg} line 1" in line and "python/object/apply" in line
    assert not (tmp_path / "PWNED").exists() and not marks.exists()


def test_out_that_is_a_file(plugin, marks, tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("not a folder")
    line = one_line_error(capsys, run_args(out, plugin))
    assert line == f"bibench: error: --out {out} is a file, not a folder"
    assert out.read_text() == "not a folder" and not marks.exists()


def test_out_under_a_file(plugin, marks, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "sub" / "out"
    line = one_line_error(capsys, run_args(out, plugin))
    assert line == f"bibench: error: --out {out} lies under {blocker}, which is a file"
    assert blocker.read_text() == "x" and not marks.exists()


def test_out_not_writable(plugin, marks, tmp_path, capsys):
    if os.geteuid() == 0:  # root writes through permissions: sysfs refuses new folders
        out = Path("/sys/bibench-test-out")
        if not Path("/sys/kernel").is_dir():
            pytest.skip("no sysfs to fail to write to")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        out = folder / "out"
    line = one_line_error(capsys, run_args(out, plugin))
    assert line.startswith(f"bibench: error: --out {out} is not writable: ")
    assert not out.exists() and not marks.exists()
