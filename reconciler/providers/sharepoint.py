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

App principal permissions are the `appPrincipalPermission` handler, not a kind: Set-SPAppPrincipalPermission's
-AppPrincipal is an object only Get-SPAppPrincipal yields (one piped command, reconciler.commands.Pipe), and no
cmdlet reads a permission back, so nothing could be compared with the manifest. Each grant the target's
`handlers.appPrincipalPermission.grants` declares runs once after the TrustedSecurityTokenIssuer it names was
created or changed on this target (a new issuer means a new app principal), and also whenever the journal has no
successful run of that exact grant on this target (declared for the first time, or changed): applied once per
declaration, as Terraform treats what it cannot read. It never removes a grant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.changes import Action, Change
from reconciler.commands import Command, CommandResult, Pipe, Transport
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
    Severity,
    TargetSpec,
)
from reconciler.providers.base import (
    Discovery,
    HandlerSpec,
    ServiceIdentity,
    TargetFinding,
    TrustEdge,
    discover_by_steps,
)
from reconciler.suggest import did_you_mean

DECLARED: Mapping[str, CmdletKind] = {k.kind: k for k in declared.KINDS}
ISSUERS = declared.TRUSTED_SECURITY_TOKEN_ISSUER
REALM = declared.AUTHENTICATION_REALM
_ISSUER_DISCOVERY = ISSUERS.discovery()
_REALM_DISCOVERY = Command(REALM.get.name, scalar=True)
"""No `select`: the cmdlet writes a string, which has no properties to select (`scalar`: the transports keep it
as `{"Value": ...}`)."""

GET_APP_PRINCIPAL = declared.GET_SP_APP_PRINCIPAL
SET_PERMISSION = declared.SET_SP_APP_PRINCIPAL_PERMISSION


def grant_command(grant: Mapping[str, Any]) -> Command:
    """`Get-SPAppPrincipal -NameIdentifier <id> -Site <url> | Set-SPAppPrincipalPermission -Site <url> -Right <r>
    -Scope <s> [-EnableAppOnlyPolicy]`: one command, the principal object bound to -AppPrincipal by the transport."""
    site = str(grant["site"])
    parameters: dict[str, Any] = {"Site": site, "Right": str(grant["right"]), "Scope": str(grant["scope"])}
    if grant.get("enableAppOnlyPolicy"):
        parameters["EnableAppOnlyPolicy"] = True
    source = Command(GET_APP_PRINCIPAL.name, {"NameIdentifier": str(grant["nameIdentifier"]), "Site": site})
    return Command(SET_PERMISSION.name, parameters, switches=frozenset({"EnableAppOnlyPolicy"}),
                   pipe=Pipe(source, "AppPrincipal"))


def _grants(settings: Mapping[str, Any]) -> tuple[Command, ...]:
    return tuple(grant_command(g) for g in settings.get("grants") or [])


def _grants_of(settings: Mapping[str, Any], changes: tuple[Change, ...]) -> Mapping[str, Any]:
    """The grants naming an issuer these changes made or changed (a removed issuer has no principal to grant to):
    issuer names compared as SharePoint compares them, ignoring case."""
    made = {c.key.identity.casefold() for c in changes
            if c.key.kind == ISSUERS.kind and c.actions[-1] is not Action.DELETE}
    return {**settings, "grants": [g for g in settings.get("grants") or []
                                   if str(g.get("issuer", "")).casefold() in made]}


_GRANT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["issuer", "nameIdentifier", "site", "right", "scope"],
    "properties": {
        "issuer": {"type": "string", "minLength": 1,
                   "description": "The TrustedSecurityTokenIssuer (its name, on this target) whose app principal this "
                                  "grant is for: its creation or change makes the grant due again."},
        "nameIdentifier": {"type": "string", "pattern": r"^[^@\s]+@[^@\s]+$",
                           "description": "Get-SPAppPrincipal -NameIdentifier: the issuer's `<issuer id>@<realm>` (for "
                                          "Exchange 00000002-0000-0ff1-ce00-000000000000@<realm>; Microsoft's scripts "
                                          "pass the issuer's NameId)."},
        "site": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                 "description": "The web (SPWeb URL) given as -Site to both cmdlets, e.g. the root site collection."},
        "right": {"enum": list(SET_PERMISSION.parameters["Right"].values),
                  "description": "-Right (Exchange's eDiscovery and site mailboxes: FullControl)."},
        "scope": {"enum": list(SET_PERMISSION.parameters["Scope"].values),
                  "description": "-Scope (Exchange's eDiscovery and site mailboxes: SiteSubscription)."},
        "enableAppOnlyPolicy": {"type": "boolean",
                                "description": "-EnableAppOnlyPolicy (a switch; default false): the app may call "
                                               "without a user."},
    },
}

APP_PRINCIPAL_PERMISSION = HandlerSpec(
    name="appPrincipalPermission",
    description="Grant app principals permissions with Set-SPAppPrincipalPermission (Exchange's eDiscovery and site "
                "mailboxes need its issuer granted FullControl at SiteSubscription scope with the app-only policy). "
                "No cmdlet reads a permission back: each grant runs once after the issuer it names was created or "
                "changed on this target, and whenever the journal has no successful run of that exact grant (declared "
                "for the first time, or changed). A grant removed from the manifest is not revoked.",
    triggered_by=(ISSUERS.kind,),
    schema={"type": "object", "required": ["grants"],
            "properties": {"grants": {"type": "array", "minItems": 1, "items": _GRANT_SCHEMA}}},
    commands=_grants,
    narrow=_grants_of,
    until_applied=True,
)


class SharePointProvider:
    """SharePoint Server 2013-2019 / Subscription Edition provider."""

    name = "sharepoint"
    kinds: Mapping[str, KindSpec] = {k.kind: k.spec() for k in declared.KINDS}
    syntax = (*(c for k in declared.KINDS for c in k.cmdlets), *declared.APP_PRINCIPAL_CMDLETS)
    """Every cmdlet this provider may run, as documented: transports allow exactly these."""
    handlers: Mapping[str, HandlerSpec] = {APP_PRINCIPAL_PERMISSION.name: APP_PRINCIPAL_PERMISSION}

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

    def diagnose_target(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> list[TargetFinding]:
        """A grant for an issuer this target declares absent could never run (no app principal): an error."""
        settings = target.handlers.get(APP_PRINCIPAL_PERMISSION.name)
        if not settings or settings.get("enabled") is False:
            return []
        issuers = {r.key.identity.casefold(): r for r in resources if r.key.kind == ISSUERS.kind}
        found: list[TargetFinding] = []
        for index, grant in enumerate(settings.get("grants") or []):
            named = str(grant.get("issuer", ""))
            where = f"handlers.{APP_PRINCIPAL_PERMISSION.name}.grants[{index}]"
            resource = issuers.get(named.casefold())
            if resource is None:
                declared = sorted(r.key.identity for r in issuers.values())
                found.append((Severity.WARNING, None, "", (
                    f"{where} names issuer {named!r}, which this target does not declare (declared: "
                    f"{', '.join(declared) or 'none'}): the grant runs once, and fails at apply unless the farm "
                    f"already has that issuer{did_you_mean(named, declared)}")))
            elif resource.ensure is Ensure.ABSENT:
                found.append((Severity.ERROR, resource, "", (
                    f"{where} grants to this issuer's app principal, "
                    "but the issuer is declared absent: remove the grant (a removed issuer has no app principal; "
                    "the grant is not revoked by this tool)")))
        return found

    def discover(self, target: TargetSpec, transport: Transport, wanted: Sequence[ResourceKey] = ()) -> LiveState:
        return discover_by_steps(self.discovery(target, wanted), transport)

    def discovery(self, target: TargetSpec, wanted: Sequence[ResourceKey] = ()) -> Discovery:
        """The issuers (and, when declared, the realm) in one round trip; a failed Get is an error, never an absence."""
        realms = [k.identity for k in wanted if k.kind == REALM.kind]  # the manifest's name for it (default Global)
        read_realm = bool(realms)
        batch = (_ISSUER_DISCOVERY, _REALM_DISCOVERY) if read_realm else (_ISSUER_DISCOVERY,)
        results = yield batch
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
