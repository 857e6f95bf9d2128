"""The planner: a pure function from (desired, live) to ordered changes.

It knows no cmdlet. What it knows about a kind comes from the provider's declarative KindSpec
(which fields force a replace and why, which kinds must come first); the provider then turns each
change into commands. Same inputs, same plan: that is what lets a saved plan be checked later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.changes import Action, ActionReason, Change, HandlerRun
from reconciler.kinds.spec import FieldSpec, KindSpec
from reconciler.model import (
    DesiredResource,
    DesiredState,
    Ensure,
    JSONValue,
    LiveResource,
    LiveState,
    Mode,
    TargetSpec,
)
from reconciler.providers.base import Provider, Registry, handlers_of


def plan_changes(desired: DesiredState, live: Mapping[str, LiveState], registry: Registry) -> tuple[Change, ...]:
    """All changes for every target, in the order they must run.

    Per target: pure removals first (dependents before what they depend on, like the seed scripts
    remove the stray `app` first), then creates, updates and replaces in dependency order, each
    replace's Remove immediately before its New.
    """
    changes: list[Change] = []
    by_target: dict[str, list[DesiredResource]] = {name: [] for name in desired.targets}
    for resource in desired.resources:
        by_target[resource.key.target].append(resource)
    for name, target in desired.targets.items():
        if target.mode is Mode.SUSPEND:
            continue
        provider = registry.provider(target.provider)
        target_changes = _plan_target(by_target[name], live[name], target, provider.kinds)
        changes.extend(_ordered(target_changes, provider.kinds, provider))
    return tuple(changes)


def values_equal(spec: FieldSpec, want: JSONValue, have: JSONValue) -> bool:
    """Compare as the system does: unset and empty are the same; some fields ignore case."""
    if want in (None, "", []) and have in (None, "", []):
        return True
    if spec.ignore_case and isinstance(want, str) and isinstance(have, str):
        return want.casefold() == have.casefold()
    return bool(want == have)


def _equal(spec: FieldSpec, want: JSONValue, have: JSONValue, desired: Mapping[str, JSONValue]) -> bool:
    if spec.equal is not None:
        return spec.equal(want, have, desired)
    return values_equal(spec, want, have)


def _differs(spec: FieldSpec, value: JSONValue, have: JSONValue, want: DesiredResource) -> bool:
    """Whether a managed field's live value differs from the wanted one (as `_equal` judges)."""
    if spec.control:
        return False
    if spec.equal is None and value == have:
        return False  # the common case, in one comparison: values_equal says the same of equal values
    return not _equal(spec, value, have, want.fields)


def _norm(kind: str, identity: str) -> tuple[str, str]:
    return kind, identity.casefold()


def _plan_target(desired: Iterable[DesiredResource], live: LiveState, target: TargetSpec,
                 kinds: Mapping[str, KindSpec]) -> list[Change]:
    live_by_id = {_norm(k.kind, k.identity): r for k, r in live.resources.items()}
    declared: set[tuple[str, str]] = set()
    changes: list[Change] = []
    for want in desired:
        ident = _norm(want.key.kind, want.key.identity)
        declared.add(ident)  # a suspended resource is still declared: prune must not remove it
        mode = want.mode or target.mode
        if mode is Mode.SUSPEND:
            continue
        change = _plan_resource(want, live_by_id.get(ident), kinds[want.key.kind])
        if change is not None:
            changes.append(change if change.mode is mode else dataclasses.replace(change, mode=mode))
    for ident, have in sorted(live_by_id.items()):
        if ident[0] in target.prune and ident not in declared and not kinds[ident[0]].singleton:
            changes.append(Change(
                key=have.key, actions=(Action.DELETE,), action_reason=ActionReason.PRUNE,
                reason=f"not in the manifest, and prune is on for {ident[0]} on target {live.target!r}",
                before=dict(have.fields), after=None, live=have, mode=target.mode))
    return changes


def _plan_resource(want: DesiredResource, have: LiveResource | None, spec: KindSpec) -> Change | None:
    key = have.key if have is not None else want.key
    if want.ensure is Ensure.ABSENT:
        if have is None or spec.singleton:
            return None
        return Change(key=key, actions=(Action.DELETE,), action_reason=ActionReason.ENSURE_ABSENT,
                      reason=f"ensure: absent ({want.location.file}:{want.location.line})",
                      before=dict(have.fields), after=None, desired=want, live=have)
    if have is None and not spec.singleton:
        return Change(key=key, actions=(Action.CREATE,), action_reason=ActionReason.MISSING,
                      reason="not found on the target", before=None, after=dict(want.fields), desired=want)
    live_fields: Mapping[str, JSONValue] = have.fields if have is not None else {}
    changed = tuple(name for name, value in want.fields.items()
                    if _differs(spec.field(name), value, live_fields.get(name), want))
    reasons = [spec.field(name).replace_reason for name in changed if spec.field(name).replace_reason]
    if spec.replace_when is not None and have is not None:
        rule = spec.replace_when(want.fields, live_fields)
        if rule:
            reasons.append(rule)
    if reasons and not spec.singleton:
        return Change(key=key, actions=(Action.DELETE, Action.CREATE),
                      action_reason=ActionReason.REPLACE_BECAUSE_CANNOT_UPDATE,
                      reason="; ".join(dict.fromkeys(r for r in reasons if r)),
                      before=dict(live_fields), after=_replacement(want.fields, live_fields, spec),
                      changed=changed, desired=want, live=have)
    if not changed:
        return None
    after = {**live_fields, **{n: v for n, v in want.fields.items() if not spec.field(n).control}}
    written = [n for n in spec.exclusive if n in changed and want.fields.get(n) not in (None, "", False)]
    for name in spec.exclusive:
        if written and name not in written:
            after[name] = None  # a form written replaces the one the object had
    for name in changed:
        merge = spec.field(name).merge
        if merge is not None:
            after[name] = merge(want.fields, live_fields)
    return Change(key=key, actions=(Action.UPDATE,), action_reason=ActionReason.DRIFT,
                  reason="differs from the manifest: " + ", ".join(changed),
                  before=dict(live_fields), after=after, changed=changed, desired=want, live=have)


def _replacement(desired: Mapping[str, JSONValue], live: Mapping[str, JSONValue],
                 spec: KindSpec) -> dict[str, JSONValue]:
    """What a replace's New creates. A field left out is not managed, so a replace must not reset it: the kind
    says which live values its New carries over (derived from the parameter sets for cmdlet kinds)."""
    return spec.replacement(desired, live) if spec.replacement is not None else dict(desired)


def _kind_ranks(kinds: Mapping[str, KindSpec]) -> dict[str, int]:
    ranks: dict[str, int] = {}

    def rank(kind: str, seen: frozenset[str]) -> int:
        if kind not in ranks:
            deps = [k for k in kinds[kind].after if k in kinds and k not in seen]
            ranks[kind] = 1 + max((rank(k, seen | {kind}) for k in deps), default=0)
        return ranks[kind]

    for kind in kinds:
        rank(kind, frozenset())
    return ranks


def _ordered(changes: list[Change], kinds: Mapping[str, KindSpec], provider: Provider) -> list[Change]:
    ranks = _kind_ranks(kinds)
    position = {id(c): i for i, c in enumerate(changes)}
    removals = [c for c in changes if c.actions == (Action.DELETE,)]
    others = [c for c in changes if c.actions != (Action.DELETE,)]
    removals.sort(key=lambda c: (-ranks[c.key.kind], position[id(c)]))
    others.sort(key=lambda c: (ranks[c.key.kind], position[id(c)]))
    ordered = []
    for change in removals + others:
        attached = dataclasses.replace(change, kind=kinds.get(change.key.kind))  # the commands may read it
        ordered.append(dataclasses.replace(attached, commands=provider.commands(attached)))
    return ordered


def plan_handlers(desired: DesiredState, changes: tuple[Change, ...], registry: Registry) -> tuple[HandlerRun, ...]:
    """The handlers the changes make necessary: each at most once per target, only for enforced changes."""
    runs = []
    for name, target in desired.targets.items():
        for handler, spec in handlers_of(registry.provider(target.provider)).items():
            settings = target.handlers.get(handler)
            if settings is None or settings.get("enabled") is False:
                continue
            triggering = tuple(c for c in changes if c.key.target == name and c.mode is Mode.ENFORCE
                               and c.key.kind in spec.triggered_by)
            config: Mapping[str, Any] = {k: v for k, v in settings.items() if k != "enabled"}
            narrow = spec.narrow
            if narrow is not None:  # the changes that make some of its settings run, and those settings
                triggering = tuple(c for c in triggering if spec.commands(narrow(config, (c,))))
                config = narrow(config, triggering)
            triggers = tuple(c.key.address for c in triggering)
            if triggers:
                commands = spec.commands(config)
                if commands:
                    runs.append(HandlerRun(name, handler, triggers, commands))
    return tuple(runs)
