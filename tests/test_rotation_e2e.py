"""A signing certificate rotated across every side that trusts it, end to end against the lab, with the clock moved.

The Skype pool stages its next OAuthTokenIssuer certificate; the sides that trust it take the key from the pool's
live state (`certificateOf:`): Exchange's partner application re-reads the pool's metadata document
(Set-PartnerApplication -RefreshAuthMetadata) and the Office 365 principal gets the new key. Successive cycles with
the clock advanced take the roll over and remove the previous certificate; Test-CsExStorageConnectivity (verify)
passes at every step, and fails when a side was skipped.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import clock
from reconciler.lab import certs
from reconciler.lab.skype_certificates import store_entry
from reconciler.lab.state import LabStore
from tests.e2e import REPO, Estate

ROTATION = REPO / "manifests" / "certificate-rotation.yaml"
POOL = "atl-cs-001"


class Clock:
    """The one clock of the tool and the lab (reconciler.clock), moved by the test. It starts at the real time when
    the test starts: the lab's own certificates (made when the estate was) are valid then."""

    def __init__(self) -> None:
        self.start = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        self.now = self.start

    def advance(self, **delta: float) -> None:
        self.now += datetime.timedelta(**delta)


@pytest.fixture
def moved(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(clock, "utc_now", lambda: fake.now)
    yield fake


def _certificate(start: datetime.datetime, name: str, days_from: int, days_to: int) -> bytes:
    return certs.make_certificate(name, now=start, valid_from=datetime.timedelta(days=days_from),
                                  valid_to=datetime.timedelta(days=days_to))


def _stock(estate: Estate, host: str, der: bytes) -> tuple[str, str]:
    """A new certificate (with its key) in the pool's store; (new thumbprint, current thumbprint)."""
    with LabStore(estate.state).edit() as state:
        record = state["hosts"][host]
        if "CertificateStore" not in record["objects"]:
            signing = store_entry(certs.from_b64(state["services"][record["service"]]["certificate"]))
            record["objects"]["CertificateStore"] = [signing]
            record["objects"]["OAuthTokenIssuer"] = [{"Thumbprint": signing["Thumbprint"],
                                                      "EffectiveDate": signing["NotBefore"], "PreviousThumbprint": ""}]
        record["objects"]["CertificateStore"].append(store_entry(der))
        current = record["objects"]["OAuthTokenIssuer"][0]["Thumbprint"]
    return certs.thumbprint(der), current


def _iso(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _rotation(estate: Estate, **certificate: object) -> Path:
    """The shipped rotation manifest with the pool's OAuthCertificate fields set for this step."""
    text = ROTATION.read_text(encoding="utf-8")
    lines = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in certificate.items())
    marker = "    identity: OAuthTokenIssuer\n"
    assert marker in text
    return estate.write("rotation.yaml", text.replace(marker, marker + lines, 1))


def _issuer_certificate(estate: Estate, name: str) -> str:
    issuers = estate.objects("atl-sharepoint-001", "TrustedSecurityTokenIssuer")
    issuer = next(i for i in issuers if i["Identity"] == name)
    return certs.thumbprint(certs.from_b64(issuer["SigningCertificate"]))


def _cached(estate: Estate) -> list[str]:
    app = estate.app("atl-exchange-001", "LyncEnterprise")
    assert app is not None
    return sorted(certs.thumbprint(certs.from_b64(c)) for c in app.get("CertificateStrings") or [])


def test_a_roll_reaches_exchange_before_it_signs_and_verify_passes_at_every_step(estate: Estate,
                                                                                 moved: Clock) -> None:
    assert estate.reconcile("apply", ROTATION, "--auto-approve").code == 0
    assert estate.reconcile("verify", ROTATION).code == 0
    new, old = _stock(estate, POOL, _certificate(moved.start, "atl-cs-001.litwareinc.com", -1, 700))
    date = _iso(moved.start + datetime.timedelta(days=2))
    step = _rotation(estate, nextThumbprint=new, effectiveDate=date)

    plan = estate.reconcile("plan", step, "--detailed-exitcode")
    assert plan.code == 2, plan.out + plan.err
    assert f"Set-CsCertificate -Type 'OAuthTokenIssuer' -Thumbprint '{new}' -Roll" in plan.out
    assert "Set-PartnerApplication -Identity 'LyncEnterprise' -RefreshAuthMetadata" in plan.out
    assert "Certificate rotation" in plan.out and f"{new} staged by this plan" in plan.out
    assert "litware-sharepoint.TrustedSecurityTokenIssuer.Skype: SharePoint keeps one SigningCertificate" in plan.out
    assert f"{date}" in plan.out and "signs from here" in plan.out

    applied = estate.reconcile("apply", step, "--auto-approve")
    assert applied.code == 0, applied.out + applied.err
    assert _cached(estate) == sorted([old, new])  # the pool published the next key first; Exchange re-read it
    assert estate.reconcile("plan", step, "--detailed-exitcode").code == 0
    assert estate.reconcile("verify", step).code == 0

    moved.advance(days=3)  # the roll takes effect: the pool signs with the new certificate, Exchange trusts it
    verified = estate.reconcile("verify", step)
    assert verified.code == 0, verified.out + verified.err
    # SharePoint keeps one signing certificate per issuer: the next cycle re-reads the pool's document.
    again = estate.reconcile("plan", step, "--detailed-exitcode")
    assert again.code == 2, again.out
    assert "Set-SPTrustedSecurityTokenIssuer -Identity 'Skype' -MetadataEndPoint" in again.out
    assert "litware-exchange.EnterprisePartnerApplication" not in again.out
    assert estate.reconcile("apply", step, "--auto-approve").code == 0
    assert _issuer_certificate(estate, "Skype") == new
    assert estate.reconcile("plan", step, "--detailed-exitcode").code == 0

    done = _rotation(estate, nextThumbprint=new, effectiveDate=date, removePrevious=True)
    assert estate.reconcile("apply", done, "--auto-approve").code == 0
    assert [r["Thumbprint"] for r in estate.objects(POOL, "OAuthTokenIssuer")] == [new]
    assert estate.reconcile("plan", done, "--detailed-exitcode").code == 0
    assert estate.reconcile("verify", done).code == 0


def test_without_the_refresh_exchange_stops_trusting_the_pool_at_the_date(estate: Estate, moved: Clock) -> None:
    """The failure this prevents: the pool's roll alone, Exchange's partner application never refreshed."""
    assert estate.reconcile("apply", ROTATION, "--auto-approve").code == 0
    new, _ = _stock(estate, POOL, _certificate(moved.start, "atl-cs-001.litwareinc.com", -1, 700))
    step = _rotation(estate, nextThumbprint=new, effectiveDate=_iso(moved.start + datetime.timedelta(days=2)))
    alone = estate.write("alone.yaml", step.read_text(encoding="utf-8").replace(
        "    certificateOf: litware-pool\n", ""))
    assert estate.reconcile("apply", alone, "--auto-approve").code == 0
    assert estate.reconcile("verify", alone).code == 0  # before the date the pool still signs with the old key
    moved.advance(days=3)
    broken = estate.reconcile("verify", alone)
    assert broken.code == 1
    assert "RefreshAuthMetadata" in broken.out + broken.err
    # Declaring the trust mends it: the next cycle refreshes the partner application.
    assert estate.reconcile("apply", step, "--auto-approve").code == 0
    assert estate.reconcile("verify", step).code == 0


def test_an_interrupted_rotation_is_resumed_by_the_next_cycle_from_the_live_state(estate: Estate,
                                                                                  moved: Clock) -> None:
    """The pool staged its roll, then Exchange's refresh failed: nothing is kept aside; the next cycle reads both
    sides again, sees Exchange lacks the key the pool publishes, and refreshes it, before the date."""
    assert estate.reconcile("apply", ROTATION, "--auto-approve").code == 0
    new, old = _stock(estate, POOL, _certificate(moved.start, "atl-cs-001.litwareinc.com", -1, 700))
    step = _rotation(estate, nextThumbprint=new, effectiveDate=_iso(moved.start + datetime.timedelta(days=2)))
    assert estate.lab("fail", "atl-exchange-001", "Set-PartnerApplication").code == 0
    failed = estate.reconcile("apply", step, "--auto-approve")
    assert failed.code == 1, failed.out + failed.err
    assert [r["Thumbprint"] for r in estate.objects(POOL, "OAuthTokenIssuer")][-1] == new  # the pool's step held
    assert _cached(estate) == [old]

    moved.advance(hours=6)
    plan = estate.reconcile("plan", step, "--detailed-exitcode")
    assert plan.code == 2 and "-RefreshAuthMetadata" in plan.out and "Set-CsCertificate" not in plan.out, plan.out
    assert estate.reconcile("apply", step, "--auto-approve").code == 0
    assert _cached(estate) == sorted([old, new])
    moved.advance(days=3)
    assert estate.reconcile("verify", step).code == 0


def test_an_immediate_switch_is_refused_while_other_sides_trust_the_pool(estate: Estate, moved: Clock) -> None:
    assert estate.reconcile("apply", ROTATION, "--auto-approve").code == 0
    new, _ = _stock(estate, POOL, _certificate(moved.start, "atl-cs-001.litwareinc.com", -1, 700))
    plan = estate.reconcile("plan", _rotation(estate, thumbprint=new))
    assert plan.code == 1
    assert f"refusing to switch litware-pool's signing certificate to {new} at once" in plan.out + plan.err
    assert "litware-exchange.EnterprisePartnerApplication.Lync" in plan.out + plan.err


def test_certificate_of_an_unknown_or_undeclared_target_is_a_plan_error(estate: Estate, moved: Clock) -> None:
    text = ROTATION.read_text(encoding="utf-8").replace("certificateOf: litware-pool", "certificateOf: litware-pol")
    plan = estate.reconcile("plan", estate.write("typo.yaml", text))
    assert plan.code == 1
    assert "certificateOf: 'litware-pol' is not a target of this manifest" in plan.out + plan.err


TENANT = """\
apiVersion: reconciler/v1
variables:
  lab: http://127.0.0.1:8470
  tenantId: 8a1c5e3f-2b7d-4c9e-a6f0-1d2e3f4a5b6c
targets:
  fabrikam-tenant:
    provider: office365
    connection:
      transport: graph
      tenantId: ${tenantId}
      clientId: 5e0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b
      authority: ${lab}/login.microsoftonline.com
      graphUrl: ${lab}/graph.microsoft.com
      clientSecretEnv: RECONCILE_GRAPH_CLIENT_SECRET
"""
"""The lab tenant as a target; each manifest below adds its on-premises target and resources."""

CROSS = TENANT.replace("{", "{{").replace("}", "}}") + """\
  fabrikam-pool:
    provider: skype
    connection: {{transport: lab, host: atl-cs-001}}
resources:
  - target: fabrikam-pool
    kind: OAuthCertificate
    identity: OAuthTokenIssuer
{certificate}
  - target: fabrikam-tenant
    kind: ServicePrincipal
    identity: 00000004-0000-0ff1-ce00-000000000000
    credentials:
      - certificateOf: fabrikam-pool
    credentialsAuthoritative: true
"""


def _principal_keys(estate: Estate) -> list[str]:
    tenant = estate.snapshot()["tenants"]
    principals = next(iter(tenant.values()))["servicePrincipals"]
    skype = next(p for p in principals if p["appId"] == "00000004-0000-0ff1-ce00-000000000000")
    return sorted(certs.thumbprint(certs.from_b64(k["key"])) for k in skype.get("keyCredentials") or [])


def test_the_pools_next_key_reaches_the_office365_principal_from_its_live_state(estate: Estate,
                                                                               moved: Clock) -> None:
    new, old = _stock(estate, POOL, _certificate(moved.start, "lync.fabrikam.com", -1, 700))
    manifest = estate.write("cross.yaml", CROSS.format(certificate=""))
    assert estate.reconcile("apply", manifest, "--auto-approve").code == 0
    assert _principal_keys(estate) == [old]  # the current key, read from the pool: no .cer exported by anyone

    date = _iso(moved.start + datetime.timedelta(days=2))
    staged = estate.write("cross.yaml", CROSS.format(
        certificate=f"    nextThumbprint: {new}\n    effectiveDate: {date}"))
    plan = estate.reconcile("plan", staged)
    assert f"+ \"{new}" in plan.out or new in plan.out
    assert estate.reconcile("apply", staged, "--auto-approve").code == 0
    assert _principal_keys(estate) == sorted([old, new])  # uploaded before the date it signs
    assert estate.reconcile("plan", staged, "--detailed-exitcode").code == 0

    moved.advance(days=3)
    done = estate.write("cross.yaml", CROSS.format(
        certificate=f"    nextThumbprint: {new}\n    effectiveDate: {date}\n    removePrevious: true"))
    assert estate.reconcile("apply", done, "--auto-approve").code == 0
    assert estate.reconcile("apply", done, "--auto-approve").code == 0  # the next cycle drops the old key
    assert _principal_keys(estate) == [new]
    assert estate.reconcile("plan", done, "--detailed-exitcode").code == 0


HYBRID = TENANT + """\
  exchange:
    provider: exchange
    connection: {transport: lab, host: atl-exchange-001}
resources:
  - target: exchange
    kind: AuthCertificate
    identity: Auth Certificate
    renewWithinDays: 60
    stageDaysAhead: 30
  - target: fabrikam-tenant
    kind: Application
    identity: ExchangeServerApp-3f8e9a41-5c2d-4b7e-9a10-6d4c2b1e0f97
    signInAudience: AzureADMyOrg
    credentials:
      - certificateOf: exchange
"""


def _application_keys(estate: Estate) -> list[str]:
    tenant = next(iter(estate.snapshot()["tenants"].values()))
    app = next(a for a in tenant.get("applications") or [] if a["displayName"].startswith("ExchangeServerApp-"))
    return sorted(certs.thumbprint(certs.from_b64(k["key"])) for k in app.get("keyCredentials") or [])


def test_the_exchange_auth_certificate_and_its_staged_successor_reach_the_hybrid_application(
        estate: Estate, moved: Clock) -> None:
    from reconciler.lab.estate import EXCHANGE_HOST
    from reconciler.lab.exchange_certificates import store_entry as exchange_entry

    def auth(days_from: int, days_to: int) -> bytes:
        return _certificate(moved.start, "Microsoft Exchange Server Auth Certificate", days_from, days_to)

    expiring, candidate = auth(-300, 50), auth(-1, 1800)  # renewal due: the current one has 50 days left
    with LabStore(estate.state).edit() as state:
        record = state["hosts"][EXCHANGE_HOST]
        state["services"][record["service"]]["certificate"] = certs.b64(expiring)
        record["objects"]["AuthConfig"]["CurrentCertificateThumbprint"] = certs.thumbprint(expiring)
        record["objects"]["ExchangeCertificate"] = [exchange_entry(d) for d in (expiring, candidate)]
    manifest = estate.write("hybrid.yaml", HYBRID)

    first = estate.reconcile("apply", manifest, "--auto-approve")
    assert first.code == 0, first.out + first.err  # the staged key is the next cycle's step, not a failure
    assert _application_keys(estate) == [certs.thumbprint(expiring)]
    assert estate.objects(EXCHANGE_HOST, "AuthConfig")["NextCertificateThumbprint"] == certs.thumbprint(candidate)

    plan = estate.reconcile("plan", manifest, "--detailed-exitcode")
    assert plan.code == 2 and "Certificate rotation" in plan.out, plan.out
    assert estate.reconcile("apply", manifest, "--auto-approve").code == 0
    assert _application_keys(estate) == sorted([certs.thumbprint(expiring), certs.thumbprint(candidate)])
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0


def test_graph_marks_each_certificate_on_each_link_with_its_dates_and_who_trusts_it(estate: Estate,
                                                                                    moved: Clock) -> None:
    assert estate.reconcile("apply", ROTATION, "--auto-approve").code == 0
    new, old = _stock(estate, POOL, _certificate(moved.start, "atl-cs-001.litwareinc.com", -1, 700))
    step = _rotation(estate, nextThumbprint=new, effectiveDate=_iso(moved.start + datetime.timedelta(days=2)))
    assert estate.reconcile("apply", step, "--auto-approve").code == 0
    graph = estate.reconcile("graph", step)
    assert graph.code == 0, graph.out
    link = graph.out[graph.out.index("-> litware-pool  via EnterprisePartnerApplication Lync"):]
    until = (moved.start + datetime.timedelta(days=700)).date().isoformat()
    assert f"certificate {old} valid " in link  # the pool's current key and, during the roll, the next one
    assert f"certificate {new} valid {(moved.start - datetime.timedelta(days=1)).date().isoformat()} to {until}, " \
           "trusted by litware-exchange" in link
    dot = estate.reconcile("graph", step, "--format", "dot").out
    assert f"{new[:8]}... to {until}" in dot


def test_the_exchange_auth_certificate_rotates_across_skype_and_sharepoint_in_run_cycles(estate: Estate,
                                                                                        moved: Clock) -> None:
    """Exchange's Auth certificate renewed by policy, one step per `run --once` cycle, the clock moved past the
    staged date: Skype (which reads Exchange's document) and SharePoint (which holds one certificate) follow, and
    verify passes after every cycle."""
    from reconciler.lab.estate import EXCHANGE_HOST
    from reconciler.lab.exchange_certificates import store_entry as exchange_entry

    expiring = _certificate(moved.start, "Microsoft Exchange Server Auth Certificate", -300, 50)  # renewal due
    with LabStore(estate.state).edit() as state:
        record = state["hosts"][EXCHANGE_HOST]
        state["services"][record["service"]]["certificate"] = certs.b64(expiring)
        record["objects"]["AuthConfig"]["CurrentCertificateThumbprint"] = certs.thumbprint(expiring)
        record["objects"]["ExchangeCertificate"] = [exchange_entry(expiring)]
    text = ROTATION.read_text(encoding="utf-8").replace(
        "    identity: Auth Certificate\n", "    identity: Auth Certificate\n    clearPrevious: true\n", 1)
    manifest = estate.write("exchange-rotation.yaml", text)

    def cycle() -> None:
        ran = estate.reconcile("run", manifest, "--once")
        assert ran.code == 0, ran.out + ran.err
        verified = estate.reconcile("verify", manifest)
        assert verified.code == 0, verified.out + verified.err

    cycle()  # the estate, and New-ExchangeCertificate (the key never leaves the server)
    (new,) = [c["Thumbprint"] for c in estate.objects(EXCHANGE_HOST, "ExchangeCertificate")
              if c["Thumbprint"] != certs.thumbprint(expiring)]
    cycle()  # staged 30 days ahead: Exchange's document publishes both keys; Skype reads it
    assert estate.objects(EXCHANGE_HOST, "AuthConfig")["NextCertificateThumbprint"] == new
    plan = estate.reconcile("plan", manifest)
    assert "Certificate rotation" in plan.out and f"{new} staged" in plan.out, plan.out
    assert "litware-pool.PartnerApplication.microsoft.exchange: Skype for Business re-reads" in plan.out
    assert _issuer_certificate(estate, "Exchange") == certs.thumbprint(expiring)

    moved.advance(days=31)  # Exchange signs with the new certificate
    cycle()  # SharePoint re-reads Exchange's document; the previous certificate is cleared
    assert _issuer_certificate(estate, "Exchange") == new
    config = estate.objects(EXCHANGE_HOST, "AuthConfig")
    assert (config["CurrentCertificateThumbprint"], config["PreviousCertificateThumbprint"]) == (new, None)
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0


def test_export_during_a_roll_describes_the_pending_certificate(estate: Estate, moved: Clock) -> None:
    from tests.test_export_e2e import exported

    assert estate.reconcile("apply", ROTATION, "--auto-approve").code == 0
    new, _ = _stock(estate, POOL, _certificate(moved.start, "atl-cs-001.litwareinc.com", -1, 700))
    date = _iso(moved.start + datetime.timedelta(days=2))
    step = _rotation(estate, nextThumbprint=new, effectiveDate=date)
    assert estate.reconcile("apply", step, "--auto-approve").code == 0
    out, document = exported(estate, step)
    (certificate,) = [r for r in document["resources"] if r["kind"] == "OAuthCertificate"]
    assert certificate["nextThumbprint"] == new and "thumbprint" not in certificate
    plan = estate.reconcile("plan", out, "--detailed-exitcode")
    assert plan.code == 0, plan.out + plan.err
