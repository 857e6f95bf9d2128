"""End to end through the CLI against the lab: each branch of the seed scripts, and the safety rules."""

from __future__ import annotations

import json
from typing import Any

from reconciler.lab.estate import LAB_TENANT_ID
from tests.e2e import CROSS_PREMISES, ON_PREMISES, Estate

EXCHANGE = "00000002-0000-0ff1-ce00-000000000000"
SHAREPOINT = "00000003-0000-0ff1-ce00-000000000000"
SKYPE = "00000004-0000-0ff1-ce00-000000000000"
EXCHANGE_DOC = "/atl-exchange-001.litwareinc.com/autodiscover/metadata/json/1"


def test_seed_000_plan_shows_every_branch_in_order(estate: Estate) -> None:
    run = estate.reconcile("plan", ON_PREMISES, "--detailed-exitcode")
    assert run.code == 2, run.err
    out = run.out
    # stray `app` removed first; exchange replaced (remove right before new); sharepoint created; config set last
    order = [out.index(s) for s in (
        "litware-pool.PartnerApplication.app will be removed",
        "litware-pool.PartnerApplication.microsoft.exchange must be replaced",
        "> Remove-CsPartnerApplication -Identity 'microsoft.exchange'",
        "> New-CsPartnerApplication -Identity 'microsoft.exchange' -MetadataUrl",
        "litware-pool.PartnerApplication.microsoft.sharepoint will be created",
        "litware-pool.OAuthConfiguration.Global will be updated in place",
        "> Set-CsOAuthConfiguration -Identity 'Global' -ServiceName '00000004-0000-0ff1-ce00-000000000000'",
    )]
    assert order == sorted(order)
    assert "reason: ApplicationIdentifier cannot be changed by Set-CsPartnerApplication" in out
    assert "# forces replacement" in out
    assert "Plan: 2 to add, 1 to change, 1 to replace, 1 to remove. Then 1 handler: " in out


def test_apply_converges_and_a_second_plan_and_apply_change_nothing(estate: Estate) -> None:
    run = estate.reconcile("apply", ON_PREMISES, "--auto-approve")
    assert run.code == 0, run.out + run.err
    assert "Apply complete: 5 applied, 0 failed, 0 not run." in run.out
    assert "Re-read litware-pool: converged" in run.out
    assert estate.app("atl-cs-001", "app") is None
    exchange = estate.app("atl-cs-001", "microsoft.exchange")
    assert exchange is not None
    assert exchange["ApplicationIdentifier"] == EXCHANGE
    assert exchange["ApplicationTrustLevel"] == "Full"
    assert exchange["MetadataUrl"].endswith(EXCHANGE_DOC)
    sharepoint = estate.app("atl-cs-001", "microsoft.sharepoint")
    assert sharepoint is not None and sharepoint["ApplicationIdentifier"] == SHAREPOINT
    assert estate.objects("atl-cs-001", "OAuthConfiguration")["ServiceName"] == SKYPE

    again = estate.reconcile("plan", ON_PREMISES, "--detailed-exitcode")
    assert again.code == 0
    assert "No changes." in again.out
    before = estate.snapshot()["hosts"]["atl-cs-001"]["objects"]
    second = estate.reconcile("apply", ON_PREMISES, "--auto-approve")
    assert second.code == 0 and "No changes." in second.out
    assert estate.snapshot()["hosts"]["atl-cs-001"]["objects"] == before


def test_present_and_right_sets_only_the_differing_field(estate: Estate) -> None:
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    assert estate.lab("set", "atl-cs-001", "PartnerApplication", "microsoft.exchange",
                      "ApplicationTrustLevel=User").code == 0
    run = estate.reconcile("plan", ON_PREMISES, "--detailed-exitcode")
    assert run.code == 2
    assert "~ applicationTrustLevel = \"User\" -> \"Full\"" in run.out
    assert "> Set-CsPartnerApplication -Identity 'microsoft.exchange' -ApplicationTrustLevel 'Full'\n" in run.out
    assert "Plan: 0 to add, 1 to change, 0 to replace, 0 to remove." in run.out
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    assert estate.app("atl-cs-001", "microsoft.exchange")["ApplicationTrustLevel"] == "Full"  # type: ignore[index]


def test_seed_004_sets_microsoft_sts_url_in_place_before_the_partner_app(estate: Estate) -> None:
    """Seed 004 removes and re-creates microsoft.sts when its URL differs; Set-CsOAuthServer has -MetadataUrl
    (Microsoft's syntax), so the tool changes it in place, before the partner application that uses it."""
    run = estate.reconcile("plan", CROSS_PREMISES)
    assert run.code == 0, run.err
    sts = run.out.index("fabrikam-pool.OAuthServer.microsoft.sts will be updated in place")
    assert "Set-CsOAuthServer -Identity 'microsoft.sts' -MetadataUrl" in run.out
    assert "Remove-CsOAuthServer" not in run.out
    exch = run.out.index("fabrikam-pool.PartnerApplication.microsoft.exchange will be created")
    assert sts < exch
    assert "-UseOAuthServer" in run.out
    applied = estate.reconcile("apply", CROSS_PREMISES, "--auto-approve")
    assert applied.code == 0, applied.out
    (sts_obj,) = estate.objects("fab-cs-001", "OAuthServer")
    assert sts_obj["MetadataUrl"] == f"{estate.url}/accounts.accesscontrol.windows.net/{LAB_TENANT_ID}/metadata/json/1"
    exchange = estate.app("fab-cs-001", "microsoft.exchange")
    assert exchange is not None and exchange["UseOAuthServer"] is True
    assert estate.reconcile("plan", CROSS_PREMISES, "--detailed-exitcode").code == 0


def test_discovery_is_one_round_trip_per_target(estate: Estate) -> None:
    before = estate.round_trips("atl-cs-001")
    assert estate.reconcile("plan", ON_PREMISES).code == 0
    assert estate.round_trips("atl-cs-001") == before + 1
    assert estate.round_trips("fab-cs-001") == 0


def test_validate_touches_no_target(estate: Estate) -> None:
    run = estate.reconcile("validate", ON_PREMISES)
    assert run.code == 0 and "valid (6 resources on 2 targets)" in run.out
    assert estate.round_trips("atl-cs-001") == 0 and estate.round_trips("atl-exchange-001") == 0


def test_metadata_url_down_is_reported_at_plan_time_and_apply_changes_nothing(estate: Estate) -> None:
    assert estate.lab("url", EXCHANGE_DOC, "--status", "unreachable").code == 0
    run = estate.reconcile("plan", ON_PREMISES, "--detailed-exitcode")
    assert run.code == 1
    assert ("The metadata document could not be downloaded from the URL in the MetadataUrl parameter or "
            "downloaded data is not a valid metadata document.") in run.out
    # the file and line of microsoft.exchange's metadataUrl
    assert "on-premises.yaml:46: litware-pool.PartnerApplication.microsoft.exchange: metadataUrl:" in run.out
    before = estate.snapshot()["hosts"]["atl-cs-001"]["objects"]
    applied = estate.reconcile("apply", ON_PREMISES, "--auto-approve")
    assert applied.code == 1
    # the error blocks only its target: the pool is left alone, Exchange (independent of it) is applied
    assert "the plan has errors for litware-pool: nothing is changed there; the other targets are applied" \
        in applied.err
    assert estate.snapshot()["hosts"]["atl-cs-001"]["objects"] == before
    assert "litware-exchange.EnterprisePartnerApplication.Lync: applied" in applied.out


def test_invalid_metadata_document_is_reported_too(estate: Estate) -> None:
    estate.lab("url", "/atl-sharepoint-001.litwareinc.com/jsonmetadata.ashx", "--status", "invalid")
    run = estate.reconcile("plan", ON_PREMISES)
    assert run.code == 1
    assert "litware-pool.PartnerApplication.microsoft.sharepoint: metadataUrl: The metadata document" in run.out


def test_failed_new_during_a_replace_restores_the_removed_object(estate: Estate) -> None:
    old = estate.app("atl-cs-001", "microsoft.exchange")
    assert estate.lab("fail", "atl-cs-001", "New-CsPartnerApplication", "--identity", "microsoft.exchange").code == 0
    run = estate.reconcile("apply", ON_PREMISES, "--auto-approve")
    assert run.code == 1
    assert "litware-pool.PartnerApplication.app: applied" in run.out
    assert "litware-pool.PartnerApplication.microsoft.exchange: failed, restored" in run.out
    assert "litware-pool.PartnerApplication.microsoft.sharepoint: not run" in run.out
    # the Exchange target is independent of the pool and is applied all the same
    assert "Apply stopped at the first failure: 2 applied, 1 failed, 2 not run." in run.out
    assert estate.app("atl-cs-001", "microsoft.exchange") == old
    assert estate.app("atl-cs-001", "microsoft.sharepoint") is None
    # and the next apply finishes the job
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    assert estate.app("atl-cs-001", "microsoft.exchange")["ApplicationIdentifier"] == EXCHANGE  # type: ignore[index]


def test_json_plan_is_versioned_with_actions_reasons_and_commands(estate: Estate) -> None:
    run = estate.reconcile("plan", ON_PREMISES, "--json")
    assert run.code == 0
    doc = json.loads(run.out)
    assert doc["format_version"] == "1.1"
    changes = {c["address"]: c for c in doc["resource_changes"]}
    exchange = changes["litware-pool.PartnerApplication.microsoft.exchange"]
    assert exchange["change"]["actions"] == ["delete", "create"]
    assert exchange["action_reason"] == "replace_because_cannot_update"
    assert [c["cmdlet"] for c in exchange["commands"]] == ["Remove-CsPartnerApplication", "New-CsPartnerApplication"]
    # the live certificate is shown as its thumbprint, never as base64 DER
    assert exchange["change"]["before"]["certificateRawData"].startswith("certificate ")
    assert "MII" not in run.out
    assert changes["litware-pool.PartnerApplication.app"]["action_reason"] == "ensure_absent"
    assert doc["summary"] == {"add": 2, "change": 1, "replace": 1, "remove": 1}
    assert [h["address"] for h in doc["handlers"]] == ["litware-exchange.handler.iisreset"]
    assert set(doc["fingerprints"]["litware-pool"]) >= {"*", "litware-pool.PartnerApplication.app"}


def test_apply_without_a_terminal_or_auto_approve_refuses(estate: Estate) -> None:
    before = estate.snapshot()["hosts"]["atl-cs-001"]["objects"]
    run = estate.reconcile("apply", ON_PREMISES)
    assert run.code == 1
    assert "apply needs confirmation" in run.err
    assert estate.snapshot()["hosts"]["atl-cs-001"]["objects"] == before


def test_saved_plan_applies_when_nothing_changed(estate: Estate) -> None:
    assert estate.reconcile("plan", ON_PREMISES, "--out", "plan.json").code == 0
    run = estate.run("apply", "--var", f"lab={estate.url}", "plan.json")
    assert run.code == 0, run.out + run.err
    assert "converged" in run.out


def test_a_damaged_saved_plan_is_refused_with_the_part_named_and_nothing_changed(estate: Estate) -> None:
    """A saved plan edited by hand or cut short: apply names the part that is wrong (exit 1), never a traceback."""
    assert estate.reconcile("plan", ON_PREMISES, "--out", "plan.json").code == 0
    good = json.loads((estate.root / "plan.json").read_text(encoding="utf-8"))
    assert good["resource_changes"] and good["fingerprints"]
    before = estate.snapshot()["hosts"]
    cases: dict[str, tuple[Any, str]] = {
        "manifest": (None, "manifest.path must be the manifest's path"),
        "manifest.sha256": (5, "manifest.sha256 must be the manifest's sha256, as text"),
        "variables": ({"lab": 1}, "variables must be a mapping of names to text"),
        "fingerprints": ([], "fingerprints must be a mapping of targets to their records' hashes"),
        "resource_changes": ("all of them", "resource_changes must be a list"),
        "resource_changes.0.address": (None, "resource_changes[0].address must be text"),
        "resource_changes.0.commands": ("Remove-CsPartnerApplication", "resource_changes[0].commands must be a list"),
        "resource_changes.0.change": (None, "resource_changes[0].change must be the change"),
        "handlers": ({}, "handlers must be a list"),
    }
    for where, (value, message) in cases.items():
        document = json.loads(json.dumps(good))
        *parents, last = [int(p) if p.isdigit() else p for p in where.split(".")]
        holder = document
        for part in parents:
            holder = holder[part]
        if value is None:
            del holder[last]
        else:
            holder[last] = value
        estate.write("damaged.json", json.dumps(document))
        run = estate.run("apply", "damaged.json")
        assert run.code == 1 and f"damaged.json is damaged: {message}" in run.err, (where, run.err)
    assert estate.snapshot()["hosts"] == before


def test_saved_plan_is_refused_when_the_live_state_changed(estate: Estate) -> None:
    assert estate.reconcile("plan", ON_PREMISES, "--out", "plan.json").code == 0
    estate.lab("set", "atl-cs-001", "PartnerApplication", "app", "Enabled=false")
    before = estate.snapshot()["hosts"]["atl-cs-001"]["objects"]
    run = estate.run("apply", "--var", f"lab={estate.url}", "plan.json")
    assert run.code == 1
    assert "the saved plan is stale: the live state changed" in run.err
    assert "litware-pool.PartnerApplication.app" in run.err
    assert estate.snapshot()["hosts"]["atl-cs-001"]["objects"] == before


def test_saved_plan_is_refused_when_the_manifest_changed(estate: Estate) -> None:
    manifest = estate.write("m.yaml", ON_PREMISES.read_text(encoding="utf-8"))
    assert estate.reconcile("plan", manifest, "--out", "plan.json").code == 0
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("applicationTrustLevel: Full",
                                                                     "applicationTrustLevel: User"), encoding="utf-8")
    run = estate.run("apply", "--var", f"lab={estate.url}", "plan.json")
    assert run.code == 1 and "changed since the plan was made" in run.err
    assert estate.app("atl-cs-001", "app") is not None


def test_a_second_apply_on_a_locked_target_fails_naming_the_holder(estate: Estate) -> None:
    from reconciler.locks import default_lock_dir, target_lock
    from reconciler.manifest import load_manifest
    from reconciler.providers.base import Registry

    desired = load_manifest(ON_PREMISES, Registry.from_entry_points(), {"lab": estate.url})
    with target_lock(default_lock_dir(), desired.targets["litware-pool"]):
        run = estate.reconcile("apply", ON_PREMISES, "--auto-approve", "--lock-timeout", "0.3")
    assert run.code == 1
    assert "is locked by another run (pid" in run.err
    assert estate.app("atl-cs-001", "app") is not None


PRUNE = """\
apiVersion: reconciler/v1
variables: {{lab: http://127.0.0.1:1}}
targets:
  litware-pool:
    provider: skype
    connection: {{transport: lab, host: atl-cs-001}}
{prune}
resources:
  - target: litware-pool
    kind: PartnerApplication
    identity: microsoft.exchange
    applicationIdentifier: 00000005-0000-0ff1-ce00-000000000000
    certificateRawData: {cert}
    realm: litwareinc.com
    applicationTrustLevel: Application
"""


def test_prune_is_opt_in_per_target_and_kind(estate: Estate) -> None:
    cert = estate.app("atl-cs-001", "microsoft.exchange")["CertificateRawData"]  # type: ignore[index]
    without = estate.write("keep.yaml", PRUNE.format(prune="", cert=cert))
    run = estate.reconcile("plan", without, "--detailed-exitcode")
    assert run.code == 0, run.out + run.err  # `app` is not listed, but nothing asked to remove it
    pruning = estate.write("prune.yaml", PRUNE.format(prune="    prune: [PartnerApplication]", cert=cert))
    run = estate.reconcile("plan", pruning)
    assert "litware-pool.PartnerApplication.app will be removed" in run.out
    assert "prune is on for PartnerApplication" in run.out
    assert "Plan: 0 to add, 0 to change, 0 to replace, 1 to remove." in run.out


def test_discover_prints_the_live_state(estate: Estate) -> None:
    run = estate.reconcile("discover", ON_PREMISES, "--json")
    assert run.code == 0
    doc = json.loads(run.out)
    identities = {r["identity"] for r in doc["litware-pool"]}
    assert identities == {"Global", "app", "microsoft.exchange"}
    assert "MII" not in run.out


def test_a_replace_keeps_a_disabled_application_disabled(estate: Estate) -> None:
    """The seed's microsoft.exchange has the wrong ApplicationIdentifier (a replace); disabled by an admin, it
    must come back disabled: the manifest does not manage `enabled`, so the replace does not reset it."""
    assert estate.lab("set", "atl-cs-001", "PartnerApplication", "microsoft.exchange", "Enabled=false",
                      "AcceptSecurityIdentifierInformation=true").code == 0
    plan = estate.reconcile("plan", ON_PREMISES)
    assert "-Enabled:$false" in plan.out and "-AcceptSecurityIdentifierInformation:$true" in plan.out
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    exchange = estate.app("atl-cs-001", "microsoft.exchange")
    assert exchange is not None and exchange["ApplicationIdentifier"] == EXCHANGE
    assert exchange["Enabled"] is False and exchange["AcceptSecurityIdentifierInformation"] is True
