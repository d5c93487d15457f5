"""User-facing error types.

Every error a user can trigger with bad input is an :class:`IeinError` whose message is a
single line naming the file, line or field at fault.  The CLI prints ``error: <message>``
and exits with status 2 instead of showing a traceback.
"""
from __future__ import annotations


class IeinError(Exception):
    """Base class for errors caused by user input (data, config, checkpoints)."""


class DataError(IeinError, ValueError):
    """Malformed or inconsistent data: a file, a row, a field, a label."""


class CheckpointError(IeinError, ValueError):
    """A checkpoint that is truncated, corrupted or does not match the data."""


class ConfigError(IeinError, ValueError):
    """An impossible model or training configuration."""


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """Format a location prefix like ``train.csv:12 field 'text'`` for error messages."""
    out = str(path)
    if line is not None:
        out += f":{line}"
    if field is not None:
        out += f" field {field!r}"
    return out
