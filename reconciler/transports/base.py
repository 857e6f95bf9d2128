"""The transport seam: structured commands in, structured results out.

A command is data (cmdlet + parameters), never PowerShell source text, so no manifest value can
ever become code. Real transports splat the parameters; the lab interprets them.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from reconciler.commands import HTTP_METHODS, MASK, Command, CommandResult, Transport
from reconciler.errors import TransportError

__all__ = ["HTTP_METHODS", "MASK", "Command", "CommandResult", "Sensitive", "Transport", "check_private"]

def check_private(path: Path, what: str) -> None:
    """Refuse a file that group or others may read or write (like ssh does with keys)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise TransportError(f"{what}: cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(info.st_mode):
        raise TransportError(f"{what}: {path} is not a regular file")
    if info.st_mode & 0o077:
        raise TransportError(f"{what}: {path} is readable or writable by group or others "
                             f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`")


class Sensitive:
    """A secret value that never shows itself: repr and str are the mask; `reveal()` is explicit.

    Transports hold passwords, client secrets, assertions and tokens in these, so no log line,
    exception or repr can carry one by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a sensitive value cannot be pickled")
