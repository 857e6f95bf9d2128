"""Exchange Server 2013-2019/SE: S2S OAuth objects managed from the Exchange Management Shell.

Kinds declared once, from Microsoft's documented syntax and recorded output, in reconciler.kinds.exchange
(manifest field names are the cmdlet parameters in camelCase):

- `PartnerApplication` (identity: Name). Exactly one form: `authMetadataUrl` (+ write-only
  `trustAnySSLCertificate`) or `applicationIdentifier` (+ `realm`). Set-PartnerApplication changes each form's
  fields in place (AuthMetadataUrl in its AuthMetadataUrl set, ApplicationIdentifier and Realm in its
  ACSTrustApplication set); only switching between the two forms is a replace (Remove + New).
  The partner applications Exchange makes itself (`Exchange Online`, `Microsoft Graph`, `TeamsScheduler`,
  `CloudVoicemail`, `SfBLegacy`: BUILT_IN_PARTNER_APPLICATIONS) are read only when the manifest names them, so
  `prune: [PartnerApplication]` never removes them; a declared one is managed like any other.
- `EnterprisePartnerApplication` (identity: the ApplicationType, `Lync` or `SharePoint`): what
  Configure-EnterprisePartnerApplication.ps1 makes, modelled as the three objects it creates (partner
  application, linked user account, management role assignments) so that drift in any of them is seen and
  repaired. Their names and roles are data in `exchange_enterprise.py`, the one place to correct them. It
  does not fit one cmdlet, so it keeps its own code here; every command it makes fits the declared syntax.
- `AuthServer` (identity: Name): AuthMetadataUrl, DomainName, Enabled, ApplicationIdentifier and
  IsDefaultAuthorizationEndpoint in place; Type only by replace (New-AuthServer has it, Set-AuthServer does not).
  Fields New cannot write in the parameter set it uses (IsDefaultAuthorizationEndpoint always; ApplicationIdentifier
  next to a metadata URL) are written by Set-AuthServer right after New.
- `AuthConfig` (singleton, identity optional: `Auth Configuration`): service name, realm and the signing
  certificates, so a staged certificate rotation (next thumbprint + effective date) can be declared.
- `SettingOverride` (identity: Name): component, section, parameters, reason (written, never compared) and
  server; Parameters, Reason and Server in place, Component and Section only by replace (Set-SettingOverride has
  neither). Used for the dedicated Exchange hybrid application's EnableExchangeHybrid3PAppFeature.
- `OrganizationConfig` (singleton, identity optional): `oAuth2ClientProfileEnabled` (Set-OrganizationConfig
  -OAuth2ClientProfileEnabled), the Exchange half of Hybrid Modern Authentication with the EvoSts auth server's
  IsDefaultAuthorizationEndpoint. Get-OrganizationConfig is read only when the manifest declares the kind.

EnterprisePartnerApplication in detail
--------------------------------------
The kind spans three objects, so its live record is synthesised in discovery from all three. It exists
when ANY of them exists: a record missing entirely plans a create (all three objects made, in order:
New-LinkedUser, one New-ManagementRoleAssignment per role, New-PartnerApplication); otherwise an update
that makes only what is missing or different (New-LinkedUser when the account is gone, one
New-ManagementRoleAssignment per missing role, Set-PartnerApplication for the URL, Enabled and the linked
account, or New-PartnerApplication when only the application is gone). `ensure: absent` removes the
application, every role assignment of the account, and the account. Roles the account has beyond the
table are left alone (they are shown in `roles`, never removed by an update).

The manifest's fields (`identity`, `target`, ...) never reach a kind's `prepare` hook, so the expected
names and roles (which depend on the ApplicationType, the identity) cannot be put into the desired record.
Discovery, which knows the identity of each record it synthesises, compares against the table instead and
reports the result as facts whose expected values do not depend on the identity; `prepare` adds those
expected values:

    partnerApplicationExists: true    the table's partner application exists
    accountExists: true               the table's linked user account exists
    linkedToApplicationAccount: true  the application's LinkedAccount is that account (and it exists)
    missingRoles: []                  table roles not assigned to the account's name

The live record also carries, for people and not compared: `linkedAccount` (as read), `roles` (sorted roles
assigned to the account) and `roleAssignmentIdentities` (what a removal removes). A re-created account is a
new directory object, so an application still naming the deleted one is linked again. Role assignments are
matched by the assignee's name even while the account is missing: New-ManagementRoleAssignment refuses a
role already assigned under that name, so such a role is not assigned again.

The partner applications that belong to an EnterprisePartnerApplication (by the table's names) are
reported only under that kind, never as plain PartnerApplication records: `prune: [PartnerApplication]`
never removes them, and a plain PartnerApplication resource cannot be declared with one of those names.

*Unconfirmed*: the enterprise table (see its module); New-LinkedUser and Remove-LinkedUser (not in
Microsoft's reference) and Get-LinkedUser on premises (documented as cloud-only); that AuthConfig's
NextCertificateEffectiveDate read without a time zone is UTC.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.changes import Action, Change
from reconciler.commands import Command, CommandResult, Transport
from reconciler.errors import DiscoveryError, ReferenceProblem
from reconciler.kinds import exchange as declared
from reconciler.kinds import exchange_certificate as auth_certificate
from reconciler.kinds.certificates import PublishedCertificate, certificate_of_sources
from reconciler.kinds.declaration import CmdletKind
from reconciler.kinds.exchange import (
    AUTH_CONFIG_IDENTITY,
    BUILT_IN_PARTNER_APPLICATIONS,
    FORM_SWITCH_REASON,
    any_case,
    same_account,
)
from reconciler.kinds.schema import BOOLEAN, URL, resource_schema
from reconciler.kinds.spec import FieldSpec, KindSpec
from reconciler.kinds.syntax import CmdletSyntax, ParamType
from reconciler.model import (
    DesiredResource,
    Ensure,
    JSONValue,
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
from reconciler.providers.exchange_enterprise import (
    ENTERPRISE_APPLICATIONS,
    EnterpriseApplication,
    enterprise_application,
)

__all__ = ["AUTH_CONFIG_IDENTITY", "BUILT_IN_PARTNER_APPLICATIONS", "FORM_SWITCH_REASON", "HANDLER_TRIGGER_KINDS",
           "IISRESET", "ExchangeProvider"]

HANDLER_TRIGGER_KINDS = ("PartnerApplication", "EnterprisePartnerApplication")
"""Kinds whose applied changes make Microsoft recommend an iisreset on mailbox and client access servers."""

_ENTERPRISE_PARTNER_NAMES = tuple(app.partner_name for app in ENTERPRISE_APPLICATIONS.values())

PARTNER_APPLICATION = dataclasses.replace(declared.PARTNER_APPLICATION, identity_schema={
    **(declared.PARTNER_APPLICATION.identity_schema or {}),
    "not": {"pattern": any_case(*_ENTERPRISE_PARTNER_NAMES)},
    "errorMessage": {"not": "is made by Configure-EnterprisePartnerApplication.ps1: declare it as "
                            "kind EnterprisePartnerApplication (identity Lync or SharePoint)"},
})
"""The declared kind, with the names EnterprisePartnerApplication owns refused as identities."""

KINDS: tuple[CmdletKind, ...] = (declared.AUTH_CONFIG, declared.AUTH_SERVER, PARTNER_APPLICATION)
DECLARED: Mapping[str, CmdletKind] = {k.kind: k for k in (*KINDS, declared.SETTING_OVERRIDE,
                                                            declared.ORGANIZATION_CONFIG)}
_LINKED_USERS = Command(declared.GET_LINKED_USER.name, select=("Name", "Identity", "UserPrincipalName"))
_ROLE_ASSIGNMENTS = Command(declared.GET_MANAGEMENT_ROLE_ASSIGNMENT.name,
                            select=("Name", "Identity", "Role", "RoleAssigneeName", "RoleAssigneeType"))
_DISCOVERY = tuple(k.discovery() for k in KINDS)
_ENTERPRISE_DISCOVERY = (_LINKED_USERS, _ROLE_ASSIGNMENTS)
"""Read only when the manifest declares an EnterprisePartnerApplication: Get-LinkedUser is documented for the
cloud only, so an on-premises target that does not use the kind never depends on it."""
_SYNTAX: Mapping[str, CmdletSyntax] = {
    c.name: c for c in (*(c for k in DECLARED.values() for c in k.cmdlets), *declared.ENTERPRISE_CMDLETS,
                        declared.IISRESET)}
_OVERRIDES = declared.SETTING_OVERRIDE.discovery()
_ORGANIZATION = declared.ORGANIZATION_CONFIG.discovery()
"""Get-OrganizationConfig, selecting the properties the kind reads: only when the manifest declares the kind."""
"""Read in the same round trip, only when the manifest declares a SettingOverride on the target (a recorded
organization need not include them, and the overrides are no trust object unless a manifest manages one)."""

# Manifest values may be ${variable} references (checked by the loader after substitution).
_VARIABLE = r"|^.*\$\{[A-Za-z_][A-Za-z0-9_]*\}.*$"


def _call(cmdlet: str, params: Mapping[str, Any]) -> Command:
    """A command checked against the cmdlet's documented syntax; switches shown as switches."""
    syntax = _SYNTAX[cmdlet]
    syntax.bind(params)  # a command outside every documented parameter set is a bug here, never sent
    switches = frozenset(n for n in params
                         if (p := syntax.parameter(n)) is not None and p.type is ParamType.SWITCH)
    return Command(cmdlet, dict(params), switches=switches)


# --- EnterprisePartnerApplication ---------------------------------------------------------------

ENTERPRISE_FACTS: dict[str, JSONValue] = {
    "partnerApplicationExists": True,
    "accountExists": True,
    "linkedToApplicationAccount": True,
    "missingRoles": [],
}
"""What `prepare` adds to every declared EnterprisePartnerApplication: the table's objects all exist."""


def _prepare_enterprise(fields: dict[str, JSONValue], manifest_dir: Path) -> dict[str, JSONValue]:
    out = dict(fields)
    out.setdefault("enabled", True)
    for name, value in ENTERPRISE_FACTS.items():
        out[name] = list(value) if isinstance(value, list) else value
    return out


_UPN = {"type": "string", "pattern": r"^[^@\s]+@[^@\s]+$" + _VARIABLE,
        "errorMessage": "is not a user principal name (user@domain)"}

_ENTERPRISE = KindSpec(
    kind="EnterprisePartnerApplication",
    after=("AuthServer",),
    description="What Configure-EnterprisePartnerApplication.ps1 makes (partner application, linked account, "
                "role assignments), identified by its ApplicationType.",
    fields={
        "authMetadataUrl": FieldSpec("authMetadataUrl", ignore_case=True, metadata_url=True),
        "trustAnySSLCertificate": FieldSpec("trustAnySSLCertificate", control=True),  # write-only switch
        "enabled": FieldSpec("enabled"),
        "accountUserPrincipalName": FieldSpec("accountUserPrincipalName", control=True),  # used by New only
        "partnerApplicationExists": FieldSpec("partnerApplicationExists"),
        "accountExists": FieldSpec("accountExists"),
        "linkedToApplicationAccount": FieldSpec("linkedToApplicationAccount"),
        "missingRoles": FieldSpec("missingRoles"),
        "linkedAccount": FieldSpec("linkedAccount", ignore_case=True),
        "roles": FieldSpec("roles"),
        "roleAssignmentIdentities": FieldSpec("roleAssignmentIdentities", control=True),
        "trustedKeys": PARTNER_APPLICATION.spec().field("trustedKeys"),
    },
    prepare=_prepare_enterprise,
    resolve=declared.resolve_trusted_keys,
    references=certificate_of_sources,
    schema=resource_schema(
        "EnterprisePartnerApplication",
        {
            "identity": {"type": "string", "pattern": any_case(*ENTERPRISE_APPLICATIONS),
                         "errorMessage": "must be an ApplicationType: " + " or ".join(ENTERPRISE_APPLICATIONS),
                         "description": "The -ApplicationType of Configure-EnterprisePartnerApplication.ps1."},
            "authMetadataUrl": {**URL, "description": "The partner's metadata document (for Lync/Skype: "
                                                      "https://<pool FQDN>/metadata/json/1)."},
            "trustAnySSLCertificate": {**BOOLEAN, "description": "Sent with authMetadataUrl; never compared."},
            "enabled": {**BOOLEAN, "description": "Default true."},
            "accountUserPrincipalName": {**_UPN, "description": "UPN given to the linked account when it is "
                                                                "created (never compared)."},
            "certificateOf": declared.CERTIFICATE_OF_SCHEMA,
        },
        description="Exchange enterprise partner application (Configure-EnterprisePartnerApplication.ps1).",
        required_when_present=("authMetadataUrl",),
    ),
)


# --- discovery ----------------------------------------------------------------------------------

def _lowered(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in obj.items()}


def _name(obj: Mapping[str, Any]) -> str:
    lowered = _lowered(obj)
    return str(lowered.get("name") or lowered.get("identity") or "")


def _enterprise_record(app: EnterpriseApplication, partner: Mapping[str, Any] | None,
                       user: Mapping[str, Any] | None,
                       assignments: Sequence[Mapping[str, Any]]) -> dict[str, JSONValue]:
    partner_fields = PARTNER_APPLICATION.parse(partner)[1] if partner is not None else {}
    roles = sorted({str(_lowered(a).get("role")) for a in assignments if _lowered(a).get("role")},
                   key=str.casefold)
    held = {r.casefold() for r in roles}  # by the assignee's name: Exchange refuses a second identical one
    linked = partner_fields.get("linkedAccount")
    return {
        "authMetadataUrl": partner_fields.get("authMetadataUrl"),
        "enabled": partner_fields.get("enabled"),
        "partnerApplicationExists": partner is not None,
        "accountExists": user is not None,
        "linkedToApplicationAccount": partner is not None and user is not None
        and same_account(linked, app.linked_account),
        "missingRoles": [r for r in app.roles if r.casefold() not in held],
        "linkedAccount": linked,
        "roles": roles,
        "roleAssignmentIdentities": sorted(str(_lowered(a).get("identity") or _name(a)) for a in assignments),
        "trustedKeys": partner_fields.get("trustedKeys") or [],
    }


def _iisreset(settings: Mapping[str, Any]) -> tuple[Command, ...]:
    # `iisreset <server>`, as seed 001 writes it: IIS's executable with the computer name as its one argument.
    return tuple(Command(declared.IISRESET.name, native=True, arguments=(str(server),))
                 for server in settings.get("servers") or [])


IISRESET = HandlerSpec(
    name="iisreset",
    description="Restart IIS on these Exchange servers after partner-application changes, as Microsoft recommends "
                "(seed 001: `iisreset atl-exchange-001`).",
    triggered_by=HANDLER_TRIGGER_KINDS,
    schema={
        "type": "object",
        "required": ["servers"],
        "properties": {"servers": {"type": "array", "minItems": 1, "uniqueItems": True,
                                   "items": {"type": "string", "minLength": 1},
                                   "description": "Mailbox and client access servers to reset."}},
    },
    commands=_iisreset,
)


_TRUSTING_KINDS = ("PartnerApplication", "EnterprisePartnerApplication", "AuthServer")


EXCHANGE_SERVICE = "00000002-0000-0ff1-ce00-000000000000"
"""Exchange's well-known service name (AuthConfig's ServiceName unless changed): what its metadata document names."""


class ExchangeProvider:
    """Exchange Server provider: partner applications, enterprise partner applications, auth servers, AuthConfig."""

    name = "exchange"
    kinds: Mapping[str, KindSpec] = {
        "AuthServer": declared.AUTH_SERVER.spec(),
        "PartnerApplication": dataclasses.replace(PARTNER_APPLICATION.spec(),
                                                  replace_when=declared.partner_form_change),
        "EnterprisePartnerApplication": _ENTERPRISE,
        auth_certificate.KIND: auth_certificate.spec(),
        "AuthConfig": declared.AUTH_CONFIG.spec(),
        "SettingOverride": declared.SETTING_OVERRIDE.spec(),
        "OrganizationConfig": declared.ORGANIZATION_CONFIG.spec(),
    }
    handlers: Mapping[str, HandlerSpec] = {IISRESET.name: IISRESET}
    syntax: tuple[CmdletSyntax, ...] = (*_SYNTAX.values(), *auth_certificate.CMDLETS)
    """Every cmdlet (and executable) this provider may run, as documented: transports allow exactly these."""

    def identity(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> ServiceIdentity:
        config = next((r.fields for r in resources if r.key.kind == "AuthConfig"), {})
        service = config.get("serviceName") or EXCHANGE_SERVICE  # Exchange's own, unless the manifest says otherwise
        realm = config.get("realm")
        return ServiceIdentity(target.name, "Exchange Server", str(service), str(realm) if realm else None)

    def trust_edges(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> list[TrustEdge]:
        edges = []
        for r in resources:
            if r.ensure is not Ensure.PRESENT or r.key.kind not in _TRUSTING_KINDS:
                continue
            url = r.fields.get("authMetadataUrl")
            line = r.field_lines.get("authMetadataUrl" if url else "applicationIdentifier", r.location.line)
            ident = r.fields.get("applicationIdentifier")
            ident = ident if isinstance(ident, str) else None  # a reference to another target is resolved in plans
            edges.append(TrustEdge(target.name, r.key.address, f"{r.key.kind} {r.key.identity}",
                                   str(url) if url else None, str(ident) if ident else None,
                                   f"{r.location.file}:{line}"))
        return edges

    def signing_certificates(self, target: TargetSpec, resources: Sequence[DesiredResource],
                             live: LiveState) -> tuple[PublishedCertificate, ...]:
        """Exchange's Auth certificates (current, next, previous) for the sides that trust it."""
        if not any(r.key.kind == auth_certificate.KIND for r in resources):
            raise ReferenceProblem(
                f"certificateOf: target {target.name!r} declares no {auth_certificate.KIND} resource; declare "
                f"`kind: {auth_certificate.KIND}, identity: {auth_certificate.IDENTITY}` on it so its certificates "
                "are read")
        key = ResourceKey(target.name, auth_certificate.KIND, auth_certificate.IDENTITY)
        found = live.resources.get(key)
        return auth_certificate.published(target.name, key.address, found.fields if found is not None else None)

    def discover(self, target: TargetSpec, transport: Transport, wanted: Sequence[ResourceKey] = ()) -> LiveState:
        return discover_by_steps(self.discovery(target, wanted), transport)

    def discovery(self, target: TargetSpec, wanted: Sequence[ResourceKey] = ()) -> Discovery:
        """Everything in one round trip (the kinds' Gets; linked users and role assignments when the manifest
        declares an EnterprisePartnerApplication, setting overrides when it declares one); a failed Get is an
        error, never an absence.

        AuthConfig is reported under the identity the manifest uses for it (the loader names an
        identity-less singleton `Global`; `Auth Configuration` may be written out), else under its own,
        `Auth Configuration`. A built-in partner application is reported only when the manifest names it.
        """
        enterprise = any(k.kind == "EnterprisePartnerApplication" for k in wanted)
        overriding = any(k.kind == "SettingOverride" for k in wanted)
        organization = {k.identity.casefold(): k.identity for k in wanted if k.kind == "OrganizationConfig"}
        commands = (*_DISCOVERY, *(_ENTERPRISE_DISCOVERY if enterprise else ()), *((_OVERRIDES,) if overriding else ()),
                    *((_ORGANIZATION,) if organization else ()))
        results = yield commands
        failed = [r for r in results if not r.ok]
        if failed or len(results) != len(commands):
            detail = (f"{failed[0].command.cmdlet}: {failed[0].error}" if failed
                      else "the batch returned too few results")
            raise DiscoveryError(f"target {target.name!r}: discovery failed: {detail}")
        config, servers, partners, *read = (_objects(r) for r in results)
        organizations = read.pop() if organization else []
        users, assignments = (read[0], read[1]) if enterprise else ([], [])
        overrides = read[-1] if overriding else []
        resources: dict[ResourceKey, LiveResource] = {}

        def add(kind: str, identity: str, fields: dict[str, JSONValue]) -> None:
            key = ResourceKey(target.name, kind, identity)
            resources[key] = LiveResource(key, fields)

        named = {k.identity.casefold() for k in wanted if k.kind == "PartnerApplication"}
        configs = {k.identity.casefold(): k.identity for k in wanted if k.kind == "AuthConfig"}
        for obj in config[:1]:
            _, fields = declared.AUTH_CONFIG.parse(obj)
            for identity in configs.values() or [AUTH_CONFIG_IDENTITY]:
                add("AuthConfig", identity, dict(fields))
        for obj in servers:
            add("AuthServer", *declared.AUTH_SERVER.parse(obj))
        for obj in overrides:
            add("SettingOverride", *declared.SETTING_OVERRIDE.parse(obj))
        for obj in organizations[:1]:  # reported under the identity the manifest uses (one organization)
            _, fields = declared.ORGANIZATION_CONFIG.parse(obj)
            for identity in organization.values():
                add("OrganizationConfig", identity, dict(fields))

        enterprise_partners = {name.casefold() for name in _ENTERPRISE_PARTNER_NAMES}
        built_in = {name.casefold() for name in BUILT_IN_PARTNER_APPLICATIONS}
        for obj in partners:
            name = _name(obj).casefold()
            if name in enterprise_partners or (name in built_in and name not in named):
                continue
            add("PartnerApplication", *PARTNER_APPLICATION.parse(obj))
        for app_type, app in ENTERPRISE_APPLICATIONS.items() if enterprise else ():
            partner = next((p for p in partners if _name(p).casefold() == app.partner_name.casefold()), None)
            user = next((u for u in users if same_account(_name(u), app.linked_account)), None)
            mine = [a for a in assignments if same_account(_lowered(a).get("roleassigneename"), app.linked_account)]
            if partner is not None or user is not None or mine:
                add("EnterprisePartnerApplication", app_type, _enterprise_record(app, partner, user, mine))
        if any(k.kind == auth_certificate.KIND for k in wanted):
            _add_auth_certificate(target, (yield (auth_certificate.DISCOVERY,)), config, add)
        return LiveState(target.name, resources)

    def diagnose_target(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> list[TargetFinding]:
        """Hybrid Modern Authentication: IsDefaultAuthorizationEndpoint belongs on one auth server. Microsoft's guide
        (MicrosoftDocs/microsoft-365-docs, microsoft-365/enterprise/configure-exchange-server-for-hybrid-modern-
        authentication.md): with several EvoSts servers (one per tenant), set the flag on one of them; it "can't be
        set true for all"."""
        defaults = [r for r in resources if r.ensure is Ensure.PRESENT and r.key.kind == "AuthServer"
                    and r.fields.get("isDefaultAuthorizationEndpoint") is True]
        names = ", ".join(repr(r.key.identity) for r in defaults)
        return [(Severity.WARNING, r, "isDefaultAuthorizationEndpoint",
                 f"{len(defaults)} auth servers are declared the default authorization endpoint ({names}); "
                 "Microsoft's Hybrid Modern Authentication guide sets it on one of them")
                for r in defaults[1:]]

    def commands(self, change: Change) -> tuple[Command, ...]:
        if change.key.kind == auth_certificate.KIND:
            return auth_certificate.commands(change)
        if change.key.kind == "EnterprisePartnerApplication":
            return _enterprise_commands(change)
        kind = DECLARED[change.key.kind]
        commands = kind.commands(change)
        if change.actions[-1] is Action.CREATE and change.after is not None:
            desired = change.desired.fields if change.desired is not None else change.after
            commands += _after_new(kind, change.key.identity, commands[-1], change.after, desired)
        return commands

    def restore_commands(self, live: LiveResource) -> tuple[Command, ...]:
        """Re-create what a replace removed, as it was read (only plain partner apps and auth servers are replaced)."""
        kind = DECLARED.get(live.key.kind)
        if kind is None or kind.new is None:
            return ()
        (new,) = kind.restore(live.fields, live.key.identity)
        return (new, *_after_new(kind, live.key.identity, new, live.fields, live.fields))


_SET_AFTER_NEW: Mapping[str, tuple[str, ...]] = {"AuthServer": ("applicationIdentifier",)}
"""Fields New has, but not in the parameter set a declaration with a metadata URL uses, that belong to the object
(not read from its document): an auth server's ApplicationIdentifier, which microsoft/CSS-Exchange
Hybrid/ConfigureExchangeHybridApplication/ConfigureExchangeHybridApplication.ps1 sets with Set-AuthServer on the
AzureAD server. (A partner application's ApplicationIdentifier and Realm next to a URL come from the document.)"""


def _after_new(kind: CmdletKind, identity: str, new: Command, fields: Mapping[str, JSONValue],
               desired: Mapping[str, JSONValue]) -> tuple[Command, ...]:
    """Set commands, right after New, for the fields New did not write: those whose parameter New lacks
    (derived: an auth server's IsDefaultAuthorizationEndpoint, which only Set-AuthServer has) and _SET_AFTER_NEW."""
    if kind.set is None or kind.new is None:
        return ()
    written = {name.casefold() for name in new.parameters}
    extra = _SET_AFTER_NEW.get(kind.kind, ())
    left = [p.field for p in kind.props
            if p.readable and p.writes is not None and p.writes.casefold() not in written
            and (kind.new.parameter(p.writes) is None or p.field in extra)
            and fields.get(p.field) not in (None, "", [], False) and kind.set.settable(p.writes)]
    return kind.set_commands(identity, left, fields, desired) if left else ()


# --- EnterprisePartnerApplication commands ------------------------------------------------------

def _set(value: Any) -> bool:
    return value is not None and value != ""


def _desired(change: Change) -> Mapping[str, JSONValue]:
    """The manifest's fields (write-only ones included), or what the change says it makes."""
    return change.desired.fields if change.desired is not None else (change.after or {})


def _enterprise_commands(change: Change) -> tuple[Command, ...]:
    found = enterprise_application(change.key.identity)
    if found is None:  # the schema allows only the table's ApplicationTypes
        raise ValueError(f"{change.key.identity!r} is not an ApplicationType in ENTERPRISE_APPLICATIONS")
    _, app = found
    account = app.linked_account
    before = change.before or {}
    if change.actions == (Action.DELETE,):
        out: list[Command] = []
        if before.get("partnerApplicationExists"):
            out.append(_call("Remove-PartnerApplication", {"Identity": app.partner_name}))
        out.extend(_call("Remove-ManagementRoleAssignment", {"Identity": identity})
                   for identity in before.get("roleAssignmentIdentities") or [])
        if before.get("accountExists"):
            out.append(_call("Remove-LinkedUser", {"Identity": account}))
        return tuple(out)
    desired = _desired(change)
    after = change.after or {}

    def new_user() -> Command:
        params: dict[str, Any] = {"Name": account}
        if _set(desired.get("accountUserPrincipalName")):
            params["UserPrincipalName"] = desired["accountUserPrincipalName"]
        return _call("New-LinkedUser", params)

    def new_app() -> Command:
        params: dict[str, Any] = {"Name": app.partner_name, "AuthMetadataUrl": after.get("authMetadataUrl")}
        if desired.get("trustAnySSLCertificate"):
            params["TrustAnySSLCertificate"] = True
        params["LinkedAccount"] = account
        params["Enabled"] = after.get("enabled") if after.get("enabled") is not None else True
        return _call("New-PartnerApplication", params)

    def new_role(role: str) -> Command:
        return _call("New-ManagementRoleAssignment", {"Role": role, "User": account})

    if change.actions == (Action.CREATE,):
        return (new_user(), *(new_role(r) for r in app.roles), new_app())
    out = []
    if not before.get("accountExists"):
        out.append(new_user())
    out.extend(new_role(str(r)) for r in before.get("missingRoles") or [])
    if not before.get("partnerApplicationExists"):
        out.append(new_app())
        return tuple(out)
    params: dict[str, Any] = {"Identity": app.partner_name}
    if "authMetadataUrl" in change.changed:
        params["AuthMetadataUrl"] = after.get("authMetadataUrl")
        if desired.get("trustAnySSLCertificate"):
            params["TrustAnySSLCertificate"] = True
    if "enabled" in change.changed:
        params["Enabled"] = after.get("enabled")
    if "linkedToApplicationAccount" in change.changed:
        params["LinkedAccount"] = account
    if len(params) > 1:
        out.append(_call("Set-PartnerApplication", params))
    if "trustedKeys" in change.changed and "authMetadataUrl" not in change.changed:
        # the partner published a key the application has not cached: re-read its document
        out.append(_call("Set-PartnerApplication", {"Identity": app.partner_name, "RefreshAuthMetadata": True}))
    return tuple(out)


def _objects(result: CommandResult) -> list[Mapping[str, Any]]:
    return [o for o in result.output if isinstance(o, Mapping)]


def _add_auth_certificate(target: TargetSpec, results: Sequence[CommandResult], config: Sequence[Mapping[str, Any]],
                          add: Any) -> None:
    """AuthCertificate, only when declared: the server's certificate store (Get-ExchangeCertificate, one more
    round trip) with the thumbprints Get-AuthConfig gave."""
    (result,) = results or (None,)
    if result is None or not result.ok:
        detail = f"{result.command.cmdlet}: {result.error}" if result is not None else "no result"
        raise DiscoveryError(f"target {target.name!r}: discovery failed: {detail}")
    add(auth_certificate.KIND, auth_certificate.IDENTITY,
        auth_certificate.parse(config[0] if config else None, _objects(result)))
