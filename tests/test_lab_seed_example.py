"""The seed example in docs works as written, and the plan shows the seed script's branches for it."""

from __future__ import annotations

from tests.e2e import ON_PREMISES, REPO, Estate


def test_documented_seed_gives_set_and_replace_branches(estate: Estate) -> None:
    text = (REPO / "docs" / "lab-seed-example.yaml").read_text(encoding="utf-8")
    seed = estate.write("seed.yaml", text.replace("http://127.0.0.1:8470", estate.url))  # the test's port
    assert estate.lab("seed", str(seed)).code == 0
    run = estate.reconcile("plan", ON_PREMISES)
    assert run.code == 0, run.err
    assert "> Set-CsPartnerApplication -Identity 'microsoft.exchange' -ApplicationTrustLevel 'Full'" in run.out
    assert "litware-pool.PartnerApplication.microsoft.sharepoint must be replaced" in run.out
    assert "OAuthConfiguration" not in run.out  # service name already right
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    assert estate.reconcile("plan", ON_PREMISES, "--detailed-exitcode").code == 0
