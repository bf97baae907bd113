"""Plugin registries for problems and algorithms, and plugin discovery.

Plugins are found in three places:

1. the repository's ``problems/`` and ``algorithms/`` folders (one file per plugin);
2. loose files given with ``--plugin FILE.py`` (or ``plugin:`` in YAML);
3. installed packages exposing the entry-point group ``bibench.plugins``.

Importing a plugin module runs its ``@register_problem`` / ``@register_algorithm``
decorators. Two plugins that claim the same name are an error naming both files.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bibench.errors import UserError
from bibench.params import unknown_names

__all__ = [
    "ALGORITHMS",
    "PROBLEMS",
    "Registry",
    "discover",
    "framework_hash",
    "get_algorithm",
    "get_problem",
    "load_plugin_file",
    "register_algorithm",
    "register_problem",
    "source_hash",
]

T = TypeVar("T")
ENTRY_POINT_GROUP = "bibench.plugins"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Registry:
    """A name -> class map that remembers the file each entry came from."""

    kind: str
    entries: dict[str, type] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # file -> one-line error

    def add(self, name: str, cls: type) -> None:
        src = _source_file(cls)
        if name in self.entries and self.files[name] != src:
            raise UserError(
                f"duplicate {self.kind} name '{name}': defined in {self.files[name]} and in {src}"
            )
        cls.name = name
        self.entries[name] = cls
        self.files[name] = src

    def get(self, name: str) -> type:
        self.check([name])
        return self.entries[name]

    def check(self, names: list[str]) -> None:
        """Raise one :class:`UserError` naming every unknown name in ``names``, each with
        the closest registered one."""
        unknown = sorted({n for n in names if n not in self.entries})
        if unknown:
            hint = ""
            if self.broken:
                hint = "; plugins that failed to import: " + "; ".join(
                    f"{f} ({e})" for f, e in self.broken.items()
                )
            raise UserError(unknown_names(self.kind, unknown, self.entries) + hint)


PROBLEMS = Registry("problem")
ALGORITHMS = Registry("algorithm")


def _source_file(cls: type) -> str:
    try:
        return str(Path(inspect.getsourcefile(cls) or "<unknown>").resolve())
    except TypeError:
        return "<unknown>"


def register_problem(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a :class:`bibench.Problem` subclass under ``name``."""

    def deco(cls: type[T]) -> type[T]:
        PROBLEMS.add(name, cls)
        return cls

    return deco


def register_algorithm(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a :class:`bibench.Algorithm` subclass under ``name``."""

    def deco(cls: type[T]) -> type[T]:
        ALGORITHMS.add(name, cls)
        return cls

    return deco


def get_problem(name: str) -> type:
    discover()
    return PROBLEMS.get(name)


def get_algorithm(name: str) -> type:
    discover()
    return ALGORITHMS.get(name)


_loaded: set[str] = set()


def load_plugin_file(path: str | Path, *, strict: bool = True) -> None:
    """Import one plugin file by path. ``strict`` turns an import failure into a UserError;
    otherwise the failure is remembered, reported on one line, and discovery goes on."""
    path = Path(path).resolve()
    key = str(path)
    if key in _loaded:
        return
    if not path.is_file():
        raise UserError(f"plugin file not found: {path}")
    mod_name = f"bibench_plugins.{path.parent.name}.{path.stem}_{_short_hash(key)}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    _loaded.add(key)
    try:
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as exc:  # a broken plugin must not take the sweep down
        sys.modules.pop(mod_name, None)
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if strict:
            raise UserError(f"plugin {path} failed to import: {msg}") from None
        for reg in (PROBLEMS, ALGORITHMS):
            reg.broken[key] = msg
        warnings.warn(f"bibench: plugin {path} failed to import: {msg}", stacklevel=2)


_discovered = False


def discover(extra: list[str] | None = None) -> None:
    """Import the folder plugins, the entry-point plugins and any ``extra`` files."""
    global _discovered
    if not _discovered:
        _discovered = True
        for folder in ("problems", "algorithms"):
            for file in sorted((REPO_ROOT / folder).glob("*.py")):
                if not file.name.startswith("_"):
                    load_plugin_file(file, strict=False)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as exc:
                msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
                warnings.warn(
                    f"bibench: entry point {ep.name} ({ep.value}) failed: {msg}", stacklevel=2
                )
    for file in extra or []:
        load_plugin_file(file, strict=True)


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def source_hash(cls: Any) -> str:
    """SHA-1 over the file that defines ``cls`` and the local modules it imports, directly
    or through each other (part of every run id). A module is local when its file lies in
    the plugin's folder or in this repository, outside the ``bibench`` package (which
    :func:`framework_hash` covers)."""
    src = _source_file(cls if isinstance(cls, type) else type(cls))
    if not Path(src).is_file():
        return "nosource"
    files = _local_closure(Path(src))
    digest = hashlib.sha1()
    for file in files:
        digest.update(file.name.encode())
        digest.update(_file_digest(file))
    return digest.hexdigest()


FRAMEWORK = REPO_ROOT / "bibench"
# Modules of the package that never change a row's values: the CLI, the analysis, the speed
# bench, the dry-run planner, the store, sweep and executors (they move rows, exactly), and
# the paper modules (they choose configs, whose every value is in the run id, and read rows)
NOT_RESULTS = ("commands", "analysis", "papers", "cli.py", "bench.py", "plan.py", "testing.py",
               "store.py", "sweep.py", "executors.py")  # fmt: skip


def framework_hash() -> str:
    """SHA-1 of the ``bibench`` sources that produce results (runner, oracle, estimators,
    problem and algorithm contracts, data loaders...: every ``.py`` of the package but
    the CLI, the analysis and the speed bench). Part of every run id, so that a changed
    framework never reuses a result it did not produce."""
    files = sorted(
        f for f in FRAMEWORK.rglob("*.py")
        if f.relative_to(FRAMEWORK).parts[0] not in NOT_RESULTS
    )  # fmt: skip
    digest = hashlib.sha1()
    for file in files:
        digest.update(str(file.relative_to(FRAMEWORK)).encode())
        digest.update(_file_digest(file))
    return digest.hexdigest()


_digests: dict[Path, tuple[tuple[int, int], bytes, tuple[Path, ...]]] = {}


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _file_digest(path: Path) -> bytes:
    return _scan(path)[0]


def _scan(path: Path) -> tuple[bytes, tuple[Path, ...]]:
    """A file's SHA-1 and the local files its imports resolve to (cached per mtime/size:
    run ids are computed once per run, and a grid has thousands)."""
    key = _stat_key(path)
    hit = _digests.get(path)
    if hit and hit[0] == key:
        return hit[1], hit[2]
    data = path.read_bytes()
    deps: tuple[Path, ...] = ()
    if path.suffix == ".py" and FRAMEWORK not in path.parents:
        deps = tuple(_local_imports(path, data))
    _digests[path] = (key, hashlib.sha1(data).digest(), deps)
    return _digests[path][1], deps


def _local_closure(path: Path) -> list[Path]:
    """``path`` and every local module reachable through imports, sorted."""
    seen, todo = {path}, [path]
    while todo:
        for dep in _scan(todo.pop())[1]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return sorted(seen)


def _local_imports(path: Path, source: bytes) -> list[Path]:
    """Files of the modules ``path`` imports (anywhere in it, also inside functions) that
    are local: found in its folder or the repository, or already imported from there."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[tuple[str, int]] = []  # (dotted name, relative level)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names.append((base, node.level))
            names.extend((f"{base}.{a.name}" if base else a.name, node.level)
                         for a in node.names)  # fmt: skip
    roots = [path.parent, REPO_ROOT]
    found = []
    for name, level in names:
        if not name:
            continue
        bases = [path.parents[level - 1]] if level else roots
        for file in _candidates(name, bases, relative=bool(level)):
            if file != path and FRAMEWORK not in file.parents and file.is_file():
                found.append(file.resolve())
                break
    return sorted(set(found))


def _candidates(name: str, bases: list[Path], relative: bool) -> list[Path]:
    parts = name.split(".")
    out = []
    for base in bases:
        out += [base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")]
    module = None if relative else sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if file and any(Path(file).resolve().is_relative_to(b) for b in bases):
        out.append(Path(file).resolve())
    return out
