"""Certificate values the kinds share: reading a .cer file and showing a certificate by its thumbprint."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from cryptography import x509

from reconciler.errors import FieldProblem
from reconciler.portable import beside_path


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


def certificate_file(manifest_dir: Path, name: str, field: str, prefix: str = "") -> x509.Certificate:
    """The certificate a manifest names by file (relative to the manifest; a drive letter or UNC path on Windows
    as it is). Raises FieldProblem on `field`, `prefix` leading the message (e.g. a list entry's `[0] `)."""
    try:
        return load_certificate(beside_path(manifest_dir, name).read_bytes())
    except OSError as exc:
        raise FieldProblem(field, f"{prefix}cannot read certificate file {name!r}: {exc.strerror or exc}") from None
    except ValueError:
        raise FieldProblem(field, f"{prefix}{name!r} is not an X.509 certificate "
                                  "(expected a .cer file in DER or PEM)") from None
