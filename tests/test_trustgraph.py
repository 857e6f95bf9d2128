"""The trust graph from a manifest and the lab's metadata documents: links, checks, renderings."""

from __future__ import annotations

from tests.e2e import ON_PREMISES, Estate

WRONG = ON_PREMISES.read_text(encoding="utf-8").replace(
    "    metadataUrl: ${sharepointHost}/jsonmetadata.ashx\n"
    "    applicationIdentifier: 00000003-0000-0ff1-ce00-000000000000",
    "    metadataUrl: ${exchangeHost}/autodiscover/metadata/json/1\n"
    "    applicationIdentifier: 00000003-0000-0ff1-ce00-000000000000")


def test_graph_text_shows_each_link_and_its_state(estate: Estate) -> None:
    run = estate.reconcile("graph", ON_PREMISES)
    assert run.code == 0, run.out + run.err
    assert "litware-pool (Skype for Business" in run.out
    assert "-> litware-exchange  via PartnerApplication microsoft.exchange" in run.out
    assert "-> 00000003-0000-0ff1-ce00-000000000000@litwareinc.com (not in this manifest)" in run.out
    assert "litware-exchange (Exchange Server" in run.out
    assert "-> litware-pool  via EnterprisePartnerApplication Lync" in run.out
    assert "via PartnerApplication microsoft.exchange (metadataUrl)" in run.out and "[ok]" in run.out
    assert "3 links, 0 broken." in run.out


def test_a_link_to_a_host_serving_another_service_is_an_error_at_plan_time(estate: Estate) -> None:
    manifest = estate.write("wrong.yaml", WRONG)
    graph = estate.reconcile("graph", manifest)
    assert graph.code == 1
    assert "serves 00000002-0000-0ff1-ce00-000000000000, not the expected 00000003-0000-0ff1-ce00-000000000000" \
        in graph.out
    plan = estate.reconcile("plan", manifest)
    assert plan.code == 1
    assert "wrong.yaml:53: litware-pool.PartnerApplication.microsoft.sharepoint: trust:" in plan.out
    before = estate.snapshot()["hosts"]["atl-cs-001"]["objects"]
    assert estate.reconcile("apply", manifest, "--auto-approve").code == 1
    assert estate.snapshot()["hosts"]["atl-cs-001"]["objects"] == before


def test_dot_and_mermaid_renderings(estate: Estate) -> None:
    dot = estate.reconcile("graph", estate.write("wrong.yaml", WRONG), "--format", "dot").out
    assert dot.startswith("digraph trust {") and dot.rstrip().endswith("}")
    assert '"litware-pool" -> "litware-exchange"' in dot and '"litware-exchange" -> "litware-pool"' in dot
    assert "color=red" in dot and "color=darkgreen" in dot
    mermaid = estate.reconcile("graph", ON_PREMISES, "--format", "mermaid").out
    assert mermaid.startswith("flowchart LR\n")
    assert '-->|"PartnerApplication microsoft.exchange (metadataUrl): ok"|' in mermaid
