"""SharePoint app principal permissions end to end (the `appPrincipalPermission` handler), on the lab, via the CLI.

No cmdlet reads a permission back, so a grant runs once after the issuer it names is made or changed, and whenever
the journal holds no successful run of that exact grant on the target (first declared, changed, or failed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.lab.estate import EXCHANGE_ID, SKYPE_ID
from tests.e2e import REPO, Estate

MANIFEST = REPO / "manifests" / "on-premises-sharepoint.yaml"
SHAREPOINT = "atl-sharepoint-001"
HANDLER = "litware-sharepoint.handler.appPrincipalPermission"
EXCHANGE_NAME_ID = f"{EXCHANGE_ID}@litwareinc.com"
SKYPE_NAME_ID = f"{SKYPE_ID}@litwareinc.com"
GRANT = """          - issuer: Exchange            # the TrustedSecurityTokenIssuer below
            # Exchange's issuer id @ the realm its metadata document names (the issuer's
            # RegisteredIssuerName, which Get-SPTrustedSecurityTokenIssuer shows)
            nameIdentifier: 00000002-0000-0ff1-ce00-000000000000@litwareinc.com
            site: ${sharepointHost}     # the web given as -Site (the root site collection)
            scope: SiteSubscription
            right: FullControl
            enableAppOnlyPolicy: true
"""
SKYPE_GRANT = f"""          - issuer: Skype
            nameIdentifier: {SKYPE_NAME_ID}
            site: ${{sharepointHost}}
            scope: Site
            right: Read
"""


def grants(estate: Estate) -> list[dict[str, Any]]:
    return list(estate.objects(SHAREPOINT, "AppPrincipalPermission"))


def calls(estate: Estate, cmdlet: str) -> int:
    return int(estate.snapshot()["hosts"][SHAREPOINT].get("calls", {}).get(cmdlet, 0))


def variant(estate: Estate, name: str, grant: str) -> Path:
    text = MANIFEST.read_text(encoding="utf-8")
    assert GRANT in text, "the shipped manifest declares the Exchange grant"
    return estate.write(name, text.replace(GRANT, grant))


def test_the_shipped_manifest_grants_exchange_once_after_making_its_issuer(estate: Estate) -> None:
    plan = estate.reconcile("plan", MANIFEST)
    assert plan.code == 0, plan.out + plan.err
    section = plan.out.split(f"# handler {HANDLER} will run once after the changes above")[1]
    assert "# triggered by: litware-sharepoint.TrustedSecurityTokenIssuer.Exchange\n" in section
    assert "# not applied as declared yet" in section  # a fresh state directory: never applied
    site = f"{estate.url}/atl-sharepoint-001.litwareinc.com"
    assert (f"    > Get-SPAppPrincipal -NameIdentifier '{EXCHANGE_NAME_ID}' -Site '{site}' | "
            f"Set-SPAppPrincipalPermission -Site '{site}' -Right 'FullControl' -Scope 'SiteSubscription' "
            "-EnableAppOnlyPolicy\n") in section

    saved = estate.reconcile("plan", MANIFEST, "--out", "plan.json")
    assert saved.code == 0
    document = json.loads(Path("plan.json").read_text(encoding="utf-8"))
    (handler,) = [h for h in document["handlers"] if h["address"] == HANDLER]
    assert handler["unapplied"] is True
    assert handler["commands"][0]["pipe"]["source"]["cmdlet"] == "Get-SPAppPrincipal"
    shown = estate.run("show", "plan.json")
    assert shown.code == 0 and f"| Set-SPAppPrincipalPermission -Site '{site}'" in shown.out

    run = estate.reconcile("apply", "plan.json")
    assert run.code == 0, run.out + run.err
    assert f"Handler {HANDLER}: ran once (Get-SPAppPrincipal -NameIdentifier" in run.out
    assert grants(estate) == [{"Identity": f"{EXCHANGE_NAME_ID}|SiteSubscription|{site}",
                               "NameIdentifier": EXCHANGE_NAME_ID, "Site": site, "Scope": "SiteSubscription",
                               "Right": "FullControl", "AppOnlyPolicy": True}]

    again = estate.reconcile("plan", MANIFEST, "--detailed-exitcode")
    assert again.code == 0, again.out  # applied as declared, nothing changed: nothing to do
    assert "No changes." in again.out and HANDLER not in again.out
    assert calls(estate, "Set-SPAppPrincipalPermission") == 1


def test_a_grant_declared_on_a_farm_that_already_trusts_the_issuer_runs_once(estate: Estate) -> None:
    without = variant(estate, "no-grant.yaml", SKYPE_GRANT)  # Exchange's grant not declared yet
    assert estate.reconcile("apply", without, "--auto-approve").code == 0
    assert [g["NameIdentifier"] for g in grants(estate)] == [SKYPE_NAME_ID]

    plan = estate.reconcile("plan", MANIFEST, "--detailed-exitcode")
    assert plan.code == 2, plan.out  # the issuer exists and is unchanged; the grant was never applied
    assert "Plan: no changes. Then 1 handler still due: " + HANDLER in plan.out
    assert "# triggered by" not in plan.out and "# not applied as declared yet" in plan.out
    assert EXCHANGE_NAME_ID in plan.out and SKYPE_NAME_ID not in plan.out  # only what was never applied

    assert estate.reconcile("apply", MANIFEST, "--auto-approve").code == 0
    assert sorted(g["NameIdentifier"] for g in grants(estate)) == sorted([EXCHANGE_NAME_ID, SKYPE_NAME_ID])
    assert estate.reconcile("plan", MANIFEST, "--detailed-exitcode").code == 0


def test_a_changed_grant_is_applied_again_and_sets_the_new_right(estate: Estate) -> None:
    assert estate.reconcile("apply", MANIFEST, "--auto-approve").code == 0
    manage = variant(estate, "manage.yaml", GRANT.replace("right: FullControl", "right: Manage"))
    plan = estate.reconcile("plan", manage, "--detailed-exitcode")
    assert plan.code == 2 and "-Right 'Manage'" in plan.out
    assert estate.reconcile("apply", manage, "--auto-approve").code == 0
    (granted,) = grants(estate)
    assert granted["Right"] == "Manage" and granted["AppOnlyPolicy"] is True
    assert estate.reconcile("plan", manage, "--detailed-exitcode").code == 0


def test_only_the_grants_of_the_issuer_that_changed_run_again(estate: Estate) -> None:
    both = variant(estate, "both.yaml", GRANT + SKYPE_GRANT)
    assert estate.reconcile("apply", both, "--auto-approve").code == 0
    assert calls(estate, "Set-SPAppPrincipalPermission") == 2
    estate.lab("set", SHAREPOINT, "TrustedSecurityTokenIssuer", "Skype", "IsSelfIssuer=true")  # drift

    plan = estate.reconcile("plan", both)
    section = plan.out.split(f"# handler {HANDLER}")[1]
    assert "# triggered by: litware-sharepoint.TrustedSecurityTokenIssuer.Skype\n" in section
    assert SKYPE_NAME_ID in section and EXCHANGE_NAME_ID not in section
    assert "not applied as declared yet" not in section
    assert estate.reconcile("apply", both, "--auto-approve").code == 0
    assert calls(estate, "Set-SPAppPrincipalPermission") == 3


def test_a_failed_grant_stays_due_until_it_runs(estate: Estate) -> None:
    estate.lab("fail", SHAREPOINT, "Set-SPAppPrincipalPermission", "--message", "Access is denied.")
    run = estate.reconcile("apply", MANIFEST, "--auto-approve")
    assert run.code != 0
    assert f"Handler {HANDLER}: FAILED: Set-SPAppPrincipalPermission : Access is denied." in run.out
    assert grants(estate) == []

    plan = estate.reconcile("plan", MANIFEST, "--detailed-exitcode")
    assert plan.code == 2 and f"still due: {HANDLER}" in plan.out
    assert "# due since " in plan.out  # the journal: due in an apply, never run successfully since
    assert estate.reconcile("apply", MANIFEST, "--auto-approve").code == 0
    assert [g["Right"] for g in grants(estate)] == ["FullControl"]
    assert estate.reconcile("plan", MANIFEST, "--detailed-exitcode").code == 0


def test_a_name_identifier_sharepoint_does_not_know_fails_the_grant_unrun(estate: Estate) -> None:
    wrong = variant(estate, "wrong.yaml", GRANT.replace("@litwareinc.com", "@contoso.com"))
    run = estate.reconcile("apply", wrong, "--auto-approve")
    assert run.code != 0
    assert (f"Handler {HANDLER}: FAILED: Get-SPAppPrincipal : The app principal with name identifier "
            f"'{EXCHANGE_ID}@contoso.com' was not found.") in run.out
    assert grants(estate) == []


def test_bad_grants_are_refused_by_the_manifest_schema(estate: Estate) -> None:
    for bad, words in [(GRANT.replace("scope: SiteSubscription", "scope: Farm"), "scope"),
                       (GRANT.replace("right: FullControl", "right: Full Control"), "right"),
                       (GRANT.replace("nameIdentifier: 00000002-0000-0ff1-ce00-000000000000@litwareinc.com",
                                      "nameIdentifier: 00000002-0000-0ff1-ce00-000000000000"), "nameIdentifier"),
                       (GRANT.replace("- issuer: Exchange            # the TrustedSecurityTokenIssuer below\n",
                                      "-\n"), "issuer")]:
        manifest = variant(estate, "bad.yaml", bad)
        run = estate.reconcile("plan", manifest)
        assert run.code != 0 and words in run.err, (words, run.out, run.err)
    assert grants(estate) == []
