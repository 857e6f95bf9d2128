"""The command contract every layer shares: structured commands in, structured results out.

A command is data (a cmdlet or executable, and its parameters), never PowerShell source text, so no
manifest value can ever become code. Providers make commands, the plan carries them, the executor hands
them to a transport; real transports splat the parameters, the lab interprets them.

A cmdlet whose parameter takes an object only another cmdlet yields (Set-SPAppPrincipalPermission
-AppPrincipal takes the SPAppPrincipal that Get-SPAppPrincipal writes) carries a `Pipe`: the source command
(itself data) and the parameter its one output object binds to. Every transport runs the source on the
server, refuses its output unless it is exactly one object (`pipe_count_error`), and binds that object to
the parameter; nothing crosses as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

MASK = "(sensitive value)"
HTTP_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})
"""Commands for REST systems (Microsoft Graph) name the HTTP method and carry path/query/body."""

_BARE_ARGUMENT = re.compile(r"^[A-Za-z0-9._:/\\-]+$")


@dataclass(frozen=True)
class Pipe:
    """The single object `source` writes, bound to `parameter` of the command that carries this pipe.

    As PowerShell writes it: `source | command` (the parameter accepts pipeline input by value).
    """

    source: Command
    parameter: str

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source.to_json(), "parameter": self.parameter}


def pipe_count_error(command: Command, count: int) -> str:
    """The error of a piped command whose source wrote `count` objects (not one): the command was not run.

    The same words from every transport (lab, pwsh runner, WinRM)."""
    assert command.pipe is not None
    source = command.pipe.source.cmdlet
    return (f"{command.cmdlet} : not run: {source} wrote {count} objects for -{command.pipe.parameter}, "
            "exactly one is needed")


@dataclass(frozen=True)
class Command:
    """One cmdlet call (or, with `native`, one executable run with positional `arguments`).

    `sensitive` names parameters whose values must never be shown or logged.
    """

    cmdlet: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    sensitive: frozenset[str] = frozenset()
    shown: Mapping[str, str] = field(default_factory=dict)
    """How to show long or opaque values (for example a certificate as its thumbprint)."""
    select: tuple[str, ...] = ()
    """Properties to bring back (selected on the server side); empty: all."""
    native: bool = False
    """An executable, not a cmdlet (e.g. `iisreset`): it takes positional `arguments`, no named parameters."""
    arguments: tuple[str, ...] = ()
    """Positional arguments of a native command, each passed as one argument (never parsed as PowerShell)."""
    switches: frozenset[str] = frozenset()
    """Parameters documented as SwitchParameter: shown as `-Force`; any other true value as `-Enabled:$true`."""
    scalar: bool = False
    """The cmdlet writes values, not objects (Get-SPAuthenticationRealm writes a string): a transport keeps each as
    `{"Value": <value>}` instead of refusing output that has no properties to read."""
    pipe: Pipe | None = None
    """The parameter (not in `parameters`) bound to the one object another command writes; see `Pipe`."""

    def __post_init__(self) -> None:
        if self.pipe is not None:
            if self.native or self.pipe.source.native or self.pipe.source.pipe is not None:
                raise ValueError(f"{self.cmdlet}: only a cmdlet takes a pipe, and only from a cmdlet without one")
            if any(str(k).lstrip("-").casefold() == self.pipe.parameter.casefold() for k in self.parameters):
                raise ValueError(f"{self.cmdlet}: -{self.pipe.parameter} is both piped and given")

    @property
    def all_cmdlets(self) -> tuple[str, ...]:
        """This command's cmdlet, after its pipe's source (what an allow-list must hold to run it)."""
        return (self.pipe.source.cmdlet, self.cmdlet) if self.pipe is not None else (self.cmdlet,)

    def masked_parameters(self) -> dict[str, Any]:
        return {k: (MASK if k in self.sensitive else self.shown.get(k, v)) for k, v in self.parameters.items()}

    def to_json(self) -> dict[str, Any]:
        """The machine-readable form used in plans and logs (sensitive values masked)."""
        if self.native:
            return {"executable": self.cmdlet, "arguments": list(self.arguments)}
        document: dict[str, Any] = {"cmdlet": self.cmdlet, "parameters": self.masked_parameters()}
        if self.pipe is not None:
            document["pipe"] = self.pipe.to_json()
        return document

    def display(self) -> str:
        """A readable one-liner for people, in valid PowerShell syntax. It is never executed by anything."""
        if self.native:
            return " ".join([self.cmdlet, *(a if _BARE_ARGUMENT.match(a) else _quote(a) for a in self.arguments)])
        if self.cmdlet in HTTP_METHODS and "path" in self.parameters:
            shown = self.masked_parameters()
            body = shown.get("body")
            return f"{self.cmdlet} {shown['path']}" + (f"  {body}" if body else "")
        parts = [self.pipe.source.display(), "|", self.cmdlet] if self.pipe is not None else [self.cmdlet]
        for name, value in self.masked_parameters().items():
            if value is True:
                parts.append(f"-{name}" if name in self.switches else f"-{name}:$true")
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
    status: int | None = None
    """The HTTP status of a REST command (Microsoft Graph), so callers switch on it, never on message text."""


class Transport(Protocol):
    """Runs a batch of commands in one round trip.

    With `stop_on_error` the batch stops at the first failing command; results then cover the
    commands that ran (the last one failed) and nothing after it. Raises TransportError when the
    batch could not be delivered at all.
    """

    def invoke(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> list[CommandResult]: ...

    def close(self) -> None: ...


class Pending(Protocol):
    """A round trip under way (`Overlapping.begin`): `result` waits for its answer, as `invoke` would have (read it
    once; nothing else is sent over the transport until it is read)."""

    def result(self) -> list[CommandResult]: ...


@runtime_checkable
class Overlapping(Protocol):
    """A transport whose round trips can be in flight together without a thread waiting on each: `begin` sends the
    batch and returns at once; its answer is read by `Pending.result`. Discovery reads such targets from one thread
    (reconciler.runner); a transport without `begin` is read by a thread of its own per target."""

    def begin(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> Pending: ...
