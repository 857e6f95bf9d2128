"""`reconcile export`: adopt an estate that exists. The exported manifest describes it exactly (plan: no changes)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.e2e import CROSS_PREMISES, ON_PREMISES, Estate


def test_export_of_the_drifted_seed_estate_plans_no_changes(estate: Estate) -> None:
    """Before any apply the lab holds seed 000's broken state (a wrong ApplicationIdentifier, a stray app):
    the export describes exactly that, so a plan against it changes nothing."""
    out = estate.root / "adopted" / "trust.yaml"
    out.parent.mkdir()
    run = estate.reconcile("export", ON_PREMISES, "--out", str(out))
    assert run.code == 0, run.out + run.err
    assert "Wrote" in run.out and out.exists()
    document = yaml.safe_load(out.read_text(encoding="utf-8"))
    identities = {(r["kind"], r.get("identity")) for r in document["resources"]}
    assert ("PartnerApplication", "app") in identities and ("PartnerApplication", "microsoft.exchange") in identities
    plan = estate.reconcile("plan", out, "--detailed-exitcode")
    assert plan.code == 0, plan.out + plan.err
    assert "No changes" in plan.out


def test_export_after_apply_matches_the_manifest_and_writes_certificates(estate: Estate) -> None:
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    out = estate.root / "trust.yaml"
    assert estate.reconcile("export", ON_PREMISES, "--out", str(out)).code == 0
    assert estate.reconcile("plan", out, "--detailed-exitcode").code == 0
    cross = estate.write("cross.yaml", CROSS_PREMISES.read_text(encoding="utf-8"))
    (estate.root / "certs").mkdir(exist_ok=True)
    for cert in (CROSS_PREMISES.parent / "certs").iterdir():
        (estate.root / "certs" / cert.name).write_bytes(cert.read_bytes())
    assert estate.reconcile("apply", cross, "--auto-approve").code == 0
    tenant_out = estate.root / "tenant" / "cross.yaml"
    tenant_out.parent.mkdir()
    run = estate.reconcile("export", cross, "--out", str(tenant_out), "--target", "fabrikam-tenant")
    assert run.code == 0, run.err
    assert "certificate file" in run.out
    assert list((tenant_out.parent / "certs").glob("*.cer"))
    plan = estate.reconcile("plan", tenant_out, "--detailed-exitcode")
    assert plan.code == 0, plan.out + plan.err


def test_export_names_an_unknown_target(estate: Estate) -> None:
    run = estate.reconcile("export", ON_PREMISES, "--out", str(Path(estate.root) / "x.yaml"), "--target", "nope")
    assert run.code == 1 and "--target nope: the manifest has no such target" in run.err
