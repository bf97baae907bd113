"""The ``bibench`` command line. Each subcommand is one module in
:mod:`bibench.commands` exposing ``register(subparsers)``; the parser it adds sets
``func(args) -> int``. A :class:`~bibench.errors.UserError` becomes one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

import bibench.commands
from bibench.errors import UserError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bibench", description="Benchmark bilevel optimization algorithms."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(bibench.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"bibench.commands.{info.name}")
        module.register(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(str(message), file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _one_line_warning
    parser = build_parser()
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
