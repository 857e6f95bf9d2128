"""Exchange Server 2013-2019/SE: S2S OAuth objects managed from the Exchange Management Shell.

Kinds (manifest field names are the cmdlet parameters in camelCase):

- `PartnerApplication` (identity: Name). Exactly one form: `authMetadataUrl` (+ write-only
  `trustAnySSLCertificate`) or `applicationIdentifier` (+ `realm`). Unlike Skype, Set-PartnerApplication
  changes AuthMetadataUrl, ApplicationIdentifier and Realm in place; only switching between the two forms
  is a replace (Remove + New).
- `EnterprisePartnerApplication` (identity: the ApplicationType, `Lync` or `SharePoint`): what
  Configure-EnterprisePartnerApplication.ps1 makes, modelled as the three objects it creates (partner
  application, linked user account, management role assignments) so that drift in any of them is seen and
  repaired. Their names and roles are data in `exchange_enterprise.py`, the one place to correct them.
- `AuthServer` (identity: Name): AuthMetadataUrl in place; Type only by replace.
- `AuthConfig` (singleton, identity optional: `Auth Configuration`): service name, realm and the signing
  certificates, so a staged certificate rotation (next thumbprint + effective date) can be declared.

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

*Unconfirmed*: the enterprise table (see its module); how Get-PartnerApplication shows LinkedAccount (we
accept a bare name or a canonical name such as `contoso.com/Users/<name>`); that AuthConfig's
NextCertificateEffectiveDate read without a time zone is UTC.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.changes import Action, Change
from reconciler.commands import Command, CommandResult, Transport
from reconciler.errors import DiscoveryError
from reconciler.kinds.spec import DiagnoseContext, FieldSpec, Finding, KindSpec
from reconciler.model import DesiredResource, Ensure, JSONValue, LiveResource, LiveState, ResourceKey, TargetSpec
from reconciler.providers.base import HandlerSpec, ServiceIdentity, TrustEdge
from reconciler.providers.common import BOOLEAN, GUID, IDENTITY, URL, lifecycle_commands, resource_schema
from reconciler.providers.exchange_enterprise import (
    ENTERPRISE_APPLICATIONS,
    EnterpriseApplication,
    enterprise_application,
)

HANDLER_TRIGGER_KINDS = ("PartnerApplication", "EnterprisePartnerApplication")
"""Kinds whose applied changes make Microsoft recommend an iisreset on mailbox and client access servers."""

AUTH_CONFIG_IDENTITY = "Auth Configuration"

# manifest field (camelCase) -> cmdlet property / parameter (PascalCase), per kind.
PARTNER_APPLICATION_PROPERTIES = {
    "authMetadataUrl": "AuthMetadataUrl",
    "applicationIdentifier": "ApplicationIdentifier",
    "realm": "Realm",
    "enabled": "Enabled",
    "linkedAccount": "LinkedAccount",
    "acceptSecurityIdentifierInformation": "AcceptSecurityIdentifierInformation",
    "accountType": "AccountType",
}
AUTH_SERVER_PROPERTIES = {
    "authMetadataUrl": "AuthMetadataUrl",
    "type": "Type",
    "enabled": "Enabled",
    "domainName": "DomainName",
}
AUTH_CONFIG_PROPERTIES = {
    "serviceName": "ServiceName",
    "realm": "Realm",
    "currentCertificateThumbprint": "CurrentCertificateThumbprint",
    "nextCertificateThumbprint": "NextCertificateThumbprint",
    "nextCertificateEffectiveDate": "NextCertificateEffectiveDate",
    "previousCertificateThumbprint": "PreviousCertificateThumbprint",  # read only, shown for people
}
AUTH_CONFIG_PARAMETERS = {
    "serviceName": "ServiceName",
    "realm": "Realm",
    "currentCertificateThumbprint": "CertificateThumbprint",
    "nextCertificateThumbprint": "NewCertificateThumbprint",
    "nextCertificateEffectiveDate": "NewCertificateEffectiveDate",
}

_DISCOVERY = (
    Command("Get-AuthConfig", select=("Identity", *AUTH_CONFIG_PROPERTIES.values())),
    Command("Get-AuthServer", select=("Name", "Identity", *AUTH_SERVER_PROPERTIES.values())),
    Command("Get-PartnerApplication", select=("Name", "Identity", *PARTNER_APPLICATION_PROPERTIES.values())),
    Command("Get-LinkedUser", select=("Name", "Identity", "UserPrincipalName")),
    Command("Get-ManagementRoleAssignment",
            select=("Name", "Identity", "Role", "RoleAssigneeName", "RoleAssigneeType")),
)

# Manifest values may be ${variable} references (checked by the loader after substitution).
_VARIABLE = r"|^.*\$\{[A-Za-z_][A-Za-z0-9_]*\}.*$"


def _any_case(*words: str) -> str:
    """A pattern matching any of `words` in any letter case (JSON Schema patterns have no (?i) flag)."""
    def one(word: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)
    return "^(" + "|".join(one(w) for w in words) + ")$"


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _strings(value: Any) -> list[str]:
    """A multi-valued property as a list (PowerShell may give one value, a list, or nothing)."""
    if value in (None, ""):
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v not in (None, "")]
    return [str(value)]


def _account_name(value: Any) -> str | None:
    """The account name in a LinkedAccount / RoleAssigneeName value (bare, `domain/OU/name` or `DOMAIN\\name`)."""
    text = _text(value)
    if text is None:
        return None
    return re.split(r"[/\\]", text)[-1].casefold()


def _same_account(want: Any, have: Any) -> bool:
    return _account_name(want) == _account_name(have)


def _accounts_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    return _same_account(want, have)


def _domains_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    return {d.casefold() for d in _strings(want)} == {d.casefold() for d in _strings(have)}


def _instant(value: Any) -> datetime.datetime | None:
    text = _text(value)
    if text is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)  # unconfirmed: naive reads as UTC


def _instants_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    if _text(want) is None or _text(have) is None:
        return _text(want) is None and _text(have) is None
    a, b = _instant(want), _instant(have)
    if a is None or b is None:
        return str(want).casefold() == str(have).casefold()
    return a == b


# --- PartnerApplication -------------------------------------------------------------------------

_FORM_NAMES = {"authMetadataUrl": "AuthMetadataUrl", "applicationIdentifier": "ApplicationIdentifier"}
FORM_SWITCH_REASON = ("Set-PartnerApplication cannot switch a partner application between AuthMetadataUrl "
                      "and ApplicationIdentifier")


def _form(fields: Mapping[str, JSONValue]) -> str | None:
    if fields.get("authMetadataUrl"):
        return "authMetadataUrl"
    if fields.get("applicationIdentifier"):
        return "applicationIdentifier"
    return None


def _partner_form_change(desired: Mapping[str, JSONValue], live: Mapping[str, JSONValue]) -> str | None:
    want, have = _form(desired), _form(live)
    if want is None or have is None or want == have:
        return None
    return FORM_SWITCH_REASON


_ENTERPRISE_PARTNER_NAMES = tuple(app.partner_name for app in ENTERPRISE_APPLICATIONS.values())

_PARTNER_FORM_RULES: tuple[dict[str, Any], ...] = (
    {
        "if": {"not": {"properties": {"ensure": {"const": "absent"}}, "required": ["ensure"]}},
        "then": {
            "oneOf": [{"required": ["authMetadataUrl"]}, {"required": ["applicationIdentifier"]}],
            "errorMessage": "a partner application needs exactly one of: authMetadataUrl "
                            "[+ trustAnySSLCertificate] | applicationIdentifier [+ realm]",
        },
    },
    {
        "if": {"required": ["authMetadataUrl"]},
        "then": {"not": {"required": ["realm"]},
                 "errorMessage": "realm cannot be set together with authMetadataUrl "
                                 "(the realm comes from the metadata document)"},
    },
    {
        "if": {"required": ["trustAnySSLCertificate"]},
        "then": {"required": ["authMetadataUrl"],
                 "errorMessage": "trustAnySSLCertificate applies only together with authMetadataUrl"},
    },
)

_PARTNER_APPLICATION = KindSpec(
    kind="PartnerApplication",
    after=("AuthServer",),
    description="An Exchange partner application: a server Exchange trusts to issue tokens (Skype, SharePoint).",
    fields={
        "authMetadataUrl": FieldSpec("authMetadataUrl", ignore_case=True, metadata_url=True),
        "trustAnySSLCertificate": FieldSpec("trustAnySSLCertificate", control=True),  # write-only switch
        "applicationIdentifier": FieldSpec("applicationIdentifier", ignore_case=True),
        "realm": FieldSpec("realm", ignore_case=True),
        "enabled": FieldSpec("enabled"),
        "linkedAccount": FieldSpec("linkedAccount", equal=_accounts_equal),
        "acceptSecurityIdentifierInformation": FieldSpec("acceptSecurityIdentifierInformation"),
        "accountType": FieldSpec("accountType", ignore_case=True),
    },
    replace_when=_partner_form_change,
    schema=resource_schema(
        "PartnerApplication",
        {
            "identity": {
                **IDENTITY, "description": "The partner application's Name.",
                "not": {"pattern": _any_case(*_ENTERPRISE_PARTNER_NAMES)},
                "errorMessage": {"not": "is made by Configure-EnterprisePartnerApplication.ps1: declare it as "
                                        "kind EnterprisePartnerApplication (identity Lync or SharePoint)"},
            },
            "authMetadataUrl": {**URL, "description": "Create from the partner's metadata document."},
            "trustAnySSLCertificate": {**BOOLEAN, "description": "Sent with authMetadataUrl on New/Set; "
                                                                 "never compared (not readable)."},
            "applicationIdentifier": GUID,
            "realm": {"type": "string", "minLength": 1},
            "enabled": BOOLEAN,
            "linkedAccount": {"type": "string", "minLength": 1},
            "acceptSecurityIdentifierInformation": BOOLEAN,
            "accountType": {"enum": ["OrganizationalAccount", "ConsumerAccount"]},
        },
        description="Exchange partner application (New-PartnerApplication).",
        rules=_PARTNER_FORM_RULES,
    ),
)


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
    },
    prepare=_prepare_enterprise,
    schema=resource_schema(
        "EnterprisePartnerApplication",
        {
            "identity": {"type": "string", "pattern": _any_case(*ENTERPRISE_APPLICATIONS),
                         "errorMessage": "must be an ApplicationType: " + " or ".join(ENTERPRISE_APPLICATIONS),
                         "description": "The -ApplicationType of Configure-EnterprisePartnerApplication.ps1."},
            "authMetadataUrl": {**URL, "description": "The partner's metadata document (for Lync/Skype: "
                                                      "https://<pool FQDN>/metadata/json/1)."},
            "trustAnySSLCertificate": {**BOOLEAN, "description": "Sent with authMetadataUrl; never compared."},
            "enabled": {**BOOLEAN, "description": "Default true."},
            "accountUserPrincipalName": {**_UPN, "description": "UPN given to the linked account when it is "
                                                                "created (never compared)."},
        },
        description="Exchange enterprise partner application (Configure-EnterprisePartnerApplication.ps1).",
        required_when_present=("authMetadataUrl",),
    ),
)


# --- AuthServer ---------------------------------------------------------------------------------

_AUTH_SERVER = KindSpec(
    kind="AuthServer",
    description="An Exchange authorization server (ACS, Azure AD / Entra ID, AD FS).",
    fields={
        "authMetadataUrl": FieldSpec("authMetadataUrl", ignore_case=True, metadata_url=True),
        "type": FieldSpec("type", ignore_case=True, replace_reason="Type cannot be changed by Set-AuthServer"),
        "enabled": FieldSpec("enabled"),
        "domainName": FieldSpec("domainName", equal=_domains_equal),
    },
    schema=resource_schema(
        "AuthServer",
        {
            "identity": {**IDENTITY, "description": "The authorization server's Name."},
            "authMetadataUrl": URL,
            "type": {"enum": ["MicrosoftACS", "AzureAD", "ADFS"]},
            "enabled": BOOLEAN,
            "domainName": {"type": "array", "uniqueItems": True, "items": {"type": "string", "minLength": 1},
                           "description": "Compared as a set, ignoring case; Set-AuthServer replaces the list."},
        },
        description="Exchange authorization server (New-AuthServer).",
        required_when_present=("authMetadataUrl",),
    ),
)


# --- AuthConfig ---------------------------------------------------------------------------------

_THUMBPRINT = {"type": "string", "pattern": "^[0-9A-Fa-f]{40}$" + _VARIABLE,
               "errorMessage": "is not a certificate thumbprint (40 hexadecimal digits)"}
_DATE_TIME = {"type": "string",
              "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|z|[+-]\d{2}:\d{2})$" + _VARIABLE,
              "errorMessage": "is not an ISO 8601 date-time with a time zone (e.g. 2026-05-01T00:00:00Z)"}

def _diagnose_auth_config(desired: Mapping[str, JSONValue], live: Mapping[str, JSONValue] | None,
                          context: DiagnoseContext) -> list[Finding]:
    """A staged certificate that has already taken over: the manifest must now say so.

    When NextCertificateEffectiveDate passes, Exchange makes the next certificate current. A manifest still
    declaring the old current certificate would then plan to roll the rotation back: that is an error.
    """
    staged, now_current = _text(desired.get("nextCertificateThumbprint")), _text((live or {}).get(
        "currentCertificateThumbprint"))
    if staged is None or now_current is None or staged.casefold() != now_current.casefold():
        return []
    declared = _text(desired.get("currentCertificateThumbprint"))
    update = (f"declare currentCertificateThumbprint: {staged} and remove nextCertificateThumbprint and "
              "nextCertificateEffectiveDate")
    if declared is not None and declared.casefold() != now_current.casefold():
        return [("error", "currentCertificateThumbprint",
                 f"the staged certificate {staged} is already current (its effective date has passed); this plan "
                 f"would roll the rotation back to {declared}: {update}")]
    return [("warning", "nextCertificateThumbprint",
             f"the staged certificate {staged} is already current (its effective date has passed): {update}")]


_AUTH_CONFIG = KindSpec(
    kind="AuthConfig",
    singleton=True,
    after=("AuthServer", "PartnerApplication", "EnterprisePartnerApplication"),
    description="Exchange's one AuthConfig (Set-AuthConfig): service name, realm and signing certificates.",
    diagnose=_diagnose_auth_config,
    fields={
        "serviceName": FieldSpec("serviceName", ignore_case=True),
        "realm": FieldSpec("realm", ignore_case=True),
        "currentCertificateThumbprint": FieldSpec("currentCertificateThumbprint", ignore_case=True),
        "nextCertificateThumbprint": FieldSpec("nextCertificateThumbprint", ignore_case=True),
        "nextCertificateEffectiveDate": FieldSpec("nextCertificateEffectiveDate", equal=_instants_equal),
        "previousCertificateThumbprint": FieldSpec("previousCertificateThumbprint", ignore_case=True),
    },
    schema=resource_schema(
        "AuthConfig",
        {
            "identity": {"type": "string", "pattern": _any_case(AUTH_CONFIG_IDENTITY),
                         "errorMessage": f"must be {AUTH_CONFIG_IDENTITY} (there is one AuthConfig)"},
            "serviceName": {**GUID, "description": "Always 00000002-0000-0ff1-ce00-000000000000 for Exchange."},
            "realm": {"type": "string", "minLength": 1},
            "currentCertificateThumbprint": {**_THUMBPRINT, "description": "Set-AuthConfig -CertificateThumbprint."},
            "nextCertificateThumbprint": {**_THUMBPRINT, "description": "A staged rotation: "
                                                                       "Set-AuthConfig -NewCertificateThumbprint."},
            "nextCertificateEffectiveDate": {**_DATE_TIME, "description": "When the next certificate takes over "
                                                                          "(-NewCertificateEffectiveDate)."},
        },
        description="Exchange AuthConfig (Set-AuthConfig).",
        identity_required=False,
        rules=(
            {"if": {"required": ["nextCertificateThumbprint"]},
             "then": {"required": ["nextCertificateEffectiveDate"],
                      "errorMessage": "nextCertificateThumbprint needs nextCertificateEffectiveDate "
                                      "(Set-AuthConfig takes them together)"}},
            {"if": {"required": ["nextCertificateEffectiveDate"]},
             "then": {"required": ["nextCertificateThumbprint"],
                      "errorMessage": "nextCertificateEffectiveDate needs nextCertificateThumbprint"}},
        ),
    ),
)


# --- discovery ----------------------------------------------------------------------------------

def _lowered(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in obj.items()}


def _live_fields(properties: Mapping[str, str], obj: Mapping[str, Any]) -> dict[str, JSONValue]:
    """A cmdlet's output object under manifest field names; empty strings read as unset."""
    lowered = _lowered(obj)
    fields: dict[str, JSONValue] = {}
    for name, prop in properties.items():
        value = lowered.get(prop.lower())
        fields[name] = None if value == "" else value
    return fields


def _name(obj: Mapping[str, Any]) -> str:
    lowered = _lowered(obj)
    return str(lowered.get("name") or lowered.get("identity") or "")


def _enterprise_record(app: EnterpriseApplication, partner: Mapping[str, Any] | None,
                       user: Mapping[str, Any] | None,
                       assignments: Sequence[Mapping[str, Any]]) -> dict[str, JSONValue]:
    partner_fields = _live_fields(PARTNER_APPLICATION_PROPERTIES, partner) if partner is not None else {}
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
        and _same_account(linked, app.linked_account),
        "missingRoles": [r for r in app.roles if r.casefold() not in held],
        "linkedAccount": linked,
        "roles": roles,
        "roleAssignmentIdentities": sorted(str(_lowered(a).get("identity") or _name(a)) for a in assignments),
    }


def _iisreset(settings: Mapping[str, Any]) -> tuple[Command, ...]:
    return tuple(Command("iisreset", {"Server": str(server)}) for server in settings.get("servers") or [])


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


class ExchangeProvider:
    """Exchange Server provider: partner applications, enterprise partner applications, auth servers, AuthConfig."""

    name = "exchange"
    kinds: Mapping[str, KindSpec] = {
        k.kind: k for k in (_AUTH_SERVER, _PARTNER_APPLICATION, _ENTERPRISE, _AUTH_CONFIG)
    }
    handlers: Mapping[str, HandlerSpec] = {IISRESET.name: IISRESET}

    def identity(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> ServiceIdentity:
        config = next((r.fields for r in resources if r.key.kind == "AuthConfig"), {})
        service = config.get("serviceName")
        realm = config.get("realm")
        return ServiceIdentity(target.name, "Exchange Server", str(service) if service else None,
                               str(realm) if realm else None)

    def trust_edges(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> list[TrustEdge]:
        edges = []
        for r in resources:
            if r.ensure is not Ensure.PRESENT or r.key.kind not in _TRUSTING_KINDS:
                continue
            url = r.fields.get("authMetadataUrl")
            line = r.field_lines.get("authMetadataUrl" if url else "applicationIdentifier", r.location.line)
            ident = r.fields.get("applicationIdentifier")
            edges.append(TrustEdge(target.name, r.key.address, f"{r.key.kind} {r.key.identity}",
                                   str(url) if url else None, str(ident) if ident else None,
                                   f"{r.location.file}:{line}"))
        return edges

    def discover(self, target: TargetSpec, transport: Transport, wanted: Sequence[ResourceKey] = ()) -> LiveState:
        """Everything in one round trip; a failed Get is an error, never an absence.

        AuthConfig is reported under the identity the manifest uses for it (the loader names an
        identity-less singleton `Global`; `Auth Configuration` may be written out), else under its own,
        `Auth Configuration`.
        """
        results = transport.invoke(_DISCOVERY, stop_on_error=True)
        failed = [r for r in results if not r.ok]
        if failed or len(results) != len(_DISCOVERY):
            detail = (f"{failed[0].command.cmdlet}: {failed[0].error}" if failed
                      else "the batch returned too few results")
            raise DiscoveryError(f"target {target.name!r}: discovery failed: {detail}")
        config, servers, partners, users, assignments = (_objects(r) for r in results)
        resources: dict[ResourceKey, LiveResource] = {}

        def add(kind: str, identity: str, fields: dict[str, JSONValue]) -> None:
            key = ResourceKey(target.name, kind, identity)
            resources[key] = LiveResource(key, fields)

        declared = {k.identity.casefold(): k.identity for k in wanted if k.kind == "AuthConfig"}
        for obj in config[:1]:
            fields = _live_fields(AUTH_CONFIG_PROPERTIES, obj)
            date = fields.get("nextCertificateEffectiveDate")
            fields["nextCertificateEffectiveDate"] = None if date is None else str(date)
            for identity in declared.values() or [AUTH_CONFIG_IDENTITY]:
                add("AuthConfig", identity, dict(fields))
        for obj in servers:
            fields = _live_fields(AUTH_SERVER_PROPERTIES, obj)
            fields["domainName"] = _strings(fields.get("domainName"))
            add("AuthServer", _name(obj), fields)

        enterprise_partners = {app.partner_name.casefold() for app in ENTERPRISE_APPLICATIONS.values()}
        for obj in partners:
            if _name(obj).casefold() not in enterprise_partners:
                add("PartnerApplication", _name(obj), _live_fields(PARTNER_APPLICATION_PROPERTIES, obj))
        for app_type, app in ENTERPRISE_APPLICATIONS.items():
            partner = next((p for p in partners if _name(p).casefold() == app.partner_name.casefold()), None)
            user = next((u for u in users if _same_account(_name(u), app.linked_account)), None)
            mine = [a for a in assignments if _same_account(_lowered(a).get("roleassigneename"), app.linked_account)]
            if partner is not None or user is not None or mine:
                add("EnterprisePartnerApplication", app_type, _enterprise_record(app, partner, user, mine))
        return LiveState(target.name, resources)

    def commands(self, change: Change) -> tuple[Command, ...]:
        build: dict[str, Callable[[Change], tuple[Command, ...]]] = {
            "PartnerApplication": _partner_commands,
            "EnterprisePartnerApplication": _enterprise_commands,
            "AuthServer": _auth_server_commands,
            "AuthConfig": _auth_config_commands,
        }
        return build[change.key.kind](change)

    def restore_commands(self, live: LiveResource) -> tuple[Command, ...]:
        """Re-create what a replace removed, as it was read (only plain partner apps and auth servers are replaced)."""
        if live.key.kind == "PartnerApplication":
            return (_new_partner(live.key.identity, live.fields),)
        if live.key.kind == "AuthServer":
            return (_new_auth_server(live.key.identity, live.fields),)
        return ()


# --- commands -----------------------------------------------------------------------------------

def _set(value: Any) -> bool:
    return value is not None and value != ""


def _desired(change: Change) -> Mapping[str, JSONValue]:
    """The manifest's fields (write-only ones included), or what the change says it makes."""
    return change.desired.fields if change.desired is not None else (change.after or {})


def _new_partner(name: str, fields: Mapping[str, JSONValue]) -> Command:
    params: dict[str, Any] = {"Name": name}
    if _form(fields) == "authMetadataUrl":
        params["AuthMetadataUrl"] = fields["authMetadataUrl"]
        if fields.get("trustAnySSLCertificate"):
            params["TrustAnySSLCertificate"] = True
    else:
        for field_name in ("applicationIdentifier", "realm"):
            if _set(fields.get(field_name)):
                params[PARTNER_APPLICATION_PROPERTIES[field_name]] = fields[field_name]
    for field_name in ("enabled", "linkedAccount", "acceptSecurityIdentifierInformation", "accountType"):
        if _set(fields.get(field_name)):
            params[PARTNER_APPLICATION_PROPERTIES[field_name]] = fields[field_name]
    return Command("New-PartnerApplication", params)


def _partner_commands(change: Change) -> tuple[Command, ...]:
    name = change.key.identity

    def update(after: Mapping[str, JSONValue]) -> Command:
        params: dict[str, Any] = {"Identity": name}
        for field_name in change.changed:
            params[PARTNER_APPLICATION_PROPERTIES[field_name]] = after.get(field_name)
        if "authMetadataUrl" in change.changed and _desired(change).get("trustAnySSLCertificate"):
            params["TrustAnySSLCertificate"] = True
        return Command("Set-PartnerApplication", params)

    return lifecycle_commands(change, Command("Remove-PartnerApplication", {"Identity": name}),
                              lambda after: _new_partner(name, after), update)


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
            out.append(Command("Remove-PartnerApplication", {"Identity": app.partner_name}))
        out.extend(Command("Remove-ManagementRoleAssignment", {"Identity": identity})
                   for identity in before.get("roleAssignmentIdentities") or [])
        if before.get("accountExists"):
            out.append(Command("Remove-LinkedUser", {"Identity": account}))
        return tuple(out)
    desired = _desired(change)
    after = change.after or {}

    def new_user() -> Command:
        params: dict[str, Any] = {"Name": account}
        if _set(desired.get("accountUserPrincipalName")):
            params["UserPrincipalName"] = desired["accountUserPrincipalName"]
        return Command("New-LinkedUser", params)

    def new_app() -> Command:
        params: dict[str, Any] = {"Name": app.partner_name, "AuthMetadataUrl": after.get("authMetadataUrl")}
        if desired.get("trustAnySSLCertificate"):
            params["TrustAnySSLCertificate"] = True
        params["LinkedAccount"] = account
        params["Enabled"] = after.get("enabled") if after.get("enabled") is not None else True
        return Command("New-PartnerApplication", params)

    def new_role(role: str) -> Command:
        return Command("New-ManagementRoleAssignment", {"Role": role, "User": account})

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
        out.append(Command("Set-PartnerApplication", params))
    return tuple(out)


def _new_auth_server(name: str, fields: Mapping[str, JSONValue]) -> Command:
    params: dict[str, Any] = {"Name": name}
    for field_name, prop in AUTH_SERVER_PROPERTIES.items():
        value = fields.get(field_name)
        if _set(value) and value != []:
            params[prop] = list(value) if isinstance(value, list | tuple) else value
    return Command("New-AuthServer", params)


def _auth_server_commands(change: Change) -> tuple[Command, ...]:
    name = change.key.identity

    def update(after: Mapping[str, JSONValue]) -> Command:
        params: dict[str, Any] = {"Identity": name}
        for field_name in change.changed:
            value = after.get(field_name)
            params[AUTH_SERVER_PROPERTIES[field_name]] = list(value) if isinstance(value, list | tuple) else value
        return Command("Set-AuthServer", params)

    return lifecycle_commands(change, Command("Remove-AuthServer", {"Identity": name}),
                              lambda after: _new_auth_server(name, after), update)


def _auth_config_commands(change: Change) -> tuple[Command, ...]:
    """Set-AuthConfig with what differs; the next certificate and its effective date always go together."""
    if change.actions != (Action.UPDATE,) or change.after is None:
        return ()  # a singleton: never created, replaced or removed
    after = change.after
    changed = set(change.changed)
    # Set-AuthConfig's parameter sets are exclusive: service name/realm | current certificate | next
    # certificate + its effective date. One command per set, in that order.
    groups = (("serviceName", "realm"), ("currentCertificateThumbprint",),
              ("nextCertificateThumbprint", "nextCertificateEffectiveDate"))
    commands = []
    for group in groups:
        if not changed & set(group):
            continue
        names = group if group[0].startswith("next") else tuple(n for n in group if n in changed)
        params = {AUTH_CONFIG_PARAMETERS[n]: after.get(n) for n in names if _set(after.get(n))}
        if params:
            commands.append(Command("Set-AuthConfig", params))
    return tuple(commands)


def _objects(result: CommandResult) -> list[Mapping[str, Any]]:
    return [o for o in result.output if isinstance(o, Mapping)]
