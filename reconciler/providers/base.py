"""The provider plugin API.

A provider knows one system: the kinds it owns (their fields, schema and which fields the system
cannot change in place), how to read a whole target in one round trip, and how to turn a change
into commands. It never decides what should change: that is the planner's job, driven by the
declarative KindSpec below.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol, runtime_checkable

from reconciler.changes import Change
from reconciler.commands import Command, CommandResult, Transport
from reconciler.errors import ReconcilerError
from reconciler.kinds.spec import KindSpec
from reconciler.model import DesiredResource, LiveResource, LiveState, ResourceKey, Severity, TargetSpec


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
    narrow: Callable[[Mapping[str, Any], tuple[Change, ...]], Mapping[str, Any]] | None = None
    """The settings for these triggering changes only, e.g. the grants that name an issuer that was made or
    changed (not removed); None: all the settings, whatever triggered it. Settings that yield no command: no run."""
    until_applied: bool = False
    """Also due, whatever the changes, while one of its commands has not run successfully on its target since the
    journal began (a grant that was never made, or whose declaration changed): what cannot be read back is applied
    once per declaration, as Terraform applies a resource it has no state of."""


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


TargetFinding = tuple[Severity, DesiredResource | None, str, str]
"""(severity, the resource it is about (None: the target itself), its field or "", message) from a provider's checks
of a target's declared resources taken together (`diagnose_target`)."""


def target_findings(provider: object, target: TargetSpec,
                    resources: Sequence[DesiredResource]) -> list[TargetFinding]:
    """A provider's plan-time checks across one target's declared resources (optional in the plugin API): conflicts
    no single resource shows, e.g. two declarations that undo each other."""
    check = getattr(provider, "diagnose_target", None)
    return list(check(target, resources)) if callable(check) else []


def checks_of(provider: object) -> Mapping[str, CheckSpec]:
    found = getattr(provider, "checks", None)
    return found if isinstance(found, Mapping) else {}


Discovery = Generator[tuple[Command, ...], list[CommandResult], LiveState]
"""A provider's discovery as steps, without I/O of its own (`discovery`, optional on a provider): each step yields
the batch one round trip runs (stopping at the first error) and is sent its results; the last returns the live
state. The runner sends the batches of many targets at once over transports that can overlap round trips
(reconciler.commands.Overlapping); `discover_by_steps` runs them over any transport."""


def discover_by_steps(steps: Discovery, transport: Transport) -> LiveState:
    """Run a provider's discovery steps over `transport`, one round trip each."""
    try:
        batch = next(steps)
        while True:
            batch = steps.send(transport.invoke(batch, stop_on_error=True))
    except StopIteration as done:
        state: LiveState = done.value
        return state


@runtime_checkable
class Stepwise(Protocol):
    """A provider that offers its discovery as steps (see `Provider.discover`)."""

    def discovery(self, target: TargetSpec, wanted: Sequence[ResourceKey]) -> Discovery: ...


class Provider(Protocol):
    """What every provider plugin implements. Instances hold no mutable state."""

    name: str
    kinds: Mapping[str, KindSpec]

    def discover(self, target: TargetSpec, transport: Transport, wanted: Sequence[ResourceKey]) -> LiveState:
        """Read the target's objects in one round trip (or as few as the system allows).

        `wanted` are the manifest's resources on this target: systems that can list every object
        (Skype, Exchange) read everything and ignore it; a tenant with thousands of service
        principals reads just these.

        A provider whose discovery is a fixed series of batches may also offer `discovery(target, wanted) ->
        Discovery` (the same reads as steps, `discover` then being `discover_by_steps` of them): its targets are
        then read together, without a thread each, over transports that can overlap round trips.
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
            registry.providers[ep.name] = _load(ep, "provider")()
        for ep in entry_points(group="reconciler.transports"):
            registry.transports[ep.name] = _load(ep, "transport")
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
        transport = factory.from_target(target)
        restrict = getattr(transport, "restrict_to", None)
        names = command_names(self.provider(target.provider))
        if restrict is not None and names:
            restrict(names)  # the allow-list is exactly what the provider's kinds declare, nothing more
        return transport


def _load(ep: EntryPoint, what: str) -> Any:
    """An installed plugin, or one clear line naming it (a stale or broken installation, not a traceback)."""
    try:
        return ep.load()
    except Exception as exc:  # an import error of any kind inside a plugin
        raise ReconcilerError(f"the {what} plugin {ep.name!r} ({ep.value}) cannot be loaded: "
                              f"{type(exc).__name__}: {exc}; reinstall reconciler or remove the plugin") from None


def command_names(provider: object) -> tuple[str, ...]:
    """The cmdlets and executables a provider may run: from its declared syntax (empty for REST providers)."""
    return tuple(dict.fromkeys(syntax.name for syntax in getattr(provider, "syntax", ())))
