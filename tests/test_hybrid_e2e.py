"""The dedicated Exchange hybrid application (manifests/exchange-hybrid.yaml) against the lab's Graph: plan, apply,
plan again with nothing to do; the shared principal's keys removed only when declared, each named in the plan."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reconciler.lab.estate import LAB_TENANT_ID
from reconciler.lab.graph_apps import FULL_ACCESS_AS_APP
from reconciler.lab.state import LabStore
from tests.e2e import CROSS_PREMISES, REPO, Estate
from tests.test_office365_e2e import EXCHANGE, ONPREM, cross, principals

HYBRID = REPO / "manifests" / "exchange-hybrid.yaml"
APP = "ExchangeServerApp-3f8e9a41-5c2d-4b7e-9a10-6d4c2b1e0f97"


def hybrid(estate: Estate, text: str | None = None) -> Path:
    shutil.copytree(CROSS_PREMISES.parent / "certs", estate.root / "certs", dirs_exist_ok=True)
    return estate.write("hybrid.yaml", text if text is not None else HYBRID.read_text(encoding="utf-8"))


def without_exchange_key(text: str) -> str:
    """A slice of exchange-hybrid.yaml without Exchange's resources: the application's key from a .cer file instead of
    the Exchange target's AuthCertificate (certificateOf needs the source's certificate kind declared)."""
    return text.replace("      - certificateOf: exchange\n", "      - certificateFile: certs/fabrikam-oauth.cer\n")


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
    # the Exchange Auth certificate, read from the Exchange target's live state (certificateOf), not a .cer file
    auth = estate.objects("atl-exchange-001", "AuthConfig")["CurrentCertificateThumbprint"]
    assert [k["customKeyIdentifier"] for k in app["keyCredentials"]] == [auth]
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
    undeclared = without_exchange_key(text[:text.index("  - target: fabrikam-tenant\n    kind: ServicePrincipal")])
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


def test_whole_manifest_converges_in_one_apply_the_app_id_read_from_the_tenant_after_its_apply(
        estate: Estate) -> None:
    """The Exchange auth server refers to the dedicated app's appId, which Entra ID assigns when the application is
    created: plan shows it as known after apply, apply runs the tenant first, reads the appId and then runs Exchange
    with it; the re-read converges and the next plan has nothing to do."""
    from reconciler.lab.estate import EXCHANGE_HOST, LAB_TENANT_ID

    manifest = hybrid(estate)
    placeholder = f"(known after apply: fabrikam-tenant.Application.{APP} appId)"
    plan = estate.reconcile("plan", manifest)
    assert plan.code == 0, plan.out + plan.err
    assert "New-AuthServer" in plan.out and "New-SettingOverride" in plan.out, plan.out
    assert f"-ApplicationIdentifier '{placeholder}'" in plan.out, plan.out
    saved = estate.root / "plan.json"
    assert estate.reconcile("plan", manifest, "--out", str(saved)).code == 0
    run = estate.run("apply", "--auto-approve", saved)
    assert run.code == 0, run.out + run.err
    (app,) = tenant(estate)["applications"]  # type: ignore[misc]
    events = [json.loads(line) for line in (estate.root / ".reconciler" / "journal.jsonl").read_text(
        encoding="utf-8").splitlines()]
    batches = [e for e in events if e.get("event") == "batch_start"]
    assert [b["target"] for b in batches][-1] == "exchange"  # after the tenant
    sent = json.dumps(batches[-1]["changes"])
    assert placeholder not in sent and app["appId"] in sent
    (server,) = estate.objects(EXCHANGE_HOST, "AuthServer")
    assert server["Name"] == f"EvoSts - {LAB_TENANT_ID}" and server["Type"] == "AzureAD"
    assert server["ApplicationIdentifier"] == app["appId"] and server["Realm"] == LAB_TENANT_ID
    assert server["IssuerIdentifier"] == f"https://sts.windows.net/{LAB_TENANT_ID}/"
    assert server["DomainName"] == ["fabrikam.mail.onmicrosoft.com"]
    assert server["IsDefaultAuthorizationEndpoint"] is True  # HMA on Exchange, with:
    assert estate.objects(EXCHANGE_HOST, "OrganizationConfig")["OAuth2ClientProfileEnabled"] is True
    (evosts,) = [s for s in estate.objects("fab-cs-001", "OAuthServer") if s["Identity"] == "evoSTS"]
    assert (evosts["Type"], evosts["AcceptSecurityIdentifierInformation"]) == ("AzureAD", True)  # HMA on Skype
    assert evosts["MetadataUrl"].endswith(f"/{LAB_TENANT_ID}/federationmetadata/2007-06/federationmetadata.xml")
    config = estate.objects("fab-cs-001", "OAuthConfiguration")
    assert config["ClientAuthorizationOAuthServerIdentity"] == "evoSTS"
    spns = {app_id: sp["servicePrincipalNames"] for app_id, sp in principals(estate).items()}
    assert {"https://mail.fabrikam.com/", "https://autodiscover.fabrikam.com/"} <= set(spns[EXCHANGE])
    assert {"https://lyncwebint01.fabrikam.com/", "https://lyncwebext01.fabrikam.com/"} <= set(spns[SKYPE_ONLINE])
    (override,) = estate.objects(EXCHANGE_HOST, "SettingOverride")
    assert (override["Name"], override["ComponentName"], override["SectionName"], override["Parameters"]) == (
        "EnableExchangeHybrid3PAppFeature", "Global", "ExchangeOnpremAsThirdPartyAppId", ["Enabled=true"])
    again = estate.reconcile("plan", manifest, "--detailed-exitcode")
    assert again.code == 0, again.out + again.err


# --- removal of the dedicated application's objects (ensure: absent, prune) under the deletion guards ----------

ASSIGNMENT = f"{APP}/{EXCHANGE}/{FULL_ACCESS_AS_APP}"
TENANT_ONLY = ("--target", "fabrikam-tenant")
SKYPE_ONLINE = "00000004-0000-0ff1-ce00-000000000000"
EXTRA_ROLES = ["1b2c3d4e-0000-4000-8000-00000000000" + str(n) for n in range(1, 5)]


def tenant_part(extra: str = "", *, target_extra: str = "") -> str:
    """The tenant half of exchange-hybrid.yaml (no Exchange resources), with resources and target settings added."""
    text = HYBRID.read_text(encoding="utf-8")
    text = without_exchange_key(text[:text.index("  - target: exchange\n")])
    if target_extra:
        text = text.replace("      clientSecretEnv: RECONCILE_GRAPH_CLIENT_SECRET\n",
                            "      clientSecretEnv: RECONCILE_GRAPH_CLIENT_SECRET\n" + target_extra)
    return text + extra


def absent(kind: str, identity: str) -> str:
    return f"  - target: fabrikam-tenant\n    kind: {kind}\n    identity: {identity}\n    ensure: absent\n"


def without_declaration(text: str, kind: str) -> str:
    start = text.index(f"  - target: fabrikam-tenant\n    kind: {kind}\n")
    end = text.index("  - target:", start + 1)
    return text[:start] + text[end:]


def test_ensure_absent_deletes_consent_principal_and_application_in_that_order_then_nothing_to_do(
        estate: Estate) -> None:
    created = estate.reconcile("apply", hybrid(estate, tenant_part()), "--auto-approve")
    assert created.code == 0, created.out + created.err
    record = tenant(estate)
    (app,) = record["applications"]  # type: ignore[misc]
    sp_id = principals(estate)[app["appId"]]["id"]
    (grant,) = record["appRoleAssignments"]  # type: ignore[misc]
    text = tenant_part()
    for kind in ("Application", "ApplicationServicePrincipal", "AppRoleAssignment"):
        text = without_declaration(text, kind)
    text += (absent("Application", APP) + absent("ApplicationServicePrincipal", APP)
             + absent("AppRoleAssignment", ASSIGNMENT))
    manifest = hybrid(estate, text)
    plan = estate.reconcile("plan", manifest)
    assert plan.code == 0, plan.out + plan.err
    revoke = f"DELETE /servicePrincipals/{grant['resourceId']}/appRoleAssignedTo/{grant['id']}"
    order = [plan.out.index(revoke), plan.out.index(f"DELETE /servicePrincipals/{sp_id}"),
             plan.out.index(f"DELETE /applications/{app['id']}")]
    assert order == sorted(order), plan.out
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out + run.err
    record = tenant(estate)
    assert record["applications"] == [] and record["appRoleAssignments"] == []
    assert app["appId"] not in principals(estate)
    assert EXCHANGE in principals(estate)  # the resource's principal stays
    again = estate.reconcile("plan", manifest, "--detailed-exitcode")
    assert again.code == 0, again.out + again.err


def test_protected_consent_is_not_removed_and_the_plan_says_so(estate: Estate) -> None:
    assert estate.reconcile("apply", hybrid(estate, tenant_part()), "--auto-approve").code == 0
    text = without_declaration(tenant_part(target_extra=f"    protect: [AppRoleAssignment.{ASSIGNMENT}]\n"),
                               "AppRoleAssignment") + absent("AppRoleAssignment", ASSIGNMENT)
    run = estate.reconcile("apply", hybrid(estate, text), "--auto-approve")
    assert run.code == 0, run.out + run.err
    assert "protected by targets.fabrikam-tenant.protect" in run.out + run.err
    assert len(tenant(estate)["appRoleAssignments"]) == 1  # type: ignore[arg-type]


def _skype_online_with_roles(estate: Estate) -> None:
    """Give the lab's Skype for Business Online principal app roles, so one application can hold several grants."""
    with LabStore(estate.state).edit() as state:
        for sp in state["tenants"][LAB_TENANT_ID]["servicePrincipals"]:
            if sp["appId"] == SKYPE_ONLINE:
                sp["appRoles"] = [{"id": r, "value": f"lab.role{n}"} for n, r in enumerate(EXTRA_ROLES, 1)]


def grants(roles: list[str]) -> str:
    return "".join(f"  - target: fabrikam-tenant\n    kind: AppRoleAssignment\n"
                   f"    identity: {APP}/{SKYPE_ONLINE}/{r}\n" for r in roles)


def test_prune_removes_undeclared_consents_of_declared_applications_within_the_deletion_limit(
        estate: Estate) -> None:
    _skype_online_with_roles(estate)
    first = estate.reconcile("apply", hybrid(estate, tenant_part(grants(EXTRA_ROLES))), "--auto-approve")
    assert first.code == 0, first.out + first.err
    assert len(tenant(estate)["appRoleAssignments"]) == 5  # type: ignore[arg-type]
    pruning = tenant_part(target_extra="    prune: [AppRoleAssignment]\n")  # keeps only full_access_as_app
    manifest = hybrid(estate, pruning)
    plan = estate.reconcile("plan", manifest)
    assert plan.code == 1, plan.out + plan.err  # 4 of the 5 live grants: more than half
    assert "deletion guard: this plan removes 4 of the 5 live AppRoleAssignment" in plan.out + plan.err
    assert "--allow-deletions 4" in plan.out + plan.err
    allowed = estate.reconcile("apply", manifest, "--allow-deletions", "4", "--auto-approve")
    assert allowed.code == 0, allowed.out + allowed.err
    (kept,) = tenant(estate)["appRoleAssignments"]  # type: ignore[misc]
    assert kept["appRoleId"] == FULL_ACCESS_AS_APP
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0


def test_prune_of_one_undeclared_consent_and_of_an_undeclared_principal(estate: Estate) -> None:
    _skype_online_with_roles(estate)
    assert estate.reconcile("apply", hybrid(estate, tenant_part(grants(EXTRA_ROLES[:1]))),
                            "--auto-approve").code == 0
    pruning = tenant_part(target_extra="    prune: [AppRoleAssignment]\n")
    plan = estate.reconcile("plan", hybrid(estate, pruning))
    assert plan.code == 0, plan.out + plan.err
    assert f"AppRoleAssignment.{APP}/{SKYPE_ONLINE}/{EXTRA_ROLES[0]}" in plan.out
    assert "prune is on for AppRoleAssignment" in plan.out
    assert estate.reconcile("apply", hybrid(estate, pruning), "--auto-approve").code == 0
    assert len(tenant(estate)["appRoleAssignments"]) == 1  # type: ignore[arg-type]
    # the principal: its application declared, the principal not, prune on. With no principal declared at all, the
    # empty-list guard stops it; once another application's principal is declared, it is removed.
    text = tenant_part(target_extra="    prune: [ApplicationServicePrincipal]\n")
    text = without_declaration(without_declaration(text, "ApplicationServicePrincipal"), "AppRoleAssignment")
    guarded = estate.reconcile("plan", hybrid(estate, text))
    assert guarded.code == 0 and "declares no ApplicationServicePrincipal there" in guarded.out, guarded.out
    other = ("  - target: fabrikam-tenant\n    kind: Application\n    identity: Other\n"
             "  - target: fabrikam-tenant\n    kind: ApplicationServicePrincipal\n    identity: Other\n")
    manifest = hybrid(estate, text + other)
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out + run.err
    assert f"ApplicationServicePrincipal.{APP} will be removed" in run.out, run.out
    app_ids = {a["displayName"]: a["appId"] for a in tenant(estate)["applications"]}  # type: ignore[attr-defined]
    assert app_ids[APP] not in principals(estate) and app_ids["Other"] in principals(estate)
    assert tenant(estate)["appRoleAssignments"] == []  # granted to the removed principal
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0


def test_application_cannot_be_pruned(estate: Estate) -> None:
    run = estate.reconcile("validate", hybrid(estate, tenant_part(target_extra="    prune: [Application]\n")))
    assert run.code == 1
    assert "prune" in run.err and "Application" in run.err


def test_lab_graph_deletions_answer_as_the_reference_documents() -> None:
    """204 for a deletion, 404 Request_ResourceNotFound for an unknown id, 403 naming AppRoleAssignment.ReadWrite.All
    for an app role removal without it."""
    from reconciler.lab import graph

    base = "http://lab/graph.microsoft.com"
    write = ["Application.ReadWrite.All", "AppRoleAssignment.ReadWrite.All"]
    resource = graph.service_principal("", EXCHANGE, "Office 365 Exchange Online", account_enabled=True, names=[])
    record: dict[str, object] = {"servicePrincipals": [resource]}
    made = graph.execute(record, write, "POST", "/applications", {}, {"displayName": "X"}, base)
    app = json.loads(made.payload())
    sp = json.loads(graph.execute(record, write, "POST", "/servicePrincipals", {}, {"appId": app["appId"]},
                                  base).payload())
    grant = json.loads(graph.execute(record, write, "POST", f"/servicePrincipals/{resource['id']}/appRoleAssignedTo",
                                     {}, {"principalId": sp["id"], "resourceId": resource["id"],
                                          "appRoleId": FULL_ACCESS_AS_APP}, base).payload())
    one = f"/servicePrincipals/{resource['id']}/appRoleAssignedTo/{grant['id']}"
    denied = graph.execute(record, ["Application.ReadWrite.All"], "DELETE", one, {}, None, base)
    assert denied.status == 403 and "AppRoleAssignment.ReadWrite.All" in denied.payload().decode()
    assert graph.execute(record, write, "DELETE", one, {}, None, base).status == 204
    assert graph.execute(record, write, "DELETE", one, {}, None, base).status == 404
    assert graph.execute(record, write, "DELETE", f"/servicePrincipals/{sp['id']}", {}, None, base).status == 204
    assert graph.execute(record, write, "DELETE", f"/applications/{app['id']}", {}, None, base).status == 204
    gone = graph.execute(record, write, "DELETE", f"/applications/{app['id']}", {}, None, base)
    assert gone.status == 404 and b"Request_ResourceNotFound" in gone.payload()
    assert record["applications"] == [] and record["appRoleAssignments"] == []


# --- plan warns where two declarations undo each other -----------------------------------------------------------


def test_plan_warns_when_the_shared_principal_gets_a_key_next_to_the_dedicated_app(estate: Estate) -> None:
    """Seed 004's certificate on 00000002 next to the dedicated application: Microsoft's
    ConfigureExchangeHybridApplication.ps1 removes it by default, so the two undo each other."""
    text = tenant_part().replace(
        "    credentials: []\n    credentialsAuthoritative: true",
        "    credentials:\n      - certificateFile: certs/fabrikam-oauth.cer")
    plan = estate.reconcile("plan", hybrid(estate, text))
    assert plan.code == 0, plan.out + plan.err
    warning = next(line for line in (plan.out + plan.err).splitlines() if "undo each other" in line)
    assert warning.startswith("warning:") and "ServicePrincipal.00000002-0000-0ff1-ce00-000000000000" in warning
    assert "ResetFirstPartyServicePrincipalKeyCredentials" in warning and APP in warning
    assert "hybrid.yaml:" in warning  # the resource's line
    # no dedicated application declared (seed 004 alone): no warning; and the shipped 2026 manifest: none either
    without_app = without_declaration(text, "Application")
    assert "undo each other" not in estate.reconcile("plan", hybrid(estate, without_app)).out
    assert "undo each other" not in estate.reconcile("plan", hybrid(estate)).out


def test_plan_warns_when_two_auth_servers_are_the_default_endpoint(estate: Estate) -> None:
    text = HYBRID.read_text(encoding="utf-8") + (
        "\n  - target: exchange\n    kind: AuthServer\n    identity: EvoSts - second\n    type: AzureAD\n"
        "    authMetadataUrl: ${federationMetadata}\n    isDefaultAuthorizationEndpoint: true\n")
    plan = estate.reconcile("plan", hybrid(estate, text))
    assert plan.code == 0, plan.out + plan.err
    assert "2 auth servers are declared the default authorization endpoint" in plan.out + plan.err


def test_organization_config_writes_only_the_documented_parameter_set() -> None:
    from reconciler.changes import Action, ActionReason, Change
    from reconciler.kinds import exchange as declared
    from reconciler.model import ResourceKey

    kind = declared.ORGANIZATION_CONFIG
    change = Change(key=ResourceKey("exchange", "OrganizationConfig", "Global"), actions=(Action.UPDATE,),
                    action_reason=ActionReason.DRIFT, reason="differs",
                    before={"oAuth2ClientProfileEnabled": False}, after={"oAuth2ClientProfileEnabled": True},
                    changed=("oAuth2ClientProfileEnabled",))
    (command,) = kind.commands(change)
    assert command.cmdlet == "Set-OrganizationConfig"
    assert dict(command.parameters) == {"OAuth2ClientProfileEnabled": True}
    chosen, _ = declared.SET_ORGANIZATION_CONFIG.bind(command.parameters)
    assert chosen.name == "AdfsAuthenticationParameter"
    assert kind.discovery().select == ("Name", "Identity", "OAuth2ClientProfileEnabled")


def test_plan_names_the_consent_an_application_permission_needs_when_none_is_declared(estate: Estate) -> None:
    text = without_declaration(tenant_part(), "AppRoleAssignment")
    plan = estate.reconcile("plan", hybrid(estate, text))
    assert plan.code == 0, plan.out + plan.err
    warning = next(line for line in (plan.out + plan.err).splitlines() if "without admin consent" in line)
    assert warning.startswith("warning:") and f"Application.{APP}" in warning
    assert f"declare kind AppRoleAssignment, identity {ASSIGNMENT}" in warning
    assert "without admin consent" not in estate.reconcile("plan", hybrid(estate)).out


# --- a value another target holds (reconciler.references) ------------------------------------------------------


def test_exchange_is_not_applied_when_the_tenant_apply_does_not_make_the_app_id_known(estate: Estate) -> None:
    """The tenant's application POST is refused (the client may only read): the Exchange changes waiting for its appId
    fail naming the reference, and no placeholder reaches Exchange."""
    from reconciler.lab.estate import EXCHANGE_HOST, LAB_CLIENT_ID

    with LabStore(estate.state).edit() as state:
        state["tenants"][LAB_TENANT_ID]["clients"][LAB_CLIENT_ID]["roles"] = ["Application.Read.All"]
    run = estate.reconcile("apply", hybrid(estate), "--auto-approve")
    assert run.code == 1
    text = run.out + run.err
    assert f"the appId of fabrikam-tenant.Application.{APP} is not known (target 'fabrikam-tenant' was read" in text
    assert estate.objects(EXCHANGE_HOST, "AuthServer") == [] and estate.objects(EXCHANGE_HOST, "SettingOverride") == []


@pytest.mark.parametrize("reference,message", [
    ("fabrikam-tenant.Application.NoSuchApp", "refers to fabrikam-tenant.Application.NoSuchApp, which this manifest "
                                              "does not declare"),
    ("exchange.SettingOverride.EnableExchangeHybrid3PAppFeature", "refers to its own target"),
])
def test_a_reference_must_name_a_resource_declared_on_another_target(estate: Estate, reference: str,
                                                                     message: str) -> None:
    text = HYBRID.read_text(encoding="utf-8").replace(
        "      from: fabrikam-tenant.Application.ExchangeServerApp-${organizationGuid}\n", f"      from: {reference}\n")
    run = estate.reconcile("validate", hybrid(estate, text))
    assert run.code == 1
    line = next(x for x in run.err.splitlines() if "applicationIdentifier" in x)
    assert message in line and "hybrid.yaml:" in line, run.err


def test_a_reference_to_an_absent_resource_and_a_malformed_one_are_refused(estate: Estate) -> None:
    text = HYBRID.read_text(encoding="utf-8") + absent("Application", "Gone") + (
        "  - target: exchange\n    kind: AuthServer\n    identity: Other\n    type: AzureAD\n"
        "    applicationIdentifier: {from: fabrikam-tenant.Application.Gone, field: appId}\n"
        "  - target: exchange\n    kind: AuthServer\n    identity: Third\n    type: AzureAD\n"
        "    applicationIdentifier: {from: fabrikam-tenant.Application.Gone, field: id}\n")
    run = estate.reconcile("validate", hybrid(estate, text))
    assert run.code == 1
    assert "refers to fabrikam-tenant.Application.Gone, which this manifest declares absent" in run.err
    assert "or a reference {from: <target>.Application.<displayName>, field: appId}" in run.err, run.err


def test_make_demo_order_seed_004_then_the_2026_manifest_converges_in_one_apply(estate: Estate) -> None:
    """What `make demo` runs after seed 004: the 2026 manifest, one apply, then nothing to do."""
    assert estate.reconcile("apply", cross(estate), "--auto-approve").code == 0
    manifest = hybrid(estate)
    assert estate.reconcile("plan", manifest).code == 0
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out + run.err
    assert principals(estate)[EXCHANGE]["keyCredentials"] == []
    again = estate.reconcile("plan", manifest, "--detailed-exitcode")
    assert again.code == 0, again.out + again.err


def test_federation_metadata_down_blocks_both_hma_servers_at_plan_time(estate: Estate) -> None:
    """The tenant's federation metadata XML (Exchange's EvoSts auth server and Skype's evoSTS) is downloaded while
    planning: unreachable, both targets get the error with their line, and apply changes neither."""
    from reconciler.lab.estate import ENTRA_PATH, EXCHANGE_HOST

    assert estate.lab("url", ENTRA_PATH, "--status", "invalid").code == 0
    manifest = hybrid(estate)
    plan = estate.reconcile("plan", manifest)
    assert plan.code == 1
    errors = [line for line in (plan.out + plan.err).splitlines() if line.startswith("error:")]
    assert any("exchange.AuthServer.EvoSts" in e and "authMetadataUrl:" in e for e in errors), errors
    assert any("fabrikam-pool.OAuthServer.evoSTS" in e and "metadataUrl:" in e for e in errors), errors
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 1
    assert estate.objects(EXCHANGE_HOST, "AuthServer") == []
    assert [s for s in estate.objects("fab-cs-001", "OAuthServer") if s["Identity"] == "evoSTS"] == []


def test_organization_config_bad_input_is_one_line_each(estate: Estate) -> None:
    for replacement, message in (("    oAuth2ClientProfileEnabled: \"yes\"\n", "oAuth2ClientProfileEnabled: expected a "
                                                                             "boolean, got 'yes'"),
                                 ("    oAuth2ClientProfileEnabled: true\n    ensure: absent\n",
                                  "OrganizationConfig always exists (one per target), so it cannot be absent")):
        text = HYBRID.read_text(encoding="utf-8").replace("    oAuth2ClientProfileEnabled: true\n", replacement)
        run = estate.reconcile("validate", hybrid(estate, text))
        assert run.code == 1
        (line,) = [x for x in run.err.splitlines() if x.startswith("error:")]
        assert message in line and "hybrid.yaml:" in line, run.err
