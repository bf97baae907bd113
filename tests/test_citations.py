"""Docstrings, configs and the README cite papers themselves (authors, venue, arXiv id,
section), never a file a user of bibench does not have: the maintainers' research notes
(``research/*.md`` and their section numbers), the text copies of papers (``papers/0xx``),
or an internal issue's note."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("bibench", "problems", "algorithms", "configs", "README.md", "pyproject.toml")
SUFFIXES = {".py", ".yml", ".yaml", ".md", ".toml", ".txt", ".cfg", ".rst"}

UNFOLLOWABLE = re.compile(
    r"research/[\w.-]*"  # the notes folder
    r"|\b(?:manifold|unibio|benchopt|ecosystem|SPEC)\.md\b"  # the notes by name
    r"|\.md\s*§"  # a section of a markdown note
    r"|\bpapers/0\d\d"  # the text copies of papers ...
    r"|\b0\d\d_[0-9a-f]{16}\.txt\b"  # ... by file name
    r"|/work/"  # the maintainers' machine
    r"|\bissue \d+\b",  # the internal issue tracker
    re.IGNORECASE,
)


def shipped_files() -> list[Path]:
    files: list[Path] = []
    for name in SHIPPED:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        else:
            files += sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES)
    return files


def offending_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
            for i, line in enumerate(text.splitlines(), 1) if UNFOLLOWABLE.search(line)]


def test_scan_covers_the_shipped_tree():
    files = {p.relative_to(ROOT).as_posix() for p in shipped_files()}
    # one file of each kind the scan must read
    for name in ("README.md", "bibench/analysis/profiles.py", "problems/mexican_hat.py",
                 "configs/hypercleaning.yml", "configs/papers/unibio.yml"):
        assert name in files


def test_shipped_tree_cites_no_unfollowable_file():
    bad = [line for path in shipped_files() for line in offending_lines(path)]
    assert not bad, "cite the paper itself instead of:\n" + "\n".join(bad)


@pytest.mark.parametrize("line", [
    "* **aRT** (COCO's average runtime, research/ecosystem.md §2.2) of a solver",
    "see ecosystem.md §2.2",
    "the recovered spec in unibio.md",
    "(SPEC.md, deliverable 3)",
    "as in papers/004 (UniBiO)",
    "see 004_13b4bc4e3c2852b0.txt",
    "read /work/shared/research",
    "# full sums (stocbio with minibatches: see the closing note of issue 6)",
])
def test_pattern_flags_an_unfollowable_citation(line):
    assert UNFOLLOWABLE.search(line)


@pytest.mark.parametrize("line", [
    'Hansen, Auger, Brockhoff, Tušar & Tušar, "COCO: Performance Assessment", '
    "arXiv:1605.03560, Sec. 4",
    "UniBiO (ICLR 2026, arXiv 2603.00027), Sec. 6",
    "Experiment ``chen`` (``configs/papers/chen.yml``)",
    "from bibench.papers.core import Claim",
    "``report.md``: the leaderboard, then the options, the notes",
    "(out / \"tune_report.md\").write_text(text)",
])
def test_pattern_passes_a_followable_citation(line):
    assert not UNFOLLOWABLE.search(line)
