"""The Skype pool's OAuthTokenIssuer certificate as a declared resource, end to end against the lab."""

from __future__ import annotations

import datetime
import json
import urllib.request

from reconciler.lab import certs
from reconciler.lab.estate import SKYPE_PATH
from reconciler.lab.skype_certificates import store_entry
from reconciler.lab.state import LabStore
from tests.e2e import Estate

POOL = "atl-cs-001"
MANIFEST = """\
apiVersion: reconciler/v1
targets:
  pool:
    provider: skype
    connection: {{transport: lab, host: atl-cs-001}}
resources:
  - target: pool
    kind: OAuthCertificate
    identity: OAuthTokenIssuer
{fields}
"""


def _certificate(days_from: int, days_to: int) -> bytes:
    return certs.make_certificate("litwareinc.com", valid_from=datetime.timedelta(days=days_from),
                                  valid_to=datetime.timedelta(days=days_to))


def _stock(estate: Estate, der: bytes, *, key: bool = True) -> str:
    """Put a certificate in the pool's store (seeded first with the pool's signing certificate, as the lab does)."""
    with LabStore(estate.state).edit() as state:
        record = state["hosts"][POOL]
        if "CertificateStore" not in record["objects"]:
            signing = store_entry(certs.from_b64(state["services"][record["service"]]["certificate"]))
            record["objects"]["CertificateStore"] = [signing]
            record["objects"]["OAuthTokenIssuer"] = [{"Thumbprint": signing["Thumbprint"],
                                                      "EffectiveDate": signing["NotBefore"], "PreviousThumbprint": ""}]
        record["objects"]["CertificateStore"].append(store_entry(der, has_private_key=key))
    return certs.thumbprint(der)


def _manifest(estate: Estate, **fields: object) -> object:
    lines = "\n".join(f"    {k}: {json.dumps(v)}" for k, v in fields.items())
    return estate.write("m.yaml", MANIFEST.format(fields=lines))


def _document_keys(estate: Estate) -> list[str]:
    with urllib.request.urlopen(estate.url + SKYPE_PATH) as response:
        document = json.load(response)
    return [certs.thumbprint(certs.from_b64(k["keyvalue"]["value"])) for k in document["keys"]]


def test_roll_is_staged_published_taken_over_and_the_previous_removed(estate: Estate) -> None:
    new = _stock(estate, _certificate(-1, 700))
    old = estate.objects(POOL, "OAuthTokenIssuer")[0]["Thumbprint"]
    date = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)).replace(microsecond=0)
    manifest = _manifest(estate, nextThumbprint=new, effectiveDate=date.isoformat().replace("+00:00", "Z"))

    plan = estate.reconcile("plan", manifest, "--detailed-exitcode")
    assert plan.code == 2, plan.out + plan.err
    assert f"Set-CsCertificate -Type 'OAuthTokenIssuer' -Thumbprint '{new}' -Roll -EffectiveDate" in plan.out
    assert estate.reconcile("apply", manifest, "--auto-approve").code == 0
    assert _document_keys(estate) == [old, new]  # the pool publishes both keys during the roll
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0

    # Time passes: the effective date is reached; the manifest unchanged asks for nothing more.
    with LabStore(estate.state).edit() as state:
        for ref in state["hosts"][POOL]["objects"]["OAuthTokenIssuer"]:
            if ref["Thumbprint"] == new:
                ref["EffectiveDate"] = (datetime.datetime.now(datetime.UTC)
                                        - datetime.timedelta(minutes=1)).isoformat()
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0
    assert _document_keys(estate) == [new]

    done = _manifest(estate, nextThumbprint=new, effectiveDate=date.isoformat(), removePrevious=True)
    plan = estate.reconcile("plan", done, "--detailed-exitcode")
    assert plan.code == 2 and "Remove-CsCertificate -Type 'OAuthTokenIssuer' -Previous" in plan.out, plan.out
    assert estate.reconcile("apply", done, "--auto-approve").code == 0
    assert [r["Thumbprint"] for r in estate.objects(POOL, "OAuthTokenIssuer")] == [new]
    assert estate.reconcile("plan", done, "--detailed-exitcode").code == 0


def test_plan_refuses_a_certificate_missing_expired_not_yet_valid_or_without_a_key(estate: Estate) -> None:
    expired = _stock(estate, _certificate(-400, -1))
    later = _stock(estate, _certificate(30, 700))
    keyless = _stock(estate, _certificate(-1, 700), key=False)
    date = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)).isoformat()
    for thumbprint, words in ((expired, "expired"), (later, "not valid until"), (keyless, "no private key"),
                              ("AB" * 20, "is not in the store")):
        run = estate.reconcile("plan", _manifest(estate, nextThumbprint=thumbprint, effectiveDate=date))
        assert run.code != 0, run.out
        assert thumbprint in run.out + run.err and words in run.out + run.err, run.out + run.err
    past = _stock(estate, _certificate(-1, 700))
    run = estate.reconcile("plan", _manifest(estate, nextThumbprint=past, effectiveDate="2020-01-01T00:00:00Z"))
    assert run.code != 0 and "not in the future" in run.out + run.err
