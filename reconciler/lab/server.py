"""The lab's HTTP server: real metadata documents over real HTTP.

The cmdlets download metadata documents when they run and plan checks them first, so the lab serves
them for real (whatever the transport or a test reaches over loopback). Each document's `status`
in the state says how it answers: `ok` (the JSON document), `invalid` (an HTML page, as a captive
portal or an error page would be), `notfound` (404) or `unreachable` (the connection is closed
without a response).

The server reads the state on every request WITHOUT the writers' lock (see reconciler.lab.state):
the lab transport holds that lock while a cmdlet downloads from here.

The same server answers for two more emulated hosts, Microsoft Entra ID's token endpoint
(`/login.microsoftonline.com/{tenant}/oauth2/v2.0/token`) and Microsoft Graph
(`/graph.microsoft.com/v1.0/...`): see reconciler.lab.graph. Those requests DO take the writers' lock,
briefly (they count round trips and store tokens); nothing holds it while calling Graph.
"""

from __future__ import annotations

import json
import signal
import threading
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

from reconciler import clock
from reconciler.background import BackgroundHTTPServer
from reconciler.errors import ReconcilerError
from reconciler.kinds import skype_certificate
from reconciler.lab import certs, graph
from reconciler.lab.state import DEFAULT_PORT, LabStore

MAX_BODY = 4 * 1024 * 1024

INVALID_PAGE = (
    "<!DOCTYPE html><html><head><title>Sign in</title></head>"
    "<body><h1>Sign in to continue</h1><p>This is not a metadata document.</p></body></html>"
)


def render_document(svc: Mapping[str, Any], location: str) -> dict[str, Any]:
    """A metadata document for a service, written the way its product writes it.

    `exchange`: Exchange's shape (lower-case `keyvalue`, `realm`, `serviceName`); Skype's is alike.
    `sharepoint`: `keyValue`, `Signing`, `x509certificate`, no `realm` (only in `issuer`).
    `acs`: no `serviceName` (only in `issuer`), an issuance endpoint.
    """
    service_name = str(svc["serviceName"])
    realm = str(svc["realm"])
    der = certs.from_b64(str(svc["certificate"]))
    issuer = f"{service_name}@{realm}"
    style = str(svc.get("style", "exchange")).lower()
    stable_id = "_" + str(uuid.uuid5(uuid.NAMESPACE_URL, issuer + location))
    if style == "sharepoint":
        return {
            "serviceName": service_name,
            "version": "1.0",
            "name": svc.get("name") or "SharePoint",
            "issuer": issuer,
            "allowedAudiences": [issuer],
            "keys": [{
                "keyinfo": {"x5t": certs.x5t(der)},
                "usage": "Signing",
                "keyValue": {"type": "x509certificate", "value": certs.b64(der)},
            }],
            "endpoints": [{"location": location, "protocol": "OAuth2", "usage": "metadata"}],
        }
    keys = [{
        "usage": "signing",
        "keyinfo": {"x5t": certs.x5t(der)},
        "keyvalue": {"type": "x509Certificate", "value": certs.b64(der)},
    }]
    next_b64 = svc.get("nextCertificate")
    effective = skype_certificate.parse_date(svc.get("nextEffective"))
    if next_b64 and effective is not None and effective <= clock.utc_now():  # the roll took over at its date
        der, next_b64 = certs.from_b64(str(next_b64)), None
        keys[0] = {"usage": "signing", "keyinfo": {"x5t": certs.x5t(der)},
                   "keyvalue": {"type": "x509Certificate", "value": certs.b64(der)}}
    if next_b64:  # during a roll the document publishes the next key too
        next_der = certs.from_b64(str(next_b64))
        keys.append({"usage": "signing", "keyinfo": {"x5t": certs.x5t(next_der)},
                     "keyvalue": {"type": "x509Certificate", "value": certs.b64(next_der)}})
    if style == "acs":
        return {
            "version": "1.0",
            "realm": realm,
            "name": svc.get("name") or "Microsoft Azure ACS",
            "issuer": issuer,
            "allowedAudiences": [issuer],
            "keys": keys,
            "endpoints": [{
                "location": "https://accounts.accesscontrol.windows.net/tokens/OAuth/2",
                "protocol": "OAuth2",
                "usage": "issuance",
            }],
        }
    return {
        "id": stable_id,
        "version": "1.0",
        "name": svc.get("name") or "Exchange",
        "realm": realm,
        "serviceName": service_name,
        "issuer": issuer,
        "allowedAudiences": [issuer],
        "keys": keys,
        "endpoints": [{"location": location, "protocol": "OAuth2", "usage": "metadata"}],
    }


def render_federation(svc: Mapping[str, Any]) -> bytes:
    """Federation metadata XML for a service of style `entra`, in the shape Microsoft Entra ID publishes at
    `https://login.windows.net/<tenant>/federationmetadata/2007-06/federationmetadata.xml`: entityID the issuer
    (`https://sts.windows.net/<tenant>/`), the signing certificate in a WS-Federation RoleDescriptor and in the
    IDPSSODescriptor (what reconciler.metadata reads). Unsigned: the lab's document has no Signature element."""
    entity_id = escape(str(svc["serviceName"]), {'"': "&quot;"})
    key = (f'<KeyDescriptor use="signing"><KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#"><X509Data>'
           f'<X509Certificate>{svc["certificate"]}</X509Certificate></X509Data></KeyInfo></KeyDescriptor>')
    stable_id = "_" + str(uuid.uuid5(uuid.NAMESPACE_URL, str(svc["serviceName"])))
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" ID="{stable_id}" entityID="{entity_id}">'
        '<RoleDescriptor xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:fed="http://docs.oasis-open.org/wsfed/federation/200706" xsi:type="fed:SecurityTokenServiceType" '
        f'protocolSupportEnumeration="http://docs.oasis-open.org/wsfed/federation/200706">{key}</RoleDescriptor>'
        f'<IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{key}'
        '</IDPSSODescriptor></EntityDescriptor>'
    ).encode()


def find_document(state: Mapping[str, Any], path: str) -> tuple[str, Mapping[str, Any]] | None:
    """The document entry for a URL path (exact first, then ignoring case as IIS does)."""
    documents: Mapping[str, Any] = state.get("documents", {})
    if path in documents:
        return path, documents[path]
    lowered = path.lower()
    return next(((p, d) for p, d in documents.items() if p.lower() == lowered), None)


class _Handler(BaseHTTPRequestHandler):
    server: _LabHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "reconciler-lab/1"
    timeout = 30  # drop idle keep-alive connections rather than keep their threads forever
    # A response leaves in one write, without Nagle's delay: unbuffered, the headers and the body went out
    # as two small segments, and on a kept-open connection the second waited ~40 ms for the client's
    # delayed ACK. Buffered, BaseHTTPRequestHandler flushes once after each request.
    disable_nagle_algorithm = True
    wbufsize = -1

    def do_GET(self) -> None:
        if self._api("GET"):
            return
        path = unquote(urlsplit(self.path).path)
        if path == "/healthz":
            self._send(HTTPStatus.OK, "text/plain; charset=utf-8", b"ok")
            return
        try:
            state = self.server.store.read()
        except ReconcilerError as exc:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", str(exc).encode())
            return
        found = find_document(state, path)
        if found is None:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found")
            return
        status = str(found[1].get("status", "ok"))
        if status == "unreachable":
            self.close_connection = True  # no response at all: the client sees the connection drop
            return
        if status == "notfound":
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found")
            return
        if status == "invalid":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", INVALID_PAGE.encode())
            return
        svc = state.get("services", {}).get(found[1].get("service"))
        if svc is None:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"no such service")
            return
        if str(svc.get("style", "")).lower() == "entra":
            self._send(HTTPStatus.OK, "application/xml; charset=utf-8", render_federation(svc))
            return
        location = f"http://{self.headers.get('Host', 'localhost')}{found[0]}"
        body = json.dumps(render_document(svc, location)).encode()
        self._send(HTTPStatus.OK, "application/json; charset=utf-8", body)

    def do_POST(self) -> None:
        self._other("POST")

    def do_PATCH(self) -> None:
        self._other("PATCH")

    def do_PUT(self) -> None:
        self._other("PUT")

    def do_DELETE(self) -> None:
        self._other("DELETE")

    def _other(self, method: str) -> None:
        """Methods other than GET: only the emulated Entra ID and Graph hosts take them."""
        if not self._api(method) and self._read_body() is not None:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", b"method not allowed")

    def _api(self, method: str) -> bool:
        """Answer a request for the emulated Entra ID or Graph hosts; False when the path is neither."""
        split = urlsplit(self.path)
        path = unquote(split.path)
        segments = path.split("/", 2)
        if len(segments) < 2 or segments[1].lower() not in graph.HOSTS:
            return False
        body = self._read_body()
        if body is None:
            return True
        headers = {name.lower(): value for name, value in self.headers.items()}
        origin = f"http://{self.headers.get('Host', 'localhost')}"
        try:
            response = graph.handle(self.server.store, method, path, split.query, headers, body, origin)
        except ReconcilerError as exc:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", str(exc).encode())
            return True
        if response is None:  # not reached: the host was checked above
            return False
        payload = response.payload()
        self.send_response(response.status)
        if payload or response.status != HTTPStatus.NO_CONTENT:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status != HTTPStatus.NO_CONTENT:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        return True

    def _read_body(self) -> bytes | None:
        """The request body (Content-Length or chunked); None after answering 400/413 for a bad one."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024).split(b";", 1)[0].strip()
                try:
                    size = int(line, 16)
                except ValueError:
                    self._refuse(HTTPStatus.BAD_REQUEST, b"bad chunked body")
                    return None
                total += size
                if total > MAX_BODY:
                    self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"request body too large")
                    return None
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._refuse(HTTPStatus.BAD_REQUEST, b"bad Content-Length")
            return None
        if length < 0:
            self._refuse(HTTPStatus.BAD_REQUEST, b"bad Content-Length")
            return None
        if length > MAX_BODY:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"request body too large")
            return None
        return self.rfile.read(length) if length else b""

    def _refuse(self, status: HTTPStatus, message: bytes) -> None:
        self.close_connection = True  # the unread body would be taken for the next request
        self._send(status, "text/plain; charset=utf-8", message)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per request would drown the demo's output."""


class _LabHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog (5) drops the SYNs of a client opening more connections at once (a plan
    # downloads its documents concurrently); each dropped one is retried only after a second.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], store: LabStore) -> None:
        self.store = store
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that hangs up mid-response is not worth a traceback on stderr."""


class LabServer(BackgroundHTTPServer):
    """Serves the lab's metadata documents, Graph and token endpoint from a state file, in a daemon thread."""

    thread_name = "lab-server"
    description = "the lab server"

    def __init__(self, state_path: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        super().__init__(host, port)
        self.store = LabStore(state_path)

    def make_server(self, address: tuple[str, int]) -> ThreadingHTTPServer:
        return _LabHTTPServer(address, self.store)

    def serve_forever(self) -> None:
        """Serve until SIGINT or SIGTERM (for `reconcile lab serve`; call from the main thread)."""
        stop = threading.Event()

        def _on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()
