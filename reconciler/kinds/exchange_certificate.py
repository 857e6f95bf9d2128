"""Exchange's Auth certificate as a declared renewal policy (kind `AuthCertificate`, singleton).

Why a kind of its own rather than fields on AuthConfig: AuthConfig declares *values* (a thumbprint, a date) and
is compared field by field; a renewal policy declares *rules* whose outcome depends on the certificates' dates,
on the certificate store and on the clock. Keeping it apart leaves AuthConfig's derived comparison untouched and
lets discovery read the store only when a manifest declares the policy. Declare either this kind or AuthConfig's
nextCertificateThumbprint/nextCertificateEffectiveDate, not both (they would stage different certificates).

Syntax (MicrosoftDocs/office-docs-powershell, `exchange/exchange-ps/ExchangePowerShell/`):
- New-ExchangeCertificate.md: sets Request (-GenerateRequest ...) and Certificate (-Services ...), both with
  -KeySize (Int32; 1024, 2048 default, 4096), -PrivateKeyExportable (Boolean, $false default), -SubjectName,
  -FriendlyName (under 64 characters), -DomainName, -Server, -Force. Without -Services a self-signed
  certificate is enabled for IMAP, POP and SMTP, and SMTP prompts to replace the default transport certificate:
  we pass `-Services None` (documented value: "You can enable the certificate ... later"), which also selects
  the Certificate set (no -GenerateRequest: a self-signed certificate made on the server).
- Get-ExchangeCertificate.md: sets Identity, Instance, Thumbprint, all optional; with no parameter it lists the
  certificates of the local server with Thumbprint, Subject, NotBefore, NotAfter, HasPrivateKey, FriendlyName.
- Set-AuthConfig.md: see reconciler.kinds.exchange (SET_AUTH_CONFIG, reused here).

What Microsoft's own renewal does (microsoft/CSS-Exchange `docs/Admin/MonitorExchangeAuthCertificate.md` and
`Admin/MonitorExchangeAuthCertificate/ConfigurationAction/New-ExchangeAuthCertificate.ps1`): renew when the
current Auth certificate expires in under 60 days or the next one in under 120 days; New-ExchangeCertificate
@{KeySize 2048; PrivateKeyExportable $true; SubjectName "cn=Microsoft Exchange Server Auth Certificate";
FriendlyName; DomainName @()}; Set-AuthConfig -NewCertificateThumbprint -NewCertificateEffectiveDate -Force;
for an expired certificate -PublishCertificate then -ClearPreviousCertificate.

Differences, deliberate: -PrivateKeyExportable $false (the default: the key never leaves the server; the script
exports it to import it on the organization's other Exchange servers, which this kind does not do), `-Services
None` instead of replacing and restoring the SMTP certificate, no -DomainName @() (the default SAN names the
server; an Auth certificate is matched by thumbprint, not name).

Level-triggered steps, one per cycle, each decided from what is read now (discovery reads Get-AuthConfig and
Get-ExchangeCertificate; never a thumbprint remembered from a previous run):
1. `create`: renewal due (current certificate expires within `renewWithinDays`, and no next certificate valid
   for more than `nextValidForDays`), nothing staged, no usable candidate in the store -> New-ExchangeCertificate.
2. `stage`: renewal due and a candidate in the store (the Auth subject, a private key, valid now and beyond the
   renewal window, neither current nor previous) -> Set-AuthConfig -NewCertificateThumbprint <candidate>
   -NewCertificateEffectiveDate <now + stageDaysAhead, no later than the current certificate's expiry> -Force.
3. `publish` (`publish: true`): a next certificate whose effective date has passed but is still listed as next
   -> Set-AuthConfig -PublishCertificate.
4. `clearPrevious` (`clearPrevious: true`): nothing staged, a previous certificate listed -> Set-AuthConfig
   -ClearPreviousCertificate.

*Unconfirmed*: that Get-AuthConfig keeps listing a next certificate after its effective date until Exchange's
servicelet or -PublishCertificate makes it current (the lab promotes it on the next read); how ConvertTo-Json
writes NotBefore/NotAfter (read as ISO 8601 or /Date(ms)/ by read_date; naive values as UTC).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler import clock
from reconciler.changes import Change
from reconciler.commands import Command
from reconciler.kinds.certificates import CertificateRole, PublishedCertificate, StoreCertificates
from reconciler.kinds.exchange import DOCS, SET_AUTH_CONFIG
from reconciler.kinds.schema import BOOLEAN, resource_schema
from reconciler.kinds.skype_certificate import check_certificate, parse_date, raw_data
from reconciler.kinds.spec import DiagnoseContext, FieldSpec, Finding, KindSpec
from reconciler.kinds.syntax import boolean, cmdlet, enum_, identity, string, strings, switch
from reconciler.model import JSONValue, Severity

KIND = "AuthCertificate"
IDENTITY = "Auth Certificate"
SUBJECT = "CN=Microsoft Exchange Server Auth Certificate"
SUBJECT_PARAMETER = "cn=Microsoft Exchange Server Auth Certificate"
"""As New-ExchangeAuthCertificate.ps1 passes it (the store reports it as `CN=...`)."""
FRIENDLY_NAME = "Microsoft Exchange Server Auth Certificate"
KEY_SIZE = 2048
DEFAULTS: Mapping[str, JSONValue] = {"renewWithinDays": 60, "nextValidForDays": 120, "stageDaysAhead": 30,
                                     "publish": False, "clearPrevious": False}
IN_POLICY = "in policy"

ALLOWED_SERVICES = ("None", "Federation", "IIS", "IMAP", "POP", "SMTP", "UM", "UMCallRouter")
_NEW_COMMON = ("Confirm DomainController DomainName Force FriendlyName IncludeAcceptedDomains IncludeAutoDiscover "
               "IncludeServerFQDN IncludeServerNetBIOSName KeySize PrivateKeyExportable Server SubjectKeyIdentifier "
               "SubjectName WhatIf")
NEW_EXCHANGE_CERTIFICATE = cmdlet(
    "New-ExchangeCertificate", DOCS + "New-ExchangeCertificate.md",
    [*switch("BinaryEncoded", "GenerateRequest", "Confirm", "WhatIf", "Force", "IncludeAcceptedDomains",
             "IncludeAutoDiscover", "IncludeServerFQDN", "IncludeServerNetBIOSName"),
     *string("RequestFile", "DomainController", "FriendlyName", "KeySize", "SubjectKeyIdentifier", "SubjectName",
             "Instance"),
     *strings("DomainName"), *boolean("PrivateKeyExportable"), *identity("Server"),
     *enum_("Services", *ALLOWED_SERVICES)],
    # -Instance is deprecated ("no longer used") and left out of both sets.
    {"Request": "BinaryEncoded GenerateRequest RequestFile", "Certificate": "Services"}, common=_NEW_COMMON)
GET_EXCHANGE_CERTIFICATE = cmdlet(
    "Get-ExchangeCertificate", DOCS + "Get-ExchangeCertificate.md",
    [*identity("Identity", "Server"), *string("Thumbprint", "DomainController", "Instance"),
     *strings("DomainName")],
    {"Identity": "Identity DomainController DomainName",
     "Instance": "Instance DomainController DomainName Server",
     "Thumbprint": "Thumbprint DomainController DomainName Server"}, default_set="Identity")
CMDLETS = (NEW_EXCHANGE_CERTIFICATE, GET_EXCHANGE_CERTIFICATE)
"""Beyond Get-/Set-AuthConfig (declared with AuthConfig)."""

DISCOVERY = Command(GET_EXCHANGE_CERTIFICATE.name,
                    select=("Thumbprint", "Subject", "NotBefore", "NotAfter", "HasPrivateKey", "FriendlyName",
                            "RawData"))
"""Read in the same round trip as Get-AuthConfig, and only when a manifest declares an AuthCertificate: the
whole store of the server (no -Thumbprint: the thumbprints to look for are known only once Get-AuthConfig has
answered, and a certificate New-ExchangeCertificate made must be found without being named)."""


def _now() -> datetime.datetime:
    """The clock the policy is evaluated with (reconciler.clock: tests move it for the tool and the lab at once)."""
    return clock.utc_now()


def _upper(value: Any) -> str:
    return str(value or "").strip().upper()


def _lower(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in obj.items()}


def _iso(value: Any) -> str | None:
    moment = parse_date(value)
    return moment.isoformat() if moment is not None else None


def parse(config: Mapping[str, Any] | None, store: Sequence[Mapping[str, Any]]) -> dict[str, JSONValue]:
    """The live record: AuthConfig's thumbprints and the server's certificates with their dates."""
    cfg = _lower(config or {})
    entries: list[JSONValue] = [
        {"thumbprint": _upper(c.get("thumbprint")), "subject": str(c.get("subject") or ""),
         "notBefore": _iso(c.get("notbefore")), "notAfter": _iso(c.get("notafter")),
         "hasPrivateKey": bool(c.get("hasprivatekey")), "rawData": raw_data(c.get("rawdata"))}
        for c in (_lower(s) for s in store) if _upper(c.get("thumbprint"))]
    facts: dict[str, JSONValue] = {
        "current": _upper(cfg.get("currentcertificatethumbprint")) or None,
        "next": _upper(cfg.get("nextcertificatethumbprint")) or None,
        "nextEffectiveDate": _iso(cfg.get("nextcertificateeffectivedate")),
        "previous": _upper(cfg.get("previouscertificatethumbprint")) or None,
        "store": entries,
    }
    current = _entry(facts, facts["current"])
    nxt = _entry(facts, facts["next"])
    return {
        "rotation": facts,
        "thumbprint": facts["current"],
        "notAfter": current.get("notAfter") if current else None,
        "nextThumbprint": facts["next"],
        "nextEffectiveDate": facts["nextEffectiveDate"],
        "nextNotAfter": nxt.get("notAfter") if nxt else None,
        "previousThumbprint": facts["previous"],
    }


def _entry(facts: Mapping[str, Any], thumbprint: Any) -> Mapping[str, Any] | None:
    wanted = _upper(thumbprint)
    if not wanted:
        return None
    return next((c for c in facts.get("store") or [] if isinstance(c, Mapping) and c.get("thumbprint") == wanted),
                None)


def _policy(desired: Mapping[str, Any]) -> dict[str, Any]:
    return {name: desired.get(name, default) if desired.get(name) is not None else default
            for name, default in DEFAULTS.items()}


def _days(value: Any) -> datetime.timedelta:
    return datetime.timedelta(days=int(value))


def renewal_due(facts: Mapping[str, Any], desired: Mapping[str, Any], now: datetime.datetime) -> bool:
    """MonitorExchangeAuthCertificate's rule: the current certificate expires within renewWithinDays (or is not
    in the store) and no next certificate is valid for more than nextValidForDays."""
    policy = _policy(desired)
    current = _entry(facts, facts.get("current"))
    current_end = parse_date(current.get("notAfter")) if current else None
    if current_end is not None and current_end > now + _days(policy["renewWithinDays"]):
        return False
    nxt = _entry(facts, facts.get("next"))
    next_end = parse_date(nxt.get("notAfter")) if nxt else None
    return not (next_end is not None and next_end > now + _days(policy["nextValidForDays"]))


def candidate(facts: Mapping[str, Any], desired: Mapping[str, Any], now: datetime.datetime) -> str | None:
    """A certificate in the store that can be staged: the Auth subject, a private key, valid now and beyond the
    renewal window, neither current, next nor previous (the newest if several)."""
    policy = _policy(desired)
    taken = {facts.get("current"), facts.get("next"), facts.get("previous")}
    found = []
    for entry in facts.get("store") or []:
        if not isinstance(entry, Mapping) or entry.get("thumbprint") in taken:
            continue
        start, end = parse_date(entry.get("notBefore")), parse_date(entry.get("notAfter"))
        if (_upper(entry.get("subject")).replace(" ", "") == SUBJECT.upper().replace(" ", "")
                and entry.get("hasPrivateKey") and start is not None and start <= now and end is not None
                and end > now + _days(policy["nextValidForDays"])):
            found.append((end, str(entry["thumbprint"])))
    return max(found)[1] if found else None


def effective_date(facts: Mapping[str, Any], desired: Mapping[str, Any], now: datetime.datetime) -> str:
    """now + stageDaysAhead, but no later than the current certificate's expiry (a day before it)."""
    when = now + _days(_policy(desired)["stageDaysAhead"])
    current = _entry(facts, facts.get("current"))
    end = parse_date(current.get("notAfter")) if current else None
    if end is not None and end - datetime.timedelta(days=1) < when:
        when = max(now + datetime.timedelta(hours=1), end - datetime.timedelta(days=1))
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def next_step(facts: Any, desired: Mapping[str, Any], now: datetime.datetime) -> str | None:
    """The one step the policy asks for now: create, stage, publish, clearPrevious, or None."""
    if not isinstance(facts, Mapping):
        return None
    policy = _policy(desired)
    staged_at = parse_date(facts.get("nextEffectiveDate"))
    if facts.get("next"):
        if staged_at is not None and staged_at <= now and policy["publish"]:
            return "publish"
        if not renewal_due(facts, desired, now):
            return None
    elif not renewal_due(facts, desired, now):
        return "clearPrevious" if policy["clearPrevious"] and facts.get("previous") else None
    return "stage" if candidate(facts, desired, now) else "create"


def _rotation_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    return next_step(have, desired, _now()) is None


def _display(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    step = value.get("step")
    current, nxt = value.get("current") or "none", value.get("next")
    text = f"current {current}" + (f", next {nxt} from {value.get('nextEffectiveDate')}" if nxt else "")
    return text + (f" (due: {step})" if step else "")


def _prepare(fields: dict[str, JSONValue], manifest_dir: Path) -> dict[str, JSONValue]:
    return {**fields, "rotation": IN_POLICY}


_DAYS = {"type": "integer", "minimum": 1, "maximum": 3650}
SCHEMA = resource_schema(KIND, {
    "identity": {"type": "string", "pattern": "^[Aa][Uu][Tt][Hh] [Cc][Ee][Rr][Tt][Ii][Ff][Ii][Cc][Aa][Tt][Ee]$",
                 "errorMessage": f"must be {IDENTITY} (there is one Auth certificate)"},
    "renewWithinDays": {**_DAYS, "description": "Renew when the current Auth certificate expires within this many "
                                                "days (default 60, as MonitorExchangeAuthCertificate)."},
    "nextValidForDays": {**_DAYS, "description": "...unless a next certificate is staged that is valid for more "
                                                 "than this many days (default 120)."},
    "stageDaysAhead": {**_DAYS, "description": "Stage the new certificate to take over this many days later "
                                               "(default 30; never after the current one expires)."},
    "publish": {**BOOLEAN, "description": "true: Set-AuthConfig -PublishCertificate once the effective date has "
                                          "passed and the certificate is still listed as next."},
    "clearPrevious": {**BOOLEAN, "description": "true: Set-AuthConfig -ClearPreviousCertificate once nothing is "
                                                "staged (declare it when every partner has the new key)."},
}, description="Exchange's Auth certificate renewed by policy: New-ExchangeCertificate (self-signed, "
               f"{SUBJECT}, key not exportable), then Set-AuthConfig -NewCertificateThumbprint "
               "-NewCertificateEffectiveDate -Force; optional -PublishCertificate and -ClearPreviousCertificate.")
SCHEMA["properties"]["identity"]["description"] = f"{IDENTITY} (one per organization)."


def spec() -> KindSpec:
    fields = {name: FieldSpec(name, control=True) for name in DEFAULTS}
    fields["rotation"] = FieldSpec("rotation", equal=_rotation_equal, display=_display)
    return KindSpec(kind=KIND, fields=fields, schema=SCHEMA, singleton=True, after=("AuthConfig",),
                    prepare=_prepare, description=str(SCHEMA["description"]), diagnose=diagnose,
                    exported=lambda live: {}, stepwise=True)


def step_commands(facts: Mapping[str, Any], desired: Mapping[str, Any], now: datetime.datetime
                  ) -> tuple[Command, ...]:
    step = next_step(facts, desired, now)
    if step == "create":
        return (Command(NEW_EXCHANGE_CERTIFICATE.name,
                        {"SubjectName": SUBJECT_PARAMETER, "FriendlyName": FRIENDLY_NAME, "KeySize": KEY_SIZE,
                         "PrivateKeyExportable": False, "Services": "None"}),)
    if step == "stage":
        return (Command(SET_AUTH_CONFIG.name,
                        {"NewCertificateThumbprint": candidate(facts, desired, now),
                         "NewCertificateEffectiveDate": effective_date(facts, desired, now), "Force": True},
                        switches=frozenset({"Force"})),)
    if step == "publish":
        return (Command(SET_AUTH_CONFIG.name, {"PublishCertificate": True},
                        switches=frozenset({"PublishCertificate"})),)
    if step == "clearPrevious":
        return (Command(SET_AUTH_CONFIG.name, {"ClearPreviousCertificate": True},
                        switches=frozenset({"ClearPreviousCertificate"})),)
    return ()


def commands(change: Change) -> tuple[Command, ...]:
    desired = change.desired.fields if change.desired is not None else (change.after or {})
    facts = (change.before or {}).get("rotation")
    return step_commands(facts, desired, _now()) if isinstance(facts, Mapping) else ()


def diagnose(desired: Mapping[str, JSONValue], live: Mapping[str, JSONValue] | None,
             context: DiagnoseContext) -> list[Finding]:
    """Plan refuses a staged certificate that is missing from the store, expired, not valid yet at its effective
    date or without its private key; the steps the policy plans never stage such a certificate."""
    facts = (live or {}).get("rotation")
    if not isinstance(facts, Mapping):
        return []
    findings: list[Finding] = []
    nxt = _upper(facts.get("next"))
    if nxt:
        at = parse_date(facts.get("nextEffectiveDate"))
        findings += [(severity, "rotation", f"the next Auth certificate: {message}") for severity, _, message in
                     check_certificate("next", nxt, {"store": facts.get("store") or []}, context.now,
                                       needs_key=True, at=at if at is not None and at > context.now else None,
                                       where="the Exchange server's certificate store")]
    current = _upper(facts.get("current"))
    if current and _entry(facts, current) is None:
        findings.append((Severity.WARNING, "rotation", f"the current Auth certificate {current} is not in the Exchange "
                                                       "server's certificate store"))
    return findings


def published(source: str, address: str, live: Mapping[str, JSONValue] | None) -> tuple[PublishedCertificate, ...]:
    """What Exchange signs with, for the sides that trust it: AuthConfig's current certificate, the next one with
    its effective date while one is staged, and the previous one while listed; public certificates from the
    store's RawData (Get-ExchangeCertificate, recorded in CSS-Exchange's
    `Admin/MonitorExchangeAuthCertificate/ConfigurationAction/Tests/Data/GetExchangeCertifiateWithNewAuthConfigCert.xml`)."""
    rotation = (live or {}).get("rotation") or {}
    assert isinstance(rotation, Mapping)
    cert = StoreCertificates(source, address, rotation.get("store")).certificate
    out = []
    current, nxt, previous = (_upper(rotation.get(n)) for n in ("current", "next", "previous"))
    if current:
        out.append(cert(CertificateRole.CURRENT, current))
    if nxt and nxt != current:
        out.append(cert(CertificateRole.NEXT, nxt, effective=rotation.get("nextEffectiveDate")))
    if previous and previous not in (current, nxt):
        out.append(cert(CertificateRole.PREVIOUS, previous))
    return tuple(out)
