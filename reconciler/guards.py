"""Guards against deleting what nobody meant to delete. They run on every plan, before anything is applied.

- Protected objects (`protect:` on a target) are never removed, whatever prune or `ensure: absent` say.
- Prune on an empty list: `prune: [Kind]` on a target whose manifest declares no resource of that kind would
  delete every live object of the kind (an emptied `resources:` list, a bad merge). Nothing of that kind is
  pruned; the plan says so.
- A deletion limit per run: more deletions than `max_deletions`, or (from three deletions up) more than
  `max_deletion_share` of a target's live objects of that kind, is an error that blocks the apply until the
  run is allowed more (`--allow-deletions N`). The plan names the guard and the count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.changes import Action, ActionReason, Change
from reconciler.model import DesiredState, LiveState, Severity
from reconciler.plan import Diagnostic

SHARE_FROM = 3
"""The share rule applies from this many deletions on a target (deleting 1 of 2 objects is ordinary)."""


@dataclass(frozen=True)
class DeletionLimits:
    max_deletions: int = 10
    max_deletion_share: float = 0.5
    allowed: int = 0
    """Deletions this run may make beyond the limits (`--allow-deletions N`)."""


def guard(changes: tuple[Change, ...], desired: DesiredState, live: Mapping[str, LiveState],
          limits: DeletionLimits) -> tuple[tuple[Change, ...], tuple[Diagnostic, ...]]:
    """The changes that pass the guards, and what the guards stopped, as diagnostics."""
    declared: set[tuple[str, str]] | None = None  # (target, kind) declared: built at the first pruning removal
    kept: list[Change] = []
    stopped: dict[tuple[str, str], int] = {}
    protected: list[Change] = []
    for change in changes:
        key = (change.key.target, change.key.kind)
        spec = desired.targets.get(change.key.target)
        if change.actions == (Action.DELETE,) and spec is not None \
                and spec.protects(change.key.kind, change.key.identity):
            protected.append(change)
            continue
        if change.action_reason is ActionReason.PRUNE:
            if declared is None:
                declared = {(r.key.target, r.key.kind) for r in desired.resources}
            if key not in declared:
                stopped[key] = stopped.get(key, 0) + 1
                continue
        kept.append(change)
    found = [Diagnostic(Severity.WARNING, f"prune is on for {kind} on target {target!r}, but the manifest declares no "
                                          f"{kind} there: {count} pruning removal(s) not planned (an empty list is "
                                          "more likely a mistake than a wish to delete them all; use ensure: absent)")
             for (target, kind), count in sorted(stopped.items())]
    found += [Diagnostic(Severity.WARNING, f"protected by targets.{c.key.target}.protect: not removed "
                                           f"({c.action_reason.value})", c.key.address) for c in protected]
    deletions = [c for c in kept if c.actions == (Action.DELETE,)]
    allowance = limits.max_deletions + limits.allowed
    if len(deletions) > allowance:
        found.append(Diagnostic(Severity.ERROR, f"deletion guard: this plan removes {len(deletions)} objects, "
                                                f"more than the {allowance} one run may remove; review it and allow "
                                                f"them with --allow-deletions {len(deletions) - limits.max_deletions}"))
    by_kind: dict[tuple[str, str], int] = {}
    for change in deletions:
        by_kind[(change.key.target, change.key.kind)] = by_kind.get((change.key.target, change.key.kind), 0) + 1
    for (target, kind), count in sorted(by_kind.items()):
        if count < SHARE_FROM:
            continue  # the share rule starts at SHARE_FROM deletions: no need to count the live objects
        state = live.get(target)
        total = sum(1 for k in state.resources if k.kind == kind) if state is not None else 0
        if total and count > limits.max_deletion_share * total + limits.allowed:
            found.append(Diagnostic(Severity.ERROR, f"deletion guard: this plan removes {count} of the {total} live "
                                                     f"{kind} objects on target {target!r} (more than "
                                                     f"{limits.max_deletion_share:.0%}); review it and allow them with "
                                                     f"--allow-deletions {count}"))
    return tuple(kept), tuple(found)
