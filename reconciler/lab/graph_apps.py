"""The lab's Graph: application objects, service principal creation and app role assignments (admin consent).

What the dedicated Exchange hybrid application needs (microsoft/CSS-Exchange,
`Hybrid/ConfigureExchangeHybridApplication/ConfigureExchangeHybridApplication.ps1` and
`Shared/GraphApiFunctions/`), with the semantics of Microsoft's Graph reference
(microsoftgraph/microsoft-graph-docs-contrib, `api-reference/v1.0/`):

    GET   /applications?$filter=displayName eq '<name>'[&$select=...]   200 {"value": [...]}
    POST  /applications                   201 (application-post-applications.md)
    GET   /applications/{id}              200, or 404 Request_ResourceNotFound
    PATCH /applications/{id}              204 (application-update.md)
    DELETE /applications/{id}             204 (application-delete.md)
    POST  /servicePrincipals {"appId"}    201 (serviceprincipal-post-serviceprincipals.md)
    DELETE /servicePrincipals/{id}, or (appId='{appId}')   204 (serviceprincipal-delete.md; routed here by
                                          reconciler.lab.graph)
    DELETE /servicePrincipals/{id}/appRoleAssignedTo/{assignment id}, or (appId='{appId}')/...   204
                                          (serviceprincipal-delete-approleassignedto.md; needs
                                          AppRoleAssignment.ReadWrite.All, as the grant does)
    POST  /servicePrincipals/{id}/appRoleAssignedTo, or .../servicePrincipals(appId='{appId}')/appRoleAssignedTo
                                          201 (serviceprincipal-post-approleassignedto.md documents both forms)
    GET   the same two paths, and /servicePrincipals/{id}/appRoleAssignments (or by appId): the assignments
          granted by / to that principal, {"value": [...]}

- Applications: `appId` and `id` are assigned by the lab (uuid4). `displayName` is required (400
  `Request_BadRequest` without it). A collection in a PATCH replaces the stored one: `keyCredentials` follow the
  rules of the service principal PATCH (reconciler.lab.graph: new key `{displayName, keyId, type, usage, key}`,
  a kept key re-sent whole as read with `key` null, Add-CertificateToAzureApplication.ps1); `requiredResourceAccess`
  is stored as given (`[{resourceAppId, resourceAccess: [{id, type: Role|Scope}]}]`, resources/application.md).
  In a list query every key's `key` is null ("Returned only on $select for a single object", keycredential.md).
  `$filter` supports `displayName eq '<text>'` only (our modelling; other filters 400).
- Service principals: creating one for an appId that has none in the tenant's applications is 400
  `Request_BadRequest` ("... does not reference a valid application object"; message ours, unconfirmed), and a
  second one for the same appId 409 `Request_MultipleObjectsWithSameKeyValue` (unconfirmed status and code).
- App role assignments: `principalId`, `resourceId` and `appRoleId` are required; the resource must be the principal
  addressed in the path, its app roles must define `appRoleId` (400 otherwise), the principal must exist (404).
  Granting one needs the application permission `AppRoleAssignment.ReadWrite.All` (the reference's permission
  table): without it 403 `Authorization_RequestDenied`, whose message names that permission. The same assignment
  twice is 409 `Request_BadRequest` "Permission being assigned already exists on the object" (unconfirmed status).
  The first-party principals' app roles are not in the lab state: `FIRST_PARTY_APP_ROLES` lists the ones the
  lab knows (full_access_as_app, whose id ConfigureExchangeHybridApplication.ps1 names).

- Deletions: an unknown id is 404 `Request_ResourceNotFound`. Deleting an application removes only the
  application (the reference says it goes to a container for 30 days; the lab keeps no deleted items and does not
  model what becomes of its service principal). Deleting a service principal also removes the app role
  assignments granted to it or on it (our modelling, unconfirmed).

State: `tenants.<id>.applications` and `tenants.<id>.appRoleAssignments` (lists; absent is empty).
"""

from __future__ import annotations

import copy
import datetime
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

APP_ROLE_ASSIGNMENT_WRITE = "AppRoleAssignment.ReadWrite.All"
EXCHANGE_ONLINE = "00000002-0000-0ff1-ce00-000000000000"
FULL_ACCESS_AS_APP = "dc890d15-9560-4a4c-9b7f-a736ec74ec40"
"""Office 365 Exchange Online's app role full_access_as_app: `$resourceAccessId = "dc890d15-9560-4a4c-9b7f-a736ec74ec40"
# full_access_as_app` in ConfigureExchangeHybridApplication.ps1 (microsoft/CSS-Exchange)."""
FIRST_PARTY_APP_ROLES: Mapping[str, Mapping[str, str]] = {EXCHANGE_ONLINE: {FULL_ACCESS_AS_APP: "full_access_as_app"}}

APPLICATION_PROPERTIES = ("id", "appId", "displayName", "signInAudience", "description", "notes",
                          "requiredResourceAccess", "keyCredentials", "passwordCredentials", "createdDateTime")
WRITABLE = ("displayName", "signInAudience", "description", "notes", "requiredResourceAccess", "keyCredentials")
SIGN_IN_AUDIENCES = ("AzureADMyOrg", "AzureADMultipleOrgs", "AzureADandPersonalMicrosoftAccount",
                     "PersonalMicrosoftAccount")
"""resources/application.md, signInAudience values (New-AzureApplication.ps1 validates the same set)."""

_APPLICATIONS = re.compile(r"^/applications/?$", re.IGNORECASE)
_APPLICATION = re.compile(r"^/applications/([^/()]+)/?$", re.IGNORECASE)
_SERVICE_PRINCIPALS = re.compile(r"^/servicePrincipals/?$", re.IGNORECASE)
_ASSIGNMENTS = re.compile(r"^/servicePrincipals(?:/([^/()]+)|\(appId='([^']*)'\))"
                          r"/(appRoleAssignedTo|appRoleAssignments)/?$", re.IGNORECASE)
_ASSIGNMENT = re.compile(r"^/servicePrincipals(?:/([^/()]+)|\(appId='([^']*)'\))"
                         r"/appRoleAssignedTo/([^/()]+)/?$", re.IGNORECASE)
_FILTER = re.compile(r"^\s*displayName\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)


def routes(path: str) -> bool:
    """Whether this module answers the path (the rest of Graph is reconciler.lab.graph's)."""
    return any(p.match(path) for p in (_APPLICATIONS, _APPLICATION, _SERVICE_PRINCIPALS, _ASSIGNMENTS, _ASSIGNMENT))


def execute(record: dict[str, Any], roles: Sequence[str], method: str, path: str, query: Mapping[str, list[str]],
            body: Any, base: str) -> Any:
    from reconciler.lab import graph  # the shared helpers (errors, key credentials) live there

    def error(status: int, code: str, message: str) -> graph.Response:
        return graph.graph_error(status, code, message)

    method = method.upper()
    writes = method != "GET"
    if not (graph.WRITE_ROLES if writes else graph.READ_ROLES).intersection(roles):
        return error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
    apps: list[dict[str, Any]] = record.setdefault("applications", [])
    assignments: list[dict[str, Any]] = record.setdefault("appRoleAssignments", [])
    has_body = isinstance(body, dict)
    if writes and method != "DELETE" and not has_body:
        return error(400, "BadRequest", "Empty Payload. JSON content expected.")

    if _APPLICATIONS.match(path):
        if method == "GET":
            return _list_applications(apps, query, error, base)
        if method != "POST":
            return error(405, "Request_BadRequest", f"The HTTP method '{method}' is not supported for applications.")
        return _create_application(apps, body, error, base)

    found = _APPLICATION.match(path)
    if found:
        app = next((a for a in apps if a["id"].lower() == unquote(found.group(1)).lower()), None)
        if app is None:
            return error(404, "Request_ResourceNotFound", f"Resource '{found.group(1)}' does not exist or one of its "
                                                          "queried reference-property objects are not present.")
        if method == "GET":
            return graph.Response(200, _view(app, _select(query), single=True, base=base),
                                  content_type=graph.ODATA_TYPE)
        if method == "DELETE":
            apps.remove(app)
            return graph.Response(204)
        if method != "PATCH":
            return error(405, "Request_BadRequest", f"The HTTP method '{method}' is not supported by the lab here.")
        try:
            changes = _checked(body, app, error)
        except _Refused as refused:
            return refused.response
        app.update(changes)
        return graph.Response(204)

    if _SERVICE_PRINCIPALS.match(path):
        if method != "POST":
            return error(405, "Request_BadRequest", f"The HTTP method '{method}' is not supported by the lab here.")
        return _create_service_principal(record, apps, body, error, base)

    one = _ASSIGNMENT.match(path)
    if one is not None:
        return _revoke(record, roles, method, one.group(1), one.group(2), unquote(one.group(3)), error)

    match = _ASSIGNMENTS.match(path)
    assert match is not None
    by_id, by_app_id, navigation = match.group(1), match.group(2), match.group(3)
    sp = (graph.find_service_principal(record, by_app_id) if by_app_id is not None
          else graph.find_service_principal(record, unquote(by_id), by="id"))
    if sp is None:
        return error(404, "Request_ResourceNotFound", f"Resource '{by_app_id or by_id}' does not exist or one of its "
                                                      "queried reference-property objects are not present.")
    if method == "GET":
        side = "resourceId" if navigation.lower() == "approleassignedto" else "principalId"
        return graph.Response(200, {"@odata.context": f"{base}/v1.0/$metadata#appRoleAssignments",
                                    "value": [copy.deepcopy(a) for a in assignments if a[side] == sp["id"]]},
                              content_type=graph.ODATA_TYPE)
    if method != "POST" or navigation.lower() != "approleassignedto":
        return error(405, "Request_BadRequest", "The lab grants app roles with POST .../appRoleAssignedTo only.")
    if APP_ROLE_ASSIGNMENT_WRITE not in roles:
        return error(403, "Authorization_RequestDenied",
                     "Insufficient privileges to complete the operation. Granting an app role needs the application "
                     f"permission {APP_ROLE_ASSIGNMENT_WRITE} (admin-consented).")
    return _grant(record, assignments, sp, body, error, base)


def _revoke(record: dict[str, Any], roles: Sequence[str], method: str, by_id: str | None, by_app_id: str | None,
            assignment_id: str, error: Any) -> Any:
    """DELETE /servicePrincipals/{resource}/appRoleAssignedTo/{id} (serviceprincipal-delete-approleassignedto.md)."""
    from reconciler.lab import graph

    if method != "DELETE":
        return error(405, "Request_BadRequest", "The lab serves one app role assignment for DELETE only.")
    if APP_ROLE_ASSIGNMENT_WRITE not in roles:
        return error(403, "Authorization_RequestDenied",
                     "Insufficient privileges to complete the operation. Removing an app role assignment needs the "
                     f"application permission {APP_ROLE_ASSIGNMENT_WRITE} (admin-consented).")
    resource = (graph.find_service_principal(record, by_app_id) if by_app_id is not None
                else graph.find_service_principal(record, unquote(str(by_id)), by="id"))
    assignments: list[dict[str, Any]] = record.setdefault("appRoleAssignments", [])
    found = next((a for a in assignments if resource is not None and a["resourceId"] == resource["id"]
                  and a["id"].lower() == assignment_id.lower()), None)
    if found is None:
        return error(404, "Request_ResourceNotFound", f"Resource '{assignment_id}' does not exist or one of its "
                                                      "queried reference-property objects are not present.")
    assignments.remove(found)
    return graph.Response(204)


def delete_service_principal(record: dict[str, Any], sp: Mapping[str, Any]) -> Any:
    """DELETE /servicePrincipals/{id} (serviceprincipal-delete.md): the principal and the app role assignments
    granted to it or on it."""
    from reconciler.lab import graph

    record["servicePrincipals"] = [p for p in record.get("servicePrincipals") or [] if p["id"] != sp["id"]]
    record["appRoleAssignments"] = [a for a in record.get("appRoleAssignments") or []
                                    if sp["id"] not in (a["principalId"], a["resourceId"])]
    return graph.Response(204)


class _Refused(Exception):
    def __init__(self, response: Any) -> None:
        super().__init__("refused")
        self.response = response


def _select(query: Mapping[str, list[str]]) -> list[str] | None:
    for option, values in query.items():
        if option.lower() == "$select":
            wanted = [n.strip() for v in values for n in v.split(",") if n.strip()]
            known = {p.lower(): p for p in APPLICATION_PROPERTIES}
            return [known[n.lower()] for n in wanted if n.lower() in known] or None
    return None


def _view(app: Mapping[str, Any], selected: list[str] | None, *, single: bool, base: str) -> dict[str, Any]:
    with_key = single and selected is not None and "keyCredentials" in selected
    view: dict[str, Any] = {} if not single else {"@odata.context": f"{base}/v1.0/$metadata#applications/$entity"}
    for prop in selected or APPLICATION_PROPERTIES:
        value = copy.deepcopy(app.get(prop))
        if prop == "keyCredentials":
            value = [{**k, "key": k.get("key") if with_key else None} for k in value or []]
        view[prop] = value
    return view


def _list_applications(apps: list[dict[str, Any]], query: Mapping[str, list[str]], error: Any, base: str) -> Any:
    from reconciler.lab import graph

    wanted: str | None = None
    for option, values in query.items():
        if option.lower() == "$filter":
            found = _FILTER.match(values[0] if values else "")
            if found is None:
                return error(400, "Request_UnsupportedQuery", "The lab supports only $filter=displayName eq '...'.")
            wanted = found.group(1).replace("''", "'")
        elif option.startswith("$") and option.lower() != "$select":
            return error(400, "Request_BadRequest", f"Query option '{option}' is not supported by the lab.")
    selected = _select(query)
    value = [_view(a, selected, single=False, base=base) for a in apps
             if wanted is None or a["displayName"] == wanted]
    return graph.Response(200, {"@odata.context": f"{base}/v1.0/$metadata#applications", "value": value},
                          content_type=graph.ODATA_TYPE)


def _checked(body: Mapping[str, Any], app: Mapping[str, Any], error: Any) -> dict[str, Any]:
    from reconciler.lab import graph

    changes: dict[str, Any] = {}
    known = {p.lower(): p for p in APPLICATION_PROPERTIES}
    for name, value in body.items():
        if name.startswith("@odata."):
            continue
        prop = known.get(name.lower())
        if prop is None:
            raise _Refused(error(400, "Request_BadRequest", f"Invalid property '{name}'."))
        if prop not in WRITABLE:
            raise _Refused(error(400, "Request_BadRequest", f"Property '{name}' is read-only."))
        if prop == "keyCredentials":
            try:
                changes[prop] = graph._key_credentials(app.get("keyCredentials") or [], value)
            except graph._Failed as failed:
                raise _Refused(failed.response) from None
        elif prop == "requiredResourceAccess":
            changes[prop] = _resource_access(value, error)
        elif prop == "signInAudience":
            if value not in SIGN_IN_AUDIENCES:
                raise _Refused(error(400, "Request_BadRequest", f"Invalid value specified for property '{name}'."))
            changes[prop] = value
        else:
            if not isinstance(value, str) or (prop == "displayName" and not value.strip()):
                raise _Refused(error(400, "Request_BadRequest", f"Invalid value specified for property '{name}'."))
            changes[prop] = value
    return changes


def _resource_access(value: Any, error: Any) -> list[dict[str, Any]]:
    bad = _Refused(error(400, "Request_BadRequest", "Invalid value specified for property 'requiredResourceAccess'."))
    if not isinstance(value, list):
        raise bad
    out = []
    for entry in value:
        if not isinstance(entry, dict) or not isinstance(entry.get("resourceAppId"), str) \
                or not isinstance(entry.get("resourceAccess"), list):
            raise bad
        access = []
        for item in entry["resourceAccess"]:
            if not isinstance(item, dict) or item.get("type") not in ("Role", "Scope"):
                raise bad
            try:
                access.append({"id": str(uuid.UUID(str(item.get("id")))), "type": item["type"]})
            except ValueError:
                raise bad from None
        out.append({"resourceAppId": entry["resourceAppId"], "resourceAccess": access})
    return out


def _create_application(apps: list[dict[str, Any]], body: Mapping[str, Any], error: Any, base: str) -> Any:
    from reconciler.lab import graph

    if not isinstance(body.get("displayName"), str) or not body["displayName"].strip():
        return error(400, "Request_BadRequest", "Property 'displayName' is required.")
    app: dict[str, Any] = {"id": str(uuid.uuid4()), "appId": str(uuid.uuid4()), "signInAudience": "AzureADMyOrg",
                           "description": None, "notes": None, "requiredResourceAccess": [], "keyCredentials": [],
                           "passwordCredentials": [],
                           "createdDateTime": graph.iso(datetime.datetime.now(datetime.UTC))}
    try:
        app.update(_checked(body, app, error))
    except _Refused as refused:
        return refused.response
    apps.append(app)
    return graph.Response(201, {"@odata.context": f"{base}/v1.0/$metadata#applications/$entity",
                                **_view(app, None, single=False, base=base)}, content_type=graph.ODATA_TYPE)


def _create_service_principal(record: dict[str, Any], apps: list[dict[str, Any]], body: Mapping[str, Any],
                              error: Any, base: str) -> Any:
    from reconciler.lab import graph

    app_id = body.get("appId")
    unknown = sorted(set(body) - {"appId", "notes", "description", "tags"})
    if unknown:
        return error(400, "Request_BadRequest", f"Property '{unknown[0]}' is not emulated by the lab on create.")
    app = next((a for a in apps if isinstance(app_id, str) and a["appId"].lower() == app_id.lower()), None)
    if app is None:
        return error(400, "Request_BadRequest", f"The appId '{app_id}' of the service principal does not reference "
                                                "a valid application object.")
    if graph.find_service_principal(record, app["appId"]) is not None:
        return error(409, "Request_MultipleObjectsWithSameKeyValue",
                     "Another object with the same value for property appId already exists.")
    sp = {**graph.service_principal("", app["appId"], app["displayName"], account_enabled=True, names=[app["appId"]]),
          "id": str(uuid.uuid4()), "appOwnerOrganizationId": None, "notes": body.get("notes")}
    record.setdefault("servicePrincipals", []).append(sp)
    return graph.Response(201, {"@odata.context": f"{base}/v1.0/$metadata#servicePrincipals/$entity",
                                **{k: copy.deepcopy(v) for k, v in sp.items()}}, content_type=graph.ODATA_TYPE)


def _grant(record: dict[str, Any], assignments: list[dict[str, Any]], resource: Mapping[str, Any],
           body: Mapping[str, Any], error: Any, base: str) -> Any:
    from reconciler.lab import graph

    fields = {}
    for name in ("principalId", "resourceId", "appRoleId"):
        try:
            fields[name] = str(uuid.UUID(str(body.get(name))))
        except ValueError:
            return error(400, "Request_BadRequest", f"Invalid value specified for property '{name}' of resource "
                                                    "'AppRoleAssignment'.")
    if fields["resourceId"] != resource["id"]:
        return error(400, "Request_BadRequest", "resourceId must be the service principal the request addresses.")
    roles = resource.get("appRoles") or [{"id": i, "value": v} for i, v in
                                         FIRST_PARTY_APP_ROLES.get(str(resource["appId"]).lower(), {}).items()]
    role = next((r for r in roles if str(r.get("id")).lower() == fields["appRoleId"]), None)
    if role is None:
        return error(400, "Request_BadRequest", f"Permission entry '{fields['appRoleId']}' is not an app role of "
                                                f"'{resource.get('displayName')}'.")
    principal = graph.find_service_principal(record, fields["principalId"], by="id")
    if principal is None:
        return error(404, "Request_ResourceNotFound", f"Resource '{fields['principalId']}' does not exist or one of "
                                                      "its queried reference-property objects are not present.")
    if any(a["principalId"] == fields["principalId"] and a["resourceId"] == fields["resourceId"]
           and a["appRoleId"] == fields["appRoleId"] for a in assignments):
        return error(409, "Request_BadRequest", "Permission being assigned already exists on the object")
    assignment = {"id": str(uuid.uuid4()), "deletedDateTime": None, **fields,
                  "createdDateTime": graph.iso(datetime.datetime.now(datetime.UTC)),
                  "principalDisplayName": principal.get("displayName"), "principalType": "ServicePrincipal",
                  "resourceDisplayName": resource.get("displayName")}
    assignments.append(assignment)
    return graph.Response(201, {"@odata.context": f"{base}/v1.0/$metadata#servicePrincipals('{resource['id']}')/"
                                                  "appRoleAssignedTo/$entity", **copy.deepcopy(assignment)},
                          content_type=graph.ODATA_TYPE)
