"""Exchange Server 2013-2019/SE: the documented syntax of the S2S OAuth cmdlets, and the kinds.

Syntax: Microsoft's cmdlet reference, repository MicrosoftDocs/office-docs-powershell, folder
`exchange/exchange-ps/ExchangePowerShell/` (one page per cmdlet; each `### <Set>` SYNTAX block is a parameter set).
Real output: Microsoft's CSS-Exchange scripts, repository microsoft/CSS-Exchange, which record Exchange's own
objects with Export-Clixml:
- Get-PartnerApplication: `Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/GetPartnerApplication.xml`
  (properties Enabled, ApplicationIdentifier, CertificateStrings, AuthMetadataUrl, Realm, UseAuthServer,
  AcceptSecurityIdentifierInformation, LinkedAccount, DeploymentId, IssuerIdentifier, AccountType,
  AppOnlyPermissions, ActAsPermissions, Name, Identity, ...; an unset AuthMetadataUrl/Realm is "", LinkedAccount
  an ADObjectId shown as its canonical name `contoso.lab/Users/Exchange Online-ApplicationAccount`, AccountType an
  enum, `OrganizationalAccount` = 1).
- Get-AuthConfig: `Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/GetAuthConfig.xml` and
  `Admin/MonitorExchangeAuthCertificate/DataCollection/Tests/Data/GetAuthConfig.xml` (Name `Auth Configuration`,
  CurrentCertificateThumbprint, PreviousCertificateThumbprint, NextCertificateThumbprint, NextCertificateEffectiveDate,
  ServiceName, Realm; an empty thumbprint is "", an unset date Nil).
- Get-AuthServer has no recording, only a hand-written mock
  (`Diagnostics/HealthChecker/Tests/HealthCheckerTest.CommonMocks.NotPublished.ps1`): Name, IssuerIdentifier, Realm,
  TokenIssuingEndpoint, AuthorizationEndpoint, ApplicationIdentifier, AuthMetadataUrl, DomainName, Type
  (`MicrosoftACS`, `AzureAD`), Enabled, IsDefaultAuthorizationEndpoint.

*Unconfirmed*:
- New-LinkedUser and Remove-LinkedUser are not in Microsoft's reference (no page in the reference's whole history);
  EnterprisePartnerApplication uses them for the account Configure-EnterprisePartnerApplication.ps1 makes. Their
  syntax below is ours. Get-LinkedUser is documented, but as available only in the cloud-based service.
- The reference names no default parameter set for Exchange cmdlets; where a documented call fits several sets
  (`Set-AuthServer ACS -Enabled $false`, `Get-ManagementRoleAssignment` with no parameters) the first set listed
  is taken as the default.
- How ConvertTo-Json writes AuthServer's Type and DomainName (we read enum names or numbers we know, and domain
  objects by their `Domain`).
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler import known_after_apply
from reconciler.commands import Command
from reconciler.kinds.certificates import (
    CertificateLookup,
    CertificateRole,
    certificate_of_schema,
    certificate_of_sources,
    der_of,
    thumbprint_of_der,
)
from reconciler.kinds.declaration import CmdletKind, Prop, read_date, reads
from reconciler.kinds.schema import BOOLEAN, GUID, IDENTITY, URL
from reconciler.kinds.spec import DiagnoseContext, Finding, KindSpec
from reconciler.kinds.syntax import (
    CmdletSyntax,
    Parameter,
    ParamType,
    boolean,
    cmdlet,
    enum_,
    identity,
    native,
    string,
    strings,
    switch,
)
from reconciler.model import JSONValue, Severity

DOCS = "MicrosoftDocs/office-docs-powershell: exchange/exchange-ps/ExchangePowerShell/"
RECORDED = "microsoft/CSS-Exchange: Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/"
UNCONFIRMED = "*unconfirmed*: not in Microsoft's cmdlet reference; used by Configure-EnterprisePartnerApplication.ps1"

AUTH_CONFIG_IDENTITY = "Auth Configuration"
ACCOUNT_TYPES = ("OrganizationalAccount", "ConsumerAccount")
ACCOUNT_TYPE_NUMBERS = ((1, "OrganizationalAccount"),)
"""SupportedAccountType as recorded (GetPartnerApplication.xml: `<I32>1</I32>` for OrganizationalAccount)."""
AUTH_SERVER_TYPES = ("ADFS", "AzureAD", "Facebook", "LinkedIn", "MicrosoftACS")
"""AuthServerType, as New-AuthServer.md lists its valid values."""
ROLE_ASSIGNEE_TYPES = ("User", "SecurityGroup", "RoleAssignmentPolicy", "ForeignSecurityPrincipal", "RoleGroup",
                       "LinkedRoleGroup", "Computer")
CONFIG_WRITE_SCOPES = ("None", "OrganizationConfig", "CustomConfigScope", "ExclusiveConfigScope")
RECIPIENT_RELATIVE_WRITE_SCOPES = ("None", "Organization", "MyGAL", "Self", "MyDistributionGroups")

BUILT_IN_PARTNER_APPLICATIONS: Mapping[str, str] = {
    "Exchange Online": "00000002-0000-0ff1-ce00-000000000000",
    "Microsoft Graph": "00000003-0000-0000-c000-000000000000",
    "TeamsScheduler": "7557eb47-c689-4224-abcf-aef9bd7573df",
    "CloudVoicemail": "db7de2b5-2149-435e-8043-e080dd50afae",
    "SfBLegacy": "00000004-0000-0ff1-ce00-000000000000",
}
"""Partner applications Exchange makes itself (Name -> ApplicationIdentifier), as recorded in
microsoft/CSS-Exchange `Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/GetPartnerApplication.xml`
(HealthChecker's analyzer `Diagnostics/HealthChecker/Analyzer/Invoke-AnalyzerHybridInformation.ps1` knows them by
these identifiers). `prune: [PartnerApplication]` never removes them; a manifest that names one manages it."""

_WRITE = switch("Confirm", "WhatIf") + string("DomainController")

# --- syntax ---------------------------------------------------------------------------------------

GET_PARTNER_APPLICATION = cmdlet(
    "Get-PartnerApplication", DOCS + "Get-PartnerApplication.md",
    [*identity("Identity", "Organization"), *string("DomainController")],
    {"Default": "Identity DomainController Organization"})
_PARTNER_PARAMETERS = [
    *_WRITE, *identity("Identity", "LinkedAccount"), *switch("TrustAnySSLCertificate", "RefreshAuthMetadata"),
    *string("Name", "ApplicationIdentifier", "AuthMetadataUrl", "Realm", "IssuerIdentifier"),
    *boolean("AcceptSecurityIdentifierInformation", "Enabled"),
    *enum_("AccountType", *ACCOUNT_TYPES, numbers=ACCOUNT_TYPE_NUMBERS),
    *strings("ActAsPermissions", "AppOnlyPermissions"),
]
_PARTNER_COMMON = ("AcceptSecurityIdentifierInformation AccountType ActAsPermissions AppOnlyPermissions Confirm "
                   "DomainController Enabled IssuerIdentifier LinkedAccount WhatIf")
NEW_PARTNER_APPLICATION = cmdlet(
    "New-PartnerApplication", DOCS + "New-PartnerApplication.md", _PARTNER_PARAMETERS,
    {"ACSTrustApplication": "ApplicationIdentifier! Realm",
     "AuthMetadataUrl": "AuthMetadataUrl! TrustAnySSLCertificate"},
    common="Name! " + _PARTNER_COMMON)
SET_PARTNER_APPLICATION = cmdlet(
    "Set-PartnerApplication", DOCS + "Set-PartnerApplication.md", _PARTNER_PARAMETERS,
    {"ACSTrustApplication": "ApplicationIdentifier Realm",
     "AuthMetadataUrl": "AuthMetadataUrl TrustAnySSLCertificate",
     "RefreshAuthMetadata": "RefreshAuthMetadata"},
    common="Identity! Name " + _PARTNER_COMMON, default_set="ACSTrustApplication")
REMOVE_PARTNER_APPLICATION = cmdlet(
    "Remove-PartnerApplication", DOCS + "Remove-PartnerApplication.md", [*_WRITE, *identity("Identity")],
    {"Default": "Identity! Confirm DomainController WhatIf"})

GET_AUTH_SERVER = cmdlet(
    "Get-AuthServer", DOCS + "Get-AuthServer.md", [*identity("Identity"), *string("DomainController")],
    {"Default": "Identity DomainController"})
_SERVER_PARAMETERS = [
    *_WRITE, *identity("Identity"), *switch("TrustAnySSLCertificate", "RefreshAuthMetadata"),
    *string("Name", "AuthMetadataUrl", "GraphBaseUrl", "ApplicationIdentifier"),
    *boolean("Enabled", "IsDefaultAuthorizationEndpoint"), *strings("DomainName"),
    *enum_("Type", *AUTH_SERVER_TYPES),
]
NEW_AUTH_SERVER = cmdlet(
    "New-AuthServer", DOCS + "New-AuthServer.md", _SERVER_PARAMETERS,
    {"AuthMetadataUrl": "AuthMetadataUrl! GraphBaseUrl TrustAnySSLCertificate",
     "NativeClientAuthServer": "AuthMetadataUrl! Type! TrustAnySSLCertificate",
     "AppSecret": "Type! ApplicationIdentifier"},
    common="Name! Confirm DomainController DomainName Enabled WhatIf")
SET_AUTH_SERVER = cmdlet(
    "Set-AuthServer", DOCS + "Set-AuthServer.md", _SERVER_PARAMETERS,
    {"AuthMetadataUrl": "AuthMetadataUrl GraphBaseUrl TrustAnySSLCertificate",
     "NativeClientAuthServer": "AuthMetadataUrl IsDefaultAuthorizationEndpoint TrustAnySSLCertificate",
     "RefreshAuthMetadata": "RefreshAuthMetadata",
     "AppSecret": "ApplicationIdentifier"},
    common="Identity! Confirm DomainController DomainName Enabled Name WhatIf", default_set="AuthMetadataUrl")
REMOVE_AUTH_SERVER = cmdlet(
    "Remove-AuthServer", DOCS + "Remove-AuthServer.md", [*_WRITE, *identity("Identity")],
    {"Default": "Identity! Confirm DomainController WhatIf"})

GET_AUTH_CONFIG = cmdlet("Get-AuthConfig", DOCS + "Get-AuthConfig.md", string("DomainController"),
                         {"Default": "DomainController"})
SET_AUTH_CONFIG = cmdlet(
    "Set-AuthConfig", DOCS + "Set-AuthConfig.md",
    [*_WRITE, *switch("Force", "SkipImmediateCertificateDeployment", "ClearPreviousCertificate", "PublishCertificate"),
     *string("CertificateThumbprint", "NewCertificateThumbprint", "Realm", "ServiceName"), *identity("Server"),
     Parameter("NewCertificateEffectiveDate", ParamType.DATETIME)],
    {"CurrentCertificateParameter": "CertificateThumbprint! SkipImmediateCertificateDeployment Force Server",
     "PublishAuthCertificateParameter": "ClearPreviousCertificate PublishCertificate Force",
     "NewCertificateParameter": "NewCertificateEffectiveDate NewCertificateThumbprint "
                                "SkipImmediateCertificateDeployment Force Server",
     # -Force is not in this set (Set-AuthConfig.md's parameter table lists it for the three others only).
     "AuthConfigSettings": "Realm ServiceName"},
    common="Confirm DomainController WhatIf")

GET_LINKED_USER = cmdlet(
    "Get-LinkedUser", DOCS + "Get-LinkedUser.md",
    [*identity("Identity", "OrganizationalUnit"), *string("Anr", "Filter", "ResultSize", "SortBy")],
    {"AnrSet": "Anr Filter OrganizationalUnit ResultSize SortBy",
     "Identity": "Identity Filter OrganizationalUnit ResultSize SortBy"}, default_set="Identity")
# Not in the reference (see the module docstring): the parameters are the ones the enterprise kind passes.
NEW_LINKED_USER = cmdlet(
    "New-LinkedUser", UNCONFIRMED, [*_WRITE, *string("Name", "UserPrincipalName")],
    {"Default": "Name! UserPrincipalName Confirm DomainController WhatIf"})
REMOVE_LINKED_USER = cmdlet(
    "Remove-LinkedUser", UNCONFIRMED, [*_WRITE, *identity("Identity")],
    {"Default": "Identity! Confirm DomainController WhatIf"})

SCOPES = ("CustomConfigWriteScope", "CustomRecipientWriteScope", "ExclusiveConfigWriteScope",
           "ExclusiveRecipientWriteScope", "RecipientAdministrativeUnitScope", "RecipientGroupScope",
           "RecipientOrganizationalUnitScope")
_GET_ASSIGNMENT_COMMON = ("ConfigWriteScope " + " ".join(SCOPES) + " Delegating DomainController Enabled Exclusive "
                          "GetEffectiveUsers RecipientWriteScope RoleAssigneeType WritableDatabase WritableRecipient "
                          "WritableServer")
GET_MANAGEMENT_ROLE_ASSIGNMENT = cmdlet(
    "Get-ManagementRoleAssignment", DOCS + "Get-ManagementRoleAssignment.md",
    [*identity("Identity", "Role", "RoleAssignee", "WritableDatabase", "WritableRecipient", "WritableServer",
               *SCOPES),
     *strings("AssignmentMethod"), *enum_("ConfigWriteScope", *CONFIG_WRITE_SCOPES),
     *boolean("Delegating", "Enabled", "Exclusive"), *string("DomainController", "RecipientWriteScope"),
     *switch("GetEffectiveUsers"), *enum_("RoleAssigneeType", *ROLE_ASSIGNEE_TYPES)],
    {"Identity": "Identity " + _GET_ASSIGNMENT_COMMON,
     "RoleAssignee": "AssignmentMethod Role RoleAssignee " + _GET_ASSIGNMENT_COMMON},
    default_set="Identity")
NEW_MANAGEMENT_ROLE_ASSIGNMENT = cmdlet(
    # Only the `User` parameter set: the one that assigns a role to a user (-Role with -User).
    "New-ManagementRoleAssignment", DOCS + "New-ManagementRoleAssignment.md",
    [*_WRITE, *string("Name"), *identity("Role", "User", *SCOPES), *switch("Delegating", "Force", "UnScopedTopLevel"),
     *enum_("RecipientRelativeWriteScope", *RECIPIENT_RELATIVE_WRITE_SCOPES)],
    {"User": "Name Role! User! Delegating Confirm " + " ".join(SCOPES) + " DomainController Force "
             "RecipientRelativeWriteScope UnScopedTopLevel WhatIf"})
REMOVE_MANAGEMENT_ROLE_ASSIGNMENT = cmdlet(
    "Remove-ManagementRoleAssignment", DOCS + "Remove-ManagementRoleAssignment.md",
    [*_WRITE, *identity("Identity"), *switch("Force")],
    {"Default": "Identity! Confirm DomainController Force WhatIf"})

IISRESET = native("iisreset", "seed 001 (`iisreset atl-exchange-001` after Configure-EnterprisePartnerApplication.ps1) "
                              "and Microsoft's recommendation to reset IIS after partner-application changes")
"""IIS's own executable, `iisreset [computername]`: not a cmdlet, run with the server as its one argument."""

ENTERPRISE_CMDLETS = (GET_LINKED_USER, NEW_LINKED_USER, REMOVE_LINKED_USER, GET_MANAGEMENT_ROLE_ASSIGNMENT,
                      NEW_MANAGEMENT_ROLE_ASSIGNMENT, REMOVE_MANAGEMENT_ROLE_ASSIGNMENT)
"""What EnterprisePartnerApplication runs beyond the partner application cmdlets."""

# --- readers and comparisons --------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def account_name(value: Any) -> str | None:
    """The account name in a LinkedAccount / RoleAssigneeName value: bare, canonical (`domain/Users/name`, as
    GetPartnerApplication.xml records it) or `DOMAIN\\name`; an ADObjectId written by ConvertTo-Json by its Name."""
    if isinstance(value, Mapping):
        inner = {str(k).lower(): v for k, v in value.items()}
        value = inner.get("name") or inner.get("rdn") or inner.get("distinguishedname")
    text = _text(value)
    if text is None:
        return None
    return re.split(r"[/\\]", text)[-1].removeprefix("CN=").casefold()


def same_account(want: Any, have: Any) -> bool:
    return account_name(want) == account_name(have)


def _accounts_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    return same_account(want, have)


@reads("LinkedAccount")
def read_linked_account(obj: Mapping[str, Any]) -> JSONValue:
    value = obj.get("linkedaccount")
    if isinstance(value, Mapping):  # an ADObjectId as ConvertTo-Json writes it: keep its canonical name if any
        inner = {str(k).lower(): v for k, v in value.items()}
        return _text(inner.get("tostring")) or _text(inner.get("name"))
    return _text(value)


def _domain_names(value: Any) -> list[str]:
    items = value if isinstance(value, list | tuple) else [] if value in (None, "") else [value]
    names = []
    for item in items:
        if isinstance(item, Mapping):  # SmtpDomain objects: ConfigureExchangeHybridApplication.ps1 reads `.Domain`
            inner = {str(k).lower(): v for k, v in item.items()}
            item = inner.get("domain") or inner.get("address")
        if item not in (None, ""):
            names.append(str(item))
    return names


@reads("DomainName")
def read_domain_name(obj: Mapping[str, Any]) -> JSONValue:
    return list(_domain_names(obj.get("domainname")))


def _domains_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    return {d.casefold() for d in _domain_names(want)} == {d.casefold() for d in _domain_names(have)}


_SERVER_TYPE_NAMES = {t.casefold(): t for t in AUTH_SERVER_TYPES}


@reads("Type")
def read_server_type(obj: Mapping[str, Any]) -> JSONValue:
    value = obj.get("type")
    if isinstance(value, str):
        return _SERVER_TYPE_NAMES.get(value.casefold(), value) or None
    return value


@reads("NextCertificateEffectiveDate")
def read_next_date(obj: Mapping[str, Any]) -> JSONValue:
    return read_date(obj.get("nextcertificateeffectivedate"))


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


def any_case(*words: str) -> str:
    """A pattern matching any of `words` in any letter case (JSON Schema patterns have no (?i) flag)."""
    def one(word: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)
    return "^(" + "|".join(one(w) for w in words) + ")$"


# --- PartnerApplication --------------------------------------------------------------------------------------


def _form_sets(parameter: str) -> tuple[str, ...]:
    return tuple(s.name for s in SET_PARTNER_APPLICATION.sets if parameter in s.names)


_URL_SETS, _IDENTIFIER_SETS = _form_sets("AuthMetadataUrl"), _form_sets("ApplicationIdentifier")
assert not set(_URL_SETS) & set(_IDENTIFIER_SETS), "a Set-PartnerApplication set now holds both forms"
FORM_SWITCH_REASON = (
    f"{SET_PARTNER_APPLICATION.name} cannot switch a partner application between AuthMetadataUrl and "
    f"ApplicationIdentifier (each of its documented parameter sets holds one form: {', '.join(_URL_SETS)} | "
    f"{', '.join(_IDENTIFIER_SETS)})")
"""Derived from the syntax: no parameter set takes both forms, so one Set cannot say which the object ends up with.
Each field alone is set in place; switching forms is kept as an explicit replace (Remove + New) because what
Exchange does with the other form's values on such a Set is not documented, and Microsoft's scripts remove and
re-create (Configure-EnterprisePartnerApplication.ps1 removes an existing application before New)."""


def _form(fields: Mapping[str, JSONValue]) -> str | None:
    if fields.get("authMetadataUrl"):
        return "authMetadataUrl"
    if fields.get("applicationIdentifier"):
        return "applicationIdentifier"
    return None


def partner_form_change(desired: Mapping[str, JSONValue], live: Mapping[str, JSONValue]) -> str | None:
    want, have = _form(desired), _form(live)
    if want is None or have is None or want == have:
        return None
    return FORM_SWITCH_REASON


_ABSENT = {"not": {"properties": {"ensure": {"const": "absent"}}, "required": ["ensure"]}}

_PARTNER_FORM_RULES: tuple[dict[str, Any], ...] = (
    {
        "if": _ABSENT,
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

@dataclasses.dataclass(frozen=True)
class PartnerApplicationKind(CmdletKind):
    """In the AuthMetadataUrl form, Get reports the ApplicationIdentifier and Realm the document gave: New (and so
    the restore of an application as read) takes the URL alone, never the other form's parameters."""

    def new_command(self, identity: str, fields: Mapping[str, JSONValue]) -> Command:
        if fields.get("authMetadataUrl"):
            fields = {k: v for k, v in fields.items() if k not in ("applicationIdentifier", "realm")}
        return super().new_command(identity, fields)


CERTIFICATE_OF_SCHEMA: dict[str, Any] = certificate_of_schema(
    "A target of this manifest that signs the tokens this application accepts (a Skype pool declaring "
    "its OAuthCertificate): Set-PartnerApplication -RefreshAuthMetadata whenever the application's "
    "cached keys (CertificateStrings) lack that target's current or next certificate.")


@reads("CertificateStrings")
def read_certificate_strings(obj: Mapping[str, Any]) -> JSONValue:
    """CertificateStrings, a MultiValuedProperty of String (recorded in GetPartnerApplication.xml; empty there, an
    ACS-form application). *Unconfirmed*: that each string is a base64 certificate, as a metadata document's
    keyvalue is; read as its thumbprint (a string that is already a 40-hex thumbprint is taken as one)."""
    value = obj.get("certificatestrings")
    items = value if isinstance(value, list | tuple) else [value] if value else []
    found = set()
    for item in items:
        text = str(item or "").strip()
        if re.fullmatch(r"[0-9A-Fa-f]{40}", text):
            found.add(text.upper())
        elif (der := der_of(text)) is not None:
            found.add(thumbprint_of_der(der))
    return sorted(found)


def _holds_keys(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    """The application holds every key it must trust (more, such as a previous key, is fine)."""
    return {str(k).upper() for k in want or []} <= {str(k).upper() for k in have or []}


def resolve_trusted_keys(fields: Mapping[str, JSONValue], lookup: CertificateLookup) -> dict[str, JSONValue]:
    """`certificateOf: <target>`: the keys the application must hold, the target's current and next certificates
    (the previous one signs no more)."""
    out = dict(fields)
    source = str(out.pop("certificateOf"))
    keys = [c.thumbprint for c in lookup(source) if c.role is not CertificateRole.PREVIOUS and not c.immediate]
    if keys:
        out["trustedKeys"] = sorted(set(keys))
    return out


PARTNER_APPLICATION = PartnerApplicationKind(
    kind="PartnerApplication",
    description="An Exchange partner application: a server Exchange trusts to issue tokens (Skype, SharePoint).",
    get=GET_PARTNER_APPLICATION, new=NEW_PARTNER_APPLICATION, set=SET_PARTNER_APPLICATION,
    remove=REMOVE_PARTNER_APPLICATION,
    identity_property="Name", new_identity="Name", identity_parameter="Identity",
    after=("AuthServer",),
    rules=(*_PARTNER_FORM_RULES,
           {"if": {"required": ["certificateOf"]},
            "then": {"required": ["authMetadataUrl"],
                     "errorMessage": "certificateOf applies only together with authMetadataUrl (the keys are "
                                     "refreshed from that document)"}}),
    extra_schema={"certificateOf": CERTIFICATE_OF_SCHEMA},
    resolve=resolve_trusted_keys,
    references=certificate_of_sources,
    together=(("authMetadataUrl", "trustAnySSLCertificate"),),
    # The provider adds the names EnterprisePartnerApplication owns (its table lives with the provider).
    identity_schema={**IDENTITY, "description": "The partner application's Name."},
    props=(
        Prop("authMetadataUrl", "AuthMetadataUrl", ignore_case=True, metadata_url=True,
             schema={**URL, "description": "Create from the partner's metadata document."}),
        Prop("trustAnySSLCertificate", None, parameter="TrustAnySSLCertificate",
             schema={**BOOLEAN, "description": "Sent with authMetadataUrl on New/Set; never compared (not readable)."}),
        Prop("applicationIdentifier", "ApplicationIdentifier", ignore_case=True, schema=GUID),
        Prop("realm", "Realm", ignore_case=True),
        Prop("enabled", "Enabled"),
        Prop("linkedAccount", "LinkedAccount", read=read_linked_account, equal=_accounts_equal,
             description="The user account the application acts as (a name or domain/Users/name)."),
        Prop("acceptSecurityIdentifierInformation", "AcceptSecurityIdentifierInformation"),
        Prop("accountType", "AccountType", ignore_case=True),
        Prop("useAuthServer", "UseAuthServer", parameter=None, manifest=False),
        Prop("trustedKeys", None, parameter="RefreshAuthMetadata", read=read_certificate_strings, manifest=False,
             equal=_holds_keys, write=lambda _value, _fields: True,
             description="The certificates the application cached from its AuthMetadataUrl (CertificateStrings); "
                         "from `certificateOf: <target>`, the keys that target signs with now and next. Set "
                         "-RefreshAuthMetadata when one is missing."),
        Prop("actAsPermissions", "ActAsPermissions", manifest=False),  # read and restored, never managed
        Prop("appOnlyPermissions", "AppOnlyPermissions", manifest=False),
    ),
)

# --- AuthServer ---------------------------------------------------------------------------------------------

_SERVER_RULES: tuple[dict[str, Any], ...] = (
    {
        "if": _ABSENT,
        "then": {"anyOf": [{"required": ["authMetadataUrl"]}, {"required": ["type"]}],
                 "errorMessage": "an auth server needs authMetadataUrl [+ type] or, without a metadata document "
                                 "(New-AuthServer's AppSecret set), type [+ applicationIdentifier]"},
    },
    {
        "if": {"required": ["trustAnySSLCertificate"]},
        "then": {"required": ["authMetadataUrl"],
                 "errorMessage": "trustAnySSLCertificate applies only together with authMetadataUrl"},
    },
)

AUTH_SERVER = CmdletKind(
    kind="AuthServer",
    description="An Exchange authorization server (ACS, Entra ID / Azure AD, AD FS).",
    get=GET_AUTH_SERVER, new=NEW_AUTH_SERVER, set=SET_AUTH_SERVER, remove=REMOVE_AUTH_SERVER,
    identity_property="Name", new_identity="Name", identity_parameter="Identity",
    rules=_SERVER_RULES,
    together=(("authMetadataUrl", "trustAnySSLCertificate"),),
    identity_schema={**IDENTITY, "description": "The authorization server's Name."},
    props=(
        Prop("authMetadataUrl", "AuthMetadataUrl", ignore_case=True, metadata_url=True, schema=URL,
             description="JSON metadata (ACS) or federation metadata XML (AzureAD, ADFS)."),
        Prop("trustAnySSLCertificate", None, parameter="TrustAnySSLCertificate",
             schema={**BOOLEAN, "description": "Sent with authMetadataUrl on New/Set; never compared (not readable)."}),
        Prop("type", "Type", read=read_server_type, ignore_case=True,
             description="Set by New-AuthServer only: a different type is a replace."),
        Prop("enabled", "Enabled"),
        Prop("domainName", "DomainName", read=read_domain_name, equal=_domains_equal,
             schema={"type": "array", "uniqueItems": True, "items": {"type": "string", "minLength": 1},
                     "description": "Compared as a set, ignoring case; Set-AuthServer replaces the list."}),
        Prop("applicationIdentifier", "ApplicationIdentifier", ignore_case=True,
             schema={"anyOf": [GUID, known_after_apply.SCHEMA],
                     "errorMessage": "is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) or a reference "
                                     "{from: <target>.Application.<displayName>, field: appId}"},
             description="The Entra ID application (AppSecret parameter set; set after New when the server also "
                         "has authMetadataUrl, as ConfigureExchangeHybridApplication.ps1 does): its appId, or "
                         "{from: <tenant target>.Application.<displayName>, field: appId}, read from the tenant "
                         "(known in the same apply that creates the application; reconciler.known_after_apply)."),
        Prop("isDefaultAuthorizationEndpoint", "IsDefaultAuthorizationEndpoint",
             description="Set-AuthServer only (NativeClientAuthServer set): written right after New."),
        Prop("issuerIdentifier", "IssuerIdentifier", parameter=None, manifest=False),
        Prop("realm", "Realm", parameter=None, manifest=False),
    ),
)

# --- AuthConfig ---------------------------------------------------------------------------------------------

_VARIABLE = r"|^.*\$\{[A-Za-z_][A-Za-z0-9_]*\}.*$"
_THUMBPRINT = {"type": "string", "pattern": "^[0-9A-Fa-f]{40}$" + _VARIABLE,
               "errorMessage": "is not a certificate thumbprint (40 hexadecimal digits)"}
_DATE_TIME = {"type": "string",
              "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|z|[+-]\d{2}:\d{2})$" + _VARIABLE,
              "errorMessage": "is not an ISO 8601 date-time with a time zone (e.g. 2026-05-01T00:00:00Z)"}


def diagnose_auth_config(desired: Mapping[str, JSONValue], live: Mapping[str, JSONValue] | None,
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
        return [(Severity.ERROR, "currentCertificateThumbprint",
                 f"the staged certificate {staged} is already current (its effective date has passed); this plan "
                 f"would roll the rotation back to {declared}: {update}")]
    return [(Severity.WARNING, "nextCertificateThumbprint",
             f"the staged certificate {staged} is already current (its effective date has passed): {update}")]


@dataclasses.dataclass(frozen=True)
class SetExtraBySetKind(CmdletKind):
    """A kind whose Set commands get extra parameters in named parameter sets only (`set_extra` adds them to
    every set that has them)."""

    set_extra_by_set: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def set_commands(self, identity: str, changed: Sequence[str], after: Mapping[str, JSONValue],
                     desired: Mapping[str, JSONValue]) -> tuple[Command, ...]:
        assert self.set is not None
        out = []
        for command in super().set_commands(identity, changed, after, desired):
            chosen, _ = self.set.bind(command.parameters)
            extra = self.set_extra_by_set.get(chosen.name)
            out.append(self._command(self.set, {**command.parameters, **extra}) if extra else command)
        return tuple(out)


AUTH_CONFIG = SetExtraBySetKind(
    kind="AuthConfig",
    description="Exchange's one AuthConfig (Set-AuthConfig): service name, realm and signing certificates.",
    get=GET_AUTH_CONFIG, set=SET_AUTH_CONFIG,
    singleton=AUTH_CONFIG_IDENTITY, identity_property="Name", new_identity=None, identity_parameter=None,
    after=("AuthServer", "PartnerApplication", "EnterprisePartnerApplication"),
    diagnose=diagnose_auth_config,
    together=(("nextCertificateThumbprint", "nextCertificateEffectiveDate"),),
    # Microsoft's own script passes -Force with the next certificate (microsoft/CSS-Exchange
    # Admin/MonitorExchangeAuthCertificate/ConfigurationAction/New-ExchangeAuthCertificate.ps1: Set-AuthConfig
    # @{NewCertificateThumbprint; NewCertificateEffectiveDate; Force = $true}) and nowhere else.
    set_extra_by_set={"NewCertificateParameter": {"Force": True}},
    identity_schema={"type": "string", "pattern": any_case(AUTH_CONFIG_IDENTITY),
                     "errorMessage": f"must be {AUTH_CONFIG_IDENTITY} (there is one AuthConfig)"},
    rules=(
        {"if": {"required": ["nextCertificateThumbprint"]},
         "then": {"required": ["nextCertificateEffectiveDate"],
                  "errorMessage": "nextCertificateThumbprint needs nextCertificateEffectiveDate "
                                  "(Set-AuthConfig takes them together)"}},
        {"if": {"required": ["nextCertificateEffectiveDate"]},
         "then": {"required": ["nextCertificateThumbprint"],
                  "errorMessage": "nextCertificateEffectiveDate needs nextCertificateThumbprint"}},
    ),
    props=(
        Prop("serviceName", "ServiceName", ignore_case=True,
             schema={**GUID, "description": "Always 00000002-0000-0ff1-ce00-000000000000 for Exchange."}),
        Prop("realm", "Realm", ignore_case=True),
        Prop("currentCertificateThumbprint", "CurrentCertificateThumbprint", parameter="CertificateThumbprint",
             ignore_case=True, schema={**_THUMBPRINT, "description": "Set-AuthConfig -CertificateThumbprint."}),
        Prop("nextCertificateThumbprint", "NextCertificateThumbprint", parameter="NewCertificateThumbprint",
             ignore_case=True,
             schema={**_THUMBPRINT, "description": "A staged rotation: Set-AuthConfig -NewCertificateThumbprint."}),
        Prop("nextCertificateEffectiveDate", None, parameter="NewCertificateEffectiveDate", read=read_next_date,
             equal=_instants_equal,
             schema={**_DATE_TIME, "description": "When the next certificate takes over "
                                                  "(-NewCertificateEffectiveDate)."}),
        Prop("previousCertificateThumbprint", "PreviousCertificateThumbprint", parameter=None, manifest=False,
             ignore_case=True),
    ),
)

KINDS = (AUTH_CONFIG, AUTH_SERVER, PARTNER_APPLICATION)
"""In discovery order (Get-AuthConfig, Get-AuthServer, Get-PartnerApplication)."""


def partner_application_spec() -> KindSpec:
    """The planner's view of PartnerApplication: derived, plus the explicit form-switch replace."""
    return dataclasses.replace(PARTNER_APPLICATION.spec(), replace_when=partner_form_change)


def fits(syntax: CmdletSyntax, command: Command) -> Command:
    """`command` unchanged when it binds to a documented set of `syntax` (raises CommandSyntaxError otherwise)."""
    syntax.bind(command.parameters)
    return command


# --- SettingOverride ------------------------------------------------------------------------------------------
# Syntax: DOCS New-SettingOverride.md, Set-SettingOverride.md, Remove-SettingOverride.md, Get-SettingOverride.md
# (one parameter set each; -Server is String[] on New and Set; -MinVersion/-MaxVersion are Version values, taken
# as text). Set-SettingOverride has no -Name, -Component or -Section: a different component or section is a
# replace (derived from the syntax).
# Get's properties: Get-SettingOverride.md, example 1 (`Format-List Name,Reason,ComponentName,SectionName,
# Parameters,Server`); microsoft/CSS-Exchange reads the same names: Shared/Get-ExchangeSettingOverride.ps1
# (Name, Reason, ComponentName, SectionName, Parameters) and
# Hybrid/ConfigureExchangeHybridApplication/ConfigureExchangeHybridApplication.ps1 (its clean-up text filters
# Get-SettingOverride on ComponentName "Global" and SectionName "ExchangeOnpremAsThirdPartyAppId").
# *Unconfirmed*: how ConvertTo-Json writes Parameters and Server (read as a string or a list of strings).

GET_SETTING_OVERRIDE = cmdlet(
    "Get-SettingOverride", DOCS + "Get-SettingOverride.md", [*identity("Identity"), *string("DomainController")],
    {"Default": "Identity DomainController"})
_OVERRIDE_PARAMETERS = [
    *_WRITE, *identity("Identity"), *switch("Force"),
    *string("Name", "Component", "Section", "Reason", "MinVersion", "MaxVersion"),
    *strings("Parameters", "Server"),
]
NEW_SETTING_OVERRIDE = cmdlet(
    "New-SettingOverride", DOCS + "New-SettingOverride.md", _OVERRIDE_PARAMETERS,
    {"Default": "Name! Component! Parameters! Reason! Section! Confirm DomainController Force MaxVersion "
                "MinVersion Server WhatIf"})
SET_SETTING_OVERRIDE = cmdlet(
    "Set-SettingOverride", DOCS + "Set-SettingOverride.md", _OVERRIDE_PARAMETERS,
    {"Default": "Identity! Confirm DomainController Force MaxVersion MinVersion Parameters Reason Server WhatIf"})
REMOVE_SETTING_OVERRIDE = cmdlet(
    "Remove-SettingOverride", DOCS + "Remove-SettingOverride.md", [*_WRITE, *identity("Identity")],
    {"Default": "Identity! Confirm DomainController WhatIf"})


def _never_differs(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    return True


SETTING_OVERRIDE = CmdletKind(
    kind="SettingOverride",
    description="An Exchange setting override (New-SettingOverride): an organization-wide or per-server "
                "customization kept in Active Directory.",
    get=GET_SETTING_OVERRIDE, new=NEW_SETTING_OVERRIDE, set=SET_SETTING_OVERRIDE, remove=REMOVE_SETTING_OVERRIDE,
    identity_property="Name", new_identity="Name", identity_parameter="Identity",
    # ConfigureExchangeHybridApplication.ps1 creates its override only once the OAuth configuration (the auth
    # server among it) checks out.
    after=("AuthServer",),
    required_when_present=("component", "section", "parameters", "reason"),
    identity_schema={**IDENTITY, "description": "The setting override's Name."},
    props=(
        Prop("component", "ComponentName", parameter="Component", ignore_case=True,
             description="New-SettingOverride -Component (e.g. Global); only by replace."),
        Prop("section", "SectionName", parameter="Section", ignore_case=True,
             description="New-SettingOverride -Section (e.g. ExchangeOnpremAsThirdPartyAppId); only by replace."),
        Prop("parameters", "Parameters",
             schema={"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^[^=]+=.*$"},
                     "description": "Name=Value entries (-Parameters), e.g. Enabled=true."}),
        Prop("reason", "Reason", equal=_never_differs,
             schema={"type": "string", "minLength": 1,
                     "description": "Why the override exists (-Reason, required by New): written, never compared."}),
        Prop("server", "Server", ignore_case=True,
             description="The servers it applies to (-Server); unset: every server in the forest."),
    ),
)


# --- OrganizationConfig ---------------------------------------------------------------------------------------
# Hybrid Modern Authentication on Exchange (MicrosoftDocs/microsoft-365-docs,
# microsoft-365/enterprise/configure-exchange-server-for-hybrid-modern-authentication.md, "Enable HMA"):
#   Set-AuthServer -Identity "EvoSTS - {GUID}" -Domain "Tenant Domain" -IsDefaultAuthorizationEndpoint $true
#   Set-OrganizationConfig -OAuth2ClientProfileEnabled $true
# (the AuthServer half is AUTH_SERVER's isDefaultAuthorizationEndpoint). The property read back has the
# parameter's name: Microsoft's HMA overview reads `Get-OrganizationConfig | ft OAuth*` / `FL
# OAuth2ClientProfileEnabled`.
# Syntax: DOCS Get-OrganizationConfig.md (one set: -DomainController) and Set-OrganizationConfig.md, of which we
# declare only the parameters we use, in the sets the reference lists them: OAuth2ClientProfileEnabled (Boolean) is in
# ShortenEventScopeParameter (whose -ShortenEventScopeDefault is mandatory), AdfsAuthenticationParameter,
# AdfsAuthenticationRawConfiguration and DelayedDelicensingParameterSet; not in Identity. -DomainController is in
# the two Adfs sets and Identity. The reference names no default set, and the documented call (only
# -OAuth2ClientProfileEnabled) fits three sets with nothing mandatory: as for the other Exchange cmdlets, the first
# of them listed (AdfsAuthenticationParameter) is taken as the default.

GET_ORGANIZATION_CONFIG = cmdlet(
    "Get-OrganizationConfig", DOCS + "Get-OrganizationConfig.md", string("DomainController"),
    {"Default": "DomainController"})
SET_ORGANIZATION_CONFIG = cmdlet(
    "Set-OrganizationConfig", DOCS + "Set-OrganizationConfig.md",
    [*_WRITE, *switch("Force"), *boolean("OAuth2ClientProfileEnabled"),
     *enum_("ShortenEventScopeDefault", "None", "EndEarly", "StartLate")],
    {"ShortenEventScopeParameter": "ShortenEventScopeDefault! OAuth2ClientProfileEnabled Confirm WhatIf",
     "AdfsAuthenticationParameter": "OAuth2ClientProfileEnabled Confirm DomainController WhatIf",
     "AdfsAuthenticationRawConfiguration": "OAuth2ClientProfileEnabled Confirm DomainController WhatIf",
     "DelayedDelicensingParameterSet": "OAuth2ClientProfileEnabled Confirm WhatIf",
     "Identity": "Confirm DomainController Force WhatIf"},
    default_set="AdfsAuthenticationParameter")

ORGANIZATION_CONFIG = CmdletKind(
    kind="OrganizationConfig",
    description="The Exchange organization's configuration (Set-OrganizationConfig); only the fields declared "
                "are managed (OAuth2ClientProfileEnabled: Hybrid Modern Authentication).",
    get=GET_ORGANIZATION_CONFIG, set=SET_ORGANIZATION_CONFIG,
    singleton="Organization", identity_property="Name", new_identity=None, identity_parameter=None,
    after=("AuthServer",),
    identity_schema={**IDENTITY, "description": "Optional: there is one organization configuration."},
    props=(
        Prop("oAuth2ClientProfileEnabled", "OAuth2ClientProfileEnabled",
             description="Modern authentication for the organization's clients (Set-OrganizationConfig "
                         "-OAuth2ClientProfileEnabled); true with the EvoSts auth server's "
                         "isDefaultAuthorizationEndpoint turns on Hybrid Modern Authentication."),
    ),
)
