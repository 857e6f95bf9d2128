"""Exchange Server OAuth cmdlets (Exchange Management Shell), emulated on the lab state.

Every call is bound against Microsoft's documented syntax (reconciler.kinds.exchange, the declarations the
provider builds its commands from) before its handler runs, so a call outside every documented parameter set
fails as PowerShell fails it; the handlers accept every documented parameter. Where Microsoft documents no
wording (an object that does not exist or already exists, a download that fails), the text here is the lab's,
modelled on Exchange's usual messages, and marked so.

Objects use the cmdlets' property names; Identity is always the Name and matches case-insensitively. Get returns
them in the shape recorded from real servers (reconciler.kinds.exchange cites the recordings):
- PartnerApplication: Enabled, ApplicationIdentifier, CertificateStrings, AuthMetadataUrl, Realm, UseAuthServer,
  AcceptSecurityIdentifierInformation, LinkedAccount, DeploymentId, IssuerIdentifier, AccountType,
  AppOnlyPermissions, ActAsPermissions, Name, Identity. Stored: LinkedAccount is the linked user's Name (or None)
  and an unset AuthMetadataUrl/Realm None; Get shows LinkedAccount as its canonical name (`<domain>/Users/<name>`,
  the domain being the realm of the host's own service) and an unset AuthMetadataUrl/Realm as "", as recorded.
- AuthServer: Name, Identity, IssuerIdentifier, Realm, TokenIssuingEndpoint, AuthorizationEndpoint,
  ApplicationIdentifier, AuthMetadataUrl, GraphBaseUrl, DomainName (list), Type (ADFS|AzureAD|Facebook|LinkedIn|
  MicrosoftACS), Enabled, IsDefaultAuthorizationEndpoint.
- AuthConfig (one object, Name/Identity "Auth Configuration"): ServiceName, Realm, CurrentCertificateThumbprint,
  NextCertificateThumbprint, NextCertificateEffectiveDate (ISO 8601, UTC, or None), PreviousCertificateThumbprint;
  Get shows an empty thumbprint as "", as recorded.
- OrganizationConfig (one object, Name/Identity the organization's name): OAuth2ClientProfileEnabled, False in a
  fresh organization (lab modelling: Set-OrganizationConfig.md gives True as the default, which is Exchange Online's;
  Microsoft's HMA guide has on-premises organizations turn it on).
- SettingOverride: Name, Identity, Reason, ComponentName, SectionName, Parameters (list), Server (list or None),
  MinVersion, MaxVersion (the properties Get-SettingOverride.md's example lists, and the version bounds).
- LinkedUser: Name, Identity, UserPrincipalName: the directory's user accounts a partner application may link
  (the ones Configure-EnterprisePartnerApplication.ps1 creates, and those Exchange's built-in applications use).
- ManagementRoleAssignment: Name, Identity, Role, RoleAssigneeName, RoleAssigneeType ("User"), AssignmentMethod
  ("Direct"), Enabled, Delegating, ConfigWriteScope, RecipientWriteScope.

An Exchange host record carries, beside `objects` (see reconciler.lab.estate): `servers` (the Exchange
servers `iisreset` may name), `iisResets` ({server: count}), `mailboxes` (SIP URIs
Test-CsExStorageConnectivity finds a mailbox for), `skype` (the linked Skype pool's host) and `service`
(its entry in the state's `services`: its own metadata document and certificate).

Lab modelling, unconfirmed against a live server:
- AuthConfig staging: the lab's clock is real time. When NextCertificateEffectiveDate has passed, the
  next read (Get-AuthConfig, Set-AuthConfig, Test-CsExStorageConnectivity on a linked pool) promotes
  Next to Current (and Current to Previous) and keeps it, as Exchange's Auth certificate servicelet
  publishes a staged certificate when its date arrives. Staging takes the thumbprint and the date together.
- New-PartnerApplication's ACSTrustApplication set makes an application with UseAuthServer $true (no syntax has
  -UseAuthServer, but the reference says the ApplicationIdentifier form goes with it, and every recorded
  built-in application has it); the AuthMetadataUrl set one with UseAuthServer $false.
- Set-PartnerApplication refuses to switch an application between the AuthMetadataUrl and the
  ApplicationIdentifier forms (remove and re-create it), like the Skype emulation.
- New-AuthServer reads JSON metadata (ACS) or federation metadata XML (AzureAD, ADFS); without -Type the type
  follows the document (JSON: MicrosoftACS; federation XML: AzureAD when its entityID names a tenant, else ADFS).
  With -Type, AzureAD and ADFS need federation metadata and MicrosoftACS JSON metadata.
- New-LinkedUser / Remove-LinkedUser are not in Microsoft's reference (see reconciler.kinds.exchange).
- Filters the lab does not evaluate (Get-LinkedUser -Filter, -OrganizationalUnit) fail saying so; management
  scopes, groups and OUs do not exist in the lab, so a role assignment filtered or scoped by one finds nothing.
- `iisreset` is IIS's executable, run as a native command (`iisreset atl-exchange-001`): its first argument
  that is not an option (`/...`, accepted and without effect) names the server; without one it is the host.
- -TrustAnySSLCertificate is accepted and has no effect: the lab fetches every document the same way.
"""

from __future__ import annotations

import base64
import copy
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler import clock
from reconciler.errors import CmdletError, CommandSyntaxError, MetadataError
from reconciler.kinds import exchange as documented
from reconciler.kinds.syntax import CmdletSyntax
from reconciler.lab.emulator import CmdletContext, Platform, as_bool, as_enum, as_string, find, require, with_defaults
from reconciler.metadata import MetadataDocument

PARTNER_APPLICATION = "PartnerApplication"
AUTH_SERVER = "AuthServer"
AUTH_CONFIG = "AuthConfig"
LINKED_USER = "LinkedUser"
ROLE_ASSIGNMENT = "ManagementRoleAssignment"
SETTING_OVERRIDE = "SettingOverride"
ORGANIZATION_CONFIG = "OrganizationConfig"
ORGANIZATION_CONFIG_DEFAULTS: dict[str, Any] = {"Name": "First Organization", "Identity": "First Organization",
                                                "OAuth2ClientProfileEnabled": False}

EXCHANGE_SERVICE_NAME = "00000002-0000-0ff1-ce00-000000000000"
AUTH_CONFIG_IDENTITY = documented.AUTH_CONFIG_IDENTITY
ACCOUNT_TYPES = documented.ACCOUNT_TYPES
AUTH_SERVER_TYPES = documented.AUTH_SERVER_TYPES
KNOWN_ROLES = (
    "ApplicationImpersonation",
    "ArchiveApplication",
    "LegalHoldApplication",
    "Mail Recipients",
    "Mailbox Search",
    "MailboxSearchApplication",
    "MeetingGraphApplication",
    "OfficeExtensionApplication",
    "OrganizationConfiguration",
    "TeamMailboxLifecycleApplication",
    "UserApplication",
    "View-Only Configuration",
)
"""Built-in management roles New-ManagementRoleAssignment accepts in the lab (Exchange has more)."""
STORAGE_ROLES = ("UserApplication", "ArchiveApplication")
"""Roles a Skype for Business partner application's linked account needs for the Storage Service."""
MAX_NAME_LENGTH = 64
"""Active Directory's limit on a common name: default role assignment names are cut to it."""

_THUMBPRINT = re.compile(r"[0-9A-Fa-f]{40}")
_FEDERATION_TYPES = ("AzureAD", "ADFS")

PARTNER_APPLICATION_DEFAULTS: dict[str, Any] = {
    "Enabled": True,
    "ApplicationIdentifier": None,
    "CertificateStrings": [],
    "AuthMetadataUrl": None,
    "Realm": None,
    "UseAuthServer": False,
    "AcceptSecurityIdentifierInformation": False,
    "LinkedAccount": None,
    "DeploymentId": None,
    "IssuerIdentifier": None,
    "AccountType": "OrganizationalAccount",
    "AppOnlyPermissions": None,
    "ActAsPermissions": None,
    "Name": None,
    "Identity": None,
}
"""In the order GetPartnerApplication.xml records the properties."""
AUTH_SERVER_DEFAULTS: dict[str, Any] = {
    "Name": None,
    "Identity": None,
    "IssuerIdentifier": None,
    "Realm": None,
    "TokenIssuingEndpoint": None,
    "AuthorizationEndpoint": None,
    "ApplicationIdentifier": None,
    "AuthMetadataUrl": None,
    "GraphBaseUrl": None,
    "DomainName": [],
    "Type": "MicrosoftACS",
    "Enabled": True,
    "IsDefaultAuthorizationEndpoint": False,
}
"""The properties HealthChecker's Get-AuthServer mock returns (plus GraphBaseUrl, a New/Set parameter)."""
AUTH_CONFIG_DEFAULTS: dict[str, Any] = {
    "CurrentCertificateThumbprint": None,
    "PreviousCertificateThumbprint": None,
    "NextCertificateThumbprint": None,
    "NextCertificateEffectiveDate": None,
    "ServiceName": EXCHANGE_SERVICE_NAME,
    "Realm": "",
    "Name": AUTH_CONFIG_IDENTITY,
    "Identity": AUTH_CONFIG_IDENTITY,
}
LINKED_USER_DEFAULTS: dict[str, Any] = {"Name": None, "Identity": None, "UserPrincipalName": None}
ROLE_ASSIGNMENT_DEFAULTS: dict[str, Any] = {
    "Name": None,
    "Identity": None,
    "Role": None,
    "RoleAssigneeName": None,
    "RoleAssigneeType": "User",
    "AssignmentMethod": "Direct",
    "Enabled": True,
    "Delegating": False,
    "ConfigWriteScope": "OrganizationConfig",
    "RecipientWriteScope": "Organization",
}
DEFAULTS = {
    PARTNER_APPLICATION: PARTNER_APPLICATION_DEFAULTS,
    AUTH_SERVER: AUTH_SERVER_DEFAULTS,
    AUTH_CONFIG: AUTH_CONFIG_DEFAULTS,
    LINKED_USER: LINKED_USER_DEFAULTS,
    ROLE_ASSIGNMENT: ROLE_ASSIGNMENT_DEFAULTS,
    SETTING_OVERRIDE: {"Name": None, "Identity": None, "Reason": None, "ComponentName": None, "SectionName": None,
                       "Parameters": [], "Server": None, "MinVersion": None, "MaxVersion": None},
    ORGANIZATION_CONFIG: ORGANIZATION_CONFIG_DEFAULTS,
}


def empty_objects() -> dict[str, Any]:
    """The objects of a freshly installed organization: default AuthConfig, nothing else."""
    return {
        PARTNER_APPLICATION: [],
        AUTH_SERVER: [],
        AUTH_CONFIG: dict(AUTH_CONFIG_DEFAULTS),
        LINKED_USER: [],
        ROLE_ASSIGNMENT: [],
        SETTING_OVERRIDE: [],
        ORGANIZATION_CONFIG: dict(ORGANIZATION_CONFIG_DEFAULTS),
    }


def normalize(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """An object written by hand, completed with defaults and property names canonicalised.

    Identity follows Name (a Name given wins; without one, Name is the Identity). Raises ValueError for
    an unknown kind or property, or a list object without a name.
    """
    result = with_defaults(kind, data, DEFAULTS)
    if kind == AUTH_CONFIG:
        result["Name"] = result["Identity"] = AUTH_CONFIG_IDENTITY
        return result
    if kind == ORGANIZATION_CONFIG:
        result["Identity"] = result["Name"]
        return result
    name = result["Name"] if isinstance(result["Name"], str) and result["Name"] else result["Identity"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"every {kind} needs a Name")
    result["Name"] = result["Identity"] = name
    if kind == AUTH_SERVER and isinstance(result["DomainName"], str):
        result["DomainName"] = [result["DomainName"]]
    return result


# --- shared helpers -----------------------------------------------------------------------------


def _bound(syntax: CmdletSyntax, cmdlet: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(parameter set, parameters under their canonical names) as documented; mandatory ones may not be empty."""
    try:
        chosen, bound = syntax.bind(params)
    except CommandSyntaxError as exc:
        raise CmdletError(cmdlet, exc.message) from None
    require(cmdlet, bound, *sorted(chosen.mandatory))
    return chosen.name, bound


def _not_found(cmdlet: str, identity: str) -> CmdletError:
    # Lab wording, modelled on Exchange's ManagementObjectNotFoundException (which also names the DC).
    return CmdletError(cmdlet, f"The operation couldn't be performed because object '{identity}' couldn't be found.")


def _user_not_found(cmdlet: str, name: str) -> CmdletError:
    # Lab wording, modelled on the error Exchange gives for a user parameter it cannot resolve.
    return CmdletError(
        cmdlet, f'Couldn\'t find object "{name}". Please make sure that it was spelled correctly or specify a '
        "different object."
    )


def _already_exists(cmdlet: str, kind: str, name: str) -> CmdletError:
    # Lab wording: Exchange reports the Active Directory object that already exists.
    return CmdletError(cmdlet, f'{kind} "{name}" already exists.')


def _string(cmdlet: str, bound: Mapping[str, Any], name: str) -> str:
    """A mandatory, non-empty [string] parameter."""
    require(cmdlet, bound, name)
    return as_string(cmdlet, name, bound[name]) or ""


def _switched(bound: Mapping[str, Any], name: str) -> bool:
    """A switch given and not `-Switch:$false`."""
    return name in bound and bool(bound[name])


def _strings(cmdlet: str, name: str, value: Any) -> list[str] | None:
    """A String[] / MultiValuedProperty value (one value or a list; $null clears)."""
    if value is None:
        return None
    values = value if isinstance(value, list | tuple) else [value]
    out = []
    for item in values:
        text = as_string(cmdlet, name, item)
        if not text:
            raise CmdletError(cmdlet, f"Cannot bind argument to parameter '{name}' because it is an empty string.")
        out.append(text)
    return out


def _download(cmdlet: str, url: str, context: CmdletContext) -> MetadataDocument:
    """Download an AuthMetadataUrl as the cmdlets do; a document without an issuer is not usable."""
    try:
        document = context.fetch(url)
    except MetadataError as exc:
        # Lab wording: Exchange's text for a failed metadata download is not documented.
        raise CmdletError(
            cmdlet, f"Couldn't download the authorization metadata from '{url}', or it isn't a valid metadata "
            f"document: {exc.detail}"
        ) from None
    if not document.service_name:
        raise CmdletError(
            cmdlet, f"Couldn't download the authorization metadata from '{url}', or it isn't a valid metadata "
            "document: no serviceName or issuer"
        )
    return document


def _get_list(cmdlet: str, kind: str, identity: Any, objects: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = objects.setdefault(kind, [])
    wanted = as_string(cmdlet, "Identity", identity)
    if not wanted:
        return copy.deepcopy(items)
    index = find(items, wanted)
    if index is None:
        raise _not_found(cmdlet, wanted)
    return [copy.deepcopy(items[index])]


def _remove(cmdlet: str, kind: str, syntax: CmdletSyntax, params: Mapping[str, Any],
            objects: dict[str, Any]) -> list[dict[str, Any]]:
    _, bound = _bound(syntax, cmdlet, params)
    identity = _string(cmdlet, bound, "Identity")
    items: list[dict[str, Any]] = objects.setdefault(kind, [])
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, identity)
    del items[index]
    return []


def _new_name(cmdlet: str, kind: str, bound: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> str:
    name = _string(cmdlet, bound, "Name")
    if find(items, name) is not None:
        raise _already_exists(cmdlet, kind, name)
    return name


def _rename(cmdlet: str, kind: str, bound: Mapping[str, Any], items: Sequence[Mapping[str, Any]],
            index: int) -> dict[str, Any]:
    """The Name/Identity change a Set's -Name asks for (none without -Name); a taken name fails."""
    if "Name" not in bound:
        return {}
    name = _string(cmdlet, bound, "Name")
    other = find(items, name)
    if other is not None and other != index:
        raise _already_exists(cmdlet, kind, name)
    return {"Name": name, "Identity": name}


def _account(name: str) -> str:
    """The account name in a bare, canonical (`domain/Users/name`) or `DOMAIN\\name` value."""
    return re.split(r"[/\\]", name)[-1]


def find_linked_user(objects: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The linked user with this Name or UserPrincipalName (case-insensitive; a canonical name or DOMAIN\\name
    is matched by its last part), or None."""
    lowered, account = name.lower(), _account(name).lower()
    for user in objects.get(LINKED_USER, []):
        if str(user.get("Name", "")).lower() in (lowered, account) \
                or str(user.get("UserPrincipalName") or "").lower() == lowered:
            return dict(user)
    return None


def has_role(objects: Mapping[str, Any], user: str, role: str) -> bool:
    """Whether a management role assignment gives `role` to the user named `user`."""
    return any(
        str(a.get("Role", "")).lower() == role.lower() and str(a.get("RoleAssigneeName", "")).lower() == user.lower()
        for a in objects.get(ROLE_ASSIGNMENT, [])
    )


def _directory_domain(context: CmdletContext) -> str | None:
    """The organization's domain, for canonical names: the realm of the host's own service (None if unknown)."""
    state, host = context.state, context.host
    if state is None or host is None:
        return None
    record = state.get("hosts", {}).get(host) or {}
    service = state.get("services", {}).get(record.get("service")) or {}
    realm = service.get("realm")
    return str(realm) if realm else None


# --- PartnerApplication -------------------------------------------------------------------------


def _linked_account(cmdlet: str, value: Any, objects: Mapping[str, Any]) -> str | None:
    """The Name of the linked user a -LinkedAccount names ($null clears it); an unknown user fails."""
    name = as_string(cmdlet, "LinkedAccount", value)
    if not name:
        return None
    user = find_linked_user(objects, name)
    if user is None:
        raise _user_not_found(cmdlet, name)
    return str(user["Name"])


def _partner_options(cmdlet: str, bound: Mapping[str, Any], objects: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in ("Enabled", "AcceptSecurityIdentifierInformation"):
        if name in bound:
            options[name] = as_bool(cmdlet, name, bound[name])
    if "AccountType" in bound:
        options["AccountType"] = as_enum(cmdlet, "AccountType", bound["AccountType"], ACCOUNT_TYPES)
    if "LinkedAccount" in bound:
        options["LinkedAccount"] = _linked_account(cmdlet, bound["LinkedAccount"], objects)
    for name in ("ActAsPermissions", "AppOnlyPermissions"):
        if name in bound:
            options[name] = _strings(cmdlet, name, bound[name])
    if "IssuerIdentifier" in bound:
        options["IssuerIdentifier"] = as_string(cmdlet, "IssuerIdentifier", bound["IssuerIdentifier"]) or None
    return options


def _from_document(document: MetadataDocument, url: str) -> dict[str, Any]:
    """What New/Set (-AuthMetadataUrl, -RefreshAuthMetadata) take from the partner's document. The keys are cached
    in CertificateStrings and used until the next refresh: a partner that publishes a new key is trusted with it
    only once told (lab modelling of Exchange's cache; the string format, base64 DER, is unconfirmed)."""
    return {"AuthMetadataUrl": url, "ApplicationIdentifier": document.service_name, "Realm": document.realm,
            "UseAuthServer": False,
            "CertificateStrings": [base64.b64encode(k.certificate_der).decode("ascii") for k in document.keys]}


def as_read(app: Mapping[str, Any], context: CmdletContext) -> dict[str, Any]:
    """A partner application as Get-PartnerApplication shows it (GetPartnerApplication.xml's shape and order)."""
    shown = {name: copy.deepcopy(app.get(name, default)) for name, default in PARTNER_APPLICATION_DEFAULTS.items()}
    for name in ("AuthMetadataUrl", "Realm"):
        if shown[name] is None:
            shown[name] = ""
    linked, domain = shown["LinkedAccount"], _directory_domain(context)
    if linked and domain and "/" not in str(linked):
        shown["LinkedAccount"] = f"{domain}/Users/{linked}"
    return shown


def get_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    # -Organization is "reserved for internal Microsoft use": accepted, one organization in the lab.
    _, bound = _bound(documented.GET_PARTNER_APPLICATION, cmdlet, params)
    return [as_read(app, context) for app in _get_list(cmdlet, PARTNER_APPLICATION, bound.get("Identity"), objects)]


def new_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    parameter_set, bound = _bound(documented.NEW_PARTNER_APPLICATION, cmdlet, params)
    items: list[dict[str, Any]] = objects.setdefault(PARTNER_APPLICATION, [])
    name = _new_name(cmdlet, PARTNER_APPLICATION, bound, items)
    app = dict(copy.deepcopy(PARTNER_APPLICATION_DEFAULTS), Name=name, Identity=name)
    app.update(_partner_options(cmdlet, bound, objects))
    if parameter_set == "AuthMetadataUrl":
        url = _string(cmdlet, bound, "AuthMetadataUrl")
        app.update(_from_document(_download(cmdlet, url, context), url))
    else:  # ACSTrustApplication
        app["ApplicationIdentifier"] = _string(cmdlet, bound, "ApplicationIdentifier")
        app["Realm"] = as_string(cmdlet, "Realm", bound.get("Realm")) or None
        app["UseAuthServer"] = True
    items.append(app)
    return [as_read(app, context)]


def set_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    parameter_set, bound = _bound(documented.SET_PARTNER_APPLICATION, cmdlet, params)
    identity = _string(cmdlet, bound, "Identity")
    items: list[dict[str, Any]] = objects.setdefault(PARTNER_APPLICATION, [])
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, identity)
    app = items[index]
    changes = _partner_options(cmdlet, bound, objects)
    changes.update(_rename(cmdlet, PARTNER_APPLICATION, bound, items, index))
    current = "AuthMetadataUrl" if app.get("AuthMetadataUrl") else "ACSTrustApplication"
    refresh = _switched(bound, "RefreshAuthMetadata")
    wanted = {"AuthMetadataUrl": "AuthMetadataUrl" if "AuthMetadataUrl" in bound else None,
              "ACSTrustApplication": "ACSTrustApplication" if {"ApplicationIdentifier", "Realm"} & bound.keys()
              else None,
              "RefreshAuthMetadata": "AuthMetadataUrl" if refresh else None}[parameter_set]
    if parameter_set == "RefreshAuthMetadata" and refresh and current != "AuthMetadataUrl":
        # Lab wording: Exchange's text is not documented.
        raise CmdletError(cmdlet, f'Partner application "{app["Name"]}" has no AuthMetadataUrl to refresh.')
    # Lab modelling, unconfirmed: Set may well switch a live application between the two forms; the
    # lab refuses (like its Skype emulation), so the tool must plan Remove + New for a switch.
    if wanted is not None and wanted != current:
        raise CmdletError(
            cmdlet,
            f'Partner application "{app["Name"]}" was created with the {current} parameter set and cannot be '
            f"switched to the {wanted} parameter set: remove it and create it again.",
        )
    if "AuthMetadataUrl" in bound or refresh:
        url = _string(cmdlet, bound, "AuthMetadataUrl") if "AuthMetadataUrl" in bound else str(app["AuthMetadataUrl"])
        changes.update(_from_document(_download(cmdlet, url, context), url))
    if "ApplicationIdentifier" in bound:
        changes["ApplicationIdentifier"] = _string(cmdlet, bound, "ApplicationIdentifier")
    if "Realm" in bound:
        changes["Realm"] = as_string(cmdlet, "Realm", bound["Realm"]) or None
    app.update(changes)
    return []


def remove_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _remove(cmdlet, PARTNER_APPLICATION, documented.REMOVE_PARTNER_APPLICATION, params, objects)


# --- AuthServer ---------------------------------------------------------------------------------


def _server_options(cmdlet: str, bound: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in ("Enabled", "IsDefaultAuthorizationEndpoint"):
        if name in bound:
            options[name] = as_bool(cmdlet, name, bound[name])
    if "DomainName" in bound:
        options["DomainName"] = _strings(cmdlet, "DomainName", bound["DomainName"]) or []
    for name in ("ApplicationIdentifier", "GraphBaseUrl"):
        if name in bound:
            options[name] = as_string(cmdlet, name, bound[name]) or None
    return options


def _document_type(document: MetadataDocument) -> str:
    if document.kind == "federation":
        return "AzureAD" if document.realm else "ADFS"
    return "MicrosoftACS"


def _server_document(cmdlet: str, document: MetadataDocument, url: str, server_type: str | None) -> dict[str, Any]:
    """What an auth server takes from its metadata document; the document must be of the kind its type reads."""
    if server_type is not None:
        federation = server_type in _FEDERATION_TYPES
        if server_type in (*_FEDERATION_TYPES, "MicrosoftACS") and federation != (document.kind == "federation"):
            expected = "federation metadata XML" if federation else "JSON metadata"
            # Lab wording: Exchange's text is not documented.
            raise CmdletError(cmdlet, f"The authorization metadata at '{url}' isn't {expected}, which an auth "
                                      f"server of type {server_type} reads.")
    return {"AuthMetadataUrl": url, "IssuerIdentifier": document.service_name, "Realm": document.realm,
            "Type": server_type or _document_type(document)}


def get_auth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    _, bound = _bound(documented.GET_AUTH_SERVER, cmdlet, params)
    return _get_list(cmdlet, AUTH_SERVER, bound.get("Identity"), objects)


def new_auth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    # Three sets: AuthMetadataUrl (type from the document), NativeClientAuthServer (-Type with a document),
    # AppSecret (-Type, optionally -ApplicationIdentifier, no document).
    parameter_set, bound = _bound(documented.NEW_AUTH_SERVER, cmdlet, params)
    items: list[dict[str, Any]] = objects.setdefault(AUTH_SERVER, [])
    name = _new_name(cmdlet, AUTH_SERVER, bound, items)
    server = dict(copy.deepcopy(AUTH_SERVER_DEFAULTS), Name=name, Identity=name)
    server.update(_server_options(cmdlet, bound))
    server_type = as_enum(cmdlet, "Type", bound["Type"], AUTH_SERVER_TYPES) if "Type" in bound else None
    if parameter_set == "AppSecret":
        server["Type"] = server_type
    else:
        url = _string(cmdlet, bound, "AuthMetadataUrl")
        server.update(_server_document(cmdlet, _download(cmdlet, url, context), url, server_type))
    items.append(server)
    return [copy.deepcopy(server)]


def set_auth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    _, bound = _bound(documented.SET_AUTH_SERVER, cmdlet, params)
    identity = _string(cmdlet, bound, "Identity")
    items: list[dict[str, Any]] = objects.setdefault(AUTH_SERVER, [])
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, identity)
    server = items[index]
    changes = _server_options(cmdlet, bound)
    changes.update(_rename(cmdlet, AUTH_SERVER, bound, items, index))
    refresh = _switched(bound, "RefreshAuthMetadata")
    if refresh and not server.get("AuthMetadataUrl"):
        # Lab wording: Exchange's text is not documented.
        raise CmdletError(cmdlet, f'Auth server "{server["Name"]}" has no AuthMetadataUrl to refresh.')
    if "AuthMetadataUrl" in bound or refresh:
        url = _string(cmdlet, bound, "AuthMetadataUrl") if "AuthMetadataUrl" in bound else str(
            server["AuthMetadataUrl"])
        changes.update(_server_document(cmdlet, _download(cmdlet, url, context), url, str(server["Type"])))
    server.update(changes)
    return []


def remove_auth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _remove(cmdlet, AUTH_SERVER, documented.REMOVE_AUTH_SERVER, params, objects)


# --- AuthConfig ---------------------------------------------------------------------------------


def utc_now() -> datetime.datetime:
    """The lab's clock: reconciler.clock's, so a test that moves time moves it for the tool and the lab at once."""
    return clock.utc_now()


def _parse_date(text: str) -> datetime.datetime | None:
    """An ISO 8601 date/time (or PowerShell's en-US M/d/yyyy [H:mm[:ss]]) in UTC; None if it is neither."""
    text = text.strip()
    parsed: datetime.datetime | None = None
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        for pattern in ("%m/%d/%Y", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M"):
            try:
                parsed = datetime.datetime.strptime(text, pattern)
                break
            except ValueError:
                continue
    return None if parsed is None else _utc(parsed)


def _utc(moment: datetime.datetime) -> datetime.datetime:
    # Lab modelling: a date without a zone is UTC (a real server uses its local time zone).
    return moment.replace(tzinfo=datetime.UTC) if moment.tzinfo is None else moment.astimezone(datetime.UTC)


def _effective_date(cmdlet: str, value: Any) -> str:
    """A -NewCertificateEffectiveDate as an ISO 8601 UTC string."""
    if isinstance(value, datetime.datetime):
        return _utc(value).isoformat(timespec="seconds")
    text = as_string(cmdlet, "NewCertificateEffectiveDate", value) or ""
    parsed = _parse_date(text)
    if parsed is None:
        raise CmdletError(
            cmdlet,
            "Cannot bind parameter 'NewCertificateEffectiveDate'. Cannot convert value "
            f'"{text}" to type "System.DateTime". Error: "String was not recognized as a valid DateTime."',
        )
    return parsed.isoformat(timespec="seconds")


def _thumbprint(cmdlet: str, name: str, value: Any) -> str:
    text = as_string(cmdlet, name, value) or ""
    if not _THUMBPRINT.fullmatch(text):
        # Lab wording: Exchange looks the thumbprint up in the certificate store; the lab checks its form.
        raise CmdletError(cmdlet, f'The certificate thumbprint "{text}" isn\'t valid: a thumbprint is 40 '
                                  "hexadecimal characters.")
    return text.upper()


def auth_config(objects: dict[str, Any]) -> dict[str, Any]:
    """The live AuthConfig, after promoting a staged certificate whose effective date has passed."""
    config: dict[str, Any] = objects.setdefault(AUTH_CONFIG, dict(AUTH_CONFIG_DEFAULTS))
    staged = config.get("NextCertificateThumbprint")
    date = config.get("NextCertificateEffectiveDate")
    effective = _parse_date(date) if isinstance(date, str) else None
    if staged and effective is not None and effective <= utc_now():
        _publish(config)
    return config


def _publish(config: dict[str, Any]) -> None:
    """Next becomes Current, Current becomes Previous."""
    if config.get("CurrentCertificateThumbprint"):
        config["PreviousCertificateThumbprint"] = config["CurrentCertificateThumbprint"]
    config["CurrentCertificateThumbprint"] = config["NextCertificateThumbprint"]
    config["NextCertificateThumbprint"] = None
    config["NextCertificateEffectiveDate"] = None


def _shown_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """AuthConfig as Get-AuthConfig shows it: an empty thumbprint is "" (GetAuthConfig.xml), an unset date Nil."""
    shown = copy.deepcopy(dict(config))
    for name in ("CurrentCertificateThumbprint", "PreviousCertificateThumbprint", "NextCertificateThumbprint"):
        if shown.get(name) is None:
            shown[name] = ""
    return shown


def get_auth_config(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    _bound(documented.GET_AUTH_CONFIG, cmdlet, params)  # no -Identity: there is one
    return [_shown_config(auth_config(objects))]


def set_auth_config(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    # Four exclusive sets (Set-AuthConfig.md). -Force, -Server and -SkipImmediateCertificateDeployment are
    # accepted where documented and change nothing here: no prompt to skip, one directory, no deployment delay.
    parameter_set, bound = _bound(documented.SET_AUTH_CONFIG, cmdlet, params)
    config = auth_config(objects)
    changes: dict[str, Any] = {}
    if parameter_set == "CurrentCertificateParameter":
        thumbprint = _thumbprint(cmdlet, "CertificateThumbprint", bound["CertificateThumbprint"])
        current = config.get("CurrentCertificateThumbprint")
        if thumbprint != current:
            changes = {"CurrentCertificateThumbprint": thumbprint}
            if current:
                changes["PreviousCertificateThumbprint"] = current
    elif parameter_set == "NewCertificateParameter":
        # Lab modelling: Exchange documents both as optional; the lab stages only a thumbprint with its date.
        require(cmdlet, bound, "NewCertificateThumbprint", "NewCertificateEffectiveDate")
        changes = {
            "NextCertificateThumbprint": _thumbprint(cmdlet, "NewCertificateThumbprint",
                                                     bound["NewCertificateThumbprint"]),
            "NextCertificateEffectiveDate": _effective_date(cmdlet, bound["NewCertificateEffectiveDate"]),
        }
    elif parameter_set == "PublishAuthCertificateParameter":
        publish = _switched(bound, "PublishCertificate")
        if publish and not config.get("NextCertificateThumbprint"):
            # Lab wording: Exchange's text is not documented.
            raise CmdletError(cmdlet, "There is no next certificate to publish: stage one with "
                                      "-NewCertificateThumbprint and -NewCertificateEffectiveDate first.")
        if publish:
            _publish(config)
        if _switched(bound, "ClearPreviousCertificate"):
            changes["PreviousCertificateThumbprint"] = None
    else:  # AuthConfigSettings
        for name in ("ServiceName", "Realm"):
            if name in bound:
                changes[name] = as_string(cmdlet, name, bound[name]) or ""
    config.update(changes)
    return []


# --- LinkedUser ---------------------------------------------------------------------------------


def get_linked_user(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    _, bound = _bound(documented.GET_LINKED_USER, cmdlet, params)
    for name in ("Filter", "OrganizationalUnit"):
        if bound.get(name) not in (None, ""):
            raise CmdletError(cmdlet, f"The lab does not evaluate -{name}.")  # lab wording
    users = _get_list(cmdlet, LINKED_USER, bound.get("Identity"), objects)
    anr = (as_string(cmdlet, "Anr", bound.get("Anr")) or "").lower()
    if anr:  # ambiguous name resolution: names and UPNs starting with the text
        users = [u for u in users if str(u.get("Name") or "").lower().startswith(anr)
                 or str(u.get("UserPrincipalName") or "").lower().startswith(anr)]
    if bound.get("SortBy"):
        key = next((k for k in LINKED_USER_DEFAULTS if k.lower() == str(bound["SortBy"]).lower()), None)
        if key is None:
            raise CmdletError(cmdlet, f"The property '{bound['SortBy']}' can't be used to sort.")  # lab wording
        users.sort(key=lambda u: str(u.get(key) or "").lower())
    size = bound.get("ResultSize")
    if size is not None and str(size).lower() != "unlimited":
        users = users[: int(str(size))]
    return users


def new_linked_user(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    # Unconfirmed: New-LinkedUser is not in Microsoft's reference (see reconciler.kinds.exchange).
    _, bound = _bound(documented.NEW_LINKED_USER, cmdlet, params)
    items: list[dict[str, Any]] = objects.setdefault(LINKED_USER, [])
    name = _new_name(cmdlet, LINKED_USER, bound, items)
    upn = as_string(cmdlet, "UserPrincipalName", bound.get("UserPrincipalName")) or None
    if upn is not None:
        user_part, at, domain = upn.partition("@")
        if not (user_part and at and domain):
            raise CmdletError(cmdlet, f'"{upn}" isn\'t a valid user principal name: use the form user@domain.')
        if find_linked_user(objects, upn) is not None:
            raise _already_exists(cmdlet, "UserPrincipalName", upn)
    user = dict(LINKED_USER_DEFAULTS, Name=name, Identity=name, UserPrincipalName=upn)
    items.append(user)
    return [copy.deepcopy(user)]


def remove_linked_user(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    # Unconfirmed: that Exchange has a Remove-LinkedUser cmdlet. Partner applications linking the user
    # and its role assignments are left as they are, naming a user that no longer exists.
    return _remove(cmdlet, LINKED_USER, documented.REMOVE_LINKED_USER, params, objects)


# --- ManagementRoleAssignment -------------------------------------------------------------------

def _role(cmdlet: str, value: Any) -> str:
    text = as_string(cmdlet, "Role", value) or ""
    known = next((role for role in KNOWN_ROLES if role.lower() == text.lower()), None)
    if known is None:
        raise _not_found(cmdlet, text)
    return known


def _assignment_name(role: str, user: str, items: Sequence[Mapping[str, Any]]) -> str:
    """`<Role>-<User>`, cut to 64 characters; a number keeps it unique when the cut name is taken."""
    base = f"{role}-{user}"[:MAX_NAME_LENGTH]
    name, number = base, 1
    while find(items, name) is not None:
        suffix = str(number)
        name = base[: MAX_NAME_LENGTH - len(suffix)] + suffix
        number += 1
    return name


_ASSIGNMENT_FILTERS = ("RoleAssigneeType", "ConfigWriteScope", "RecipientWriteScope")
"""Get-ManagementRoleAssignment filters compared with the assignment's property of the same name."""
_NO_SCOPES = (*documented.SCOPES, "WritableDatabase", "WritableRecipient", "WritableServer")
"""Scopes, groups, OUs and writable objects: none exists in the lab, so filtering by one finds nothing."""


def get_management_role_assignment(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    _, bound = _bound(documented.GET_MANAGEMENT_ROLE_ASSIGNMENT, cmdlet, params)
    items = _get_list(cmdlet, ROLE_ASSIGNMENT, bound.get("Identity"), objects)
    if bound.get("Role") is not None:
        role = _role(cmdlet, bound["Role"])
        items = [a for a in items if str(a.get("Role", "")).lower() == role.lower()]
    assignee = as_string(cmdlet, "RoleAssignee", bound.get("RoleAssignee"))
    if assignee:
        user = find_linked_user(objects, assignee)
        if user is None:
            raise _user_not_found(cmdlet, assignee)
        items = [a for a in items if str(a.get("RoleAssigneeName", "")).lower() == str(user["Name"]).lower()]
    for name in ("Enabled", "Delegating"):
        if name in bound:
            wanted = as_bool(cmdlet, name, bound[name])
            items = [a for a in items if bool(a.get(name, ROLE_ASSIGNMENT_DEFAULTS[name])) is wanted]
    if "Exclusive" in bound and as_bool(cmdlet, "Exclusive", bound["Exclusive"]):
        items = []  # the lab has no exclusive scopes
    for name in _ASSIGNMENT_FILTERS:
        if bound.get(name) is not None:
            text = str(bound[name]).lower()
            items = [a for a in items if str(a.get(name, ROLE_ASSIGNMENT_DEFAULTS[name])).lower() == text]
    methods = _strings(cmdlet, "AssignmentMethod", bound.get("AssignmentMethod"))
    if methods is not None:
        wanted_methods = {m.lower() for m in methods}
        items = [a for a in items if str(a.get("AssignmentMethod", "Direct")).lower() in wanted_methods]
    if any(bound.get(name) not in (None, "") for name in _NO_SCOPES):
        items = []
    return items  # -GetEffectiveUsers: the lab's assignments are all direct, to users


def new_management_role_assignment(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    # The User parameter set. -Force (cloud only) and -UnScopedTopLevel are accepted without effect.
    _, bound = _bound(documented.NEW_MANAGEMENT_ROLE_ASSIGNMENT, cmdlet, params)
    role = _role(cmdlet, bound["Role"])
    wanted_user = as_string(cmdlet, "User", bound["User"]) or ""
    user = find_linked_user(objects, wanted_user)
    if user is None:
        raise _user_not_found(cmdlet, wanted_user)
    scope = next((name for name in documented.SCOPES if bound.get(name) not in (None, "")), None)
    if scope is not None:
        raise _not_found(cmdlet, str(bound[scope]))  # no management scope, group, unit or OU exists in the lab
    items: list[dict[str, Any]] = objects.setdefault(ROLE_ASSIGNMENT, [])
    duplicate = next((a for a in items if has_role({ROLE_ASSIGNMENT: [a]}, str(user["Name"]), role)), None)
    if duplicate is not None:
        # Lab wording: Exchange's text for an assignment that already exists is not documented.
        raise CmdletError(cmdlet, f'The role "{role}" is already assigned to "{user["Name"]}" by the role '
                                  f'assignment "{duplicate["Name"]}".')
    if "Name" in bound:
        name = _new_name(cmdlet, ROLE_ASSIGNMENT, bound, items)
    else:
        name = _assignment_name(role, str(user["Name"]), items)
    assignment = dict(ROLE_ASSIGNMENT_DEFAULTS, Name=name, Identity=name, Role=role,
                      RoleAssigneeName=str(user["Name"]), Delegating=_switched(bound, "Delegating"))
    if bound.get("RecipientRelativeWriteScope") is not None:
        assignment["RecipientWriteScope"] = as_enum(cmdlet, "RecipientRelativeWriteScope",
                                                    bound["RecipientRelativeWriteScope"],
                                                    documented.RECIPIENT_RELATIVE_WRITE_SCOPES)
    items.append(assignment)
    return [copy.deepcopy(assignment)]


def remove_management_role_assignment(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _remove(cmdlet, ROLE_ASSIGNMENT, documented.REMOVE_MANAGEMENT_ROLE_ASSIGNMENT, params, objects)


# --- SettingOverride ----------------------------------------------------------------------------
# Lab modelling: Component, Section and Parameters are stored as given (Exchange checks them against the
# components and sections it knows; the lab does not); two overrides may not share a Name.


def _override_options(cmdlet: str, bound: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, prop in (("Component", "ComponentName"), ("Section", "SectionName"), ("Reason", "Reason"),
                       ("MinVersion", "MinVersion"), ("MaxVersion", "MaxVersion")):
        if name in bound:
            options[prop] = as_string(cmdlet, name, bound[name]) or None
    if "Parameters" in bound:
        options["Parameters"] = _strings(cmdlet, "Parameters", bound["Parameters"]) or []
    if "Server" in bound:
        options["Server"] = _strings(cmdlet, "Server", bound["Server"])
    return options


def get_setting_override(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    _, bound = _bound(documented.GET_SETTING_OVERRIDE, cmdlet, params)
    return _get_list(cmdlet, SETTING_OVERRIDE, bound.get("Identity"), objects)


def new_setting_override(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    _, bound = _bound(documented.NEW_SETTING_OVERRIDE, cmdlet, params)
    items: list[dict[str, Any]] = objects.setdefault(SETTING_OVERRIDE, [])
    name = _new_name(cmdlet, SETTING_OVERRIDE, bound, items)
    override = dict(copy.deepcopy(DEFAULTS[SETTING_OVERRIDE]), Name=name, Identity=name)
    override.update(_override_options(cmdlet, bound))
    items.append(override)
    return [copy.deepcopy(override)]


def set_setting_override(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    _, bound = _bound(documented.SET_SETTING_OVERRIDE, cmdlet, params)
    identity = _string(cmdlet, bound, "Identity")
    items: list[dict[str, Any]] = objects.setdefault(SETTING_OVERRIDE, [])
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, identity)
    items[index].update(_override_options(cmdlet, bound))
    return []


def remove_setting_override(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _remove(cmdlet, SETTING_OVERRIDE, documented.REMOVE_SETTING_OVERRIDE, params, objects)


# --- OrganizationConfig -------------------------------------------------------------------------
# Only OAuth2ClientProfileEnabled is emulated (the one parameter the provider writes; the declared syntax holds only
# the parameters used, so a call with any other fails binding as an unknown parameter would).


def get_organization_config(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    _bound(documented.GET_ORGANIZATION_CONFIG, cmdlet, params)
    return [copy.deepcopy(objects.setdefault(ORGANIZATION_CONFIG, dict(ORGANIZATION_CONFIG_DEFAULTS)))]


def set_organization_config(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    _, bound = _bound(documented.SET_ORGANIZATION_CONFIG, cmdlet, params)
    config: dict[str, Any] = objects.setdefault(ORGANIZATION_CONFIG, dict(ORGANIZATION_CONFIG_DEFAULTS))
    if "OAuth2ClientProfileEnabled" in bound:
        config["OAuth2ClientProfileEnabled"] = as_bool(cmdlet, "OAuth2ClientProfileEnabled",
                                                       bound["OAuth2ClientProfileEnabled"])
    return []


# --- iisreset -----------------------------------------------------------------------------------


def iisreset(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    """`iisreset [computername] [/options]`, a native command: restart IIS on one of the host's `servers` and
    count it there (see the module docstring). The emulator already refused named parameters (the documented
    syntax has none)."""
    names = [a for a in context.arguments if not a.startswith("/")]
    if len(names) > 1:
        # Lab wording: iisreset's own usage text is not modelled.
        raise CmdletError(cmdlet, f"iisreset takes one computer name, not {len(names)}: {' '.join(names)}")
    server = names[0] if names else (context.host or "")
    record = context.state["hosts"].get(context.host or "") if context.state is not None else None
    servers = [str(name) for name in (record or {}).get("servers") or []]
    match = next((name for name in servers if name.lower() == server.lower()), None)
    if record is None or match is None:
        raise CmdletError(cmdlet, "Access denied / server not found")
    resets: dict[str, Any] = record.setdefault("iisResets", {})
    resets[match] = int(resets.get(match, 0)) + 1
    return []


SYNTAX: Mapping[str, CmdletSyntax] = {
    c.name: c for c in (*(c for k in documented.KINDS for c in k.cmdlets), *documented.ENTERPRISE_CMDLETS,
                        documented.IISRESET, *documented.SETTING_OVERRIDE.cmdlets,
                        *documented.ORGANIZATION_CONFIG.cmdlets)}
"""The documented syntax of every command the platform runs (the emulator binds each call against it)."""

PLATFORM = Platform(
    name="exchange",
    cmdlets={
        "Get-PartnerApplication": get_partner_application,
        "New-PartnerApplication": new_partner_application,
        "Set-PartnerApplication": set_partner_application,
        "Remove-PartnerApplication": remove_partner_application,
        "Get-AuthServer": get_auth_server,
        "New-AuthServer": new_auth_server,
        "Set-AuthServer": set_auth_server,
        "Remove-AuthServer": remove_auth_server,
        "Get-AuthConfig": get_auth_config,
        "Set-AuthConfig": set_auth_config,
        "Get-LinkedUser": get_linked_user,
        "New-LinkedUser": new_linked_user,
        "Remove-LinkedUser": remove_linked_user,
        "Get-ManagementRoleAssignment": get_management_role_assignment,
        "New-ManagementRoleAssignment": new_management_role_assignment,
        "Remove-ManagementRoleAssignment": remove_management_role_assignment,
        "iisreset": iisreset,
        "Get-SettingOverride": get_setting_override,
        "New-SettingOverride": new_setting_override,
        "Set-SettingOverride": set_setting_override,
        "Remove-SettingOverride": remove_setting_override,
        "Get-OrganizationConfig": get_organization_config,
        "Set-OrganizationConfig": set_organization_config,
    },
    kinds={PARTNER_APPLICATION: False, AUTH_SERVER: False, AUTH_CONFIG: True, LINKED_USER: False,
           ROLE_ASSIGNMENT: False, SETTING_OVERRIDE: False, ORGANIZATION_CONFIG: True},
    empty_objects=empty_objects,
    normalize=normalize,
    changed_by_reading=frozenset({"Get-AuthConfig"}),  # promotes a staged certificate whose date has passed
    syntax=SYNTAX,
)
