"""Typed parameter dataclasses shared by problems and algorithms.

A problem's ``Params`` and an algorithm's ``Hyper`` are frozen dataclasses. Values
come from defaults, YAML or the CLI, are coerced to the field's type, and are checked
by ``validate()``; every failure is a :class:`UserError` naming the owner and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing
from collections.abc import Iterable
from typing import Any

from bibench.errors import UserError

__all__ = ["ParamsBase", "build_params", "field_types", "per_run_fields", "unknown_names"]


@dataclasses.dataclass(frozen=True)
class ParamsBase:
    """Base of every ``Params`` / ``Hyper`` dataclass.

    Subclasses declare typed fields with defaults and may override :meth:`validate`
    (raise ``ValueError`` with a message naming the field).
    """

    def validate(self) -> None:
        for name, typ in field_types(type(self)).items():
            value = getattr(self, name)
            if typ in (int, float) and isinstance(value, (int, float)) and not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type (``int``, ``float``, ``bool``, ``str`` or other)."""
    return dict(_field_types(cls))


@functools.cache  # resolving the hints evaluates every annotation: once per class
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def per_run_fields(cls: type) -> list[str]:
    """Fields typed ``float``: they may differ between runs of one batch and are given to
    the algorithm as tensors of shape ``(R, 1)``. Other fields are static per batch."""
    return list(_per_run_fields(cls))


@functools.cache  # batch_key asks once per run
def _per_run_fields(cls: type) -> tuple[str, ...]:
    return tuple(n for n, t in _field_types(cls).items() if t is float)


def unknown_names(what: str, unknown: Iterable[str], known: Iterable[str], where: str = "") -> str:
    """One line naming every unknown name at once, each with the closest known one
    (:func:`difflib.get_close_matches`) when there is one: ``unknown key 'sed' (did you mean
    'seeds'?) in a.yml (known: budget, seeds)``."""
    known = sorted(known)
    unknown = sorted(unknown)
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    head = f"unknown {what} " if len(unknown) == 1 else f"unknown {what}s "
    return (
        head
        + ", ".join(parts)
        + (f" {where}" if where else "")
        + (f" (known: {', '.join(known) or 'none'})")
    )


def _coerce(owner: str, name: str, typ: Any, value: Any) -> Any:
    expected = getattr(typ, "__name__", typ)
    bad = UserError(f"bad value for {owner} parameter '{name}': {value!r} (expected {expected})")
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if typ is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if typ is str:
        if isinstance(value, str):
            return value
        raise bad
    return value


def build_params(cls: type, owner: str, values: dict[str, Any] | None) -> Any:
    """Instantiate ``cls`` from ``values`` with coercion and validation."""
    values = dict(values or {})
    types = field_types(cls)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise UserError(unknown_names("parameter", unknown, types, f"for {owner}"))
    kwargs = {k: _coerce(owner, k, types[k], v) for k, v in values.items()}
    try:
        obj = cls(**kwargs)
        obj.validate()
    except (ValueError, TypeError) as exc:
        raise UserError(f"bad value for {owner}: {exc}") from None
    return obj
