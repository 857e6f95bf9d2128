"""Access tokens for Microsoft Graph: the OAuth 2.0 client-credentials grant of Microsoft Entra ID.

`POST {authority}/{tenant}/oauth2/v2.0/token` with `client_id`, `scope={graphUrl}/.default`,
`grant_type=client_credentials` and one credential:

* a client secret (`client_secret`), read from an environment variable or from a private file, or
* a certificate assertion (`client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`,
  `client_assertion`): a JWT signed RS256 with the app's private key; its header names the
  certificate by `x5t#S256` (base64url SHA-256 of the DER) and `x5t` (SHA-1), its claims are `aud`
  (the token endpoint), `iss` = `sub` = the client id, `jti`, `nbf`, `iat` and `exp` (10 minutes).

Secrets are read lazily, on the first token request, and kept in `Sensitive` wrappers whose repr is
the mask. No message, repr or exception here ever contains the secret, the private key, an
assertion or an access token; every value that could is also listed by `sensitive_values()` so the
transport can scrub text it did not write (an echo in a server's error message).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from reconciler.errors import TransportError
from reconciler.transports.base import MASK, Sensitive, check_private

if TYPE_CHECKING:  # cryptography is imported by what signs or reads a certificate
    from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_SECRET_ENV = "RECONCILE_GRAPH_CLIENT_SECRET"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 600.0
"""Seconds a certificate assertion is valid (`exp` - `nbf`)."""
EXPIRY_MARGIN = 300.0
"""A token is renewed this long before Entra ID says it expires ..."""
MINIMUM_CACHE = 60.0
"""... or cached this long when that margin would leave less (never past its own expiry)."""
AUTH_HINT = "check the client id, tenant and credential"

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_NAME = 128
NOT_A_NAME = "must name an environment variable (the value given is not a name; it was not shown)"
"""Said of a setting that should name a variable but holds something else, quite likely the secret itself."""


def is_env_name(value: object) -> bool:
    """Whether `value` can be the name of an environment variable, and does not look like a pasted secret.

    A name is letters, digits and `_`, not starting with a digit, at most MAX_ENV_NAME long. A part
    between underscores of 16 or more characters with digits that also mixes lower and upper case,
    or is a fifth digits or more, is taken for a secret (names read like RECONCILE_GRAPH_CLIENT_SECRET,
    secrets like `aX9kQ2...` or hex). Whatever the answer, callers never show the value: it may be
    the secret.
    """
    if not isinstance(value, str) or len(value) > MAX_ENV_NAME or not ENV_NAME.match(value):
        return False
    return not any(_random(part) for part in value.split("_"))


def _random(part: str) -> bool:
    digits = sum(c.isdigit() for c in part)
    if len(part) < 16 or not digits:
        return False
    mixed = any(c.islower() for c in part) and any(c.isupper() for c in part)
    return mixed or digits * 5 >= len(part)


PostForm = Callable[[str, Mapping[str, str]], httpx.Response]
"""Sends a form POST (with the caller's timeouts and retries) and returns the final response."""


def variants(value: str) -> tuple[str, ...]:
    """A value and the encodings in which a server might echo it (form, URL and JSON escaping)."""
    if not value:
        return ()
    found = {value, urllib.parse.quote_plus(value), urllib.parse.quote(value, safe=""), json.dumps(value)[1:-1]}
    return tuple(sorted(found, key=len, reverse=True))


JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*)?")
"""A JSON Web Token (or the start of one): access tokens and assertions are JWTs, whoever wrote them."""


def scrub(text: str, values: tuple[str, ...]) -> str:
    """`text` with every sensitive value (and its encodings), and anything shaped like a JWT, masked."""
    for value in values:
        for form in variants(value):
            if form in text:
                text = text.replace(form, MASK)
    return JWT.sub(MASK, text)


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TransportError(f"{what}: cannot read {path} ({exc.strerror or type(exc).__name__})") from None


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --- credentials -------------------------------------------------------------------------------------


class Credential(Protocol):
    """How this app proves who it is at the token endpoint."""

    description: str
    """For people: where the credential comes from (never the credential)."""

    def form_fields(self, token_url: str, client_id: str, now: float) -> dict[str, str]:
        """The credential's form fields for one token request (reads the secret or key on first use)."""
        ...

    def sensitive_values(self) -> tuple[str, ...]:
        """Every secret value this credential has read or made so far (for scrubbing text)."""
        ...


class ClientSecret:
    """A client secret read lazily from an environment variable or a private file."""

    def __init__(self, read: Callable[[], str], description: str) -> None:
        self._read = read
        self._secret: Sensitive | None = None
        self.description = description

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None, *, missing: str = "") -> ClientSecret:
        """`missing`: what to say when the variable is unset (default: that it is).

        A `name` that is not one (a secret pasted where its variable's name belongs) is refused
        when the secret is first needed, and never shown.
        """
        if not is_env_name(name):

            def refuse() -> str:
                raise TransportError(f"connection.clientSecretEnv {NOT_A_NAME}")

            return cls(refuse, "client secret from an environment variable (the name given is not one)")

        def read() -> str:
            source = os.environ if environ is None else environ
            value = source.get(name, "").strip()
            if not value:
                raise TransportError(missing or f"the environment variable {name} (the client secret) is not set "
                                     "or empty")
            return value

        return cls(read, f"client secret from the environment variable {name}")

    @classmethod
    def from_file(cls, path: Path) -> ClientSecret:
        def read() -> str:
            what = "connection.clientSecretFile"
            check_private(path, what)
            try:
                value = _read_bytes(path, what).decode("utf-8").strip()
            except UnicodeDecodeError:
                raise TransportError(f"{what}: {path} is not UTF-8 text") from None
            if not value:
                raise TransportError(f"{what}: {path} is empty")
            if "\n" in value:
                raise TransportError(f"{what}: {path} must hold the secret alone, on one line")
            return value

        return cls(read, f"client secret from the file {path}")

    def _value(self) -> str:
        if self._secret is None:
            self._secret = Sensitive(self._read())
        return self._secret.reveal()

    def form_fields(self, token_url: str, client_id: str, now: float) -> dict[str, str]:
        return {"client_secret": self._value()}

    def sensitive_values(self) -> tuple[str, ...]:
        return () if self._secret is None else (self._secret.reveal(),)

    def __repr__(self) -> str:
        return f"ClientSecret({self.description})"


class CertificateAssertion:
    """A JWT client assertion signed RS256 with the private key of the app's certificate."""

    def __init__(self, key_file: Path, certificate_file: Path) -> None:
        self.key_file = key_file
        self.certificate_file = certificate_file
        self.description = f"certificate {certificate_file} with the private key {key_file}"
        self._key: rsa.RSAPrivateKey | None = None
        self._thumbprints: tuple[str, str] = ("", "")
        self._assertions: list[Sensitive] = []

    def _load(self) -> rsa.RSAPrivateKey:
        if self._key is not None:
            return self._key
        from cryptography import x509
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        what = "connection.certificateKeyFile"
        check_private(self.key_file, what)
        pem = _read_bytes(self.key_file, what)
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except TypeError:
            raise TransportError(f"{what}: {self.key_file} is encrypted; give an unencrypted PEM key in a "
                                 "file only you can read (mode 0600)") from None
        except (ValueError, UnsupportedAlgorithm):
            # cryptography's message never quotes the key; still, say only what is wrong.
            raise TransportError(f"{what}: {self.key_file} is not a PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TransportError(f"{what}: {self.key_file} is not an RSA key (Entra ID assertions are RS256)")
        der = self._certificate_der()
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            raise TransportError(f"connection.certificateFile: {self.certificate_file} is not an X.509 "
                                 "certificate (PEM or DER)") from None
        public = certificate.public_key()
        if not isinstance(public, rsa.RSAPublicKey) or public.public_numbers() != key.public_key().public_numbers():
            raise TransportError(f"connection.certificateFile: {self.certificate_file} is not the certificate "
                                 f"of the key in {self.key_file}")
        self._thumbprints = (b64url(hashlib.sha256(der).digest()), b64url(hashlib.sha1(der).digest()))
        self._key = key
        return key

    def _certificate_der(self) -> bytes:
        data = _read_bytes(self.certificate_file, "connection.certificateFile")
        if b"-----BEGIN" not in data:
            return data
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        try:
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        except ValueError:
            raise TransportError(f"connection.certificateFile: {self.certificate_file} is not an X.509 "
                                 "certificate (PEM or DER)") from None

    def assertion(self, token_url: str, client_id: str, now: float) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        key = self._load()
        sha256, sha1 = self._thumbprints
        header = {"alg": "RS256", "typ": "JWT", "x5t#S256": sha256, "x5t": sha1}
        issued = int(now)
        claims = {
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": str(uuid.uuid4()),
            "nbf": issued,
            "iat": issued,
            "exp": issued + int(ASSERTION_LIFETIME),
        }
        signing_input = ".".join(b64url(json.dumps(part, separators=(",", ":")).encode("utf-8"))
                                 for part in (header, claims))
        signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        token = f"{signing_input}.{b64url(signature)}"
        self._assertions = [*self._assertions[-3:], Sensitive(token)]
        return token

    def form_fields(self, token_url: str, client_id: str, now: float) -> dict[str, str]:
        return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion(token_url, client_id, now)}

    def sensitive_values(self) -> tuple[str, ...]:
        return tuple(a.reveal() for a in self._assertions)

    def __repr__(self) -> str:
        return f"CertificateAssertion({self.description})"


# --- tokens ------------------------------------------------------------------------------------------


class TokenProvider:
    """Gets and caches an app-only access token.

    `token()` returns the cached token until `expires_in` minus 5 minutes (or for 60 s when that
    leaves less, never past the token's own expiry), then asks again. `invalidate()` forgets it (a
    resource said it had expired). `requests` counts token requests sent.
    """

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        scope: str,
        credential: Credential,
        post: PostForm,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.scope = scope
        self.credential = credential
        self._post = post
        self._clock = clock
        self._wall_clock = wall_clock
        self._token: Sensitive | None = None
        self._valid_until = 0.0
        self._seen: list[Sensitive] = []
        self._lock = threading.RLock()
        self.requests = 0

    def token(self) -> str:
        with self._lock:
            if self._token is not None and self._clock() < self._valid_until:
                return self._token.reveal()
            self._token = None
            fields = {
                "client_id": self.client_id,
                "scope": self.scope,
                "grant_type": "client_credentials",
                **self.credential.form_fields(self.token_url, self.client_id, self._wall_clock()),
            }
            self.requests += 1
            response = self._post(self.token_url, fields)
            del fields
            token, lifetime = self._parse(response)
            self._token = Sensitive(token)
            self._seen = [*self._seen[-3:], self._token]
            self._valid_until = self._clock() + lifetime
            return token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None
            self._valid_until = 0.0

    def sensitive_values(self) -> tuple[str, ...]:
        """The secret or recent assertions and the recent access tokens (for scrubbing text)."""
        return (*self.credential.sensitive_values(), *(t.reveal() for t in self._seen))

    def _fail(self, message: str) -> TransportError:
        text = scrub(message, self.sensitive_values())  # before shortening: a cut secret would not match
        if len(text) > 600:
            text = text[:600] + "…"
        return TransportError(f"cannot get a token for client {self.client_id} from {self.token_url}: {text}")

    def _parse(self, response: httpx.Response) -> tuple[str, float]:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not response.is_success:
            status = f"{response.status_code} {response.reason_phrase}".strip()
            if isinstance(body, Mapping) and (body.get("error") or body.get("error_description")):
                reason = describe_token_error(body)
                hint = f" ({AUTH_HINT})" if response.status_code in (400, 401) else ""
                raise self._fail(f"{response.status_code} {reason}{hint}")
            raise self._fail(f"{status} (the answer is not an OAuth error document)")
        if not isinstance(body, Mapping):
            raise self._fail("the answer is not a JSON object")
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise self._fail("the answer has no access_token")
        token_type = body.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise self._fail(f"unexpected token_type "
                             f"{scrub(str(token_type), self.sensitive_values())[:40]!r} (expected Bearer)")
        return token, cache_seconds(body.get("expires_in"))


def cache_seconds(expires_in: Any) -> float:
    """How long to keep a token Entra ID says is valid `expires_in` seconds (int or numeric string)."""
    try:
        lifetime = float(expires_in)
    except (TypeError, ValueError):
        return MINIMUM_CACHE
    if lifetime != lifetime or lifetime <= 0:  # NaN or already expired
        return 0.0
    return max(lifetime - EXPIRY_MARGIN, min(MINIMUM_CACHE, lifetime))


def describe_token_error(body: Mapping[str, Any]) -> str:
    """`AADSTS7000215: Invalid client secret provided. ...` from an OAuth error document.

    Entra ID's `error_description` starts with the AADSTS code and ends with trace and correlation
    ids on further lines: the first line is kept (and the correlation id, which support asks for).
    """
    error = str(body.get("error") or "").strip()
    description = str(body.get("error_description") or "").replace("\r\n", "\n").strip()
    first = description.split("\n", 1)[0].strip()
    codes = body.get("error_codes")
    if first and not first.startswith("AADSTS") and isinstance(codes, list) and codes:
        first = f"AADSTS{codes[0]}: {first}"
    text = first or error or "unknown error"
    if error and first and not first.startswith("AADSTS"):
        text = f"{error}: {first}"
    correlation = body.get("correlation_id")
    if isinstance(correlation, str) and correlation:
        text += f" [correlation id {correlation}]"
    return text
