"""The ``bibench`` command line. Each subcommand is one module in
:mod:`bibench.commands` exposing ``register(subparsers)``; the parser it adds sets
``func(args) -> int``. A :class:`~bibench.errors.UserError` becomes one line on stderr
and exit status 2.

Only the module of the command being run is imported: the others appear in
``bibench --help`` through the ``help=`` of their ``add_parser`` call, read from their
source without importing them, so ``--help`` and ``--version`` never load torch, pandas or
matplotlib.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import sys
import warnings
from pathlib import Path

import bibench.commands
from bibench import __version__
from bibench.errors import UserError
from bibench.params import unknown_names

__all__ = ["build_parser", "command_help", "command_names", "main"]


def command_names() -> list[str]:
    """The subcommands: the modules of :mod:`bibench.commands`, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(bibench.commands.__path__))


def command_help(name: str) -> str:
    """The ``help=`` string of the ``add_parser`` call in ``bibench/commands/<name>.py``
    (its source is parsed, not imported); the docstring's first line when there is none."""
    path = Path(bibench.commands.__path__[0]) / f"{name}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_parser":
            for kw in node.keywords:
                if kw.arg == "help" and isinstance(kw.value, ast.Constant):
                    return str(kw.value.value)
    return (ast.get_docstring(tree) or "").split("\n", 1)[0]


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The parser with ``command``'s module imported and registered (every module for
    ``"*"``); the other commands are listed with their help only."""
    parser = argparse.ArgumentParser(
        prog="bibench", description="Benchmark bilevel optimization algorithms."
    )
    parser.add_argument("--version", action="version", version=f"bibench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in command_names():
        if command in ("*", name):
            importlib.import_module(f"bibench.commands.{name}").register(sub)
        else:
            sub.add_parser(name, help=command_help(name))
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(str(message), file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _one_line_warning
    argv = sys.argv[1:] if argv is None else list(argv)
    # top-level options take no value, so the first other word names the command
    command = next((a for a in argv if not a.startswith("-")), None)
    names = command_names()
    if command is not None and command not in names:
        print(f"bibench: error: {unknown_names('command', [command], names)}", file=sys.stderr)
        return 2
    parser = build_parser(command)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"bibench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bibench: interrupted; finished runs are saved, 'run' again to resume",
              file=sys.stderr)  # fmt: skip
        return 130


if __name__ == "__main__":
    sys.exit(main())
