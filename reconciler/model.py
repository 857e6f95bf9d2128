"""The desired and live models: plain typed values that every layer passes along.

A resource is identified by (target, kind, identity). Desired records come from the manifest,
live records from discovery; both carry fields under the same camelCase names (the manifest's),
so the planner can diff them without knowing any system.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSONValue = Any
"""A JSON-compatible value (str, int, float, bool, None, list, dict)."""


class Severity(enum.StrEnum):
    """How bad a plan-time finding is: an error blocks apply (of its target), a warning is shown.

    Compared with ==, never `is`: a provider written against the words ("error", "warning") still works.
    """

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class ResourceKey:
    """Identifies one object on one target: what the plan, the journal and the fingerprint key on."""

    target: str
    kind: str
    identity: str

    @property
    def address(self) -> str:
        """A stable, human-readable address, like Terraform's (`pool.PartnerApplication.microsoft.exchange`)."""
        return f"{self.target}.{self.kind}.{self.identity}"


@dataclass(frozen=True)
class SourceLocation:
    """Where something was declared, so every message can point at file:line and the field path."""

    file: str
    line: int
    path: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}"


class Ensure(enum.StrEnum):
    PRESENT = "present"
    ABSENT = "absent"


class Mode(enum.StrEnum):
    """What a run does about drift (as Flux's suspend, plus a report-only mode).

    enforce: apply changes; warn: plan and report them, never apply; suspend: skip entirely
    (a suspended resource is still "declared", so prune never removes it).
    """

    ENFORCE = "enforce"
    WARN = "warn"
    SUSPEND = "suspend"


@dataclass(frozen=True)
class TargetSpec:
    """A system we connect to (a Skype pool, an Exchange org, a tenant) and how.

    `connection` holds transport settings (never secrets: those come from the environment).
    `prune` lists the kinds whose live objects that the manifest does not list are removed.
    """

    name: str
    provider: str
    connection: Mapping[str, JSONValue]
    prune: frozenset[str] = frozenset()
    location: SourceLocation | None = None
    mode: Mode = Mode.ENFORCE
    handlers: Mapping[str, Mapping[str, JSONValue]] = field(default_factory=dict)
    """Declared handlers (name -> settings, including `enabled`), e.g. iisreset on an Exchange target."""
    protect: frozenset[str] = frozenset()
    """Objects never removed by this tool, whatever prune or ensure say: `Kind.identity` or `identity`, casefolded."""

    def protects(self, kind: str, identity: str) -> bool:
        return identity.casefold() in self.protect or f"{kind}.{identity}".casefold() in self.protect


@dataclass(frozen=True)
class DesiredResource:
    """One resource as the manifest declares it, variables resolved and files read.

    Only the fields the manifest sets are in `fields`: a field left out is not managed.
    `field_lines` maps each field name to its manifest line for diagnostics.
    """

    key: ResourceKey
    ensure: Ensure
    fields: Mapping[str, JSONValue]
    location: SourceLocation
    field_lines: Mapping[str, int] = field(default_factory=dict)
    mode: Mode | None = None  # None: the target's mode


_BARE = all(not hasattr(c, "__post_init__") and not hasattr(c, "__slots__")
            for c in (DesiredResource, ResourceKey, SourceLocation))
"""The three classes are plain frozen dataclasses (nothing done at construction, a __dict__ each): `desired_resource`
may fill their __dict__ directly."""
_new = object.__new__


def desired_resource(target: str, kind: str, identity: str, ensure: Ensure, fields: Mapping[str, JSONValue],
                     file: str, line: int, path: str, field_lines: Mapping[str, int],
                     mode: Mode | None) -> DesiredResource:
    """`DesiredResource(ResourceKey(target, kind, identity), ensure, fields, SourceLocation(file, line, path),
    field_lines, mode)`, the same objects, made without the frozen classes' generated __init__ and its
    object.__setattr__ per field: the loader and the manifest cache make one per resource (10,000 for a large
    estate, where the __init__s cost ~0.01 s)."""
    if not _BARE:
        return DesiredResource(ResourceKey(target, kind, identity), ensure, fields, SourceLocation(file, line, path),
                               field_lines, mode)
    key = _new(ResourceKey)
    key.__dict__.update(target=target, kind=kind, identity=identity)
    location = _new(SourceLocation)
    location.__dict__.update(file=file, line=line, path=path)
    resource = _new(DesiredResource)
    resource.__dict__.update(key=key, ensure=ensure, fields=fields, location=location, field_lines=field_lines,
                             mode=mode)
    return resource


@dataclass(frozen=True)
class VerifyCheck:
    """One entry of the manifest's `verify:` list: a provider check to run on a target."""

    target: str
    check: str
    arguments: Mapping[str, JSONValue]
    location: SourceLocation


@dataclass(frozen=True)
class NotifyDestination:
    """One `notify:` destination, as a manifest or a notifications file declares it and its schema checked it
    (read by reconciler.manifest.notify, delivered to by reconciler.notify)."""

    type: str
    """webhook | teams | slack"""
    url_env: str
    """The environment variable that holds its URL (a secret: the URL itself is never written down)."""
    events: tuple[str, ...]
    """What it is told (every event when the manifest lists none)."""
    min_interval: str
    """The same event for the same target at most once per this duration (`1h`; `0s`: every time)."""

    @property
    def name(self) -> str:
        """How messages name it: its type and variable, never its URL."""
        return f"{self.type} ({self.url_env})"


@dataclass(frozen=True)
class DesiredState:
    """Everything the manifest asks for."""

    manifest_path: str
    manifest_sha256: str
    targets: Mapping[str, TargetSpec]
    resources: tuple[DesiredResource, ...]
    checks: tuple[VerifyCheck, ...] = ()
    notify: tuple[NotifyDestination, ...] = ()
    """The manifest's `notify:` destinations."""

    @functools.cached_property
    def by_target(self) -> Mapping[str, tuple[DesiredResource, ...]]:
        """The resources of each target, in manifest order: indexed once, in one pass."""
        grouped: dict[str, list[DesiredResource]] = {}
        for resource in self.resources:
            grouped.setdefault(resource.key.target, []).append(resource)
        return {name: tuple(items) for name, items in grouped.items()}

    def for_target(self, target: str) -> tuple[DesiredResource, ...]:
        return self.by_target.get(target, ())


@dataclass(frozen=True)
class LiveResource:
    """One object as discovery found it, fields under the manifest's camelCase names."""

    key: ResourceKey
    fields: Mapping[str, JSONValue]


@dataclass(frozen=True)
class LiveState:
    """Every object of every managed kind on one target, read in one go.

    A failed read raises; it is never turned into an empty state (that would look like
    everything is absent and cause false drift).
    """

    target: str
    resources: Mapping[ResourceKey, LiveResource]

    def get(self, key: ResourceKey) -> LiveResource | None:
        return self.resources.get(key)
