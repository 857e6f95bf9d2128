"""Metadata documents: the shapes each product writes, what is invalid, and how downloads fail."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pytest_httpx import HTTPXMock

from reconciler.errors import METADATA_ERROR, MetadataError, ReconcilerError
from reconciler.lab import certs
from reconciler.metadata import MetadataDocument, fetch_metadata, parse_metadata

FIXTURES = Path(__file__).parent / "fixtures" / "metadata"
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((FIXTURES / "expected.yaml").read_text(encoding="utf-8"))
FIXTURE_FILES = sorted(p.name for p in FIXTURES.iterdir() if p.suffix in (".json", ".xml"))

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
    assert doc.kind == "json"
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


# --- the real variants: one fixture file per case, expectations in expected.yaml ---------------

def test_every_fixture_has_an_expectation_and_every_expectation_a_fixture() -> None:
    assert FIXTURE_FILES
    assert set(FIXTURE_FILES) == set(EXPECTED)


def check_document(doc: MetadataDocument, expected: dict[str, Any]) -> None:
    assert doc.url == expected["url"]
    assert doc.kind == expected["kind"]
    assert doc.service_name == expected["service_name"]
    assert doc.realm == expected["realm"]
    assert doc.issuer == expected["issuer"]
    assert doc.name == expected["name"]
    assert [key.thumbprint for key in doc.keys] == expected["thumbprints"]
    for key in doc.keys:
        # JSON documents state each key's x5t (and the fixture's must be right); federation metadata does not
        assert key.x5t == (certs.x5t(key.certificate_der) if doc.kind == "json" else None)


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixture_documents(name: str) -> None:
    expected = EXPECTED[name]
    check_document(parse_metadata(expected["url"], (FIXTURES / name).read_bytes()), expected)


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixture_documents_downloaded_with_a_misleading_content_type(httpx_mock: HTTPXMock, name: str) -> None:
    """The content decides JSON or XML: a wrong Content-Type does not stop a good document."""
    expected = EXPECTED[name]
    wrong = "application/xml" if name.endswith(".json") else "application/json; charset=utf-8"
    httpx_mock.add_response(url=expected["url"], content=(FIXTURES / name).read_bytes(),
                            headers={"Content-Type": wrong})
    check_document(fetch_metadata(expected["url"]), expected)


# --- federation metadata (AzureAD / ADFS authorization servers) ---------------------------------

FED_URL = f"https://login.windows.net/{TENANT}/federationmetadata/2007-06/federationmetadata.xml"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"


def key_descriptor(der: bytes, use: str | None = "signing", prefix: str = "") -> str:
    use_attribute = f' use="{use}"' if use is not None else ""
    return (f"<{prefix}KeyDescriptor{use_attribute}><KeyInfo xmlns=\"{DS}\"><X509Data><X509Certificate>"
            f"{base64.b64encode(der).decode()}</X509Certificate></X509Data></KeyInfo></{prefix}KeyDescriptor>")


def federation(body: str, entity_id: str | None = f"https://sts.windows.net/{TENANT}/") -> bytes:
    entity = f' entityID="{entity_id}"' if entity_id is not None else ""
    declaration = '<?xml version="1.0" encoding="utf-8"?>'
    return f'{declaration}<EntityDescriptor xmlns="{MD}"{entity}>{body}</EntityDescriptor>'.encode()


def test_federation_document(der: bytes) -> None:
    doc = parse_metadata(FED_URL, federation(f"<IDPSSODescriptor>{key_descriptor(der)}</IDPSSODescriptor>"))
    assert doc.kind == "federation"
    assert (doc.service_name, doc.issuer, doc.realm, doc.name) == (
        f"https://sts.windows.net/{TENANT}/", f"https://sts.windows.net/{TENANT}/", TENANT, None)
    assert [k.certificate_der for k in doc.keys] == [der]
    assert doc.keys[0].x5t is None


def test_federation_names_and_values_are_case_insensitive_and_prefixes_do_not_matter(der: bytes) -> None:
    content = (f'<md:entitydescriptor xmlns:md="{MD}" EntityId="https://sts.windows.net/{TENANT}/">'
               f'<md:roleDESCRIPTOR>{key_descriptor(der, use=" SIGNING ", prefix="md:")}</md:roleDESCRIPTOR>'
               "</md:entitydescriptor>").encode()
    doc = parse_metadata(FED_URL, content)
    assert doc.issuer == f"https://sts.windows.net/{TENANT}/"
    assert [k.certificate_der for k in doc.keys] == [der]


def test_federation_certificate_text_may_be_wrapped(der: bytes) -> None:
    wrapped = "\n" + "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64)) + "\n"
    body = (f"<RoleDescriptor><KeyDescriptor use=\"signing\"><KeyInfo xmlns=\"{DS}\"><X509Data>"
            f"<X509Certificate>{wrapped}</X509Certificate></X509Data></KeyInfo></KeyDescriptor></RoleDescriptor>")
    assert parse_metadata(FED_URL, federation(body)).keys[0].certificate_der == der


def test_federation_key_without_use_is_a_signing_key(der: bytes) -> None:
    doc = parse_metadata(FED_URL, federation(f"<RoleDescriptor>{key_descriptor(der, use=None)}</RoleDescriptor>"))
    assert [k.certificate_der for k in doc.keys] == [der]


def test_federation_reads_only_signing_keys_of_the_roles(der: bytes) -> None:
    other = certs.make_certificate("adfs encryption")
    body = (
        f"<Signature xmlns=\"{DS}\"><KeyInfo><X509Data><X509Certificate>{base64.b64encode(other).decode()}"
        "</X509Certificate></X509Data></KeyInfo></Signature>"
        f"<SPSSODescriptor>{key_descriptor(other)}</SPSSODescriptor>"
        f"<RoleDescriptor>{key_descriptor(other, use='encryption')}"
        "<KeyDescriptor use=\"signing\"><KeyInfo><X509Data><X509Certificate>bm90IGEgY2VydA==</X509Certificate>"
        f"</X509Data></KeyInfo></KeyDescriptor>{key_descriptor(der)}</RoleDescriptor>"
        f"<IDPSSODescriptor>{key_descriptor(der)}</IDPSSODescriptor>"
    )
    doc = parse_metadata(FED_URL, federation(body))
    assert [k.certificate_der for k in doc.keys] == [der]


@pytest.mark.parametrize(
    ("entity_id", "realm"),
    [
        (f"https://sts.windows.net/{TENANT}/", TENANT),
        (f"https://login.microsoftonline.com/{TENANT.upper()}/v2.0", TENANT.upper()),
        ("https://sts.windows.net/{tenant}/", None),
        ("http://adfs.litwareinc.com/adfs/services/trust", None),
        ("urn:federation:litwareinc", None),
    ],
)
def test_federation_realm_is_the_tenant_the_entity_id_names(der: bytes, entity_id: str, realm: str | None) -> None:
    doc = parse_metadata(FED_URL, federation(f"<RoleDescriptor>{key_descriptor(der)}</RoleDescriptor>", entity_id))
    assert (doc.issuer, doc.service_name, doc.realm) == (entity_id, entity_id, realm)


def test_federation_without_entity_id(der: bytes) -> None:
    doc = parse_metadata(FED_URL, federation(f"<RoleDescriptor>{key_descriptor(der)}</RoleDescriptor>", None))
    assert (doc.issuer, doc.service_name, doc.realm) == (None, None, None)
    assert len(doc.keys) == 1


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_federation_with_byte_order_mark(der: bytes, encoding: str) -> None:
    text = federation(f"<RoleDescriptor>{key_descriptor(der)}</RoleDescriptor>").decode()
    text = text.replace('encoding="utf-8"', f'encoding="{"utf-16" if encoding == "utf-16" else "utf-8"}"')
    assert parse_metadata(FED_URL, text.encode(encoding)).kind == "federation"


def test_json_with_byte_order_mark(der: bytes) -> None:
    assert parse_metadata(URL, b"\xef\xbb\xbf" + encode(exchange_doc(der))).service_name == EXCHANGE


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE EntityDescriptor [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<EntityDescriptor entityID="&lol9;"/>
"""
REFUSED = "XML with a DTD or entity declarations (refused)"


def test_external_entities_are_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE", encoding="utf-8")
    content = (f'<?xml version="1.0"?><!DOCTYPE EntityDescriptor [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
               '<EntityDescriptor entityID="&xxe;"/>').encode()
    with pytest.raises(MetadataError) as caught:
        parse_metadata(FED_URL, content)
    assert caught.value.detail == REFUSED
    assert "TOP-SECRET" not in str(caught.value)


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
        (b'{"issuer": "00000002-0000-0ff1-ce00-000000000000@litwareinc.com", "keys": []}', "no signing certificate"),
        (b"<!DOCTYPE html><html><head><title>Sign in</title></head><body></body></html>", "not JSON"),
        (b"   ", "not JSON"),
        (b'<?xml version="1.0"?><EntityDescriptor entityID="x">', "not XML"),
        (b"<EntityDescriptor><RoleDescriptor></EntityDescriptor>", "not XML"),
        (b"<EntityDescriptor>&undefined;</EntityDescriptor>", "not XML"),
        (b'<rss version="2.0"><channel/></rss>', "XML but not federation metadata"),
        (b"<EntitiesDescriptor><EntityDescriptor/></EntitiesDescriptor>", "XML but not federation metadata"),
        (f'<EntityDescriptor xmlns="{MD}" entityID="https://sts.windows.net/{TENANT}/"/>'.encode(),
         "no signing certificate"),
        (BILLION_LAUGHS, REFUSED),
        (b'<?xml version="1.0"?><!DOCTYPE EntityDescriptor SYSTEM "http://127.0.0.1:9/x.dtd"><EntityDescriptor/>',
         REFUSED),
        (b'<!DOCTYPE EntityDescriptor [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]><EntityDescriptor/>',
         REFUSED),
        (b"<!DOCTYPE EntityDescriptor><EntityDescriptor/>", REFUSED),
    ],
)
def test_invalid_documents(content: bytes, detail: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_metadata(URL, content)
    assert caught.value.detail == detail
    assert caught.value.url == URL
    assert str(caught.value) == f"{METADATA_ERROR} ({URL}: {detail})"
    assert isinstance(caught.value, ReconcilerError)


@pytest.mark.parametrize(
    ("content_type", "detail"),
    [
        (None, "not JSON"),
        ("application/json", "not JSON"),
        ("text/html; charset=utf-8", "not JSON"),
        ("text/xml; charset=utf-8", "not XML"),
        ("application/samlmetadata+xml", "not XML"),
    ],
)
def test_content_type_settles_a_body_whose_start_says_nothing(content_type: str | None, detail: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_metadata(URL, b"Service Unavailable", content_type)
    assert caught.value.detail == detail


def test_content_wins_over_content_type(der: bytes) -> None:
    assert parse_metadata(URL, encode(exchange_doc(der)), "text/xml").kind == "json"
    xml = federation(f"<RoleDescriptor>{key_descriptor(der)}</RoleDescriptor>")
    assert parse_metadata(FED_URL, xml, "application/json").kind == "federation"


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


def test_fetch_federation_metadata(httpx_mock: HTTPXMock, der: bytes) -> None:
    httpx_mock.add_response(url=FED_URL, content=federation(f"<RoleDescriptor>{key_descriptor(der)}</RoleDescriptor>"),
                            headers={"Content-Type": "application/xml; charset=utf-8"})
    doc = fetch_metadata(FED_URL)
    assert (doc.kind, doc.realm, doc.url) == ("federation", TENANT, FED_URL)


def test_fetch_passes_the_content_type(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=FED_URL, content=b"Service Unavailable", headers={"Content-Type": "text/xml"})
    with pytest.raises(MetadataError) as caught:
        fetch_metadata(FED_URL)
    assert caught.value.detail == "not XML"


def test_every_download_client_shares_one_verifying_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """The TLS settings are made once per process (~15 ms each), and they verify: certificates and host names."""
    import ssl

    from reconciler import metadata

    seen: list[Any] = []
    real = httpx.Client

    def client(**settings: Any) -> httpx.Client:
        seen.append(settings.get("verify"))
        return real(**settings)

    monkeypatch.setattr(metadata.httpx, "Client", client)
    for _ in range(2):
        with metadata.Documents() as documents:
            documents._http()
    context = metadata.tls_context()
    assert seen == [context, context]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
