"""The lab's Microsoft Graph and Entra ID token endpoint, over real loopback HTTP; their admin ops and CLI."""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from reconciler.lab import admin, certs, estate
from reconciler.lab.cli import add_lab_parser
from reconciler.lab.server import LabServer
from reconciler.lab.state import LabStore

TENANT = estate.LAB_TENANT_ID
SKYPE = estate.SKYPE_ID
EXCHANGE = estate.EXCHANGE_ID
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
CERT_CLIENT = "7a2e3c4d-5e6f-4a70-8b1c-2d3e4f5a6b7c"


# --- helpers ------------------------------------------------------------------------------------


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="reconcile")
    add_lab_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lab", "graph", *argv])
    code: int = args.func(args)
    return code


def make_pair(common_name: str) -> tuple[rsa.RSAPrivateKey, bytes]:
    """A private key and its self-signed certificate (DER): what a client app signs assertions with."""
    now = datetime.datetime.now(datetime.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[rsa.RSAPrivateKey, bytes]]:
    return {"client": make_pair("reconciler-client"), "other": make_pair("someone-else")}


@pytest.fixture(scope="module")
def cert_a() -> bytes:
    return certs.make_certificate("atl-cs-001.litwareinc.com")


@pytest.fixture(scope="module")
def cert_b() -> bytes:
    return certs.make_certificate("fab-cs-001.fabrikam.com")


@pytest.fixture(scope="module")
def cert_c() -> bytes:
    return certs.make_certificate("rotated.litwareinc.com")


def token_url(server: LabServer, tenant: str = TENANT) -> str:
    return f"{server.base_url}/login.microsoftonline.com/{tenant}/oauth2/v2.0/token"


def graph(server: LabServer, path: str) -> str:
    return f"{server.base_url}{estate.LAB_GRAPH_PATH}{path}"


def sp_path(app_id: str) -> str:
    return f"/servicePrincipals(appId='{app_id}')"


def request_token(server: LabServer, **form: str) -> httpx.Response:
    data = {"grant_type": "client_credentials", "scope": GRAPH_SCOPE, **form}
    return httpx.post(token_url(server), data={k: v for k, v in data.items() if v is not None})


def get_token(server: LabServer, client_id: str = estate.LAB_CLIENT_ID,
              secret: str = estate.LAB_CLIENT_SECRET) -> str:
    response = request_token(server, client_id=client_id, client_secret=secret)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_assertion(key: rsa.RSAPrivateKey, der: bytes, aud: str, *, client_id: str = CERT_CLIENT,
                   header: dict[str, Any] | None = None, **claims: Any) -> str:
    now = int(time.time())
    head = {"alg": "RS256", "typ": "JWT", "x5t": certs.x5t(der),
            "x5t#S256": b64url(hashlib.sha256(der).digest()), **(header or {})}
    body = {"aud": aud, "iss": client_id, "sub": client_id, "jti": str(uuid.uuid4()), "nbf": now, "iat": now,
            "exp": now + 600, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(body).encode())}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def assertion_token(server: LabServer, assertion: str, client_id: str = CERT_CLIENT) -> httpx.Response:
    return request_token(server, client_id=client_id, client_assertion=assertion,
                         client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer")


def tenant_state(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = LabStore(path).read()["tenants"][TENANT]
    return record


def stored_sp(path: Path, app_id: str) -> dict[str, Any]:
    return next(sp for sp in tenant_state(path)["servicePrincipals"] if sp["appId"] == app_id)


def key_entry(der: bytes, **extra: Any) -> dict[str, Any]:
    return {"key": certs.b64(der), "type": "AsymmetricX509Cert", "usage": "Verify", **extra}


def patch(server: LabServer, token: str, app_id: str, body: Any) -> httpx.Response:
    return httpx.patch(graph(server, sp_path(app_id)), json=body, headers=bearer(token))


def select(server: LabServer, token: str, app_id: str, fields: str) -> httpx.Response:
    return httpx.get(graph(server, sp_path(app_id)), params={"$select": fields}, headers=bearer(token))


def batch(server: LabServer, token: str, requests: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(graph(server, "/$batch"), json={"requests": requests}, headers=bearer(token))


def by_id(response: httpx.Response) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in response.json()["responses"]}


def register_cert_client(lab_state: Path, der: bytes, roles: list[str] | None = None) -> None:
    admin.register_graph_client(lab_state, CERT_CLIENT, certificate=der, roles=roles)


# --- default estate -----------------------------------------------------------------------------


def test_default_tenant(lab_state: Path) -> None:
    state = LabStore(lab_state).read()
    assert set(state["tenants"]) == {TENANT}
    record = state["tenants"][TENANT]
    sps = {sp["appId"]: sp for sp in record["servicePrincipals"]}
    assert set(sps) == {SKYPE, EXCHANGE}
    assert sps[SKYPE]["displayName"] == "Skype for Business Online" and sps[SKYPE]["accountEnabled"] is True
    assert sps[EXCHANGE]["accountEnabled"] is False
    assert all(sp["keyCredentials"] == [] for sp in sps.values())
    assert SKYPE in sps[SKYPE]["servicePrincipalNames"]
    assert not any("litwareinc" in n or "fabrikam" in n or "contoso" in n for n in sps[SKYPE]["servicePrincipalNames"])
    clients = record["clients"]
    assert clients[estate.LAB_CLIENT_ID]["roles"] == ["Application.ReadWrite.All", "AppRoleAssignment.ReadWrite.All"]
    assert clients[estate.LAB_READONLY_CLIENT_ID]["roles"] == ["Application.Read.All"]
    expected = hashlib.sha256(estate.LAB_CLIENT_SECRET.encode()).hexdigest()
    assert clients[estate.LAB_CLIENT_ID]["secretSha256"] == expected
    text = lab_state.read_text()
    assert estate.LAB_CLIENT_SECRET not in text and estate.LAB_READONLY_SECRET not in text
    assert record["tokens"] == {} and record["faults"] == [] and record["roundTrips"] == 0


# --- token endpoint -----------------------------------------------------------------------------


def test_token_with_secret(lab_server: LabServer, lab_state: Path) -> None:
    before = time.time()
    response = request_token(lab_server, client_id=estate.LAB_CLIENT_ID, client_secret=estate.LAB_CLIENT_SECRET)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599
    token = body["access_token"]
    assert len(token) >= 32 and token.count(".") != 2  # opaque, not a JWT
    tokens = tenant_state(lab_state)["tokens"]
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert set(tokens) == {digest}
    assert tokens[digest]["client"] == estate.LAB_CLIENT_ID
    assert tokens[digest]["roles"] == ["Application.ReadWrite.All", "AppRoleAssignment.ReadWrite.All"]
    assert before + 3590 <= tokens[digest]["expires"] <= time.time() + 3600
    assert token not in lab_state.read_text()


def test_token_bad_secret(lab_server: LabServer) -> None:
    response = request_token(lab_server, client_id=estate.LAB_CLIENT_ID, client_secret="wrong")
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client"
    assert body["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert body["error_codes"] == [7000215]


def test_token_unknown_client(lab_server: LabServer) -> None:
    response = request_token(lab_server, client_id=str(uuid.uuid4()), client_secret="x")
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    assert response.json()["error_description"].startswith("AADSTS700016: Application with identifier")


def test_token_unknown_tenant(lab_server: LabServer) -> None:
    other = str(uuid.uuid4())
    response = httpx.post(token_url(lab_server, other), data={
        "grant_type": "client_credentials", "client_id": estate.LAB_CLIENT_ID,
        "client_secret": estate.LAB_CLIENT_SECRET, "scope": GRAPH_SCOPE})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["error_description"].startswith(f"AADSTS90002: Tenant '{other}' not found.")


@pytest.mark.parametrize("form,status,code", [
    ({"grant_type": ""}, 400, "AADSTS900144"),
    ({"grant_type": "password"}, 400, "AADSTS70003"),
    ({"client_id": ""}, 400, "AADSTS900144"),
    ({"scope": ""}, 400, "AADSTS900144"),
    ({"scope": "https://graph.microsoft.com/Application.ReadWrite.All"}, 400, "AADSTS1002012"),
    ({"client_secret": None}, 401, "AADSTS7000218"),
])
def test_token_request_errors(lab_server: LabServer, form: dict[str, Any], status: int, code: str) -> None:
    data = {"grant_type": "client_credentials", "client_id": estate.LAB_CLIENT_ID,
            "client_secret": estate.LAB_CLIENT_SECRET, "scope": GRAPH_SCOPE, **form}
    response = httpx.post(token_url(lab_server), data={k: v for k, v in data.items() if v is not None})
    assert response.status_code == status
    assert response.json()["error_description"].startswith(code + ":")


def test_token_endpoint_takes_only_post(lab_server: LabServer) -> None:
    response = httpx.get(token_url(lab_server))
    assert response.status_code == 400
    assert response.json()["error_description"].startswith("AADSTS900561:")


def test_token_scope_may_be_the_lab_graph_url(lab_server: LabServer) -> None:
    response = request_token(lab_server, client_id=estate.LAB_CLIENT_ID, client_secret=estate.LAB_CLIENT_SECRET,
                             scope=f"{lab_server.base_url}/graph.microsoft.com/.default")
    assert response.status_code == 200


def test_token_with_certificate_assertion(lab_server: LabServer, lab_state: Path,
                                          pairs: dict[str, tuple[rsa.RSAPrivateKey, bytes]]) -> None:
    key, der = pairs["client"]
    register_cert_client(lab_state, der)
    response = assertion_token(lab_server, make_assertion(key, der, token_url(lab_server)))
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(token)).status_code == 200
    # the aud of the real service is accepted too (the client builds it from its authority)
    real_aud = f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    assert assertion_token(lab_server, make_assertion(key, der, real_aud)).status_code == 200


def test_assertion_with_x5t_only_and_nbf_within_skew(lab_server: LabServer, lab_state: Path,
                                       pairs: dict[str, tuple[rsa.RSAPrivateKey, bytes]]) -> None:
    key, der = pairs["client"]
    register_cert_client(lab_state, der)
    now = int(time.time())
    head = {"alg": "RS256", "typ": "JWT", "x5t": certs.x5t(der)}
    body = {"aud": token_url(lab_server), "iss": CERT_CLIENT, "sub": CERT_CLIENT, "jti": "1", "nbf": now + 30,
            "exp": now + 600}
    signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(body).encode())}"
    jwt = f"{signing_input}.{b64url(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))}"
    assert assertion_token(lab_server, jwt).status_code == 200


def test_assertion_bad_signature(lab_server: LabServer, lab_state: Path,
                                 pairs: dict[str, tuple[rsa.RSAPrivateKey, bytes]]) -> None:
    _, der = pairs["client"]
    other_key, _ = pairs["other"]
    register_cert_client(lab_state, der)
    response = assertion_token(lab_server, make_assertion(other_key, der, token_url(lab_server)))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.json()["error_description"].startswith(
        "AADSTS700027: Client assertion contains an invalid signature")


def test_assertion_tampered_claims(lab_server: LabServer, lab_state: Path,
                                   pairs: dict[str, tuple[rsa.RSAPrivateKey, bytes]]) -> None:
    key, der = pairs["client"]
    register_cert_client(lab_state, der)
    head, _, sig = make_assertion(key, der, token_url(lab_server)).split(".")
    forged = b64url(json.dumps({"aud": token_url(lab_server), "iss": CERT_CLIENT, "sub": CERT_CLIENT, "jti": "x",
                                "nbf": 0, "exp": 2**40}).encode())
    response = assertion_token(lab_server, f"{head}.{forged}.{sig}")
    assert (response.status_code, response.json()["error_codes"]) == (401, [700027])


def test_assertion_expired(lab_server: LabServer, lab_state: Path,
                           pairs: dict[str, tuple[rsa.RSAPrivateKey, bytes]]) -> None:
    key, der = pairs["client"]
    register_cert_client(lab_state, der)
    now = int(time.time())
    response = assertion_token(lab_server, make_assertion(key, der, token_url(lab_server), nbf=now - 900,
                                                          exp=now - 300))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.json()["error_description"].startswith(
        "AADSTS700024: Client assertion is not within its valid time range.")


def test_assertion_not_yet_valid(lab_server: LabServer, lab_state: Path,
                                 pairs: dict[str, tuple[rsa.RSAPrivateKey, bytes]]) -> None:
    key, der = pairs["client"]
    register_cert_client(lab_state, der)
    now = int(time.time())
    response = assertion_token(lab_server, make_assertion(key, der, token_url(lab_server), nbf=now + 120,
                                                          exp=now + 600))
    assert response.json()["error_codes"] == [700024]


@pytest.mark.parametrize("change,code", [
    ({"aud": "https://login.microsoftonline.com/another-tenant/oauth2/v2.0/token"}, 700027),
    ({"iss": "00000000-0000-0000-0000-000000000000"}, 700021),
    ({"sub": "00000000-0000-0000-0000-000000000000"}, 700021),
    ({"jti": None}, 700027),
    ({"exp": None}, 700027),
])
def test_assertion_bad_claims(lab_server: LabServer, lab_state: Path,
                              pairs: dict[str, tuple[rsa.RSAPrivateKey, bytes]], change: dict[str, Any],
                              code: int) -> None:
    key, der = pairs["client"]
    register_cert_client(lab_state, der)
    claims = {"aud": token_url(lab_server), **change}
    response = assertion_token(lab_server, make_assertion(key, der, **claims))
    assert (response.status_code, response.json()["error_codes"]) == (401, [code])


def test_assertion_with_an_unregistered_certificate(lab_server: LabServer, lab_state: Path,
                                                    pairs: dict[str, tuple[rsa.RSAPrivateKey, bytes]]) -> None:
    key, der = pairs["client"]
    other_key, other_der = pairs["other"]
    register_cert_client(lab_state, der)
    response = assertion_token(lab_server, make_assertion(other_key, other_der, token_url(lab_server)))
    assert response.json()["error_codes"] == [700027]
    assert "not registered" in response.json()["error_description"]
    # a secret-only client cannot use an assertion at all
    response = assertion_token(lab_server, make_assertion(key, der, token_url(lab_server),
                                                          client_id=estate.LAB_CLIENT_ID), estate.LAB_CLIENT_ID)
    assert response.json()["error_codes"] == [700027]
    # nor can a certificate client use a secret
    response = request_token(lab_server, client_id=CERT_CLIENT, client_secret="anything")
    assert response.json()["error_codes"] == [7000215]


def test_assertion_malformed(lab_server: LabServer, lab_state: Path,
                             pairs: dict[str, tuple[rsa.RSAPrivateKey, bytes]]) -> None:
    register_cert_client(lab_state, pairs["client"][1])
    assert assertion_token(lab_server, "not-a-jwt").json()["error_codes"] == [700027]
    response = request_token(lab_server, client_id=CERT_CLIENT, client_assertion="a.b.c",
                             client_assertion_type="urn:other")
    assert response.json()["error_codes"] == [700027]


# --- Graph GET ----------------------------------------------------------------------------------


def test_get_without_select_has_null_keys(lab_server: LabServer, lab_state: Path, cert_a: bytes) -> None:
    admin.graph_add_key(lab_state, SKYPE, cert_a)
    response = httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(get_token(lab_server)))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["@odata.context"].endswith("/graph.microsoft.com/v1.0/$metadata#servicePrincipals/$entity")
    assert body["appId"] == SKYPE and body["displayName"] == "Skype for Business Online"
    assert body["accountEnabled"] is True and SKYPE in body["servicePrincipalNames"]
    assert body["id"] == stored_sp(lab_state, SKYPE)["id"]
    [key] = body["keyCredentials"]
    assert key["key"] is None
    assert key["keyId"] and key["type"] == "AsymmetricX509Cert" and key["usage"] == "Verify"


def test_get_with_select_has_keys(lab_server: LabServer, lab_state: Path, cert_a: bytes) -> None:
    admin.graph_add_key(lab_state, SKYPE, cert_a)
    response = select(lab_server, get_token(lab_server), SKYPE, "id,appId,AccountEnabled,keyCredentials")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"@odata.context", "id", "appId", "accountEnabled", "keyCredentials"}
    assert body["@odata.context"].endswith(
        "$metadata#servicePrincipals(id,appId,accountEnabled,keyCredentials)/$entity")
    [key] = body["keyCredentials"]
    assert certs.from_b64(key["key"]) == cert_a
    # "When not provided in the payload, defaults to the thumbprint of the certificate" (40 characters)
    assert key["customKeyIdentifier"] == certs.thumbprint(cert_a) and len(key["customKeyIdentifier"]) == 40
    assert key["displayName"] == "CN=atl-cs-001.litwareinc.com"
    cert = x509.load_der_x509_certificate(cert_a)
    assert key["startDateTime"] == cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert key["endDateTime"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    # selecting other properties only: no keys at all
    assert set(select(lab_server, get_token(lab_server), SKYPE, "servicePrincipalNames").json()) == {
        "@odata.context", "servicePrincipalNames"}


def test_get_unknown_select_property(lab_server: LabServer) -> None:
    response = select(lab_server, get_token(lab_server), SKYPE, "id,secretThing")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "Request_BadRequest"
    assert "secretThing" in response.json()["error"]["message"]


def test_get_unknown_app_is_404(lab_server: LabServer) -> None:
    app_id = str(uuid.uuid4())
    response = httpx.get(graph(lab_server, sp_path(app_id)), headers=bearer(get_token(lab_server)))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "Request_ResourceNotFound"
    assert response.json()["error"]["message"] == (
        f"Resource '{app_id}' does not exist or one of its queried reference-property objects are not present.")


def test_get_by_object_id_and_unknown_segment(lab_server: LabServer, lab_state: Path) -> None:
    token = get_token(lab_server)
    object_id = stored_sp(lab_state, EXCHANGE)["id"]
    response = httpx.get(graph(lab_server, f"/servicePrincipals/{object_id}"), headers=bearer(token))
    assert (response.status_code, response.json()["appId"]) == (200, EXCHANGE)
    response = httpx.get(graph(lab_server, "/users"), headers=bearer(token))
    assert response.status_code == 400 and "users" in response.json()["error"]["message"]


# --- Graph PATCH --------------------------------------------------------------------------------


def test_patch_replaces_collections(lab_server: LabServer, lab_state: Path, cert_a: bytes, cert_b: bytes) -> None:
    token = get_token(lab_server)
    names = [SKYPE, f"{SKYPE}/lync.litwareinc.com"]
    response = patch(lab_server, token, SKYPE, {"servicePrincipalNames": names,
                                                "keyCredentials": [key_entry(cert_a), key_entry(cert_b)]})
    assert response.status_code == 204 and response.content == b""
    stored = stored_sp(lab_state, SKYPE)
    assert stored["servicePrincipalNames"] == names
    assert [certs.from_b64(k["key"]) for k in stored["keyCredentials"]] == [cert_a, cert_b]
    # a PATCH replaces the whole collection: cert_a, not re-sent, is deleted
    assert patch(lab_server, token, SKYPE, {"keyCredentials": [key_entry(cert_b)]}).status_code == 204
    assert [certs.from_b64(k["key"]) for k in stored_sp(lab_state, SKYPE)["keyCredentials"]] == [cert_b]
    assert stored_sp(lab_state, SKYPE)["servicePrincipalNames"] == names  # not sent: unchanged
    assert patch(lab_server, token, SKYPE, {"keyCredentials": [], "servicePrincipalNames": [SKYPE]}).status_code == 204
    assert stored_sp(lab_state, SKYPE)["keyCredentials"] == []
    assert stored_sp(lab_state, SKYPE)["servicePrincipalNames"] == [SKYPE]


def test_patch_account_enabled(lab_server: LabServer, lab_state: Path) -> None:
    token = get_token(lab_server)
    assert patch(lab_server, token, EXCHANGE, {"accountEnabled": True}).status_code == 204
    assert select(lab_server, token, EXCHANGE, "accountEnabled").json()["accountEnabled"] is True
    response = patch(lab_server, token, EXCHANGE, {"accountEnabled": "yes"})
    assert response.status_code == 400
    assert stored_sp(lab_state, EXCHANGE)["accountEnabled"] is True


def test_patch_keeps_key_id_of_a_resent_key(lab_server: LabServer, lab_state: Path, cert_a: bytes,
                                            cert_b: bytes, cert_c: bytes) -> None:
    token = get_token(lab_server)
    response = patch(lab_server, token, SKYPE, {"keyCredentials": [key_entry(cert_a), key_entry(cert_b)]})
    assert response.status_code == 204
    first = {certs.from_b64(k["key"]): k["keyId"] for k in stored_sp(lab_state, SKYPE)["keyCredentials"]}
    assert len(set(first.values())) == 2 and all(uuid.UUID(v).version == 4 for v in first.values())
    response = patch(lab_server, token, SKYPE, {"keyCredentials": [key_entry(cert_c), key_entry(cert_a)]})
    assert response.status_code == 204
    second = {certs.from_b64(k["key"]): k["keyId"] for k in stored_sp(lab_state, SKYPE)["keyCredentials"]}
    assert second[cert_a] == first[cert_a]
    assert second[cert_c] not in first.values()
    assert cert_b not in second


def test_patch_keeps_given_key_fields(lab_server: LabServer, lab_state: Path, cert_a: bytes) -> None:
    token = get_token(lab_server)
    key_id = str(uuid.uuid4())
    given = key_entry(cert_a, keyId=key_id, displayName="Litware OAuth", startDateTime="2026-01-01T00:00:00Z",
                      endDateTime="2027-01-01T00:00:00+00:00", customKeyIdentifier="QUJD")
    assert patch(lab_server, token, SKYPE, {"keyCredentials": [given]}).status_code == 204
    [stored] = stored_sp(lab_state, SKYPE)["keyCredentials"]
    assert stored == {**given, "endDateTime": "2027-01-01T00:00:00Z"}


def test_patch_new_key_as_microsofts_script_sends_it(lab_server: LabServer, lab_state: Path, cert_a: bytes) -> None:
    """{displayName, keyId, type, usage, key} (CSS-Exchange Add-CertificateToAzureApplication.ps1): the keyId
    given is the key's identity; customKeyIdentifier and the dates are filled in."""
    key_id = str(uuid.uuid4())
    sent = {"displayName": "CN=atl-cs-001.litwareinc.com", "keyId": key_id, "type": "AsymmetricX509Cert",
            "usage": "Verify", "key": certs.b64(cert_a)}
    assert patch(lab_server, get_token(lab_server), SKYPE, {"keyCredentials": [sent]}).status_code == 204
    [stored] = stored_sp(lab_state, SKYPE)["keyCredentials"]
    cert = x509.load_der_x509_certificate(cert_a)
    assert stored == {**sent, "customKeyIdentifier": certs.thumbprint(cert_a),
                      "startDateTime": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "endDateTime": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")}


def test_patch_kept_key_re_sent_with_its_key_id(lab_server: LabServer, lab_state: Path, cert_a: bytes,
                                                cert_b: bytes, cert_c: bytes) -> None:
    """A stored key re-sent with its keyId keeps its identity: as read without $select (key null, as
    Add-CertificateToAzureApplication.ps1 re-sends what a list query gave), it stays exactly as stored."""
    token = get_token(lab_server)
    custom = key_entry(cert_a, keyId=str(uuid.uuid4()), displayName="Added by a script",
                       startDateTime="2026-02-01T00:00:00Z", endDateTime="2027-02-01T00:00:00Z",
                       customKeyIdentifier="QUJD")
    assert patch(lab_server, token, SKYPE, {"keyCredentials": [custom, key_entry(cert_b)]}).status_code == 204
    stored_a, stored_b = stored_sp(lab_state, SKYPE)["keyCredentials"]
    as_read = httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(token)).json()["keyCredentials"]
    assert [k["key"] for k in as_read] == [None, None] and [k["keyId"] for k in as_read] == [
        stored_a["keyId"], stored_b["keyId"]]
    new = {"displayName": "CN=rotated", "keyId": str(uuid.uuid4()), "type": "AsymmetricX509Cert", "usage": "Verify",
           "key": certs.b64(cert_c)}
    assert patch(lab_server, token, SKYPE, {"keyCredentials": [as_read[0], new]}).status_code == 204
    kept, added = stored_sp(lab_state, SKYPE)["keyCredentials"]
    assert kept == stored_a and added["keyId"] == new["keyId"]
    # the same certificate with its keyId: same identity, the fields given
    assert patch(lab_server, token, SKYPE, {"keyCredentials": [key_entry(cert_a, keyId=stored_a["keyId"])]}
                 ).status_code == 204
    [again] = stored_sp(lab_state, SKYPE)["keyCredentials"]
    assert again["keyId"] == stored_a["keyId"] and again["customKeyIdentifier"] == certs.thumbprint(cert_a)
    # another certificate under a stored keyId: refused, nothing changes
    before = stored_sp(lab_state, SKYPE)
    response = patch(lab_server, token, SKYPE, {"keyCredentials": [key_entry(cert_b, keyId=stored_a["keyId"])]})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f"Update to existing credential with KeyId '{stored_a['keyId']}' is not allowed.")
    assert stored_sp(lab_state, SKYPE) == before
    # a keyId the principal does not have, without a key: nothing to keep, nothing to add
    response = patch(lab_server, token, SKYPE, {"keyCredentials": [
        {"keyId": str(uuid.uuid4()), "key": None, "type": "AsymmetricX509Cert", "usage": "Verify"}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "InvalidKeyValue"


def test_patch_long_display_name_is_shortened(lab_server: LabServer, lab_state: Path, cert_a: bytes) -> None:
    name = "x" * 120
    assert patch(lab_server, get_token(lab_server), SKYPE,
                 {"keyCredentials": [key_entry(cert_a, displayName=name)]}).status_code == 204
    assert stored_sp(lab_state, SKYPE)["keyCredentials"][0]["displayName"] == name[:90]


@pytest.mark.parametrize("credential,code", [
    ({"key": base64.b64encode(b"not a certificate").decode(), "type": "AsymmetricX509Cert", "usage": "Verify"},
     "InvalidKeyValue"),
    ({"key": "%%% not base64", "type": "AsymmetricX509Cert", "usage": "Verify"}, "InvalidKeyValue"),
    ({"key": None, "type": "AsymmetricX509Cert", "usage": "Verify"}, "InvalidKeyValue"),
    ({"type": "AsymmetricX509Cert", "usage": "Verify"}, "InvalidKeyValue"),
])
def test_patch_invalid_key(lab_server: LabServer, lab_state: Path, cert_a: bytes, credential: dict[str, Any],
                           code: int) -> None:
    admin.graph_add_key(lab_state, SKYPE, cert_a)
    before = stored_sp(lab_state, SKYPE)
    response = patch(lab_server, get_token(lab_server), SKYPE,
                     {"accountEnabled": False, "keyCredentials": [key_entry(cert_a), credential]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert stored_sp(lab_state, SKYPE) == before  # all or nothing


@pytest.mark.parametrize("change", [{"type": "Symmetric"}, {"usage": "Sign"}, {"type": None},
                                    {"startDateTime": "yesterday"}, {"keyId": "not-a-guid"},
                                    {"startDateTime": "2027-01-01T00:00:00Z", "endDateTime": "2026-01-01T00:00:00Z"}])
def test_patch_invalid_key_fields(lab_server: LabServer, cert_a: bytes, change: dict[str, Any]) -> None:
    entry = {k: v for k, v in {**key_entry(cert_a), **change}.items() if v is not None}
    response = patch(lab_server, get_token(lab_server), SKYPE, {"keyCredentials": [entry]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("Request_BadRequest", "BadRequest")


def test_patch_unknown_property(lab_server: LabServer, lab_state: Path, cert_a: bytes) -> None:
    token = get_token(lab_server)
    before = stored_sp(lab_state, SKYPE)
    response = patch(lab_server, token, SKYPE, {"accountEnabled": False, "secretSauce": 1})
    assert response.status_code == 400
    assert response.json()["error"] | {"innerError": None} == {
        "code": "Request_BadRequest", "message": "Invalid property 'secretSauce'.", "innerError": None}
    response = patch(lab_server, token, SKYPE, {"keyCredentials": [key_entry(cert_a, thumbprint="AB")]})
    assert response.json()["error"]["message"] == "Invalid property 'thumbprint'."
    assert patch(lab_server, token, SKYPE, {"appId": SKYPE}).status_code == 400
    assert stored_sp(lab_state, SKYPE) == before


def test_patch_spn_of_another_service_principal(lab_server: LabServer) -> None:
    response = patch(lab_server, get_token(lab_server), SKYPE, {"servicePrincipalNames": [SKYPE, EXCHANGE]})
    assert response.status_code == 400
    assert "already exists" in response.json()["error"]["message"]


def test_patch_unknown_app_and_bad_json(lab_server: LabServer) -> None:
    token = get_token(lab_server)
    assert patch(lab_server, token, str(uuid.uuid4()), {"accountEnabled": True}).status_code == 404
    response = httpx.patch(graph(lab_server, sp_path(SKYPE)), content=b"{nope", headers=bearer(token))
    assert response.status_code == 400 and response.json()["error"]["code"] == "BadRequest"


# --- $batch -------------------------------------------------------------------------------------


def test_batch_depends_on(lab_server: LabServer) -> None:
    token = get_token(lab_server)
    response = batch(lab_server, token, [
        {"id": "read", "method": "GET", "url": f"{sp_path(EXCHANGE)}?$select=accountEnabled", "dependsOn": ["write"]},
        {"id": "write", "method": "PATCH", "url": sp_path(EXCHANGE), "headers": {"Content-Type": "application/json"},
         "body": {"accountEnabled": True}},
        {"id": "skype", "method": "GET", "url": f"servicePrincipals(appId='{SKYPE}')?$select=id,keyCredentials"},
    ])
    assert response.status_code == 200
    answers = by_id(response)
    assert set(answers) == {"read", "write", "skype"}
    assert answers["write"]["status"] == 204 and answers["write"]["body"] is None
    assert answers["read"]["status"] == 200
    assert answers["read"]["body"]["accountEnabled"] is True  # ran after the PATCH it depends on
    assert answers["skype"]["status"] == 200 and answers["skype"]["body"]["keyCredentials"] == []
    assert answers["read"]["headers"]["Content-Type"].startswith("application/json")


def test_batch_failed_dependency_is_424(lab_server: LabServer, lab_state: Path) -> None:
    missing = str(uuid.uuid4())
    response = batch(lab_server, get_token(lab_server), [
        {"id": "1", "method": "GET", "url": sp_path(missing)},
        {"id": "2", "method": "PATCH", "url": sp_path(EXCHANGE), "dependsOn": ["1"],
         "headers": {"Content-Type": "application/json"}, "body": {"accountEnabled": True}},
        {"id": "3", "method": "PATCH", "url": sp_path(EXCHANGE), "dependsOn": ["2"],
         "headers": {"Content-Type": "application/json"}, "body": {"accountEnabled": True}},
        {"id": "4", "method": "GET", "url": sp_path(SKYPE)},
    ])
    assert response.status_code == 200
    answers = by_id(response)
    assert answers["1"]["status"] == 404
    assert answers["1"]["body"]["error"]["code"] == "Request_ResourceNotFound"
    assert answers["2"]["status"] == 424 and answers["3"]["status"] == 424
    assert answers["4"]["status"] == 200
    assert stored_sp(lab_state, EXCHANGE)["accountEnabled"] is False  # 2 and 3 never ran


def test_batch_of_more_than_20_is_refused(lab_server: LabServer) -> None:
    token = get_token(lab_server)
    requests = [{"id": str(n), "method": "GET", "url": sp_path(SKYPE)} for n in range(21)]
    response = batch(lab_server, token, requests)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert len(batch(lab_server, token, requests[:20]).json()["responses"]) == 20


@pytest.mark.parametrize("requests", [
    [{"id": "1", "method": "PATCH", "url": sp_path(EXCHANGE), "body": {"accountEnabled": True}}],  # no Content-Type
    [{"id": "1", "method": "GET", "url": sp_path(SKYPE), "dependsOn": ["9"]}],
    [{"id": "1", "method": "GET", "url": sp_path(SKYPE)}, {"id": "1", "method": "GET", "url": sp_path(SKYPE)}],
    [{"id": "1", "method": "GET", "url": sp_path(SKYPE), "dependsOn": ["2"]},
     {"id": "2", "method": "GET", "url": sp_path(SKYPE), "dependsOn": ["1"]}],
    [{"id": "1", "method": "GET", "url": f"https://graph.microsoft.com/v1.0{sp_path(SKYPE)}"}],
    [{"method": "GET", "url": sp_path(SKYPE)}],
    [],
])
def test_batch_format_errors(lab_server: LabServer, lab_state: Path, requests: list[dict[str, Any]]) -> None:
    response = batch(lab_server, get_token(lab_server), requests)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert stored_sp(lab_state, EXCHANGE)["accountEnabled"] is False


def test_batch_inner_requests_use_the_outer_token(lab_server: LabServer, lab_state: Path) -> None:
    token = get_token(lab_server, estate.LAB_READONLY_CLIENT_ID, estate.LAB_READONLY_SECRET)
    response = batch(lab_server, token, [
        {"id": "1", "method": "GET", "url": sp_path(EXCHANGE)},
        {"id": "2", "method": "PATCH", "url": sp_path(EXCHANGE), "headers": {"Content-Type": "application/json"},
         "body": {"accountEnabled": True}},
    ])
    answers = by_id(response)
    assert answers["1"]["status"] == 200
    assert answers["2"]["status"] == 403
    assert answers["2"]["body"]["error"]["code"] == "Authorization_RequestDenied"
    assert stored_sp(lab_state, EXCHANGE)["accountEnabled"] is False


# --- authorization ------------------------------------------------------------------------------


def test_missing_or_unknown_token_is_401(lab_server: LabServer) -> None:
    response = httpx.get(graph(lab_server, sp_path(SKYPE)))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert response.json()["error"]["message"] == "Access token is empty."
    assert "Bearer" in response.headers["www-authenticate"]
    response = httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer("made-up"))
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith("Invalid JWT token")
    response = httpx.post(graph(lab_server, "/$batch"),
                          json={"requests": [{"id": "1", "method": "GET", "url": sp_path(SKYPE)}]})
    assert response.status_code == 401
    response = httpx.get(graph(lab_server, sp_path(SKYPE)), headers={"Authorization": "Basic abc"})
    assert response.json()["error"]["message"] == "Access token is empty."


def test_expired_token_is_401(lab_server: LabServer, lab_state: Path) -> None:
    token = get_token(lab_server)
    assert httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(token)).status_code == 200
    assert cli("expire-tokens", "--state", str(lab_state)) == 0
    response = httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == response.json()["error"] | {
        "code": "InvalidAuthenticationToken", "message": "Access token has expired or is not yet valid."}
    assert batch(lab_server, token, [{"id": "1", "method": "GET", "url": sp_path(SKYPE)}]).status_code == 401
    assert httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(get_token(lab_server))).status_code == 200


def test_read_only_client_reads_but_cannot_write(lab_server: LabServer, lab_state: Path) -> None:
    token = get_token(lab_server, estate.LAB_READONLY_CLIENT_ID, estate.LAB_READONLY_SECRET)
    assert select(lab_server, token, SKYPE, "keyCredentials").status_code == 200
    response = patch(lab_server, token, EXCHANGE, {"accountEnabled": True})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Authorization_RequestDenied"
    assert response.json()["error"]["message"] == "Insufficient privileges to complete the operation."
    assert stored_sp(lab_state, EXCHANGE)["accountEnabled"] is False


def test_client_without_roles_cannot_read(lab_server: LabServer, lab_state: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_TEST_SECRET", "s3cret")
    assert cli("client", CERT_CLIENT, "--secret-env", "LAB_TEST_SECRET", "--roles", "--state", str(lab_state)) == 0
    token = get_token(lab_server, CERT_CLIENT, "s3cret")
    assert httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(token)).status_code == 403


# --- faults -------------------------------------------------------------------------------------


def test_injected_429_on_outer_requests(lab_server: LabServer, lab_state: Path) -> None:
    token = get_token(lab_server)
    admin.add_graph_fault(lab_state, status=429, retry_after=3, times=2)
    for _ in range(2):
        response = httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(token))
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
        assert response.json()["error"]["code"] == "TooManyRequests"
    assert httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(token)).status_code == 200
    assert tenant_state(lab_state)["faults"] == []


def test_injected_fault_matches_method_and_path(lab_server: LabServer, lab_state: Path) -> None:
    token = get_token(lab_server)
    admin.add_graph_fault(lab_state, status=503, retry_after=1, method="patch", path=EXCHANGE)
    assert patch(lab_server, token, SKYPE, {"accountEnabled": True}).status_code == 204  # other path
    assert httpx.get(graph(lab_server, sp_path(EXCHANGE)), headers=bearer(token)).status_code == 200  # other method
    response = patch(lab_server, token, EXCHANGE, {"accountEnabled": True})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "serviceNotAvailable"
    assert stored_sp(lab_state, EXCHANGE)["accountEnabled"] is False  # throttled: not applied
    assert patch(lab_server, token, EXCHANGE, {"accountEnabled": True}).status_code == 204


def test_injected_429_on_a_whole_batch(lab_server: LabServer, lab_state: Path) -> None:
    token = get_token(lab_server)
    admin.add_graph_fault(lab_state, status=429, retry_after=2, path="$batch")
    requests = [{"id": "1", "method": "PATCH", "url": sp_path(EXCHANGE),
                 "headers": {"Content-Type": "application/json"}, "body": {"accountEnabled": True}}]
    response = batch(lab_server, token, requests)
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    assert stored_sp(lab_state, EXCHANGE)["accountEnabled"] is False
    assert by_id(batch(lab_server, token, requests))["1"]["status"] == 204


def test_injected_429_on_inner_requests(lab_server: LabServer, lab_state: Path) -> None:
    token = get_token(lab_server)
    admin.add_graph_fault(lab_state, status=429, retry_after=5, method="PATCH", inner=True)
    # an inner fault leaves plain requests alone
    assert patch(lab_server, token, SKYPE, {"accountEnabled": True}).status_code == 204
    response = batch(lab_server, token, [
        {"id": "1", "method": "GET", "url": sp_path(SKYPE)},
        {"id": "2", "method": "PATCH", "url": sp_path(EXCHANGE), "headers": {"Content-Type": "application/json"},
         "body": {"accountEnabled": True}},
        {"id": "3", "method": "GET", "url": sp_path(EXCHANGE), "dependsOn": ["2"]},
    ])
    assert response.status_code == 200
    answers = by_id(response)
    assert answers["1"]["status"] == 200
    assert answers["2"]["status"] == 429
    assert answers["2"]["headers"]["Retry-After"] == "5"
    assert answers["2"]["body"]["error"]["code"] == "TooManyRequests"
    assert answers["3"]["status"] == 424
    assert stored_sp(lab_state, EXCHANGE)["accountEnabled"] is False


# --- round trips --------------------------------------------------------------------------------


def test_round_trips_are_counted_per_tenant(lab_server: LabServer, lab_state: Path) -> None:
    token = get_token(lab_server)  # token requests are not Graph round trips
    assert tenant_state(lab_state)["roundTrips"] == 0
    httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(token))
    patch(lab_server, token, EXCHANGE, {"accountEnabled": True})
    batch(lab_server, token, [{"id": str(n), "method": "GET", "url": sp_path(SKYPE)} for n in range(5)])
    assert tenant_state(lab_state)["roundTrips"] == 3
    admin.add_graph_fault(lab_state)
    httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(token))  # a throttled request is a round trip
    httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer("made-up"))  # no tenant to count it against
    assert admin.graph_stats(lab_state) == {TENANT: {"roundTrips": 4}}
    assert admin.graph_stats(lab_state, reset=True) == {TENANT: {"roundTrips": 4}}
    assert tenant_state(lab_state)["roundTrips"] == 0


# --- the server around it -----------------------------------------------------------------------


def test_metadata_documents_are_unchanged(lab_server: LabServer) -> None:
    assert httpx.get(lab_server.base_url + estate.SKYPE_PATH).json()["serviceName"] == SKYPE
    assert httpx.post(lab_server.base_url + estate.SKYPE_PATH, content=b"x").status_code == 405
    assert httpx.get(lab_server.base_url + "/login.microsoftonline.com/elsewhere").status_code == 404


def test_keep_alive_client_and_chunked_body(lab_server: LabServer) -> None:
    with httpx.Client() as client:
        token = client.post(token_url(lab_server), data={
            "grant_type": "client_credentials", "client_id": estate.LAB_CLIENT_ID,
            "client_secret": estate.LAB_CLIENT_SECRET, "scope": GRAPH_SCOPE}).json()["access_token"]

        def chunks() -> Any:
            yield b'{"accountEnabled": '
            yield b"true}"

        response = client.patch(graph(lab_server, sp_path(EXCHANGE)), content=chunks(),
                                headers={**bearer(token), "Content-Type": "application/json"})
        assert response.status_code == 204
        assert client.get(graph(lab_server, sp_path(EXCHANGE)), headers=bearer(token)).json()["accountEnabled"]


def test_graph_without_a_lab_state(tmp_path: Path) -> None:
    with LabServer(tmp_path / "missing.json", port=0) as server:
        response = httpx.get(graph(server, sp_path(SKYPE)), headers=bearer("x"))
    assert response.status_code == 503 and "reconcile lab init" in response.text


# --- admin ops and CLI --------------------------------------------------------------------------


def test_show(lab_state: Path, cert_a: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    admin.graph_add_key(lab_state, SKYPE, cert_a)
    assert cli("show", "--state", str(lab_state)) == 0
    out = capsys.readouterr().out
    assert certs.thumbprint(cert_a) in out
    assert certs.b64(cert_a)[:40] not in out
    assert "secretSha256" not in out
    assert tenant_state(lab_state)["clients"][estate.LAB_CLIENT_ID]["secretSha256"] not in out
    assert cli("show", "--json", "--tenant", TENANT.upper(), "--state", str(lab_state)) == 0
    view = json.loads(capsys.readouterr().out)[TENANT]
    sps = {sp["appId"]: sp for sp in view["servicePrincipals"]}
    [key] = sps[SKYPE]["keyCredentials"]
    assert key["thumbprint"] == certs.thumbprint(cert_a) and "key" not in key
    assert key["startDateTime"].endswith("Z") and key["endDateTime"].endswith("Z")
    assert sps[EXCHANGE]["accountEnabled"] is False
    assert view["clients"][estate.LAB_READONLY_CLIENT_ID] == {
        "displayName": "reconciler read-only (lab)", "roles": ["Application.Read.All"], "secret": True,
        "certificateThumbprint": None}
    assert view["roundTrips"] == 0 and view["tokens"] == {"valid": 0, "expired": 0}


def test_show_unknown_tenant(lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("show", "--tenant", "nowhere", "--state", str(lab_state)) == 1
    assert "no tenant 'nowhere'" in capsys.readouterr().err


def test_set(lab_server: LabServer, lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = f"{SKYPE}, {SKYPE}/lync.litwareinc.com"
    assert cli("set", SKYPE, "accountEnabled=false", f"servicePrincipalNames={names}", "--state", str(lab_state)) == 0
    assert f"service principal {SKYPE} updated" in capsys.readouterr().out
    body = select(lab_server, get_token(lab_server), SKYPE, "accountEnabled,servicePrincipalNames").json()
    assert body["accountEnabled"] is False
    assert body["servicePrincipalNames"] == [SKYPE, f"{SKYPE}/lync.litwareinc.com"]


@pytest.mark.parametrize("args,message", [
    ((SKYPE, "accountEnabled=maybe"), "true or false"),
    ((SKYPE, "displayName=x"), "expected accountEnabled"),
    ((SKYPE, "accountEnabled"), "expected accountEnabled"),
    (("00000000-0000-0000-0000-000000000009", "accountEnabled=true"), "no service principal"),
])
def test_set_errors(lab_state: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str) -> None:
    before = LabStore(lab_state).read()
    assert cli("set", *args, "--state", str(lab_state)) == 1
    assert message in capsys.readouterr().err
    assert LabStore(lab_state).read() == before


def test_add_and_remove_key(lab_server: LabServer, lab_state: Path, tmp_path: Path, cert_a: bytes, cert_b: bytes,
                            capsys: pytest.CaptureFixture[str]) -> None:
    der_file = tmp_path / "a.cer"
    der_file.write_bytes(cert_a)
    pem_file = tmp_path / "b.pem"
    pem_file.write_bytes(x509.load_der_x509_certificate(cert_b).public_bytes(serialization.Encoding.PEM))
    assert cli("add-key", SKYPE, str(der_file), "--state", str(lab_state)) == 0
    assert certs.thumbprint(cert_a) in capsys.readouterr().out
    assert cli("add-key", SKYPE, str(pem_file), "--state", str(lab_state)) == 0
    assert cli("add-key", SKYPE, str(pem_file), "--state", str(lab_state)) == 1  # already there
    token = get_token(lab_server)
    keys = select(lab_server, token, SKYPE, "keyCredentials").json()["keyCredentials"]
    assert [certs.from_b64(k["key"]) for k in keys] == [cert_a, cert_b]
    thumbprint = certs.thumbprint(cert_a).lower()
    assert cli("remove-key", SKYPE, thumbprint, "--state", str(lab_state)) == 0
    keys = select(lab_server, token, SKYPE, "keyCredentials").json()["keyCredentials"]
    assert [certs.from_b64(k["key"]) for k in keys] == [cert_b]
    assert cli("remove-key", SKYPE, thumbprint, "--state", str(lab_state)) == 1
    assert "no key" in capsys.readouterr().err
    assert cli("remove-key", SKYPE, keys[0]["keyId"], "--state", str(lab_state)) == 0
    assert stored_sp(lab_state, SKYPE)["keyCredentials"] == []


def test_add_key_errors(lab_state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.cer"
    junk.write_bytes(b"junk")
    assert cli("add-key", SKYPE, str(junk), "--state", str(lab_state)) == 1
    assert "not an X.509 certificate" in capsys.readouterr().err
    assert cli("add-key", SKYPE, str(tmp_path / "absent.cer"), "--state", str(lab_state)) == 1
    assert "cannot read certificate" in capsys.readouterr().err


def test_fault_cli(lab_server: LabServer, lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = get_token(lab_server)
    assert cli("fault", "--status", "503", "--retry-after", "7", "--times", "1", "--method", "GET",
               "--path", SKYPE, "--state", str(lab_state)) == 0
    assert "will answer 503" in capsys.readouterr().out
    assert cli("fault", "--status", "429", "--inner", "--path", "keyCredentials", "--state", str(lab_state)) == 0
    assert tenant_state(lab_state)["faults"] == [
        {"status": 503, "retryAfter": 7, "times": 1, "method": "GET", "path": SKYPE, "inner": False},
        {"status": 429, "retryAfter": 2, "times": 1, "method": None, "path": "keyCredentials", "inner": True},
    ]
    response = httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(token))
    assert (response.status_code, response.headers["retry-after"]) == (503, "7")
    answers = by_id(batch(lab_server, token, [
        {"id": "1", "method": "GET", "url": f"{sp_path(SKYPE)}?$select=id"},
        {"id": "2", "method": "GET", "url": f"{sp_path(SKYPE)}?$select=keyCredentials"},
    ]))
    assert (answers["1"]["status"], answers["2"]["status"]) == (200, 429)
    assert answers["2"]["headers"]["Retry-After"] == "2"


@pytest.mark.parametrize("args", [("--status", "500"), ("--status", "429", "--times", "0"),
                                  ("--status", "429", "--retry-after", "-1"), ("--status", "429", "--method", "FETCH")])
def test_fault_cli_errors(lab_state: Path, args: tuple[str, ...]) -> None:
    try:
        code = cli("fault", *args, "--state", str(lab_state))
    except SystemExit as exc:  # argparse refuses --status 500 itself
        code = int(exc.code or 0)
    assert code != 0
    assert tenant_state(lab_state)["faults"] == []


def test_client_cli_with_secret(lab_server: LabServer, lab_state: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LAB_TEST_SECRET", "a-secret-from-the-environment")
    assert cli("client", CERT_CLIENT, "--secret-env", "LAB_TEST_SECRET", "--roles", "Application.Read.All",
               "--display-name", "ops", "--state", str(lab_state)) == 0
    out = capsys.readouterr().out
    assert "a-secret-from-the-environment" not in out and "Application.Read.All" in out
    assert "a-secret-from-the-environment" not in lab_state.read_text()
    token = get_token(lab_server, CERT_CLIENT, "a-secret-from-the-environment")
    assert patch(lab_server, token, SKYPE, {"accountEnabled": False}).status_code == 403
    assert cli("client", CERT_CLIENT, "--roles", "Application.ReadWrite.All", "--state", str(lab_state)) == 0
    token = get_token(lab_server, CERT_CLIENT, "a-secret-from-the-environment")  # roles are granted per token
    assert patch(lab_server, token, SKYPE, {"accountEnabled": False}).status_code == 204


def test_client_cli_with_certificate(lab_server: LabServer, lab_state: Path, tmp_path: Path,
                                     pairs: dict[str, tuple[rsa.RSAPrivateKey, bytes]]) -> None:
    key, der = pairs["client"]
    cert_file = tmp_path / "client.cer"
    cert_file.write_bytes(der)
    assert cli("client", CERT_CLIENT, "--certificate", str(cert_file), "--state", str(lab_state)) == 0
    assert tenant_state(lab_state)["clients"][CERT_CLIENT]["roles"] == ["Application.ReadWrite.All"]
    response = assertion_token(lab_server, make_assertion(key, der, token_url(lab_server)))
    assert response.status_code == 200


@pytest.mark.parametrize("args,message", [
    (("--secret-env", "LAB_TEST_UNSET"), "LAB_TEST_UNSET is not set"),
    (("--roles", "Application.Read.All"), "needs a secret or a certificate"),
    (("--secret-env", "LAB_TEST_SET", "--roles", "Mail.Send"), "unknown role"),
])
def test_client_cli_errors(lab_state: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                           args: tuple[str, ...], message: str) -> None:
    monkeypatch.delenv("LAB_TEST_UNSET", raising=False)
    monkeypatch.setenv("LAB_TEST_SET", "x")
    assert cli("client", CERT_CLIENT, *args, "--state", str(lab_state)) == 1
    assert message in capsys.readouterr().err
    assert CERT_CLIENT not in tenant_state(lab_state)["clients"]


def test_client_secret_is_never_an_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):  # not even as an abbreviation of --secret-env
        cli("client", CERT_CLIENT, "--secret", "x")
    assert "unrecognized arguments" in capsys.readouterr().err


def test_expire_tokens_cli(lab_server: LabServer, lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokens = [get_token(lab_server), get_token(lab_server, estate.LAB_READONLY_CLIENT_ID, estate.LAB_READONLY_SECRET)]
    assert cli("expire-tokens", "--state", str(lab_state)) == 0
    assert "2 valid access token(s) expired" in capsys.readouterr().out
    for token in tokens:
        assert httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(token)).status_code == 401
    assert admin.graph_show(lab_state)[TENANT]["tokens"] == {"valid": 0, "expired": 2}


def test_stats_cli(lab_server: LabServer, lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = get_token(lab_server)
    for _ in range(3):
        httpx.get(graph(lab_server, sp_path(SKYPE)), headers=bearer(token))
    assert cli("stats", "--state", str(lab_state)) == 0
    assert f"{TENANT}: 3 Graph round trips" in capsys.readouterr().out
    assert cli("stats", "--json", "--reset", "--state", str(lab_state)) == 0
    assert json.loads(capsys.readouterr().out) == {TENANT: {"roundTrips": 3}}
    assert admin.graph_stats(lab_state, TENANT) == {TENANT: {"roundTrips": 0}}


def test_every_graph_op_has_state_and_tenant() -> None:
    parser = argparse.ArgumentParser()
    add_lab_parser(parser.add_subparsers(dest="command"))
    for argv in (["show"], ["set", "a", "accountEnabled=true"], ["add-key", "a", "f"], ["remove-key", "a", "t"],
                 ["fault", "--status", "429"], ["expire-tokens"], ["client", "c", "--secret-env", "V"], ["stats"]):
        args = parser.parse_args(["lab", "graph", *argv])
        assert args.state == Path(".lab/state.json") and args.tenant is None
        assert callable(args.func) and args.lab_command is True


def test_wired_into_the_main_cli(lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.cli import main

    assert main(["lab", "graph", "set", EXCHANGE, "accountEnabled=true", "--state", str(lab_state)]) == 0
    assert stored_sp(lab_state, EXCHANGE)["accountEnabled"] is True
    assert main(["lab", "graph", "stats", "--json", "--state", str(lab_state)]) == 0
    assert main(["lab", "graph", "remove-key", SKYPE, "AB", "--state", str(lab_state)]) == 1
