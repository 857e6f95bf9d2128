"""The plan as a value: what will change, why, and the live state it was computed from.

A plan can be rendered (text for people, JSON for machines), saved and applied later. It carries a
fingerprint of every live record it saw and the manifest's hash; apply refuses a saved plan when
either no longer matches. Sensitive values are never stored in it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from operator import itemgetter
from typing import Any

from reconciler.changes import Action, Change, HandlerRun
from reconciler.model import LiveState, Mode, Severity

FORMAT_VERSION = "1.1"
"""1.1: a command may carry a `pipe` (its source command and the parameter bound to its one output object); 1.0
files read as before. Readers accept any 1.x."""


@dataclass(frozen=True)
class Diagnostic:
    """A problem found while planning. Errors block apply; warnings are shown."""

    severity: Severity
    message: str
    address: str | None = None
    location: str | None = None  # file:line in the manifest

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        what = f"{self.address}: " if self.address else ""
        return f"{self.severity}: {where}{what}{self.message}"


@dataclass(frozen=True)
class TimelineEntry:
    """One step of a certificate rotation across targets: when ("now", a date, "after <date>"), on which signing
    target, and what happens or must have happened by then."""

    when: str
    source: str
    what: str


@dataclass(frozen=True)
class Plan:
    manifest_path: str
    manifest_sha256: str
    targets: tuple[str, ...]
    fingerprints: Mapping[str, Mapping[str, str]]
    changes: tuple[Change, ...]
    diagnostics: tuple[Diagnostic, ...] = ()
    created_at: str = ""
    format_version: str = FORMAT_VERSION
    checked: int = 0  # how many declared resources were compared
    handlers: tuple[HandlerRun, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()

    @property
    def has_changes(self) -> bool:
        """Anything to do: a change, or a handler still due from an earlier apply."""
        return bool(self.changes) or bool(self.handlers_due)

    @property
    def handlers_due(self) -> tuple[HandlerRun, ...]:
        """Handlers an earlier apply made due that have not run successfully since, or never applied as declared:
        apply runs them."""
        return tuple(h for h in self.handlers if h.due)

    @property
    def enforced(self) -> tuple[Change, ...]:
        """The changes apply will make (those in warn mode are only reported)."""
        return tuple(c for c in self.changes if c.mode is Mode.ENFORCE)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == Severity.ERROR for d in self.diagnostics)

    def summary(self) -> dict[str, int]:
        counts = {"add": 0, "change": 0, "replace": 0, "remove": 0}
        for change in self.changes:
            if change.is_replace:
                counts["replace"] += 1
            elif change.actions[0] is Action.CREATE:
                counts["add"] += 1
            elif change.actions[0] is Action.UPDATE:
                counts["change"] += 1
            else:
                counts["remove"] += 1
        return counts

    def for_target(self, target: str) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.key.target == target)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
"""What json.dumps(value, sort_keys=True, separators=(",", ":"), default=str) writes, built once (json.dumps
builds an encoder per call when given options, and fingerprints encode every live record)."""

_RECORD: Callable[[Any, int], Any] | None = (
    c_make_encoder(None, str, encode_basestring_ascii, None, ":", ",", True, False, True)
    if c_make_encoder is not None else None)
"""The C encoder `_CANONICAL.encode` builds on every call, built once: the same text for a live record (same
`default`, separators, key order, ASCII escaping and float text). It keeps no set of the containers being
encoded, which only a value that contains itself needs (a live record is read from JSON: it never does)."""


def canonical_json(value: Any) -> str:
    return _CANONICAL.encode(value)


def fingerprint_live(live: LiveState) -> dict[str, str]:
    """One hash per live record, keyed by address, plus '*' over the whole target.

    Per-record hashes let a refusal name exactly which objects changed since the plan.
    """
    sha256, encode = hashlib.sha256, _RECORD
    records = {}
    for key, resource in sorted(live.resources.items(), key=itemgetter(0)):  # keys are unique: sorted by key
        fields = resource.fields if type(resource.fields) is dict else dict(resource.fields)
        text = canonical_json(fields) if encode is None else "".join(encode(fields, 0))
        records[key.address] = sha256(text.encode()).hexdigest()
    records["*"] = hashlib.sha256(canonical_json(records).encode()).hexdigest()
    return records


class LiveFingerprints(Mapping[str, Mapping[str, str]]):
    """`fingerprint_live` of each target's live state, worked out when first asked for.

    Only a saved plan (`--out`, the JSON and Markdown documents) and the check of one against the estate read them;
    a plan that is shown and recorded hashes no live record (10,000 of them at 200 targets x 50 resources).
    """

    def __init__(self, live: Mapping[str, LiveState]) -> None:
        self._live = dict(live)  # as read for this plan, whatever is read later
        self._done: dict[str, Mapping[str, str]] = {}

    def __getitem__(self, target: str) -> Mapping[str, str]:
        found = self._done.get(target)
        if found is None:
            found = self._done[target] = fingerprint_live(self._live[target])
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._live)

    def __len__(self) -> int:
        return len(self._live)


def fingerprint_differences(saved: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Addresses whose live record appeared, disappeared or changed."""
    addresses = (set(saved) | set(current)) - {"*"}
    return sorted(a for a in addresses if saved.get(a) != current.get(a))
