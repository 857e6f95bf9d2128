"""PowerShell's JSON, made regular on the Python side.

PowerShell's `ConvertTo-Json` has habits that differ between versions and between the local runner
and remoting: a pipeline that yields one object is written as that object rather than a one-item
array, nothing at all is written as `null`, Windows PowerShell 5.1 wraps some arrays as
`{"value": [...], "Count": n}`, and dates come out as `\\/Date(1700000000000)\\/`. Our runner script
avoids most of these, but a transport must not trust that it did: these functions turn whatever
arrives into one shape (a list of objects with ISO 8601 dates), so providers never see the quirks.

They also render commands for error messages with sensitive values masked, because an error text
is the one place where a command's values would otherwise leak into logs, and give a command its
form in the runner's request (`protocol_command`): a cmdlet with its parameter map, or a native
executable with its argument array.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.errors import OutputShapeError
from reconciler.transports.base import MASK, Command

_DATE = re.compile(r"^\\?/Date\((-?\d+)(?:[+-]\d{4})?\)\\?/$")
"""Microsoft's JSON date: milliseconds since the Unix epoch (UTC); an offset suffix is informational."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CMDLET_NAME = re.compile(r"^[A-Za-z]+-[A-Za-z0-9]+$")
"""A cmdlet name (Verb-Noun)."""
NATIVE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")
"""An executable name as a native command gives it (e.g. `iisreset`): looked up on PATH, never a path."""


def iso_date(text: str) -> str | None:
    """`/Date(ms)/` or `\\/Date(ms+hhmm)\\/` as an ISO 8601 UTC timestamp; None if `text` is not one."""
    match = _DATE.match(text)
    if match is None:
        return None
    millis = int(match.group(1))
    try:
        moment = _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        return None
    spec = "seconds" if millis % 1000 == 0 else "milliseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _count_wrapped(value: Mapping[str, Any]) -> list[Any] | None:
    """The list inside Windows PowerShell's `{"value": [...], "Count": n}` wrapping, else None."""
    if set(value) != {"value", "Count"}:
        return None
    items, count = value["value"], value["Count"]
    if isinstance(items, list) and isinstance(count, int) and not isinstance(count, bool) and count == len(items):
        return items
    return None


def normalize(value: Any) -> Any:
    """A JSON value with PowerShell's quirks undone, recursively (dates, count-wrapped arrays)."""
    if isinstance(value, str):
        return iso_date(value) or value
    if isinstance(value, list):
        return [normalize(item) for item in value]
    if isinstance(value, Mapping):
        wrapped = _count_wrapped(value)
        if wrapped is not None:
            return [normalize(item) for item in wrapped]
        return {str(key): normalize(item) for key, item in value.items()}
    return value


def as_list(value: Any) -> list[Any]:
    """What a pipeline wrote, as a list: null is nothing, a lone object is one item."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):
        wrapped = _count_wrapped(value)
        if wrapped is not None:
            return wrapped
    return [value]


def output_objects(value: Any, *, scalar: bool = False) -> tuple[dict[str, Any], ...]:
    """A command's output as objects, quirks undone; property names are kept exactly as given.

    Raises OutputShapeError when an item is not an object: a provider reads properties, and a bare
    string or number where an object was expected means the command was not the one we think. A command declared
    `scalar` (it writes values) has each value kept as `{"Value": value}`.
    """
    objects: list[dict[str, Any]] = []
    for index, item in enumerate(as_list(value)):
        if scalar and not isinstance(item, Mapping) and item is not None:
            objects.append({"Value": item})
            continue
        if not isinstance(item, Mapping):
            kind = "null" if item is None else type(item).__name__
            raise OutputShapeError(f"output item {index} is {kind}, not an object")
        objects.append(normalize(item))
    return tuple(objects)


# --- keeping secrets out of messages ------------------------------------------------------------


def _leaves(value: Any) -> Iterable[str]:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, str | int | float):
        text = str(value)
        if text:
            yield text
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _leaves(item)


def secrets_of(commands: Iterable[Command]) -> list[str]:
    """Every text under which a sensitive value could show up: as is, JSON-escaped, PowerShell-quoted."""
    found: set[str] = set()
    every = [c for command in commands for c in ((command.pipe.source, command) if command.pipe else (command,))]
    for command in every:
        for name in command.sensitive:
            for text in _leaves(command.parameters.get(name)):
                found.add(text)
                found.add(json.dumps(text)[1:-1])
                found.add(text.replace("'", "''"))
    return sorted(found, key=len, reverse=True)  # longest first: a secret containing another is masked whole


def mask_text(text: str, commands: Iterable[Command]) -> str:
    """`text` with every sensitive value of `commands` replaced by the mask."""
    for secret in secrets_of(commands):
        text = text.replace(secret, MASK)
    return text


def render_command(command: Command) -> str:
    """A command as one line for error messages, built from `masked_parameters()`.

    Values (and a native command's arguments) are JSON-quoted so a value with newlines or quotes
    cannot make the message ambiguous.
    """
    if command.native:
        return " ".join([command.cmdlet, *(json.dumps(a, ensure_ascii=False) for a in command.arguments)])
    parts = [render_command(command.pipe.source), "|", command.cmdlet] if command.pipe else [command.cmdlet]
    for name, value in command.masked_parameters().items():
        parts.append(f"-{name}" if value is True else f"-{name} {json.dumps(value, default=str, ensure_ascii=False)}")
    return " ".join(parts)


def render_failure(command: Command, message: str) -> str:
    """`<command>: <message>` with the command's sensitive values masked in both parts."""
    return f"{render_command(command)}: {mask_text(message, [command])}"


# --- the runner's request ------------------------------------------------------------------------


def protocol_command(command: Command) -> dict[str, Any]:
    """One command as the runner's request carries it (see runner.ps1).

    A cmdlet: `{"cmdlet": name, "parameters": {...}, "select": [...]}` (parameter names without a
    leading dash), with `"pipe": {"source": <a cmdlet as above>, "parameter": name}` when one of its
    parameters takes the one object another cmdlet writes. A native command: `{"native": true,
    "executable": name, "arguments": [...]}`, which the runner array-splats, so each argument stays one argument.
    """
    if command.native:
        return {"native": True, "executable": command.cmdlet, "arguments": list(command.arguments)}
    document: dict[str, Any] = {
        "cmdlet": command.cmdlet,
        "parameters": {name.lstrip("-"): value for name, value in command.parameters.items()},
        "select": list(command.select),
    }
    if command.pipe is not None:
        document["pipe"] = {"source": protocol_command(command.pipe.source), "parameter": command.pipe.parameter}
    return document
