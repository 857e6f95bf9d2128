"""Errors a user sees. Each carries enough to print one clear line; none carries a traceback."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ManifestProblem:
    """One thing wrong with a manifest: file, line, field path and what was expected."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ReconcilerError(Exception):
    """Base of every error the CLI reports as a message and exit code 1."""


class ManifestError(ReconcilerError):
    """A manifest that cannot be used; lists every problem found, not just the first."""

    def __init__(self, problems: list[ManifestProblem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class FieldProblem(ReconcilerError):
    """Raised by a provider's field preparation (for example an unreadable certificate file).

    The manifest loader turns it into a ManifestProblem with the field's file and line.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class DiscoveryError(ReconcilerError):
    """A target could not be read. Never treated as 'absent'."""


class TransportError(ReconcilerError):
    """A transport could not deliver commands (connection, protocol, timeout)."""


class LockError(ReconcilerError):
    """Another apply holds the target's lock."""


class StalePlanError(ReconcilerError):
    """A saved plan no longer matches the manifest or the live state it was made from."""


class CommandSyntaxError(ReconcilerError):
    """A command outside its cmdlet's documented syntax (unknown parameter, no parameter set, wrong type).

    `message` reads like PowerShell's own binding error, so the lab can return it as the cmdlet would.
    """

    def __init__(self, cmdlet: str, message: str) -> None:
        self.cmdlet = cmdlet
        self.message = message
        super().__init__(f"{cmdlet} : {message}")


class ReferenceProblem(ReconcilerError):
    """A value one target's resource takes from another target (`certificateOf:`) that cannot be resolved:
    the other target is unknown, not read in this run, or declares nothing that publishes a certificate."""
