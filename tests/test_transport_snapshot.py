"""The snapshot transport: Get-* cmdlets answered from `<Cmdlet>.json` captures, everything else refused.

Unit tests write captures with Windows PowerShell 5.1's quirks into tmp_path; the folders under
tests/fixtures/snapshots are real-shape captures of Skype pools (see SOURCES.md there).
"""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from reconciler.commands import Command
from reconciler.errors import TransportError
from reconciler.manifest.loader import load_manifest
from reconciler.model import SourceLocation, TargetSpec
from reconciler.providers.base import Registry
from reconciler.transports.snapshot import SnapshotTransport, capture_command

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "snapshots"
READ_ONLY = "is read-only: plan and discover only"
SKYPE_DISCOVERY = (
    Command("Get-CsOAuthConfiguration"),
    Command("Get-CsOAuthServer"),
    Command("Get-CsPartnerApplication"),
)

APP = {"Identity": "microsoft.exchange", "Name": "microsoft.exchange",
       "ApplicationIdentifier": "00000002-0000-0ff1-ce00-000000000000", "ApplicationTrustLevel": 0,
       "Enabled": True}
OTHER = {"Identity": "Exchange", "Name": "Exchange", "AuthToken": "Value=https://autodiscover.contoso.com/"
         "autodiscover/metadata/json/1", "ApplicationTrustLevel": 1, "Enabled": False}


def capture(folder: Path, cmdlet: str, content: str | bytes, *, encoding: str = "utf-8-sig") -> Path:
    """Write `<cmdlet>.json` as PowerShell would: text in `encoding` (utf-8-sig: with a byte-order mark)."""
    path = folder / f"{cmdlet}.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def ps_json(value: Any) -> str:
    """JSON as Windows PowerShell 5.1 lays it out: two spaces after colons, CRLF line ends."""
    return json.dumps(value, indent=4).replace('": ', '":  ').replace("\n", "\r\n") + "\r\n"


def answer(folder: Path, command: Command) -> Any:
    (result,) = SnapshotTransport(folder).invoke([command])
    assert result.ok, result.error
    return [dict(o) for o in result.output]


def failure(folder: Path, command: Command) -> str:
    (result,) = SnapshotTransport(folder).invoke([command])
    assert not result.ok and not result.output
    assert result.error is not None
    return result.error


# --- encodings and shapes -------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "utf-16", "utf-16-be-bom", "utf-32"])
def test_every_encoding_windows_powershell_writes_is_read(tmp_path: Path, encoding: str) -> None:
    text = ps_json([APP, {**OTHER, "Name": "Exchange \u2013 caf\u00e9"}])
    # utf-16 and utf-32 here are little-endian with a byte-order mark
    data = codecs.BOM_UTF16_BE + text.encode("utf-16-be") if encoding == "utf-16-be-bom" else text.encode(encoding)
    capture(tmp_path, "Get-CsPartnerApplication", data)
    output = answer(tmp_path, Command("Get-CsPartnerApplication"))
    assert output == [APP, {**OTHER, "Name": "Exchange \u2013 caf\u00e9"}]


def test_redirection_output_utf16_le_with_bom_is_read(tmp_path: Path) -> None:
    # `Get-CsPartnerApplication | ConvertTo-Json -Depth 5 > Get-CsPartnerApplication.json` in 5.1.
    capture(tmp_path, "Get-CsPartnerApplication", b"\xff\xfe" + ps_json(APP).encode("utf-16-le"))
    assert answer(tmp_path, Command("Get-CsPartnerApplication")) == [APP]


def test_one_object_is_one_result_and_an_array_is_several(tmp_path: Path) -> None:
    capture(tmp_path, "Get-CsOAuthServer", ps_json({"Identity": "microsoft.sts", "Type": 2}))
    capture(tmp_path, "Get-CsPartnerApplication", ps_json([APP, OTHER]))
    assert answer(tmp_path, Command("Get-CsOAuthServer")) == [{"Identity": "microsoft.sts", "Type": 2}]
    assert answer(tmp_path, Command("Get-CsPartnerApplication")) == [APP, OTHER]


def test_a_captured_bare_string_is_kept_for_a_command_that_writes_one(tmp_path: Path) -> None:
    capture(tmp_path, "Get-SPAuthenticationRealm", ps_json("litwareinc.com"))
    assert answer(tmp_path, Command("Get-SPAuthenticationRealm", scalar=True)) == [{"Value": "litwareinc.com"}]


def test_a_count_wrapped_array_is_unwrapped(tmp_path: Path) -> None:
    capture(tmp_path, "Get-AuthServer", ps_json({"value": [APP, OTHER], "Count": 2}))
    assert answer(tmp_path, Command("Get-AuthServer")) == [APP, OTHER]


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\r\n", "\ufeff \r\n".encode(),
                                     b"null\r\n", b"[]", b"\xef\xbb\xbf[\r\n\r\n]\r\n"],
                         ids=["empty", "utf8-bom-only", "utf16-bom-only", "newline", "bom-and-blank", "null",
                              "empty-array", "ps51-empty-array"])
def test_an_empty_capture_means_no_objects(tmp_path: Path, content: bytes) -> None:
    capture(tmp_path, "Get-CsOAuthServer", content)
    (result,) = SnapshotTransport(tmp_path).invoke([Command("Get-CsOAuthServer")])
    assert result.ok and result.output == () and result.error is None


def test_enums_stay_numbers(tmp_path: Path) -> None:
    capture(tmp_path, "Get-CsPartnerApplication", ps_json({"Identity": "a", "ApplicationTrustLevel": 0}))
    (obj,) = answer(tmp_path, Command("Get-CsPartnerApplication"))
    assert obj["ApplicationTrustLevel"] == 0 and isinstance(obj["ApplicationTrustLevel"], int)


# --- dates ----------------------------------------------------------------------------------------


def test_dates_become_iso_8601_utc(tmp_path: Path) -> None:
    # 5.1 writes "\/Date(ms)\/" (JSON's escaped slash), sometimes with the zone offset after the milliseconds.
    capture(tmp_path, "Get-AuthConfig", (
        '{\r\n'
        '    "Identity":  "Auth Configuration",\r\n'
        '    "NextCertificateEffectiveDate":  "\\/Date(1767225600000)\\/",\r\n'
        '    "WhenChanged":  "\\/Date(1700000000000+0100)\\/",\r\n'
        '    "WhenCreated":  "\\/Date(1700000000123-0500)\\/",\r\n'
        '    "Before1970":  "\\/Date(-86400000)\\/",\r\n'
        '    "Certificates":  [ { "NotAfter":  "\\/Date(1767225600000)\\/" } ],\r\n'
        '    "Text":  "Date(1767225600000) is not a date"\r\n'
        '}\r\n'))
    (obj,) = answer(tmp_path, Command("Get-AuthConfig"))
    assert obj == {
        "Identity": "Auth Configuration",
        "NextCertificateEffectiveDate": "2026-01-01T00:00:00Z",
        "WhenChanged": "2023-11-14T22:13:20Z",  # the milliseconds are UTC; the offset does not move them
        "WhenCreated": "2023-11-14T22:13:20.123Z",
        "Before1970": "1969-12-31T00:00:00Z",
        "Certificates": [{"NotAfter": "2026-01-01T00:00:00Z"}],
        "Text": "Date(1767225600000) is not a date",
    }


def test_a_date_wrapped_with_its_display_hint_is_just_the_date(tmp_path: Path) -> None:
    # What 5.1 writes for a DateTime carrying Get-Date's DisplayHint note property.
    capture(tmp_path, "Get-AuthConfig", ps_json({
        "Identity": "x",
        "NextCertificateEffectiveDate": {"value": "/Date(1767225600000)/", "DisplayHint": 2,
                                         "DateTime": "Thursday, January 1, 2026 12:00:00 AM"},
        "Other": {"value": "not a date", "DisplayHint": 2, "DateTime": "x"},
    }))
    (obj,) = answer(tmp_path, Command("Get-AuthConfig"))
    assert obj["NextCertificateEffectiveDate"] == "2026-01-01T00:00:00Z"
    assert obj["Other"] == {"value": "not a date", "DisplayHint": 2, "DateTime": "x"}


# --- select and Identity --------------------------------------------------------------------------


def test_select_keeps_only_those_properties_ignoring_case(tmp_path: Path) -> None:
    capture(tmp_path, "Get-CsPartnerApplication", ps_json([APP, OTHER]))
    command = Command("Get-CsPartnerApplication", select=("identity", "APPLICATIONTRUSTLEVEL", "MetadataUrl"))
    assert answer(tmp_path, command) == [
        {"Identity": "microsoft.exchange", "ApplicationTrustLevel": 0},  # the file's spelling is kept
        {"Identity": "Exchange", "ApplicationTrustLevel": 1},  # a property the file lacks is not invented
    ]


def test_identity_filters_ignoring_case(tmp_path: Path) -> None:
    capture(tmp_path, "Get-CsPartnerApplication", ps_json([APP, OTHER]))
    assert answer(tmp_path, Command("Get-CsPartnerApplication", {"Identity": "EXCHANGE"})) == [OTHER]
    assert answer(tmp_path, Command("Get-CsPartnerApplication", {"-identity": "Microsoft.Exchange"},
                                    select=("Enabled",))) == [{"Enabled": True}]
    assert answer(tmp_path, Command("Get-CsPartnerApplication", {"Identity": "nothing"})) == []


def test_identity_written_as_an_object_matches_by_name(tmp_path: Path) -> None:
    # ConvertTo-Json -Depth 5 may write an identity type as its properties rather than its text.
    capture(tmp_path, "Get-PartnerApplication", ps_json([
        {"Identity": {"Name": "Skype", "DistinguishedName": "CN=Skype,CN=Partner Applications"}, "Name": "Skype"},
        {"Identity": {"Name": "Other"}, "Name": "Other"},
    ]))
    output = answer(tmp_path, Command("Get-PartnerApplication", {"Identity": "skype"}, select=("Name",)))
    assert output == [{"Name": "Skype"}]


# --- missing and broken files ---------------------------------------------------------------------


def test_a_missing_file_fails_naming_it_and_the_command_that_writes_it(tmp_path: Path) -> None:
    message = failure(tmp_path, Command("Get-CsPartnerApplication"))
    assert message.startswith("Get-CsPartnerApplication : ")
    assert f"no Get-CsPartnerApplication.json in {tmp_path}" in message
    assert capture_command("Get-CsPartnerApplication") in message
    assert capture_command("Get-CsPartnerApplication") == (
        "Get-CsPartnerApplication | ConvertTo-Json -Depth 5 | Out-File -Encoding utf8 Get-CsPartnerApplication.json")


def test_a_missing_file_stops_the_batch_like_any_failure(tmp_path: Path) -> None:
    capture(tmp_path, "Get-CsOAuthConfiguration", ps_json({"Identity": "Global"}))
    capture(tmp_path, "Get-CsPartnerApplication", ps_json(APP))
    transport = SnapshotTransport(tmp_path)
    stopped = transport.invoke(SKYPE_DISCOVERY)
    assert [r.ok for r in stopped] == [True, False]
    every = transport.invoke(SKYPE_DISCOVERY, stop_on_error=False)
    assert [r.ok for r in every] == [True, False, True]
    assert every[2].output == (APP,)


def test_file_names_match_ignoring_case(tmp_path: Path) -> None:
    (tmp_path / "get-csoauthserver.JSON").write_text(ps_json({"Identity": "a"}), encoding="utf-8")
    assert answer(tmp_path, Command("Get-CsOAuthServer")) == [{"Identity": "a"}]
    assert answer(tmp_path, Command("GET-CSOAUTHSERVER")) == [{"Identity": "a"}]


@pytest.mark.skipif(os.name == "nt", reason="needs a case-sensitive file system")
def test_two_files_differing_only_in_case_are_not_guessed_between(tmp_path: Path) -> None:
    (tmp_path / "Get-CsOAuthServer.json").write_text("[]", encoding="utf-8")
    (tmp_path / "get-csoauthserver.json").write_text(ps_json({"Identity": "a"}), encoding="utf-8")
    message = failure(tmp_path, Command("Get-CsOAuthServer"))
    assert "Get-CsOAuthServer.json, get-csoauthserver.json" in message


def test_bad_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = capture(tmp_path, "Get-CsOAuthServer", '{\r\n    "Identity":  "a",\r\n    "Type":  ,\r\n}\r\n')
    message = failure(tmp_path, Command("Get-CsOAuthServer"))
    assert f"{path}: line 3, column 14: not valid JSON" in message
    assert capture_command("Get-CsOAuthServer") in message


def test_bad_json_in_utf16_names_the_line_too(tmp_path: Path) -> None:
    path = capture(tmp_path, "Get-CsOAuthServer", "[\r\n  {\"a\": 1}\r\n  {\"b\": 2}\r\n]\r\n", encoding="utf-16")
    assert f"{path}: line 3, column 3: not valid JSON" in failure(tmp_path, Command("Get-CsOAuthServer"))


def test_two_documents_in_one_file_are_bad_json(tmp_path: Path) -> None:
    # e.g. `... | ForEach-Object { $_ | ConvertTo-Json }`: one document per object.
    path = capture(tmp_path, "Get-CsOAuthServer", ps_json({"Identity": "a"}) + ps_json({"Identity": "b"}))
    assert f"{path}: line 4, column 1: not valid JSON (Extra data)" in failure(tmp_path, Command("Get-CsOAuthServer"))


def test_text_in_another_encoding_without_a_bom_names_the_line(tmp_path: Path) -> None:
    # Set-Content without -Encoding writes the ANSI code page in 5.1: not guessed at.
    path = capture(tmp_path, "Get-CsOAuthServer", '[\r\n{"Name": "caf\u00e9"}\r\n]\r\n', encoding="cp1252")
    message = failure(tmp_path, Command("Get-CsOAuthServer"))
    assert f"{path}: line 2: not UTF-8 text" in message


def test_utf16_without_a_bom_is_reported(tmp_path: Path) -> None:
    capture(tmp_path, "Get-CsOAuthServer", '{"Identity": "a"}', encoding="utf-16-le")
    assert "NUL bytes but no byte-order mark" in failure(tmp_path, Command("Get-CsOAuthServer"))


def test_items_that_are_not_objects_are_refused(tmp_path: Path) -> None:
    path = capture(tmp_path, "Get-CsOAuthServer", '["microsoft.sts"]')
    message = failure(tmp_path, Command("Get-CsOAuthServer"))
    assert f"{path}: output item 0 is str, not an object" in message


# --- read-only ------------------------------------------------------------------------------------


WRITES = [
    Command("Set-CsPartnerApplication", {"Identity": "microsoft.exchange", "Enabled": False}),
    Command("New-CsOAuthServer", {"Identity": "microsoft.sts", "MetadataUrl": "https://x"}),
    Command("Remove-CsPartnerApplication", {"Identity": "microsoft.exchange"}),
    Command("Set-AuthConfig", {"CertificateThumbprint": "AB"}),
    Command("iisreset", native=True, arguments=("/noforce",)),
    Command("POST", {"path": "/servicePrincipals", "body": {}}),
]


@pytest.mark.parametrize("command", WRITES, ids=lambda c: c.cmdlet)
def test_writes_are_refused_without_touching_anything(tmp_path: Path, command: Command) -> None:
    for name in ("Set-CsPartnerApplication", "New-CsOAuthServer", "Remove-CsPartnerApplication", "Set-AuthConfig"):
        capture(tmp_path, name, "[]")  # even a file named after the command is not "run"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    transport = SnapshotTransport(tmp_path, target="pool")
    assert SnapshotTransport.read_only is True
    reason = transport.unsupported(command)
    assert reason is not None
    assert reason.startswith(f"the snapshot target 'pool' {READ_ONLY}; apply needs a real transport")
    (result,) = transport.invoke([command, Command("Get-CsOAuthServer")])
    assert not result.ok and result.error == f"{command.cmdlet} : {reason}"
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before


def test_a_check_on_the_server_is_refused(tmp_path: Path) -> None:
    reason = SnapshotTransport(tmp_path, target="pool").unsupported(
        Command("Test-CsExStorageConnectivity", {"SipUri": "sip:kim@contoso.com"}))
    assert reason == (f"the snapshot target 'pool' {READ_ONLY}; Test-CsExStorageConnectivity runs a check on the "
                      "server and needs a real transport")


@pytest.mark.parametrize("command,expected", [
    (Command("GET", {"path": "/servicePrincipals"}), "a Microsoft Graph request cannot be answered from a snapshot"),
    (Command("Get-ManagementRoleAssignment", {"RoleAssignee": "x"}),
     "can answer Get-ManagementRoleAssignment in full or by -Identity only; -RoleAssignee cannot be answered"),
    (Command("Get-CsOAuthServer", {"Identity": ["a", "b"]}), "only by an -Identity text"),
    (Command("Get-../../secret"), "answers only Get-* cmdlets; 'Get-../../secret' is not one"),
], ids=["graph-get", "other-parameter", "identity-list", "not-a-cmdlet-name"])
def test_reads_a_snapshot_cannot_answer_are_refused(tmp_path: Path, command: Command, expected: str) -> None:
    transport = SnapshotTransport(tmp_path, target="pool")
    reason = transport.unsupported(command)
    assert reason is not None and expected in reason
    (result,) = transport.invoke([command])
    assert not result.ok and result.error == f"{command.cmdlet} : {reason}"


def test_gets_it_can_answer_are_supported(tmp_path: Path) -> None:
    transport = SnapshotTransport(tmp_path)
    assert transport.unsupported(Command("Get-CsOAuthServer")) is None
    assert transport.unsupported(Command("get-partnerapplication", {"Identity": "x"}, select=("Name",))) is None


def test_a_closed_transport_answers_nothing(tmp_path: Path) -> None:
    transport = SnapshotTransport(tmp_path, target="pool")
    transport.close()
    with pytest.raises(TransportError, match="closed"):
        transport.invoke([Command("Get-CsOAuthServer")])


# --- connection settings --------------------------------------------------------------------------


def target(connection: dict[str, Any], manifest: Path | None = None) -> TargetSpec:
    location = SourceLocation(str(manifest), 4, "targets.pool") if manifest is not None else None
    return TargetSpec("pool", "skype", {"transport": "snapshot", **connection}, location=location)


def test_connection_schema() -> None:
    validator = Draft202012Validator(SnapshotTransport.connection_schema)
    assert validator.is_valid({"path": "snapshots/pool"})
    assert not validator.is_valid({})
    assert not validator.is_valid({"path": ""})
    assert not validator.is_valid({"path": "x", "host": "atl-cs-001"})


def test_a_relative_path_is_read_from_the_manifest_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "estate" / "snapshots" / "pool").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    transport = SnapshotTransport.from_target(target({"path": "snapshots/pool"}, tmp_path / "estate" / "x.yaml"))
    assert transport.directory == tmp_path / "estate" / "snapshots" / "pool"
    # The manifest path as typed (relative to the working directory) works as well.
    monkeypatch.chdir(tmp_path)
    transport = SnapshotTransport.from_target(target({"path": "snapshots/pool"}, Path("estate") / "x.yaml"))
    assert transport.directory == tmp_path / "estate" / "snapshots" / "pool"


def test_without_a_manifest_location_a_relative_path_is_read_from_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "snap").mkdir()
    monkeypatch.chdir(tmp_path)
    assert SnapshotTransport.from_target(target({"path": "snap"})).directory == tmp_path / "snap"
    absolute = tmp_path / "snap"
    assert SnapshotTransport.from_target(target({"path": str(absolute)}, Path("/nowhere/x.yaml"))).directory == absolute


@pytest.mark.parametrize("connection,expected", [
    ({"path": "missing"}, "connection.path 'missing': the snapshot folder"),
    ({}, "needs connection.path"),
    ({"path": 3}, "needs connection.path"),
    ({"path": "snap", "host": "x"}, "unknown connection setting(s) for snapshot: host"),
    ({"path": "file.json"}, "is not a folder"),
])
def test_bad_connection_settings_are_clear_errors(tmp_path: Path, connection: dict[str, Any], expected: str) -> None:
    (tmp_path / "snap").mkdir()
    (tmp_path / "file.json").write_text("[]", encoding="utf-8")
    with pytest.raises(TransportError) as caught:
        SnapshotTransport.from_target(target(connection, tmp_path / "x.yaml"))
    assert expected in str(caught.value) and "target 'pool'" in str(caught.value)


def test_the_transport_is_registered_and_a_manifest_can_use_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry.from_entry_points()
    assert registry.transports["snapshot"] is SnapshotTransport
    (tmp_path / "estate" / "snapshots" / "pool").mkdir(parents=True)
    manifest = tmp_path / "estate" / "pool.yaml"
    manifest.write_text(
        "apiVersion: reconciler/v1\n"
        "targets:\n"
        "  pool:\n"
        "    provider: skype\n"
        "    connection: {transport: snapshot, path: snapshots/pool}\n"
        "resources: []\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    desired = load_manifest(Path("estate") / "pool.yaml", registry)
    transport = registry.open_transport(desired.targets["pool"])
    assert isinstance(transport, SnapshotTransport)
    assert transport.directory == tmp_path / "estate" / "snapshots" / "pool"


# --- the real-shape fixtures ----------------------------------------------------------------------


def test_fixture_skype_pool_on_premises_exchange() -> None:
    folder = FIXTURES / "skype-pool-on-premises-exchange"
    assert (folder / "Get-CsOAuthServer.json").read_bytes() == codecs.BOM_UTF8
    configuration, servers, applications = SnapshotTransport(folder).invoke(SKYPE_DISCOVERY)
    assert configuration.ok and servers.ok and applications.ok
    (config,) = configuration.output
    assert config["Identity"] == "Global"
    assert config["ServiceName"] == "00000004-0000-0ff1-ce00-000000000000"
    assert config["ExchangeAutodiscoverUrl"] == "https://autodiscover.contoso.com/Autodiscover/Autodiscover.svc"
    assert config["OAuthServers"] == []
    assert [a["Name"] for a in config["PartnerApplications"]] == ["Exchange"]
    assert servers.output == ()
    assert applications.output == ({
        "Identity": "Exchange",
        "AuthToken": "Value=https://autodiscover.contoso.com/autodiscover/metadata/json/1",
        "Name": "Exchange",
        "ApplicationIdentifier": "00000002-0000-0ff1-ce00-000000000000",
        "Realm": "contoso.com",
        "ApplicationTrustLevel": "Full",
        "AcceptSecurityIdentifierInformation": False,
        "Enabled": True,
    },)


def test_fixture_skype_pool_hybrid_acs() -> None:
    folder = FIXTURES / "skype-pool-hybrid-acs"
    assert (folder / "Get-CsOAuthServer.json").read_bytes().startswith(codecs.BOM_UTF16_LE)
    transport = SnapshotTransport(folder)
    configuration, servers, applications = transport.invoke(SKYPE_DISCOVERY)
    (config,) = configuration.output
    assert [s["Name"] for s in config["OAuthServers"]] == ["microsoft.sts"]
    (server,) = servers.output
    assert list(server) == ["Identity", "Name", "IssuerIdentifier", "Realm", "MetadataUrl",
                            "AuthorizationUriOverride", "Type", "AcceptSecurityIdentifierInformation"]
    assert server["Type"] == "Acs" and server["IssuerIdentifier"] == "00000001-0000-0000-c000-000000000000"
    assert server["MetadataUrl"] == f"https://accounts.accesscontrol.windows.net/{server['Realm']}/metadata/json/1"
    assert [(a["Identity"], a["AuthToken"]) for a in applications.output] == [
        ("microsoft.exchange", "Microsoft.Rtc.Management.WritableConfig.Settings.SSAuth.UseOAuthServer"),
        ("Exchange", "Value=https://autodiscover.contoso.com/autodiscover/metadata/json/1"),
    ]
    (exchange,) = transport.invoke([Command("Get-CsPartnerApplication", {"Identity": "exchange"},
                                            select=("Identity", "authtoken", "Enabled"))])
    assert exchange.output == ({"Identity": "Exchange",
                                "AuthToken": "Value=https://autodiscover.contoso.com/autodiscover/metadata/json/1",
                                "Enabled": True},)


@pytest.mark.parametrize("folder", sorted(p.name for p in FIXTURES.glob("skype-*") if p.is_dir()))
def test_every_fixture_folder_answers_skype_discovery(folder: str) -> None:
    results = SnapshotTransport(FIXTURES / folder).invoke(SKYPE_DISCOVERY)
    assert [r.ok for r in results] == [True, True, True], [r.error for r in results]
    for result in results:
        for obj in result.output:
            assert {"Identity"} <= set(obj)
