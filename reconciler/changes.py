"""A change: one resource's move from its live state to its desired state, as a value.

The planner makes these without knowing any cmdlet; the provider then attaches the commands.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.commands import Command
from reconciler.kinds.spec import KindSpec
from reconciler.model import DesiredResource, LiveResource, Mode, ResourceKey


class Action(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class ActionReason(enum.StrEnum):
    """Why a change exists, in words a machine can switch on (Terraform's `action_reason`)."""

    MISSING = "missing"
    DRIFT = "drift"
    REPLACE_BECAUSE_CANNOT_UPDATE = "replace_because_cannot_update"
    ENSURE_ABSENT = "ensure_absent"
    PRUNE = "delete_because_not_in_manifest"


@dataclass(frozen=True)
class Change:
    """One planned change.

    `actions` is (create,), (update,), (delete,) or (delete, create) for a replace.
    `before` is the live record (None on create), `after` the record once applied (None on delete).
    `changed` lists the fields whose values differ (what a person reads first).
    """

    key: ResourceKey
    actions: tuple[Action, ...]
    action_reason: ActionReason
    reason: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    changed: tuple[str, ...] = ()
    desired: DesiredResource | None = None
    live: LiveResource | None = None
    commands: tuple[Command, ...] = field(default=())
    mode: Mode = Mode.ENFORCE  # warn: reported, never applied
    kind: KindSpec | None = field(default=None, compare=False, repr=False)
    """The kind's declaration, attached by the planner, so no later layer looks it up again."""

    @property
    def is_replace(self) -> bool:
        return self.actions == (Action.DELETE, Action.CREATE)

    @property
    def symbol(self) -> str:
        if self.is_replace:
            return "-/+"
        return {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-"}[self.actions[0]]


@dataclass(frozen=True)
class HandlerRun:
    """A handler the plan will run once on a target after its changes (e.g. iisreset), and why."""

    target: str
    name: str
    triggered_by: tuple[str, ...]  # addresses of the changes that make it necessary
    commands: tuple[Command, ...]
    due_since: str | None = None
    """Set when an earlier apply made this handler due and it has not run successfully since (a failed
    iisreset, or a run killed before it): it runs whatever this plan's changes do."""
    unapplied: bool = False
    """Some of its commands have never run successfully on this target (a handler `until_applied`, by the
    journal): it runs whatever this plan's changes do."""

    @property
    def due(self) -> bool:
        """It runs whatever the changes do (due since an earlier apply, or never applied as declared)."""
        return bool(self.due_since) or self.unapplied

    @property
    def address(self) -> str:
        return f"{self.target}.handler.{self.name}"
