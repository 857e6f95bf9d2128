"""Values one target's resources take from another target's live state: signing certificates across the trust.

A resource may say `certificateOf: <target>` (an Office 365 service principal's credentials, an Exchange partner
application's cached keys): the sides that trust a system must hold the certificates it signs with now and the
one staged to take over. Those are read from the other target's live state in this run (its provider's
`signing_certificates`), never from a file or a record of an earlier run, so each cycle follows a rotation as
the servers report it (level-triggered). This runs after discovery and before the planner, which then compares
concrete values and knows no cross-target rule.

It also yields:
- the order of targets: a target that takes another's certificates is changed after it in one apply (the signing
  side stages its next certificate and publishes it before the trusting sides refresh);
- plan errors for a rotation in the wrong order: switching a signing certificate at once (no staged roll) while
  other targets trust the current one;
- the rotation timeline the plan shows: what happens now, what waits for which date.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from reconciler.errors import ReferenceProblem
from reconciler.kinds.certificates import CertificateRole, PublishedCertificate
from reconciler.kinds.spec import KindSpec
from reconciler.model import DesiredResource, DesiredState, LiveState, ResourceKey, Severity
from reconciler.plan import Diagnostic, TimelineEntry
from reconciler.providers.base import Registry


@dataclass(frozen=True)
class Resolved:
    """The desired state with every `certificateOf` made concrete, and what the run needs to know about it."""

    desired: DesiredState
    depends: Mapping[str, frozenset[str]]
    """target -> the targets whose certificates it takes (changed before it)."""
    diagnostics: tuple[Diagnostic, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()
    followers: Mapping[str, frozenset[ResourceKey]] = field(default_factory=dict)
    """target -> the resources that take its certificates (what changes on them after the target changed)."""


Source = Callable[[str], tuple[PublishedCertificate, ...]]
"""The certificates a named target publishes; raises ReferenceProblem when they cannot be known."""


class _Checked:
    """One resource's lookups: a source that cannot be read yields no certificates and a recorded problem."""

    def __init__(self, lookup: Source) -> None:
        self._lookup = lookup
        self.problems: list[str] = []

    def __call__(self, source: str) -> tuple[PublishedCertificate, ...]:
        try:
            return self._lookup(source)
        except ReferenceProblem as exc:
            self.problems.append(str(exc))
            return ()

    def problem(self, message: str) -> None:
        self.problems.append(message)


def _lookup_for(desired: DesiredState, live: Mapping[str, LiveState], registry: Registry
                ) -> tuple[dict[str, tuple[PublishedCertificate, ...]], Source]:
    cache: dict[str, tuple[PublishedCertificate, ...]] = {}

    def lookup(source: str) -> tuple[PublishedCertificate, ...]:
        if source in cache:
            return cache[source]
        target = desired.targets.get(source)
        if target is None:
            known = ", ".join(sorted(desired.targets)) or "none"
            raise ReferenceProblem(f"certificateOf: {source!r} is not a target of this manifest (targets: {known})")
        provider = registry.provider(target.provider)
        published = getattr(provider, "signing_certificates", None)
        if published is None:
            raise ReferenceProblem(f"certificateOf: target {source!r} ({target.provider}) publishes no signing "
                                   "certificate reconcile can read")
        if source not in live:
            raise ReferenceProblem(f"certificateOf: target {source!r} was not read in this run (suspended?), so "
                                   "its certificates are unknown")
        found: tuple[PublishedCertificate, ...] = published(target, desired.for_target(source), live[source])
        cache[source] = found
        return found

    return cache, lookup


def resolve(desired: DesiredState, live: Mapping[str, LiveState], registry: Registry) -> Resolved:
    """Every `certificateOf` resolved from the live states of this run; problems as plan errors on the resource."""
    cache, lookup = _lookup_for(desired, live, registry)
    resources: list[DesiredResource] = []
    depends: dict[str, set[str]] = {}
    diagnostics: list[Diagnostic] = []
    changed = False
    spec_of = _spec_lookup(desired, registry)
    for resource in desired.resources:
        spec = spec_of(resource)
        sources = spec.references(resource.fields) if spec is not None and spec.references is not None else ()
        if spec is None or spec.resolve is None or not sources:
            resources.append(resource)
            continue
        changed = True
        checked = _Checked(lookup)
        fields = spec.resolve(resource.fields, checked)
        diagnostics.extend(Diagnostic(Severity.ERROR, p, resource.key.address) for p in dict.fromkeys(checked.problems))
        for source in sources:
            if source != resource.key.target and spec.follows_source:
                depends.setdefault(resource.key.target, set()).add(source)
        resources.append(dataclasses.replace(resource, fields=fields))
    if not changed:
        return Resolved(desired, {})
    notes = _notes(desired.resources, desired, registry)  # the manifest's fields, which name the sources
    consumers = {source: [key.address for key, _ in found] for source, found in notes.items()}
    diagnostics.extend(_wrong_order(cache, consumers))
    out = dataclasses.replace(desired, resources=tuple(resources))
    return Resolved(out, {t: frozenset(s) for t, s in depends.items()}, tuple(diagnostics),
                    timeline(cache, consumers, {source: [(key.address, note) for key, note in found]
                                                for source, found in notes.items()}),
                    {source: frozenset(key for key, _ in found) for source, found in notes.items()})


def _spec_lookup(desired: DesiredState, registry: Registry) -> Callable[[DesiredResource], KindSpec | None]:
    """A resource's kind (None: its target or kind is unknown), its target's provider looked up once per target."""
    kinds: dict[str, Mapping[str, KindSpec] | None] = {}

    def spec_of(resource: DesiredResource) -> KindSpec | None:
        name = resource.key.target
        if name not in kinds:
            target = desired.targets.get(name)
            kinds[name] = registry.provider(target.provider).kinds if target is not None else None
        of_target = kinds[name]
        return of_target.get(resource.key.kind) if of_target is not None else None

    return spec_of


def _notes(resources: Iterable[DesiredResource], desired: DesiredState, registry: Registry
           ) -> dict[str, list[tuple[ResourceKey, str]]]:
    """source target -> (key, how it refreshes on its own, or "") of the resources that take its certificates."""
    found: dict[str, list[tuple[ResourceKey, str]]] = {}
    spec_of = _spec_lookup(desired, registry)
    for resource in resources:
        spec = spec_of(resource)
        if spec is None or spec.references is None:
            continue
        for source in spec.references(resource.fields):
            found.setdefault(source, []).append((resource.key, spec.refresh_note))
    return found


def _wrong_order(published: Mapping[str, tuple[PublishedCertificate, ...]],
                 consumers: Mapping[str, list[str]]) -> list[Diagnostic]:
    """A signing certificate switched at once while other targets trust the current one: refused."""
    found = []
    for source, certificates in published.items():
        for cert in certificates:
            if cert.immediate and consumers.get(source):
                found.append(Diagnostic(
                    Severity.ERROR,
                    f"refusing to switch {source}'s signing certificate to {cert.thumbprint} at once: "
                    f"{', '.join(consumers[source])} trust {source}'s certificates and cannot be given the new key "
                    "before it signs. Stage it instead (nextThumbprint + effectiveDate): each side gets the key "
                    "first, and it takes over at its date", cert.address or source))
    return found


def timeline(published: Mapping[str, tuple[PublishedCertificate, ...]],
             consumers: Mapping[str, list[str]],
             notes: Mapping[str, list[tuple[str, str]]] | None = None) -> tuple[TimelineEntry, ...]:
    """The rotation as the plan shows it: for each source with a staged certificate, what happens now, at its
    effective date, and after (the previous certificate removed once every side has the new one)."""
    entries: list[TimelineEntry] = []
    for source, certificates in sorted(published.items()):
        sides = ", ".join(consumers.get(source, [])) or "no declared side"
        for cert in certificates:
            if cert.role is not CertificateRole.NEXT:
                continue
            verb = "staged by this plan" if cert.staged_now else "staged"
            entries.append(TimelineEntry("now", source, f"{cert.thumbprint} {verb}; published next to the current "
                                                        f"certificate; pushed to {sides}"))
            entries.append(TimelineEntry(cert.effective or "its effective date", source,
                                         f"{cert.thumbprint} signs from here: every side must hold it by then"))
            entries.extend(TimelineEntry(cert.effective or "its effective date", source, f"{address}: {note}")
                           for address, note in (notes or {}).get(source, []) if note)
            entries.append(TimelineEntry(
                f"after {cert.effective or 'its effective date'}", source,
                "the previous certificate can be removed (declare removePrevious: true); sides that list "
                "certificates authoritatively drop it then"))
        previous = [c for c in certificates if c.role is CertificateRole.PREVIOUS]
        for cert in previous:
            entries.append(TimelineEntry("now", source, f"previous certificate {cert.thumbprint} still listed "
                                                        "(removePrevious: true removes it)"))
    return tuple(entries)
