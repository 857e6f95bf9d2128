"""Several targets in one manifest: read and changed concurrently, each independent of the others."""

from __future__ import annotations

import shutil

from tests.e2e import CROSS_PREMISES, ON_PREMISES, Estate


def both(estate: Estate) -> str:
    """Seed 000's pool, seed 004's pool and seed 004's tenant in one manifest (three targets)."""
    shutil.copytree(CROSS_PREMISES.parent / "certs", estate.root / "certs")
    on = ON_PREMISES.read_text(encoding="utf-8")
    cross = CROSS_PREMISES.read_text(encoding="utf-8")
    targets = cross.split("targets:\n", 1)[1].split("resources:\n", 1)[0]
    resources = cross.split("resources:\n", 1)[1]
    variables = cross.split("variables:\n", 1)[1].split("targets:\n", 1)[0]
    variables = variables.replace("  lab: http://127.0.0.1:8470\n", "")
    text = on.replace("targets:\n", "targets:\n" + targets, 1).replace("variables:\n", "variables:\n" + variables, 1)
    head, verify = text.split("\nverify:\n", 1)
    return head + resources + "\nverify:\n" + verify


def test_each_target_is_read_once_and_both_converge(estate: Estate) -> None:
    manifest = estate.write("both.yaml", both(estate))
    run = estate.reconcile("apply", manifest, "--auto-approve", "--parallel", "4")
    assert run.code == 0, run.out + run.err
    for target in ("litware-pool", "fabrikam-pool", "fabrikam-tenant"):
        assert f"Re-read {target}: converged" in run.out
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
