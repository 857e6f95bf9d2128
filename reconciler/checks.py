"""Checks run at plan time, before anything is applied.

The cmdlets download a partner's metadata document when New (or Set -MetadataUrl) runs; a URL that
is down or wrong fails there, halfway through an apply. We download every such document while
planning instead, so the failure shows up in the plan and apply changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import httpx

from reconciler.changes import Action, Change
from reconciler.errors import MetadataError
from reconciler.kinds.spec import DiagnoseContext, KindSpec
from reconciler.metadata import Documents
from reconciler.model import DesiredState, Ensure, LiveResource, LiveState, Mode, Severity
from reconciler.plan import Diagnostic
from reconciler.providers.base import Registry, target_findings

KindLookup = Callable[[Change], KindSpec | None]


def metadata_urls_needed(change: Change, spec: KindSpec) -> list[tuple[str, str]]:
    """(field, url) pairs whose documents this change will download.

    Creates and replaces download every metadata URL they carry; an update only when it changes
    the URL (Set-CsPartnerApplication -MetadataUrl re-downloads; a trust-level change does not).
    """
    after = change.after or {}
    creating = Action.CREATE in change.actions
    found = []
    for name, value in after.items():
        if not spec.field(name).metadata_url or not isinstance(value, str) or not value:
            continue
        if creating or name in change.changed:
            found.append((name, value))
    return found


def check_metadata(changes: tuple[Change, ...], kind_of: KindLookup, *, timeout: float = 10.0,
                   client: httpx.Client | None = None, documents: Documents | None = None) -> tuple[Diagnostic, ...]:
    """Download each needed metadata document once (concurrently); an error diagnostic for each that fails.

    `documents`: the run's shared downloads (the trust graph reads the same ones); without it, this call's own.
    """
    wanted: list[tuple[Change, str, str]] = []
    for change in changes:
        spec = kind_of(change)
        if spec is not None:
            wanted.extend((change, name, url) for name, url in metadata_urls_needed(change, spec))
    if not wanted:
        return ()
    with contextlib.ExitStack() as stack:
        if documents is None:
            documents = stack.enter_context(Documents(timeout, client))
        results = documents.fetch(url for _, _, url in wanted)
    diagnostics = []
    for change, name, url in wanted:
        result = results[url]
        if isinstance(result, MetadataError):
            location = None
            if change.desired is not None:
                line = change.desired.field_lines.get(name, change.desired.location.line)
                location = f"{change.desired.location.file}:{line}"
            diagnostics.append(Diagnostic(Severity.ERROR, f"{name}: {result}", change.key.address, location))
    return tuple(diagnostics)


def check_kinds(desired: DesiredState, live: Mapping[str, LiveState], registry: Registry,
                context: DiagnoseContext) -> tuple[Diagnostic, ...]:
    """Each declared resource's own plan-time checks (its kind's `diagnose`), e.g. certificate dates."""
    found: list[Diagnostic] = []
    by_name: dict[str, dict[tuple[str, str], LiveResource]] = {}  # per target, built once: (kind, identity folded)
    kinds: dict[str, Mapping[str, KindSpec]] = {}  # per target: its provider's, looked up once
    for resource in desired.resources:
        target = desired.targets[resource.key.target]
        if resource.ensure is not Ensure.PRESENT or resource.key.target not in live:
            continue
        of_target = kinds.get(resource.key.target)
        if of_target is None:
            of_target = kinds[resource.key.target] = registry.provider(target.provider).kinds
        spec = of_target[resource.key.kind]
        if spec.diagnose is None or (resource.mode or target.mode) is Mode.SUSPEND:
            continue
        index = by_name.get(resource.key.target)
        if index is None:
            index = by_name[resource.key.target] = {}
            for k, r in live[resource.key.target].resources.items():
                index.setdefault((k.kind, k.identity.casefold()), r)
        have = index.get((resource.key.kind, resource.key.identity.casefold()))
        for severity, field, message in spec.diagnose(resource.fields, have.fields if have else None, context):
            line = resource.field_lines.get(field, resource.location.line)
            found.append(Diagnostic(severity, f"{field}: {message}" if field else message, resource.key.address,
                                    f"{resource.location.file}:{line}"))
    return tuple(found)


def check_targets(desired: DesiredState, registry: Registry) -> tuple[Diagnostic, ...]:
    """Each provider's checks of a target's declared resources taken together (`diagnose_target`)."""
    found: list[Diagnostic] = []
    for name, target in desired.targets.items():
        resources = [r for r in desired.for_target(name) if (r.mode or target.mode) is not Mode.SUSPEND]
        for severity, resource, field, message in target_findings(registry.provider(target.provider), target,
                                                                  resources):
            text = f"{field}: {message}" if field else message
            if resource is None:  # about the target's own declaration (its handlers, its settings)
                where = target.location
                found.append(Diagnostic(severity, text, name, f"{where.file}:{where.line}" if where else None))
                continue
            line = resource.field_lines.get(field, resource.location.line)
            found.append(Diagnostic(severity, text, resource.key.address, f"{resource.location.file}:{line}"))
    return tuple(found)
