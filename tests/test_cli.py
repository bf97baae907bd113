"""The command line itself: the import budget of ``--help`` and the near-miss suggestions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bibench.cli import command_help, command_names, main
from bibench.errors import UserError
from bibench.params import unknown_names
from bibench.registry import ALGORITHMS, discover

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "matplotlib", "scipy", "pyarrow")


def loaded_after(argv: list[str]) -> tuple[list[str], str]:
    """Heavy modules in ``sys.modules`` after ``main(argv)`` in a fresh interpreter, and
    what it printed."""
    code = (
        "import json, sys\n"
        "from bibench.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


@pytest.mark.parametrize("argv", [["--help"], ["--version"], []])
def test_top_level_help_and_version_import_nothing_heavy(argv):
    loaded, _ = loaded_after(argv)
    assert loaded == []


def test_help_lists_every_command_with_its_own_help_line():
    _, out = loaded_after(["--help"])
    names = command_names()
    assert {"report", "run", "show", "list", "figures"} <= set(names)
    for name in names:
        assert f"{name}" in out and command_help(name) in out
    # read from the source, not the docstring: report's add_parser help
    assert command_help("report") == "figures and tables of a results folder"


def test_version_prints_the_package_version():
    from bibench import __version__

    _, out = loaded_after(["--version"])
    assert out == f"bibench {__version__}"


def test_report_help_imports_nothing_heavy():
    loaded, out = loaded_after(["report", "--help"])
    assert "--algorithms" in out and "--html" in out
    assert loaded == []


def test_suggestion_names_the_closest_and_all_unknowns():
    msg = unknown_names("key", ["sed", "budgt", "zzz"], ["seeds", "budget", "out"], "in a.yml")
    assert msg == (
        "unknown keys 'budgt' (did you mean 'budget'?), 'sed' (did you mean 'seeds'?), 'zzz'"
        " in a.yml (known: budget, out, seeds)"
    )
    one = unknown_names("problem", ["quadratc"], ["quadratic", "hat"])
    assert one == "unknown problem 'quadratc' (did you mean 'quadratic'?) (known: hat, quadratic)"


def test_registry_suggests_aid_cg():
    discover()
    with pytest.raises(UserError, match=r"unknown algorithm 'aid_gc' \(did you mean 'aid_cg'\?\)"):
        ALGORITHMS.get("aid_gc")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--problems", "quadratic", "--algorithms", "aid_gc,stocbo"],
         ["unknown algorithms 'aid_gc' (did you mean 'aid_cg'?), 'stocbo' (did you mean "
          "'stocbio'?)"]),
        (["--problems", "quadratic", "--algorithms", "aid_cg[lr_xx=1,n_gc=2]"],
         ["unknown parameters 'lr_xx' (did you mean 'lr_x'?), 'n_gc' (did you mean 'n_cg'?)"
          " for algorithm aid_cg"]),
    ],
)  # fmt: skip
def test_run_reports_every_unknown_name_with_a_suggestion(tmp_path, capsys, args, needles):
    code = main(["run", "--quiet", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "o").exists()


def test_config_reports_every_unknown_key(tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("problems: quadratic\nalgorithms: aid_cg\nsed: 2\nbudgt: 10\n")
    code = main(["run", "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown keys 'budgt' (did you mean 'budget'?), 'sed' (did you mean 'seeds'?)" in err


def test_unknown_command_gets_a_suggestion(capsys):
    assert main(["reprot", "--results", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("bibench: error: unknown command 'reprot' (did you mean 'report'?)")
