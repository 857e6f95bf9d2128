"""Seeds 001/002 end to end: both directions of the Skype/Exchange trust, iisreset, verify, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.lab.state import LabStore
from tests.e2e import ON_PREMISES, Estate

EXCHANGE_HOST = "atl-exchange-001"
SKYPE_HALF_END = "\n  - target: litware-exchange\n    kind: EnterprisePartnerApplication"


def resets(estate: Estate) -> dict[str, int]:
    return dict(LabStore(estate.state).read()["hosts"][EXCHANGE_HOST].get("iisResets", {}))


def test_apply_builds_both_directions_and_verify_passes(estate: Estate) -> None:
    before = estate.reconcile("verify", ON_PREMISES)
    assert before.code == 1
    assert "Skype for Business does not trust Exchange" in before.out
    run = estate.reconcile("apply", ON_PREMISES, "--auto-approve", "--verify")
    assert run.code == 0, run.out + run.err
    assert "Handler litware-exchange.handler.iisreset: ran once" in run.out
    assert "All 1 checks passed." in run.out
    assert resets(estate) == {"atl-exchange-001": 1, "atl-exchange-002": 1}
    assert estate.reconcile("verify", ON_PREMISES).code == 0


def test_exchange_not_trusting_skype_is_named_by_verify(estate: Estate) -> None:
    text = ON_PREMISES.read_text(encoding="utf-8")
    skype_only = text.split(SKYPE_HALF_END)[0] + text[text.index("\nverify:"):]
    manifest = estate.write("skype-only.yaml", skype_only)
    assert estate.reconcile("apply", manifest, "--auto-approve").code == 0
    run = estate.reconcile("verify", manifest)
    assert run.code == 1
    assert "(401) Unauthorized" in run.out and "Exchange does not trust Skype" in run.out


def test_handler_runs_once_only_when_a_triggering_change_is_applied(estate: Estate) -> None:
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    assert resets(estate) == {"atl-exchange-001": 1, "atl-exchange-002": 1}
    # nothing to do: no handler
    assert "No changes." in estate.reconcile("apply", ON_PREMISES, "--auto-approve").out
    # a change on the pool only: still no handler
    estate.lab("set", "atl-cs-001", "PartnerApplication", "microsoft.exchange", "ApplicationTrustLevel=User")
    run = estate.reconcile("apply", ON_PREMISES, "--auto-approve")
    assert run.code == 0 and "iisreset" not in run.out
    assert resets(estate) == {"atl-exchange-001": 1, "atl-exchange-002": 1}
    # drift in what Configure-EnterprisePartnerApplication.ps1 made (a role removed): repaired, handler once more
    assignments = LabStore(estate.state).read()["hosts"][EXCHANGE_HOST]["objects"]["ManagementRoleAssignment"]
    archive = next(a["Identity"] for a in assignments if a["Role"] == "ArchiveApplication")
    estate.lab("remove", EXCHANGE_HOST, "ManagementRoleAssignment", archive)
    plan = estate.reconcile("plan", ON_PREMISES)
    assert "> New-ManagementRoleAssignment -Role 'ArchiveApplication'" in plan.out
    assert "# handler litware-exchange.handler.iisreset will run once" in plan.out
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    assert resets(estate) == {"atl-exchange-001": 2, "atl-exchange-002": 2}


def test_a_failing_handler_fails_the_apply_and_says_so(estate: Estate) -> None:
    manifest = estate.write("bad-server.yaml", ON_PREMISES.read_text(encoding="utf-8").replace(
        "servers: [atl-exchange-001, atl-exchange-002]", "servers: [atl-exchange-001, atl-exchange-404]"))
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 1
    assert "Handler litware-exchange.handler.iisreset: FAILED: iisreset" in run.out
    assert resets(estate).get("atl-exchange-001") == 1  # the reachable server was still reset


def test_handler_can_be_turned_off(estate: Estate) -> None:
    manifest = estate.write("off.yaml", ON_PREMISES.read_text(encoding="utf-8").replace(
        "      iisreset:\n", "      iisreset:\n        enabled: false\n"))
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0 and "iisreset" not in run.out
    assert resets(estate) == {}


def test_rotated_certificate_not_yet_published_is_named_by_verify(estate: Estate) -> None:
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    estate.lab("set", EXCHANGE_HOST, "AuthConfig", "Global", "CurrentCertificateThumbprint=" + "AB" * 20)
    run = estate.reconcile("verify", ON_PREMISES)
    assert run.code == 1
    assert "ABABABAB" in run.out and "not yet published" in run.out


def test_realm_no_metadata_document_carries_is_a_plan_error(estate: Estate) -> None:
    text = ON_PREMISES.read_text(encoding="utf-8").replace(
        "    kind: OAuthConfiguration\n", "    kind: OAuthConfiguration\n    realm: contoso.com\n")
    manifest = estate.write("realm.yaml", text)
    run = estate.reconcile("plan", manifest)
    assert run.code == 1
    assert ("litware-pool declares realm 'contoso.com', but no metadata document of "
            "00000004-0000-0ff1-ce00-000000000000 carries it") in run.out


def test_staged_certificate_rotation_is_declared_and_applied(estate: Estate) -> None:
    text = ON_PREMISES.read_text(encoding="utf-8").replace(
        "    kind: AuthConfig\n", "    kind: AuthConfig\n    nextCertificateThumbprint: " + "CD" * 20 +
        "\n    nextCertificateEffectiveDate: '2031-04-17T00:00:00+00:00'\n")
    manifest = estate.write("rotation.yaml", text)
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out + run.err
    assert "> Set-AuthConfig -NewCertificateThumbprint '" + "CD" * 20 in run.out
    config = LabStore(estate.state).read()["hosts"][EXCHANGE_HOST]["objects"]["AuthConfig"]
    assert config["NextCertificateThumbprint"] == "CD" * 20
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0


BAD = {
    "enterprise type": ("    kind: EnterprisePartnerApplication\n    identity: Lync\n",
                        "    kind: EnterprisePartnerApplication\n    identity: Teams\n", "identity"),
    "handler name": ("      iisreset:\n", "      iisrestart:\n", "unknown field 'iisrestart'"),
    "handler servers": ("        servers: [atl-exchange-001, atl-exchange-002]\n", "        servers: []\n",
                        "servers"),
    "check name": ("    check: ExStorageConnectivity\n", "    check: ExStorage\n", "verify[0].check"),
    "sip uri": ("    sipUri: sip:kenmyer@litwareinc.com\n", "    sipUri: kenmyer@litwareinc.com\n",
                "is not a SIP URI"),
    "verify target": ("  - target: litware-pool\n    check:", "  - target: nowhere\n    check:", "no target named"),
    "auth config thumbprint": ("    kind: AuthConfig\n",
                               "    kind: AuthConfig\n    currentCertificateThumbprint: xyz\n",
                               "currentCertificateThumbprint"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_for_the_new_fields(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    old, new, where = BAD[case]
    text = ON_PREMISES.read_text(encoding="utf-8")
    assert old in text
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(text.replace(old, new, 1), encoding="utf-8")
    assert main(["validate", "m.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: m.yaml:") and where in err and "Traceback" not in err


BUILT_INS = ("Exchange Online", "Microsoft Graph", "TeamsScheduler", "CloudVoicemail", "SfBLegacy")


def exchange_apps(estate: Estate) -> list[str]:
    return [a["Name"] for a in LabStore(estate.state).read()["hosts"][EXCHANGE_HOST]["objects"]["PartnerApplication"]]


def test_prune_keeps_exchanges_built_in_partner_applications_and_the_demo_converges(estate: Estate) -> None:
    pruning = estate.write("prune.yaml", ON_PREMISES.read_text(encoding="utf-8").replace(
        "    handlers:\n      iisreset:\n",
        "    prune: [PartnerApplication, AuthServer]\n    handlers:\n      iisreset:\n"))
    assert exchange_apps(estate) == list(BUILT_INS)
    plan = estate.reconcile("plan", pruning)
    assert plan.code == 0, plan.out + plan.err
    assert not any(f"litware-exchange.PartnerApplication.{name}" in plan.out for name in BUILT_INS)
    assert "Remove-PartnerApplication" not in plan.out
    run = estate.reconcile("apply", pruning, "--auto-approve", "--verify")
    assert run.code == 0, run.out + run.err
    assert "> iisreset atl-exchange-001" in run.out and "> iisreset atl-exchange-002" in run.out
    assert exchange_apps(estate) == [*BUILT_INS, "LyncEnterprise"]
    assert estate.reconcile("plan", pruning, "--detailed-exitcode").code == 0  # converged
    assert estate.reconcile("plan", ON_PREMISES, "--detailed-exitcode").code == 0  # make demo's manifest too


def test_a_declared_built_in_is_managed_and_a_stray_one_pruned(estate: Estate) -> None:
    text = ON_PREMISES.read_text(encoding="utf-8").replace(
        "    handlers:\n      iisreset:\n", "    prune: [PartnerApplication]\n    handlers:\n      iisreset:\n")
    text = text.replace("\nverify:", "\n  - target: litware-exchange\n    kind: PartnerApplication\n"
                                      "    identity: TeamsScheduler\n    applicationIdentifier: "
                                      "7557eb47-c689-4224-abcf-aef9bd7573df\n    enabled: true\n\nverify:")
    manifest = estate.write("teams.yaml", text)
    assert estate.lab("set", EXCHANGE_HOST, "PartnerApplication", "SfBLegacy", "Enabled=true").code == 0
    plan = estate.reconcile("plan", manifest)
    assert "> Set-PartnerApplication -Identity 'TeamsScheduler' -Enabled:$true" in plan.out
    assert "SfBLegacy" not in plan.out  # built in, not declared: never pruned
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out + run.err
    apps = LabStore(estate.state).read()["hosts"][EXCHANGE_HOST]["objects"]["PartnerApplication"]
    assert next(a for a in apps if a["Name"] == "TeamsScheduler")["Enabled"] is True
