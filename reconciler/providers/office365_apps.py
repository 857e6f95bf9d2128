"""Office 365 kinds of the dedicated Exchange hybrid application (Exchange hybrid as Microsoft runs it since 2025).

Microsoft's script (microsoft/CSS-Exchange,
`Hybrid/ConfigureExchangeHybridApplication/ConfigureExchangeHybridApplication.ps1`; docs:
`docs/Hybrid/ConfigureExchangeHybridApplication.md`) creates, in the tenant, an application named
`ExchangeServerApp-<Exchange organization GUID>`, its service principal, the application permission
`full_access_as_app` on Office 365 Exchange Online with admin consent, and uploads the Exchange Auth certificate
(current and next) to the application's keyCredentials. The kinds, with the Graph requests
(microsoftgraph/microsoft-graph-docs-contrib, `api-reference/v1.0/`):

- `Application` (identity: displayName). Read with `GET /applications?$filter=displayName eq '<name>'`, as the
  script's Get-AzureApplication.ps1 does. Created with `POST /applications` (application-post-applications.md;
  New-AzureApplication.ps1 sends displayName, signInAudience "AzureADMyOrg", description, notes), updated with
  `PATCH /applications/{id}` (application-update.md), where a collection given replaces the stored one.
  `requiredResourceAccess` (resources/application.md) is the whole list the manifest gives. keyCredentials are
  written as CSS-Exchange writes an application's (`Shared/GraphApiFunctions/Add-CertificateToAzureApplication.ps1`):
  every key that stays is re-sent whole as the list query returned it (its keyId, `key` null), a new key as
  `{displayName, keyId, type: AsymmetricX509Cert, usage: Verify, key}`; compared by `customKeyIdentifier` (the
  thumbprint, as that script compares) or the key's own thumbprint.
- `ApplicationServicePrincipal` (identity: the application's displayName): `POST /servicePrincipals` with the
  application's appId (serviceprincipal-post-serviceprincipals.md; New-AzureServicePrincipal.ps1).
- `AppRoleAssignment` (identity `<application displayName>/<resource appId>/<appRoleId>`): admin consent to an
  application permission, `POST /servicePrincipals(appId='<resource appId>')/appRoleAssignedTo` with principalId
  (the application's service principal), resourceId (the resource's) and appRoleId
  (serviceprincipal-post-approleassignedto.md; the script's Grant-AzureApplicationAdminConsent.ps1 POSTs the same
  body to the client's appRoleAssignments). Read with `GET /servicePrincipals(appId='<appId>')/appRoleAssignments`
  (by appId: our reading of the alternate-key form the reference documents for appRoleAssignedTo; unconfirmed
  for this navigation).

Removal (`ensure: absent`, or prune), as Graph documents it, under the same deletion guards as every kind
(protect:, prune on an empty list, the per-run limit): `DELETE /applications/{id}` (application-delete.md: the
application goes to the deleted items for 30 days), `DELETE /servicePrincipals/{id}` (serviceprincipal-delete.md),
`DELETE /servicePrincipals/{resource id}/appRoleAssignedTo/{assignment id}`
(serviceprincipal-delete-approleassignedto.md, the method the reference recommends; needs
AppRoleAssignment.ReadWrite.All). Removals run in reverse dependency order: consent, principal, application.
Prune is scoped to the applications the manifest declares on the target: `prune: [AppRoleAssignment]` removes the
app roles granted to their principals that the manifest does not list (their consents as an authoritative list),
`prune: [ApplicationServicePrincipal]` the principal of a declared application whose principal is not declared.
`Application` cannot be pruned: a tenant holds applications reconcile never reads (the schema refuses it).

An object created in the same apply has ids Graph assigns then: the commands look them up first and refer to the
answer (`result` / `{{name#path}}`, reconciler.transports.graph), so plan shows the lookups and the references.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.changes import Action, Change
from reconciler.commands import Command, Transport
from reconciler.errors import DiscoveryError
from reconciler.kinds.certificates import CertificateLookup
from reconciler.kinds.spec import FieldSpec, KindSpec
from reconciler.model import JSONValue, LiveResource, ResourceKey, TargetSpec
from reconciler.providers.common import CREDENTIAL_ITEM_SCHEMA, GUID, GUID_PATTERN, resource_schema

FULL_ACCESS_AS_APP = "dc890d15-9560-4a4c-9b7f-a736ec74ec40"
"""full_access_as_app of Office 365 Exchange Online (00000002-0000-0ff1-ce00-000000000000):
ConfigureExchangeHybridApplication.ps1 sets
`$resourceAccessId = "dc890d15-9560-4a4c-9b7f-a736ec74ec40" # full_access_as_app`."""
APP_SELECT = "id,appId,displayName,signInAudience,requiredResourceAccess,keyCredentials"
NAME_PATTERN = r"^[^{}#'\s][^{}#']{0,119}$"
"""An application displayName we can put in an OData filter and a reference: no quote, brace or #."""
GUID_TEXT = GUID_PATTERN.strip("^$")


def app_lookup(name: str) -> Command:
    """The application by displayName (a list query), kept as `application:<name>` for later commands."""
    return Command("GET", {"path": "/applications", "query": {"$filter": f"displayName eq '{name}'",
                                                              "$select": "id,appId"},
                           "result": f"application:{name}"})


def _resource_access_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    return _access_set(want) == _access_set(have)


def _access_set(value: Any) -> set[tuple[str, str, str]]:
    out = set()
    for entry in value or []:
        if isinstance(entry, Mapping):
            for item in entry.get("resourceAccess") or []:
                if isinstance(item, Mapping):
                    out.add((str(entry.get("resourceAppId")).lower(), str(item.get("id")).lower(),
                             str(item.get("type"))))
    return out


def _app_thumb(key: Mapping[str, Any]) -> str | None:
    from reconciler.providers.office365 import _thumbprint_of

    custom = key.get("customKeyIdentifier")
    if isinstance(custom, str) and len(custom) == 40:
        return custom.upper()
    return key.get("thumbprint") or _thumbprint_of(key.get("key"))


def _app_keys_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    declared = {_app_thumb(k) for k in want or [] if isinstance(k, Mapping)}
    live = {_app_thumb(k) for k in have or [] if isinstance(k, Mapping)}
    return declared == live if desired.get("keyCredentialsAuthoritative") else declared <= live


def _app_keys_merge(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Kept keys whole as read (keyId, `key` null: Add-CertificateToAzureApplication.ps1), then the new ones."""
    from reconciler.providers.office365 import _new_key

    declared = {k["thumbprint"]: k for k in desired.get("keyCredentials") or []}
    authoritative = bool(desired.get("keyCredentialsAuthoritative"))
    out: list[dict[str, Any]] = []
    seen = set()
    for key in live.get("keyCredentials") or []:
        thumb = _app_thumb(key)
        if authoritative and thumb not in declared:
            continue
        out.append(dict(key))
        seen.add(thumb)
    out.extend(_new_key(k, None) for t, k in declared.items() if t not in seen)
    return out


def _show_app_keys(keys: Any) -> list[str]:
    shown = []
    for key in keys or []:
        if isinstance(key, Mapping):
            until = str(key.get("endDateTime") or "?")[:10]
            shown.append(f"{_app_thumb(key) or key.get('keyId')} ({key.get('displayName') or 'no subject'}, "
                         f"until {until})")
    return shown


def _with_key_ids(keys: Sequence[Mapping[str, Any]], name: str) -> list[dict[str, Any]]:
    from reconciler.providers.office365 import _thumbprint_of, key_id_for

    out = []
    for entry in keys:
        item = dict(entry)
        if "keyId" in item and item["keyId"] is None:
            item["keyId"] = key_id_for(name, str(_thumbprint_of(item["key"])))
        out.append(item)
    return out


_CREDENTIALS_SCHEMA = {
    "type": "array",
    "description": "Certificates the application must carry: the Exchange Auth certificate, current and next "
                   "(ConfigureExchangeHybridApplication.ps1 uploads both): a .cer file, or certificateOf: the "
                   "Exchange target (declaring its AuthCertificate) whose certificates are read from its live state.",
    "items": CREDENTIAL_ITEM_SCHEMA,
}
_ACCESS_SCHEMA = {
    "type": "array",
    "description": "The application's whole requiredResourceAccess (the permissions it requests): for the Exchange "
                   "hybrid application, resourceAppId 00000002-0000-0ff1-ce00-000000000000 with "
                   f"{{id: {FULL_ACCESS_AS_APP}, type: Role}} (full_access_as_app).",
    "items": {"type": "object", "additionalProperties": False, "required": ["resourceAppId", "resourceAccess"],
              "properties": {
                  "resourceAppId": GUID,
                  "resourceAccess": {"type": "array", "minItems": 1, "items": {
                      "type": "object", "additionalProperties": False, "required": ["id", "type"],
                      "properties": {"id": GUID, "type": {"enum": ["Role", "Scope"]}}}}}},
}

APPLICATION = KindSpec(
    kind="Application",
    description="A Microsoft Entra application (Graph application), identified by displayName.",
    fields={
        "signInAudience": FieldSpec("signInAudience"),
        "requiredResourceAccess": FieldSpec("requiredResourceAccess", equal=_resource_access_equal),
        "keyCredentials": FieldSpec("keyCredentials", equal=_app_keys_equal, display=_show_app_keys,
                                    merge=_app_keys_merge),
        "keyCredentialsAuthoritative": FieldSpec("keyCredentialsAuthoritative", control=True),
    },
    schema=resource_schema("Application", {
        "identity": {"type": "string", "pattern": NAME_PATTERN,
                     "description": "The displayName, e.g. ExchangeServerApp-<Exchange organization GUID>.",
                     "errorMessage": "must be a display name without quotes, braces or # (at most 120 characters)"},
        "signInAudience": {"enum": ["AzureADMyOrg", "AzureADMultipleOrgs", "AzureADandPersonalMicrosoftAccount",
                                    "PersonalMicrosoftAccount"],
                           "description": "AzureADMyOrg for the Exchange hybrid application "
                                          "(New-AzureApplication.ps1)."},
        "requiredResourceAccess": _ACCESS_SCHEMA,
        "credentials": _CREDENTIALS_SCHEMA,
        "credentialsAuthoritative": {"type": "boolean",
                                     "description": "true: remove key credentials the manifest does not list."},
    }, description="Microsoft Entra application (Microsoft Graph)."),
    prunable=False,
)

APPLICATION_SERVICE_PRINCIPAL = KindSpec(
    kind="ApplicationServicePrincipal",
    description="The service principal of an application the manifest declares (created with its appId).",
    fields={},
    after=("Application",),
    schema=resource_schema("ApplicationServicePrincipal", {
        "identity": {"type": "string", "pattern": NAME_PATTERN,
                     "description": "The application's displayName."},
    }, description="Service principal of a declared application (Microsoft Graph)."),
)

ASSIGNMENT_PATTERN = rf"^[^{{}}#'\s][^{{}}#']{{0,119}}/{GUID_TEXT}/{GUID_TEXT}$"
APP_ROLE_ASSIGNMENT = KindSpec(
    kind="AppRoleAssignment",
    description="Admin consent to an application permission: an app role of a resource granted to an application.",
    fields={},
    after=("Application", "ApplicationServicePrincipal"),
    schema=resource_schema("AppRoleAssignment", {
        "identity": {"type": "string", "pattern": ASSIGNMENT_PATTERN,
                     "description": "<application displayName>/<resource appId>/<appRoleId>, e.g. "
                                    "ExchangeServerApp-<guid>/00000002-0000-0ff1-ce00-000000000000/"
                                    f"{FULL_ACCESS_AS_APP} (full_access_as_app on Office 365 Exchange Online).",
                     "errorMessage": "must be <application displayName>/<resource appId>/<appRoleId>"},
    }, description="App role assignment (admin consent, Microsoft Graph)."),
)

KINDS: Mapping[str, KindSpec] = {k.kind: k for k in (APPLICATION, APPLICATION_SERVICE_PRINCIPAL, APP_ROLE_ASSIGNMENT)}


def _split(identity: str) -> tuple[str, str, str]:
    name, resource, role = identity.rsplit("/", 2)
    return name, resource.lower(), role.lower()


def discover(target: TargetSpec, transport: Transport,
             wanted: Sequence[ResourceKey]) -> dict[ResourceKey, LiveResource]:
    """Two batched rounds: the applications by name and the resources' principals; then, for the applications
    found, their service principals and the app roles granted to them."""
    keys = [k for k in wanted if k.kind in KINDS]
    if not keys:
        return {}
    names = list(dict.fromkeys(k.identity if k.kind != "AppRoleAssignment" else _split(k.identity)[0] for k in keys))
    resources = list(dict.fromkeys(_split(k.identity)[1] for k in keys if k.kind == "AppRoleAssignment"))
    first = [Command("GET", {"path": "/applications", "query": {"$filter": f"displayName eq '{n}'",
                                                                "$select": APP_SELECT}}) for n in names]
    first += [Command("GET", {"path": f"/servicePrincipals(appId='{r}')", "query": {"$select": "id,appId"}})
              for r in resources]
    results = transport.invoke(first, stop_on_error=False)
    apps: dict[str, Mapping[str, Any]] = {}
    for name, result in zip(names, results[:len(names)], strict=True):
        if not result.ok:
            raise DiscoveryError(f"target {target.name!r}: {result.error}")
        found = [a for a in (result.output[0].get("value") if result.output else None) or [] if isinstance(a, Mapping)]
        if len(found) > 1:
            raise DiscoveryError(f"target {target.name!r}: {len(found)} applications are named {name!r}; "
                                 "reconcile manages an application by a unique displayName")
        if found:
            apps[name] = found[0]
    resource_ids: dict[str, str] = {}
    for resource, result in zip(resources, results[len(names):], strict=True):
        if result.ok and result.output:
            resource_ids[resource] = str(result.output[0].get("id"))
        elif result.status != 404:
            raise DiscoveryError(f"target {target.name!r}: {result.error}")
    pruned: set[str] = {k for k in ("AppRoleAssignment", "ApplicationServicePrincipal") if k in target.prune}
    second: list[Command] = []
    for app in apps.values():
        path = f"/servicePrincipals(appId='{app['appId']}')"
        second += [Command("GET", {"path": path, "query": {"$select": "id,appId,displayName"}}),
                   Command("GET", {"path": f"{path}/appRoleAssignments"})]
    answers = iter(transport.invoke(second, stop_on_error=False) if second else [])
    principals: dict[str, tuple[Mapping[str, Any], list[Mapping[str, Any]]]] = {}
    for name in apps:
        read, granted = next(answers), next(answers)
        if read.ok and read.output:
            principals[name] = (read.output[0], list((granted.output[0].get("value") if granted.ok and granted.output
                                                      else None) or []))
        elif read.status != 404:
            raise DiscoveryError(f"target {target.name!r}: {read.error}")
    live: dict[ResourceKey, LiveResource] = {}
    if pruned:
        live.update(_prunable(target, transport, pruned, principals, resource_ids))
    for key in keys:
        if key.kind == "Application" and key.identity in apps:
            app = apps[key.identity]
            live[key] = LiveResource(key, {
                "id": app.get("id"), "appId": app.get("appId"), "signInAudience": app.get("signInAudience"),
                "requiredResourceAccess": list(app.get("requiredResourceAccess") or []),
                "keyCredentials": [dict(k) for k in app.get("keyCredentials") or [] if isinstance(k, Mapping)]})
        elif key.kind == "ApplicationServicePrincipal" and key.identity in principals:
            sp = principals[key.identity][0]
            live[key] = LiveResource(key, {"id": sp.get("id"), "appId": sp.get("appId")})
        elif key.kind == "AppRoleAssignment":
            name, resource, role = _split(key.identity)
            for assignment in (principals.get(name) or ({}, []))[1]:
                if str(assignment.get("resourceId")).lower() == resource_ids.get(resource, "").lower() \
                        and str(assignment.get("appRoleId")).lower() == role:
                    live[key] = LiveResource(key, {"id": assignment.get("id"),
                                                   "resourceId": assignment.get("resourceId")})
    return live


def _prunable(target: TargetSpec, transport: Transport, kinds: set[str],
              principals: Mapping[str, tuple[Mapping[str, Any], list[Mapping[str, Any]]]],
              resource_ids: Mapping[str, str]) -> dict[ResourceKey, LiveResource]:
    """What prune may remove, within the applications the manifest declares: their principals, and every app role
    granted to them (identified by the resource's appId, read for resources the manifest does not name)."""
    live: dict[ResourceKey, LiveResource] = {}
    if "ApplicationServicePrincipal" in kinds:
        for name, (sp, _) in principals.items():
            key = ResourceKey(target.name, "ApplicationServicePrincipal", name)
            live[key] = LiveResource(key, {"id": sp.get("id"), "appId": sp.get("appId")})
    if "AppRoleAssignment" not in kinds:
        return live
    app_ids = {v.lower(): k for k, v in resource_ids.items()}
    unknown = sorted({str(a.get("resourceId")) for _, granted in principals.values() for a in granted
                      if str(a.get("resourceId")).lower() not in app_ids})
    if unknown:
        reads = [Command("GET", {"path": f"/servicePrincipals/{r}", "query": {"$select": "id,appId"}})
                 for r in unknown]
        for resource_id, result in zip(unknown, transport.invoke(reads, stop_on_error=False), strict=True):
            if not result.ok or not result.output:
                raise DiscoveryError(f"target {target.name!r}: {result.error or 'no answer'} (reading the resource "
                                     f"{resource_id} of an app role granted to a declared application)")
            app_ids[resource_id.lower()] = str(result.output[0].get("appId")).lower()
    for name, (_, granted) in principals.items():
        for assignment in granted:
            resource = app_ids[str(assignment.get("resourceId")).lower()]
            key = ResourceKey(target.name, "AppRoleAssignment",
                              f"{name}/{resource}/{str(assignment.get('appRoleId')).lower()}")
            live[key] = LiveResource(key, {"id": assignment.get("id"), "resourceId": assignment.get("resourceId")})
    return live


def delete_commands(change: Change) -> tuple[Command, ...]:
    """The Graph DELETE of a live object, by the ids discovery read (see the module's docstring)."""
    live: Mapping[str, JSONValue] = change.before or {}
    kind = change.key.kind
    if kind == "Application":
        return (Command("DELETE", {"path": f"/applications/{live['id']}"}),)
    if kind == "ApplicationServicePrincipal":
        return (Command("DELETE", {"path": f"/servicePrincipals/{live['id']}"}),)
    return (Command("DELETE", {"path": f"/servicePrincipals/{live['resourceId']}/appRoleAssignedTo/{live['id']}"}),)


def commands(change: Change) -> tuple[Command, ...]:
    kind, identity = change.key.kind, change.key.identity
    if change.actions == (Action.DELETE,):
        return delete_commands(change)
    after: Mapping[str, JSONValue] = change.after or {}
    if kind == "Application":
        if change.actions == (Action.CREATE,):
            body: dict[str, Any] = {"displayName": identity, "signInAudience": after.get("signInAudience")
                                    or "AzureADMyOrg"}
            if after.get("requiredResourceAccess"):
                body["requiredResourceAccess"] = after["requiredResourceAccess"]
            keys = _app_keys_merge(after, {})
            if keys:
                body["keyCredentials"] = _with_key_ids(keys, identity)
            shown = f"displayName={identity}; keyCredentials [{', '.join(_show_app_keys(after.get('keyCredentials')))}]"
            return (Command("POST", {"path": "/applications", "body": body}, shown={"body": shown}),)
        body = {name: after[name] for name in change.changed}
        if "keyCredentials" in body:
            body["keyCredentials"] = _with_key_ids(body["keyCredentials"], identity)
        shown = "; ".join(f"{n} ({len(v) if isinstance(v, list) else v}, whole collection re-sent)"
                          if isinstance(v, list) else f"{n}={v}" for n, v in body.items())
        return (Command("PATCH", {"path": f"/applications/{after['id']}", "body": body}, shown={"body": shown}),)
    if kind == "ApplicationServicePrincipal":
        return (app_lookup(identity),
                Command("POST", {"path": "/servicePrincipals",
                                 "body": {"appId": f"{{{{application:{identity}#value.0.appId}}}}"}}))
    name, resource, role = _split(identity)
    return (
        Command("GET", {"path": f"/servicePrincipals(appId='{resource}')", "query": {"$select": "id"},
                        "result": f"resource:{resource}"}),
        app_lookup(name),
        Command("GET", {"path": f"/servicePrincipals(appId='{{{{application:{name}#value.0.appId}}}}')",
                        "query": {"$select": "id"}, "result": f"principal:{name}"}),
        Command("POST", {"path": f"/servicePrincipals(appId='{resource}')/appRoleAssignedTo",
                         "body": {"principalId": f"{{{{principal:{name}#id}}}}",
                                  "resourceId": f"{{{{resource:{resource}#id}}}}", "appRoleId": role}}),
    )


def prepare_application(fields: dict[str, JSONValue], manifest_dir: Any) -> dict[str, JSONValue]:
    from reconciler.providers.office365 import _prepare

    return _prepare(fields, manifest_dir)


def resolve_application_credentials(fields: Mapping[str, JSONValue], lookup: CertificateLookup
                                    ) -> dict[str, JSONValue]:
    from reconciler.providers.office365 import resolve_credentials

    return resolve_credentials(fields, lookup)


def application_credential_sources(fields: Mapping[str, JSONValue]) -> tuple[str, ...]:
    from reconciler.providers.office365 import credential_sources

    return credential_sources(fields)


APPLICATION = dataclasses.replace(APPLICATION, prepare=prepare_application, resolve=resolve_application_credentials,
                                  references=application_credential_sources)
KINDS = {k.kind: k for k in (APPLICATION, APPLICATION_SERVICE_PRINCIPAL, APP_ROLE_ASSIGNMENT)}
