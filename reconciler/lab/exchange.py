"""Exchange Server OAuth cmdlets (Exchange Management Shell), emulated on the lab state.

Modelled on Microsoft's cmdlet reference for Exchange 2013-2019/SE (parameter sets, mandatory
parameters) and on the errors PowerShell itself raises. Where Microsoft documents no wording (an
object that does not exist or already exists, a download that fails), the text here is the lab's,
modelled on Exchange's usual messages, and marked so.

Objects use the cmdlets' property names; Identity is always the Name and matches case-insensitively:
- PartnerApplication: Name, Identity, ApplicationIdentifier, Realm, AuthMetadataUrl (None unless created
  or set from a metadata document), Enabled, LinkedAccount (a LinkedUser's Name, or None),
  AcceptSecurityIdentifierInformation, AccountType (OrganizationalAccount|ConsumerAccount), UseAuthServer.
- AuthServer: Name, Identity, AuthMetadataUrl, Type (MicrosoftACS|AzureAD|ADFS), Enabled, DomainName (list),
  IssuerIdentifier (the issuer's name part, before the `@`, as Get-AuthServer shows it), Realm.
- AuthConfig (one object, Identity "Auth Configuration"): ServiceName, Realm, CurrentCertificateThumbprint,
  NextCertificateThumbprint, NextCertificateEffectiveDate (ISO 8601, UTC, or None), PreviousCertificateThumbprint.
- LinkedUser: Name, Identity, UserPrincipalName (the user account Configure-EnterprisePartnerApplication.ps1
  creates for a partner application).
- ManagementRoleAssignment: Name, Identity, Role, RoleAssigneeName, RoleAssigneeType ("User").

An Exchange host record carries, beside `objects` (see reconciler.lab.estate): `servers` (the Exchange
servers `iisreset` may name), `iisResets` ({server: count}), `mailboxes` (SIP URIs
Test-CsExStorageConnectivity finds a mailbox for), `skype` (the linked Skype pool's host) and `service`
(its entry in the state's `services`: its own metadata document and certificate).

Lab modelling, unconfirmed against a live server:
- AuthConfig staging: the lab's clock is real time. When NextCertificateEffectiveDate has passed, the
  next read (Get-AuthConfig, Set-AuthConfig, Test-CsExStorageConnectivity on a linked pool) promotes
  Next to Current (and Current to Previous) and keeps it, as Exchange's Auth certificate servicelet
  publishes a staged certificate when its date arrives.
- Set-PartnerApplication refuses to switch an application between the AuthMetadataUrl and the
  ApplicationIdentifier forms (remove and re-create it), like the Skype emulation.
- Remove-LinkedUser: Exchange's setup scripts create and read these accounts; that a cmdlet of this
  name removes one is not confirmed.
- `iisreset` is not a cmdlet: it is the IIS reset Microsoft recommends after partner-application
  changes, modelled as a command (`iisreset -Server <name>`) so that a step running it can be tested.
- -TrustAnySSLCertificate is accepted and has no effect: the lab fetches every document the same way.
"""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.lab.emulator import (
    CmdletContext,
    CmdletError,
    Platform,
    as_bool,
    as_enum,
    as_string,
    as_switch,
    bind,
    find,
    require,
)
from reconciler.metadata import MetadataDocument, MetadataError

PARTNER_APPLICATION = "PartnerApplication"
AUTH_SERVER = "AuthServer"
AUTH_CONFIG = "AuthConfig"
LINKED_USER = "LinkedUser"
ROLE_ASSIGNMENT = "ManagementRoleAssignment"

EXCHANGE_SERVICE_NAME = "00000002-0000-0ff1-ce00-000000000000"
AUTH_CONFIG_IDENTITY = "Auth Configuration"
ACCOUNT_TYPES = ("OrganizationalAccount", "ConsumerAccount")
AUTH_SERVER_TYPES = ("MicrosoftACS", "AzureAD", "ADFS")
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

WRITE_OPTIONS = ("Confirm", "DomainController")
"""Accepted by the cmdlets; with no console to prompt and one directory, neither changes what the lab does."""
_AMBIGUOUS = "Parameter set cannot be resolved using the specified named parameters."
_THUMBPRINT = re.compile(r"[0-9A-Fa-f]{40}")

PARTNER_APPLICATION_DEFAULTS: dict[str, Any] = {
    "Name": None,
    "Identity": None,
    "ApplicationIdentifier": None,
    "Realm": None,
    "AuthMetadataUrl": None,
    "Enabled": True,
    "LinkedAccount": None,
    "AcceptSecurityIdentifierInformation": False,
    "AccountType": "OrganizationalAccount",
    "UseAuthServer": False,
}
AUTH_SERVER_DEFAULTS: dict[str, Any] = {
    "Name": None,
    "Identity": None,
    "AuthMetadataUrl": None,
    "Type": "MicrosoftACS",
    "Enabled": True,
    "DomainName": [],
    "IssuerIdentifier": None,
    "Realm": None,
}
AUTH_CONFIG_DEFAULTS: dict[str, Any] = {
    "Identity": AUTH_CONFIG_IDENTITY,
    "ServiceName": EXCHANGE_SERVICE_NAME,
    "Realm": "",
    "CurrentCertificateThumbprint": None,
    "NextCertificateThumbprint": None,
    "NextCertificateEffectiveDate": None,
    "PreviousCertificateThumbprint": None,
}
LINKED_USER_DEFAULTS: dict[str, Any] = {"Name": None, "Identity": None, "UserPrincipalName": None}
ROLE_ASSIGNMENT_DEFAULTS: dict[str, Any] = {
    "Name": None,
    "Identity": None,
    "Role": None,
    "RoleAssigneeName": None,
    "RoleAssigneeType": "User",
}
DEFAULTS = {
    PARTNER_APPLICATION: PARTNER_APPLICATION_DEFAULTS,
    AUTH_SERVER: AUTH_SERVER_DEFAULTS,
    AUTH_CONFIG: AUTH_CONFIG_DEFAULTS,
    LINKED_USER: LINKED_USER_DEFAULTS,
    ROLE_ASSIGNMENT: ROLE_ASSIGNMENT_DEFAULTS,
}


def empty_objects() -> dict[str, Any]:
    """The objects of a freshly installed organization: default AuthConfig, nothing else."""
    return {
        PARTNER_APPLICATION: [],
        AUTH_SERVER: [],
        AUTH_CONFIG: dict(AUTH_CONFIG_DEFAULTS),
        LINKED_USER: [],
        ROLE_ASSIGNMENT: [],
    }


def normalize(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """An object written by hand, completed with defaults and property names canonicalised.

    Identity follows Name (a Name given wins; without one, Name is the Identity). Raises ValueError for
    an unknown kind or property, or a list object without a name.
    """
    defaults = DEFAULTS.get(kind)
    if defaults is None:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(DEFAULTS)})")
    names = {name.lower(): name for name in defaults}
    result = copy.deepcopy(defaults)
    for raw, value in data.items():
        name = names.get(str(raw).lower())
        if name is None:
            raise ValueError(f"{kind} has no property {raw!r} (known: {', '.join(defaults)})")
        result[name] = value
    if kind == AUTH_CONFIG:
        result["Identity"] = AUTH_CONFIG_IDENTITY
        return result
    name = result["Name"] if isinstance(result["Name"], str) and result["Name"] else result["Identity"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"every {kind} needs a Name")
    result["Name"] = result["Identity"] = name
    if kind == AUTH_SERVER and isinstance(result["DomainName"], str):
        result["DomainName"] = [result["DomainName"]]
    return result


# --- shared helpers -----------------------------------------------------------------------------


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


def _given(bound: Mapping[str, Any], switches: Sequence[str]) -> set[str]:
    """Parameters that take part in set resolution (a switch given as $false counts as absent)."""
    return {name for name, value in bound.items() if not (name in switches and value is False)}


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


def _get_list(cmdlet: str, kind: str, params: Mapping[str, Any], objects: dict[str, Any]) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Identity", "DomainController"))
    items: list[dict[str, Any]] = objects.setdefault(kind, [])
    identity = as_string(cmdlet, "Identity", bound.get("Identity"))
    if not identity:
        return copy.deepcopy(items)
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, identity)
    return [copy.deepcopy(items[index])]


def _remove(cmdlet: str, kind: str, params: Mapping[str, Any], objects: dict[str, Any]) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Identity", *WRITE_OPTIONS))
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


def find_linked_user(objects: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The linked user with this Name or UserPrincipalName (case-insensitive), or None."""
    lowered = name.lower()
    for user in objects.get(LINKED_USER, []):
        if str(user.get("Name", "")).lower() == lowered or str(user.get("UserPrincipalName") or "").lower() == lowered:
            return dict(user)
    return None


def has_role(objects: Mapping[str, Any], user: str, role: str) -> bool:
    """Whether a management role assignment gives `role` to the user named `user`."""
    return any(
        str(a.get("Role", "")).lower() == role.lower() and str(a.get("RoleAssigneeName", "")).lower() == user.lower()
        for a in objects.get(ROLE_ASSIGNMENT, [])
    )


# --- PartnerApplication -------------------------------------------------------------------------

_PARTNER_COMMON = ("Name", "Enabled", "LinkedAccount", "AcceptSecurityIdentifierInformation", "AccountType",
                   *WRITE_OPTIONS)
_PARTNER_SWITCHES = ("TrustAnySSLCertificate", "RefreshAuthMetadata")


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
    return options


def _from_document(document: MetadataDocument, url: str) -> dict[str, Any]:
    return {"AuthMetadataUrl": url, "ApplicationIdentifier": document.service_name, "Realm": document.realm}


def get_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _get_list(cmdlet, PARTNER_APPLICATION, params, objects)


def new_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    # Two parameter sets: AuthMetadataUrl (-AuthMetadataUrl [-TrustAnySSLCertificate]) and
    # ACSTrustApplication (-ApplicationIdentifier [-Realm] [-UseAuthServer]).
    metadata_set = {"AuthMetadataUrl", "TrustAnySSLCertificate"}
    identifier_set = {"ApplicationIdentifier", "Realm", "UseAuthServer"}
    bound = bind(cmdlet, params, (*_PARTNER_COMMON, *sorted(metadata_set), *sorted(identifier_set)))
    given = _given(bound, _PARTNER_SWITCHES)
    if (given & metadata_set and given & identifier_set) or not given & {"AuthMetadataUrl", "ApplicationIdentifier"}:
        raise CmdletError(cmdlet, _AMBIGUOUS)
    items: list[dict[str, Any]] = objects.setdefault(PARTNER_APPLICATION, [])
    name = _new_name(cmdlet, PARTNER_APPLICATION, bound, items)
    app = dict(PARTNER_APPLICATION_DEFAULTS, Name=name, Identity=name)
    app.update(_partner_options(cmdlet, bound, objects))
    if "TrustAnySSLCertificate" in bound:
        as_switch(cmdlet, "TrustAnySSLCertificate", bound["TrustAnySSLCertificate"])
    if "AuthMetadataUrl" in given:
        url = _string(cmdlet, bound, "AuthMetadataUrl")
        app.update(_from_document(_download(cmdlet, url, context), url))
    else:
        app["ApplicationIdentifier"] = _string(cmdlet, bound, "ApplicationIdentifier")
        app["Realm"] = as_string(cmdlet, "Realm", bound.get("Realm"))
        if "UseAuthServer" in bound:
            app["UseAuthServer"] = as_bool(cmdlet, "UseAuthServer", bound["UseAuthServer"])
    items.append(app)
    return [copy.deepcopy(app)]


def set_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    # Three parameter sets beyond the common parameters: AuthMetadataUrl (-AuthMetadataUrl
    # [-TrustAnySSLCertificate]), ACSTrustApplication (-ApplicationIdentifier and/or -Realm) and
    # RefreshAuthMetadata (-RefreshAuthMetadata [-TrustAnySSLCertificate]).
    bound = bind(cmdlet, params, ("Identity", *_PARTNER_COMMON, "AuthMetadataUrl", "TrustAnySSLCertificate",
                                  "ApplicationIdentifier", "Realm", "RefreshAuthMetadata"))
    given = _given(bound, _PARTNER_SWITCHES)
    forms = [form for form, names in (("AuthMetadataUrl", {"AuthMetadataUrl"}),
                                      ("ACSTrustApplication", {"ApplicationIdentifier", "Realm"}),
                                      ("RefreshAuthMetadata", {"RefreshAuthMetadata"})) if given & names]
    if len(forms) > 1 or ("TrustAnySSLCertificate" in given and forms[:1] not in (["AuthMetadataUrl"],
                                                                                    ["RefreshAuthMetadata"])):
        raise CmdletError(cmdlet, _AMBIGUOUS)
    identity = _string(cmdlet, bound, "Identity")
    items: list[dict[str, Any]] = objects.setdefault(PARTNER_APPLICATION, [])
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, identity)
    app = items[index]
    changes = _partner_options(cmdlet, bound, objects)
    changes.update(_rename(cmdlet, PARTNER_APPLICATION, bound, items, index))
    for switch in _PARTNER_SWITCHES:
        if switch in bound:
            as_switch(cmdlet, switch, bound[switch])
    current = "AuthMetadataUrl" if app.get("AuthMetadataUrl") else "ACSTrustApplication"
    if forms == ["RefreshAuthMetadata"] and current != "AuthMetadataUrl":
        # Lab wording: Exchange's text is not documented.
        raise CmdletError(cmdlet, f'Partner application "{app["Name"]}" has no AuthMetadataUrl to refresh.')
    wanted = {"RefreshAuthMetadata": "AuthMetadataUrl"}.get(forms[0], forms[0]) if forms else current
    # Lab modelling, unconfirmed: Set may well switch a live application between the two forms; the
    # lab refuses (like its Skype emulation), so the tool must plan Remove + New for a switch.
    if wanted != current:
        raise CmdletError(
            cmdlet,
            f'Partner application "{app["Name"]}" was created with the {current} parameter set and cannot be '
            f"switched to the {wanted} parameter set: remove it and create it again.",
        )
    if forms == ["AuthMetadataUrl"]:
        url = _string(cmdlet, bound, "AuthMetadataUrl")
        changes.update(_from_document(_download(cmdlet, url, context), url))
    elif forms == ["RefreshAuthMetadata"]:
        url = str(app["AuthMetadataUrl"])
        changes.update(_from_document(_download(cmdlet, url, context), url))
    elif forms == ["ACSTrustApplication"]:
        if "ApplicationIdentifier" in bound:
            changes["ApplicationIdentifier"] = _string(cmdlet, bound, "ApplicationIdentifier")
        if "Realm" in bound:
            changes["Realm"] = as_string(cmdlet, "Realm", bound["Realm"])
    app.update(changes)
    return []


def remove_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _remove(cmdlet, PARTNER_APPLICATION, params, objects)


# --- AuthServer ---------------------------------------------------------------------------------


def _domain_names(cmdlet: str, value: Any) -> list[str]:
    """A -DomainName value (one name or a list; $null clears) as a list of names."""
    if value is None:
        return []
    values = value if isinstance(value, list | tuple) else [value]
    names: list[str] = []
    for item in values:
        text = as_string(cmdlet, "DomainName", item)
        if not text:
            raise CmdletError(cmdlet, "Cannot bind argument to parameter 'DomainName' because it is an empty string.")
        names.append(text)
    return names


def _server_options(cmdlet: str, bound: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if "Type" in bound:
        options["Type"] = as_enum(cmdlet, "Type", bound["Type"], AUTH_SERVER_TYPES)
    if "Enabled" in bound:
        options["Enabled"] = as_bool(cmdlet, "Enabled", bound["Enabled"])
    if "DomainName" in bound:
        options["DomainName"] = _domain_names(cmdlet, bound["DomainName"])
    if "TrustAnySSLCertificate" in bound:
        as_switch(cmdlet, "TrustAnySSLCertificate", bound["TrustAnySSLCertificate"])
    return options


def _server_document(document: MetadataDocument, url: str) -> dict[str, Any]:
    return {"AuthMetadataUrl": url, "IssuerIdentifier": document.service_name, "Realm": document.realm}


def get_auth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _get_list(cmdlet, AUTH_SERVER, params, objects)


def new_auth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Name", "AuthMetadataUrl", "Type", "Enabled", "DomainName",
                                  "TrustAnySSLCertificate", *WRITE_OPTIONS))
    items: list[dict[str, Any]] = objects.setdefault(AUTH_SERVER, [])
    require(cmdlet, bound, "Name", "AuthMetadataUrl")
    name = _new_name(cmdlet, AUTH_SERVER, bound, items)
    url = _string(cmdlet, bound, "AuthMetadataUrl")
    server = dict(AUTH_SERVER_DEFAULTS, Name=name, Identity=name, DomainName=[])
    server.update(_server_options(cmdlet, bound))
    server.update(_server_document(_download(cmdlet, url, context), url))
    items.append(server)
    return [copy.deepcopy(server)]


def set_auth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Identity", "Name", "AuthMetadataUrl", "Enabled", "DomainName",
                                  "RefreshAuthMetadata", "TrustAnySSLCertificate", *WRITE_OPTIONS))
    given = _given(bound, _PARTNER_SWITCHES)
    if {"AuthMetadataUrl", "RefreshAuthMetadata"} <= given:
        raise CmdletError(cmdlet, _AMBIGUOUS)
    identity = _string(cmdlet, bound, "Identity")
    items: list[dict[str, Any]] = objects.setdefault(AUTH_SERVER, [])
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, identity)
    server = items[index]
    changes = _server_options(cmdlet, bound)
    changes.update(_rename(cmdlet, AUTH_SERVER, bound, items, index))
    if "RefreshAuthMetadata" in bound:
        as_switch(cmdlet, "RefreshAuthMetadata", bound["RefreshAuthMetadata"])
    if "AuthMetadataUrl" in given or ("RefreshAuthMetadata" in given and server.get("AuthMetadataUrl")):
        url = _string(cmdlet, bound, "AuthMetadataUrl") if "AuthMetadataUrl" in given else str(
            server["AuthMetadataUrl"])
        changes.update(_server_document(_download(cmdlet, url, context), url))
    server.update(changes)
    return []


def remove_auth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _remove(cmdlet, AUTH_SERVER, params, objects)


# --- AuthConfig ---------------------------------------------------------------------------------


def utc_now() -> datetime.datetime:
    """The lab's clock (real time; tests replace it to reach a staged certificate's date)."""
    return datetime.datetime.now(datetime.UTC)


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


# Set-AuthConfig's parameter sets: the parameters that choose each, and what else it accepts.
_CONFIG_SETS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "CurrentCertificateParameter": (frozenset({"CertificateThumbprint"}),
                                    frozenset({"SkipImmediateCertificateDeployment", "Force"})),
    "NewCertificateParameter": (frozenset({"NewCertificateThumbprint", "NewCertificateEffectiveDate"}),
                                frozenset({"SkipImmediateCertificateDeployment", "Force"})),
    "PublishAuthCertificateParameter": (frozenset({"PublishCertificate", "ClearPreviousCertificate"}),
                                        frozenset({"Force"})),
    "AuthConfigSettings": (frozenset({"ServiceName", "Realm"}), frozenset()),
}
_CONFIG_SWITCHES = ("PublishCertificate", "ClearPreviousCertificate", "SkipImmediateCertificateDeployment", "Force")


def get_auth_config(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    bind(cmdlet, params, ("DomainController",))  # Get-AuthConfig has no -Identity: there is one
    return [copy.deepcopy(auth_config(objects))]


def set_auth_config(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    accepted = {name for choosing, extra in _CONFIG_SETS.values() for name in choosing | extra}
    bound = bind(cmdlet, params, (*sorted(accepted), *WRITE_OPTIONS))
    given = _given(bound, _CONFIG_SWITCHES) - set(WRITE_OPTIONS)
    chosen = [name for name, (choosing, _) in _CONFIG_SETS.items() if given & choosing]
    if len(chosen) > 1 or (chosen and not given <= _CONFIG_SETS[chosen[0]][0] | _CONFIG_SETS[chosen[0]][1]) or (
            not chosen and given):
        raise CmdletError(cmdlet, _AMBIGUOUS)
    for switch in _CONFIG_SWITCHES:
        if switch in bound:
            as_switch(cmdlet, switch, bound[switch])
    config = auth_config(objects)
    changes: dict[str, Any] = {}
    parameter_set = chosen[0] if chosen else None
    if parameter_set == "CurrentCertificateParameter":
        require(cmdlet, bound, "CertificateThumbprint")
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
        if "PublishCertificate" in given and not config.get("NextCertificateThumbprint"):
            # Lab wording: Exchange's text is not documented.
            raise CmdletError(cmdlet, "There is no next certificate to publish: stage one with "
                                      "-NewCertificateThumbprint and -NewCertificateEffectiveDate first.")
        if "PublishCertificate" in given:
            _publish(config)
        if "ClearPreviousCertificate" in given:
            changes["PreviousCertificateThumbprint"] = None
    elif parameter_set == "AuthConfigSettings":
        for name in ("ServiceName", "Realm"):
            if name in bound:
                changes[name] = as_string(cmdlet, name, bound[name]) or ""
    config.update(changes)
    return []


# --- LinkedUser ---------------------------------------------------------------------------------


def get_linked_user(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _get_list(cmdlet, LINKED_USER, params, objects)


def new_linked_user(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Name", "UserPrincipalName", *WRITE_OPTIONS))
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
    return _remove(cmdlet, LINKED_USER, params, objects)


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


def get_management_role_assignment(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Identity", "Role", "RoleAssignee", "DomainController"))
    items: list[dict[str, Any]] = objects.setdefault(ROLE_ASSIGNMENT, [])
    identity = as_string(cmdlet, "Identity", bound.get("Identity"))
    if identity:
        index = find(items, identity)
        if index is None:
            raise _not_found(cmdlet, identity)
        items = [items[index]]
    if bound.get("Role") is not None:
        role = _role(cmdlet, bound["Role"])
        items = [a for a in items if str(a.get("Role", "")).lower() == role.lower()]
    assignee = as_string(cmdlet, "RoleAssignee", bound.get("RoleAssignee"))
    if assignee:
        user = find_linked_user(objects, assignee)
        if user is None:
            raise _user_not_found(cmdlet, assignee)
        items = [a for a in items if str(a.get("RoleAssigneeName", "")).lower() == str(user["Name"]).lower()]
    return copy.deepcopy(items)


def new_management_role_assignment(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Name", "Role", "User", *WRITE_OPTIONS))
    require(cmdlet, bound, "Role", "User")
    role = _role(cmdlet, bound["Role"])
    wanted_user = as_string(cmdlet, "User", bound["User"]) or ""
    user = find_linked_user(objects, wanted_user)
    if user is None:
        raise _user_not_found(cmdlet, wanted_user)
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
                      RoleAssigneeName=str(user["Name"]))
    items.append(assignment)
    return [copy.deepcopy(assignment)]


def remove_management_role_assignment(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _remove(cmdlet, ROLE_ASSIGNMENT, params, objects)


# --- iisreset -----------------------------------------------------------------------------------


def iisreset(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    """Restart IIS on one of the host's `servers` (not a cmdlet: see the module docstring); counts it."""
    bound = bind(cmdlet, params, ("Server",))
    server = _string(cmdlet, bound, "Server")
    record = context.state["hosts"].get(context.host or "") if context.state is not None else None
    servers = [str(name) for name in (record or {}).get("servers") or []]
    match = next((name for name in servers if name.lower() == server.lower()), None)
    if record is None or match is None:
        raise CmdletError(cmdlet, "Access denied / server not found")
    resets: dict[str, Any] = record.setdefault("iisResets", {})
    resets[match] = int(resets.get(match, 0)) + 1
    return []


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
    },
    kinds={PARTNER_APPLICATION: False, AUTH_SERVER: False, AUTH_CONFIG: True, LINKED_USER: False,
           ROLE_ASSIGNMENT: False},
    empty_objects=empty_objects,
    normalize=normalize,
)
