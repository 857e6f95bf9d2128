"""`reconcile status`: per target, Flux-style conditions from the manifest and the run store."""

from __future__ import annotations

import json

from tests.e2e import ON_PREMISES, Estate


def conditions(estate: Estate, manifest: object = ON_PREMISES) -> dict[str, dict[str, object]]:
    run = estate.reconcile("status", manifest, "--json")  # type: ignore[arg-type]
    assert run.code == 0, run.err
    return {s["target"]: s for s in json.loads(run.out)}


def test_status_follows_the_runs(estate: Estate) -> None:
    assert {t: s["condition"] for t, s in conditions(estate).items()} == {
        "litware-pool": "Unknown", "litware-exchange": "Unknown"}
    assert estate.reconcile("drift", ON_PREMISES).code == 2
    drifted = conditions(estate)
    assert drifted["litware-pool"]["condition"] == "Drifted" and drifted["litware-pool"]["reason"] == "DriftDetected"
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    ready = conditions(estate)
    assert ready["litware-pool"]["condition"] == "Ready"
    assert ready["litware-pool"]["reason"] == "ReconciliationSucceeded"
    estate.lab("set", "atl-cs-001", "PartnerApplication", "microsoft.exchange", "ApplicationTrustLevel=User")
    estate.lab("fail", "atl-cs-001", "Set-CsPartnerApplication")
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 1
    failing = conditions(estate)
    assert failing["litware-pool"]["condition"] == "Failing"
    assert "Set-CsPartnerApplication" in str(failing["litware-pool"]["message"])
    text = estate.reconcile("status", ON_PREMISES)
    assert "litware-pool" in text.out and "Failing" in text.out and "CONDITION" in text.out


def test_a_suspended_target_says_so(estate: Estate) -> None:
    manifest = estate.write("m.yaml", ON_PREMISES.read_text(encoding="utf-8").replace(
        "      host: atl-cs-001\n", "      host: atl-cs-001\n    mode: suspend\n"))
    assert conditions(estate, manifest)["litware-pool"]["condition"] == "Suspended"
