"""The Skype pool's certificate store and its OAuthTokenIssuer assignment, emulated on the lab state.

Host objects (created on first use from the host's `service` certificate, so existing states keep working):
- `CertificateStore`: the server's certificates (Thumbprint, Subject, NotBefore, NotAfter, HasPrivateKey and the
  base64 DER in `Certificate`), what Get-ChildItem Cert:\\LocalMachine\\My lists;
- `OAuthTokenIssuer`: the assigned references (Thumbprint, EffectiveDate, PreviousThumbprint), what
  Get-CsCertificate -Type OAuthTokenIssuer reports, merged with the store's details.

During a roll the pool's metadata document publishes the current and the next key (the service entry's
`nextCertificate`); when the effective date passes (the lab clock, reconciler.lab.exchange.utc_now), the next
certificate signs and the previous one stays listed until Remove-CsCertificate -Previous. Error wording for a
thumbprint not in the store is the lab's (Microsoft does not document it).
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping
from typing import Any

from reconciler.errors import CmdletError
from reconciler.kinds import skype_certificate as documented
from reconciler.lab import certs, exchange
from reconciler.lab.emulator import CmdletContext

STORE = "CertificateStore"
ISSUER = "OAuthTokenIssuer"
_EPOCH = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def store_entry(der: bytes, *, has_private_key: bool = True) -> dict[str, Any]:
    """A store entry for a DER certificate, its details read from the certificate itself."""
    from cryptography import x509  # imported by what reads a certificate

    cert = x509.load_der_x509_certificate(der)
    return {"Thumbprint": certs.thumbprint(der), "Subject": cert.subject.rfc4514_string(),
            "NotBefore": cert.not_valid_before_utc.isoformat(), "NotAfter": cert.not_valid_after_utc.isoformat(),
            "HasPrivateKey": has_private_key, "Certificate": certs.b64(der)}


def _service(context: CmdletContext) -> dict[str, Any] | None:
    if context.state is None or context.host is None:
        return None
    name = context.state["hosts"][context.host].get("service")
    found = context.state.get("services", {}).get(name)
    return found if isinstance(found, dict) else None


def _ensure(objects: dict[str, Any], context: CmdletContext, *, write: bool = False
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The store and the references (seeded from the host's signing certificate, kept only when a command
    writes: reading never changes the state); then promote a roll that is due."""
    service = _service(context)
    if STORE not in objects:
        seeded = [store_entry(certs.from_b64(str(service["certificate"])))] if service else []
        first = seeded[0] if seeded else None
        issued = [{"Thumbprint": first["Thumbprint"], "EffectiveDate": first["NotBefore"],
                   "PreviousThumbprint": ""}] if first else []
        if not write:
            return seeded, issued
        objects[STORE], objects[ISSUER] = seeded, issued
    store: list[dict[str, Any]] = objects[STORE]
    refs: list[dict[str, Any]] = objects.setdefault(ISSUER, [])
    now = exchange.utc_now()
    due = [r for r in refs if _date(r) <= now]
    if due and service is not None:
        current = max(due, key=_date)
        entry = _find(store, current["Thumbprint"])
        if entry is not None and service.get("certificate") != entry["Certificate"]:
            service["certificate"] = entry["Certificate"]
        if not [r for r in refs if _date(r) > now]:
            service.pop("nextCertificate", None)
            service.pop("nextEffective", None)
    return store, refs


def promote(objects: dict[str, Any], context: CmdletContext) -> None:
    """Let a staged certificate whose effective date has passed (on the lab clock) sign: what the pool does on its
    own at that date, applied whenever the lab looks at the pool."""
    if STORE in objects:
        _ensure(objects, context)


def _date(ref: Mapping[str, Any]) -> datetime.datetime:
    return documented.parse_date(ref.get("EffectiveDate")) or _EPOCH


def _find(store: list[dict[str, Any]], thumbprint: str) -> dict[str, Any] | None:
    return next((c for c in store if c["Thumbprint"].upper() == thumbprint.upper()), None)


def _types(cmdlet: str, params: Mapping[str, Any]) -> list[str]:
    value = next((v for k, v in params.items() if k.lstrip("-").lower() == "type"), None)
    types = [str(v) for v in (value if isinstance(value, list | tuple) else [value] if value else [])]
    if any(t.lower() != ISSUER.lower() for t in types):
        raise CmdletError(cmdlet, f"The lab models only -Type {ISSUER} (asked for {', '.join(types)}).")
    return types


def _param(params: Mapping[str, Any], name: str) -> Any:
    return next((v for k, v in params.items() if k.lstrip("-").lower() == name.lower()), None)


def get_certificate(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
                    context: CmdletContext) -> list[dict[str, Any]]:
    _types(cmdlet, params)
    store, refs = _ensure(objects, context)
    out = []
    for ref in refs:
        entry = _find(store, ref["Thumbprint"]) or {}
        out.append({"Thumbprint": ref["Thumbprint"], "Subject": entry.get("Subject", ""),
                    "NotBefore": entry.get("NotBefore"), "NotAfter": entry.get("NotAfter"),
                    "EffectiveDate": ref.get("EffectiveDate"), "PreviousThumbprint": ref.get("PreviousThumbprint", ""),
                    "Use": ISSUER, "SourceScope": "Global"})
    return out


def get_child_item(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
                   context: CmdletContext) -> list[dict[str, Any]]:
    path = str(_param(params, "Path") or "")
    if path.lower().rstrip("\\") != documented.STORE_PATH.lower():
        raise CmdletError(cmdlet, f"Cannot find path '{path}' because it does not exist.")
    store, _ = _ensure(objects, context)
    # X509Certificate2.RawData is a byte[]: ConvertTo-Json writes it as an array of numbers.
    return [{**{k: v for k, v in c.items() if k != "Certificate"}, "RawData": list(certs.from_b64(c["Certificate"]))}
            for c in copy.deepcopy(store)]


def set_certificate(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
                    context: CmdletContext) -> list[dict[str, Any]]:
    _types(cmdlet, params)
    store, refs = _ensure(objects, context, write=True)
    thumbprint = str(_param(params, "Thumbprint") or "").upper()
    entry = _find(store, thumbprint)
    if entry is None or not entry.get("HasPrivateKey"):
        # Lab wording: Microsoft does not document this message.
        raise CmdletError(cmdlet, f"Cannot find a certificate with thumbprint {thumbprint} and a private key in "
                                  f"{documented.STORE_PATH}.")
    now = exchange.utc_now()
    due = [r for r in refs if _date(r) <= now]
    current = max(due, key=_date)["Thumbprint"] if due else ""
    service = _service(context)
    if _param(params, "Roll"):
        effective = _param(params, "EffectiveDate")
        if effective is None:
            raise CmdletError(cmdlet, "-Roll needs -EffectiveDate.")  # documented to fail; wording the lab's
        refs[:] = [r for r in refs if _date(r) <= now]  # a new roll replaces a pending one
        refs.append({"Thumbprint": thumbprint, "EffectiveDate": str(effective), "PreviousThumbprint": current})
        if service is not None:
            service["nextCertificate"] = entry["Certificate"]
            service["nextEffective"] = str(effective)  # the document follows the clock (reconciler.lab.server)
    else:
        refs[:] = [{"Thumbprint": thumbprint, "EffectiveDate": now.isoformat(), "PreviousThumbprint": current}]
        if service is not None:
            service["certificate"] = entry["Certificate"]
            service.pop("nextCertificate", None)
            service.pop("nextEffective", None)
    return []


def remove_certificate(cmdlet: str, params: Mapping[str, Any], objects: dict[str, Any],
                       context: CmdletContext) -> list[dict[str, Any]]:
    _types(cmdlet, params)
    _, refs = _ensure(objects, context, write=True)
    now = exchange.utc_now()
    due = sorted((r for r in refs if _date(r) <= now), key=_date)
    drop = due[:-1] if _param(params, "Previous") else due[-1:]
    refs[:] = [r for r in refs if r not in drop]
    return []


CMDLETS = {
    "Get-CsCertificate": get_certificate,
    "Set-CsCertificate": set_certificate,
    "Remove-CsCertificate": remove_certificate,
    "Get-ChildItem": get_child_item,
}
SYNTAX = {c.name: c for c in documented.CMDLETS}
CHANGED_BY_READING = frozenset({"Get-CsCertificate", "Get-ChildItem"})
"""Reading the certificates lets a staged roll whose date has passed take over (`_ensure`: the service's signing
certificate changes), as the pool does on its own at that date."""
