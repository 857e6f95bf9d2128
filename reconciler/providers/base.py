"""The provider plugin API.

A provider knows one system: the kinds it owns (their fields, schema and which fields the system
cannot change in place), how to read a whole target in one round trip, and how to turn a change
into commands. It never decides what should change: that is the planner's job, driven by the
declarative KindSpec below.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from reconciler.changes import Change
from reconciler.commands import Command, Transport
from reconciler.model import JSONValue, LiveResource, LiveState, ResourceKey, TargetSpec


@dataclass(frozen=True)
class FieldSpec:
    """How one field of a kind behaves.

    `replace_reason` set means the system cannot change this field in place: a difference makes
    the planner replace the object (Remove + New) and quote this reason.
    `metadata_url` marks a URL whose metadata document a create or update of this object downloads;
    plan checks those documents before anything is applied.
    `display` renders a value for people (for example a certificate as its thumbprint).
    """

    name: str
    replace_reason: str | None = None
    ignore_case: bool = False
    sensitive: bool = False
    metadata_url: bool = False
    display: Callable[[Any], Any] | None = None
    equal: Callable[[Any, Any, Mapping[str, Any]], bool] | None = None
    """Custom comparison (desired value, live value, all desired fields): for collections where the
    manifest's entries must be present but others may stay (unless it says the list is authoritative)."""
    control: bool = False
    """Not a property of the object: it changes how other fields compare (e.g. `...Authoritative`)."""
    merge: Callable[[Mapping[str, Any], Mapping[str, Any]], Any] | None = None
    """The value after an update (desired fields, live fields), for collections that are merged."""


@dataclass(frozen=True)
class DiagnoseContext:
    """What a kind's plan-time checks may depend on besides the records themselves."""

    now: datetime.datetime
    expiry_warning_days: int = 30


Finding = tuple[str, str, str]
"""(severity "error" | "warning", field name, message) from a kind's plan-time checks."""


@dataclass(frozen=True)
class KindSpec:
    """A kind of object a provider owns.

    `singleton`: the object always exists (never created or removed), like CsOAuthConfiguration.
    `after`: kinds whose creates and updates must come before this kind's (and whose deletes after).
    `replace_when`: a rule beyond single fields, returning the reason a replace is needed
    (for example switching a partner application between parameter sets), or None.
    `prepare`: turns manifest fields into desired fields (for example reads a certificate file);
    raises FieldProblem naming the field.
    `schema`: JSON Schema of one manifest entry of this kind (the combined schema is built from these).
    """

    kind: str
    fields: Mapping[str, FieldSpec]
    schema: Mapping[str, Any]
    singleton: bool = False
    after: tuple[str, ...] = ()
    replace_when: Callable[[Mapping[str, JSONValue], Mapping[str, JSONValue]], str | None] | None = None
    prepare: Callable[[dict[str, JSONValue], Path], dict[str, JSONValue]] | None = None
    description: str = ""
    diagnose: Callable[[Mapping[str, JSONValue], Mapping[str, JSONValue] | None, DiagnoseContext],
                       list[Finding]] | None = None
    """Plan-time checks of one declared resource against what is live (e.g. certificate validity)."""

    def field(self, name: str) -> FieldSpec:
        return self.fields.get(name) or FieldSpec(name)


@dataclass(frozen=True)
class HandlerSpec:
    """A follow-up a provider declares (like Ansible's handlers): it runs once per apply on a target, and
    only when an applied change to one of `triggered_by` made it necessary (e.g. iisreset on Exchange
    after partner-application changes). `schema` validates its settings under the target's `handlers`."""

    name: str
    description: str
    triggered_by: tuple[str, ...]
    schema: Mapping[str, Any]
    commands: Callable[[Mapping[str, Any]], tuple[Command, ...]]


@dataclass(frozen=True)
class CheckSpec:
    """An end-to-end check `reconcile verify` runs (e.g. Test-CsExStorageConnectivity for a SIP URI).

    `schema` validates the arguments of a `verify:` entry (besides `target` and `check`)."""

    name: str
    description: str
    schema: Mapping[str, Any]
    commands: Callable[[Mapping[str, Any]], tuple[Command, ...]]


@dataclass(frozen=True)
class ServiceIdentity:
    """What a target says it is (its own service name and realm), for trust-graph checks."""

    target: str
    label: str
    service_name: str | None
    realm: str | None


@dataclass(frozen=True)
class TrustEdge:
    """A declared trust: `target` accepts tokens from whatever `url` (or `application_identifier`) names."""

    target: str
    address: str
    via: str
    url: str | None = None
    application_identifier: str | None = None
    location: str | None = None  # file:line of the resource


def handlers_of(provider: object) -> Mapping[str, HandlerSpec]:
    """A provider's handlers; optional in the plugin API (most providers have none)."""
    found = getattr(provider, "handlers", None)
    return found if isinstance(found, Mapping) else {}


def checks_of(provider: object) -> Mapping[str, CheckSpec]:
    found = getattr(provider, "checks", None)
    return found if isinstance(found, Mapping) else {}


class Provider(Protocol):
    """What every provider plugin implements. Instances hold no mutable state."""

    name: str
    kinds: Mapping[str, KindSpec]

    def discover(self, target: TargetSpec, transport: Transport, wanted: Sequence[ResourceKey]) -> LiveState:
        """Read the target's objects in one round trip (or as few as the system allows).

        `wanted` are the manifest's resources on this target: systems that can list every object
        (Skype, Exchange) read everything and ignore it; a tenant with thousands of service
        principals reads just these.
        """
        ...

    def commands(self, change: Change) -> tuple[Command, ...]:
        """The commands that carry out a change, in order (for a replace: Remove then New)."""
        ...

    def restore_commands(self, live: LiveResource) -> tuple[Command, ...]:
        """Commands that re-create an object exactly as it was read (used when a replace's New fails)."""
        ...


class TransportFactory(Protocol):
    """A transport class as registered under the `reconciler.transports` entry point group.

    `connection_schema` is the JSON Schema of a target's `connection` block for this transport
    (without the `transport` key itself); the manifest schema is built from these.
    """

    connection_schema: Mapping[str, Any]

    def from_target(self, target: TargetSpec) -> Transport: ...


@dataclass
class Registry:
    """Providers and transports by name. Built once per run from entry points, or by hand in tests."""

    providers: dict[str, Provider] = field(default_factory=dict)
    transports: dict[str, TransportFactory] = field(default_factory=dict)

    @classmethod
    def from_entry_points(cls) -> Registry:
        registry = cls()
        for ep in entry_points(group="reconciler.providers"):
            registry.providers[ep.name] = ep.load()()
        for ep in entry_points(group="reconciler.transports"):
            registry.transports[ep.name] = ep.load()
        return registry

    def provider(self, name: str) -> Provider:
        try:
            return self.providers[name]
        except KeyError:
            known = ", ".join(sorted(self.providers)) or "none"
            raise KeyError(f"no provider named {name!r} (installed: {known})") from None

    def kind(self, provider: str, kind: str) -> KindSpec:
        return self.provider(provider).kinds[kind]

    def open_transport(self, target: TargetSpec) -> Transport:
        name = str(target.connection.get("transport", ""))
        try:
            factory = self.transports[name]
        except KeyError:
            known = ", ".join(sorted(self.transports)) or "none"
            raise KeyError(f"target {target.name!r}: no transport named {name!r} (installed: {known})") from None
        return factory.from_target(target)
