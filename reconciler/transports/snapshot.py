"""The snapshot transport (`transport: snapshot`): plan and discover against files captured on a server.

For an admin who may read a real estate but not change it (or not from here): on the server they run
each Get cmdlet once, saving `<Cmdlet> | ConvertTo-Json -Depth 5` as `<Cmdlet>.json` in one folder
(docs/snapshot.md has the one-line commands), and point a target at that folder:

    connection: {transport: snapshot, path: snapshots/pool}

`invoke` answers Get-* cmdlets from those files and refuses everything else: the transport is
read-only (`read_only`), and `unsupported(command)` says why a command cannot run before anything is
attempted.

File rules (each one is what Windows PowerShell 5.1 writes, so a capture is used exactly as saved):
- The file for `Get-CsOAuthServer` is `Get-CsOAuthServer.json`; names match ignoring case.
- Encoding: UTF-8 with a byte-order mark (`Out-File -Encoding utf8`), UTF-8 without one, UTF-16 LE
  or BE with a byte-order mark (`>` redirection writes UTF-16 LE), UTF-32 LE with one. Anything else
  (e.g. ANSI text with accented letters) fails with the line, rather than being guessed at.
- Content: one object (a cmdlet that returned one object), an array, `{"value": [...], "Count": n}`,
  `null`, `[]`, or nothing at all (an empty file, or only a byte-order mark): the last three mean
  the cmdlet returned no objects.
- A missing file is a failed command naming the file and the command that writes it; it is never read
  as "no objects" (that would make every object look absent and plan to create it).
- Dates written as `\\/Date(1700000000000)\\/` (an offset such as `+0100` may follow the milliseconds;
  the milliseconds are UTC either way) become ISO 8601 UTC text, the same text the other transports
  give providers: `2023-11-14T22:13:20Z`, with milliseconds (`...:20.123Z`) only when they are not
  zero. A date that Windows PowerShell wrapped as `{"value": ..., "DisplayHint": n, "DateTime": ...}`
  becomes that text too.
- Enum values stay as written (numbers in a 5.1 capture); providers map them.
- `Command.select` keeps only the named properties (ignoring case; the file's spelling is kept;
  a property the file lacks is left out, not added as null).
- An `Identity` parameter keeps the objects whose `Identity` (when it is text) or `Name` equals it,
  ignoring case; none matching means no objects. Any other parameter cannot be answered from a
  capture, so a Get with one is refused.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from reconciler.commands import HTTP_METHODS, Command, CommandResult
from reconciler.errors import OutputShapeError, SnapshotError, TransportError
from reconciler.model import TargetSpec
from reconciler.transports import psjson

SUFFIX = ".json"
CMDLET_NAME = re.compile(r"^[A-Za-z]+-[A-Za-z0-9]+$")
FILTER_PARAMETER = "identity"
"""The one parameter a snapshot can answer: it filters the captured objects."""

# Byte-order marks, longest first (UTF-32 LE starts with the UTF-16 LE mark).
_BOMS: tuple[tuple[bytes, str, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32 LE"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)
_DATE_WRAPPER = frozenset({"value", "DisplayHint", "DateTime"})


def capture_command(cmdlet: str) -> str:
    """The one line of PowerShell that writes the snapshot file for `cmdlet` (run in the snapshot folder)."""
    return f"{cmdlet} | ConvertTo-Json -Depth 5 | Out-File -Encoding utf8 {cmdlet}{SUFFIX}"


class SnapshotTransport:
    """Answers Get-* cmdlets from a folder of `<Cmdlet>.json` captures; runs nothing, changes nothing."""

    read_only: ClassVar[bool] = True
    """Apply and verify need a real transport: every command that is not a Get is refused."""

    connection_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "path": {
                "type": "string",
                "minLength": 1,
                "description": "The folder of `<Cmdlet>.json` files captured with `<Cmdlet> | ConvertTo-Json "
                "-Depth 5` (see docs/snapshot.md). A relative path is read from the manifest's folder.",
            },
        },
        "required": ["path"],
        "additionalProperties": False,
    }

    def __init__(self, directory: str | Path, *, target: str = "snapshot") -> None:
        self.directory = Path(directory)
        self.target = target
        self._closed = False
        if not self.directory.exists():
            raise TransportError(f"target {target!r}: the snapshot folder {self.directory} does not exist")
        if not self.directory.is_dir():
            raise TransportError(f"target {target!r}: the snapshot path {self.directory} is not a folder")

    @classmethod
    def from_target(cls, target: TargetSpec) -> SnapshotTransport:
        """Build from a target's `connection` block (its `transport` key is ignored). Reads no file yet.

        A relative `path` is resolved against the manifest's folder when the target says where it
        was declared, otherwise against the working directory.
        """
        connection = target.connection
        where = f"target {target.name!r}"
        unknown = sorted(set(connection) - {"transport", *cls.connection_schema["properties"]})
        if unknown:
            raise TransportError(f"{where}: unknown connection setting(s) for snapshot: {', '.join(unknown)}")
        path = connection.get("path")
        if not isinstance(path, str) or not path:
            raise TransportError(f"{where}: the snapshot transport needs connection.path, the folder of "
                                 "captured <Cmdlet>.json files")
        base = Path(target.location.file).parent if target.location is not None else Path.cwd()
        directory = (base / path).absolute()
        if not directory.exists():
            raise TransportError(f"{where}: connection.path {path!r}: the snapshot folder {directory} does not "
                                 "exist (a relative path is read from the manifest's folder)")
        return cls(directory, target=target.name)

    def __repr__(self) -> str:
        return f"SnapshotTransport({self.target!r}, {str(self.directory)!r})"

    # --- the seam ---------------------------------------------------------------------------------

    def unsupported(self, command: Command) -> str | None:
        """Why this transport cannot run `command`, as one sentence; None for a Get it can answer."""
        read_only = f"the snapshot target {self.target!r} is read-only: plan and discover only"
        if command.native:
            return f"{read_only}; apply needs a real transport ({command.cmdlet} is an executable and is not run)"
        if command.cmdlet.upper() in HTTP_METHODS:
            if command.cmdlet.upper() == "GET":
                return (f"the snapshot target {self.target!r} answers only PowerShell Get-* cmdlets from files; "
                        "a Microsoft Graph request cannot be answered from a snapshot")
            return f"{read_only}; apply needs a real transport ({command.cmdlet} requests are not sent)"
        if not CMDLET_NAME.match(command.cmdlet):
            return f"the snapshot target {self.target!r} answers only Get-* cmdlets; {command.cmdlet!r} is not one"
        verb = command.cmdlet.split("-", 1)[0].lower()
        if verb == "test":
            return f"{read_only}; {command.cmdlet} runs a check on the server and needs a real transport"
        if verb != "get" or command.pipe is not None:
            return f"{read_only}; apply needs a real transport ({command.cmdlet} is not run)"
        for name, value in command.parameters.items():
            if str(name).lstrip("-").lower() != FILTER_PARAMETER:
                return (f"the snapshot target {self.target!r} can answer {command.cmdlet} in full or by -Identity "
                        f"only; -{str(name).lstrip('-')} cannot be answered from a capture")
            if not isinstance(value, str):
                return f"the snapshot target {self.target!r} can filter {command.cmdlet} only by an -Identity text"
        return None

    def invoke(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> list[CommandResult]:
        """Answer each command from the folder; a refused or unanswerable command fails in its place.

        With `stop_on_error` nothing after the first failure is answered. Raises TransportError when the
        folder itself cannot be listed.
        """
        if self._closed:
            raise TransportError(f"the snapshot transport for target {self.target!r} is closed")
        files: dict[str, list[Path]] | None = None
        results: list[CommandResult] = []
        for command in commands:
            refusal = self.unsupported(command)
            if refusal is not None:
                result = CommandResult(command, ok=False, error=f"{command.cmdlet} : {refusal}")
            else:
                if files is None:
                    files = self._listing()
                result = self._answer(command, files.get((command.cmdlet + SUFFIX).lower(), []))
            results.append(result)
            if stop_on_error and not result.ok:
                break
        return results

    def close(self) -> None:
        self._closed = True

    # --- internals --------------------------------------------------------------------------------

    def _listing(self) -> dict[str, list[Path]]:
        """The folder's files by lower-case name (two names differing only in case are both kept)."""
        found: dict[str, list[Path]] = {}
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.lower().endswith(SUFFIX) and entry.is_file():
                        found.setdefault(entry.name.lower(), []).append(Path(entry.path))
        except OSError as exc:
            raise TransportError(f"target {self.target!r}: cannot list the snapshot folder {self.directory} "
                                 f"({exc.strerror or type(exc).__name__})") from None
        return found

    def _answer(self, command: Command, candidates: list[Path]) -> CommandResult:
        cmdlet = command.cmdlet
        if not candidates:
            return CommandResult(command, ok=False, error=(
                f"{cmdlet} : the snapshot has no {cmdlet}{SUFFIX} in {self.directory}; capture it on the server "
                f"with: {capture_command(cmdlet)}"))
        if len(candidates) > 1:
            names = ", ".join(sorted(p.name for p in candidates))
            return CommandResult(command, ok=False, error=(
                f"{cmdlet} : the snapshot folder {self.directory} has {names}: names are matched ignoring case, "
                "so keep one"))
        try:
            objects = list(read_snapshot(candidates[0], scalar=command.scalar))
        except SnapshotError as exc:
            return CommandResult(command, ok=False, error=f"{cmdlet} : {exc}; capture it again with: "
                                                          f"{capture_command(cmdlet)}")
        identity = next((v for k, v in command.parameters.items() if k.lstrip("-").lower() == FILTER_PARAMETER),
                        None)
        if isinstance(identity, str):
            objects = [o for o in objects if _is_identity(o, identity)]
        if command.select:
            wanted = {name.lower() for name in command.select}
            objects = [{k: v for k, v in o.items() if k.lower() in wanted} for o in objects]
        return CommandResult(command, ok=True, output=tuple(objects))


# --- reading one file -------------------------------------------------------------------------------


def decode_snapshot(data: bytes, path: Path) -> str:
    """The text of a capture: by its byte-order mark, else UTF-8. Raises SnapshotError naming the file."""
    marked = next(((bom, codec, label) for bom, codec, label in _BOMS if data.startswith(bom)), None)
    if marked is not None:
        body, codec, label = data[len(marked[0]):], marked[1], marked[2]
    elif b"\x00" in data:
        raise SnapshotError(f"{path}: has NUL bytes but no byte-order mark (UTF-16 without one?); "
                            "save it as UTF-8")
    else:
        body, codec, label = data, "utf-8", "UTF-8"
    try:
        return body.decode(codec)
    except UnicodeDecodeError as exc:
        line = body[:exc.start].decode(codec, errors="replace").count("\n") + 1
        raise SnapshotError(f"{path}: line {line}: not {label} text (saved in another encoding?)") from None


def parse_snapshot(text: str, path: Path, *, scalar: bool = False) -> tuple[dict[str, Any], ...]:
    """Captured ConvertTo-Json text as output objects, dates as ISO 8601 UTC; nothing at all is no objects."""
    if not text.strip():
        return ()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{path}: line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from None
    try:
        return psjson.output_objects(_unwrap_dates(value), scalar=scalar)
    except OutputShapeError as exc:
        raise SnapshotError(f"{path}: {exc}: expected the objects a Get cmdlet returns") from None


def read_snapshot(path: Path, *, scalar: bool = False) -> tuple[dict[str, Any], ...]:
    """The objects captured in one `<Cmdlet>.json` file. Raises SnapshotError naming the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    return parse_snapshot(decode_snapshot(data, path), path, scalar=scalar)


def _unwrap_dates(value: Any) -> Any:
    """Windows PowerShell's `{"value": "/Date(..)/", "DisplayHint": n, "DateTime": "..."}` as just the date."""
    if isinstance(value, list):
        return [_unwrap_dates(item) for item in value]
    if isinstance(value, dict):
        if set(value) == _DATE_WRAPPER and isinstance(value["value"], str) and psjson.iso_date(value["value"]):
            return value["value"]
        return {key: _unwrap_dates(item) for key, item in value.items()}
    return value


def _is_identity(obj: Mapping[str, Any], wanted: str) -> bool:
    """Whether the object's Identity (when it is text) or Name is `wanted`, ignoring case (as the cmdlets match)."""
    lowered = {str(k).lower(): v for k, v in obj.items()}
    names = [lowered.get("identity"), lowered.get("name")]
    return any(isinstance(n, str) and n.casefold() == wanted.casefold() for n in names)
