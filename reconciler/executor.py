"""The executor: runs one target's changes in order and never leaves it worse than it found it.

A target's commands go in one round trip that stops at the first failure. If that failure is the
New of a replace whose Remove already ran, the object that was removed is re-created exactly as it
was read (the journal also holds its record). Changes after a failure are not run.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.changes import Change
from reconciler.commands import CommandResult, Transport
from reconciler.errors import TransportError
from reconciler.journal import Journal
from reconciler.kinds.spec import KindSpec
from reconciler.providers.base import Provider
from reconciler.render.values import shown_record

KindLookup = Callable[[Change], KindSpec | None]


class Status(enum.StrEnum):
    APPLIED = "applied"
    FAILED = "failed"
    NOT_RUN = "not run"
    RESTORED = "failed, restored"
    RESTORE_FAILED = "failed, RESTORE FAILED"
    WARNED = "reported only (mode: warn)"


@dataclass(frozen=True)
class ChangeOutcome:
    change: Change
    status: Status
    error: str | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (Status.APPLIED, Status.WARNED)


def _replaced(change: Change, spec: KindSpec | None) -> dict[str, Any] | None:
    """The record a replace removes, as read, so a later run can re-create it if this one dies before its New.

    Sensitive fields are never written: a kind with one set cannot be recovered from the journal (the executor's
    own restore still covers a failed New)."""
    if not change.is_replace or change.live is None:
        return None
    fields = dict(change.live.fields)
    if spec is not None and any(spec.field(n).sensitive and v not in (None, "") for n, v in fields.items()):
        return None
    return fields


def execute_target(changes: Sequence[Change], provider: Provider, transport: Transport, journal: Journal,
                   kind_of: KindLookup, handlers_due: Sequence[str] = ()) -> tuple[ChangeOutcome, ...]:
    if not changes:
        return ()
    commands = [cmd for change in changes for cmd in change.commands]
    owners = [i for i, change in enumerate(changes) for _ in change.commands]
    target = changes[0].key.target
    journal.record("batch_start", target=target, handlers_due=list(handlers_due), changes=[
        {"address": c.key.address, "actions": [a.value for a in c.actions],
         "before": shown_record(kind_of(c), c.before), "commands": [cmd.to_json() for cmd in c.commands],
         "replaced": _replaced(c, kind_of(c))}
        for c in changes])
    try:
        results = transport.invoke(commands, stop_on_error=True)
    except TransportError as exc:
        journal.record("batch_undelivered", target=target, error=str(exc))
        return tuple(ChangeOutcome(c, Status.NOT_RUN, error=f"not delivered: {exc}") for c in changes)

    by_change: list[list[CommandResult]] = [[] for _ in changes]
    for owner, result in zip(owners, results, strict=False):
        by_change[owner].append(result)

    outcomes: list[ChangeOutcome] = []
    for change, ran in zip(changes, by_change, strict=True):
        if not ran:
            outcomes.append(ChangeOutcome(change, Status.NOT_RUN))
        elif all(r.ok for r in ran) and len(ran) == len(change.commands):
            outcomes.append(ChangeOutcome(change, Status.APPLIED))
        else:
            failed = next(r for r in ran if not r.ok)
            outcomes.append(_failed(change, ran, failed.error or "failed", provider, transport))
    journal.record("batch_end", target=target, outcomes=[
        {"address": o.change.key.address, "status": o.status.value, "error": o.error, "note": o.note}
        for o in outcomes])
    return tuple(outcomes)


def _failed(change: Change, ran: list[CommandResult], error: str, provider: Provider,
            transport: Transport) -> ChangeOutcome:
    """A replace whose Remove ran but whose New failed gets its old object back."""
    removed = change.is_replace and ran[0].ok and change.live is not None
    if not removed:
        return ChangeOutcome(change, Status.FAILED, error=error)
    assert change.live is not None
    restore = provider.restore_commands(change.live)
    try:
        results = transport.invoke(restore, stop_on_error=True)
    except TransportError as exc:
        return ChangeOutcome(change, Status.RESTORE_FAILED, error=error, note=f"restore not delivered: {exc}")
    if len(results) == len(restore) and all(r.ok for r in results):
        shown = "; ".join(c.display() for c in restore)
        return ChangeOutcome(change, Status.RESTORED, error=error, note=f"restored the removed object: {shown}")
    bad = next((r.error for r in results if not r.ok), "incomplete")
    return ChangeOutcome(change, Status.RESTORE_FAILED, error=error,
                         note=f"could not restore the removed object: {bad}")
