"""The dedicated Exchange hybrid application (manifests/hybrid-2026.yaml) against the lab's Graph: plan, apply,
plan again with nothing to do; the shared principal's keys removed only when declared, each named in the plan."""

from __future__ import annotations

import shutil
from pathlib import Path

from reconciler.lab.estate import LAB_TENANT_ID
from reconciler.lab.graph_apps import FULL_ACCESS_AS_APP
from reconciler.lab.state import LabStore
from tests.e2e import CROSS_PREMISES, REPO, Estate
from tests.test_office365_e2e import EXCHANGE, ONPREM, cross, principals

HYBRID = REPO / "manifests" / "hybrid-2026.yaml"
APP = "ExchangeServerApp-3f8e9a41-5c2d-4b7e-9a10-6d4c2b1e0f97"


def hybrid(estate: Estate, text: str | None = None) -> Path:
    shutil.copytree(CROSS_PREMISES.parent / "certs", estate.root / "certs", dirs_exist_ok=True)
    return estate.write("hybrid.yaml", text if text is not None else HYBRID.read_text(encoding="utf-8"))


def tenant(estate: Estate) -> dict[str, object]:
    return dict(LabStore(estate.state).read()["tenants"][LAB_TENANT_ID])


def test_fresh_tenant_gets_the_dedicated_app_its_principal_consent_and_key_then_nothing_to_do(estate: Estate) -> None:
    manifest = hybrid(estate)
    plan = estate.reconcile("plan", manifest)
    assert plan.code == 0, plan.out + plan.err
    assert "POST /applications" in plan.out and "POST /servicePrincipals" in plan.out
    assert "appRoleAssignedTo" in plan.out
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out + run.err
    record = tenant(estate)
    (app,) = record["applications"]  # type: ignore[misc]
    assert app["displayName"] == APP and app["signInAudience"] == "AzureADMyOrg"
    assert app["requiredResourceAccess"] == [{"resourceAppId": EXCHANGE, "resourceAccess": [
        {"id": FULL_ACCESS_AS_APP, "type": "Role"}]}]
    assert [k["customKeyIdentifier"] for k in app["keyCredentials"]] == [ONPREM]
    sps = principals(estate)
    assert app["appId"] in sps
    (grant,) = record["appRoleAssignments"]  # type: ignore[misc]
    assert grant["principalId"] == sps[app["appId"]]["id"] and grant["resourceId"] == sps[EXCHANGE]["id"]
    assert grant["appRoleId"] == FULL_ACCESS_AS_APP
    again = estate.reconcile("plan", manifest, "--detailed-exitcode")
    assert again.code == 0, again.out + again.err


def test_shared_principal_keys_are_removed_only_when_declared_and_named_in_the_plan(estate: Estate) -> None:
    seeded = estate.reconcile("apply", cross(estate), "--auto-approve")  # seed 004: the pool's key on 00000002
    assert seeded.code == 0, seeded.out + seeded.err
    assert principals(estate)[EXCHANGE]["keyCredentials"]
    text = HYBRID.read_text(encoding="utf-8")
    undeclared = text[:text.index("  - target: fabrikam-tenant\n    kind: ServicePrincipal")]
    first = estate.reconcile("apply", hybrid(estate, undeclared), "--auto-approve")
    assert first.code == 0, first.out + first.err
    assert principals(estate)[EXCHANGE]["keyCredentials"]  # not declared: left alone
    plan = estate.reconcile("plan", hybrid(estate))
    assert plan.code == 0 and f"removes {ONPREM}" in plan.out, plan.out
    run = estate.reconcile("apply", hybrid(estate), "--auto-approve")
    assert run.code == 0, run.out + run.err
    assert principals(estate)[EXCHANGE]["keyCredentials"] == []
    assert estate.reconcile("plan", hybrid(estate), "--detailed-exitcode").code == 0


def test_missing_consent_permission_is_reported_with_what_to_grant(estate: Estate) -> None:
    from reconciler.lab.estate import LAB_CLIENT_ID

    with LabStore(estate.state).edit() as state:
        state["tenants"][LAB_TENANT_ID]["clients"][LAB_CLIENT_ID]["roles"] = ["Application.ReadWrite.All"]
    run = estate.reconcile("apply", hybrid(estate), "--auto-approve")
    assert run.code != 0
    assert "AppRoleAssignment.ReadWrite.All" in run.out + run.err


def test_whole_manifest_tenant_then_exchange_with_the_app_id_from_the_tenant_then_nothing_to_do(
        estate: Estate) -> None:
    """The Exchange side takes the dedicated app's appId, which Entra ID assigns: the tenant is applied first, the
    appId read from the lab and given as the manifest's variable; then the whole manifest plans, applies and plans
    again with no changes."""
    from reconciler.lab.estate import EXCHANGE_HOST, LAB_TENANT_ID

    manifest = hybrid(estate)
    first = estate.reconcile("apply", manifest, "--target", "fabrikam-tenant", "--auto-approve")
    assert first.code == 0, first.out + first.err
    (app,) = tenant(estate)["applications"]  # type: ignore[misc]
    app_id = ("--var", f"exchangeAppId={app['appId']}")
    plan = estate.reconcile("plan", manifest, *app_id)
    assert plan.code == 0, plan.out + plan.err
    assert "New-AuthServer" in plan.out and "New-SettingOverride" in plan.out, plan.out
    run = estate.reconcile("apply", manifest, *app_id, "--auto-approve")
    assert run.code == 0, run.out + run.err
    (server,) = estate.objects(EXCHANGE_HOST, "AuthServer")
    assert server["Name"] == f"EvoSts - {LAB_TENANT_ID}" and server["Type"] == "AzureAD"
    assert server["ApplicationIdentifier"] == app["appId"] and server["Realm"] == LAB_TENANT_ID
    assert server["IssuerIdentifier"] == f"https://sts.windows.net/{LAB_TENANT_ID}/"
    assert server["DomainName"] == ["fabrikam.mail.onmicrosoft.com"]
    (override,) = estate.objects(EXCHANGE_HOST, "SettingOverride")
    assert (override["Name"], override["ComponentName"], override["SectionName"], override["Parameters"]) == (
        "EnableExchangeHybrid3PAppFeature", "Global", "ExchangeOnpremAsThirdPartyAppId", ["Enabled=true"])
    again = estate.reconcile("plan", manifest, *app_id, "--detailed-exitcode")
    assert again.code == 0, again.out + again.err
