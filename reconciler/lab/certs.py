"""Real, self-signed X.509 certificates for the lab's emulated services.

The lab serves real metadata documents, so their certificates must parse like any other. Only the
certificate (DER) is kept; the private key is discarded as soon as the certificate is signed: the lab
never signs a token, and a key that is never written cannot leak.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cryptography is imported by what reads or makes a certificate (a plan of none does not)
    from cryptography import x509


def make_certificate(subject: str | x509.Name, *, now: datetime.datetime | None = None,
                     valid_from: datetime.timedelta = datetime.timedelta(days=-1),
                     valid_to: datetime.timedelta = datetime.timedelta(days=730), key_size: int = 2048) -> bytes:
    """A self-signed RSA certificate for `subject` (a common name, or a whole name), valid from `now + valid_from`
    to `now + valid_to` (default: from a day ago for two years), as DER."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = now or datetime.datetime.now(datetime.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = subject if isinstance(subject, x509.Name) else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + valid_from)
        .not_valid_after(now + valid_to)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


def load_certificate(data: bytes) -> x509.Certificate:
    """Parse DER or PEM (as a .cer file may hold either); raises ValueError if it is neither."""
    from cryptography import x509

    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def to_der(data: bytes) -> bytes:
    """DER bytes of a DER or PEM certificate (raises ValueError if it is not one)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    return load_certificate(data).public_bytes(Encoding.DER)


def thumbprint(der: bytes) -> str:
    """SHA-1 of the DER in upper-case hex: how Windows and the cmdlets name a certificate."""
    return hashlib.sha1(der).hexdigest().upper()


def x5t(der: bytes) -> str:
    """The JOSE `x5t` of a certificate: base64url SHA-1 of the DER, unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode("ascii")


def b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


def from_b64(text: str) -> bytes:
    """Decode base64 strictly (whitespace ignored); raises ValueError when it is not base64."""
    return base64.b64decode("".join(text.split()), validate=True)
