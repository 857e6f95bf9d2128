"""Lab administration: init, show, seed, url, set, remove, fail, stats; through functions and the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from reconciler.errors import ReconcilerError
from reconciler.lab import admin, certs, estate
from reconciler.lab.cli import add_lab_parser
from reconciler.lab.state import LabStore
from reconciler.lab.transport import LabTransport
from reconciler.model import TargetSpec
from reconciler.transports.base import Command

LITWARE = "atl-cs-001"


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="reconcile")
    add_lab_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lab", *argv])
    code: int = args.func(args)
    return code


def read(path: Path) -> dict[str, Any]:
    return LabStore(path).read()


def apps(path: Path, host: str = LITWARE) -> dict[str, dict[str, Any]]:
    return {a["Identity"]: a for a in read(path)["hosts"][host]["objects"]["PartnerApplication"]}


def invoke(path: Path, *commands: Command, host: str = LITWARE) -> list[Any]:
    transport = LabTransport.from_target(TargetSpec("pool", "skype", {"state": str(path), "host": host}))
    try:
        return transport.invoke(commands)
    finally:
        transport.close()


# --- init ---------------------------------------------------------------------------------------


def test_default_estate(lab_state: Path) -> None:
    state = read(lab_state)
    assert state["format"] == 1
    assert state["tenantId"] == "8a1c5e3f-2b7d-4c9e-a6f0-1d2e3f4a5b6c"
    assert set(state["hosts"]) == {"atl-cs-001", "fab-cs-001", "atl-exchange-001", "atl-sharepoint-001"}
    assert set(state["documents"]) == {estate.EXCHANGE_PATH, estate.SHAREPOINT_PATH, estate.SHAREPOINT_PATH_15,
                                       estate.SKYPE_PATH, estate.ACS_PATH, estate.ENTRA_PATH}
    assert all(d["status"] == "ok" for d in state["documents"].values())
    litware = state["hosts"]["atl-cs-001"]["objects"]
    assert litware["OAuthConfiguration"]["ServiceName"] == ""
    assert litware["OAuthServer"] == []
    assert apps(lab_state)["app"]["UseOAuthServer"] is True
    assert apps(lab_state)["app"]["ApplicationTrustLevel"] == "User"
    exchange = apps(lab_state)["microsoft.exchange"]
    assert exchange["ApplicationIdentifier"] == "00000005-0000-0ff1-ce00-000000000000"
    assert exchange["CertificateRawData"] == state["services"]["exchange"]["certificate"]
    assert "microsoft.sharepoint" not in apps(lab_state)
    fabrikam = state["hosts"]["fab-cs-001"]["objects"]
    assert fabrikam["OAuthConfiguration"]["Realm"] == "fabrikam.com"
    assert fabrikam["OAuthServer"][0]["MetadataUrl"] == estate.OLD_TENANT_STS_URL
    assert fabrikam["PartnerApplication"] == []


def test_certificates_are_real_and_keys_are_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = admin.init_lab(path)
    for svc in state["services"].values():
        cert = x509.load_der_x509_certificate(certs.from_b64(svc["certificate"]))
        assert cert.subject.rfc4514_string() == f"CN={svc['host']}"
        assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 731
    text = path.read_text()
    assert "PRIVATE" not in text and "privateKey" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.json.lock"]


def test_init_refuses_to_overwrite(lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin.set_object(lab_state, LITWARE, "PartnerApplication", "app", {"Enabled": False})
    assert cli("init", "--state", str(lab_state)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    assert apps(lab_state)["app"]["Enabled"] is False
    assert cli("init", "--force", "--state", str(lab_state)) == 0
    assert apps(lab_state)["app"]["Enabled"] is True


def test_missing_state_tells_to_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("show", "--state", str(tmp_path / "none.json")) == 1
    err = capsys.readouterr().err
    assert "reconcile lab init" in err and "Traceback" not in err
    with pytest.raises(ReconcilerError, match="reconcile lab init"):
        admin.lab_stats(tmp_path / "none.json")


def test_corrupt_state(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(ReconcilerError, match="not valid JSON"):
        LabStore(path).read()


def test_failed_edit_still_saves_earlier_changes(lab_state: Path) -> None:
    with pytest.raises(RuntimeError), LabStore(lab_state).edit() as state:
        state["hosts"][LITWARE]["roundTrips"] = 42
        raise RuntimeError("halfway")
    assert read(lab_state)["hosts"][LITWARE]["roundTrips"] == 42


# --- show ---------------------------------------------------------------------------------------


def test_show_uses_thumbprints(lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = read(lab_state)
    b64 = state["services"]["exchange"]["certificate"]
    thumb = certs.thumbprint(certs.from_b64(b64))
    assert cli("show", "--state", str(lab_state)) == 0
    text = capsys.readouterr().out
    assert thumb in text and b64[:40] not in text
    assert "microsoft.exchange" in text and "fab-cs-001" in text
    assert cli("show", "--json", "--host", "ATL-CS-001", "--state", str(lab_state)) == 0
    view = json.loads(capsys.readouterr().out)
    assert list(view["hosts"]) == [LITWARE]
    exchange = view["hosts"][LITWARE]["objects"]["PartnerApplication"][1]
    assert exchange["CertificateThumbprint"] == thumb
    assert "CertificateRawData" not in exchange
    assert b64[:40] not in json.dumps(view)


def test_show_unknown_host(lab_state: Path) -> None:
    with pytest.raises(ReconcilerError, match="no host 'x'"):
        admin.show_lab(lab_state, "x")


# --- seed ---------------------------------------------------------------------------------------

SEED = """
services:
  contoso:
    serviceName: 00000002-0000-0ff1-ce00-000000000000
    realm: contoso.com
    host: mail.contoso.com
documents:
  http://127.0.0.1:8470/mail.contoso.com/autodiscover/metadata/json/1:
    service: contoso
    status: notfound
hosts:
  atl-cs-001:
    PartnerApplication:
      - Identity: microsoft.exchange
        ApplicationIdentifier: 00000002-0000-0ff1-ce00-000000000000
        Realm: contoso.com
        CertificateRawData: {service: contoso}
  con-cs-001:
    platform: skype
    oauthserver:
      - Identity: microsoft.sts
        MetadataUrl: http://127.0.0.1:8470/x
failures:
  - host: con-cs-001
    cmdlet: get-csoauthserver
"""


def test_seed(lab_state: Path, tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(SEED)
    before = read(lab_state)
    assert cli("seed", str(seed), "--state", str(lab_state)) == 0
    state = read(lab_state)
    contoso = state["services"]["contoso"]
    assert x509.load_der_x509_certificate(certs.from_b64(contoso["certificate"])).subject.rfc4514_string() == \
        "CN=mail.contoso.com"
    assert state["documents"]["/mail.contoso.com/autodiscover/metadata/json/1"] == {"service": "contoso",
                                                                                  "status": "notfound"}
    litware = state["hosts"][LITWARE]["objects"]
    assert [a["Identity"] for a in litware["PartnerApplication"]] == ["microsoft.exchange"]  # kind replaced
    exchange = litware["PartnerApplication"][0]
    assert exchange["CertificateRawData"] == contoso["certificate"]
    assert (exchange["Enabled"], exchange["ApplicationTrustLevel"]) == (True, "Full")  # defaults
    assert litware["OAuthConfiguration"] == before["hosts"][LITWARE]["objects"]["OAuthConfiguration"]  # kept
    new_host = state["hosts"]["con-cs-001"]
    assert new_host["objects"]["OAuthServer"][0]["Identity"] == "microsoft.sts"
    assert new_host["objects"]["OAuthConfiguration"]["Identity"] == "Global"
    assert new_host["objects"]["PartnerApplication"] == []
    assert state["failures"] == [{"host": "con-cs-001", "cmdlet": "Get-CsOAuthServer", "identity": None,
                                  "times": 1, "message": None}]
    assert not invoke(lab_state, Command("Get-CsOAuthServer"), host="con-cs-001")[0].ok


def test_seed_keeps_or_regenerates_a_service_certificate(lab_state: Path) -> None:
    before = read(lab_state)["services"]["exchange"]["certificate"]
    spec = {"serviceName": estate.EXCHANGE_ID, "realm": "litwareinc.com", "host": "atl-exchange-001.litwareinc.com"}
    admin.seed_lab(lab_state, {"services": {"exchange": spec}})
    assert read(lab_state)["services"]["exchange"]["certificate"] == before
    admin.seed_lab(lab_state, {"services": {"exchange": {**spec, "certificate": "generate"}}})
    assert read(lab_state)["services"]["exchange"]["certificate"] != before


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ({"bogus": {}}, "unknown section"),
        ({"hosts": {LITWARE: {"Widget": []}}}, "unknown kind 'Widget'"),
        ({"hosts": {LITWARE: {"PartnerApplication": [{"Identity": "a", "Colour": "red"}]}}}, "no property 'Colour'"),
        ({"hosts": {LITWARE: {"PartnerApplication": [{"Enabled": True}]}}}, "needs an Identity"),
        ({"hosts": {LITWARE: {"PartnerApplication": [{"Identity": "a"}, {"Identity": "A"}]}}}, "listed twice"),
        ({"hosts": {"x": {"platform": "lotus-notes"}}}, "unknown lab platform"),
        ({"documents": {"/p": {"service": "nope"}}}, "must name a service"),
        ({"documents": {"/atl-cs-001.litwareinc.com/metadata/json/1": {"service": "skype", "status": "down"}}},
         "status must be one of"),
        ({"services": {"s": {"realm": "r"}}}, "serviceName is required"),
        ({"services": {"s": {"serviceName": "a", "realm": "r", "certificate": "AAAA"}}}, "not a base64 certificate"),
        ({"failures": [{"host": LITWARE, "cmdlet": "Get-Nothing"}]}, "unknown cmdlet"),
    ],
)
def test_bad_seed_changes_nothing(lab_state: Path, seed: dict[str, Any], message: str) -> None:
    # A valid part first, to show the seed is all or nothing.
    seed = {"hosts": {"new-host": {}}, **seed} if "hosts" not in seed else seed
    before = read(lab_state)
    with pytest.raises(ReconcilerError, match=message):
        admin.seed_lab(lab_state, seed)
    assert read(lab_state) == before


def test_seed_file_errors(tmp_path: Path, lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts: [unclosed")
    assert cli("seed", str(bad), "--state", str(lab_state)) == 1
    assert "not valid YAML" in capsys.readouterr().err
    assert cli("seed", str(tmp_path / "missing.yaml"), "--state", str(lab_state)) == 1
    assert "cannot read seed file" in capsys.readouterr().err


# --- url ----------------------------------------------------------------------------------------


def test_url_accepts_paths_and_urls(lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = f"http://127.0.0.1:9999{estate.EXCHANGE_PATH}"
    assert cli("url", full, "--status", "unreachable", "--state", str(lab_state)) == 0
    assert read(lab_state)["documents"][estate.EXCHANGE_PATH]["status"] == "unreachable"
    assert capsys.readouterr().out.strip() == f"{estate.EXCHANGE_PATH}: unreachable"
    assert admin.set_document_status(lab_state, estate.EXCHANGE_PATH.lstrip("/"), "ok") == estate.EXCHANGE_PATH
    assert read(lab_state)["documents"][estate.EXCHANGE_PATH]["status"] == "ok"


def test_url_errors(lab_state: Path) -> None:
    with pytest.raises(ReconcilerError, match="no document at /nowhere"):
        admin.set_document_status(lab_state, "/nowhere", "ok")
    with pytest.raises(ReconcilerError, match="status must be one of"):
        admin.set_document_status(lab_state, estate.EXCHANGE_PATH, "broken")
    with pytest.raises(SystemExit):
        cli("url", estate.EXCHANGE_PATH, "--status", "broken", "--state", str(lab_state))


# --- set / remove -------------------------------------------------------------------------------


def test_parse_value() -> None:
    assert [admin.parse_value(v) for v in ["true", "FALSE", "null", "$true", "Full", "0", ""]] == [
        True, False, None, True, "Full", "0", ""]
    assert admin.parse_assignments(["Enabled=false", "Realm=a=b"]) == {"Enabled": False, "Realm": "a=b"}
    with pytest.raises(ReconcilerError):
        admin.parse_assignments(["Enabled"])


def test_set_object(lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("set", LITWARE, "partnerapplication", "MICROSOFT.EXCHANGE", "enabled=false", "Realm=null",
               "ApplicationTrustLevel=User", "--state", str(lab_state)) == 0
    exchange = apps(lab_state)["microsoft.exchange"]
    assert (exchange["Enabled"], exchange["Realm"], exchange["ApplicationTrustLevel"]) == (False, None, "User")
    assert "enabled" not in exchange
    assert cli("set", LITWARE, "OAuthConfiguration", "global", "ServiceName=abc", "--state", str(lab_state)) == 0
    assert read(lab_state)["hosts"][LITWARE]["objects"]["OAuthConfiguration"]["ServiceName"] == "abc"
    get = invoke(lab_state, Command("Get-CsPartnerApplication", {"Identity": "microsoft.exchange"}))[0]
    assert get.output[0]["Enabled"] is False  # the tool sees the drift


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((LITWARE, "PartnerApplication", "nope", "Enabled=false"), "has no PartnerApplication 'nope'"),
        ((LITWARE, "PartnerApplication", "app", "Colour=red"), "no property 'Colour'"),
        ((LITWARE, "PartnerApplication", "app", "Identity=other"), "Identity cannot be changed"),
        ((LITWARE, "Widget", "app", "Enabled=false"), "unknown kind 'Widget'"),
        ((LITWARE, "OAuthConfiguration", "site:1", "Realm=x"), "one instance, Global"),
        (("nohost", "PartnerApplication", "app", "Enabled=false"), "no host 'nohost'"),
    ],
)
def test_set_object_errors(lab_state: Path, args: tuple[str, ...], message: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    before = read(lab_state)
    assert cli("set", *args, "--state", str(lab_state)) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert read(lab_state) == before


def test_remove_object(lab_state: Path) -> None:
    assert cli("remove", LITWARE, "PartnerApplication", "App", "--state", str(lab_state)) == 0
    assert "app" not in apps(lab_state)
    assert cli("remove", "fab-cs-001", "OAuthServer", "microsoft.sts", "--state", str(lab_state)) == 0
    assert read(lab_state)["hosts"]["fab-cs-001"]["objects"]["OAuthServer"] == []
    with pytest.raises(ReconcilerError, match="has no PartnerApplication 'app'"):
        admin.remove_object(lab_state, LITWARE, "PartnerApplication", "app")
    with pytest.raises(ReconcilerError, match="cannot be removed"):
        admin.remove_object(lab_state, LITWARE, "OAuthConfiguration", "Global")


# --- fail / stats -------------------------------------------------------------------------------


def test_fail(lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("fail", LITWARE, "new-cspartnerapplication", "--identity", "microsoft.sharepoint", "--times", "2",
               "--message", "The WinRM client received an HTTP server error status (500).",
               "--state", str(lab_state)) == 0
    assert "next 2 New-CsPartnerApplication for microsoft.sharepoint will fail" in capsys.readouterr().out
    command = Command("New-CsPartnerApplication", {"Identity": "microsoft.sharepoint", "ApplicationIdentifier": "x",
                                                   "ApplicationTrustLevel": "Full", "UseOAuthServer": True})
    for _ in range(2):
        result = invoke(lab_state, command)[0]
        assert result.error == ("New-CsPartnerApplication : The WinRM client received an HTTP server error "
                                "status (500).")
    assert invoke(lab_state, command)[0].ok


def test_fail_errors(lab_state: Path) -> None:
    with pytest.raises(ReconcilerError, match="unknown cmdlet"):
        admin.add_failure(lab_state, LITWARE, "Get-Widget")
    with pytest.raises(ReconcilerError, match="times"):
        admin.add_failure(lab_state, LITWARE, "Get-CsOAuthServer", times=0)
    with pytest.raises(ReconcilerError, match="no host"):
        admin.add_failure(lab_state, "elsewhere", "Get-CsOAuthServer")


def test_stats(lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    invoke(lab_state, Command("Get-CsOAuthConfiguration"), Command("Get-CsPartnerApplication"))
    invoke(lab_state, Command("Get-CsPartnerApplication"))
    assert admin.lab_stats(lab_state, LITWARE) == {
        LITWARE: {"roundTrips": 2, "calls": {"Get-CsOAuthConfiguration": 1, "Get-CsPartnerApplication": 2}}}
    assert cli("stats", "--state", str(lab_state)) == 0
    out = capsys.readouterr().out
    assert f"{LITWARE}: 2 round trips" in out and "  Get-CsPartnerApplication: 2" in out
    assert "fab-cs-001: 0 round trips" in out
    assert cli("stats", "--reset", "--json", "--host", LITWARE, "--state", str(lab_state)) == 0
    assert json.loads(capsys.readouterr().out)[LITWARE]["roundTrips"] == 2  # shown, then reset
    assert admin.lab_stats(lab_state)[LITWARE] == {"roundTrips": 0, "calls": {}}


def test_every_op_has_state_option() -> None:
    parser = argparse.ArgumentParser()
    add_lab_parser(parser.add_subparsers(dest="command"))
    for argv in (["init"], ["serve"], ["show"], ["seed", "f"], ["url", "/p", "--status", "ok"],
                 ["set", "h", "k", "i", "a=b"], ["remove", "h", "k", "i"], ["fail", "h", "c"], ["stats"]):
        args = parser.parse_args(["lab", *argv])
        assert args.state == Path(".lab/state.json")
        assert callable(args.func) and args.lab_command is True


def test_wired_into_the_main_cli(lab_state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.cli import main

    assert main(["lab", "fail", LITWARE, "Get-CsOAuthServer", "--state", str(lab_state)]) == 0
    assert main(["lab", "stats", "--json", "--state", str(lab_state)]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])[LITWARE]["roundTrips"] == 0
    assert main(["lab", "remove", LITWARE, "OAuthConfiguration", "Global", "--state", str(lab_state)]) == 1
