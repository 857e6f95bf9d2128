"""The Exchange server's certificate store and its Auth certificate, emulated on the lab state.

Host object `ExchangeCertificate` (created on first use from the host's `service` certificate, the one AuthConfig
signs with, so existing states keep working): real X.509 certificates made with `cryptography` (Thumbprint,
Subject, NotBefore, NotAfter, HasPrivateKey, FriendlyName, and the base64 DER in `Certificate`), what
Get-ExchangeCertificate lists. New-ExchangeCertificate makes a self-signed one (RSA of -KeySize bits); the
private key is generated and thrown away, as a key that never leaves the server would be to anyone outside it.

Get-AuthConfig and Set-AuthConfig run Exchange's emulation (reconciler.lab.exchange, which promotes a staged
certificate when its date passes on the lab clock) and then, when the store exists, point the host's metadata
document at the certificates: the current one signs, and during a roll the next one is published beside it.

Every call is bound against the syntax declared in reconciler.kinds.exchange_certificate. Lab modelling,
unconfirmed: a self-signed certificate is valid from now for five years (what MonitorExchangeAuthCertificate's
documentation implies for New-ExchangeCertificate's default; the cmdlet's page gives no lifetime); -GenerateRequest
(a request for a certification authority) is refused, with the lab's wording.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from reconciler.errors import CmdletError
from reconciler.kinds import exchange_certificate as documented
from reconciler.lab import certs, exchange
from reconciler.lab.emulator import CmdletContext

STORE = "ExchangeCertificate"
LIFETIME = datetime.timedelta(days=5 * 365)


def store_entry(der: bytes, *, has_private_key: bool = True, friendly_name: str = "") -> dict[str, Any]:
    """A store entry for a DER certificate, its details read from the certificate itself."""
    cert = x509.load_der_x509_certificate(der)
    return {"Thumbprint": certs.thumbprint(der), "Subject": cert.subject.rfc4514_string(),
            "NotBefore": cert.not_valid_before_utc.isoformat(), "NotAfter": cert.not_valid_after_utc.isoformat(),
            "HasPrivateKey": has_private_key, "FriendlyName": friendly_name, "Certificate": certs.b64(der)}


def _service(context: CmdletContext) -> dict[str, Any] | None:
    if context.state is None or context.host is None:
        return None
    name = context.state["hosts"][context.host].get("service")
    found = context.state.get("services", {}).get(name)
    return found if isinstance(found, dict) else None


def _store(objects: dict[str, Any], context: CmdletContext, *, write: bool = False) -> list[dict[str, Any]]:
    """The host's store, seeded with its signing certificate (kept only when a command writes)."""
    if STORE in objects:
        return list(objects[STORE])
    service = _service(context)
    seeded = [store_entry(certs.from_b64(str(service["certificate"])))] if service else []
    if write:
        objects[STORE] = seeded
    return seeded


def _param(params: Mapping[str, Any], name: str) -> Any:
    return next((v for k, v in params.items() if k.lstrip("-").lower() == name.lower()), None)


def _subject(text: str) -> x509.Name:
    """`cn=...` (New-ExchangeCertificate's X500DistinguishedName, the parts the lab needs)."""
    oids = {"cn": NameOID.COMMON_NAME, "o": NameOID.ORGANIZATION_NAME, "c": NameOID.COUNTRY_NAME,
            "ou": NameOID.ORGANIZATIONAL_UNIT_NAME, "l": NameOID.LOCALITY_NAME, "s": NameOID.STATE_OR_PROVINCE_NAME}
    parts = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, _, value = part.partition("=")
        if key.strip().lower() not in oids or not value.strip():
            raise CmdletError("New-ExchangeCertificate", f"The lab cannot read the subject name '{text}'.")
        parts.append(x509.NameAttribute(oids[key.strip().lower()], value.strip()))
    return x509.Name(parts)


def new_certificate(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
                    context: CmdletContext) -> list[dict[str, Any]]:
    chosen, _ = documented.NEW_EXCHANGE_CERTIFICATE.bind(params)
    if chosen.name == "Request":
        raise CmdletError(cmdlet, "The lab makes self-signed certificates only (no -GenerateRequest).")
    size = int(_param(params, "KeySize") or 2048)
    if size not in (1024, 2048, 4096):
        raise CmdletError(cmdlet, f"Cannot validate argument on parameter 'KeySize'. {size} is not 1024, 2048 or "
                                  "4096.")  # lab wording
    host = context.host or "exchange"
    name = _subject(str(_param(params, "SubjectName") or f"cn={host}"))
    der = certs.make_certificate(name, now=exchange.utc_now(), valid_from=-datetime.timedelta(minutes=5),
                                 valid_to=LIFETIME, key_size=size)
    entry = store_entry(der, friendly_name=str(_param(params, "FriendlyName") or "Microsoft Exchange"))
    objects[STORE] = [*_store(objects, context, write=True), entry]
    return [_shown(entry)]


def _shown(entry: Mapping[str, Any]) -> dict[str, Any]:
    """As Get-ExchangeCertificate reports it; RawData (a byte[], recorded in CSS-Exchange's
    GetExchangeCertifiateWithNewAuthConfigCert.xml) as ConvertTo-Json writes a byte[]: an array of numbers."""
    shown = {k: v for k, v in copy.deepcopy(dict(entry)).items() if k != "Certificate"}
    shown["RawData"] = list(certs.from_b64(str(entry["Certificate"])))
    return shown


def get_certificate(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
                    context: CmdletContext) -> list[dict[str, Any]]:
    documented.GET_EXCHANGE_CERTIFICATE.bind(params)
    wanted = str(_param(params, "Thumbprint") or _param(params, "Identity") or "").split("\\")[-1].upper()
    found = [_shown(c) for c in _store(objects, context) if not wanted or c["Thumbprint"].upper() == wanted]
    if wanted and not found:
        # Lab wording: Microsoft does not document this message.
        raise CmdletError(cmdlet, f"The certificate with thumbprint {wanted} was not found.")
    return found


def _sync(objects: dict[str, Any], context: CmdletContext) -> None:
    """The metadata document follows AuthConfig: the current certificate signs, a staged one is published."""
    service = _service(context)
    if STORE not in objects or service is None:
        return
    config = exchange.auth_config(objects)
    by_thumbprint = {c["Thumbprint"].upper(): c for c in objects[STORE]}
    current = by_thumbprint.get(str(config.get("CurrentCertificateThumbprint") or "").upper())
    staged = by_thumbprint.get(str(config.get("NextCertificateThumbprint") or "").upper())
    if current is not None:
        service["certificate"] = current["Certificate"]
    if staged is not None:
        service["nextCertificate"] = staged["Certificate"]
    else:
        service.pop("nextCertificate", None)


def get_auth_config(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
                    context: CmdletContext) -> list[dict[str, Any]]:
    out = exchange.get_auth_config(cmdlet, params, objects, context)
    _sync(objects, context)
    return out


def set_auth_config(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
                    context: CmdletContext) -> list[dict[str, Any]]:
    out = exchange.set_auth_config(cmdlet, params, objects, context)
    _sync(objects, context)
    return out


CMDLETS = {
    "New-ExchangeCertificate": new_certificate,
    "Get-ExchangeCertificate": get_certificate,
    "Get-AuthConfig": get_auth_config,
    "Set-AuthConfig": set_auth_config,
}
SYNTAX = {c.name: c for c in documented.CMDLETS}

PLATFORM = dataclasses.replace(exchange.PLATFORM, cmdlets={**exchange.PLATFORM.cmdlets, **CMDLETS},
                               syntax={**exchange.PLATFORM.syntax, **SYNTAX})
"""Exchange's platform with the certificate store: the emulator serves Exchange hosts with this one."""
