"""`reconcile export`: adopt an estate that exists. The exported manifest describes it exactly (plan: no changes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
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


def exported(estate: Estate, manifest: Path, *extra: str) -> tuple[Path, dict[str, Any]]:
    out = estate.root / "adopted" / manifest.name
    out.parent.mkdir(exist_ok=True)
    run = estate.reconcile("export", manifest, "--out", str(out), *extra)
    assert run.code == 0, run.err
    return out, yaml.safe_load(out.read_text(encoding="utf-8"))


def resource_text(document: dict[str, Any]) -> str:
    return json.dumps(document["resources"])


def test_export_writes_values_with_the_manifests_own_variables(estate: Estate) -> None:
    """The lab's URLs come back as ${exchangeHost}/... (resolved with this run's --var lab), never as the address."""
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    out, document = exported(estate, ON_PREMISES)
    text = resource_text(document)
    assert "${exchangeHost}/autodiscover/metadata/json/1" in text and "${sharepointHost}/" in text
    assert "127.0.0.1" not in text
    assert document["variables"] == yaml.safe_load(ON_PREMISES.read_text(encoding="utf-8"))["variables"]
    assert estate.reconcile("plan", out, "--detailed-exitcode").code == 0


def test_export_factors_out_the_tenant_id_and_repeated_hosts(estate: Estate) -> None:
    """A manifest written with no variables at all: the export names the tenant id and each repeated host once."""
    shutil.copytree(CROSS_PREMISES.parent / "certs", estate.root / "certs", dirs_exist_ok=True)
    assert estate.reconcile("apply", estate.write("cross.yaml", CROSS_PREMISES.read_text(encoding="utf-8")),
                            "--auto-approve").code == 0
    literal = estate.write("literal.yaml", inline_variables(CROSS_PREMISES.read_text(encoding="utf-8"), estate.url))
    assert "${" not in literal.read_text(encoding="utf-8")
    out, document = exported(estate, literal)
    variables = document["variables"]
    assert variables["tenantId"] == LAB_TENANT
    port = estate.url.rsplit(":", 1)[1]
    host = f"host127_0_0_1_{port}"
    assert variables[host] == estate.url  # every lab URL starts with it
    text = resource_text(document)
    assert LAB_TENANT not in text and "${tenantId}" in text and estate.url not in text
    assert f"${{{host}}}/accounts.accesscontrol.windows.net/${{tenantId}}/metadata/json/1" in text
    tenant = document["targets"]["fabrikam-tenant"]["connection"]
    assert tenant["tenantId"] == "${tenantId}" and tenant["graphUrl"] == f"${{{host}}}/graph.microsoft.com"
    assert estate.reconcile("plan", out, "--detailed-exitcode").code == 0


LAB_TENANT = "8a1c5e3f-2b7d-4c9e-a6f0-1d2e3f4a5b6c"


def inline_variables(text: str, lab: str) -> str:
    """The manifest with every ${name} written out and its variables section removed."""
    source = yaml.safe_load(text)
    values = {k: str(v).replace("${lab}", lab) for k, v in source["variables"].items()}
    values["lab"] = lab
    for _ in range(3):
        for name, value in values.items():
            text = text.replace("${" + name + "}", value)
    start = text.index("\nvariables:")
    return text[:start + 1] + text[text.index("\ntargets:") + 1:]


def test_a_literal_dollar_brace_is_escaped_and_short_values_are_left_alone() -> None:
    from reconciler.export import factor_variables

    resources = [{"target": "t", "kind": "K", "identity": "https://a.example.com",
                  "url": "https://a.example.com/x", "other": "https://a.example.com/y", "note": "cost ${x} Full",
                  "list": ["https://b.example.com.au/z", "lab"]}]
    written, _, added = factor_variables(resources, {"level": "Full", "short": "lab"})
    [entry] = written
    assert added == {"aHost": "https://a.example.com"}
    assert entry["identity"] == "https://a.example.com"  # identities are never rewritten
    assert entry["url"] == "${aHost}/x" and entry["other"] == "${aHost}/y"
    assert entry["note"] == "cost $${x} Full"  # shorter than six characters: never substituted
    assert entry["list"] == ["https://b.example.com.au/z", "lab"]


def test_the_sections_an_export_keeps_are_read_without_the_resources_or_whole_when_the_cut_would_break() -> None:
    from reconciler.cli import _sections_kept

    text = "apiVersion: reconciler/v1\nvariables:\n  a: b\nresources:  # many\n- target: t\n\n  # x\n  - kind: K\n" \
           "verify:\n  - check: c\n"
    assert _sections_kept(text) == {"apiVersion": "reconciler/v1", "variables": {"a": "b"}, "verify": [{"check": "c"}]}
    aliased = "resources:\n- &x {a: 1}\nvariables: {b: *x}\n"  # an alias into the section: read whole
    assert _sections_kept(aliased)["variables"] == {"b": {"a": 1}}
    assert _sections_kept("targets: {}\nresources: [1, 2]\n") == {"targets": {}, "resources": [1, 2]}


SHAREPOINT = CROSS_PREMISES.parent / "on-premises-sharepoint.yaml"
HYBRID = CROSS_PREMISES.parent / "exchange-hybrid.yaml"
ROTATION = CROSS_PREMISES.parent / "certificate-rotation.yaml"


@pytest.mark.parametrize("source", [SHAREPOINT, HYBRID, ROTATION],
                         ids=["sharepoint", "exchange-hybrid", "certificate-rotation"])
def test_export_round_trip_of_the_other_shipped_estates(estate: Estate, source: Path) -> None:
    """Every kind the shipped manifests use: apply one, export what is live, plan against the export: no changes."""
    shutil.copytree(CROSS_PREMISES.parent / "certs", estate.root / "certs", dirs_exist_ok=True)
    manifest = estate.write(source.name, source.read_text(encoding="utf-8"))
    applied = estate.reconcile("apply", manifest, "--auto-approve")
    assert applied.code == 0, applied.out + applied.err
    out, document = exported(estate, manifest)
    kinds = {r["kind"] for r in document["resources"]}
    declared = {r["kind"] for r in yaml.safe_load(source.read_text(encoding="utf-8"))["resources"]}
    assert declared <= kinds | {"AuthCertificate"}, declared - kinds
    plan = estate.reconcile("plan", out, "--detailed-exitcode")
    assert plan.code == 0, plan.out + plan.err
