"""AuthCertificate: MonitorExchangeAuthCertificate's renewal rules as one step per cycle (unit)."""

from __future__ import annotations

import datetime

from reconciler.kinds import exchange_certificate as kind
from reconciler.kinds.spec import DiagnoseContext

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
OLD, NEW, OTHER = "A" * 40, "B" * 40, "C" * 40
POLICY = {"renewWithinDays": 60, "stageDaysAhead": 30, "publish": True, "clearPrevious": True}


def _cert(thumbprint: str, start: str, end: str, subject: str = kind.SUBJECT) -> dict[str, object]:
    return {"Thumbprint": thumbprint, "Subject": subject, "NotBefore": start, "NotAfter": end, "HasPrivateKey": True}


def _facts(config: dict[str, object], *store: dict[str, object]) -> dict[str, object]:
    live = kind.parse(config, list(store))
    facts = live["rotation"]
    assert isinstance(facts, dict)
    return facts


def test_no_step_while_the_current_certificate_has_more_than_60_days() -> None:
    facts = _facts({"CurrentCertificateThumbprint": OLD}, _cert(OLD, "2025-01-01T00:00:00Z", "2026-09-01T00:00:00Z"))
    assert kind.next_step(facts, POLICY, NOW) is None


def test_renewal_creates_then_stages_the_certificate_read_from_the_store() -> None:
    old = _cert(OLD, "2025-01-01T00:00:00Z", "2026-07-15T00:00:00Z")
    facts = _facts({"CurrentCertificateThumbprint": OLD}, old)
    assert kind.next_step(facts, POLICY, NOW) == "create"
    (new,) = kind.step_commands(facts, POLICY, NOW)
    assert new.cmdlet == "New-ExchangeCertificate" and new.parameters["PrivateKeyExportable"] is False
    kind.NEW_EXCHANGE_CERTIFICATE.bind(new.parameters)
    # An unrelated certificate (another subject) is never staged.
    facts = _facts({"CurrentCertificateThumbprint": OLD}, old,
                   _cert(OTHER, "2026-05-01T00:00:00Z", "2031-05-01T00:00:00Z", "CN=mail.contoso.com"),
                   _cert(NEW, "2026-05-31T00:00:00Z", "2031-05-31T00:00:00Z"))
    (stage,) = kind.step_commands(facts, POLICY, NOW)
    assert stage.parameters == {"NewCertificateThumbprint": NEW, "NewCertificateEffectiveDate": "2026-07-01T00:00:00Z",
                                "Force": True}
    assert kind.SET_AUTH_CONFIG.bind(stage.parameters)[0].name == "NewCertificateParameter"


def test_effective_date_never_after_the_current_certificate_expires() -> None:
    facts = _facts({"CurrentCertificateThumbprint": OLD}, _cert(OLD, "2025-01-01T00:00:00Z", "2026-06-10T00:00:00Z"))
    assert kind.effective_date(facts, POLICY, NOW) == "2026-06-09T00:00:00Z"


def test_staged_next_certificate_then_publish_then_clear_previous() -> None:
    old = _cert(OLD, "2025-01-01T00:00:00Z", "2026-07-15T00:00:00Z")
    new = _cert(NEW, "2026-05-31T00:00:00Z", "2031-05-31T00:00:00Z")
    staged = _facts({"CurrentCertificateThumbprint": OLD, "NextCertificateThumbprint": NEW,
                     "NextCertificateEffectiveDate": "2026-07-01T00:00:00Z"}, old, new)
    assert kind.next_step(staged, POLICY, NOW) is None
    late = NOW + datetime.timedelta(days=31)
    assert kind.next_step(staged, POLICY, late) == "publish"
    assert kind.next_step(staged, {**POLICY, "publish": False}, late) is None
    (publish,) = kind.step_commands(staged, POLICY, late)
    assert kind.SET_AUTH_CONFIG.bind(publish.parameters)[0].name == "PublishAuthCertificateParameter"
    done = _facts({"CurrentCertificateThumbprint": NEW, "PreviousCertificateThumbprint": OLD}, old, new)
    assert kind.next_step(done, POLICY, late) == "clearPrevious"
    assert kind.next_step(done, {**POLICY, "clearPrevious": False}, late) is None


def test_a_next_certificate_expiring_within_120_days_is_renewed() -> None:
    old = _cert(OLD, "2025-01-01T00:00:00Z", "2026-07-15T00:00:00Z")
    short = _cert(NEW, "2026-05-01T00:00:00Z", "2026-08-01T00:00:00Z")
    facts = _facts({"CurrentCertificateThumbprint": OLD, "NextCertificateThumbprint": NEW,
                    "NextCertificateEffectiveDate": "2026-07-01T00:00:00Z"}, old, short)
    assert kind.next_step(facts, POLICY, NOW) == "create"


def test_plan_refuses_a_staged_certificate_missing_expired_or_not_yet_valid() -> None:
    old = _cert(OLD, "2025-01-01T00:00:00Z", "2027-07-15T00:00:00Z")
    context = DiagnoseContext(NOW)
    cases = ((None, "is not in the Exchange server's certificate store"),
             (_cert(NEW, "2024-01-01T00:00:00Z", "2026-01-01T00:00:00Z"), "expired"),
             (_cert(NEW, "2026-08-01T00:00:00Z", "2031-01-01T00:00:00Z"), "not valid until"))
    for entry, words in cases:
        store = [old] + ([entry] if entry else [])
        live = kind.parse({"CurrentCertificateThumbprint": OLD, "NextCertificateThumbprint": NEW,
                           "NextCertificateEffectiveDate": "2026-07-01T00:00:00Z"}, store)
        findings = kind.diagnose({}, live, context)
        assert findings and findings[0][0] == "error" and NEW in findings[0][2] and words in findings[0][2], findings


def test_discovery_and_commands_fit_the_documented_syntax() -> None:
    kind.GET_EXCHANGE_CERTIFICATE.bind(kind.DISCOVERY.parameters)
    assert kind.spec().field("renewWithinDays").control
