"""`reconcile graph` as a picture: DOT that Graphviz renders, with readable names and the Office 365 tenant."""

from __future__ import annotations

import html
import shutil
import subprocess

import pytest

from tests.e2e import CROSS_PREMISES, ON_PREMISES, Estate


def cross_premises(estate: Estate) -> object:
    shutil.copytree(CROSS_PREMISES.parent / "certs", estate.root / "certs", dirs_exist_ok=True)
    return estate.write("cross.yaml", CROSS_PREMISES.read_text(encoding="utf-8"))


def test_dot_labels_break_lines_and_services_outside_the_manifest_are_named(estate: Estate) -> None:
    dot = estate.reconcile("graph", ON_PREMISES, "--format", "dot").out
    assert "\\\\n" not in dot  # a label's line break is DOT's \n, never a literal backslash
    assert '"litware-pool" [label="litware-pool\\nSkype for Business' in dot
    # SharePoint is not a target here: named, with its id on the second line and as the tooltip
    assert 'label="SharePoint\\n00000003-0000-0ff1-ce00-000000000000@litwareinc.com (not in this manifest)"' in dot
    assert 'tooltip="00000003-0000-0ff1-ce00-000000000000@litwareinc.com"' in dot
    assert dot.count('\n  "litware-exchange" [label=') == 1  # the declared Exchange target is one node
    mermaid = estate.reconcile("graph", ON_PREMISES, "--format", "mermaid").out
    assert '["SharePoint<br/>00000003-0000-0ff1-ce00-000000000000@litwareinc.com (not in this manifest)"]' in mermaid


def test_the_office365_tenant_and_its_principals_are_in_the_graph(estate: Estate) -> None:
    manifest = cross_premises(estate)
    text = estate.reconcile("graph", manifest)  # type: ignore[arg-type]
    assert text.code == 0, text.out + text.err
    assert "fabrikam-tenant (Office 365 tenant" in text.out
    # the pool trusts the tenant's token issuer (its ACS metadata document) ...
    assert "-> fabrikam-tenant  via OAuthServer microsoft.sts (metadataUrl)" in text.out
    # ... and the tenant's principals given the pool's certificate accept the pool's tokens
    assert "-> fabrikam-pool  via ServicePrincipal 00000004-0000-0ff1-ce00-000000000000 (certificate)" in text.out
    assert "-> Exchange" not in text.out
    dot = estate.reconcile("graph", manifest, "--format", "dot").out  # type: ignore[arg-type]
    assert '"fabrikam-tenant" -> "fabrikam-pool"' in dot and '"fabrikam-pool" -> "fabrikam-tenant"' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
def test_graphviz_renders_the_graph(estate: Estate) -> None:
    manifest = cross_premises(estate)
    dot = estate.reconcile("graph", manifest, "--format", "dot").out  # type: ignore[arg-type]
    svg = html.unescape(subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60,
                                       check=True).stdout)
    assert svg.lstrip().startswith(("<?xml", "<svg", "<!DOCTYPE")) and "</svg>" in svg
    # each line of a label is its own text element: no literal "\n" is drawn
    assert ">fabrikam-pool</text>" in svg
    assert ">Office 365 tenant, realm 8a1c5e3f-2b7d-4c9e-a6f0-1d2e3f4a5b6c</text>" in svg
    assert "\\n" not in svg.replace("\\\\", "")
    plain = subprocess.run(["dot", "-Tplain"], input=dot, capture_output=True, text=True, timeout=60,
                           check=True).stdout
    nodes = [line for line in plain.splitlines() if line.startswith("node ")]
    assert len(nodes) == dot.count(" [label=") - dot.count(" -> ")


def test_a_declared_exchange_target_is_one_node_even_without_its_auth_config(estate: Estate) -> None:
    """Without AuthConfig in the manifest the target still has Exchange's well-known service name, so the pool's link
    to Exchange's metadata document arrives at the declared target, not at a second "Exchange" node."""
    text = ON_PREMISES.read_text(encoding="utf-8").replace(
        "  - target: litware-exchange\n    kind: AuthConfig\n    serviceName: 00000002-0000-0ff1-ce00-000000000000\n",
        "")
    assert "kind: AuthConfig" not in text
    dot = estate.reconcile("graph", estate.write("m.yaml", text), "--format", "dot").out
    assert '"litware-pool" -> "litware-exchange"' in dot
    assert "Exchange\\n00000002" not in dot and dot.count(" [label=") - dot.count(" -> ") == 3  # pool, Exchange, SP
