"""SharePoint Server: its side of the S2S OAuth trust, managed from the SharePoint Management Shell.

Kinds (declared once, from Microsoft's documented syntax and SharePointDsc's reading of the output, in
reconciler.kinds.sharepoint):

- `TrustedSecurityTokenIssuer` (identity: Name): a server SharePoint accepts tokens from (Exchange, Skype for
  Business), created from its metadata document (`metadataEndPoint`), with `isTrustBroker` and `description`.
  Set-SPTrustedSecurityTokenIssuer has every parameter New has but the name, so nothing forces a replace.
  Read only: `registeredIssuerName` (`<issuer id>@<realm>` from the document) and `signingCertificateThumbprint`.
- `AuthenticationRealm` (singleton `Farm`): the farm's realm. Get-SPAuthenticationRealm writes a bare string,
  not an object, so it is read only when the manifest declares the realm on this target; its Command is `scalar`,
  so the PowerShell transports (and a snapshot) keep the string as `{"Value": ...}` instead of refusing it.

Set-SPAppPrincipalPermission is not a kind: its -AppPrincipal is an object only Get-SPAppPrincipal yields in the
same session, and no cmdlet reads a permission back (see reconciler.kinds.sharepoint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.changes import Change
from reconciler.commands import Command, CommandResult, Transport
from reconciler.errors import DiscoveryError
from reconciler.kinds import sharepoint as declared
from reconciler.kinds.declaration import CmdletKind
from reconciler.kinds.spec import KindSpec
from reconciler.model import (
    DesiredResource,
    Ensure,
    LiveResource,
    LiveState,
    ResourceKey,
    TargetSpec,
)
from reconciler.providers.base import ServiceIdentity, TrustEdge

DECLARED: Mapping[str, CmdletKind] = {k.kind: k for k in declared.KINDS}
ISSUERS = declared.TRUSTED_SECURITY_TOKEN_ISSUER
REALM = declared.AUTHENTICATION_REALM
_ISSUER_DISCOVERY = ISSUERS.discovery()
_REALM_DISCOVERY = Command(REALM.get.name, scalar=True)
"""No `select`: the cmdlet writes a string, which has no properties to select (`scalar`: the transports keep it
as `{"Value": ...}`)."""


class SharePointProvider:
    """SharePoint Server 2013-2019 / Subscription Edition provider."""

    name = "sharepoint"
    kinds: Mapping[str, KindSpec] = {k.kind: k.spec() for k in declared.KINDS}
    syntax = tuple(c for k in declared.KINDS for c in k.cmdlets)
    """Every cmdlet this provider may run, as documented: transports allow exactly these."""

    def identity(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> ServiceIdentity:
        realm = next((r.fields for r in resources if r.key.kind == REALM.kind), {})
        return ServiceIdentity(target.name, "SharePoint", declared.SHAREPOINT_SERVICE_NAME, _text(realm.get("realm")))

    def trust_edges(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> list[TrustEdge]:
        edges = []
        for r in resources:
            if r.ensure is not Ensure.PRESENT or r.key.kind != ISSUERS.kind:
                continue
            url = _text(r.fields.get("metadataEndPoint"))
            line = r.field_lines.get("metadataEndPoint", r.location.line)
            edges.append(TrustEdge(target.name, r.key.address, f"{ISSUERS.kind} {r.key.identity} (metadataEndPoint)",
                                   url, None, f"{r.location.file}:{line}"))
        return edges

    def discover(self, target: TargetSpec, transport: Transport, wanted: Sequence[ResourceKey] = ()) -> LiveState:
        """The issuers (and, when declared, the realm) in one round trip; a failed Get is an error, never an absence."""
        realms = [k.identity for k in wanted if k.kind == REALM.kind]  # the manifest's name for it (default Global)
        read_realm = bool(realms)
        batch = (_ISSUER_DISCOVERY, _REALM_DISCOVERY) if read_realm else (_ISSUER_DISCOVERY,)
        results = transport.invoke(batch, stop_on_error=True)
        failed = [r for r in results if not r.ok]
        if failed or len(results) != len(batch):
            detail = failed[0].error if failed else "the batch returned too few results"
            raise DiscoveryError(f"target {target.name!r}: discovery failed: {detail}")
        resources: dict[ResourceKey, LiveResource] = {}
        for obj in _objects(results[0]):
            identity, fields = ISSUERS.parse(obj)
            key = ResourceKey(target.name, ISSUERS.kind, identity)
            resources[key] = LiveResource(key, fields)
        if read_realm:
            _, fields = REALM.parse({"Realm": _realm(target, results[1])})
            for identity in realms:
                key = ResourceKey(target.name, REALM.kind, identity)
                resources[key] = LiveResource(key, dict(fields))
        return LiveState(target.name, resources)

    def commands(self, change: Change) -> tuple[Command, ...]:
        return DECLARED[change.key.kind].commands(change)

    def restore_commands(self, live: LiveResource) -> tuple[Command, ...]:
        return DECLARED[live.key.kind].restore(live.fields, live.key.identity)


def _realm(target: TargetSpec, result: CommandResult) -> str | None:
    """Get-SPAuthenticationRealm's output: one string (an object with a Realm property is read too)."""
    items: tuple[Any, ...] = tuple(result.output)
    if len(items) != 1:
        raise DiscoveryError(f"target {target.name!r}: discovery failed: {REALM.get.name} returned {len(items)} "
                             "values, not one realm")
    value = items[0]
    if isinstance(value, Mapping):
        lowered = {str(k).lower(): v for k, v in value.items()}
        value = lowered.get("realm", lowered.get("value"))
    return _text(value)


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _objects(result: CommandResult) -> tuple[Mapping[str, Any], ...]:
    return tuple(o for o in result.output if isinstance(o, Mapping))
