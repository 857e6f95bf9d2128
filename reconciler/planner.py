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
    for name, target in desired.targets.items():
        if target.mode is Mode.SUSPEND:
            continue
        provider = registry.provider(target.provider)
        target_changes = _plan_target(desired.for_target(name), live[name], target, provider.kinds)
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


def _plan_target(desired: Iterable[DesiredResource], live: LiveState, target: TargetSpec,
                 kinds: Mapping[str, KindSpec]) -> list[Change]:
    live_by_id = {(k.kind, k.identity.casefold()): r for k, r in live.resources.items()}  # identities fold case
    declared: set[tuple[str, str]] = set()
    changes: list[Change] = []
    target_mode = target.mode
    quick = _quick(kinds)
    for want in desired:
        key = want.key
        ident = (key.kind, key.identity.casefold())
        declared.add(ident)  # a suspended resource is still declared: prune must not remove it
        mode = want.mode or target_mode
        if mode is Mode.SUSPEND:
            continue
        have = live_by_id.get(ident)
        if have is not None and want.ensure is Ensure.PRESENT:
            own = quick[key.kind]
            if own is not None and want.fields.items() <= have.fields.items() and own.isdisjoint(want.fields):
                continue  # every wanted value is the live one, compared with `==`: no change (as _plan_resource finds)
        change = _plan_resource(want, have, kinds[key.kind], mode)
        if change is not None:
            changes.append(change)
    if not target.prune:
        return changes
    for ident, have in sorted(live_by_id.items()):
        if ident[0] in target.prune and ident not in declared and not kinds[ident[0]].singleton:
            changes.append(Change(
                key=have.key, actions=(Action.DELETE,), action_reason=ActionReason.PRUNE,
                reason=f"not in the manifest, and prune is on for {ident[0]} on target {live.target!r}",
                before=dict(have.fields), after=None, live=have, mode=target.mode, kind=kinds[ident[0]]))
    return changes


def _quick(kinds: Mapping[str, KindSpec]) -> dict[str, frozenset[str] | None]:
    """Per kind, the fields that compare with a function of their own (None: the kind has a replace rule). A present
    object whose wanted values all equal (`==`) its live ones, none of them such a field, has no change."""
    return {name: None if spec.replace_when is not None else
            frozenset(n for n, f in spec.fields.items() if f.equal is not None) for name, spec in kinds.items()}


def _changed(want: DesiredResource, live_fields: Mapping[str, JSONValue], spec: KindSpec) -> tuple[str, ...]:
    """The managed fields whose live values differ from the wanted ones, in the manifest's order (as `_differs`
    judges: equal values of a field without a comparison of its own are equal in one `==`)."""
    fields = spec.fields
    changed = []
    for name, value in want.fields.items():
        have = live_fields.get(name)
        if value == have:
            field = fields.get(name)
            if field is None or field.equal is None:
                continue
        if _differs(spec.field(name), value, have, want):
            changed.append(name)
    return tuple(changed)


def _plan_resource(want: DesiredResource, have: LiveResource | None, spec: KindSpec,
                   mode: Mode = Mode.ENFORCE) -> Change | None:
    live_fields: Mapping[str, JSONValue]
    if have is not None and want.ensure is Ensure.PRESENT:  # the common case: the object is there
        live_fields = have.fields
        changed = _changed(want, live_fields, spec)
        if not changed and spec.replace_when is None:
            return None
        key = have.key
    else:
        key = have.key if have is not None else want.key
        if want.ensure is Ensure.ABSENT:
            if have is None or spec.singleton:
                return None
            return Change(key=key, actions=(Action.DELETE,), action_reason=ActionReason.ENSURE_ABSENT,
                          reason=f"ensure: absent ({want.location.file}:{want.location.line})",
                          before=dict(have.fields), after=None, desired=want, live=have, mode=mode, kind=spec)
        if have is None and not spec.singleton:
            return Change(key=key, actions=(Action.CREATE,), action_reason=ActionReason.MISSING,
                          reason="not found on the target", before=None, after=dict(want.fields), desired=want,
                          mode=mode, kind=spec)
        live_fields = {}
        changed = _changed(want, live_fields, spec)
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
                      changed=changed, desired=want, live=have, mode=mode, kind=spec)
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
                  before=dict(live_fields), after=after, changed=changed, desired=want, live=have, mode=mode,
                  kind=spec)


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
    """The changes in the order they run, each with its commands (made with the kind attached: they may read it)."""
    ranks = _kind_ranks(kinds)
    position = {id(c): i for i, c in enumerate(changes)}
    removals = [c for c in changes if c.actions == (Action.DELETE,)]
    others = [c for c in changes if c.actions != (Action.DELETE,)]
    removals.sort(key=lambda c: (-ranks[c.key.kind], position[id(c)]))
    others.sort(key=lambda c: (ranks[c.key.kind], position[id(c)]))
    return [dataclasses.replace(change, commands=provider.commands(change)) for change in removals + others]


def plan_handlers(desired: DesiredState, changes: tuple[Change, ...], registry: Registry) -> tuple[HandlerRun, ...]:
    """The handlers the changes make necessary: each at most once per target, only for enforced changes."""
    runs = []
    enforced: dict[str, list[Change]] = {}  # by target, in plan order
    for change in changes:
        if change.mode is Mode.ENFORCE:
            enforced.setdefault(change.key.target, []).append(change)
    for name, target in desired.targets.items():
        for handler, spec in handlers_of(registry.provider(target.provider)).items():
            settings = target.handlers.get(handler)
            if settings is None or settings.get("enabled") is False:
                continue
            triggering = tuple(c for c in enforced.get(name, ()) if c.key.kind in spec.triggered_by)
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
