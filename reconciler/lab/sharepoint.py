"""SharePoint Server's S2S OAuth cmdlets, emulated on the lab state.

Every call is first bound against Microsoft's documented syntax (reconciler.kinds.sharepoint, through the
platform's `syntax`), so a call outside every parameter set fails as PowerShell fails it. Output is what
SharePointDsc reads from the real cmdlets, written the way the PowerShell transports' runner writes it:

- TrustedSecurityTokenIssuer (a list): stored as Identity (the Name), Description, MetadataEndPoint,
  RegisteredIssuerName, IsSelfIssuer, SigningCertificate (base64 DER). Get writes Name, Description,
  RegisteredIssuerName, MetadataEndPoint (a Uri: its text), IsSelfIssuer and SigningCertificate (an
  X509Certificate2: its `[Subject] ... [Thumbprint]` text).
- AuthenticationRealm (singleton, Identity "Farm"): Realm. Get-SPAuthenticationRealm writes the realm as a bare
  string, as the real cmdlet does.
- AppPrincipalPermission (a list): what Set-SPAppPrincipalPermission granted, one per app principal, site and
  scope (Identity `<NameIdentifier>|<Scope>|<Site>`): Right and AppOnlyPolicy. No cmdlet reads it back; `reconcile
  lab show` and the tests do.

App principals: SharePoint makes one for each trusted security token issuer; the lab's Get-SPAppPrincipal finds
the issuer whose RegisteredIssuerName equals -NameIdentifier (case-insensitively) and writes an object with
NameIdentifier and DisplayName (the issuer's name), which only Set-/Remove-SPAppPrincipalPermission -AppPrincipal
take (a string there fails binding, as an SPAppPrincipal parameter does). That an issuer's app principal is named by
its RegisteredIssuerName is the lab's reading (Microsoft's scripts pass the issuer's NameId, whose value is not
documented). -Site must be an http(s) URL. Right and Scope are bound against the documented enumerations; an
omitted -EnableAppOnlyPolicy leaves the app-only policy as it was (unconfirmed: the page says only that the
switch's default is False). The errors for an unknown name identifier and a site that is not a URL are the lab's
wording.

New-SPTrustedSecurityTokenIssuer -MetadataEndPoint downloads the document as the real cmdlet does: the issuer's
RegisteredIssuerName (`<serviceName>@<realm>`) and signing certificate come from it, and a document that cannot
be downloaded or used fails the command. Microsoft does not document the cmdlet's wording for that failure, nor
for an issuer that does not exist or already exists: those texts are the lab's, and marked so. -Certificate
(an X509Certificate2 object, which commands as data cannot carry) is refused. Whether Set leaves IsTrustBroker
alone when the switch is omitted is unconfirmed; the lab leaves it alone.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from reconciler.errors import CmdletError, CommandSyntaxError, MetadataError
from reconciler.kinds import sharepoint as documented
from reconciler.lab import certs
from reconciler.lab.emulator import (
    CmdletContext,
    Platform,
    as_enum,
    as_string,
    as_switch,
    find,
    require,
    with_defaults,
)
from reconciler.metadata import MetadataDocument

ISSUER = "TrustedSecurityTokenIssuer"
REALM = "AuthenticationRealm"
GRANT = "AppPrincipalPermission"

ISSUER_DEFAULTS: dict[str, Any] = {
    "Identity": None,
    "Description": "",
    "MetadataEndPoint": None,
    "RegisteredIssuerName": None,
    "IsSelfIssuer": True,
    "SigningCertificate": None,
}
REALM_DEFAULTS: dict[str, Any] = {"Identity": documented.FARM, "Realm": ""}
GRANT_DEFAULTS: dict[str, Any] = {"Identity": None, "NameIdentifier": None, "Site": None, "Scope": None,
                                  "Right": None, "AppOnlyPolicy": False}
DEFAULTS = {ISSUER: ISSUER_DEFAULTS, REALM: REALM_DEFAULTS, GRANT: GRANT_DEFAULTS}


def empty_objects() -> dict[str, Any]:
    """A freshly created farm: no issuers, no realm set yet, no app principal permissions."""
    return {REALM: dict(REALM_DEFAULTS), ISSUER: [], GRANT: []}


def normalize(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """An object written by hand, completed with defaults and property names canonicalised (ValueError if bad)."""
    result = with_defaults(kind, data, DEFAULTS)
    if kind == REALM:
        result["Identity"] = documented.FARM
    elif not isinstance(result["Identity"], str) or not result["Identity"]:
        raise ValueError(f"every {kind} needs an Identity")
    return result


def issuer_from(name: str, document: MetadataDocument, url: str, *, trust_broker: bool = False,
                description: str = "") -> dict[str, Any]:
    """An issuer as New-SPTrustedSecurityTokenIssuer -MetadataEndPoint makes it from a document."""
    return normalize(ISSUER, {
        "Identity": name, "Description": description, "MetadataEndPoint": url,
        "RegisteredIssuerName": _registered_name(document), "IsSelfIssuer": not trust_broker,
        "SigningCertificate": certs.b64(document.keys[0].certificate_der) if document.keys else None,
    })


# --- helpers ---------------------------------------------------------------------------------------


def _registered_name(document: MetadataDocument) -> str | None:
    if document.service_name and document.realm:
        return f"{document.service_name}@{document.realm}"
    return document.issuer


def _download(cmdlet: str, url: str, context: CmdletContext) -> MetadataDocument:
    try:
        document = context.fetch(url)
    except MetadataError as exc:
        # Lab wording: Microsoft does not document how the cmdlet reports an endpoint it cannot read.
        raise CmdletError(cmdlet, f"The metadata endpoint {url} could not be read: {exc.detail}.") from None
    if not document.keys:
        raise CmdletError(cmdlet, f"The metadata endpoint {url} publishes no signing certificate.")  # lab wording
    return document


def _not_found(cmdlet: str, identity: str) -> CmdletError:
    return CmdletError(cmdlet, f'Cannot find "{ISSUER}" "{identity}" because it does not exist.')  # lab wording


def _certificate_text(raw: Any) -> str | None:
    """An X509Certificate2 as the runner writes it: its ToString() text, which carries the thumbprint."""
    if not raw:
        return None
    der = certs.from_b64(str(raw))
    cert = certs.load_certificate(der)
    subject = cert.subject.rfc4514_string().replace(",", ", ")
    issuer = cert.issuer.rfc4514_string().replace(",", ", ")
    return (f"[Subject]\r\n  {subject}\r\n\r\n[Issuer]\r\n  {issuer}\r\n\r\n[Serial Number]\r\n  "
            f"{cert.serial_number:X}\r\n\r\n[Thumbprint]\r\n  {certs.thumbprint(der)}\r\n")


def _as_read(issuer: Mapping[str, Any]) -> dict[str, Any]:
    return {"Name": issuer["Identity"], "Description": issuer.get("Description") or "",
            "RegisteredIssuerName": issuer.get("RegisteredIssuerName") or "",
            "MetadataEndPoint": issuer.get("MetadataEndPoint") or None,
            "IsSelfIssuer": bool(issuer.get("IsSelfIssuer")),
            "SigningCertificate": _certificate_text(issuer.get("SigningCertificate"))}


def _issuers(objects: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = objects.setdefault(ISSUER, [])
    return items


def _existing(cmdlet: str, bound: Mapping[str, Any], objects: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The issuers and the index of the one -Identity (mandatory) names; not found as the cmdlet fails."""
    require(cmdlet, bound, "Identity")
    identity = as_string(cmdlet, "Identity", bound["Identity"]) or ""
    items = _issuers(objects)
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, identity)
    return items, index


def _refuse_certificate(cmdlet: str, params: Mapping[str, Any]) -> None:
    if any(str(k).lstrip("-").lower() == "certificate" for k in params):
        raise CmdletError(cmdlet, "The lab does not emulate -Certificate (an X509Certificate2 object); "
                                  "use -MetadataEndPoint.")


# --- SPTrustedSecurityTokenIssuer -------------------------------------------------------------------


def get_issuer(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
               context: CmdletContext) -> list[dict[str, Any]]:
    bound = _bind(cmdlet, params)
    items = _issuers(objects)
    identity = as_string(cmdlet, "Identity", bound.get("Identity"))
    if not identity:
        return [_as_read(i) for i in items]
    index = find(items, identity)
    if index is None:
        raise _not_found(cmdlet, identity)
    return [_as_read(items[index])]


def new_issuer(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
               context: CmdletContext) -> list[dict[str, Any]]:
    _refuse_certificate(cmdlet, params)
    bound = _bind(cmdlet, params)
    require(cmdlet, bound, "Name", "MetadataEndPoint")
    name = as_string(cmdlet, "Name", bound["Name"]) or ""
    url = as_string(cmdlet, "MetadataEndPoint", bound["MetadataEndPoint"]) or ""
    items = _issuers(objects)
    if find(items, name) is not None:
        raise CmdletError(cmdlet, f'"{ISSUER}" with name "{name}" already exists.')  # lab wording
    document = _download(cmdlet, url, context)
    issuer = issuer_from(name, document, url,
                         trust_broker="IsTrustBroker" in bound and as_switch(cmdlet, "IsTrustBroker",
                                                                             bound["IsTrustBroker"]),
                         description=as_string(cmdlet, "Description", bound.get("Description")) or "")
    if bound.get("RegisteredIssuerName"):
        issuer["RegisteredIssuerName"] = as_string(cmdlet, "RegisteredIssuerName", bound["RegisteredIssuerName"])
    items.append(issuer)
    return [_as_read(issuer)]


def set_issuer(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
               context: CmdletContext) -> list[dict[str, Any]]:
    _refuse_certificate(cmdlet, params)
    bound = _bind(cmdlet, params)
    items, index = _existing(cmdlet, bound, objects)
    changes: dict[str, Any] = {}
    if "MetadataEndPoint" in bound:
        require(cmdlet, bound, "MetadataEndPoint")
        url = as_string(cmdlet, "MetadataEndPoint", bound["MetadataEndPoint"]) or ""
        document = _download(cmdlet, url, context)
        changes.update(MetadataEndPoint=url, RegisteredIssuerName=_registered_name(document),
                       SigningCertificate=certs.b64(document.keys[0].certificate_der))
    if "Description" in bound:
        changes["Description"] = as_string(cmdlet, "Description", bound["Description"]) or ""
    if "IsTrustBroker" in bound:
        changes["IsSelfIssuer"] = not as_switch(cmdlet, "IsTrustBroker", bound["IsTrustBroker"])
    if bound.get("RegisteredIssuerName"):
        changes["RegisteredIssuerName"] = as_string(cmdlet, "RegisteredIssuerName", bound["RegisteredIssuerName"])
    items[index].update(changes)
    return []


def remove_issuer(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
                  context: CmdletContext) -> list[dict[str, Any]]:
    bound = _bind(cmdlet, params)
    items, index = _existing(cmdlet, bound, objects)
    del items[index]
    return []


# --- app principals and their permissions -------------------------------------------------------------


def _site(cmdlet: str, bound: Mapping[str, Any]) -> str:
    site = as_string(cmdlet, "Site", bound.get("Site")) or ""
    if not site.lower().startswith(("http://", "https://")):
        raise CmdletError(cmdlet, f"Cannot find an SPWeb object with Id or Url: {site}.")  # lab wording
    return site


def _principal_issuer(cmdlet: str, name_identifier: str, objects: dict[str, Any]) -> dict[str, Any]:
    wanted = name_identifier.casefold()
    issuer = next((i for i in _issuers(objects) if str(i.get("RegisteredIssuerName") or "").casefold() == wanted),
                  None)
    if issuer is None:
        # Lab wording: Microsoft does not document Get-SPAppPrincipal's error for an unknown name identifier.
        raise CmdletError(cmdlet, f"The app principal with name identifier '{name_identifier}' was not found.")
    return issuer


def get_app_principal(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
                      context: CmdletContext) -> list[dict[str, Any]]:
    bound = _bind(cmdlet, params)
    require(cmdlet, bound, "NameIdentifier", "Site")
    _site(cmdlet, bound)
    name_identifier = as_string(cmdlet, "NameIdentifier", bound["NameIdentifier"]) or ""
    issuer = _principal_issuer(cmdlet, name_identifier, objects)
    return [{"NameIdentifier": issuer["RegisteredIssuerName"], "DisplayName": issuer["Identity"]}]


def _principal(cmdlet: str, bound: Mapping[str, Any], objects: dict[str, Any]) -> str:
    """The name identifier of the SPAppPrincipal object bound to -AppPrincipal (it must still exist)."""
    require(cmdlet, bound, "AppPrincipal")
    principal = bound["AppPrincipal"]
    if not isinstance(principal, Mapping) or not principal.get("NameIdentifier"):
        raise CmdletError(cmdlet, "Cannot bind parameter 'AppPrincipal': not an SPAppPrincipal object.")
    return str(_principal_issuer(cmdlet, str(principal["NameIdentifier"]), objects)["RegisteredIssuerName"])


def _grants(objects: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = objects.setdefault(GRANT, [])
    return items


def set_app_principal_permission(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
                                 context: CmdletContext) -> list[dict[str, Any]]:
    """Record the grant; a grant for the same principal, site and scope is replaced (the cmdlet sets, not adds)."""
    bound = _bind(cmdlet, params)
    require(cmdlet, bound, "Right", "Scope", "Site")
    name_identifier = _principal(cmdlet, bound, objects)
    site = _site(cmdlet, bound)
    right = as_enum(cmdlet, "Right", bound["Right"], _RIGHTS)
    scope = as_enum(cmdlet, "Scope", bound["Scope"], _SCOPES)
    identity = f"{name_identifier}|{scope}|{site}"
    items = _grants(objects)
    index = find(items, identity)
    grant = items[index] if index is not None else normalize(GRANT, {
        "Identity": identity, "NameIdentifier": name_identifier, "Site": site, "Scope": scope})
    grant["Right"] = right
    if "EnableAppOnlyPolicy" in bound and as_switch(cmdlet, "EnableAppOnlyPolicy", bound["EnableAppOnlyPolicy"]):
        grant["AppOnlyPolicy"] = True
    if index is None:
        items.append(grant)
    return []


def remove_app_principal_permission(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
                                    context: CmdletContext) -> list[dict[str, Any]]:
    bound = _bind(cmdlet, params)
    require(cmdlet, bound, "Scope", "Site")
    name_identifier = _principal(cmdlet, bound, objects)
    identity = f"{name_identifier}|{as_enum(cmdlet, 'Scope', bound['Scope'], _SCOPES)}|{_site(cmdlet, bound)}"
    items = _grants(objects)
    index = find(items, identity)
    if index is not None:
        if "DisableAppOnlyPolicy" in bound and as_switch(cmdlet, "DisableAppOnlyPolicy", bound["DisableAppOnlyPolicy"]):
            items[index]["AppOnlyPolicy"] = False
        del items[index]
    return []


# --- SPAuthenticationRealm ----------------------------------------------------------------------------


def _refuse_service_context(cmdlet: str, bound: Mapping[str, Any]) -> None:
    if bound.get("ServiceContext") is not None:
        raise CmdletError(cmdlet, "The lab emulates the farm's realm only (no -ServiceContext).")


def get_realm(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
              context: CmdletContext) -> list[Any]:
    """The realm as a bare string: what the real cmdlet writes (SharePointDsc compares it as text)."""
    bound = _bind(cmdlet, params)
    _refuse_service_context(cmdlet, bound)
    realm = objects.setdefault(REALM, dict(REALM_DEFAULTS))
    return [str(realm.get("Realm") or "")]


def set_realm(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
              context: CmdletContext) -> list[dict[str, Any]]:
    bound = _bind(cmdlet, params)
    _refuse_service_context(cmdlet, bound)
    realm = objects.setdefault(REALM, dict(REALM_DEFAULTS))
    if "Realm" in bound:
        require(cmdlet, bound, "Realm")
        realm["Realm"] = as_string(cmdlet, "Realm", bound["Realm"])
    return []


def _bind(cmdlet: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters under their canonical names, bound against the documented syntax (as the emulator does
    before any handler runs; again here so a handler called directly refuses the same calls)."""
    try:
        _, bound = SYNTAX[cmdlet].bind(params)
    except CommandSyntaxError as exc:
        raise CmdletError(cmdlet, exc.message) from None
    return copy.deepcopy(bound)


SYNTAX = {c.name: c for c in (*(c for k in documented.KINDS for c in k.cmdlets), *documented.APP_PRINCIPAL_CMDLETS,
                               documented.REMOVE_SP_APP_PRINCIPAL_PERMISSION)}
_RIGHTS = documented.SET_SP_APP_PRINCIPAL_PERMISSION.parameters["Right"].values
_SCOPES = documented.SET_SP_APP_PRINCIPAL_PERMISSION.parameters["Scope"].values

PLATFORM = Platform(
    name="sharepoint",
    cmdlets={
        "Get-SPTrustedSecurityTokenIssuer": get_issuer,
        "New-SPTrustedSecurityTokenIssuer": new_issuer,
        "Set-SPTrustedSecurityTokenIssuer": set_issuer,
        "Remove-SPTrustedSecurityTokenIssuer": remove_issuer,
        "Get-SPAuthenticationRealm": get_realm,
        "Set-SPAuthenticationRealm": set_realm,
        "Get-SPAppPrincipal": get_app_principal,
        "Set-SPAppPrincipalPermission": set_app_principal_permission,
        "Remove-SPAppPrincipalPermission": remove_app_principal_permission,
    },
    kinds={REALM: True, ISSUER: False, GRANT: False},
    empty_objects=empty_objects,
    normalize=normalize,
    certificate_fields=frozenset({"SigningCertificate"}),
    syntax=SYNTAX,
)
