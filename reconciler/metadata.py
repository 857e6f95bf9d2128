"""Server-to-server OAuth metadata documents: download and parse them as the servers do.

New-CsPartnerApplication / New-CsOAuthServer download the document at MetadataUrl when they run,
and fail if it cannot be fetched or is not a valid document. Plan checks the same documents before
anything is applied, so a bad URL is reported before a replace removes the object that works.

Products write the document differently (Exchange `keyvalue`, SharePoint `keyValue`, `Signing`,
`x509certificate`, no `realm`; ACS no `serviceName`), so key names and enumerated values are matched
case-insensitively and everything but `keys` is optional. A document is valid when at least one
signing key carries an X.509 certificate that parses.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from reconciler.errors import ReconcilerError

METADATA_ERROR = (
    "The metadata document could not be downloaded from the URL in the MetadataUrl parameter "
    "or downloaded data is not a valid metadata document."
)

MAX_DOCUMENT_BYTES = 1024 * 1024
"""A metadata document is a few kilobytes; anything this large is not one (and is not read further)."""

_DETAIL_LIMIT = 80


@dataclass(frozen=True)
class SigningKey:
    """One signing certificate the document publishes (DER), with the x5t the document claims for it."""

    x5t: str | None
    certificate_der: bytes

    @property
    def thumbprint(self) -> str:
        """SHA-1 of the DER, upper-case hex: how Windows and the cmdlets show a certificate."""
        return x509.load_der_x509_certificate(self.certificate_der).fingerprint(hashes.SHA1()).hex().upper()


@dataclass(frozen=True)
class MetadataDocument:
    """The parts of a metadata document the trust depends on."""

    url: str
    service_name: str | None
    realm: str | None
    issuer: str | None
    name: str | None
    keys: tuple[SigningKey, ...]


class MetadataError(ReconcilerError):
    """The document at `url` could not be used; `detail` says why in a few words."""

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = _short(detail)
        super().__init__(f"{METADATA_ERROR} ({url}: {self.detail})")


def _short(text: str) -> str:
    """Keep error details to one short line: a response body must never flood a message."""
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 3] + "..."


def _get(obj: Mapping[str, Any], name: str) -> Any:
    """A member of a JSON object by case-insensitive name (exact spelling wins)."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _equals(value: Any, expected: str) -> bool:
    return isinstance(value, str) and value.lower() == expected.lower()


def _signing_key(entry: Any) -> SigningKey | None:
    """The key entry as a SigningKey, or None when it is not a usable signing certificate."""
    if not isinstance(entry, Mapping) or not _equals(_get(entry, "usage"), "signing"):
        return None
    keyvalue = _get(entry, "keyvalue")
    if not isinstance(keyvalue, Mapping) or not _equals(_get(keyvalue, "type"), "x509Certificate"):
        return None
    value = _get(keyvalue, "value")
    if not isinstance(value, str):
        return None
    try:
        der = base64.b64decode("".join(value.split()), validate=True)
        x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError):
        return None
    keyinfo = _get(entry, "keyinfo")
    x5t = _text(_get(keyinfo, "x5t")) if isinstance(keyinfo, Mapping) else None
    return SigningKey(x5t=x5t, certificate_der=der)


def parse_metadata(url: str, content: bytes) -> MetadataDocument:
    """Parse a downloaded document; raise MetadataError if it is not a valid metadata document."""
    try:
        data = json.loads(content)
    except (UnicodeDecodeError, ValueError):
        raise MetadataError(url, "not JSON") from None
    if not isinstance(data, Mapping):
        raise MetadataError(url, "not a JSON object")
    raw_keys = _get(data, "keys")
    entries = raw_keys if isinstance(raw_keys, list) else []
    keys = tuple(key for key in (_signing_key(entry) for entry in entries) if key is not None)
    if not keys:
        raise MetadataError(url, "no signing certificate")
    issuer = _text(_get(data, "issuer"))
    issuer_name, at, issuer_realm = (issuer or "").partition("@")
    return MetadataDocument(
        url=url,
        service_name=_text(_get(data, "serviceName")) or _text(issuer_name),
        realm=_text(_get(data, "realm")) or (_text(issuer_realm) if at else None),
        issuer=issuer,
        name=_text(_get(data, "name")),
        keys=keys,
    )


def fetch_metadata(url: str, client: httpx.Client | None = None, timeout: float = 10.0) -> MetadataDocument:
    """GET the document (following redirects) and parse it, as the cmdlets do when they run.

    Any failure (connection, timeout, non-2xx, oversized or invalid body) is a MetadataError.
    """
    if client is None:
        with httpx.Client(follow_redirects=True, timeout=timeout) as own:
            return _fetch(url, own, timeout)
    return _fetch(url, client, timeout)


def _fetch(url: str, client: httpx.Client, timeout: float) -> MetadataDocument:
    try:
        with client.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            if not response.is_success:
                raise MetadataError(url, f"HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise MetadataError(url, "response too large")
    except httpx.TimeoutException:
        raise MetadataError(url, "timed out") from None
    except httpx.TooManyRedirects:
        raise MetadataError(url, "too many redirects") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise MetadataError(url, f"invalid URL: {exc}") from None
    except httpx.HTTPError as exc:
        raise MetadataError(url, f"connection failed: {str(exc) or type(exc).__name__}") from None
    return parse_metadata(url, bytes(body))
