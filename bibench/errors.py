"""Exceptions that the CLI turns into one clear line and a non-zero exit."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake in what the user asked for: an unknown name, bad YAML, a bad value.

    The CLI prints ``bibench: error: <message>`` and exits with status 2, without a
    traceback. The message must name the culprit (the file, key or value).
    """
