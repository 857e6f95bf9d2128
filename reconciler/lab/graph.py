"""The lab's Microsoft Graph (service principals) and Microsoft Entra ID token endpoint, over real HTTP.

Served by the lab server (reconciler.lab.server) beside the metadata documents, with the same
path-prefix scheme: the first path segment names the emulated host. With the lab at `{lab}`
(for example `http://127.0.0.1:8470`):

    POST  {lab}/login.microsoftonline.com/{tenant}/oauth2/v2.0/token      client credentials grant
    GET   {lab}/graph.microsoft.com/v1.0/servicePrincipals(appId='{appId}')[?$select=a,b,...]
    PATCH {lab}/graph.microsoft.com/v1.0/servicePrincipals(appId='{appId}')
    POST  {lab}/graph.microsoft.com/v1.0/$batch

`servicePrincipals/{object id}` addresses the same objects. A client's token URL is the first line and
its Graph base URL `{lab}/graph.microsoft.com/v1.0`; nothing else differs from the real service.

Token endpoint (form-encoded, `grant_type=client_credentials`, `client_id`, `scope`, and either
`client_secret` or `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` +
`client_assertion`). `scope` is one value ending in `/.default` (`https://graph.microsoft.com/.default`,
or the lab's Graph URL + `/.default`). A certificate assertion is a JWT signed RS256 with the key of the
client's registered certificate; its header carries `x5t` or `x5t#S256` of that certificate; its claims
`aud` (the token URL: any URL ending in `/{tenant}/oauth2/v2.0/token`), `iss` = `sub` = client id,
`jti`, `nbf` (not in the future, 60 s of clock skew allowed) and `exp` (in the future). Success:
`{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": "<opaque>"}`; the
token is random (not a JWT) and only its SHA-256 is stored. Failures use Entra ID's body (`error`,
`error_description` starting `AADSTSnnn:`, `error_codes`, `timestamp`, `trace_id`, `correlation_id`,
`error_uri`) and status: 400 for AADSTS90002 (unknown tenant, `invalid_request`), AADSTS700016 (unknown
client, `unauthorized_client`), AADSTS900144 (missing parameter), AADSTS70003 (grant type),
AADSTS1002012 (scope); 401 `invalid_client` for AADSTS7000215 (bad secret), AADSTS7000218 (no
credential), AADSTS700027 (assertion: malformed, bad signature, unregistered certificate, wrong
audience, missing claim), AADSTS700021 (assertion `iss`/`sub` is not the client id) and AADSTS700024
(assertion outside its validity). Entra ID answers invalid_client with 401 (as field reports show).

Graph (every request needs `Authorization: Bearer <token from the lab>`):
- GET: without `$select`, the default properties with every keyCredential's `key` null; with
  `$select=...,keyCredentials` the keys are included (base64 DER): Graph returns `key` "only on `$select`
  for a single object ... otherwise, it is always null" (keycredential.md), and the lab serves single
  objects only. Unknown `$select` property: 400 `Request_BadRequest`; unknown appId:
  404 `Request_ResourceNotFound`.
- PATCH (JSON) of `accountEnabled`, `servicePrincipalNames`, `keyCredentials` -> 204 No Content. A
  collection given REPLACES the stored one (keys not re-sent are deleted). The keyCredentials bodies
  Microsoft's own scripts send (microsoft/CSS-Exchange, Shared/GraphApiFunctions/) are what the lab
  is built for: a new key `{displayName, keyId, type, usage, key}` (Add-CertificateToAzureApplication.ps1),
  a kept key `{key, type, usage}` (Remove-CertificateFromAzureServicePrincipal.ps1) or the whole stored
  object as read, `keyId` included and `key` null when read without `$select`
  (Add-CertificateToAzureApplication.ps1 re-sends what a list query returned). Per entry:
  - `type` must be `AsymmetricX509Cert` and `usage` `Verify`; other properties are those of the
    keyCredential resource (api-reference/v1.0/resources/keycredential.md), anything else is 400
    `Request_BadRequest` "Invalid property '...'.";
  - `keyId` of a stored key: that key stays, with its identity; `key` null or absent keeps it exactly as
    stored, the same certificate in `key` keeps its keyId with the fields given, another certificate is
    400 "Update to existing credential with KeyId '...' is not allowed." (the message Entra ID gives
    for that, as field reports of the older Azure AD Graph show; unconfirmed on Microsoft Graph);
  - otherwise `key` must be a base64 X.509 certificate (400 `InvalidKeyValue` if it is not one, or is
    missing/null, e.g. a new key re-sent from a read without `$select`); `keyId` is the one given, else
    the stored one of the same certificate (our modelling: unconfirmed), else a new uuid4;
  - `customKeyIdentifier` not given defaults to the certificate's thumbprint, 40 hexadecimal characters
    ("A 40-character binary type ... When not provided in the payload, defaults to the thumbprint of the
    certificate", keycredential.md; Microsoft's scripts compare it with X509Certificate2.Thumbprint);
    given, it must be base64 (Edm.Binary), which a hex thumbprint is;
  - `displayName` not given is the subject (`CN=...`; unconfirmed); longer than 90 characters it is
    shortened to 90 ("Longer values are accepted but shortened", keycredential.md, current version);
  - dates not given are the certificate's validity (unconfirmed), ISO 8601 with `Z`; end not after start: 400.
  An SPN another service principal has: 400. The whole PATCH is validated before anything changes.
- POST `$batch`: `{"requests": [{id, method, url (relative to /v1.0), headers?, body?, dependsOn?}]}`,
  at most 20 (else 400); a request with a body needs a `Content-Type` header. Answers
  `{"responses": [{id, status, headers, body}]}` (body null for 204). Requests run in list order, a
  request with `dependsOn` after its dependencies; when one of those failed (status >= 400) it answers
  424 without running. Inner requests are authorized with the outer token.
- Authorization: no token -> 401 `InvalidAuthenticationToken` "Access token is empty."; a token the
  lab did not issue -> 401 "Invalid JWT token. ..."; an expired one -> 401 "Access token has expired or
  is not yet valid."; reads need a role in READ_ROLES (`Application.Read.All`...), writes one in
  WRITE_ROLES (`Application.ReadWrite.All`...), else 403 `Authorization_RequestDenied`.
- Round trips: every HTTP request to Graph whose token names a tenant (valid or expired) counts 1 in
  that tenant's `roundTrips`; a `$batch` counts 1 whatever it holds. Token requests are not counted.

Faults (reconciler.lab.admin.add_graph_fault, `reconcile lab graph fault`): `{"status": 429|503,
"retryAfter": seconds or null, "times": n, "method": "PATCH" or null, "path": substring or null,
"inner": bool}` makes the next n matching requests answer that status with `Retry-After` and Graph's
error body (`TooManyRequests` / `serviceNotAvailable`). Outer faults (`inner` false) match the HTTP
request itself (a `$batch` as a whole, path `/$batch`); inner ones match requests inside a batch.
`path` is matched case-insensitively against the URL relative to `/v1.0` (e.g.
`/servicePrincipals(appId='...')?$select=keyCredentials`). Faults are checked after authentication.

State (in the lab state file, beside the Skype hosts):

    "tenants": {"<tenantId>": {
        "servicePrincipals": [{"id", "appId", "displayName", "appDisplayName", "accountEnabled",
                               "appOwnerOrganizationId", "appRoleAssignmentRequired",
                               "servicePrincipalNames": [...], "servicePrincipalType", "tags": [],
                               "keyCredentials": [{"customKeyIdentifier", "displayName", "endDateTime",
                                                   "key": "<base64 DER>", "keyId", "startDateTime",
                                                   "type", "usage"}],
                               "passwordCredentials": []}],
        "clients": {"<clientId>": {"secretSha256": "<hex or null>", "certificate": "<base64 DER or null>",
                                   "roles": ["Application.ReadWrite.All"], "displayName": "..."}},
        "tokens": {"<sha256 hex of the token>": {"client": "<clientId>", "expires": <epoch s>, "roles": [...]}},
        "faults": [...],
        "roundTrips": 0}}

Every Graph or token request is answered under the lab's writers' lock (reconciler.lab.state): it
counts a round trip or stores a token. Nothing holds that lock while calling Graph, so this cannot
deadlock; metadata documents are still read without it. Expired tokens are kept for a day (so Graph
can still say "expired") and dropped when a new token is issued.

Our modelling, unconfirmed against the live service: opaque (non-JWT) tokens; the messages of the
invalid-token, unknown-`$select`, bad-key and batch-format errors; 424's body; `body: null` for 204
inside a batch; refusing an empty batch; only `$select` among the OData query options.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from reconciler.lab import certs, graph_apps
from reconciler.lab.state import LabStore

TOKEN_HOST = "login.microsoftonline.com"
GRAPH_HOST = "graph.microsoft.com"
HOSTS = (TOKEN_HOST, GRAPH_HOST)
GRAPH_VERSION = "v1.0"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_LIFETIME = 3599
CLOCK_SKEW = 60
TOKEN_RETENTION = 86400
MAX_BATCH = 20
MICROSOFT_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
"""appOwnerOrganizationId of Microsoft's first-party applications."""

READ_ALL = "Application.Read.All"
READ_WRITE_ALL = "Application.ReadWrite.All"
ROLES = (READ_ALL, READ_WRITE_ALL, "Directory.Read.All", "Directory.ReadWrite.All")
READ_ROLES = frozenset(ROLES)
WRITE_ROLES = frozenset({READ_WRITE_ALL, "Directory.ReadWrite.All"})
FAULT_STATUSES = (429, 503)
FAULT_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")
ASYMMETRIC_X509 = "AsymmetricX509Cert"
VERIFY = "Verify"

JSON_TYPE = "application/json; charset=utf-8"
ODATA_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"

SERVICE_PRINCIPAL_PROPERTIES = (
    "id", "accountEnabled", "appDisplayName", "appId", "appOwnerOrganizationId", "appRoleAssignmentRequired",
    "displayName", "servicePrincipalNames", "servicePrincipalType", "tags", "keyCredentials", "passwordCredentials",
)
COLLECTIONS = frozenset({"servicePrincipalNames", "tags", "keyCredentials", "passwordCredentials"})
PATCHABLE = ("accountEnabled", "servicePrincipalNames", "keyCredentials")
KEY_CREDENTIAL_PROPERTIES = (
    "customKeyIdentifier", "displayName", "endDateTime", "key", "keyId", "startDateTime", "type", "usage",
)
"""The keyCredential resource (microsoftgraph/microsoft-graph-docs-contrib,
api-reference/v1.0/resources/keycredential.md)."""
DISPLAY_NAME_MAX = 90
"""keyCredential.displayName: "maximum length of 90 characters. Longer values are accepted but shortened"."""


@dataclass
class Response:
    """One answer: `body` is JSON data, bytes (sent as is) or None (no body)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON_TYPE

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode("utf-8")


# --- helpers shared with admin and estate -------------------------------------------------------


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def iso(moment: datetime.datetime) -> str:
    """ISO 8601 in UTC with `Z`, whole seconds (how Graph writes keyCredential dates)."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime.datetime:
    """An ISO 8601 date and time (`Z` or an offset; none: UTC); raises ValueError."""
    moment = datetime.datetime.fromisoformat(text.strip())
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def service_principal(tenant_id: str, app_id: str, display_name: str, *, account_enabled: bool,
                      names: Sequence[str]) -> dict[str, Any]:
    """A stored service principal of a Microsoft first-party app (object id stable per tenant and app)."""
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"lab:{tenant_id}:{app_id}")),
        "accountEnabled": account_enabled,
        "appDisplayName": display_name,
        "appId": app_id,
        "appOwnerOrganizationId": MICROSOFT_TENANT,
        "appRoleAssignmentRequired": False,
        "displayName": display_name,
        "servicePrincipalNames": list(names),
        "servicePrincipalType": "Application",
        "tags": [],
        "keyCredentials": [],
        "passwordCredentials": [],
    }


def client(display_name: str, roles: Sequence[str], *, secret: str | None = None,
           certificate: bytes | None = None) -> dict[str, Any]:
    """A stored client application (its secret only as SHA-256, its certificate as base64 DER)."""
    return {
        "displayName": display_name,
        "secretSha256": sha256_hex(secret) if secret is not None else None,
        "certificate": certs.b64(certificate) if certificate is not None else None,
        "roles": list(roles),
    }


def tenant(service_principals: Sequence[Mapping[str, Any]], clients: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "servicePrincipals": [dict(sp) for sp in service_principals],
        "clients": {cid: dict(c) for cid, c in clients.items()},
        "tokens": {},
        "faults": [],
        "roundTrips": 0,
    }


def find_tenant(state: Mapping[str, Any], tenant_id: str) -> str | None:
    """The stored key of a tenant (ids compared ignoring case)."""
    tenants: Mapping[str, Any] = state.get("tenants") or {}
    if tenant_id in tenants:
        return tenant_id
    lowered = tenant_id.lower()
    return next((t for t in tenants if t.lower() == lowered), None)


def find_service_principal(record: Mapping[str, Any], app_id: str, *, by: str = "appId") -> dict[str, Any] | None:
    lowered = app_id.lower()
    for sp in record.get("servicePrincipals", []):
        if str(sp.get(by, "")).lower() == lowered:
            found: dict[str, Any] = sp
            return found
    return None


def key_credential(der: bytes, given: Mapping[str, Any] | None = None, key_id: str | None = None) -> dict[str, Any]:
    """A stored keyCredential for a certificate, with what Graph fills in when it is not `given`.

    Raises ValueError for a bad date, keyId or customKeyIdentifier in `given`.
    """
    given = given or {}
    cert = x509.load_der_x509_certificate(der)
    start = given.get("startDateTime")
    end = given.get("endDateTime")
    custom = given.get("customKeyIdentifier")
    display = given.get("displayName")
    start_at = parse_iso(start) if isinstance(start, str) else cert.not_valid_before_utc
    end_at = parse_iso(end) if isinstance(end, str) else cert.not_valid_after_utc
    if end_at <= start_at:
        raise ValueError("Key credential end date is invalid: it is not after its start date.")
    if isinstance(custom, str):
        base64.b64decode(custom, validate=True)
    else:
        custom = certs.thumbprint(der)  # "defaults to the thumbprint of the certificate" (keycredential.md)
    if not isinstance(display, str):
        display = cert.subject.rfc4514_string()
    return {
        "customKeyIdentifier": custom,
        "displayName": display[:DISPLAY_NAME_MAX],
        "endDateTime": iso(end_at),
        "key": certs.b64(der),
        "keyId": str(uuid.UUID(key_id)) if key_id else str(uuid.uuid4()),
        "startDateTime": iso(start_at),
        "type": ASYMMETRIC_X509,
        "usage": VERIFY,
    }


def key_thumbprint(credential: Mapping[str, Any]) -> str | None:
    """SHA-1 thumbprint (upper-case hex) of a stored keyCredential's certificate."""
    try:
        return certs.thumbprint(certs.to_der(certs.from_b64(str(credential.get("key") or ""))))
    except ValueError:
        return None


# --- HTTP entry point ---------------------------------------------------------------------------


def handle(store: LabStore, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes,
           origin: str, *, now: float | None = None) -> Response | None:
    """Answer a request whose path starts with an emulated Entra ID or Graph host; None otherwise.

    `path` is unquoted, `query` raw, `headers` keyed in lower case, `origin` `http://host:port`.
    """
    _, _, rest = path.partition("/")
    host, _, rest = rest.partition("/")
    now = time.time() if now is None else now
    if host.lower() == TOKEN_HOST:
        return _token_route(store, method.upper(), "/" + rest, body, now)
    if host.lower() == GRAPH_HOST:
        return _graph_route(store, method.upper(), "/" + rest, query, headers, body, f"{origin}/{GRAPH_HOST}", now)
    return None


# --- token endpoint -----------------------------------------------------------------------------

_TOKEN_PATH = re.compile(r"^/([^/]+)/oauth2/v2\.0/token/?$", re.IGNORECASE)
_NO_CACHE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


def _aad_error(status: int, error: str, code: int, message: str, now: float) -> Response:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(now))
    return Response(status, {
        "error": error,
        "error_description": f"AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}"
                             f"\r\nTimestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://{TOKEN_HOST}/error?code={code}",
    }, dict(_NO_CACHE))


def _missing(name: str, now: float) -> Response:
    return _aad_error(400, "invalid_request", 900144,
                      f"The request body must contain the following parameter: '{name}'.", now)


def _token_route(store: LabStore, method: str, rest: str, body: bytes, now: float) -> Response:
    match = _TOKEN_PATH.match(rest)
    if match is None:
        return Response(404, b"Not Found", content_type="text/plain; charset=utf-8")
    if method != "POST":
        return _aad_error(400, "invalid_request", 900561,
                          f"The endpoint only accepts POST, OPTIONS requests. Received a {method} request.", now)
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
    with store.edit() as state:
        return token_request(state, match.group(1), form, now)


def token_request(state: dict[str, Any], tenant_id: str, form: Mapping[str, str], now: float) -> Response:
    """The client credentials grant against the state (changed in place when a token is issued)."""
    key = find_tenant(state, tenant_id)
    if key is None:
        return _aad_error(400, "invalid_request", 90002,
                          f"Tenant '{tenant_id}' not found. Check to make sure you have the correct tenant ID and "
                          "are signing into the correct cloud.", now)
    record = state["tenants"][key]
    grant_type = form.get("grant_type", "")
    if not grant_type:
        return _missing("grant_type", now)
    if grant_type != "client_credentials":
        return _aad_error(400, "unsupported_grant_type", 70003,
                          f"The app requested an unsupported grant type '{grant_type}'.", now)
    client_id = form.get("client_id", "")
    if not client_id:
        return _missing("client_id", now)
    scope = form.get("scope", "")
    if not scope:
        return _missing("scope", now)
    clients: Mapping[str, Any] = record.get("clients", {})
    client_key = next((c for c in clients if c.lower() == client_id.lower()), None)
    if client_key is None:
        return _aad_error(400, "unauthorized_client", 700016,
                          f"Application with identifier '{client_id}' was not found in the directory '{key}'. This "
                          "can happen if the application has not been installed by the administrator of the tenant "
                          "or consented to by any user in the tenant. You may have sent your authentication "
                          "request to the wrong tenant.", now)
    if len(scope.split()) != 1 or not scope.endswith("/.default"):
        return _aad_error(400, "invalid_scope", 1002012,
                          f"The provided value for scope {scope} is not valid. Client credential flows must have a "
                          "scope value with /.default suffixed to the resource identifier (application ID URI).", now)
    registered = clients[client_key]
    if "client_assertion" in form or "client_assertion_type" in form:
        failure = _check_assertion(registered, client_id, key, form, now)
        if failure is not None:
            return failure
    elif "client_secret" in form:
        stored = registered.get("secretSha256")
        if not stored or not hmac.compare_digest(str(stored), sha256_hex(form["client_secret"])):
            return _aad_error(401, "invalid_client", 7000215,
                              "Invalid client secret provided. Ensure the secret being sent in the request is the "
                              f"client secret value, not the client secret ID, for a secret added to app "
                              f"'{client_id}'.", now)
    else:
        return _aad_error(401, "invalid_client", 7000218,
                          "The request body must contain the following parameter: 'client_assertion' or "
                          "'client_secret'.", now)
    token = secrets.token_urlsafe(48)
    tokens = record.setdefault("tokens", {})
    for digest in [d for d, t in tokens.items() if float(t.get("expires", 0)) < now - TOKEN_RETENTION]:
        del tokens[digest]
    tokens[sha256_hex(token)] = {
        "client": client_key,
        "expires": int(now) + TOKEN_LIFETIME,
        "roles": list(registered.get("roles", [])),
    }
    return Response(200, {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME, "ext_expires_in": TOKEN_LIFETIME,
                          "access_token": token}, dict(_NO_CACHE))


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_assertion(registered: Mapping[str, Any], client_id: str, tenant_id: str, form: Mapping[str, str],
                     now: float) -> Response | None:
    """None when the client assertion is good, else Entra ID's answer."""

    def bad(message: str, code: int = 700027) -> Response:
        return _aad_error(401, "invalid_client", code, message, now)

    assertion_type = form.get("client_assertion_type", "")
    if not assertion_type:
        return _missing("client_assertion_type", now)
    if assertion_type != JWT_BEARER:
        return bad(f"Client assertion type '{assertion_type}' is not supported; expected '{JWT_BEARER}'.")
    assertion = form.get("client_assertion", "")
    if not assertion:
        return _missing("client_assertion", now)
    parts = assertion.split(".")
    try:
        if len(parts) != 3:
            raise ValueError
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
        signature = _b64url(parts[2])
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise ValueError
    except (ValueError, binascii.Error):
        return bad("Client assertion failed signature validation. [Reason - The client assertion is not a well "
                   "formed JWT (JWS Compact Serialization).]")
    if header.get("alg") != "RS256":
        return bad(f"Client assertion failed signature validation. [Reason - The algorithm {header.get('alg')!r} "
                   "is not supported; expected RS256.]")
    used = header.get("x5t#S256") or header.get("x5t")
    certificate = registered.get("certificate")
    if not isinstance(certificate, str) or not certificate:
        return bad("The certificate with identifier used to sign the client assertion is not registered on "
                   f"application. [Reason - The key was not found., Thumbprint of key used by client: '{used}']")
    der = certs.from_b64(certificate)
    expected = {"x5t": certs.x5t(der),
                "x5t#S256": base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")}
    presented = {name: header[name] for name in expected if name in header}
    if not presented or any(expected[name] != value for name, value in presented.items()):
        return bad("The certificate with identifier used to sign the client assertion is not registered on "
                   f"application. [Reason - The key was not found., Thumbprint of key used by client: '{used}']")
    public_key = x509.load_der_x509_certificate(der).public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        return bad("Client assertion failed signature validation. [Reason - The registered key is not RSA.]")
    try:
        public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, UnicodeEncodeError):
        return bad("Client assertion contains an invalid signature. [Reason - The provided signature value did not "
                   f"match the expected signature value., Thumbprint of key used by client: '{used}']")
    for claim in ("aud", "iss", "sub", "jti", "nbf", "exp"):
        if claim not in claims:
            return bad(f"Client assertion is missing the required claim '{claim}'.")
    audience = claims["aud"]
    suffix = f"/{tenant_id}/oauth2/v2.0/token".lower()
    if not isinstance(audience, str) or not audience.lower().rstrip("/").endswith(suffix):
        return bad(f"Client assertion audience claim does not match the token endpoint. Audience: '{audience}'.")
    if claims["iss"] != client_id or claims["sub"] != client_id:
        return bad("Client assertion application identifier doesn't match 'client_id' parameter. Review the "
                   "documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                   700021)
    nbf, exp = claims["nbf"], claims["exp"]
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in (nbf, exp)):
        return bad("Client assertion claims 'nbf' and 'exp' must be numbers (seconds since the epoch).")
    if nbf > now + CLOCK_SKEW or exp <= now:
        return bad(f"Client assertion is not within its valid time range. Current time: {_stamp(now)}, assertion "
                   f"valid from {_stamp(nbf)}, expiry time of assertion {_stamp(exp)}. Review the documentation "
                   "at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .", 700024)
    return None


def _stamp(epoch: float) -> str:
    try:
        return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    except (OverflowError, OSError, ValueError):
        return str(epoch)


# --- Graph --------------------------------------------------------------------------------------

_BY_APP_ID = re.compile(r"^/servicePrincipals\(appId='([^']*)'\)/?$", re.IGNORECASE)
_BY_ID = re.compile(r"^/servicePrincipals/([^/()]+)/?$", re.IGNORECASE)
_NO_BODY = object()


class _Failed(Exception):
    """A Graph error found deep in validation, carried out as its response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def graph_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """Graph's error body: `{"error": {"code", "message", "innerError": {...}}}`."""
    request_id = str(uuid.uuid4())
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    body = {"error": {"code": code, "message": message,
                      "innerError": {"date": date, "request-id": request_id, "client-request-id": request_id}}}
    return Response(status, body, dict(headers or {}))


def _unauthorized(message: str) -> Response:
    return graph_error(401, "InvalidAuthenticationToken", message, {
        "WWW-Authenticate": f'Bearer realm="", authorization_uri="https://{TOKEN_HOST}/common/oauth2/authorize", '
                            'client_id="00000003-0000-0000-c000-000000000000"',
    })


def _authenticate(state: Mapping[str, Any], authorization: str | None,
                  now: float) -> tuple[dict[str, Any] | None, Mapping[str, Any] | None, Response | None]:
    """(tenant record or None, token record or None, error or None) for an Authorization header."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if not authorization or not authorization.strip() or scheme.lower() != "bearer" or not token:
        return None, None, _unauthorized("Access token is empty.")
    digest = sha256_hex(token)
    for record in (state.get("tenants") or {}).values():
        grant = record.get("tokens", {}).get(digest)
        if grant is not None:
            if float(grant.get("expires", 0)) <= now:
                return record, grant, _unauthorized("Access token has expired or is not yet valid.")
            return record, grant, None
    return None, None, _unauthorized("Invalid JWT token. The token is malformed or was not issued by this "
                                     "identity provider.")


def _take_fault(record: dict[str, Any], method: str, target: str, *, inner: bool) -> dict[str, Any] | None:
    faults: list[dict[str, Any]] = record.get("faults", [])
    for index, fault in enumerate(faults):
        if bool(fault.get("inner")) != inner:
            continue
        if fault.get("method") and str(fault["method"]).upper() != method.upper():
            continue
        if fault.get("path") and str(fault["path"]).lower() not in target.lower():
            continue
        taken = copy.deepcopy(fault)
        fault["times"] = int(fault.get("times", 1)) - 1
        if fault["times"] <= 0:
            del faults[index]
        return taken
    return None


def _fault_response(fault: Mapping[str, Any]) -> Response:
    retry_after = fault.get("retryAfter")
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    later = f" Retry after {retry_after} seconds." if retry_after is not None else ""
    if int(fault.get("status", 429)) == 503:
        return graph_error(503, "serviceNotAvailable", "The service is temporarily unavailable." + later, headers)
    return graph_error(429, "TooManyRequests", "Too many requests." + later, headers)


def _graph_route(store: LabStore, method: str, rest: str, query: str, headers: Mapping[str, str], body: bytes,
                 base: str, now: float) -> Response:
    version, _, resource = rest.lstrip("/").partition("/")
    relative = "/" + resource
    target = relative + (f"?{query}" if query else "")
    with store.edit() as state:
        record, grant, failure = _authenticate(state, headers.get("authorization"), now)
        if record is not None:
            record["roundTrips"] = int(record.get("roundTrips", 0)) + 1
        if failure is not None:
            response = failure
        else:
            assert record is not None and grant is not None
            response = _outer(record, list(grant.get("roles", [])), method, version, relative, target, query,
                              headers, body, base)
    response.headers.setdefault("request-id", str(uuid.uuid4()))
    if headers.get("client-request-id"):
        response.headers.setdefault("client-request-id", headers["client-request-id"])
    return response


def _outer(record: dict[str, Any], roles: list[str], method: str, version: str, relative: str, target: str,
           query: str, headers: Mapping[str, str], body: bytes, base: str) -> Response:
    fault = _take_fault(record, method, target, inner=False)
    if fault is not None:
        return _fault_response(fault)
    if version != GRAPH_VERSION:
        return graph_error(400, "BadRequest", f"Invalid version: {version}")
    if relative.lower() == "/$batch":
        if method != "POST":
            return graph_error(405, "Request_BadRequest", f"The HTTP method '{method}' is not allowed for $batch.")
        return _batch(record, roles, body, base)
    parsed: Any = _NO_BODY
    if body.strip():
        try:
            parsed = json.loads(body)
        except ValueError:
            return graph_error(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type "
                                                  "header is set and payload is of valid JSON format.")
    return execute(record, roles, method, relative, parse_qs(query, keep_blank_values=True), parsed, base)


def execute(record: dict[str, Any], roles: Sequence[str], method: str, path: str,
            query: Mapping[str, list[str]], body: Any, base: str) -> Response:
    """One Graph request (outside or inside a batch) against a tenant record, already authenticated."""
    if graph_apps.routes(path):  # applications, service principal creation, app role assignments
        answer: Response = graph_apps.execute(record, roles, method, path, query, body, base)
        return answer
    by_app_id, by_id = _BY_APP_ID.match(path), _BY_ID.match(path)
    if by_app_id is None and by_id is None:
        segment = path.strip("/").split("/")[0].split("(")[0] or path
        return graph_error(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
    method = method.upper()
    if method not in ("GET", "PATCH", "DELETE"):
        return graph_error(405, "Request_BadRequest",
                           f"The HTTP method '{method}' is not supported by the lab for servicePrincipals.")
    needed = READ_ROLES if method == "GET" else WRITE_ROLES
    if not needed.intersection(roles):
        return graph_error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
    try:
        selected = _select(query) if method == "GET" else None
        if by_app_id is not None:
            wanted, sp = by_app_id.group(1), find_service_principal(record, by_app_id.group(1))
        else:
            assert by_id is not None
            wanted, sp = by_id.group(1), find_service_principal(record, by_id.group(1), by="id")
        if sp is None:
            return graph_error(404, "Request_ResourceNotFound",
                               f"Resource '{wanted}' does not exist or one of its queried reference-property objects "
                               "are not present.")
        if method == "GET":
            return Response(200, _view(sp, selected, base), content_type=ODATA_TYPE)
        if method == "DELETE":
            deleted: Response = graph_apps.delete_service_principal(record, sp)
            return deleted
        _patch(record, sp, body)
        return Response(204)
    except _Failed as failed:
        return failed.response


def _select(query: Mapping[str, list[str]]) -> list[str] | None:
    selected: list[str] | None = None
    canonical = {p.lower(): p for p in SERVICE_PRINCIPAL_PROPERTIES}
    for option, values in query.items():
        if not option.startswith("$"):
            continue
        if option.lower() != "$select":
            raise _Failed(graph_error(400, "Request_BadRequest",
                                      f"Query option '{option}' is not supported by the lab."))
        selected = selected or []
        for value in values:
            for name in (n.strip() for n in value.split(",")):
                if not name:
                    continue
                prop = canonical.get(name.lower())
                if prop is None:
                    raise _Failed(graph_error(400, "Request_BadRequest", f"Could not find a property named '{name}' "
                                                                         "on type 'microsoft.graph.servicePrincipal'."))
                if prop not in selected:
                    selected.append(prop)
    return selected


def _view(sp: Mapping[str, Any], selected: list[str] | None, base: str) -> dict[str, Any]:
    shape = f"servicePrincipals({','.join(selected)})" if selected else "servicePrincipals"
    view: dict[str, Any] = {"@odata.context": f"{base}/{GRAPH_VERSION}/$metadata#{shape}/$entity"}
    # `key`: "Returned only on $select for a single object ... otherwise, it is always null"
    # (api-reference/v1.0/resources/keycredential.md); the lab only serves single objects.
    with_key = selected is not None and "keyCredentials" in selected
    for prop in selected or SERVICE_PRINCIPAL_PROPERTIES:
        value = copy.deepcopy(sp.get(prop, [] if prop in COLLECTIONS else None))
        if prop == "keyCredentials":
            value = [{name: (k.get(name) if name != "key" or with_key else None) for name in KEY_CREDENTIAL_PROPERTIES}
                     for k in value]
        view[prop] = value
    return view


def _bad_value(prop: str, resource: str = "ServicePrincipal") -> _Failed:
    return _Failed(graph_error(400, "Request_BadRequest",
                               f"Invalid value specified for property '{prop}' of resource '{resource}'."))


def _patch(record: Mapping[str, Any], sp: dict[str, Any], body: Any) -> None:
    if body is _NO_BODY or not isinstance(body, dict):
        raise _Failed(graph_error(400, "BadRequest", "Empty Payload. JSON content expected."
                                  if body is _NO_BODY else "The request payload must be a JSON object."))
    known = {p.lower(): p for p in SERVICE_PRINCIPAL_PROPERTIES}
    changes: dict[str, Any] = {}
    for name, value in body.items():
        if name.startswith("@odata."):
            continue
        prop = known.get(name.lower())
        if prop is None:
            raise _Failed(graph_error(400, "Request_BadRequest", f"Invalid property '{name}'."))
        if prop not in PATCHABLE:
            raise _Failed(graph_error(400, "Request_BadRequest",
                                      f"Property '{name}' is read-only or not emulated by the lab."))
        if prop == "accountEnabled":
            if not isinstance(value, bool):
                raise _Failed(graph_error(400, "BadRequest",
                                          f"Cannot convert the literal '{value}' to the expected type 'Edm.Boolean'."))
            changes[prop] = value
        elif prop == "servicePrincipalNames":
            if not isinstance(value, list) or not all(isinstance(n, str) and n.strip() for n in value):
                raise _bad_value(prop)
            _check_names_unique(record, sp, value)
            changes[prop] = list(value)
        else:
            changes[prop] = _key_credentials(sp.get("keyCredentials", []), value)
    sp.update(changes)


def _check_names_unique(record: Mapping[str, Any], sp: Mapping[str, Any], names: Sequence[str]) -> None:
    wanted = {n.lower() for n in names}
    for other in record.get("servicePrincipals", []):
        if other is not sp and wanted.intersection(n.lower() for n in other.get("servicePrincipalNames", [])):
            raise _Failed(graph_error(400, "Request_BadRequest", "Another object with the same value for property "
                                                                 "servicePrincipalNames already exists."))


def _key_credentials(existing: Sequence[Mapping[str, Any]], value: Any) -> list[dict[str, Any]]:
    """The collection a PATCH stores (see the module docstring for the rules and their sources)."""
    if not isinstance(value, list):
        raise _bad_value("keyCredentials")
    known = {p.lower(): p for p in KEY_CREDENTIAL_PROPERTIES}
    stored = {str(k.get("keyId", "")).lower(): k for k in existing if k.get("keyId")}
    result: list[dict[str, Any]] = []
    for raw in value:
        if not isinstance(raw, dict):
            raise _bad_value("keyCredentials")
        given: dict[str, Any] = {}
        for name, item in raw.items():
            if name.startswith("@odata."):
                continue
            prop = known.get(name.lower())
            if prop is None:
                raise _Failed(graph_error(400, "Request_BadRequest", f"Invalid property '{name}'."))
            given[prop] = item
        for prop in ("displayName", "startDateTime", "endDateTime", "customKeyIdentifier", "keyId"):
            if given.get(prop) is not None and not isinstance(given[prop], str):
                raise _bad_value(prop, "KeyCredential")
        credential = _one_key_credential(given, stored, existing, {k["keyId"] for k in result})
        if any(k["keyId"] == credential["keyId"] for k in result):
            raise _Failed(graph_error(400, "Request_BadRequest",
                                      f"Key credential keyId '{credential['keyId']}' is listed twice."))
        result.append(credential)
    return result


def _one_key_credential(given: Mapping[str, Any], stored: Mapping[str, Mapping[str, Any]],
                        existing: Sequence[Mapping[str, Any]], taken: set[str]) -> dict[str, Any]:
    key_id = given.get("keyId")
    if key_id is not None:
        try:
            key_id = str(uuid.UUID(key_id))
        except ValueError:
            raise _bad_value("keyId", "KeyCredential") from None
    kept = stored.get(key_id.lower()) if key_id else None
    key = given.get("key")
    for prop, expected in (("type", ASYMMETRIC_X509), ("usage", VERIFY)):
        if not isinstance(given.get(prop), str) or given[prop].lower() != expected.lower():
            raise _bad_value(prop, "KeyCredential")
    if kept is not None and key is None:
        return copy.deepcopy(dict(kept))  # retained by keyId, exactly as stored
    try:
        if not isinstance(key, str) or not key.strip():
            raise ValueError
        der = certs.to_der(certs.from_b64(key))
    except ValueError:
        raise _Failed(graph_error(400, "InvalidKeyValue", "Key credential's key is missing or is not a valid "
                                                          "base64-encoded X.509 certificate.")) from None
    if kept is not None and key_thumbprint(kept) != certs.thumbprint(der):
        raise _Failed(graph_error(400, "Request_BadRequest",
                                  f"Update to existing credential with KeyId '{key_id}' is not allowed."))
    try:
        return key_credential(der, given, key_id or _reuse_key_id(existing, der, taken))
    except ValueError as exc:
        raise _Failed(graph_error(400, "Request_BadRequest", f"Invalid keyCredential: {exc}")) from None


def _reuse_key_id(existing: Sequence[Mapping[str, Any]], der: bytes, taken: set[str]) -> str | None:
    """The keyId of the same certificate already stored (unless already given out in this PATCH)."""
    for credential in existing:
        try:
            same = certs.to_der(certs.from_b64(str(credential.get("key") or ""))) == der
        except ValueError:
            same = False
        if same and credential.get("keyId") and credential["keyId"] not in taken:
            return str(credential["keyId"])
    return None


# --- $batch -------------------------------------------------------------------------------------


def _batch(record: dict[str, Any], roles: Sequence[str], body: bytes, base: str) -> Response:
    try:
        order = _batch_order(_batch_requests(body))
    except _Failed as failed:
        return failed.response
    statuses: dict[str, int] = {}
    responses: list[dict[str, Any]] = []
    for request in order:
        rid = request["id"]
        failed_deps = [d for d in request["dependsOn"] if statuses[d] >= 400]
        if failed_deps:
            answer = graph_error(424, "FailedDependency",
                                 f"The request depends on request(s) {', '.join(failed_deps)}, which failed.")
        else:
            split = urlsplit(request["url"])
            path = "/" + unquote(split.path).lstrip("/")
            target = path + (f"?{split.query}" if split.query else "")
            fault = _take_fault(record, request["method"], target, inner=True)
            if fault is not None:
                answer = _fault_response(fault)
            else:
                answer = execute(record, roles, request["method"], path,
                                 parse_qs(split.query, keep_blank_values=True), request["body"], base)
        statuses[rid] = answer.status
        headers = dict(answer.headers)
        if answer.body is not None:
            headers["Content-Type"] = answer.content_type.replace("; ", ";")
        responses.append({"id": rid, "status": answer.status, "headers": headers, "body": answer.body})
    return Response(200, {"responses": responses}, content_type=ODATA_TYPE)


def _batch_requests(body: bytes) -> list[dict[str, Any]]:
    def invalid(message: str) -> _Failed:
        return _Failed(graph_error(400, "BadRequest", message))

    try:
        payload = json.loads(body) if body.strip() else None
    except ValueError:
        payload = None
    raw = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(raw, list) or not raw:
        raise invalid("Invalid batch payload format.")
    if len(raw) > MAX_BATCH:
        raise invalid(f"Invalid batch payload format. The number of requests in the batch ({len(raw)}) exceeds "
                      f"the limit of {MAX_BATCH}.")
    requests: list[dict[str, Any]] = []
    ids: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise invalid("Invalid batch payload format.")
        rid, method, url = item.get("id"), item.get("method"), item.get("url")
        if not isinstance(rid, str) or not rid or not isinstance(method, str) or not isinstance(url, str) or not url:
            raise invalid("Invalid batch payload format. Every request needs a string id, method and url.")
        if rid in ids:
            raise invalid(f"Invalid batch payload format. The id '{rid}' is used by more than one request.")
        ids.add(rid)
        split = urlsplit(url)
        if split.scheme or split.netloc:
            raise invalid(f"Invalid batch payload format. The url of request '{rid}' must be relative, e.g. "
                          "/servicePrincipals(appId='...').")
        headers = item.get("headers") or {}
        depends = item.get("dependsOn") or []
        if not isinstance(headers, dict) or not isinstance(depends, list) or not all(
                isinstance(d, str) for d in depends):
            raise invalid(f"Invalid batch payload format in request '{rid}'.")
        has_body = "body" in item and item["body"] is not None
        writes = method.upper() in ("POST", "PATCH", "PUT")
        has_type = any(str(k).lower() == "content-type" for k in headers)
        if (has_body and not has_type) or (writes and not has_body):
            raise invalid(f"Write request id : {rid} does not contain Content-Type header or body.")
        requests.append({"id": rid, "method": method.upper(), "url": url, "dependsOn": list(depends),
                         "body": item["body"] if has_body else _NO_BODY})
    for request in requests:
        for dependency in request["dependsOn"]:
            if dependency not in ids or dependency == request["id"]:
                raise invalid(f"Invalid batch payload format. Request '{request['id']}' depends on "
                              f"'{dependency}', which is not another request of the batch.")
    return requests


def _batch_order(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """List order, each request after its dependencies (raises _Failed on a cycle)."""
    order: list[dict[str, Any]] = []
    done: set[str] = set()
    pending = list(requests)
    while pending:
        ready = next((r for r in pending if all(d in done for d in r["dependsOn"])), None)
        if ready is None:
            raise _Failed(graph_error(400, "BadRequest", "Invalid batch payload format. The dependsOn of requests "
                                                         f"{', '.join(r['id'] for r in pending)} form a cycle."))
        pending.remove(ready)
        done.add(ready["id"])
        order.append(ready)
    return order
