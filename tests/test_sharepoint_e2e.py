"""SharePoint's side of the on-premises trust end to end: Skype <-> Exchange <-> SharePoint <-> Skype."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.lab import certs
from reconciler.lab.estate import EXCHANGE_ID, SHAREPOINT_ID, SKYPE_ID
from tests.e2e import REPO, Estate

MANIFEST = REPO / "manifests" / "on-premises-sharepoint.yaml"
SHAREPOINT = "atl-sharepoint-001"
REALM = "litwareinc.com"


def without_grants(text: str) -> str:
    """The manifest without SharePoint's appPrincipalPermission handler."""
    start = text.index("    handlers:\n      appPrincipalPermission:\n")
    end = text.index("enableAppOnlyPolicy: true\n", start) + len("enableAppOnlyPolicy: true\n")
    return text[:start] + text[end:]


def thumbprint_of(estate: Estate, service: str) -> str:
    return certs.thumbprint(certs.from_b64(estate.snapshot()["services"][service]["certificate"]))


def issuer(estate: Estate, name: str) -> dict[str, Any]:
    found = [i for i in estate.objects(SHAREPOINT, "TrustedSecurityTokenIssuer") if i["Identity"] == name]
    assert len(found) == 1, f"no issuer {name} on {SHAREPOINT}"
    return dict(found[0])


def test_plan_apply_then_no_changes_and_every_direction_holds(estate: Estate) -> None:
    assert estate.objects(SHAREPOINT, "TrustedSecurityTokenIssuer") == []
    plan = estate.reconcile("plan", MANIFEST)
    assert plan.code == 0
    assert "> New-SPTrustedSecurityTokenIssuer -Name 'Exchange' -MetadataEndPoint" in plan.out
    assert "-IsTrustBroker" in plan.out.split("TrustedSecurityTokenIssuer \"Skype\"")[1]

    run = estate.reconcile("apply", MANIFEST, "--auto-approve", "--verify")
    assert run.code == 0, run.out + run.err
    assert "Re-read litware-sharepoint: converged" in run.out
    assert "All 1 checks passed." in run.out  # Skype <-> Exchange: Test-CsExStorageConnectivity

    again = estate.reconcile("plan", MANIFEST)
    assert again.code == 0 and "No changes." in again.out

    # SharePoint trusts Exchange and Skype: issuers made from their documents, their names and certificates.
    exchange = issuer(estate, "Exchange")
    assert exchange["RegisteredIssuerName"] == f"{EXCHANGE_ID}@{REALM}"
    assert certs.thumbprint(certs.from_b64(exchange["SigningCertificate"])) == thumbprint_of(estate, "exchange")
    assert exchange["IsSelfIssuer"] is True
    skype = issuer(estate, "Skype")
    assert skype["RegisteredIssuerName"] == f"{SKYPE_ID}@{REALM}"
    assert certs.thumbprint(certs.from_b64(skype["SigningCertificate"])) == thumbprint_of(estate, "skype")
    assert skype["IsSelfIssuer"] is False  # -IsTrustBroker
    assert estate.objects(SHAREPOINT, "AuthenticationRealm")["Realm"] == REALM

    # Skype trusts SharePoint: its partner application from SharePoint's document.
    app = estate.app("atl-cs-001", "microsoft.sharepoint")
    assert app is not None and app["ApplicationIdentifier"] == SHAREPOINT_ID and app["Enabled"]

    # Exchange trusts SharePoint: what Configure-EnterprisePartnerApplication.ps1 -ApplicationType SharePoint makes.
    partners = {a["Name"]: a for a in estate.objects("atl-exchange-001", "PartnerApplication")}
    sharepoint_app = partners["SharePointEnterprise"]
    assert sharepoint_app["AuthMetadataUrl"].endswith("/atl-sharepoint-001.litwareinc.com/_layouts/15/metadata/json/1")
    assert sharepoint_app["Enabled"] and sharepoint_app["LinkedAccount"]

    # The trust graph: every declared link resolves to the document it names.
    graph = estate.reconcile("graph", MANIFEST)
    assert graph.code == 0 and "0 broken" in graph.out
    assert "litware-sharepoint" in graph.out


def test_drift_on_sharepoint_is_repaired_in_place(estate: Estate) -> None:
    assert estate.reconcile("apply", MANIFEST, "--auto-approve").code == 0
    estate.lab("set", SHAREPOINT, "TrustedSecurityTokenIssuer", "Skype", "IsSelfIssuer=true", "Description=stale")
    estate.lab("set", SHAREPOINT, "AuthenticationRealm", "Farm", "Realm=contoso.com")
    plan = estate.reconcile("plan", MANIFEST)
    assert "> Set-SPAuthenticationRealm -Realm 'litwareinc.com'" in plan.out
    # the endpoint is always named, so the Set resolves to one documented parameter set
    assert "> Set-SPTrustedSecurityTokenIssuer -Identity 'Skype' -MetadataEndPoint" in plan.out
    assert "must be replaced" not in plan.out
    assert estate.reconcile("apply", MANIFEST, "--auto-approve").code == 0
    assert issuer(estate, "Skype")["IsSelfIssuer"] is False
    assert "No changes." in estate.reconcile("plan", MANIFEST).out


def test_removing_an_issuer(estate: Estate) -> None:
    assert estate.reconcile("apply", MANIFEST, "--auto-approve").code == 0
    text = MANIFEST.read_text(encoding="utf-8").replace(
        "    identity: Exchange\n    metadataEndPoint: ${exchangeHost}/autodiscover/metadata/json/1\n",
        "    identity: Exchange\n    ensure: absent\n")
    contradiction: Path = estate.write("absent-but-granted.yaml", text)
    refused = estate.reconcile("plan", contradiction)
    assert refused.code == 1, refused.out + refused.err
    (line,) = [x for x in refused.out.splitlines() if x.startswith("error: ")]
    assert line.endswith(": litware-sharepoint.TrustedSecurityTokenIssuer.Exchange: handlers.appPrincipalPermission."
                         "grants[0] grants to this issuer's app principal, but the issuer is declared absent: remove "
                         "the grant (a removed issuer has no app principal; the grant is not revoked by this tool)")
    manifest: Path = estate.write("without-exchange.yaml", without_grants(text))
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out
    assert "Remove-SPTrustedSecurityTokenIssuer -Identity 'Exchange'" in run.out
    assert [i["Identity"] for i in estate.objects(SHAREPOINT, "TrustedSecurityTokenIssuer")] == ["Skype"]


def test_a_grant_naming_an_issuer_the_target_does_not_declare_is_a_warning(estate: Estate) -> None:
    # The farm may have an issuer this manifest does not manage: the grant may still run (once), so a warning at the
    # target's line, naming what the target does declare, and the nearest name.
    text = MANIFEST.read_text(encoding="utf-8").replace("- issuer: Exchange ", "- issuer: Exchnage ")
    manifest: Path = estate.write("misspelt-issuer.yaml", text)
    plan = estate.reconcile("plan", manifest)
    assert plan.code == 0, plan.out + plan.err
    target_line = text.splitlines().index("  litware-sharepoint:") + 1
    (line,) = [x for x in plan.out.splitlines() if x.startswith("warning: ") and "Exchnage" in x]
    assert line == (f"warning: {manifest}:{target_line}: litware-sharepoint: handlers.appPrincipalPermission.grants[0] "
                    "names issuer 'Exchnage', which this target does not declare (declared: Exchange, Skype): the "
                    "grant runs once, and fails at apply unless the farm already has that issuer; did you mean "
                    "'Exchange'?")
