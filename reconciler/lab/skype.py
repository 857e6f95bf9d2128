"""Skype for Business / Lync Server OAuth cmdlets, emulated on the lab state.

Modelled on Microsoft's cmdlet reference (parameter sets, mandatory parameters, which parameters Set
lacks) and on the errors PowerShell itself raises. Where Microsoft documents no wording (an identity
that does not exist or already exists, switching a partner application's parameter set), the text
here is the lab's and marked so.

Objects use the cmdlets' property names:
- OAuthConfiguration (singleton, Identity "Global"): ServiceName, Realm,
  ClientAuthorizationOAuthServerIdentity, ExchangeAutodiscoverUrl, ExchangeAutodiscoverAllowedDomains.
- OAuthServer: Identity, MetadataUrl, Realm, Type, AcceptSecurityIdentifierInformation, AuthorizationUriOverride.
- PartnerApplication: Identity, ApplicationIdentifier, Realm, ApplicationTrustLevel,
  AcceptSecurityIdentifierInformation, Enabled, MetadataUrl, UseOAuthServer, CertificateRawData.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.lab import certs
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
from reconciler.metadata import METADATA_ERROR, MetadataDocument, MetadataError

CONFIGURATION = "OAuthConfiguration"
OAUTH_SERVER = "OAuthServer"
PARTNER_APPLICATION = "PartnerApplication"

TRUST_LEVELS = ("Full", "Application", "User")
WRITE_SWITCHES = ("Force", "Confirm")
"""Accepted by New/Set/Remove; with no console to prompt, neither changes what the lab does."""

CONFIGURATION_DEFAULTS: dict[str, Any] = {
    "Identity": "Global",
    "ServiceName": "",
    "Realm": "",
    "ClientAuthorizationOAuthServerIdentity": "",
    "ExchangeAutodiscoverUrl": "",
    "ExchangeAutodiscoverAllowedDomains": "",
}
OAUTH_SERVER_DEFAULTS: dict[str, Any] = {
    "Identity": None,
    "MetadataUrl": None,
    "Realm": None,
    "Type": None,
    "AcceptSecurityIdentifierInformation": False,
    "AuthorizationUriOverride": None,
}
PARTNER_APPLICATION_DEFAULTS: dict[str, Any] = {
    "Identity": None,
    "ApplicationIdentifier": None,
    "Realm": None,
    "ApplicationTrustLevel": "Full",
    "AcceptSecurityIdentifierInformation": False,
    "Enabled": True,
    "MetadataUrl": None,
    "UseOAuthServer": False,
    "CertificateRawData": None,
}
DEFAULTS = {
    CONFIGURATION: CONFIGURATION_DEFAULTS,
    OAUTH_SERVER: OAUTH_SERVER_DEFAULTS,
    PARTNER_APPLICATION: PARTNER_APPLICATION_DEFAULTS,
}

# New-CsPartnerApplication's parameter sets: (mandatory, optional) beyond the parameters all sets share.
_COMMON = frozenset({"Identity", "Enabled", "AcceptSecurityIdentifierInformation", *WRITE_SWITCHES})
_NEW_SETS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "MetadataUrl": (frozenset({"MetadataUrl", "ApplicationTrustLevel"}), frozenset()),
    "UseOAuthServer": (
        frozenset({"ApplicationIdentifier", "ApplicationTrustLevel", "UseOAuthServer"}),
        frozenset({"Realm"}),
    ),
    "CertificateRawData": (
        frozenset({"ApplicationIdentifier", "ApplicationTrustLevel", "CertificateRawData", "Realm"}),
        frozenset(),
    ),
    "CertificateFileData": (
        frozenset({"ApplicationIdentifier", "ApplicationTrustLevel", "CertificateFileData", "Realm"}),
        frozenset(),
    ),
}
_SET_FORMS = ("MetadataUrl", "UseOAuthServer", "CertificateRawData", "CertificateFileData")
_AMBIGUOUS = "Parameter set cannot be resolved using the specified named parameters."


def empty_objects() -> dict[str, Any]:
    """The objects of a freshly installed pool: default configuration, no servers, no partners."""
    return {CONFIGURATION: dict(CONFIGURATION_DEFAULTS), OAUTH_SERVER: [], PARTNER_APPLICATION: []}


def normalize(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """An object written by hand, completed with defaults and property names canonicalised.

    Raises ValueError for an unknown kind or property, or a list object without an Identity.
    """
    defaults = DEFAULTS.get(kind)
    if defaults is None:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(DEFAULTS)})")
    names = {name.lower(): name for name in defaults}
    result = dict(defaults)
    for raw, value in data.items():
        name = names.get(str(raw).lower())
        if name is None:
            raise ValueError(f"{kind} has no property {raw!r} (known: {', '.join(defaults)})")
        result[name] = value
    if kind == CONFIGURATION:
        result["Identity"] = "Global"
    elif not isinstance(result["Identity"], str) or not result["Identity"]:
        raise ValueError(f"every {kind} needs an Identity")
    return result


# --- shared helpers -----------------------------------------------------------------------------


def _not_found(cmdlet: str, kind: str, identity: str) -> CmdletError:
    # Lab wording: Microsoft does not document this message.
    return CmdletError(cmdlet, f'Cannot find "{kind}" "{identity}" because it does not exist.')


def _identity(cmdlet: str, bound: Mapping[str, Any]) -> str:
    require(cmdlet, bound, "Identity")
    return as_string(cmdlet, "Identity", bound["Identity"]) or ""


def _download(cmdlet: str, url: str, context: CmdletContext) -> MetadataDocument:
    """Download a MetadataUrl as the cmdlets do while binding it; failures read like theirs."""
    try:
        return context.fetch(url)
    except MetadataError:
        raise CmdletError(
            cmdlet,
            f"Cannot bind parameter 'MetadataUrl' to the target. Exception setting \"MetadataUrl\": "
            f'"{METADATA_ERROR}"',
        ) from None


def _certificate_raw(cmdlet: str, value: Any) -> str:
    """Base64 DER of a -CertificateRawData value; fails like X509Certificate2 on bad data."""
    text = as_string(cmdlet, "CertificateRawData", value) or ""
    try:
        return certs.b64(certs.to_der(certs.from_b64(text)))
    except ValueError:
        raise CmdletError(
            cmdlet,
            "Cannot bind parameter 'CertificateRawData' to the target. Exception setting "
            '"CertificateRawData": "Cannot find the requested object."',
        ) from None


def _certificate_file(cmdlet: str, value: Any) -> str:
    """Base64 DER of the certificate file a -CertificateFileData path names (DER or PEM)."""
    path = as_string(cmdlet, "CertificateFileData", value) or ""
    prefix = "Cannot bind parameter 'CertificateFileData' to the target. Exception setting \"CertificateFileData\": "
    try:
        data = Path(path).read_bytes()
    except OSError:
        raise CmdletError(cmdlet, f"{prefix}\"Could not find file '{path}'.\"") from None
    try:
        return certs.b64(certs.to_der(data))
    except ValueError:
        raise CmdletError(cmdlet, f'{prefix}"Cannot find the requested object."') from None


def _partner_identity_from(cmdlet: str, document: MetadataDocument) -> tuple[str, str | None]:
    """ApplicationIdentifier and Realm from a document; without a service name it is not usable."""
    if not document.service_name:
        raise CmdletError(
            cmdlet,
            f"Cannot bind parameter 'MetadataUrl' to the target. Exception setting \"MetadataUrl\": "
            f'"{METADATA_ERROR}"',
        )
    return document.service_name, document.realm


def _get_list(cmdlet: str, kind: str, params: Mapping[str, Any], objects: dict[str, Any]) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Identity",))
    items: list[dict[str, Any]] = objects.setdefault(kind, [])
    identity = as_string(cmdlet, "Identity", bound.get("Identity"))
    if not identity:
        return copy.deepcopy(items)
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, kind, identity)
    return [copy.deepcopy(items[index])]


def _remove(cmdlet: str, kind: str, params: Mapping[str, Any], objects: dict[str, Any]) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Identity", *WRITE_SWITCHES))
    identity = _identity(cmdlet, bound)
    items: list[dict[str, Any]] = objects.setdefault(kind, [])
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, kind, identity)
    del items[index]
    return []


# --- CsOAuthConfiguration -----------------------------------------------------------------------

_CONFIGURATION_FIELDS = tuple(name for name in CONFIGURATION_DEFAULTS if name != "Identity")


def _configuration(cmdlet: str, bound: Mapping[str, Any], objects: dict[str, Any]) -> dict[str, Any]:
    identity = as_string(cmdlet, "Identity", bound.get("Identity"))
    if identity and identity.lower() != "global":
        raise _not_found(cmdlet, CONFIGURATION, identity)
    config: dict[str, Any] = objects.setdefault(CONFIGURATION, dict(CONFIGURATION_DEFAULTS))
    return config


def get_oauth_configuration(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Identity",))
    return [copy.deepcopy(_configuration(cmdlet, bound, objects))]


def set_oauth_configuration(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Identity", *_CONFIGURATION_FIELDS, *WRITE_SWITCHES))
    config = _configuration(cmdlet, bound, objects)
    changes = {name: as_string(cmdlet, name, bound[name]) or "" for name in _CONFIGURATION_FIELDS if name in bound}
    config.update(changes)
    return []


# --- CsOAuthServer ------------------------------------------------------------------------------

_SERVER_OPTIONS = ("Type", "AcceptSecurityIdentifierInformation", "AuthorizationUriOverride")


def _server_options(cmdlet: str, bound: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if "Type" in bound:
        options["Type"] = as_string(cmdlet, "Type", bound["Type"])
    if "AcceptSecurityIdentifierInformation" in bound:
        options["AcceptSecurityIdentifierInformation"] = as_bool(
            cmdlet, "AcceptSecurityIdentifierInformation", bound["AcceptSecurityIdentifierInformation"]
        )
    if "AuthorizationUriOverride" in bound:
        options["AuthorizationUriOverride"] = as_string(
            cmdlet, "AuthorizationUriOverride", bound["AuthorizationUriOverride"]
        )
    return options


def get_oauth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _get_list(cmdlet, OAUTH_SERVER, params, objects)


def new_oauth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Identity", "MetadataUrl", "Realm", *_SERVER_OPTIONS, *WRITE_SWITCHES))
    identity = _identity(cmdlet, bound)
    require(cmdlet, bound, "MetadataUrl")
    url = as_string(cmdlet, "MetadataUrl", bound["MetadataUrl"]) or ""
    server = dict(OAUTH_SERVER_DEFAULTS)
    server.update(Identity=identity, MetadataUrl=url, Realm=as_string(cmdlet, "Realm", bound.get("Realm")))
    server.update(_server_options(cmdlet, bound))
    items: list[dict[str, Any]] = objects.setdefault(OAUTH_SERVER, [])
    _download(cmdlet, url, context)
    if find(items, identity) is not None:
        # Lab wording: Microsoft does not document this message.
        raise CmdletError(cmdlet, f'"{OAUTH_SERVER}" with identity "{identity}" already exists.')
    items.append(server)
    return [copy.deepcopy(server)]


def set_oauth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    # No -Realm: Microsoft's Set-CsOAuthServer has none, so a realm change is Remove + New.
    bound = bind(cmdlet, params, ("Identity", "MetadataUrl", *_SERVER_OPTIONS, *WRITE_SWITCHES))
    identity = _identity(cmdlet, bound)
    items: list[dict[str, Any]] = objects.setdefault(OAUTH_SERVER, [])
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, OAUTH_SERVER, identity)
    changes = _server_options(cmdlet, bound)
    if "MetadataUrl" in bound:
        require(cmdlet, bound, "MetadataUrl")
        url = as_string(cmdlet, "MetadataUrl", bound["MetadataUrl"]) or ""
        _download(cmdlet, url, context)
        changes["MetadataUrl"] = url
    items[index].update(changes)
    return []


def remove_oauth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _remove(cmdlet, OAUTH_SERVER, params, objects)


# --- CsPartnerApplication -----------------------------------------------------------------------


def _given(bound: Mapping[str, Any]) -> set[str]:
    """Parameters that take part in set resolution (a switch given as $false counts as absent)."""
    return {name for name, value in bound.items() if not (name == "UseOAuthServer" and value is False)}


def _new_parameter_set(cmdlet: str, bound: Mapping[str, Any]) -> str:
    """The one New-CsPartnerApplication parameter set the parameters fit, as PowerShell resolves it."""
    given = _given(bound) - _COMMON
    matches = [
        name for name, (mandatory, optional) in _NEW_SETS.items() if mandatory <= given <= mandatory | optional
    ]
    if len(matches) != 1:
        raise CmdletError(cmdlet, _AMBIGUOUS)
    return matches[0]


def _form(app: Mapping[str, Any]) -> str | None:
    """Which parameter set an existing application was created with (the certificate sets are one)."""
    if app.get("MetadataUrl"):
        return "MetadataUrl"
    if app.get("UseOAuthServer"):
        return "UseOAuthServer"
    if app.get("CertificateRawData"):
        return "Certificate"
    return None


def _partner_options(cmdlet: str, bound: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if "ApplicationTrustLevel" in bound:
        options["ApplicationTrustLevel"] = as_enum(
            cmdlet, "ApplicationTrustLevel", bound["ApplicationTrustLevel"], TRUST_LEVELS
        )
    for name in ("Enabled", "AcceptSecurityIdentifierInformation"):
        if name in bound:
            options[name] = as_bool(cmdlet, name, bound[name])
    return options


def get_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _get_list(cmdlet, PARTNER_APPLICATION, params, objects)


def new_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    accepted = (*_COMMON, *(name for mandatory, optional in _NEW_SETS.values() for name in mandatory | optional))
    bound = bind(cmdlet, params, accepted)
    parameter_set = _new_parameter_set(cmdlet, bound)
    identity = _identity(cmdlet, bound)
    mandatory, _ = _NEW_SETS[parameter_set]
    require(cmdlet, bound, *sorted(mandatory - {"UseOAuthServer"}))
    app = dict(PARTNER_APPLICATION_DEFAULTS)
    app["Identity"] = identity
    app.update(_partner_options(cmdlet, bound))
    if parameter_set == "MetadataUrl":
        url = as_string(cmdlet, "MetadataUrl", bound["MetadataUrl"]) or ""
        app["ApplicationIdentifier"], app["Realm"] = _partner_identity_from(cmdlet, _download(cmdlet, url, context))
        app["MetadataUrl"] = url
    else:
        app["ApplicationIdentifier"] = as_string(cmdlet, "ApplicationIdentifier", bound["ApplicationIdentifier"])
        app["Realm"] = as_string(cmdlet, "Realm", bound.get("Realm"))
        if parameter_set == "UseOAuthServer":
            app["UseOAuthServer"] = as_switch(cmdlet, "UseOAuthServer", bound["UseOAuthServer"])
        elif parameter_set == "CertificateRawData":
            app["CertificateRawData"] = _certificate_raw(cmdlet, bound["CertificateRawData"])
        else:
            app["CertificateRawData"] = _certificate_file(cmdlet, bound["CertificateFileData"])
    items: list[dict[str, Any]] = objects.setdefault(PARTNER_APPLICATION, [])
    if find(items, identity) is not None:
        # Lab wording: Microsoft does not document this message.
        raise CmdletError(cmdlet, f'"{PARTNER_APPLICATION}" with identity "{identity}" already exists.')
    items.append(app)
    return [copy.deepcopy(app)]


def set_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    # No -ApplicationIdentifier and no -Realm, as Microsoft documents: changing either is Remove + New.
    accepted = ("Identity", "ApplicationTrustLevel", "Enabled", "AcceptSecurityIdentifierInformation",
                *_SET_FORMS, *WRITE_SWITCHES)
    bound = bind(cmdlet, params, accepted)
    forms = [name for name in _SET_FORMS if name in _given(bound)]
    if len(forms) > 1:
        raise CmdletError(cmdlet, _AMBIGUOUS)
    identity = _identity(cmdlet, bound)
    items: list[dict[str, Any]] = objects.setdefault(PARTNER_APPLICATION, [])
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, PARTNER_APPLICATION, identity)
    app = items[index]
    changes = _partner_options(cmdlet, bound)
    if forms:
        wanted = "Certificate" if forms[0].startswith("Certificate") else forms[0]
        current = _form(app)
        # Lab modelling, unconfirmed: whether the real Set switches an application between parameter
        # sets is not documented; the lab refuses, so the tool must plan Remove + New for a switch.
        if current is not None and current != wanted:
            raise CmdletError(
                cmdlet,
                f'Partner application "{app["Identity"]}" was created with the {current} parameter set and '
                f"cannot be switched to the {wanted} parameter set: remove it and create it again.",
            )
        require(cmdlet, bound, forms[0])
        if forms[0] == "MetadataUrl":
            url = as_string(cmdlet, "MetadataUrl", bound["MetadataUrl"]) or ""
            application_id, realm = _partner_identity_from(cmdlet, _download(cmdlet, url, context))
            changes.update(MetadataUrl=url, ApplicationIdentifier=application_id, Realm=realm)
        elif forms[0] == "UseOAuthServer":
            changes["UseOAuthServer"] = True
        elif forms[0] == "CertificateRawData":
            changes["CertificateRawData"] = _certificate_raw(cmdlet, bound["CertificateRawData"])
        else:
            changes["CertificateRawData"] = _certificate_file(cmdlet, bound["CertificateFileData"])
    app.update(changes)
    return []


def remove_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _remove(cmdlet, PARTNER_APPLICATION, params, objects)


PLATFORM = Platform(
    name="skype",
    cmdlets={
        "Get-CsOAuthConfiguration": get_oauth_configuration,
        "Set-CsOAuthConfiguration": set_oauth_configuration,
        "Get-CsOAuthServer": get_oauth_server,
        "New-CsOAuthServer": new_oauth_server,
        "Set-CsOAuthServer": set_oauth_server,
        "Remove-CsOAuthServer": remove_oauth_server,
        "Get-CsPartnerApplication": get_partner_application,
        "New-CsPartnerApplication": new_partner_application,
        "Set-CsPartnerApplication": set_partner_application,
        "Remove-CsPartnerApplication": remove_partner_application,
    },
    kinds={CONFIGURATION: True, OAUTH_SERVER: False, PARTNER_APPLICATION: False},
    empty_objects=empty_objects,
    normalize=normalize,
    certificate_fields=frozenset({"CertificateRawData"}),
)
