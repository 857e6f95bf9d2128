"""Metadata documents: the shapes each product writes, what is invalid, and how downloads fail."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from reconciler.errors import ReconcilerError
from reconciler.lab import certs
from reconciler.metadata import METADATA_ERROR, MetadataError, fetch_metadata, parse_metadata

URL = "https://atl-exchange-001.litwareinc.com/autodiscover/metadata/json/1"
EXCHANGE = "00000002-0000-0ff1-ce00-000000000000"
SHAREPOINT = "00000003-0000-0ff1-ce00-000000000000"
ACS = "00000001-0000-0000-c000-000000000000"
TENANT = "8a1c5e3f-2b7d-4c9e-a6f0-1d2e3f4a5b6c"


@pytest.fixture(scope="module")
def der() -> bytes:
    return certs.make_certificate("atl-exchange-001.litwareinc.com")


def exchange_doc(der: bytes) -> dict[str, Any]:
    return {
        "id": "_abc",
        "version": "1.0",
        "name": "Exchange",
        "realm": "litwareinc.com",
        "serviceName": EXCHANGE,
        "issuer": f"{EXCHANGE}@litwareinc.com",
        "allowedAudiences": [f"{EXCHANGE}@litwareinc.com"],
        "keys": [{
            "usage": "signing",
            "keyinfo": {"x5t": certs.x5t(der)},
            "keyvalue": {"type": "x509Certificate", "value": base64.b64encode(der).decode()},
        }],
        "endpoints": [{"location": URL, "protocol": "OAuth2", "usage": "metadata"}],
    }


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_exchange_document(der: bytes) -> None:
    doc = parse_metadata(URL, encode(exchange_doc(der)))
    assert doc.url == URL
    assert doc.service_name == EXCHANGE
    assert doc.realm == "litwareinc.com"
    assert doc.issuer == f"{EXCHANGE}@litwareinc.com"
    assert doc.name == "Exchange"
    assert len(doc.keys) == 1
    assert doc.keys[0].certificate_der == der
    assert doc.keys[0].x5t == certs.x5t(der)
    assert doc.keys[0].thumbprint == certs.thumbprint(der)
    assert doc.keys[0].thumbprint.isupper() and len(doc.keys[0].thumbprint) == 40


def test_sharepoint_document_takes_realm_from_issuer(der: bytes) -> None:
    raw = {
        "serviceName": SHAREPOINT,
        "issuer": f"{SHAREPOINT}@litwareinc.com",
        "keys": [{
            "keyinfo": {"x5t": "abc"},
            "usage": "Signing",
            "keyValue": {"type": "x509certificate", "value": base64.b64encode(der).decode()},
        }],
    }
    doc = parse_metadata(URL, encode(raw))
    assert doc.service_name == SHAREPOINT
    assert doc.realm == "litwareinc.com"
    assert doc.keys[0].certificate_der == der


def test_acs_document_takes_service_name_from_issuer(der: bytes) -> None:
    raw = exchange_doc(der)
    del raw["serviceName"]
    raw.update(realm=TENANT, issuer=f"{ACS}@{TENANT}", name="ACS")
    doc = parse_metadata(URL, encode(raw))
    assert doc.service_name == ACS
    assert doc.realm == TENANT


def test_explicit_fields_win_over_issuer(der: bytes) -> None:
    raw = exchange_doc(der)
    raw["issuer"] = "other@elsewhere.com"
    doc = parse_metadata(URL, encode(raw))
    assert (doc.service_name, doc.realm) == (EXCHANGE, "litwareinc.com")


def test_key_names_and_values_are_case_insensitive(der: bytes) -> None:
    raw = {
        "SERVICENAME": EXCHANGE,
        "Realm": "litwareinc.com",
        "KEYS": [{
            "USAGE": "SIGNING",
            "KeyInfo": {"X5T": "t"},
            "KEYVALUE": {"Type": "X509CERTIFICATE", "VALUE": base64.b64encode(der).decode()},
        }],
    }
    doc = parse_metadata(URL, encode(raw))
    assert doc.service_name == EXCHANGE
    assert doc.realm == "litwareinc.com"
    assert doc.keys[0].x5t == "t"


def test_only_keys_are_required(der: bytes) -> None:
    raw = {"keys": exchange_doc(der)["keys"]}
    doc = parse_metadata(URL, encode(raw))
    assert (doc.service_name, doc.realm, doc.issuer, doc.name) == (None, None, None, None)
    assert doc.keys[0].x5t == certs.x5t(der)


def test_unusable_keys_are_skipped(der: bytes) -> None:
    raw = exchange_doc(der)
    good = raw["keys"][0]
    raw["keys"] = [
        {"usage": "encryption", "keyvalue": good["keyvalue"]},
        {"usage": "signing", "keyvalue": {"type": "rsa", "value": good["keyvalue"]["value"]}},
        {"usage": "signing", "keyvalue": {"type": "x509Certificate", "value": "bm90IGEgY2VydA=="}},
        "junk",
        good,
    ]
    doc = parse_metadata(URL, encode(raw))
    assert [k.certificate_der for k in doc.keys] == [der]


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"<html><body>Sign in</body></html>", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"{}", "no signing certificate"),
        (b'{"keys": "none"}', "no signing certificate"),
        (b'{"keys": [{"usage": "encryption", "keyvalue": {"type": "x509Certificate", "value": "AA=="}}]}',
         "no signing certificate"),
        (b'{"keys": [{"usage": "signing", "keyvalue": {"type": "x509Certificate", "value": "not base64!"}}]}',
         "no signing certificate"),
        (b'{"keys": [{"usage": "signing", "keyvalue": {"type": "x509Certificate", "value": "bm90IGEgY2VydA=="}}]}',
         "no signing certificate"),
    ],
)
def test_invalid_documents(content: bytes, detail: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_metadata(URL, content)
    assert caught.value.detail == detail
    assert caught.value.url == URL
    assert str(caught.value) == f"{METADATA_ERROR} ({URL}: {detail})"
    assert isinstance(caught.value, ReconcilerError)


def test_error_detail_is_kept_short() -> None:
    error = MetadataError(URL, "x" * 500 + "\n\n")
    assert len(error.detail) <= 80
    assert "\n" not in str(error)


def test_fetch_ok(httpx_mock: HTTPXMock, der: bytes) -> None:
    httpx_mock.add_response(url=URL, json=exchange_doc(der))
    doc = fetch_metadata(URL)
    assert doc.service_name == EXCHANGE
    assert doc.url == URL


def test_fetch_uses_the_given_client(httpx_mock: HTTPXMock, der: bytes) -> None:
    httpx_mock.add_response(url=URL, json=exchange_doc(der), match_headers={"X-Lab": "1"})
    with httpx.Client(headers={"X-Lab": "1"}) as client:
        assert fetch_metadata(URL, client).service_name == EXCHANGE


def test_fetch_follows_redirects(httpx_mock: HTTPXMock, der: bytes) -> None:
    target = "https://mail.litwareinc.com/autodiscover/metadata/json/1"
    httpx_mock.add_response(url=URL, status_code=302, headers={"Location": target})
    httpx_mock.add_response(url=target, json=exchange_doc(der))
    with httpx.Client() as client:  # a client that would not follow redirects by itself
        assert fetch_metadata(URL, client).service_name == EXCHANGE


def test_fetch_http_error(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=URL, status_code=404, text="<html>" + "long body " * 100 + "</html>")
    with pytest.raises(MetadataError) as caught:
        fetch_metadata(URL)
    assert caught.value.detail == "HTTP 404"
    assert "long body" not in str(caught.value)


def test_fetch_timeout(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ReadTimeout("read timed out"), url=URL)
    with pytest.raises(MetadataError) as caught:
        fetch_metadata(URL, timeout=0.5)
    assert caught.value.detail == "timed out"


def test_fetch_connection_failure(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ConnectError("[Errno 111] Connection refused"), url=URL)
    with pytest.raises(MetadataError) as caught:
        fetch_metadata(URL)
    assert caught.value.detail == "connection failed: [Errno 111] Connection refused"


def test_fetch_not_json_does_not_quote_the_body(httpx_mock: HTTPXMock) -> None:
    page = "<html><body>" + "Please sign in to continue. " * 20 + "</body></html>"
    httpx_mock.add_response(url=URL, text=page)
    with pytest.raises(MetadataError) as caught:
        fetch_metadata(URL)
    assert caught.value.detail == "not JSON"
    assert "sign in" not in str(caught.value)


def test_fetch_refuses_oversized_bodies(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=URL, content=b" " * (1024 * 1024 + 10))
    with pytest.raises(MetadataError) as caught:
        fetch_metadata(URL)
    assert caught.value.detail == "response too large"


def test_fetch_invalid_url() -> None:
    with pytest.raises(MetadataError) as caught:
        fetch_metadata("ftp://example.invalid/metadata")
    assert caught.value.detail.startswith("invalid URL")
