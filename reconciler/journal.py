"""An append-only journal of what apply did, one JSON line per event.

Written before a batch runs (with the live record of every object a replace will remove) and after
it (with each change's outcome), so an interrupted apply leaves a record of what it was doing and
of any object it had removed. Secrets never reach it: commands are stored masked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import JournalError


class Journal:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()  # targets are applied concurrently

    def record(self, event: str, **data: Any) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **data},
                          sort_keys=True, default=str)
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def read_events(path: Path | None) -> list[dict[str, Any]]:
    """Every event in the journal, oldest first; a torn last line (a crash mid-write) is skipped.

    A whole line that is not an event as apply writes it (changed by hand or by another tool) raises JournalError
    naming the file and line: recovery cannot tell what it records, and skipping it could forget an object a replace
    removed."""
    if path is None or not path.is_file():
        return []
    events = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                problem = _shape_problem(event)
                if problem is not None:
                    raise JournalError(f"{path}:{number}: {problem}, not what apply writes (the line was changed by "
                                       "hand or by another tool); mend the line, or move the journal aside, which "
                                       "forgets any replace it records as unfinished")
                events.append(event)
    return events


def _shape_problem(event: dict[str, Any]) -> str | None:
    """What in an event the readers here (`unfinished`, `applied_commands`) could not read, or None."""
    for key in ("changes", "outcomes"):
        records = event.get(key)
        if records is not None and (not isinstance(records, list) or not all(isinstance(r, dict) for r in records)):
            return f"{key!r} is not a list of records"
    for index, change in enumerate(event.get("changes") or ()):
        if change.get("replaced") is not None and (not isinstance(change["replaced"], dict)
                                                   or not isinstance(change.get("address"), str)):
            return f"changes[{index}] has a replaced object without its address and fields"
    for key in ("handlers_due", "commands"):
        if event.get(key) is not None and not isinstance(event[key], list):
            return f"{key!r} is not a list"
    return None


@dataclass(frozen=True)
class Unfinished:
    """What the journal says a crashed or failed apply left undone on one target."""

    removed: Mapping[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)
    """address -> (when, the object's fields as read before a replace removed it) for replaces whose New and
    restore did not both happen (killed between Remove and New, or a failed New whose restore failed)."""
    handlers: Mapping[str, str] = field(default_factory=dict)
    """handler address -> since when it is due: it was due in an apply and has not run successfully since."""


def applied_commands(events: list[dict[str, Any]], address: str) -> frozenset[str]:
    """The commands (canonical JSON of Command.to_json) a handler at `address` ran in a run that succeeded."""
    from reconciler.plan import canonical_json

    return frozenset(canonical_json(command) for event in events
                     if event.get("event") == "handler" and event.get("address") == address and not event.get("error")
                     and event.get("ran") is not False for command in event.get("commands") or [])


RESOLVED = frozenset({"applied", "failed", "failed, restored", "not run"})
"""Outcomes after which a replaced object exists again (or was never removed)."""


def unfinished(events: list[dict[str, Any]], target: str) -> Unfinished:
    """Replay one target's journal: removals not undone, handlers due and not yet run successfully."""
    removed: dict[str, tuple[str, Mapping[str, Any]]] = {}
    handlers: dict[str, str] = {}
    last_batch: list[str] = []
    for event in events:
        if event.get("target") != target and not str(event.get("address", "")).startswith(f"{target}."):
            continue
        kind, when = event.get("event"), str(event.get("time", ""))
        if kind == "batch_start":
            last_batch = []
            for change in event.get("changes") or []:
                if change.get("replaced") is not None:
                    removed[str(change["address"])] = (when, change["replaced"])
                    last_batch.append(str(change["address"]))
            for address in event.get("handlers_due") or []:
                handlers.setdefault(str(address), when)
        elif kind == "batch_end":
            for outcome in event.get("outcomes") or []:
                if outcome.get("status") in RESOLVED:
                    removed.pop(str(outcome.get("address")), None)
        elif kind == "batch_undelivered":
            for address in last_batch:  # nothing of that batch ran; an earlier batch's removal still stands
                removed.pop(address, None)
        elif kind == "handler" and not event.get("error"):  # ran, or was not needed after all
            handlers.pop(str(event.get("address")), None)
    return Unfinished(removed, handlers)
