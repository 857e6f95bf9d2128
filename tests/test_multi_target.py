"""Several targets in one manifest: read and changed concurrently, each independent of the others."""

from __future__ import annotations

from tests.e2e import CROSS_PREMISES, ON_PREMISES, Estate


def both(estate: Estate) -> str:
    on = ON_PREMISES.read_text(encoding="utf-8")
    cross = CROSS_PREMISES.read_text(encoding="utf-8")
    targets = cross.split("targets:\n", 1)[1].split("resources:\n", 1)[0]
    resources = cross.split("resources:\n", 1)[1]
    variables = ("  tenantId: 8a1c5e3f-2b7d-4c9e-a6f0-1d2e3f4a5b6c\n"
                 "  acsHost: ${lab}/accounts.accesscontrol.windows.net\n")
    text = on.replace("targets:\n", "targets:\n" + targets, 1).replace("variables:\n", "variables:\n" + variables, 1)
    return text + resources


def test_each_target_is_read_once_and_both_converge(estate: Estate) -> None:
    manifest = estate.write("both.yaml", both(estate))
    run = estate.reconcile("apply", manifest, "--auto-approve", "--parallel", "4")
    assert run.code == 0, run.out + run.err
    assert "Re-read litware-pool: converged" in run.out and "Re-read fabrikam-pool: converged" in run.out
    # one discovery + one apply batch + one re-read per target
    assert estate.round_trips("atl-cs-001") == 3 and estate.round_trips("fab-cs-001") == 3
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0


def test_a_failure_on_one_target_does_not_stop_the_other(estate: Estate) -> None:
    manifest = estate.write("both.yaml", both(estate))
    estate.lab("fail", "atl-cs-001", "Remove-CsPartnerApplication", "--identity", "app")
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 1
    assert "litware-pool.PartnerApplication.app: failed" in run.out
    assert "litware-pool.PartnerApplication.microsoft.exchange: not run" in run.out
    assert "fabrikam-pool.OAuthServer.microsoft.sts: applied" in run.out
    assert "Re-read fabrikam-pool: converged" in run.out
    assert "Re-read litware-pool: NOT converged" in run.out
