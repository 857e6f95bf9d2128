"""Planning against a captured snapshot of a real pool (`transport: snapshot`): read-only, real output shapes.

The snapshots under tests/fixtures/snapshots/ hold what the Get cmdlets print through `ConvertTo-Json` on a
Skype for Business pool, in the shapes Microsoft's own diagnostics record (see that folder's SOURCES.md): the
form of a partner application only in AuthToken, Get-CsOAuthServer's Type `Acs`, UTF-16 and UTF-8 with BOM.
A manifest that describes a snapshot plans to "No changes"; one value different plans exactly one command;
apply refuses before anything runs. Metadata documents are not reachable here (no network): the trust graph
reports them unchecked, which is a warning, never a change.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pytest_httpx import HTTPXMock

from reconciler.cli import main

SNAPSHOTS = Path(__file__).resolve().parent / "fixtures" / "snapshots"
TENANT = "0f8e4b1c-6d2a-4e53-9a7b-3c5d1e2f4a60"

HYBRID = """\
apiVersion: reconciler/v1
targets:
  pool:
    provider: skype
    connection: {{transport: snapshot, path: {path}}}
resources:
  - target: pool
    kind: OAuthConfiguration
    serviceName: 00000004-0000-0ff1-ce00-000000000000
    realm: contoso.com
    exchangeAutodiscoverUrl: https://autodiscover.contoso.com/Autodiscover/Autodiscover.svc
  - target: pool
    kind: OAuthServer
    identity: microsoft.sts
    metadataUrl: https://accounts.accesscontrol.windows.net/{tenant}/metadata/json/1
    type: {server_type}
  - target: pool
    kind: PartnerApplication
    identity: microsoft.exchange
    applicationIdentifier: 00000002-0000-0ff1-ce00-000000000000
    useOAuthServer: true
    applicationTrustLevel: {trust}
    enabled: true
  - target: pool
    kind: PartnerApplication
    identity: Exchange
    metadataUrl: https://autodiscover.contoso.com/autodiscover/metadata/json/1
    applicationTrustLevel: Full
    acceptSecurityIdentifierInformation: false
"""


@pytest.fixture(autouse=True)
def offline(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ConnectError("no network in tests"), is_optional=True, is_reusable=True)


def reconcile(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def manifest(tmp_path: Path, *, trust: str = "Full", server_type: str = "Acs") -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(HYBRID.format(path=SNAPSHOTS / "skype-pool-hybrid-acs", tenant=TENANT, trust=trust,
                                  server_type=server_type), encoding="utf-8")
    return path


@pytest.mark.parametrize("server_type", ["Acs", "MicrosoftACS"])
def test_a_manifest_that_describes_the_snapshot_plans_no_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], server_type: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = reconcile(capsys, "plan", "--detailed-exitcode", manifest(tmp_path, server_type=server_type))
    assert code == 0, out + err
    assert "No changes" in out


def test_one_value_different_plans_exactly_one_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = reconcile(capsys, "plan", "--detailed-exitcode", manifest(tmp_path, trust="Application"))
    assert code == 2, out + err
    commands = [line.strip()[2:] for line in out.splitlines() if line.strip().startswith("> ")]
    assert commands == ["Set-CsPartnerApplication -Identity 'microsoft.exchange' -ApplicationTrustLevel 'Application'"]


def test_a_form_switch_in_the_manifest_is_a_set_not_a_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    path = manifest(tmp_path)
    text = path.read_text(encoding="utf-8").replace(
        "    metadataUrl: https://autodiscover.contoso.com/autodiscover/metadata/json/1\n",
        "    applicationIdentifier: 00000002-0000-0ff1-ce00-000000000000\n    useOAuthServer: true\n")
    path.write_text(text, encoding="utf-8")
    code, out, err = reconcile(capsys, "plan", "--detailed-exitcode", path)
    assert code == 2, out + err
    assert "must be replaced" not in out
    assert "Set-CsPartnerApplication -Identity 'Exchange' -UseOAuthServer" in out


def test_apply_refuses_a_snapshot_target_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, _out, err = reconcile(capsys, "apply", "--auto-approve", manifest(tmp_path, trust="Application"))
    assert code == 1
    assert "captured snapshot" in err and "Nothing was changed" in err


def test_discover_reads_the_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = reconcile(capsys, "discover", manifest(tmp_path))
    assert code == 0, err
    assert "microsoft.exchange" in out and "Exchange" in out


EXCHANGE = """\
apiVersion: reconciler/v1
targets:
  org:
    provider: exchange
    connection: {{transport: snapshot, path: {path}}}
    prune: [PartnerApplication]
resources:
  - target: org
    kind: AuthConfig
    serviceName: 00000002-0000-0ff1-ce00-000000000000
    currentCertificateThumbprint: C3EDCF181EF4F9B53D01768ECA99564014BCA6E7
  - target: org
    kind: AuthServer
    identity: EvoSts - 6e4c3d2b-1a09-4f8e-b7d6-c5a4b3928170
    type: AzureAD
    authMetadataUrl: https://login.windows.net/{tenant}/federationmetadata/2007-06/federationmetadata.xml
    applicationIdentifier: 9b1c2d3e-4f50-4617-a829-3b4c5d6e7f80
    domainName: [contoso.mail.onmicrosoft.com]
    enabled: true
  - target: org
    kind: PartnerApplication
    identity: Exchange Online
    applicationIdentifier: 00000002-0000-0ff1-ce00-000000000000
    enabled: {enabled}
    accountType: OrganizationalAccount
    linkedAccount: Exchange Online-ApplicationAccount
"""


def exchange_manifest(tmp_path: Path, *, enabled: str = "true") -> Path:
    path = tmp_path / "org.yaml"
    path.write_text(EXCHANGE.format(path=SNAPSHOTS / "exchange-2019-recorded", tenant=TENANT, enabled=enabled),
                    encoding="utf-8")
    return path


def test_a_recorded_exchange_organization_plans_no_changes_and_its_built_ins_are_never_pruned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = reconcile(capsys, "plan", "--detailed-exitcode", exchange_manifest(tmp_path))
    assert code == 0, out + err
    assert "No changes" in out
    assert "Microsoft Graph" not in out and "TeamsScheduler" not in out  # prune on, built-ins left alone


def test_one_exchange_value_different_plans_exactly_one_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = reconcile(capsys, "plan", "--detailed-exitcode", exchange_manifest(tmp_path, enabled="false"))
    assert code == 2, out + err
    commands = [line.strip()[2:] for line in out.splitlines() if line.strip().startswith("> ")]
    assert commands == ["Set-PartnerApplication -Identity 'Exchange Online' -Enabled:$false"]
