"""The transport seam: structured commands in, structured results out.

A command is data (cmdlet + parameters), never PowerShell source text, so no manifest value can
ever become code. Real transports splat the parameters; the lab interprets them.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from reconciler.errors import TransportError

MASK = "(sensitive value)"
HTTP_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})
"""Commands for REST systems (Microsoft Graph) name the HTTP method and carry path/query/body."""


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


@dataclass(frozen=True)
class Command:
    """One cmdlet call. `sensitive` names parameters whose values must never be shown or logged."""

    cmdlet: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    sensitive: frozenset[str] = frozenset()
    shown: Mapping[str, str] = field(default_factory=dict)
    """How to show long or opaque values (for example a certificate as its thumbprint)."""
    select: tuple[str, ...] = ()
    """Properties to bring back (selected on the server side); empty: all."""

    def masked_parameters(self) -> dict[str, Any]:
        return {k: (MASK if k in self.sensitive else self.shown.get(k, v)) for k, v in self.parameters.items()}

    def to_json(self) -> dict[str, Any]:
        """The machine-readable form used in plans and logs (sensitive values masked)."""
        return {"cmdlet": self.cmdlet, "parameters": self.masked_parameters()}

    def display(self) -> str:
        """A readable one-liner for people. It is never executed by anything."""
        if self.cmdlet in HTTP_METHODS and "path" in self.parameters:
            shown = self.masked_parameters()
            body = shown.get("body")
            return f"{self.cmdlet} {shown['path']}" + (f"  {body}" if body else "")
        parts = [self.cmdlet]
        for name, value in self.masked_parameters().items():
            if value is True:
                parts.append(f"-{name}")
            elif value is False:
                parts.append(f"-{name}:$false")
            elif isinstance(value, list | tuple):
                parts.append(f"-{name} " + ",".join(_quote(v) for v in value))
            else:
                parts.append(f"-{name} {_quote(value)}")
        return " ".join(parts)


def _quote(value: Any) -> str:
    text = str(value)
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class CommandResult:
    """What one command did: its output objects (property name -> value), or its error message."""

    command: Command
    ok: bool
    output: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None


class Transport(Protocol):
    """Runs a batch of commands in one round trip.

    With `stop_on_error` the batch stops at the first failing command; results then cover the
    commands that ran (the last one failed) and nothing after it. Raises TransportError when the
    batch could not be delivered at all.
    """

    def invoke(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> list[CommandResult]: ...

    def close(self) -> None: ...
