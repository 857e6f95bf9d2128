"""Every error type of the package, in one place. Each carries enough to print one clear line; none carries a
traceback. ReconcilerError and its subclasses are what the CLI reports as a message and exit code 1.

An exception private to one module, raised and caught there to unwind a parse or a nested check (its name
starts with an underscore), is not an error type of the package and stays beside the code it serves.
"""

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


class UsageError(Exception):
    """A command line argparse refused; the usage and the reason are already on stderr."""


# --- metadata documents -------------------------------------------------------------------------

METADATA_ERROR = (
    "The metadata document could not be downloaded from the URL in the MetadataUrl parameter "
    "or downloaded data is not a valid metadata document."
)
"""The cmdlets' own wording for a metadata document they cannot use (the lab's cmdlets answer with it too)."""

_DETAIL_LIMIT = 80


def _short(text: str) -> str:
    """Keep error details to one short line: a response body must never flood a message."""
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 3] + "..."


class MetadataError(ReconcilerError):
    """The document at `url` could not be used; `detail` says why in a few words."""

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = _short(detail)
        super().__init__(f"{METADATA_ERROR} ({url}: {self.detail})")


# --- transports -----------------------------------------------------------------------------------


class OutputShapeError(ValueError):
    """A command's output is not a list of objects (property name -> value)."""


class SnapshotError(ValueError):
    """A snapshot file that cannot be read as captured output; the message names the file."""


# --- saved plans, the run store, metrics, notifications -------------------------------------------


class NotAPlanError(ReconcilerError):
    """A file `show` was given that is not a saved plan (a manifest, other JSON, not text at all)."""


class JournalError(ReconcilerError):
    """A journal line that is whole JSON but not an event apply wrote (changed by hand or by another tool)."""


class StoreError(ReconcilerError):
    """The run store cannot be opened or used as asked (bad location, unknown run, newer schema)."""


class MetricsFileError(ReconcilerError, OSError):
    """A metrics file that cannot be written: one line for the CLI (and an OSError, as it was before)."""


class DeliveryError(Exception):
    """A notification that could not be delivered; the message never contains the URL."""


# --- the lab --------------------------------------------------------------------------------------


class CmdletError(Exception):
    """An emulated cmdlet failed; `message` is the whole PowerShell-style error line (`<Cmdlet> : ...`)."""

    def __init__(self, cmdlet: str, message: str) -> None:
        prefix = f"{cmdlet} : "
        self.cmdlet = cmdlet
        self.message = message if message.startswith(prefix) else prefix + message
        super().__init__(self.message)


class LabStateError(TransportError):
    """The lab state file is missing or unusable.

    A TransportError because, to the tool, a broken lab is a system it cannot reach.
    """


class LabAdminError(ReconcilerError):
    """A lab operation that cannot be done as asked (unknown host, bad seed file, ...)."""
