"""Server-to-server OAuth metadata documents: download and parse them as the servers do.

New-CsPartnerApplication / New-CsOAuthServer download the document at MetadataUrl when they run,
and fail if it cannot be fetched or is not a valid document. Plan checks the same documents before
anything is applied, so a bad URL is reported before a replace removes the object that works.

Two families of document are read, told apart by their content (the Content-Type only settles a
body whose first character says nothing), never by the URL:

- JSON metadata (`kind="json"`): Exchange's `/autodiscover/metadata/json/1`, a Skype for Business
  pool's `/metadata/json/1`, SharePoint's `/_layouts/15/metadata/json/1` (or the older
  `/jsonmetadata.ashx`) and ACS's `https://accounts.accesscontrol.windows.net/<tenant>/metadata/json/1`.
  Products write it differently (Exchange `keyvalue`, SharePoint `keyValue`, `Signing`,
  `x509certificate`, no `realm`; ACS no `serviceName`), so member names and enumerated values are
  matched case-insensitively and everything but `keys` is optional; a missing `serviceName` or
  `realm` is taken from `issuer` (`<serviceName>@<realm>`).
- Federation metadata XML (`kind="federation"`), which AzureAD (Entra ID) and ADFS authorization
  servers publish at `.../FederationMetadata/2007-06/FederationMetadata.xml`: the `entityID` of the
  `EntityDescriptor` is the issuer, and the signing certificates are the `X509Certificate`s of the
  `KeyDescriptor`s (`use="signing"`, or no `use`) of its `RoleDescriptor`s and `IDPSSODescriptor`.
  The XML is parsed with DTDs refused, so no entity (internal or external) can ever be expanded.

A document is valid when at least one signing key carries an X.509 certificate that parses.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import collections
import functools
import hashlib
import json
import marshal
import re
import ssl
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, NoReturn, Protocol
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat

import httpx

from reconciler.errors import MetadataError

DOWNLOADS_AT_ONCE = 16
"""Metadata documents downloaded at once by one run (each URL once)."""

MAX_DOCUMENT_BYTES = 1024 * 1024
"""A metadata document is a few kilobytes; anything this large is not one (and is not read further)."""

DocumentKind = Literal["json", "federation"]

_TENANT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_KEY_ROLES = frozenset({"roledescriptor", "idpssodescriptor"})


@dataclass(frozen=True)
class SigningKey:
    """One signing certificate the document publishes (DER), with the x5t the document claims for it."""

    x5t: str | None
    certificate_der: bytes

    @functools.cached_property
    def thumbprint(self) -> str:
        """SHA-1 of the DER, upper-case hex: how Windows and the cmdlets show a certificate (worked out once per key:
        the trust graph asks for it for every link to the document)."""
        return hashlib.sha1(self.certificate_der).hexdigest().upper()


@dataclass(frozen=True)
class MetadataDocument:
    """The parts of a metadata document the trust depends on.

    For federation metadata there is no service name of the S2S kind: `service_name` and `issuer`
    are both the `entityID` (what Exchange records as an auth server's IssuerIdentifier), `realm` is
    the tenant id when the entityID names one (`https://sts.windows.net/<tenantId>/`) and `name` is None.
    """

    url: str
    service_name: str | None
    realm: str | None
    issuer: str | None
    name: str | None
    keys: tuple[SigningKey, ...]
    kind: DocumentKind = "json"


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


def _x509() -> ModuleType:
    """cryptography's X.509 module, imported when a document's certificates are first read (by then the plan's
    other work is under way; reconciler.manifest.ahead imports it earlier when it has time to spare)."""
    from cryptography import x509

    return x509


def _certificate(value: str) -> bytes | None:
    """DER of a base64 certificate (whitespace ignored), or None when it is not one."""
    try:
        der = base64.b64decode("".join(value.split()), validate=True)
        _x509().load_der_x509_certificate(der)
    except (binascii.Error, ValueError):
        return None
    return der


# --- telling the two families apart -------------------------------------------------------------

def _head(content: bytes) -> str:
    """The start of the body as text, byte order mark and leading whitespace removed."""
    sample = content[:512]
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                       (codecs.BOM_UTF16_BE, "utf-16-be")):
        if sample.startswith(bom):
            return sample[len(bom):].decode(codec, "ignore").lstrip()
    return sample.decode("utf-8", "ignore").lstrip()


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _declares_xml(content_type: str | None) -> bool:
    media = _media_type(content_type)
    return media in ("application/xml", "text/xml") or media.endswith("+xml")


def _looks_like_xml(content: bytes, content_type: str | None) -> bool:
    """XML when the body starts with `<` (an HTML page does not count); otherwise the Content-Type decides.

    An HTML page (a sign-in or error page served instead of the document) is read as JSON, and so
    fails as "not JSON": it is neither family, and JSON is what most metadata URLs serve.
    """
    head = _head(content)
    if head.startswith(("{", "[")):
        return False
    if head.startswith("<"):
        lowered = head.lower()
        return not lowered.startswith(("<!doctype html", "<html"))
    return _declares_xml(content_type)


# --- JSON metadata -------------------------------------------------------------------------------

def _signing_key(entry: Any) -> SigningKey | None:
    """The key entry as a SigningKey, or None when it is not a usable signing certificate."""
    if not isinstance(entry, Mapping) or not _equals(_get(entry, "usage"), "signing"):
        return None
    keyvalue = _get(entry, "keyvalue")
    if not isinstance(keyvalue, Mapping) or not _equals(_get(keyvalue, "type"), "x509Certificate"):
        return None
    value = _get(keyvalue, "value")
    der = _certificate(value) if isinstance(value, str) else None
    if der is None:
        return None
    keyinfo = _get(entry, "keyinfo")
    x5t = _text(_get(keyinfo, "x5t")) if isinstance(keyinfo, Mapping) else None
    return SigningKey(x5t=x5t, certificate_der=der)


def _parse_json(url: str, content: bytes) -> MetadataDocument:
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
    principal, at, issuer_realm = (issuer or "").partition("@")
    # An issuer may be written principal/host@realm (as ACS writes its audiences): the service is the principal.
    issuer_service = principal.partition("/")[0]
    return MetadataDocument(
        url=url,
        service_name=_text(_get(data, "serviceName")) or _text(issuer_service),
        realm=_text(_get(data, "realm")) or (_text(issuer_realm) if at else None),
        issuer=issuer,
        name=_text(_get(data, "name")),
        keys=keys,
        kind="json",
    )


# --- federation metadata XML ---------------------------------------------------------------------

class _Refused(Exception):
    """The XML declares a DTD (the only place entities can be declared)."""


def _refuse(*_: object) -> NoReturn:
    raise _Refused


def _clark(name: str) -> str:
    """expat's `namespace}local` as ElementTree's `{namespace}local`."""
    return "{" + name if "}" in name else name


def _read_xml(url: str, content: bytes) -> Element:
    """Parse XML with expat, refusing any DTD, so no entity can be declared, let alone expanded.

    Internal entities (the "billion laughs") and external ones (file or network reads) both need a
    DTD; refusing the DOCTYPE when it starts refuses them all before any is read.
    """
    builder = TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse

    def start(name: str, attributes: dict[str, str]) -> None:
        builder.start(_clark(name), {_clark(key): value for key, value in attributes.items()})

    def end(name: str) -> None:
        builder.end(_clark(name))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(content, True)
        return builder.close()
    except _Refused:
        raise MetadataError(url, "XML with a DTD or entity declarations (refused)") from None
    except (expat.ExpatError, ValueError):
        raise MetadataError(url, "not XML") from None


def _local(tag: str) -> str:
    """An element or attribute name without its namespace, lower-cased (names match case-insensitively)."""
    return tag.rpartition("}")[2].lower()


def _attribute(element: Element, name: str) -> str | None:
    """An attribute by case-insensitive local name (exact spelling wins)."""
    if name in element.attrib:
        return element.attrib[name]
    lowered = name.lower()
    return next((value for key, value in element.attrib.items() if _local(key) == lowered), None)


def _children(element: Element, names: frozenset[str] | str) -> Iterator[Element]:
    wanted = {names} if isinstance(names, str) else names
    return (child for child in element if _local(child.tag) in wanted)


def _federation_keys(root: Element) -> tuple[SigningKey, ...]:
    """Signing certificates of the roles' KeyDescriptors, in document order, each once.

    The document's own Signature also carries a certificate; it is not a KeyDescriptor and is not read.
    """
    found: list[SigningKey] = []
    seen: set[bytes] = set()
    for role in _children(root, _KEY_ROLES):
        for descriptor in _children(role, "keydescriptor"):
            use = _attribute(descriptor, "use")
            if use is not None and use.strip().lower() != "signing":
                continue  # no `use` means the key serves both purposes (SAML metadata)
            for element in descriptor.iter():
                if _local(element.tag) != "x509certificate":
                    continue
                der = _certificate("".join(element.itertext()))
                if der is not None and der not in seen:
                    seen.add(der)
                    found.append(SigningKey(x5t=None, certificate_der=der))
    return tuple(found)


def _tenant_of(entity_id: str) -> str | None:
    """The tenant id an Entra ID issuer names (`https://sts.windows.net/<tenantId>/`), else None."""
    first = urlsplit(entity_id).path.strip("/").partition("/")[0]
    return first if _TENANT_ID.fullmatch(first) else None


def _parse_federation(url: str, content: bytes) -> MetadataDocument:
    root = _read_xml(url, content)
    if _local(root.tag) != "entitydescriptor":
        raise MetadataError(url, "XML but not federation metadata")
    keys = _federation_keys(root)
    if not keys:
        raise MetadataError(url, "no signing certificate")
    entity_id = (_attribute(root, "entityID") or "").strip() or None
    return MetadataDocument(
        url=url,
        service_name=entity_id,
        realm=_tenant_of(entity_id) if entity_id else None,
        issuer=entity_id,
        name=None,
        keys=keys,
        kind="federation",
    )


# --- entry points --------------------------------------------------------------------------------

def parse_metadata(url: str, content: bytes, content_type: str | None = None) -> MetadataDocument:
    """Parse a downloaded document; raise MetadataError if it is not a valid metadata document.

    `content_type` (the response's Content-Type, when known) only decides for a body whose first
    character is neither `{`/`[` nor `<`, i.e. which error such a body gets.
    """
    if _looks_like_xml(content, content_type):
        return _parse_federation(url, content)
    return _parse_json(url, content)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings of every metadata download: httpx's own default (certifi's roots; SSL_CERT_FILE and
    SSL_CERT_DIR honoured), made once per process where each client made its own (~15 ms each)."""
    return httpx.create_ssl_context()


def download_client(timeout: float, limits: httpx.Limits | None = None) -> httpx.Client:
    """An HTTP client for metadata documents, as the cmdlets fetch them: redirects followed, the shared TLS settings."""
    if limits is None:
        return httpx.Client(follow_redirects=True, timeout=timeout, verify=tls_context())
    return httpx.Client(follow_redirects=True, timeout=timeout, verify=tls_context(), limits=limits)


def prepare_downloads() -> None:
    """Make now what a plan's first download would make (the TLS settings, httpx's connection machinery, the
    certificate reader): for a process that has time to spare before it knows what to download
    (reconciler.manifest.ahead)."""
    tls_context()
    import httpcore  # noqa: F401  (what httpx imports for its first client)

    _x509()


def fetch_metadata(url: str, client: httpx.Client | None = None, timeout: float = 10.0) -> MetadataDocument:
    """GET the document (following redirects) and parse it, as the cmdlets do when they run.

    Any failure (connection, timeout, non-2xx, oversized or invalid body) is a MetadataError.
    """
    if client is None:
        with download_client(timeout) as own:
            return _fetch(url, own, timeout)
    return _fetch(url, client, timeout)


def _fetch(url: str, client: httpx.Client, timeout: float) -> MetadataDocument:
    try:
        with client.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            if not response.is_success:
                raise MetadataError(url, f"HTTP {response.status_code}")
            content_type = response.headers.get("content-type")
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
    return parse_metadata(url, bytes(body), content_type)


class Elsewhere(Protocol):
    """Another process that downloads documents for this one, once (reconciler.manifest.ahead.Downloader)."""

    def send(self, request: bytes) -> bool: ...

    def receive(self, timeout: float) -> bytes | None: ...

    def close(self) -> None: ...


def answer_downloads(request: bytes) -> bytes:
    """In the process asked (`Elsewhere`): the documents of a request (`Documents.start`), downloaded and read as
    this process downloads and reads them (`Documents.fetch`), as the answer `Documents` decodes."""
    urls, timeout = marshal.loads(request)
    with Documents(float(timeout)) as documents:
        found = documents.fetch([str(url) for url in urls])
    return marshal.dumps(tuple(
        (url, doc.detail) if isinstance(doc, MetadataError) else
        (url, doc.url, doc.service_name, doc.realm, doc.issuer, doc.name,
         tuple((key.x5t, key.certificate_der) for key in doc.keys), doc.kind)
        for url, doc in found.items()))


def _answered(answer: bytes | None) -> dict[str, MetadataDocument | MetadataError]:
    """The documents in an answer of `answer_downloads` (none for no answer, or one that does not read)."""
    found: dict[str, MetadataDocument | MetadataError] = {}
    if answer is None:
        return found
    try:
        for item in marshal.loads(answer):
            if len(item) == 2:
                found[item[0]] = MetadataError(item[0], item[1])
            else:
                url, at, service_name, realm, issuer, name, keys, kind = item
                found[url] = MetadataDocument(at, service_name, realm, issuer, name,
                                              tuple(SigningKey(x5t, der) for x5t, der in keys), kind)
    except (ValueError, EOFError, TypeError):
        return {}
    return found


class Documents:
    """The metadata documents of one run: each URL downloaded once, concurrently, over one shared client.

    The plan-time checks and the trust graph ask for the same documents; whichever asks first downloads
    them, the other reads the answers kept here. A failure is kept as its MetadataError, so it is reported,
    never retried within the run. Use as a context manager (or call `close`): the client is closed with it
    unless it was given.

    Given another process (`elsewhere`), the documents `start` is given are downloaded there (on another core, not
    by this process's threads) and read from its answer by the first `fetch`; whatever it does not answer (it
    failed, or gave no answer in time) is downloaded here then.
    """

    def __init__(self, timeout: float = 10.0, client: httpx.Client | None = None, *,
                 concurrency: int = DOWNLOADS_AT_ONCE, elsewhere: Elsewhere | None = None) -> None:
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self._client = client
        self._own = client is None
        self._elsewhere = elsewhere
        self._away: list[str] = []  # what `_elsewhere` was asked for and has not answered yet
        self._results: dict[str, MetadataDocument | MetadataError] = {}
        self._pending: dict[str, Future[MetadataDocument | MetadataError]] = {}
        self._lock = threading.Lock()
        self._queue: collections.deque[tuple[str, Future[MetadataDocument | MetadataError]]] = collections.deque()
        self._workers = 0  # background downloaders running (guarded by _queued)
        self._closed = False
        self._queued = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
                self._client = download_client(self.timeout, limits)
            return self._client

    def _one(self, url: str) -> MetadataDocument | MetadataError:
        try:
            return fetch_metadata(url, client=self._http(), timeout=self.timeout)
        except MetadataError as exc:
            return exc

    def start(self, urls: Iterable[str]) -> None:
        """Start downloading these documents in the background (up to `concurrency` at once), so a later `fetch`
        finds them read or under way while the caller does other work. Each URL is still downloaded once.

        The downloaders are daemon threads: closing (an error, an interrupt) drops the downloads not begun and
        does not wait for those under way, so neither a run nor the process waits on a slow server for nothing."""
        missing = [url for url in dict.fromkeys(urls) if url not in self._results and url not in self._pending
                   and url not in self._away]
        if not missing:
            return
        elsewhere = self._elsewhere
        if elsewhere is not None and not self._away:
            if elsewhere.send(marshal.dumps((tuple(missing), self.timeout))):
                self._away = missing
                return
            self._elsewhere = None
        with self._queued:
            if self._closed:
                return
            for url in missing:
                future: Future[MetadataDocument | MetadataError] = Future()
                self._pending[url] = future
                self._queue.append((url, future))
            spawn = min(self.concurrency - self._workers, len(self._queue))
            self._workers += max(0, spawn)
        for _ in range(spawn):
            threading.Thread(target=self._download, name="metadata", daemon=True).start()

    def _download(self) -> None:
        while True:
            with self._queued:
                if self._closed or not self._queue:
                    self._workers -= 1
                    last = self._closed and self._workers == 0
                    break
                url, future = self._queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._one(url))
            except BaseException as exc:  # kept for fetch to raise, as a pool would
                future.set_exception(exc)
        if last:
            self._close_client()  # closed while this one was under way: the last downloader closes the client

    def fetch(self, urls: Iterable[str]) -> dict[str, MetadataDocument | MetadataError]:
        """The answer for each URL (downloading those not seen yet, up to `concurrency` at once; waiting for those
        `start` set going)."""
        wanted = list(dict.fromkeys(urls))
        self._collect()
        missing = [url for url in wanted if url not in self._results and url not in self._pending]
        if len(missing) == 1 or (missing and self.concurrency == 1):
            self._results.update((url, self._one(url)) for url in missing)
        elif missing:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(missing)),
                                    thread_name_prefix="metadata") as pool:
                self._results.update(zip(missing, pool.map(self._one, missing), strict=True))
        for url in wanted:
            if url in self._pending:
                self._results[url] = self._pending.pop(url).result()
        return {url: self._results[url] for url in wanted}

    def _collect(self) -> None:
        """The other process's answer, once, if it was asked: what it does not answer is downloaded here."""
        elsewhere, away = self._elsewhere, self._away
        if elsewhere is None or not away:
            return
        self._elsewhere, self._away = None, []
        # Its downloads run at most `concurrency` at once, each within the timeout; a little more for it to answer.
        answered = _answered(elsewhere.receive(self.timeout * -(-len(away) // self.concurrency) + 5.0))
        self._results.update((url, answered[url]) for url in away if url in answered)

    def close(self) -> None:
        """Drop the downloads not begun; the client is closed now, or by the last download under way when it ends."""
        if self._elsewhere is not None:
            self._elsewhere.close()
            self._elsewhere, self._away = None, []
        with self._queued:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            busy = self._workers > 0
        for _, future in dropped:
            future.cancel()
        self._pending.clear()
        if not busy:
            self._close_client()

    def _close_client(self) -> None:
        with self._lock:
            if self._own and self._client is not None:
                self._client.close()
            self._client = None if self._own else self._client

    def __enter__(self) -> Documents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
