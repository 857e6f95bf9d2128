"""Skype for Business Server's OAuthTokenIssuer certificate as a declared resource (kind `OAuthCertificate`).

Syntax (MicrosoftDocs/office-docs-powershell, `skype/skype-ps/SkypeForBusiness/`):
- Get-CsCertificate.md: `[-Type <CertType[]>] [-NetportId] [-Report] [[-Identity] <XdsIdentity>]`. The page's
  list of types does not name OAuthTokenIssuer ("include, but are not limited to"); Microsoft's diagnostics
  (onpremdiag/SfBServer, rule RDOAuthCertificateValid) call `Get-CsCertificate -Type OAuthTokenIssuer`.
- Set-CsCertificate.md: sets CertificateReference, Thumbprint (-Thumbprint mandatory) and Path; -Roll "will fail
  if you specify the Roll parameter without including the EffectiveDate parameter". The page gives no minimum
  lead time for -EffectiveDate; plan refuses only an effective date that is not in the future.
- Remove-CsCertificate.md: one set; -Previous "removes the previously-assigned certificate instead of the
  currently-assigned certificate".
- The certificate store is read with Get-ChildItem on the certificate provider (PowerShell reference,
  MicrosoftDocs/PowerShell-Docs `reference/5.1/Microsoft.PowerShell.Management/Get-ChildItem.md`; the objects
  are X509Certificate2: Thumbprint, Subject, NotBefore, NotAfter, HasPrivateKey).

Output: Get-CsCertificate returns one CertificateReference per assigned certificate with Thumbprint, Subject,
NotBefore, NotAfter, EffectiveDate, PreviousThumbprint, Use (recorded in onpremdiag/SfBServer
tests/mode/sfbserver/rules/Exchange/RDOAuthCertificateValid.tests.ps1). *Unconfirmed* (no public recording of a
roll): that during a roll the pending certificate is a second reference whose EffectiveDate is in the future and
whose PreviousThumbprint names the current one, and that the previous one stays listed until
`Remove-CsCertificate -Previous`. Discovery reads it that way, with the clock of the machine running reconcile.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler import clock
from reconciler.changes import Change
from reconciler.commands import Command
from reconciler.kinds.certificates import CertificateRole, PublishedCertificate, StoreCertificates, der_of
from reconciler.kinds.declaration import read_date
from reconciler.kinds.schema import BOOLEAN, resource_schema
from reconciler.kinds.spec import DiagnoseContext, FieldSpec, Finding, KindSpec
from reconciler.kinds.syntax import Parameter, ParamType, cmdlet, identity, string, strings, switch
from reconciler.model import JSONValue, Severity

DOCS = "MicrosoftDocs/office-docs-powershell: skype/skype-ps/SkypeForBusiness/"
KIND = "OAuthCertificate"
USE = "OAuthTokenIssuer"
STORE_PATH = "Cert:\\LocalMachine\\My"

_DATE = Parameter("EffectiveDate", ParamType.DATETIME)
GET_CS_CERTIFICATE = cmdlet(
    "Get-CsCertificate", DOCS + "Get-CsCertificate.md",
    [*strings("Type"), *string("NetportId", "Report"), *identity("Identity")],
    {"Identity": "Type NetportId Report Identity"})
SET_CS_CERTIFICATE = cmdlet(
    "Set-CsCertificate", DOCS + "Set-CsCertificate.md",
    [*strings("Type"), *string("NetportId", "Reference", "Thumbprint", "Report", "Path", "Password"),
     *identity("Identity"), *switch("Force", "WhatIf", "Confirm", "Roll"), _DATE],
    {"CertificateReference": "NetportId Reference! Type Force Report WhatIf Confirm Identity EffectiveDate Roll",
     "Thumbprint": "NetportId Thumbprint! Type Force Report WhatIf Confirm Identity EffectiveDate Roll",
     "Path": "Identity! Path! Type! Confirm EffectiveDate Force Password Report Roll WhatIf"},
    default_set="Thumbprint")
REMOVE_CS_CERTIFICATE = cmdlet(
    "Remove-CsCertificate", DOCS + "Remove-CsCertificate.md",
    [*strings("Type"), *string("NetportId", "Report"), *identity("Identity"),
     *switch("Force", "WhatIf", "Confirm", "Previous")],
    {"Remove": "Type NetportId Force Report WhatIf Confirm Identity Previous"})
GET_CHILD_ITEM = cmdlet(
    "Get-ChildItem", "MicrosoftDocs/PowerShell-Docs: reference/5.1/Microsoft.PowerShell.Management/Get-ChildItem.md",
    [*strings("Path")], {"Items": "Path"})
CMDLETS = (GET_CS_CERTIFICATE, SET_CS_CERTIFICATE, REMOVE_CS_CERTIFICATE, GET_CHILD_ITEM)

DISCOVERY = (
    Command(GET_CS_CERTIFICATE.name, {"Type": USE},
            select=("Thumbprint", "Subject", "NotBefore", "NotAfter", "EffectiveDate", "PreviousThumbprint", "Use")),
    Command(GET_CHILD_ITEM.name, {"Path": STORE_PATH},
            select=("Thumbprint", "Subject", "NotBefore", "NotAfter", "HasPrivateKey", "RawData")),
)

_THUMBPRINT = {"type": "string", "pattern": "^[0-9A-Fa-f]{40}$",
               "errorMessage": "is not a certificate thumbprint (40 hexadecimal digits)"}
_DATE_TIME = {"type": "string",
              "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|z|[+-]\d{2}:\d{2})$",
              "errorMessage": "is not an ISO 8601 date-time with a time zone (e.g. 2026-05-01T00:00:00Z)"}


def _upper(value: Any) -> str:
    return str(value or "").strip().upper()


def parse_date(value: Any) -> datetime.datetime | None:
    text = read_date(value)
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _lower(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in obj.items()}


def parse(references: Sequence[Mapping[str, Any]], store: Sequence[Mapping[str, Any]],
          now: datetime.datetime | None = None) -> dict[str, JSONValue]:
    """The live record: the current certificate, the pending one during a roll, the previous one, the store."""
    now = now or clock.utc_now()
    refs = [_lower(r) for r in references if _upper(_lower(r).get("use") or USE) == USE.upper()]
    refs = [r for r in refs if _upper(r.get("thumbprint"))]
    epoch = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    dated = sorted(refs, key=lambda r: parse_date(r.get("effectivedate")) or epoch)
    effective = [r for r in dated if (parse_date(r.get("effectivedate")) or epoch) <= now]
    pending = [r for r in dated if (parse_date(r.get("effectivedate")) or epoch) > now]
    current = effective[-1] if effective else None
    nxt = pending[-1] if pending else None
    previous = _upper(current.get("previousthumbprint")) if current else ""
    listed = {_upper(r.get("thumbprint")) for r in refs}
    fields: dict[str, JSONValue] = {
        "thumbprint": _upper(current.get("thumbprint")) if current else None,
        "subject": str(current.get("subject") or "") or None if current else None,
        "notBefore": read_date(current.get("notbefore")) if current else None,
        "notAfter": read_date(current.get("notafter")) if current else None,
        "nextThumbprint": _upper(nxt.get("thumbprint")) if nxt else _current_marker(current),
        "effectiveDate": read_date(nxt.get("effectivedate")) if nxt else _current_marker(current),
        "nextNotAfter": read_date(nxt.get("notafter")) if nxt else None,
        "previousThumbprint": previous if previous and previous in listed else None,
        "store": [{"thumbprint": _upper(c.get("thumbprint")), "subject": str(c.get("subject") or ""),
                   "notBefore": read_date(c.get("notbefore")), "notAfter": read_date(c.get("notafter")),
                   "hasPrivateKey": bool(c.get("hasprivatekey")), "rawData": raw_data(c.get("rawdata"))}
                  for c in (_lower(s) for s in store) if _upper(c.get("thumbprint"))],
    }
    fields["removePrevious"] = fields["previousThumbprint"] is None
    return fields


def raw_data(value: Any) -> str | None:
    """X509Certificate2.RawData (the public certificate; ConvertTo-Json writes the byte[] as numbers) as base64."""
    der = der_of(value)
    return base64.b64encode(der).decode("ascii") if der is not None else None


CURRENT = "current:"
"""The live nextThumbprint/effectiveDate when nothing is pending: `current:<thumbprint>`, so a declared roll that
has already taken effect compares equal (level-triggered: the planner compares one field at a time)."""


def _current_marker(current: Mapping[str, Any] | None) -> str | None:
    return CURRENT + _upper(current.get("thumbprint")) if current else None


def _display(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(CURRENT):
        return f"(nothing pending; {value[len(CURRENT):]} is current)"
    return value


def _same_thumbprint(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    """The current certificate; once a declared roll has taken effect, the next one is current by design."""
    return _upper(want) == _upper(have) or (bool(desired.get("nextThumbprint"))
                                            and _upper(desired["nextThumbprint"]) == _upper(have))

SCHEMA = resource_schema(KIND, {
    "thumbprint": {**_THUMBPRINT, "description": "The certificate that signs now (Set-CsCertificate -Thumbprint, "
                                                 "immediately). Leave out while a roll is declared."},
    "nextThumbprint": {**_THUMBPRINT, "description": "Stage this certificate (already in the store): "
                                                     "Set-CsCertificate -Roll -EffectiveDate."},
    "effectiveDate": {**_DATE_TIME, "description": "When the next certificate takes over (-EffectiveDate)."},
    "removePrevious": {**BOOLEAN, "description": "true: Remove-CsCertificate -Previous once the roll has taken "
                                                "effect (declare it when every trusting side has the new key)."},
}, description="The Skype pool's OAuthTokenIssuer certificate (identity OAuthTokenIssuer): Get-CsCertificate, "
               "a staged roll with Set-CsCertificate -Roll -EffectiveDate, Remove-CsCertificate -Previous.",
   rules=({"if": {"required": ["nextThumbprint"]},
           "then": {"required": ["effectiveDate"], "errorMessage": "nextThumbprint needs effectiveDate "
                                                                   "(-Roll fails without -EffectiveDate)"}},
          {"if": {"required": ["effectiveDate"]},
           "then": {"required": ["nextThumbprint"], "errorMessage": "effectiveDate needs nextThumbprint"}}))
SCHEMA["properties"]["identity"] = {"type": "string", "pattern": "^[Oo][Aa][Uu][Tt][Hh][Tt][Oo][Kk][Ee][Nn]"
                                                                 "[Ii][Ss][Ss][Uu][Ee][Rr]$",
                                    "errorMessage": "must be OAuthTokenIssuer"}


def _rolled(desired: Mapping[str, JSONValue], live: Mapping[str, JSONValue]) -> bool:
    """The declared next certificate is already current (its effective date has passed)."""
    nxt = _upper(desired.get("nextThumbprint"))
    return bool(nxt) and nxt == _upper(live.get("thumbprint"))


def _pending(live: Mapping[str, JSONValue] | None) -> str:
    value = str((live or {}).get("nextThumbprint") or "")
    return "" if value.startswith(CURRENT) else value.upper()


def _roll_equal(name: str) -> Any:
    def equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
        if isinstance(have, str) and have.startswith(CURRENT):  # nothing pending: done if it is the current one
            return bool(desired.get("nextThumbprint")) and _upper(desired["nextThumbprint"]) == \
                _upper(have[len(CURRENT):])
        if want in (None, ""):
            return have in (None, "")
        if name == "nextThumbprint":
            return _upper(want) == _upper(have)
        moment, live_moment = parse_date(want), parse_date(have)
        return moment is not None and moment == live_moment
    return equal


def spec() -> KindSpec:
    fields = {
        "thumbprint": FieldSpec("thumbprint", equal=_same_thumbprint),
        "nextThumbprint": FieldSpec("nextThumbprint", equal=_roll_equal("nextThumbprint"), display=_display),
        "effectiveDate": FieldSpec("effectiveDate", equal=_roll_equal("effectiveDate"), display=_display),
        "removePrevious": FieldSpec("removePrevious"),
    }
    return KindSpec(kind=KIND, fields=fields, schema=SCHEMA, singleton=True, prepare=None,
                    description=str(SCHEMA["description"]), diagnose=diagnose, exported=exported)


def exported(live: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    """What `reconcile export` writes: the certificate that signs now, and a roll pending on the server (never the
    `current:` markers the comparison uses internally)."""
    out: dict[str, JSONValue] = {}
    pending = _pending(live)
    if pending:
        out["nextThumbprint"] = pending
        out["effectiveDate"] = live.get("effectiveDate")
    elif live.get("thumbprint"):
        out["thumbprint"] = live["thumbprint"]
    return out


def effective_desired(desired: Mapping[str, JSONValue], live: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    """What the manifest asks of the live state now: a roll already taken effect asks nothing more of it."""
    out = dict(desired)
    if _rolled(desired, live):
        out.pop("nextThumbprint", None)
        out.pop("effectiveDate", None)
    return out


def commands(change: Change) -> tuple[Command, ...]:
    """Set-CsCertificate (immediately or -Roll -EffectiveDate) and Remove-CsCertificate -Previous."""
    desired = change.desired.fields if change.desired is not None else (change.after or {})
    live = change.before or {}
    want = effective_desired(desired, live)
    out: list[Command] = []
    changed = set(change.changed)
    if "thumbprint" in changed and want.get("thumbprint") and not desired.get("nextThumbprint"):
        out.append(Command(SET_CS_CERTIFICATE.name, {"Type": USE, "Thumbprint": _upper(want["thumbprint"])}))
    if {"nextThumbprint", "effectiveDate"} & changed and want.get("nextThumbprint"):
        out.append(Command(SET_CS_CERTIFICATE.name,
                           {"Type": USE, "Thumbprint": _upper(want["nextThumbprint"]), "Roll": True,
                            "EffectiveDate": str(want["effectiveDate"])}, switches=frozenset({"Roll"})))
    if "removePrevious" in changed and want.get("removePrevious") is True and live.get("previousThumbprint"):
        out.append(Command(REMOVE_CS_CERTIFICATE.name, {"Type": USE, "Previous": True},
                           switches=frozenset({"Previous"})))
    return tuple(out)


def _store_entry(live: Mapping[str, JSONValue] | None, thumbprint: str) -> Mapping[str, Any] | None:
    store = (live or {}).get("store") or []
    assert isinstance(store, list)
    return next((c for c in store if isinstance(c, Mapping) and _upper(c.get("thumbprint")) == thumbprint), None)


def check_certificate(field: str, thumbprint: str, live: Mapping[str, JSONValue] | None, now: datetime.datetime,
                      *, needs_key: bool, at: datetime.datetime | None = None, where: str = "the store"
                      ) -> list[Finding]:
    """Errors for a declared certificate that is missing, expired, not yet valid (at `at`) or without a key."""
    entry = _store_entry(live, thumbprint)
    if entry is None:
        return [(Severity.ERROR, field, f"certificate {thumbprint} is not in {where}")]
    label = f"certificate {thumbprint} ({entry.get('subject') or 'no subject'})"
    not_before, not_after = parse_date(entry.get("notBefore")), parse_date(entry.get("notAfter"))
    findings: list[Finding] = []
    if not_after is not None and not_after <= now:
        findings.append((Severity.ERROR, field, f"{label} expired on {not_after.isoformat()}"))
    elif not_after is not None and at is not None and not_after <= at:
        findings.append((Severity.ERROR, field, f"{label} expires on {not_after.isoformat()}, before it would take "
                                                f"effect ({at.isoformat()})"))
    when = at or now
    if not_before is not None and not_before > when:
        findings.append((Severity.ERROR, field, f"{label} is not valid until {not_before.isoformat()}"
                                                + (" (after its effective date)" if at else "")))
    if needs_key and not entry.get("hasPrivateKey"):
        findings.append((Severity.ERROR, field,
                         f"{label} has no private key on the server (a token issuer signs with it)"))
    return findings


def diagnose(desired: Mapping[str, JSONValue], live: Mapping[str, JSONValue] | None,
             context: DiagnoseContext) -> list[Finding]:
    """Plan refuses a declared certificate that is missing, expired, not yet valid or lacks its private key."""
    findings: list[Finding] = []
    want = effective_desired(desired, live or {})
    current = _upper(want.get("thumbprint"))
    if current and not desired.get("nextThumbprint") and current != _upper((live or {}).get("thumbprint")):
        findings += check_certificate("thumbprint", current, live, context.now, needs_key=True)
    nxt = _upper(want.get("nextThumbprint"))
    if nxt and nxt != _pending(live):
        at = parse_date(want.get("effectiveDate"))
        if at is not None and at <= context.now:
            findings.append((Severity.ERROR, "effectiveDate",
                             f"effective date {want.get('effectiveDate')} of certificate {nxt} is not in the future "
                             "(a roll stages a certificate ahead of its date)"))
        findings += check_certificate("nextThumbprint", nxt, live, context.now, needs_key=True, at=at)
    return findings


def published(source: str, address: str, desired: Mapping[str, JSONValue] | None,
              live: Mapping[str, JSONValue] | None) -> tuple[PublishedCertificate, ...]:
    """What the pool signs with, as the sides that trust it must know it: the current certificate, the next one
    (pending on the server, or staged by this plan when the manifest declares it and it is in the store) with its
    date, and the previous one while it is still listed. Public certificates come from the store's RawData."""
    live = live or {}
    store = StoreCertificates(source, address, live.get("store"))
    cert = store.certificate
    out: list[PublishedCertificate] = []
    want = effective_desired(desired, live) if desired is not None else {}
    current = _upper(live.get("thumbprint"))
    switch = _upper(want.get("thumbprint")) if not want.get("nextThumbprint") else ""
    if switch and switch != current and switch in store:
        out.append(cert(CertificateRole.CURRENT, switch, immediate=True))
    if current:
        out.append(cert(CertificateRole.CURRENT, current))
    pending, declared = _pending(live), _upper(want.get("nextThumbprint"))
    if declared and declared != pending and declared in store:  # a new roll replaces a pending one
        out.append(cert(CertificateRole.NEXT, declared, effective=str(want.get("effectiveDate") or "") or None,
                        staged_now=True))
    elif pending:
        out.append(cert(CertificateRole.NEXT, pending, effective=read_date(live.get("effectiveDate"))))
    previous = _upper(live.get("previousThumbprint"))
    if previous and previous != current:
        out.append(cert(CertificateRole.PREVIOUS, previous))
    return tuple(out)
