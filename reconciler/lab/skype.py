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

Test-CsExStorageConnectivity reaches beyond the pool's objects: the host record's `exchange` names the
Exchange host its Storage Service talks to (reconciler.lab.exchange) and its `service` the entry of the
state's `services` whose certificate the pool signs with.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import METADATA_ERROR, CmdletError, MetadataError
from reconciler.kinds import skype as documented
from reconciler.lab import certs, exchange, skype_certificates
from reconciler.lab.emulator import (
    CmdletContext,
    Platform,
    as_bool,
    as_enum,
    as_string,
    as_switch,
    bind,
    find,
    find_host,
    require,
    with_defaults,
)
from reconciler.metadata import MetadataDocument

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
    "IssuerIdentifier": None,
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

_AMBIGUOUS = "Parameter set cannot be resolved using the specified named parameters."
ACS_ISSUER = "00000001-0000-0000-c000-000000000000"
"""Office 365's ACS: Get-CsOAuthServer reports a server created from its document as Type `Acs`
(onpremdiag/SfBServer tests/mode/sfbserver/rules/Exchange/RDTestOAuthServerConfiguration.tests.ps1)."""


def _accepted(syntax: Any) -> tuple[str, ...]:
    """Every parameter the documented syntax has (the emulator already refused calls outside its sets)."""
    return tuple(syntax.parameters)


def empty_objects() -> dict[str, Any]:
    """The objects of a freshly installed pool: default configuration, no servers, no partners."""
    return {CONFIGURATION: dict(CONFIGURATION_DEFAULTS), OAUTH_SERVER: [], PARTNER_APPLICATION: []}


def normalize(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """An object written by hand, completed with defaults and property names canonicalised.

    Raises ValueError for an unknown kind or property, or a list object without an Identity.
    """
    result = with_defaults(kind, data, DEFAULTS)
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
    """The stored objects a Get names (not copies: its callers build what the cmdlet returns from them)."""
    bound = bind(cmdlet, params, ("Identity", "Filter", "LocalStore", "Tenant"))
    items: list[dict[str, Any]] = objects.setdefault(kind, [])
    identity = as_string(cmdlet, "Identity", bound.get("Identity"))
    if not identity:
        return items
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, kind, identity)
    return [items[index]]


def _remove(cmdlet: str, kind: str, params: Mapping[str, Any], objects: dict[str, Any]) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, ("Identity", "Tenant", *WRITE_SWITCHES, "WhatIf"))
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
    bound = bind(cmdlet, params, _accepted(documented.GET_CS_OAUTH_CONFIGURATION))
    return [copy.deepcopy(_configuration(cmdlet, bound, objects))]


def set_oauth_configuration(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, _accepted(documented.SET_CS_OAUTH_CONFIGURATION))
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
    """As Get-CsOAuthServer returns them: Identity, Name, IssuerIdentifier, Realm, MetadataUrl,
    AuthorizationUriOverride, Type, AcceptSecurityIdentifierInformation (onpremdiag/SfBServer,
    tests/mode/sfbserver/rules/Exchange/RDTestOAuthServerConfiguration.tests.ps1)."""
    return [{"Identity": s["Identity"], "Name": s["Identity"], "IssuerIdentifier": s.get("IssuerIdentifier") or "",
             "Realm": s.get("Realm") or "", "MetadataUrl": s.get("MetadataUrl") or "",
             "AuthorizationUriOverride": s.get("AuthorizationUriOverride") or "", "Type": s.get("Type") or "",
             "AcceptSecurityIdentifierInformation": bool(s.get("AcceptSecurityIdentifierInformation"))}
            for s in _get_list(cmdlet, OAUTH_SERVER, params, objects)]


def new_oauth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, _accepted(documented.NEW_CS_OAUTH_SERVER))
    identity = _identity(cmdlet, bound)
    require(cmdlet, bound, "MetadataUrl")
    url = as_string(cmdlet, "MetadataUrl", bound["MetadataUrl"]) or ""
    server = dict(OAUTH_SERVER_DEFAULTS)
    server.update(Identity=identity, MetadataUrl=url, Realm=as_string(cmdlet, "Realm", bound.get("Realm")))
    items: list[dict[str, Any]] = objects.setdefault(OAUTH_SERVER, [])
    document = _download(cmdlet, url, context)
    server["IssuerIdentifier"] = document.service_name
    server["Realm"] = server["Realm"] or document.realm
    if (document.service_name or "").lower() == ACS_ISSUER:
        server["Type"] = "Acs"
    server.update(_server_options(cmdlet, bound))
    if find(items, identity) is not None:
        # Lab wording: Microsoft does not document this message.
        raise CmdletError(cmdlet, f'"{OAUTH_SERVER}" with identity "{identity}" already exists.')
    items.append(server)
    return [copy.deepcopy(server)]


def set_oauth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    # No -Realm: Microsoft's Set-CsOAuthServer has none, so a realm change is Remove + New.
    bound = bind(cmdlet, params, _accepted(documented.SET_CS_OAUTH_SERVER))
    identity = _identity(cmdlet, bound)
    items: list[dict[str, Any]] = objects.setdefault(OAUTH_SERVER, [])
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, OAUTH_SERVER, identity)
    changes = _server_options(cmdlet, bound)
    if "MetadataUrl" in bound:
        require(cmdlet, bound, "MetadataUrl")
        url = as_string(cmdlet, "MetadataUrl", bound["MetadataUrl"]) or ""
        document = _download(cmdlet, url, context)
        changes["MetadataUrl"] = url
        changes["IssuerIdentifier"] = document.service_name
    items[index].update(changes)
    return []


def remove_oauth_server(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _remove(cmdlet, OAUTH_SERVER, params, objects)


# --- CsPartnerApplication -----------------------------------------------------------------------


def auth_token(app: Mapping[str, Any]) -> str:
    """What Get-CsPartnerApplication shows in AuthToken for the application's parameter set.

    MetadataUrl: `Value=<url>` (onpremdiag/SfBServer tests/mode/sfbserver/rules/Exchange/
    RDCsPartnerApplication.tests.ps1); UseOAuthServer: the type name
    `Microsoft.Rtc.Management.WritableConfig.Settings.SSAuth.UseOAuthServer` (RDExchangeAutodiscoverUrl.tests.ps1).
    Certificate: `Value=<base64 DER>` is the lab's modelling, unconfirmed (no public record).
    """
    if app.get("MetadataUrl"):
        return f"Value={app['MetadataUrl']}"
    if app.get("UseOAuthServer"):
        return documented.USE_OAUTH_SERVER_TOKEN
    if app.get("CertificateRawData"):
        return f"Value={app['CertificateRawData']}"
    return ""


def _as_read(app: Mapping[str, Any]) -> dict[str, Any]:
    """A partner application as Get-CsPartnerApplication returns it (the form only in AuthToken)."""
    return {"Identity": app["Identity"], "AuthToken": auth_token(app), "Name": app["Identity"],
            "ApplicationIdentifier": app.get("ApplicationIdentifier") or "", "Realm": app.get("Realm") or "",
            "ApplicationTrustLevel": app.get("ApplicationTrustLevel"),
            "AcceptSecurityIdentifierInformation": bool(app.get("AcceptSecurityIdentifierInformation")),
            "Enabled": bool(app.get("Enabled"))}


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
    return [_as_read(app) for app in _get_list(cmdlet, PARTNER_APPLICATION, params, objects)]


def new_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    bound = bind(cmdlet, params, _accepted(documented.NEW_CS_PARTNER_APPLICATION))
    resolved, _ = documented.NEW_CS_PARTNER_APPLICATION.bind(params)
    parameter_set = resolved.name
    if parameter_set == "UseOAuthServer" and bound.get("UseOAuthServer") is False:
        raise CmdletError(cmdlet, _AMBIGUOUS)  # -UseOAuthServer:$false chooses no set
    identity = _identity(cmdlet, bound)
    require(cmdlet, bound, *sorted(resolved.mandatory - {"UseOAuthServer"}))
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
    return [_as_read(app)]


def set_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    # No -ApplicationIdentifier and no -Realm (Microsoft's syntax): changing either is Remove + New. The
    # MetadataUrl, UseOAuthServer and certificate sets switch an application's form in place, as seed 004's
    # `Set-CsPartnerApplication -ApplicationTrustLevel Full -UseOAuthServer` does.
    bound = bind(cmdlet, params, _accepted(documented.SET_CS_PARTNER_APPLICATION))
    resolved, _ = documented.SET_CS_PARTNER_APPLICATION.bind(params)
    forms = [name for name in ("MetadataUrl", "UseOAuthServer", "CertificateRawData", "CertificateFileData")
             if name == resolved.name and not (name == "UseOAuthServer" and bound.get(name) is False)]
    identity = _identity(cmdlet, bound)
    items: list[dict[str, Any]] = objects.setdefault(PARTNER_APPLICATION, [])
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, PARTNER_APPLICATION, identity)
    app = items[index]
    changes = _partner_options(cmdlet, bound)
    if forms:
        require(cmdlet, bound, forms[0])
        cleared = {"MetadataUrl": None, "UseOAuthServer": False, "CertificateRawData": None}
        if forms[0] == "MetadataUrl":
            url = as_string(cmdlet, "MetadataUrl", bound["MetadataUrl"]) or ""
            application_id, realm = _partner_identity_from(cmdlet, _download(cmdlet, url, context))
            changes.update(cleared, MetadataUrl=url, ApplicationIdentifier=application_id, Realm=realm)
        elif forms[0] == "UseOAuthServer":
            changes.update(cleared, UseOAuthServer=True)
        elif forms[0] == "CertificateRawData":
            changes.update(cleared, CertificateRawData=_certificate_raw(cmdlet, bound["CertificateRawData"]))
        else:
            changes.update(cleared, CertificateRawData=_certificate_file(cmdlet, bound["CertificateFileData"]))
    app.update(changes)
    return []


def remove_partner_application(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    return _remove(cmdlet, PARTNER_APPLICATION, params, objects)


# --- Test-CsExStorageConnectivity --------------------------------------------------------------

SKYPE_SERVICE_NAME = "00000004-0000-0ff1-ce00-000000000000"
STORAGE_FOLDER = "Conversation History"
UNAUTHORIZED = "The remote server returned an error: (401) Unauthorized."
"""What the Storage Service reports when Exchange does not accept its token (seed 002's note)."""


class _Broken(Exception):
    """One broken link of the trust; the message names the side, the object and the values."""


def _thumbprints(document: Any) -> list[str]:
    return [key.thumbprint for key in document.keys]


def _fetch_for_test(side: str, url: str, context: CmdletContext) -> Any:
    try:
        return context.fetch(url)
    except MetadataError as exc:
        raise _Broken(f"{side}: the metadata document at {url} cannot be downloaded ({exc.detail})") from None


def _enabled_application(side: str, applications: list[dict[str, Any]], service_name: str, host: str,
                         whose: str, name: str) -> dict[str, Any]:
    """The enabled partner application on `host` for `service_name` (`whose` service name it is), or _Broken."""
    apps = [a for a in applications
            if service_name and str(a.get("ApplicationIdentifier") or "").lower() == service_name.lower()]
    if not apps:
        raise _Broken(f"{side}: no partner application on {host} has ApplicationIdentifier '{service_name}' "
                      f"({whose})")
    enabled = [a for a in apps if a.get("Enabled")]
    if not enabled:
        raise _Broken(f"{side}: partner application {apps[0][name]} on {host} is disabled")
    return enabled[0]


def _skype_trusts_exchange(pool: str, objects: Mapping[str, Any], ex_host: str, ex_config: Mapping[str, Any],
                           ex_realm: str, context: CmdletContext) -> None:
    """Check 2: a partner application on the pool for Exchange's service name, whose certificate is Exchange's."""
    side = "Skype for Business does not trust Exchange"
    service_name = str(ex_config.get("ServiceName") or "")
    app = _enabled_application(side, objects.get(PARTNER_APPLICATION, []), service_name, pool,
                               f"the AuthConfig.ServiceName of Exchange {ex_host}", "Identity")
    signs_with = str(ex_config.get("CurrentCertificateThumbprint") or "").upper()
    if not signs_with:
        raise _Broken(f"{side}: Exchange {ex_host} has no signing certificate "
                      "(its AuthConfig.CurrentCertificateThumbprint is empty)")
    realm_source = "AuthConfig.Realm" if ex_config.get("Realm") else "AuthConfig.Realm is empty: the organization's"
    if app.get("MetadataUrl"):
        url = str(app["MetadataUrl"])
        document = _fetch_for_test(side, url, context)
        if (document.service_name or "").lower() != service_name.lower():
            raise _Broken(f"{side}: the metadata document at {url} publishes serviceName {document.service_name} "
                          f"but Exchange {ex_host}'s AuthConfig.ServiceName is {service_name}")
        if (document.realm or "").lower() != ex_realm.lower():
            raise _Broken(f"{side}: the metadata document at {url} publishes realm {document.realm} but "
                          f"Exchange {ex_host}'s realm is {ex_realm} ({realm_source})")
        published = _thumbprints(document)
        if signs_with not in published:
            raise _Broken(f"{side}: the metadata document at {url} publishes certificate {', '.join(published)} "
                          f"but Exchange {ex_host} signs with {signs_with} (a rotated certificate not yet published?)")
    elif app.get("CertificateRawData"):
        if str(app.get("Realm") or "").lower() != ex_realm.lower():
            raise _Broken(f"{side}: partner application {app['Identity']} on {pool} has realm {app.get('Realm')} "
                          f"but Exchange {ex_host}'s realm is {ex_realm} ({realm_source})")
        carried = certs.thumbprint(certs.from_b64(str(app["CertificateRawData"])))
        if carried != signs_with:
            raise _Broken(f"{side}: partner application {app['Identity']} on {pool} carries certificate {carried} "
                          f"but Exchange {ex_host} signs with {signs_with}")
    else:
        raise _Broken(f"{side}: partner application {app['Identity']} on {pool} has neither a MetadataUrl nor a "
                      f"certificate (UseOAuthServer), so nothing verifies the tokens Exchange {ex_host} signs")


def _exchange_trusts_skype(state: Mapping[str, Any], pool: str, config: Mapping[str, Any], ex_host: str,
                           ex_objects: Mapping[str, Any], context: CmdletContext) -> None:
    """Check 3: a partner application on Exchange for the pool's service name, linked, with the pool's certificate."""
    side = "Exchange does not trust Skype for Business"
    service_name = str(config.get("ServiceName") or "")
    app = _enabled_application(side, ex_objects.get(exchange.PARTNER_APPLICATION, []), service_name, ex_host,
                               f"the OAuthConfiguration.ServiceName of {pool}", "Name")
    linked = app.get("LinkedAccount")
    if not linked:
        raise _Broken(f"{side}: partner application {app['Name']} on {ex_host} has no LinkedAccount")
    user = exchange.find_linked_user(ex_objects, str(linked))
    if user is None:
        raise _Broken(f"{side}: partner application {app['Name']} on {ex_host} has LinkedAccount {linked}, "
                      f"which is not a linked user on {ex_host}")
    for role in exchange.STORAGE_ROLES:
        if not exchange.has_role(ex_objects, str(user["Name"]), role):
            raise _Broken(f"{side}: linked account {user['Name']} of partner application {app['Name']} on {ex_host} "
                          f"lacks the {role} role (no ManagementRoleAssignment gives it)")
    url = app.get("AuthMetadataUrl")
    if not url:
        raise _Broken(f"{side}: partner application {app['Name']} on {ex_host} has no AuthMetadataUrl, so "
                      f"Exchange has no certificate to verify the tokens {pool} signs")
    document = _fetch_for_test(side, str(url), context)
    if (document.service_name or "").lower() != service_name.lower():
        raise _Broken(f"{side}: the metadata document at {url} publishes serviceName {document.service_name} "
                      f"but {pool}'s OAuthConfiguration.ServiceName is {service_name}")
    service = state.get("services", {}).get(state["hosts"][pool].get("service"))
    if service is None:
        raise _Broken(f"{side}: the lab does not know which certificate {pool} signs with "
                      "(its host record names no service)")
    skype_certificates.promote(state["hosts"][pool].get("objects") or {}, context)  # a roll whose date passed
    signs_with = certs.thumbprint(certs.from_b64(str(service["certificate"])))
    published = _thumbprints(document)
    if signs_with not in published:
        raise _Broken(f"{side}: the metadata document at {url} publishes certificate {', '.join(published)} "
                      f"but {pool} signs with {signs_with}")
    cached = sorted({certs.thumbprint(certs.from_b64(str(c))) for c in app.get("CertificateStrings") or []})
    if signs_with not in cached:
        raise _Broken(f"{side}: partner application {app['Name']} on {ex_host} holds certificate "
                      f"{', '.join(cached) or '(none)'} from {url} but {pool} signs with {signs_with} (a new key "
                      "published since its last refresh: Set-PartnerApplication -RefreshAuthMetadata)")
    realm = str(config.get("Realm") or "")
    if realm and (document.realm or "").lower() != realm.lower():
        raise _Broken(f"{side}: the metadata document at {url} publishes realm {document.realm} but "
                      f"{pool}'s OAuthConfiguration.Realm is {realm}")


def _storage_trust(state: dict[str, Any] | None, pool: str | None, objects: dict[str, Any],
                   context: CmdletContext) -> tuple[str, dict[str, Any]]:
    """The linked Exchange host and its record once the trust holds both ways; raises _Broken otherwise."""
    record = state["hosts"].get(pool or "") if state is not None else None
    link = (record or {}).get("exchange")
    if state is None or pool is None or record is None or not link:
        raise _Broken("no Exchange server is linked to this pool")
    ex_host = find_host(state, str(link))
    if ex_host is None or str(state["hosts"][ex_host].get("platform")).lower() != "exchange":
        raise _Broken(f"no Exchange server is linked to this pool (its link names {link}, which is not an "
                      "Exchange host of the lab)")
    ex_record: dict[str, Any] = state["hosts"][ex_host]
    ex_objects = ex_record.setdefault("objects", exchange.empty_objects())
    ex_config = exchange.auth_config(ex_objects)  # a staged certificate whose date has passed is now current
    config: Mapping[str, Any] = objects.get(CONFIGURATION) or CONFIGURATION_DEFAULTS
    own_service = state.get("services", {}).get(record.get("service")) or {}
    organization_realm = str(config.get("Realm") or own_service.get("realm") or "")
    ex_realm = str(ex_config.get("Realm") or organization_realm)
    _skype_trusts_exchange(pool, objects, ex_host, ex_config, ex_realm, context)
    _exchange_trusts_skype(state, pool, config, ex_host, ex_objects, context)
    service_name = str(config.get("ServiceName") or "")
    if service_name.lower() != SKYPE_SERVICE_NAME:
        raise _Broken(f"{pool}'s OAuthConfiguration.ServiceName is '{service_name}' but Skype for Business "
                      f"Server's must be {SKYPE_SERVICE_NAME}")
    return ex_host, ex_record


def check_ex_storage_connectivity(
    cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any], context: CmdletContext
) -> list[dict[str, Any]]:
    """Write (in the lab: pretend to write) an item to a user's mailbox through the OAuth trust.

    Succeeds only when the trust is consistent both ways (see _storage_trust for the checks, in
    order); otherwise fails as Exchange answers a token it does not accept, with a 401, followed by
    the lab's account of the broken link. -DeleteItem has no effect: the lab writes no item.
    """
    started = time.monotonic()
    bound = bind(cmdlet, params, _accepted(documented.TEST_CS_EX_STORAGE_CONNECTIVITY))
    require(cmdlet, bound, "SipUri")
    sip_uri = as_string(cmdlet, "SipUri", bound["SipUri"]) or ""
    folder = as_string(cmdlet, "Folder", bound.get("Folder")) or STORAGE_FOLDER
    if "DeleteItem" in bound:
        as_switch(cmdlet, "DeleteItem", bound["DeleteItem"])
    try:
        ex_host, ex_record = _storage_trust(context.state, context.host, objects, context)
    except _Broken as exc:
        raise CmdletError(cmdlet, f"{UNAUTHORIZED} {exc}") from None
    if sip_uri.lower() not in {str(m).lower() for m in ex_record.get("mailboxes") or []}:
        # Lab wording: the real cmdlet's text for a user without a mailbox is not documented.
        raise CmdletError(cmdlet, f"{sip_uri}: mailbox not found on Exchange {ex_host}.")
    latency = round((time.monotonic() - started) * 1000)
    return [{"SipUri": sip_uri, "Folder": folder, "Result": "Success", "Latency": latency}]


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
        "Test-CsExStorageConnectivity": check_ex_storage_connectivity,
        **skype_certificates.CMDLETS,
    },
    kinds={CONFIGURATION: True, OAUTH_SERVER: False, PARTNER_APPLICATION: False},
    empty_objects=empty_objects,
    normalize=normalize,
    certificate_fields=frozenset({"CertificateRawData"}),
    changed_by_reading=skype_certificates.CHANGED_BY_READING,
    syntax={**{c.name: c for c in (*(c for k in documented.KINDS for c in k.cmdlets), *documented.CHECKS)},
            **skype_certificates.SYNTAX},
)
