"""Certificate values the kinds share: reading a .cer file and showing a certificate by its thumbprint."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography import x509


def load_certificate(data: bytes) -> x509.Certificate:
    """An X.509 certificate from a .cer file's bytes, DER or PEM (as Windows exports either). Raises ValueError."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def certificate_thumbprint(raw_base64: Any) -> str:
    """SHA-1 thumbprint of a base64 DER certificate, as Windows shows it. Never shows key material."""
    try:
        der = base64.b64decode(str(raw_base64), validate=False)
    except (ValueError, TypeError):
        return "(unreadable certificate)"
    return "certificate " + hashlib.sha1(der).hexdigest().upper()
