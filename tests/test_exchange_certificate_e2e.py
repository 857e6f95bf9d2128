"""Exchange's Auth certificate renewed by policy, end to end against the lab, through successive applies."""

from __future__ import annotations

import datetime
import json
import urllib.request

from reconciler.lab import certs
from reconciler.lab.estate import EXCHANGE_HOST, EXCHANGE_PATH
from reconciler.lab.exchange_certificates import store_entry
from reconciler.lab.state import LabStore
from tests.e2e import Estate

MANIFEST = """\
apiVersion: reconciler/v1
targets:
  exchange:
    provider: exchange
    connection: {transport: lab, host: atl-exchange-001}
resources:
  - target: exchange
    kind: AuthCertificate
    identity: Auth Certificate
    renewWithinDays: 60
    stageDaysAhead: 30
    clearPrevious: true
"""


def _certificate(days_from: int, days_to: int) -> bytes:
    return certs.make_certificate("Microsoft Exchange Server Auth Certificate",
                                  valid_from=datetime.timedelta(days=days_from),
                                  valid_to=datetime.timedelta(days=days_to))


def _current(estate: Estate, der: bytes, *extra: bytes) -> str:
    """Make `der` the Auth certificate Exchange signs with now (in its store, AuthConfig and document)."""
    with LabStore(estate.state).edit() as state:
        record = state["hosts"][EXCHANGE_HOST]
        state["services"][record["service"]]["certificate"] = certs.b64(der)
        record["objects"]["AuthConfig"]["CurrentCertificateThumbprint"] = certs.thumbprint(der)
        record["objects"]["ExchangeCertificate"] = [store_entry(d) for d in (der, *extra)]
    return certs.thumbprint(der)


def _document_keys(estate: Estate) -> list[str]:
    with urllib.request.urlopen(estate.url + EXCHANGE_PATH) as response:
        document = json.load(response)
    return [certs.thumbprint(certs.from_b64(k["keyvalue"]["value"])) for k in document["keys"]]


def _config(estate: Estate) -> dict[str, object]:
    return dict(estate.objects(EXCHANGE_HOST, "AuthConfig"))


def test_rotation_create_stage_take_over_and_clear_previous(estate: Estate) -> None:
    old = _current(estate, _certificate(-300, 50))  # 50 days left: renewal is due (under 60)
    manifest = estate.write("m.yaml", MANIFEST)

    plan = estate.reconcile("plan", manifest, "--detailed-exitcode")
    assert plan.code == 2 and "New-ExchangeCertificate" in plan.out, plan.out + plan.err
    assert "-PrivateKeyExportable:$false" in plan.out and "-Services 'None'" in plan.out, plan.out
    # One step per cycle: apply's re-read already sees the next step (staging): progress, not a failure.
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0 and "advances one step per cycle; its next step is for the next run" in run.out, \
        run.out + run.err
    store = estate.objects(EXCHANGE_HOST, "ExchangeCertificate")
    (new,) = [c["Thumbprint"] for c in store if c["Thumbprint"] != old]
    assert store[-1]["Subject"] == "CN=Microsoft Exchange Server Auth Certificate"

    # The next cycle reads the new certificate from the store and stages it.
    plan = estate.reconcile("plan", manifest, "--detailed-exitcode")
    assert plan.code == 2, plan.out + plan.err
    assert f"Set-AuthConfig -NewCertificateThumbprint '{new}' -NewCertificateEffectiveDate" in plan.out, plan.out
    assert "-Force" in plan.out and "New-ExchangeCertificate" not in plan.out
    assert estate.reconcile("apply", manifest, "--auto-approve").code == 0
    assert _config(estate)["NextCertificateThumbprint"] == new
    assert _document_keys(estate) == [old, new]  # the document publishes the next key during the roll
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0

    # Time passes: the effective date is reached, Exchange makes the next certificate current.
    with LabStore(estate.state).edit() as state:
        state["hosts"][EXCHANGE_HOST]["objects"]["AuthConfig"]["NextCertificateEffectiveDate"] = (
            datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)).isoformat()
    plan = estate.reconcile("plan", manifest, "--detailed-exitcode")
    assert plan.code == 2 and "Set-AuthConfig -ClearPreviousCertificate" in plan.out, plan.out + plan.err
    assert _document_keys(estate) == [new]
    assert estate.reconcile("apply", manifest, "--auto-approve").code == 0
    config = _config(estate)
    assert (config["CurrentCertificateThumbprint"], config["PreviousCertificateThumbprint"]) == (new, None)
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0


def test_plan_refuses_a_staged_certificate_missing_expired_or_not_yet_valid(estate: Estate) -> None:
    expired, later = _certificate(-400, -1), _certificate(40, 700)
    _current(estate, _certificate(-300, 500), expired, later)
    manifest = estate.write("m.yaml", MANIFEST)
    date = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=10)).isoformat()
    for thumbprint, words in ((certs.thumbprint(expired), "expired"), (certs.thumbprint(later), "not valid until"),
                              ("AB" * 20, "is not in the Exchange server's certificate store")):
        with LabStore(estate.state).edit() as state:
            state["hosts"][EXCHANGE_HOST]["objects"]["AuthConfig"].update(
                NextCertificateThumbprint=thumbprint, NextCertificateEffectiveDate=date)
        run = estate.reconcile("plan", manifest)
        assert run.code != 0, run.out
        assert thumbprint in run.out + run.err and words in run.out + run.err, run.out + run.err
