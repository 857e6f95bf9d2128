"""Certificate values the kinds share: reading a .cer file and showing a certificate by its thumbprint."""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.errors import FieldProblem
from reconciler.portable import beside_path

if TYPE_CHECKING:
    from cryptography import x509


def load_certificate(data: bytes) -> x509.Certificate:
    """An X.509 certificate from a .cer file's bytes, DER or PEM (as Windows exports either). Raises ValueError."""
    from cryptography import x509  # what reads a certificate imports it (a plan of none does not)

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


class CertificateRole(enum.StrEnum):
    """Where a signing certificate stands on the system that signs with it."""

    CURRENT = "current"
    NEXT = "next"  # staged: takes over at its effective date
    PREVIOUS = "previous"  # replaced, still listed on the signing side


@dataclass(frozen=True)
class PublishedCertificate:
    """One certificate a target signs with (or will, or did), as its live state reports it: what the sides that
    trust the target must hold. `der` is the public certificate (None when the server did not report it);
    `effective` the date a NEXT certificate takes over; `immediate`: the manifest switches to it at once
    (no staged roll), which the sides that trust the target cannot be given ahead of time."""

    source: str
    role: CertificateRole
    thumbprint: str
    der: bytes | None = None
    subject: str = ""
    not_before: str | None = None
    not_after: str | None = None
    effective: str | None = None
    immediate: bool = False
    staged_now: bool = False  # a NEXT certificate this plan stages (not yet pending on the server)
    address: str = ""  # the source's resource that declares it (where a plan error about it belongs)

    @property
    def label(self) -> str:
        return f"{self.source}'s {self.role.value} certificate {self.thumbprint}"


class CertificateLookup(Protocol):
    """The certificates a named target publishes (empty, the problem recorded, when they cannot be known), and a
    way for a kind to report a certificate it cannot use (a plan error on the resource)."""

    def __call__(self, source: str) -> tuple[PublishedCertificate, ...]: ...

    def problem(self, message: str) -> None: ...


def der_of(value: Any) -> bytes | None:
    """A certificate's bytes as a Get reported them: ConvertTo-Json writes a byte[] (X509Certificate2.RawData) as
    an array of numbers; base64 text is accepted too. None when absent or unreadable."""
    if isinstance(value, list) and value and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    if isinstance(value, str) and value.strip():
        try:
            return base64.b64decode(value.strip(), validate=True)
        except ValueError:
            return None
    return None


def thumbprint_of_der(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


class StoreCertificates:
    """A signing target's certificates as its certificate store lists them (live records' `store` entries: thumbprint,
    subject, notBefore, notAfter, rawData), turned into what it publishes."""

    def __init__(self, source: str, address: str, store: Any) -> None:
        self.source, self.address = source, address
        entries = store if isinstance(store, list) else []
        self.by_thumbprint = {str(c.get("thumbprint") or "").strip().upper(): c
                              for c in entries if isinstance(c, Mapping)}

    def __contains__(self, thumbprint: object) -> bool:
        return thumbprint in self.by_thumbprint

    def certificate(self, role: CertificateRole, thumbprint: str, **extra: Any) -> PublishedCertificate:
        entry = self.by_thumbprint.get(thumbprint) or {}
        return PublishedCertificate(self.source, role, thumbprint, der=der_of(entry.get("rawData")),
                                    subject=str(entry.get("subject") or ""), not_before=entry.get("notBefore"),
                                    not_after=entry.get("notAfter"), address=self.address, **extra)


CERTIFICATE_OF = "certificateOf"


def certificate_of_sources(fields: Mapping[str, Any]) -> tuple[str, ...]:
    """The target a resource's `certificateOf` names, if any."""
    source = fields.get(CERTIFICATE_OF)
    return (str(source),) if source else ()


def certificate_of_schema(description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "description": description}


def resolve_current_signer(fields: Mapping[str, Any], lookup: CertificateLookup) -> dict[str, Any]:
    """`certificateOf: <target>` on a side that holds one signing certificate of its partner: it must hold the one
    that target signs with now (`signingCertificateThumbprint`)."""
    out = dict(fields)
    current = [c for c in lookup(str(out.pop(CERTIFICATE_OF))) if c.role is CertificateRole.CURRENT and not c.immediate]
    if current:
        out["signingCertificateThumbprint"] = current[0].thumbprint
    return out


def resolve_notice_only(fields: Mapping[str, Any], lookup: CertificateLookup) -> dict[str, Any]:
    """`certificateOf: <target>` on a side that re-reads its partner's document on its own schedule: nothing to
    compare, but the reference is checked, orders the targets and shows in the rotation timeline."""
    out = dict(fields)
    lookup(str(out.pop(CERTIFICATE_OF)))
    return out
