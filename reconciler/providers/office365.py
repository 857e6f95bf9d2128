"""Office 365 / Microsoft Entra ID over Microsoft Graph: the cloud half of seed 004.

Seed 004 uses MSOnline cmdlets (retired by Microsoft); Graph does the same: the on-premises signing
certificate is added to the Skype and Exchange service principals' keyCredentials, the Exchange
principal is enabled, and the Skype principal gets the on-premises pool's SPN.

Kind: ServicePrincipal, identified by appId. Microsoft's first-party principals always exist in a
tenant, so the kind is never created or removed; a missing one is a plan error.

Collections: a PATCH replaces the whole collection, so every write re-sends every key (and SPN) that
stays. Entries live on the principal that the manifest does not declare are kept unless the manifest
says its list is authoritative.

keyCredentials are written the way Microsoft's own scripts write them (see `_kept_key` and `_new_key`):
a kept key as `{key, type, usage}`, a new key as `{displayName, keyId, type, usage, key}`; neither
carries `customKeyIdentifier` (Graph defaults it to the certificate's thumbprint) nor dates (Microsoft's
scripts send none).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.changes import Action, Change
from reconciler.commands import Command, CommandResult, Transport
from reconciler.errors import DiscoveryError
from reconciler.kinds.certificates import CertificateLookup, certificate_file, load_certificate
from reconciler.kinds.spec import DiagnoseContext, FieldSpec, Finding, KindSpec
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
from reconciler.providers import office365_apps
from reconciler.providers.base import ServiceIdentity, TargetFinding, TrustEdge
from reconciler.providers.common import BOOLEAN, CREDENTIAL_ITEM_SCHEMA, GUID, resource_schema

if TYPE_CHECKING:  # imported by what reads a certificate (a plan of none does not)
    from cryptography import x509

SELECT = "id,appId,displayName,accountEnabled,servicePrincipalNames,keyCredentials"
KEY_TYPE = "AsymmetricX509Cert"
KEY_USAGE = "Verify"
KEY_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:reconcile:office365:keyCredential")
"""Namespace of the keyIds we give new keys: uuid5(namespace, "<appId>:<thumbprint>")."""


def sp_path(app_id: str) -> str:
    return f"/servicePrincipals(appId='{app_id}')"


def _thumbprint_of(key_b64: Any) -> str | None:
    if not isinstance(key_b64, str) or not key_b64:
        return None
    try:
        return hashlib.sha1(base64.b64decode(key_b64)).hexdigest().upper()
    except ValueError:
        return None


def _certificate_of(key_b64: Any) -> x509.Certificate | None:
    """The certificate a keyCredential's `key` holds (base64 DER), or None (missing or not a certificate)."""
    if not isinstance(key_b64, str) or not key_b64:
        return None
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(base64.b64decode(key_b64, validate=True))
    except ValueError:
        return None


def key_id_for(app_id: str, thumbprint: str) -> str:
    """The keyId we give a new key (a name-based UUID of principal and certificate).

    Microsoft's script sends a fresh random GUID; ours is fixed so that the body `plan --json` shows is
    the body `apply` sends, and a retried PATCH sends the same keyId again.
    """
    return str(uuid.uuid5(KEY_ID_NAMESPACE, f"{app_id.lower()}:{thumbprint.upper()}"))


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _credential(entry: Mapping[str, Any], manifest_dir: Path, index: int) -> dict[str, JSONValue]:
    if entry.get("certificateOf"):  # resolved from the other target's live state after discovery
        return {"certificateOf": str(entry["certificateOf"])}
    name = str(entry.get("certificateFile", ""))
    return key_entry(certificate_file(manifest_dir, name, "credentials", f"[{index}] "), name)


def key_entry(cert: x509.Certificate, label: str) -> dict[str, JSONValue]:
    """A key credential the principal must carry, from the public certificate (dates and thumbprint from it)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    der = cert.public_bytes(Encoding.DER)
    return {
        "file": label,
        "thumbprint": hashlib.sha1(der).hexdigest().upper(),
        "displayName": cert.subject.rfc4514_string(),
        "startDateTime": _iso(cert.not_valid_before_utc),
        "endDateTime": _iso(cert.not_valid_after_utc),
        "key": base64.b64encode(der).decode("ascii"),
        "type": KEY_TYPE,
        "usage": KEY_USAGE,
    }


def _prepare(fields: dict[str, JSONValue], manifest_dir: Path) -> dict[str, JSONValue]:
    """Certificates are read here, with cryptography: key, dates and thumbprint come from the file."""
    out = dict(fields)
    if "credentials" in out:
        entries = out.pop("credentials")
        assert isinstance(entries, list)
        out["keyCredentials"] = [_credential(e, manifest_dir, i) for i, e in enumerate(entries)]
    if "credentialsAuthoritative" in out:
        out["keyCredentialsAuthoritative"] = out.pop("credentialsAuthoritative")
    return out


def credential_sources(fields: Mapping[str, JSONValue]) -> tuple[str, ...]:
    keys = fields.get("keyCredentials")
    return tuple(dict.fromkeys(str(k["certificateOf"]) for k in keys if isinstance(k, Mapping)
                               and k.get("certificateOf"))) if isinstance(keys, list) else ()


def resolve_credentials(fields: Mapping[str, JSONValue], lookup: CertificateLookup) -> dict[str, JSONValue]:
    """`certificateOf: <target>` entries become the keys of that target's certificates: current, next (staged, so
    the principal holds it before it signs) and the previous one while the target still lists it."""
    out = dict(fields)
    keys: list[JSONValue] = []
    failed = False
    for entry in fields.get("keyCredentials") or []:
        if not (isinstance(entry, Mapping) and entry.get("certificateOf")):
            keys.append(entry)
            continue
        found = lookup(str(entry["certificateOf"]))
        failed = failed or not found
        for cert in found:
            if cert.immediate:
                continue  # refused by plan (reconciler.references)
            if cert.der is None:
                lookup.problem(f"the public key of {cert.label} was not read (no RawData in its store entry), so it "
                               "cannot be given to this principal before it signs")
                failed = True
                continue
            keys.append(key_entry(load_certificate(cert.der), cert.label))
    unique = {str(k["thumbprint"]): k for k in keys if isinstance(k, Mapping)}
    out["keyCredentials"] = list(unique.values())
    if failed:
        out.pop("keyCredentialsAuthoritative", None)  # never remove keys on a reference that did not resolve
    return out


def _thumbprints(keys: Any) -> set[str]:
    found = set()
    for key in keys or []:
        if isinstance(key, Mapping):
            thumb = key.get("thumbprint") or _thumbprint_of(key.get("key"))
            if thumb:
                found.add(str(thumb))
    return found


def _keys_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    declared, live = _thumbprints(want), _thumbprints(have)
    return declared == live if desired.get("keyCredentialsAuthoritative") else declared <= live


def _spns_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    declared = {str(s).casefold() for s in want or []}
    live = {str(s).casefold() for s in have or []}
    return declared == live if desired.get("servicePrincipalNamesAuthoritative") else declared <= live


def _show_keys(keys: Any) -> list[str]:
    """A key credential for people: thumbprint, subject and validity. Never the key itself.

    Subject and end date are the certificate's when the key holds one, so a kept key (re-sent as
    `{key, type, usage}`) reads the same before and after a write.
    """
    shown = []
    for key in keys or []:
        if isinstance(key, Mapping):
            thumb = key.get("thumbprint") or _thumbprint_of(key.get("key")) or key.get("keyId")
            cert = _certificate_of(key.get("key"))
            if cert is not None:
                subject, until = cert.subject.rfc4514_string(), _iso(cert.not_valid_after_utc)[:10]
            else:
                subject, until = str(key.get("displayName") or "no subject"), str(key.get("endDateTime") or "?")[:10]
            shown.append(f"{thumb} ({subject}, until {until})")
    return shown


# How Microsoft writes a service principal's keyCredentials, which we follow:
# - a key that stays is re-sent as exactly {key, type, usage}, with the values read:
#   microsoft/CSS-Exchange, Shared/GraphApiFunctions/Remove-CertificateFromAzureServicePrincipal.ps1
#   ("Make sure to only pass these three values, otherwise the PATCH call will fail");
# - a new key is sent as {displayName, keyId, type: "AsymmetricX509Cert", usage: "Verify", key}:
#   microsoft/CSS-Exchange, Shared/GraphApiFunctions/Add-CertificateToAzureApplication.ps1 (its keyId is a
#   fresh New-Guid; ours is `key_id_for`, see there). We put the certificate's subject in displayName, as the
#   Graph guide does (microsoftgraph/microsoft-graph-docs-contrib, concepts/applications-how-to-add-certificate.md:
#   "Assign the certificate subject name to the displayName property").
# - customKeyIdentifier is never sent: "When not provided in the payload, defaults to the thumbprint of the
#   certificate" (keyCredential resource: microsoftgraph/microsoft-graph-docs-contrib,
#   api-reference/v1.0/resources/keycredential.md); nor are startDateTime/endDateTime: neither script sends them.
# - the `key` of a kept key comes from the single-object GET with $select (see `discover`): Graph returns it
#   nowhere else (same page), and a key read without it is refused below rather than dropped.


def _kept_key(live_key: Mapping[str, Any]) -> dict[str, Any]:
    return {"key": live_key["key"], "type": live_key.get("type") or KEY_TYPE,
            "usage": live_key.get("usage") or KEY_USAGE}


def _new_key(declared: Mapping[str, Any], key_id: str | None) -> dict[str, Any]:
    return {"displayName": declared["displayName"], "keyId": key_id, "type": KEY_TYPE, "usage": KEY_USAGE,
            "key": declared["key"]}


def _with_key_id(entry: Mapping[str, Any], app_id: str) -> dict[str, Any]:
    if "keyId" in entry and entry["keyId"] is None:  # a new key, see _merged_keys
        return {**entry, "keyId": key_id_for(app_id, str(_thumbprint_of(entry["key"])))}
    return dict(entry)


def _merged_keys(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The whole keyCredentials collection to send: every live key that stays, plus the new ones.

    A new key's keyId depends on the principal, which only `commands` knows: here it is left None.
    """
    declared = {k["thumbprint"]: k for k in desired.get("keyCredentials") or []}
    authoritative = bool(desired.get("keyCredentialsAuthoritative"))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for key in live.get("keyCredentials") or []:
        thumb = _thumbprint_of(key.get("key"))
        if authoritative and thumb not in declared:
            continue  # removed: the manifest's list is authoritative and does not name it
        if not key.get("key"):
            raise DiscoveryError(f"key credential {key.get('keyId')} was read without its key value; "
                                 "refusing to write a collection that would drop it")
        out.append(_kept_key(key))
        if thumb:
            seen.add(thumb)
    for thumb, key in declared.items():
        if thumb not in seen:
            out.append(_new_key(key, None))
    return out


def _merged_spns(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    wanted = [str(s) for s in desired.get("servicePrincipalNames") or []]
    if desired.get("servicePrincipalNamesAuthoritative"):
        return wanted
    current = [str(s) for s in live.get("servicePrincipalNames") or []]
    known = {s.casefold() for s in current}
    return current + [s for s in wanted if s.casefold() not in known]


def _diagnose(desired: Mapping[str, JSONValue], live: Mapping[str, JSONValue] | None,
              context: DiagnoseContext) -> list[Finding]:
    if live is None:
        return [(Severity.ERROR, "", "this service principal does not exist in the tenant (Graph answered 404); "
                                     "reconcile never creates Microsoft's first-party service principals")]
    findings: list[Finding] = []
    on_principal = _thumbprints(live.get("keyCredentials"))
    horizon = context.now + datetime.timedelta(days=context.expiry_warning_days)
    for key in desired.get("keyCredentials") or []:
        assert isinstance(key, Mapping)
        start = datetime.datetime.fromisoformat(str(key["startDateTime"]).replace("Z", "+00:00"))
        end = datetime.datetime.fromisoformat(str(key["endDateTime"]).replace("Z", "+00:00"))
        upload = key["thumbprint"] not in on_principal
        dates = f"valid {key['startDateTime']} to {key['endDateTime']}"
        if end <= context.now:
            findings.append((Severity.ERROR if upload else Severity.WARNING, "credentials",
                             f"{key['file']} expired ({dates})"
                             + ("; refusing to upload it" if upload else "; it is still on the principal")))
        elif start > context.now and upload:
            findings.append((Severity.ERROR, "credentials",
                             f"{key['file']} is not valid yet ({dates}); refusing to upload it"))
        elif end <= horizon:
            days = (end - context.now).days
            findings.append((Severity.WARNING, "credentials",
                             f"{key['file']} expires in {days} days ({dates}); "
                             "declare its successor next to it to rotate without a gap"))
    return findings


_SERVICE_PRINCIPAL = KindSpec(
    kind="ServicePrincipal",
    singleton=True,
    description="An Office 365 service principal (Graph servicePrincipal), identified by appId.",
    fields={
        "accountEnabled": FieldSpec("accountEnabled"),
        "servicePrincipalNames": FieldSpec("servicePrincipalNames", equal=_spns_equal, merge=_merged_spns),
        "servicePrincipalNamesAuthoritative": FieldSpec("servicePrincipalNamesAuthoritative", control=True),
        "keyCredentials": FieldSpec("keyCredentials", equal=_keys_equal, display=_show_keys, merge=_merged_keys),
        "keyCredentialsAuthoritative": FieldSpec("keyCredentialsAuthoritative", control=True),
    },
    prepare=_prepare,
    diagnose=_diagnose,
    resolve=resolve_credentials,
    references=credential_sources,
    schema=resource_schema(
        "ServicePrincipal",
        {
            "identity": {**GUID, "description": "The appId: 00000004-0000-0ff1-ce00-000000000000 (Skype for "
                                                "Business Online), 00000002-0000-0ff1-ce00-000000000000 (Exchange)."},
            "accountEnabled": BOOLEAN,
            "servicePrincipalNames": {
                "type": "array", "uniqueItems": True, "items": {"type": "string", "minLength": 1},
                "description": "SPNs that must be present (for the pool: "
                               "00000004-0000-0ff1-ce00-000000000000/<external web FQDN>). "
                               "Others stay unless servicePrincipalNamesAuthoritative is true.",
            },
            "servicePrincipalNamesAuthoritative": {**BOOLEAN, "description": "true: remove SPNs not listed."},
            "credentials": {
                "type": "array",
                "description": "Certificates whose public key the principal must carry: a .cer file (DER or PEM), "
                               "or certificateOf: a target of this manifest whose signing certificates (current, "
                               "next during a roll, previous while listed) are read from its live state. Dates "
                               "and thumbprint come from the certificate.",
                "items": CREDENTIAL_ITEM_SCHEMA,
            },
            "credentialsAuthoritative": {**BOOLEAN,
                                         "description": "true: remove key credentials the manifest does not list."},
        },
        description="Office 365 service principal (Microsoft Graph).",
    ),
)


class Office365Provider:
    """Office 365 / Entra ID service principals over Microsoft Graph (transport: graph)."""

    name = "office365"
    kinds: Mapping[str, KindSpec] = {"ServicePrincipal": _SERVICE_PRINCIPAL, **office365_apps.KINDS}

    def discover(self, target: TargetSpec, transport: Transport, wanted: Sequence[ResourceKey] = ()) -> LiveState:
        """One batched Graph request for the declared principals (a tenant has thousands of others).

        `key` values come back only with $select on a single object, so each principal is its own GET
        inside one $batch. A 404 means the principal does not exist; any other failure is an error.
        """
        app_ids = list(dict.fromkeys(k.identity for k in wanted if k.kind == "ServicePrincipal"))
        applications = office365_apps.discover(target, transport, wanted)  # the dedicated application's kinds
        if not app_ids:
            return LiveState(target.name, applications)
        commands = [Command("GET", {"path": sp_path(a), "query": {"$select": SELECT}}) for a in app_ids]
        results = transport.invoke(commands, stop_on_error=False)
        resources: dict[ResourceKey, LiveResource] = {}
        for app_id, result in zip(app_ids, results, strict=True):
            if not result.ok:
                if result.status == 404:  # the status, never the message text (a 500 may mention "404")
                    continue
                raise DiscoveryError(f"target {target.name!r}: {result.error}")
            body = _body(result)
            key = ResourceKey(target.name, "ServicePrincipal", str(body.get("appId") or app_id))
            keys = [dict(k) for k in body.get("keyCredentials") or [] if isinstance(k, Mapping)]
            resources[key] = LiveResource(key, {
                "accountEnabled": body.get("accountEnabled"),
                "servicePrincipalNames": list(body.get("servicePrincipalNames") or []),
                "keyCredentials": keys,
            })
        return LiveState(target.name, {**resources, **applications})

    def commands(self, change: Change) -> tuple[Command, ...]:
        if change.key.kind in office365_apps.KINDS:
            return office365_apps.commands(change)
        if change.actions != (Action.UPDATE,) or change.after is None:
            return ()  # service principals are never created, replaced or removed by us
        app_id = change.key.identity
        body: dict[str, Any] = {name: change.after[name] for name in change.changed}  # merged, see FieldSpec.merge
        if "keyCredentials" in body:
            body["keyCredentials"] = [_with_key_id(k, app_id) for k in body["keyCredentials"]]
        summary: list[str] = []
        for name, value in body.items():
            if name == "keyCredentials":
                removed = _removed_keys((change.before or {}).get("keyCredentials"), value)
                summary.append("keyCredentials [" + ", ".join(_show_keys(value)) + "] ("
                               + (f"removes {', '.join(removed)}; " if removed else "") + "whole collection re-sent)")
            elif name == "servicePrincipalNames":
                summary.append(f"servicePrincipalNames ({len(value)}, whole list re-sent)")
            else:
                summary.append(f"{name}={str(value).lower() if isinstance(value, bool) else value}")
        # The body holds certificates (public) and names, nothing secret: `plan --json` shows it whole
        # (reconciler.render.json_plan); `shown` is the short form for people (text plan, journal).
        return (Command("PATCH", {"path": sp_path(app_id), "body": body}, shown={"body": "; ".join(summary)}),)

    def restore_commands(self, live: LiveResource) -> tuple[Command, ...]:
        return ()

    def identity(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> ServiceIdentity:
        """The tenant, as its token issuer names itself: ACS's service name, the tenant id as the realm (what the
        tenant's metadata document at accounts.accesscontrol.windows.net/<tenant>/metadata/json/1 carries)."""
        tenant = target.connection.get("tenantId")
        guid = isinstance(tenant, str) and re.fullmatch(GUID_TEXT, tenant) is not None
        return ServiceIdentity(target.name, "Office 365 tenant", ACS_SERVICE, str(tenant) if guid else None)

    def trust_edges(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> list[TrustEdge]:
        """A service principal given a certificate (seed 004: the pool's OAuth certificate on 00000004): the tenant
        accepts tokens that the on-premises service signs as that application."""
        edges = []
        for r in resources:
            if r.ensure is not Ensure.PRESENT or r.key.kind != "ServicePrincipal" or \
                    not (r.fields.get("keyCredentials") or r.fields.get("credentials")):
                continue
            field = "credentials" if "credentials" in r.field_lines else "keyCredentials"
            where = f"{r.location.file}:{r.field_lines.get(field, r.location.line)}"
            edges.append(TrustEdge(target.name, r.key.address, f"ServicePrincipal {r.key.identity} (certificate)",
                                   None, r.key.identity, where))
        return edges

    def diagnose_target(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> list[TargetFinding]:
        return shared_principal_conflict(resources) + missing_consents(resources)


def missing_consents(resources: Sequence[DesiredResource]) -> list[TargetFinding]:
    """An application permission (requiredResourceAccess, type Role) an application requests without the admin
    consent that grants it (an AppRoleAssignment) declared: requesting a role grants nothing, the application's
    calls are refused until an admin consents. Names the resource to declare."""
    present = [r for r in resources if r.ensure is Ensure.PRESENT]
    granted = {r.key.identity.casefold() for r in present if r.key.kind == "AppRoleAssignment"}
    found: list[TargetFinding] = []
    for app in (r for r in present if r.key.kind == "Application"):
        for resource_app, role, kind in sorted(office365_apps._access_set(app.fields.get("requiredResourceAccess"))):
            identity = f"{app.key.identity}/{resource_app}/{role}"
            if kind == "Role" and identity.casefold() not in granted:
                found.append((Severity.WARNING, app, "requiredResourceAccess",
                              f"requests the application permission {role} of {resource_app} without admin consent "
                              f"declared: nothing grants it; declare kind AppRoleAssignment, identity {identity} "
                              "(the reconciling client needs AppRoleAssignment.ReadWrite.All to grant it)"))
    return found


GUID_TEXT = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
ACS_SERVICE = "00000001-0000-0000-c000-000000000000"
"""The service name of the tenant's token issuer (Azure ACS) in its metadata documents."""
EXCHANGE_ONLINE = "00000002-0000-0ff1-ce00-000000000000"
"""Office 365 Exchange Online: the shared first-party principal seed 004 adds the on-premises certificate to."""


def shared_principal_conflict(resources: Sequence[DesiredResource]) -> list[TargetFinding]:
    """A warning when one tenant gets an on-premises certificate on the shared Exchange Online principal and the
    dedicated Exchange hybrid application: Microsoft's ConfigureExchangeHybridApplication.ps1 (microsoft/CSS-Exchange,
    Hybrid/ConfigureExchangeHybridApplication/) removes the keys from 00000002 by default
    (-ResetFirstPartyServicePrincipalKeyCredentials), so run next to it the two undo each other every cycle; and EWS
    use of that principal is blocked since the end of October 2025 (Exchange Team blog, August 2025).

    The dedicated application is an Application requesting full_access_as_app on Exchange Online, or named
    ExchangeServerApp-<organization GUID> as the script names it."""
    present = [r for r in resources if r.ensure is Ensure.PRESENT]
    apps = [r for r in present if r.key.kind == "Application"
            and (r.key.identity.casefold().startswith("exchangeserverapp-")
                 or (EXCHANGE_ONLINE, office365_apps.FULL_ACCESS_AS_APP.lower(), "Role")
                 in office365_apps._access_set(r.fields.get("requiredResourceAccess")))]
    if not apps:
        return []
    found: list[TargetFinding] = []
    for r in present:
        keys = r.fields.get("keyCredentials")
        if r.key.kind != "ServicePrincipal" or r.key.identity.casefold() != EXCHANGE_ONLINE or not keys:
            continue
        files = ", ".join(str(k.get("file")) for k in keys if isinstance(k, Mapping))
        found.append((Severity.WARNING, r, "credentials",
                      f"adds on-premises certificate(s) ({files}) to the shared Exchange Online principal "
                      f"{EXCHANGE_ONLINE}, and this manifest also declares the dedicated Exchange hybrid "
                      f"application {apps[0].key.identity!r}: Microsoft's ConfigureExchangeHybridApplication.ps1 "
                      "removes those keys (-ResetFirstPartyServicePrincipalKeyCredentials, its default), so the two "
                      "undo each other, and Exchange hybrid no longer uses the shared principal (EWS blocked since "
                      "October 2025); drop the credentials here (to remove the key, declare credentials: [] with "
                      "credentialsAuthoritative: true)"))
    return found


def _removed_keys(before: Any, after: Any) -> list[str]:
    """The live keys a keyCredentials write drops (an authoritative list not naming them), for people."""
    kept = _thumbprints(after)
    return [shown for key, shown in zip(before or [], _show_keys(before), strict=False)
            if isinstance(key, Mapping) and (_thumbprint_of(key.get("key")) or key.get("thumbprint")) not in kept]


def _body(result: CommandResult) -> Mapping[str, Any]:
    return result.output[0] if result.output else {}
