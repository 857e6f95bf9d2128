"""The pwsh transport against a stand-in that speaks runner.ps1's protocol (no PowerShell here).

tests/standin_pwsh.py answers with the lab emulator and records every request exactly as it arrived,
so these tests check what the transport sends (one process, one request per batch, values as
literal JSON strings) as well as what it makes of answers, including broken ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from reconciler.commands import Overlapping
from reconciler.errors import OutputShapeError, TransportError
from reconciler.lab.admin import add_failure
from reconciler.lab.state import LabStore
from reconciler.lab.transport import LabTransport
from reconciler.model import TargetSpec
from reconciler.providers.base import Registry, command_names
from reconciler.providers.skype import SkypeProvider
from reconciler.transports import psjson, pwsh
from reconciler.transports.base import MASK, Command
from reconciler.transports.pwsh import DEFAULT_ALLOWED_CMDLETS, RUNNER, PwshTransport
from tests.e2e import ON_PREMISES, Estate

_REGISTRY = Registry.from_entry_points()
DECLARED = tuple(dict.fromkeys(n for p in _REGISTRY.providers.values() for n in command_names(p)))
"""What the installed providers declare: the allow-list the registry gives a pwsh transport."""
STANDIN = Path(__file__).resolve().parent / "standin_pwsh.py"
HOST = "atl-cs-001"
SECRET = "s3cr3t-Value-never-shown"
DISCOVERY = (
    Command("Get-CsOAuthConfiguration", select=("Identity", "ServiceName", "Realm")),
    Command("Get-CsOAuthServer"),
    Command("Get-CsPartnerApplication", select=("Identity", "ApplicationTrustLevel")),
)


@dataclass
class Standin:
    """The stand-in's environment for one test, and the transports opened on it (closed after)."""

    state: Path
    record: Path
    monkeypatch: pytest.MonkeyPatch
    opened: list[PwshTransport] = field(default_factory=list)

    def transport(self, **connection: Any) -> PwshTransport:
        settings: dict[str, Any] = {"transport": "pwsh", "executable": [sys.executable, str(STANDIN)],
                                    "timeoutSeconds": 30, **connection}
        transport = PwshTransport.from_target(TargetSpec("pool", "skype", settings))
        transport.restrict_to(DECLARED)  # as Registry.open_transport does
        self.opened.append(transport)
        return transport

    def misbehave(self, *modes: str) -> None:
        self.monkeypatch.setenv("STANDIN_MISBEHAVE", ",".join(modes))

    def entries(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_bytes().splitlines()]

    def raw_requests(self) -> list[bytes]:
        return [line for line in self.record.read_bytes().splitlines() if line.startswith(b'{"id"')] \
            if self.record.exists() else []

    def requests(self) -> list[dict[str, Any]]:
        return [e for e in self.entries() if "id" in e]

    def starts(self) -> list[dict[str, Any]]:
        return [e["start"] for e in self.entries() if "start" in e]

    def lab(self) -> dict[str, Any]:
        return LabStore(self.state).read()["hosts"][HOST]


@pytest.fixture
def standin(lab_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Standin]:
    record = tmp_path / "standin-record.jsonl"
    monkeypatch.setenv("STANDIN_STATE", str(lab_state))
    monkeypatch.setenv("STANDIN_HOST", HOST)
    monkeypatch.setenv("STANDIN_RECORD", str(record))
    monkeypatch.delenv("STANDIN_MISBEHAVE", raising=False)
    monkeypatch.delenv("STANDIN_MISSING_MODULES", raising=False)
    helper = Standin(lab_state, record, monkeypatch)
    yield helper
    for transport in helper.opened:
        transport.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; it is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


# --- round trips, reuse, close -------------------------------------------------------------------


def test_discovery_is_one_process_and_one_request_and_reads_what_the_lab_transport_reads(
        standin: Standin, lab_state: Path) -> None:
    target = TargetSpec("pool", "skype", {"transport": "pwsh"})
    transport = standin.transport(modules=["SkypeForBusiness"])
    assert standin.starts() == []  # started lazily, on the first invoke
    live = SkypeProvider().discover(target, transport)
    expected = SkypeProvider().discover(target, LabTransport(lab_state, HOST))
    assert live == expected and len(live.resources) == 3
    (start,) = standin.starts()
    assert start["modules"] == ["SkypeForBusiness"]
    assert start["argv"][-1] == str(RUNNER)
    (request,) = standin.requests()
    assert sorted(c["cmdlet"] for c in request["commands"]) == [
        "Get-CsOAuthConfiguration", "Get-CsOAuthServer", "Get-CsPartnerApplication"]
    assert request["stopOnError"] is True and request["id"] == 1
    assert any(c["select"] for c in request["commands"]) and all(c["parameters"] == {} for c in request["commands"])
    assert set(request["allow"]) == set(DECLARED)


def test_outputs_are_selected_objects_in_order(standin: Standin) -> None:
    results = standin.transport().invoke(DISCOVERY)
    assert [r.ok for r in results] == [True, True, True]
    assert results[0].output == ({"Identity": "Global", "ServiceName": "", "Realm": "litwareinc.com"},)
    assert results[1].output == ()
    assert [dict(o) for o in results[2].output] == [
        {"Identity": "app", "ApplicationTrustLevel": "User"},
        {"Identity": "microsoft.exchange", "ApplicationTrustLevel": "Application"}]


def test_the_process_is_reused_across_invokes_and_ended_by_close(standin: Standin) -> None:
    transport = standin.transport()
    transport.invoke(DISCOVERY[:1])
    transport.invoke(DISCOVERY[1:])
    (start,) = standin.starts()
    assert [r["id"] for r in standin.requests()] == [1, 2]
    assert standin.lab()["roundTrips"] == 2
    assert pid_alive(start["pid"])
    transport.close()
    assert not pid_alive(start["pid"])
    assert standin.entries()[-1] == {"eof": True}  # it saw its input close: a clean exit, not a kill
    transport.close()  # idempotent
    with pytest.raises(TransportError, match="closed"):
        transport.invoke(DISCOVERY)


def test_stop_on_error_stops_at_the_first_failure(standin: Standin) -> None:
    add_failure(standin.state, HOST, "Set-CsOAuthConfiguration", message="injected")
    commands = [Command("Remove-CsPartnerApplication", {"Identity": "app"}),
                Command("Set-CsOAuthConfiguration", {"ServiceName": "x"}),
                Command("Remove-CsPartnerApplication", {"Identity": "microsoft.exchange"})]
    results = standin.transport().invoke(commands)
    assert [r.ok for r in results] == [True, False]
    assert results[1].error == "Set-CsOAuthConfiguration : injected"
    assert [a["Identity"] for a in standin.lab()["objects"]["PartnerApplication"]] == ["microsoft.exchange"]


def test_without_stop_on_error_every_command_runs(standin: Standin) -> None:
    add_failure(standin.state, HOST, "Set-CsOAuthConfiguration", message="injected")
    commands = [Command("Set-CsOAuthConfiguration", {"ServiceName": "x"}),
                Command("Remove-CsPartnerApplication", {"Identity": "app"})]
    results = standin.transport().invoke(commands, stop_on_error=False)
    assert [r.ok for r in results] == [False, True]
    assert standin.requests()[0]["stopOnError"] is False


def test_switches_and_booleans_travel_as_json_true(standin: Standin) -> None:
    new = Command("New-CsPartnerApplication", {"Identity": "sw", "ApplicationIdentifier": "id",
                                               "ApplicationTrustLevel": "Full", "UseOAuthServer": True,
                                               "Enabled": False})
    (result,) = standin.transport().invoke([new])
    assert result.ok and result.output[0]["Enabled"] is False
    assert b'"UseOAuthServer":true' in standin.raw_requests()[0]
    assert b'"Enabled":false' in standin.raw_requests()[0]
    stored = next(a for a in standin.lab()["objects"]["PartnerApplication"] if a["Identity"] == "sw")
    assert stored["UseOAuthServer"] is True and stored["Enabled"] is False


# --- the allow-list -------------------------------------------------------------------------------


def test_a_cmdlet_off_the_allow_list_is_refused_before_anything_is_sent(standin: Standin) -> None:
    transport = standin.transport()
    (result,) = transport.invoke([Command("Stop-Computer", {"Force": True})])
    assert not result.ok and result.error is not None
    assert result.error.startswith("Stop-Computer : refused by the pwsh transport")
    assert standin.starts() == [] and standin.requests() == []  # no process, nothing sent


def test_a_refusal_mid_batch_stops_it_there_and_is_never_sent(standin: Standin) -> None:
    transport = standin.transport()
    results = transport.invoke([DISCOVERY[0], Command("Invoke-Expression", {"Command": "x"}), DISCOVERY[1]])
    assert [r.ok for r in results] == [True, False]
    assert results[1].error is not None and "Invoke-Expression" in results[1].error
    (request,) = standin.requests()
    assert [c["cmdlet"] for c in request["commands"]] == ["Get-CsOAuthConfiguration"]
    assert b"Invoke-Expression" not in standin.record.read_bytes()

    results = transport.invoke([Command("Remove-Item", {"Path": "C:\\"}), DISCOVERY[0]], stop_on_error=False)
    assert [r.ok for r in results] == [False, True]
    assert [c["cmdlet"] for c in standin.requests()[1]["commands"]] == ["Get-CsOAuthConfiguration"]


def test_allow_cmdlets_extends_the_list_and_names_match_case_insensitively(standin: Standin) -> None:
    transport = standin.transport(allowCmdlets=["Get-CsUser"])
    results = transport.invoke([Command("get-csoauthconfiguration"), Command("Get-CsUser")], stop_on_error=False)
    assert results[0].ok
    assert not results[1].ok and results[1].error is not None and "is not recognized" in results[1].error
    assert "Get-CsUser" in standin.requests()[0]["allow"]


def test_bad_parameter_names_and_unsendable_values_are_refused(standin: Standin) -> None:
    transport = standin.transport()
    (bad_name,) = transport.invoke([Command("Get-CsOAuthServer", {"Identity; Stop-Computer": "x"})])
    (bad_value,) = transport.invoke([Command("Set-CsOAuthConfiguration", {"Realm": object()},
                                             sensitive=frozenset({"Realm"}))])
    (twice,) = transport.invoke([Command("Get-CsOAuthServer", {"Identity": "a", "-identity": "b"})])
    assert not bad_name.ok and "not a parameter name" in (bad_name.error or "")
    assert not twice.ok and "given twice" in (twice.error or "")
    assert not bad_value.ok and "cannot be sent as JSON" in (bad_value.error or "")
    assert standin.requests() == []


def test_nothing_runs_until_the_provider_s_commands_are_named() -> None:
    assert DEFAULT_ALLOWED_CMDLETS == ()
    transport = PwshTransport("pwsh")
    assert transport.unsupported(Command("Get-CsPartnerApplication")) is not None


def test_the_declared_commands_are_the_oauth_cmdlets_and_nothing_dangerous() -> None:
    for noun in ("CsOAuthServer", "CsPartnerApplication", "PartnerApplication", "AuthServer"):
        for verb in ("Get", "Set", "New", "Remove"):
            assert f"{verb}-{noun}" in DECLARED
    for name in ("Get-CsOAuthConfiguration", "Set-CsOAuthConfiguration", "Test-CsExStorageConnectivity",
                 "Get-AuthConfig", "Set-AuthConfig", "Get-ManagementRoleAssignment", "New-ManagementRoleAssignment",
                 "Remove-ManagementRoleAssignment", "Get-LinkedUser", "iisreset"):
        assert name in DECLARED
    assert not {"Invoke-Expression", "Invoke-Command", "Remove-Item", "Start-Process"} & set(DECLARED)
    assert len({n.lower() for n in DECLARED}) == len(DECLARED)


# --- restrict_to: the allow-list from the commands the providers declare ---------------------------


def test_restrict_to_refuses_everything_else_with_nothing_sent(standin: Standin) -> None:
    transport = standin.transport()
    transport.restrict_to(["Get-CsOAuthConfiguration", "Set-CsOAuthConfiguration"])
    (refused,) = transport.invoke([Command("Get-CsOAuthServer")])
    assert not refused.ok and refused.error == (
        "Get-CsOAuthServer : refused by the pwsh transport: the cmdlet is not on its allow-list (add it to "
        "connection.allowCmdlets if it is safe to run); nothing was sent")
    (native,) = transport.invoke([Command("iisreset", native=True, arguments=("atl-exchange-001",))])
    assert not native.ok and "the executable is not on its allow-list" in (native.error or "")
    assert standin.starts() == [] and standin.requests() == []  # no process, nothing sent

    results = transport.invoke([Command("Get-CsOAuthConfiguration"), Command("Get-CsPartnerApplication")],
                               stop_on_error=False)
    assert [r.ok for r in results] == [True, False]
    (request,) = standin.requests()
    assert request["allow"] == ["Get-CsOAuthConfiguration", "Set-CsOAuthConfiguration"]
    assert [c["cmdlet"] for c in request["commands"]] == ["Get-CsOAuthConfiguration"]


def test_restrict_to_is_case_insensitive_keeps_allow_cmdlets_and_replaces_the_default(standin: Standin) -> None:
    transport = standin.transport(allowCmdlets=["echoargs", "Get-CsUser"])
    transport.restrict_to(["get-csoauthconfiguration", "GET-CSOAUTHCONFIGURATION", "IISRESET"])
    assert transport.allowed == ("get-csoauthconfiguration", "IISRESET", "echoargs", "Get-CsUser")
    results = transport.invoke([Command("Get-CsOAuthConfiguration"),
                                Command("iisreset", native=True),
                                Command("echoargs", native=True, arguments=("x",))])
    assert [r.ok for r in results] == [True, True, True]
    assert transport.unsupported(Command("Get-CsOAuthServer")) == (
        "the pwsh transport (pwsh (pool)) cannot run Get-CsOAuthServer: the cmdlet is not on its allow-list "
        "(add it to connection.allowCmdlets if it is safe to run)")
    assert transport.unsupported(Command("GET-CSOAUTHCONFIGURATION")) is None
    transport.restrict_to([])  # nothing declared: only allowCmdlets
    assert list(transport.allowed) == ["echoargs", "Get-CsUser"]
    assert transport.unsupported(Command("Get-CsOAuthConfiguration")) is not None


def test_restrict_to_refuses_what_is_not_a_command_name(standin: Standin) -> None:
    transport = standin.transport()
    for bad in (["Get-X; Stop-Computer"], ["C:\\Windows\\iisreset.exe"], ["-Force"], [""], [3]):
        with pytest.raises(ValueError, match="not command names"):
            transport.restrict_to(bad)  # type: ignore[arg-type]
    assert set(transport.allowed) == set(DECLARED)  # unchanged


def test_unsupported_says_why_without_sending_anything(standin: Standin) -> None:
    transport = standin.transport()
    assert transport.unsupported(DISCOVERY[0]) is None
    assert transport.unsupported(Command("iisreset", native=True, arguments=("atl-exchange-001",))) is None
    assert "not on its allow-list" in (transport.unsupported(Command("Stop-Computer")) or "")
    assert "not on its allow-list" in (transport.unsupported(Command("cmd", native=True)) or "")
    assert "positional arguments only" in (
        transport.unsupported(Command("iisreset", {"Server": "x"}, native=True)) or "")
    assert "given twice" in (transport.unsupported(Command("Get-CsOAuthServer", {"Identity": 1, "identity": 2})) or "")
    assert standin.starts() == []


# --- native commands (executables) -------------------------------------------------------------------


def test_a_native_command_runs_with_its_arguments_and_returns_its_lines(standin: Standin) -> None:
    iisreset = Command("iisreset", native=True, arguments=("atl-exchange-001",))
    (result,) = standin.transport().invoke([iisreset])
    assert result.ok, result.error
    assert [o["Line"] for o in result.output if o["Line"]] == [
        "Attempting stop...", "Internet services successfully stopped", "Attempting start...",
        "Internet services successfully restarted"]
    assert {o["Stream"] for o in result.output} == {"Output"}
    (request,) = standin.requests()
    assert request["commands"] == [{"native": True, "executable": "iisreset", "arguments": ["atl-exchange-001"]}]
    assert b'"native":true,"executable":"iisreset","arguments":["atl-exchange-001"]' in standin.raw_requests()[0]
    assert standin.lab()["nativeRuns"] == [{"executable": "iisreset", "arguments": ["atl-exchange-001"]}]


def test_native_arguments_arrive_one_by_one_as_literal_strings(standin: Standin) -> None:
    transport = standin.transport(allowCmdlets=["echoargs"])
    (result,) = transport.invoke([Command("echoargs", native=True, arguments=tuple(PAYLOADS))])
    assert result.ok, result.error
    assert [o["Line"] for o in result.output] == PAYLOADS  # each payload exactly one argument, unchanged
    raw = standin.raw_requests()[0]
    assert raw.isascii() and len(standin.raw_requests()) == 1  # one request line whatever the values hold
    assert json.loads(raw)["commands"][0]["arguments"] == PAYLOADS
    assert standin.lab()["nativeRuns"][0]["arguments"] == PAYLOADS


def test_a_non_zero_exit_code_fails_the_command_and_stops_the_batch(standin: Standin) -> None:
    standin.misbehave("nativefail")
    batch = [Command("iisreset", native=True, arguments=("atl-exchange-001",)), DISCOVERY[0]]
    results = standin.transport().invoke(batch)
    assert [r.ok for r in results] == [False]
    assert results[0].error is not None
    assert results[0].error.startswith("iisreset : exited with code 1: Access denied, you must be an administrator")


def test_a_native_command_mixes_with_cmdlets_in_one_request(standin: Standin) -> None:
    batch = [Command("Set-CsOAuthConfiguration", {"ServiceName": "x"}),
             Command("iisreset", native=True, arguments=("atl-exchange-001", "/noforce")), DISCOVERY[0]]
    results = standin.transport().invoke(batch)
    assert [r.ok for r in results] == [True, True, True]
    (request,) = standin.requests()
    assert [sorted(c) for c in request["commands"]] == [
        ["cmdlet", "parameters", "select"], ["arguments", "executable", "native"], ["cmdlet", "parameters", "select"]]


@pytest.mark.parametrize("command,expected", [
    (Command("cmd", native=True, arguments=("/c", "calc")), "the executable is not on its allow-list"),
    (Command("C:\\Windows\\System32\\iisreset.exe", native=True), "the executable is not on its allow-list"),
    (Command("..\\iisreset", native=True), "the executable is not on its allow-list"),
    (Command("iisreset", {"Server": "atl-exchange-001"}, native=True), "positional arguments only"),
    (Command("iisreset", native=True, select=("Line",)), "positional arguments only"),
    (Command("iisreset", native=True, arguments=(3,)), "must be a string"),  # type: ignore[arg-type]
    (Command("iisreset", {"Server": "atl-exchange-001"}), "the cmdlet is not on its allow-list"),  # not native
], ids=["off-list", "path", "relative", "parameters", "select", "non-string", "as-a-cmdlet"])
def test_bad_native_commands_are_refused_before_anything_is_sent(standin: Standin, command: Command,
                                                                 expected: str) -> None:
    (result,) = standin.transport().invoke([command])
    assert not result.ok and expected in (result.error or ""), result.error
    assert (result.error or "").endswith("; nothing was sent")
    assert standin.starts() == []


def test_the_protocol_form_and_the_message_form_of_a_native_command() -> None:
    command = Command("iisreset", native=True, arguments=("atl-exchange-001", "a b", 'q"uote'))
    assert psjson.protocol_command(command) == {"native": True, "executable": "iisreset",
                                                "arguments": ["atl-exchange-001", "a b", 'q"uote']}
    assert psjson.render_command(command) == 'iisreset "atl-exchange-001" "a b" "q\\"uote"'
    assert psjson.protocol_command(Command("Get-CsOAuthServer", {"-Identity": "x"}, select=("Identity",))) == {
        "cmdlet": "Get-CsOAuthServer", "parameters": {"Identity": "x"}, "select": ["Identity"]}


# --- PowerShell's JSON quirks -----------------------------------------------------------------------


def test_a_lone_object_not_in_an_array_and_null_output_become_lists(standin: Standin) -> None:
    standin.misbehave("unwrapped")
    results = standin.transport().invoke(DISCOVERY)
    assert results[0].output == ({"Identity": "Global", "ServiceName": "", "Realm": "litwareinc.com"},)
    assert results[1].output == ()
    assert len(results[2].output) == 2  # two objects were an array all along


def test_count_wrapped_arrays_are_unwrapped(standin: Standin) -> None:
    standin.misbehave("countwrapped")
    results = standin.transport().invoke(DISCOVERY)
    assert [len(r.output) for r in results] == [1, 0, 2]


def test_microsoft_json_dates_become_iso_8601_and_enum_numbers_pass_through(standin: Standin) -> None:
    standin.misbehave("dates", "enums")
    results = standin.transport().invoke(DISCOVERY[2:])
    app = results[0].output[0]
    assert app["WhenCreated"] == "2023-11-14T22:13:20Z" and app["WhenChanged"] == "2023-11-14T22:13:20Z"
    # The runner turns enums into their names ($v -is [enum]); a number that arrives anyway cannot be
    # named here (no type information travels), so it is passed on unchanged rather than guessed.
    assert app["ApplicationTrustLevel"] == 2


def test_output_that_is_not_objects_is_an_error_result(standin: Standin) -> None:
    standin.misbehave("nonobject")
    results = standin.transport().invoke(DISCOVERY[:1])
    assert not results[0].ok
    assert results[0].error == ("Get-CsOAuthConfiguration : returned unusable output: "
                                "output item 0 is str, not an object")


def test_a_command_declared_scalar_keeps_each_value_as_an_object(standin: Standin) -> None:
    """Get-SPAuthenticationRealm writes a bare string: its Command says so, and the string is kept, not refused."""
    standin.misbehave("nonobject")
    (result,) = standin.transport().invoke((dataclasses.replace(DISCOVERY[0], scalar=True, select=()),))
    assert result.ok, result.error
    assert all(set(item) == {"Value"} and isinstance(item["Value"], str) for item in result.output)
    assert psjson.output_objects(["litwareinc.com"], scalar=True) == ({"Value": "litwareinc.com"},)
    assert psjson.output_objects("litwareinc.com", scalar=True) == ({"Value": "litwareinc.com"},)


@pytest.mark.parametrize("text,expected", [
    ("/Date(1700000000000)/", "2023-11-14T22:13:20Z"),
    ("\\/Date(1700000000000)\\/", "2023-11-14T22:13:20Z"),
    ("/Date(1700000000000+0100)/", "2023-11-14T22:13:20Z"),
    ("/Date(1700000000123-0500)/", "2023-11-14T22:13:20.123Z"),
    ("/Date(-62135596800000)/", "0001-01-01T00:00:00Z"),
    ("/Date(x)/", None), ("Date(1)", None), ("prefix /Date(1)/", None),
])
def test_iso_date(text: str, expected: str | None) -> None:
    assert psjson.iso_date(text) == expected


def test_normalize_is_recursive_and_keeps_property_names() -> None:
    raw = {"WhenCreated": "/Date(0)/", "Nested": {"value": [{"D": "/Date(0)/"}], "Count": 1},
           "notAWrapper": {"value": [1], "Count": 5}, "lowerCASE": [1, "x"]}
    assert psjson.normalize(raw) == {"WhenCreated": "1970-01-01T00:00:00Z", "Nested": [{"D": "1970-01-01T00:00:00Z"}],
                                     "notAWrapper": {"value": [1], "Count": 5}, "lowerCASE": [1, "x"]}
    assert psjson.as_list(None) == [] and psjson.as_list({"a": 1}) == [{"a": 1}]
    with pytest.raises(OutputShapeError, match="item 1 is int"):
        psjson.output_objects([{"a": 1}, 3])


def test_render_failure_masks_sensitive_values() -> None:
    command = Command("New-CsPartnerApplication",
                      {"Identity": "a\nb", "CertificateRawData": SECRET, "UseOAuthServer": True},
                      sensitive=frozenset({"CertificateRawData"}))
    text = psjson.render_failure(command, f"bad certificate '{SECRET}'")
    assert SECRET not in text
    assert text == (f'New-CsPartnerApplication -Identity "a\\nb" -CertificateRawData "{MASK}" -UseOAuthServer: '
                    f"bad certificate '{MASK}'")


# --- failures: each one a TransportError that says what happened ----------------------------------------


def test_a_missing_executable_says_how_to_fix_it(standin: Standin) -> None:
    transport = standin.transport(executable="no-such-pwsh-anywhere")
    with pytest.raises(TransportError, match=r"'no-such-pwsh-anywhere' was not found\. Install PowerShell 7"):
        transport.invoke(DISCOVERY)


def test_a_module_that_cannot_be_imported_fails_the_start(standin: Standin) -> None:
    standin.monkeypatch.setenv("STANDIN_MISSING_MODULES", "SkypeForBusiness")
    transport = standin.transport(modules=["SkypeForBusiness"])
    with pytest.raises(TransportError, match=r"could not import the modules \['SkypeForBusiness'\]: "
                                             r"Import-Module : The specified module 'SkypeForBusiness' was not loaded"):
        transport.invoke(DISCOVERY)
    assert standin.requests() == []


def test_output_before_the_ready_line_fails_the_start(standin: Standin) -> None:
    standin.misbehave("banner")
    with pytest.raises(TransportError, match=r"not a JSON line to its output: 'PowerShell 7\.4\.0'"):
        standin.transport().invoke(DISCOVERY)


def test_a_start_that_never_gets_ready_times_out(standin: Standin, monkeypatch: pytest.MonkeyPatch) -> None:
    # Deterministic on a busy machine: the transport waits for the ready line only once the stand-in has
    # recorded its start (it then never answers), so the 0.5s deadline always passes with PowerShell
    # running and waiting, however long the interpreter took to start.
    standin.misbehave("slowstart")
    real_receive = pwsh._Process.receive

    def receive_once_running(process: Any, deadline: float, *, starting: bool = False) -> bytes:
        if starting:
            waited_until = time.monotonic() + 120
            while not standin.starts() and time.monotonic() < waited_until:
                time.sleep(0.02)
            assert standin.starts(), "the stand-in never started"
        return real_receive(process, deadline, starting=starting)

    monkeypatch.setattr(pwsh._Process, "receive", receive_once_running)
    with pytest.raises(TransportError, match=r"did not start within 0\.5s"):
        standin.transport(timeoutSeconds=0.5).invoke(DISCOVERY)
    assert not pid_alive(standin.starts()[0]["pid"])


def sensitive_set() -> Command:
    return Command("Set-CsOAuthConfiguration", {"Realm": SECRET, "ServiceName": "visible-name"},
                   sensitive=frozenset({"Realm"}))


def test_an_exit_mid_request_reports_its_stderr_without_secrets(standin: Standin) -> None:
    standin.misbehave("exit")
    with pytest.raises(TransportError) as caught:
        standin.transport().invoke([sensitive_set()])
    message = str(caught.value)
    assert "PowerShell exited with code 3 before it answered" in message
    assert "standin: something went badly wrong" in message
    assert "visible-name" in message and MASK in message  # the echoed request, masked
    assert SECRET not in message


def test_closing_stdout_mid_request_is_reported_and_the_process_killed(standin: Standin) -> None:
    standin.misbehave("closestdout")
    with pytest.raises(TransportError, match="PowerShell closed its output before it answered"):
        standin.transport().invoke(DISCOVERY)
    assert not pid_alive(standin.starts()[0]["pid"])


def test_a_hang_times_out_kills_the_process_and_says_to_re_plan(standin: Standin) -> None:
    standin.misbehave("hang")
    transport = standin.transport(timeoutSeconds=1)
    began = time.monotonic()
    with pytest.raises(TransportError) as caught:
        transport.invoke([sensitive_set()])
    assert time.monotonic() - began < 10
    assert ("the batch timed out after 1s; the batch may have partly run: re-plan before retrying"
            in str(caught.value))
    assert SECRET not in str(caught.value)
    assert not pid_alive(standin.starts()[0]["pid"])


def test_garbage_on_stdout_is_a_protocol_error_without_secrets(standin: Standin) -> None:
    standin.misbehave("garbage")
    with pytest.raises(TransportError) as caught:
        standin.transport().invoke([sensitive_set()])
    message = str(caught.value)
    assert "not a JSON line to its output: 'garbage: " in message
    assert SECRET not in message and MASK in message


def test_an_answer_to_another_request_is_a_protocol_error(standin: Standin) -> None:
    standin.misbehave("wrongid")
    with pytest.raises(TransportError, match=r"answered 1001 to request 1: the runner is out of step"):
        standin.transport().invoke(DISCOVERY)


def test_a_request_the_runner_could_not_read_is_reported(standin: Standin) -> None:
    standin.misbehave("runnererror")
    with pytest.raises(TransportError, match="could not run request 1: runner : Conversion from JSON failed"):
        standin.transport().invoke(DISCOVERY)


def test_after_a_broken_conversation_the_next_invoke_starts_a_new_process(standin: Standin) -> None:
    standin.misbehave("wrongid@2")
    transport = standin.transport()
    transport.invoke(DISCOVERY)
    with pytest.raises(TransportError):
        transport.invoke(DISCOVERY)
    first = standin.starts()[0]["pid"]
    assert not pid_alive(first)
    assert all(r.ok for r in transport.invoke(DISCOVERY))
    pids = [s["pid"] for s in standin.starts()]
    assert len(pids) == 2 and pids[0] == first and pids[1] != first


def test_cmdlet_errors_are_masked_too(standin: Standin) -> None:
    bad = Command("Set-CsPartnerApplication", {"Identity": "app", "ApplicationTrustLevel": SECRET},
                  sensitive=frozenset({"ApplicationTrustLevel"}))
    (result,) = standin.transport().invoke([bad])
    assert not result.ok and result.error is not None
    assert "Cannot convert value" in result.error and SECRET not in result.error and MASK in result.error


# --- injection corpus ---------------------------------------------------------------------------------

PAYLOADS = [
    "'", '"', "$(Remove-Item C:\\)", "; Stop-Computer", "`whoami`", "a`nb", "line1\nline2", "cr\r\nlf",
    "@{a=1}", "$env:PATH", "| Out-File x", "& calc.exe", "Ünïcødé ☃ 𝄞 \u202e", "\\", '"}]}\n{"id":99}',
    "$null", "${function:Stop-Computer}", "-Force", "x' ; Stop-Computer ; '", "\u2028\u0000\t",
]


def test_injection_payloads_arrive_and_land_as_literal_strings(standin: Standin) -> None:
    new = [Command("New-CsPartnerApplication", {"Identity": f"p{i}{p}", "ApplicationIdentifier": p, "Realm": p,
                                                "ApplicationTrustLevel": "Full", "UseOAuthServer": True})
           for i, p in enumerate(PAYLOADS)]
    config_fields = ("ServiceName", "Realm", "ExchangeAutodiscoverUrl", "ExchangeAutodiscoverAllowedDomains",
                     "ClientAuthorizationOAuthServerIdentity")
    transport = standin.transport()
    for i, payload in enumerate(PAYLOADS):
        config = Command("Set-CsOAuthConfiguration", {"Identity": "Global", **dict.fromkeys(config_fields, payload)})
        batch = [new[i], config]
        results = transport.invoke(batch)
        assert [r.ok for r in results] == [True, True], (payload, results)
        raw = standin.raw_requests()[-1]
        assert raw.isascii() and raw.count(b"\n") == 0  # one line whatever the value holds
        sent = json.loads(raw)["commands"]
        assert sent[0]["parameters"] == {"Identity": f"p{i}{payload}", "ApplicationIdentifier": payload,
                                         "Realm": payload, "ApplicationTrustLevel": "Full", "UseOAuthServer": True}
        assert sent[1]["parameters"] == {"Identity": "Global", **dict.fromkeys(config_fields, payload)}
        assert json.dumps(payload).encode() in raw  # byte for byte, as a JSON string literal
        lab = standin.lab()["objects"]
        assert lab["OAuthConfiguration"] == {"Identity": "Global", **dict.fromkeys(config_fields, payload)}
        app = next(a for a in lab["PartnerApplication"] if a["Identity"] == f"p{i}{payload}")
        assert app["ApplicationIdentifier"] == payload and app["Realm"] == payload
    (read,) = transport.invoke([Command("Get-CsPartnerApplication")])
    assert {o["Identity"] for o in read.output} >= {f"p{i}{p}" for i, p in enumerate(PAYLOADS)}
    assert len(standin.starts()) == 1


# --- the runner script, statically ----------------------------------------------------------------------


def test_runner_never_turns_text_into_code_and_splats() -> None:
    text = RUNNER.read_text(encoding="utf-8")
    for forbidden in ("Invoke-Expression", "ScriptBlock]::Create", "Add-Type", "NewScriptBlock", "Invoke-Command",
                      "Start-Process", ".InvokeScript", "[scriptblock]"):
        assert forbidden.lower() not in text.lower(), forbidden
    assert not re.search(r"\biex\b", text, re.IGNORECASE)
    assert "& $target @params -ErrorAction Stop" in text  # splatting, nothing else
    assert "& $executable @arguments 2>&1" in text  # array splatting: each argument one argument
    assert "-CommandType Application" in text  # a native name finds an executable, never a function or alias
    assert "$name -cmatch $nativeNamePattern" in text
    assert text.count("$Allow -contains $name") == 2  # the runner checks the allow-list again, for both kinds
    assert "ConvertTo-Json -InputObject $Value -Compress -Depth 6" in text
    assert "$Value -is [enum]" in text and "ToString('o'" in text
    # Nothing but protocol lines on stdout: the cmdlet's other streams are captured.
    assert "*>&1" in text and "[Console]::SetOut(" in text


def test_runner_is_shipped_as_package_data() -> None:
    from importlib import resources

    assert resources.files("reconciler.transports").joinpath("runner.ps1").is_file()
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert 'reconciler = ["transports/*.ps1", "py.typed"]' in pyproject


# --- configuration -----------------------------------------------------------------------------------------


def test_the_entry_point_registers_pwsh() -> None:
    assert Registry.from_entry_points().transports["pwsh"] is PwshTransport


@pytest.mark.parametrize("connection,ok", [
    ({}, True),
    ({"executable": "powershell.exe", "modules": ["SkypeForBusiness"], "timeoutSeconds": 60}, True),
    ({"executable": ["/usr/bin/pwsh", "-NoLogo"], "allowCmdlets": ["Get-CsUser"]}, True),
    ({"allowCmdlets": ["iisreset", "appcmd.exe"]}, True), ({"allowCmdlets": ["..\\cmd"]}, False),
    ({"executable": []}, False), ({"executable": ""}, False), ({"timeoutSeconds": 0}, False),
    ({"modules": "SkypeForBusiness"}, False), ({"allowCmdlets": ["Get-X; rm"]}, False), ({"host": "x"}, False),
])
def test_connection_schema_and_from_target_agree(connection: dict[str, Any], ok: bool) -> None:
    schema_ok = Draft202012Validator(dict(PwshTransport.connection_schema)).is_valid(connection)
    assert schema_ok == ok
    target = TargetSpec("pool", "skype", {"transport": "pwsh", **connection})
    if ok:
        transport = PwshTransport.from_target(target)
        transport.close()
    else:
        with pytest.raises(TransportError, match="target 'pool'"):
            PwshTransport.from_target(target)


# --- end to end: plan and apply through the stand-in ---------------------------------------------------------


def test_apply_through_pwsh_converges_with_one_process_per_run(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> None:
    record = estate.root / "record.jsonl"
    monkeypatch.setenv("STANDIN_STATE", str(estate.state))
    monkeypatch.setenv("STANDIN_HOST", HOST)
    monkeypatch.setenv("STANDIN_RECORD", str(record))
    monkeypatch.delenv("STANDIN_MISBEHAVE", raising=False)
    connection = ("      transport: pwsh\n"
                  f"      executable: {json.dumps([sys.executable, str(STANDIN)])}\n"
                  "      modules: [SkypeForBusiness]\n"
                  "      timeoutSeconds: 60\n")
    text = ON_PREMISES.read_text(encoding="utf-8").replace("      transport: lab\n      host: atl-cs-001\n", connection)
    manifest = estate.write("pwsh.yaml", text)

    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out + run.err
    assert "converged" in run.out
    entries = [json.loads(line) for line in record.read_bytes().splitlines()]
    assert [next(iter(e)) for e in entries] == ["start", "id", "id", "id", "eof"]  # discover, apply, re-read
    assert estate.app(HOST, "app") is None
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0


def test_the_registry_allows_exactly_what_the_providers_kinds_declare() -> None:
    """The allow-list is built from the installed providers' declared syntax: every cmdlet a provider can emit,
    discovery's included, and nothing else (a hand-kept list once refused Exchange's own Get-LinkedUser)."""
    from reconciler.model import TargetSpec
    from reconciler.providers.base import Registry, command_names

    registry = Registry.from_entry_points()
    for provider in ("skype", "exchange", "sharepoint"):
        transport = registry.open_transport(TargetSpec("t", provider, {"transport": "pwsh"}))
        declared = command_names(registry.provider(provider))
        assert declared and set(transport.allowed) == set(declared)  # type: ignore[attr-defined]
        for name in declared:
            assert transport.unsupported(Command(name, native=name == "iisreset")) is None  # type: ignore[attr-defined]
        assert transport.unsupported(Command("Remove-Mailbox")) is not None  # type: ignore[attr-defined]
    sharepoint = registry.open_transport(TargetSpec("t", "sharepoint", {"transport": "pwsh"}))
    assert sharepoint.unsupported(piped_grant()) is None  # type: ignore[attr-defined]


# --- a piped command (Get-SPAppPrincipal | Set-SPAppPrincipalPermission) -------------------------------------------

SP_HOST = "atl-sharepoint-001"
SP_SITE = "https://atl-sharepoint-001.litwareinc.com"
EXCHANGE_NAME_ID = "00000002-0000-0ff1-ce00-000000000000@litwareinc.com"


def sharepoint_farm(standin: Standin, issuers: int = 1) -> None:
    """The stand-in plays the SharePoint farm, which trusts `issuers` issuers named for Exchange's NameId."""
    from reconciler.lab import sharepoint as lab

    standin.monkeypatch.setenv("STANDIN_HOST", SP_HOST)
    with LabStore(standin.state).edit() as state:
        state["hosts"][SP_HOST]["objects"]["TrustedSecurityTokenIssuer"] = [
            lab.normalize("TrustedSecurityTokenIssuer", {"Identity": f"Exchange{i}",
                                                         "RegisteredIssuerName": EXCHANGE_NAME_ID})
            for i in range(issuers)]


def piped_grant(source: Command | None = None) -> Command:
    from reconciler.commands import Pipe

    source = source or Command("Get-SPAppPrincipal", {"NameIdentifier": EXCHANGE_NAME_ID, "Site": SP_SITE})
    return Command("Set-SPAppPrincipalPermission", {"Site": SP_SITE, "Right": "FullControl",
                                                    "Scope": "SiteSubscription", "EnableAppOnlyPolicy": True},
                   switches=frozenset({"EnableAppOnlyPolicy"}), pipe=Pipe(source, "AppPrincipal"))


def test_a_piped_command_travels_as_data_and_the_runner_binds_the_source_s_one_object(standin: Standin) -> None:
    sharepoint_farm(standin)
    (result,) = standin.transport().invoke([piped_grant()])
    assert result.ok, result.error
    (request,) = standin.requests()
    assert request["commands"] == [{
        "cmdlet": "Set-SPAppPrincipalPermission",
        "parameters": {"Site": SP_SITE, "Right": "FullControl", "Scope": "SiteSubscription",
                       "EnableAppOnlyPolicy": True},
        "select": [],
        "pipe": {"source": {"cmdlet": "Get-SPAppPrincipal",
                            "parameters": {"NameIdentifier": EXCHANGE_NAME_ID, "Site": SP_SITE}, "select": []},
                 "parameter": "AppPrincipal"}}]
    assert {"Get-SPAppPrincipal", "Set-SPAppPrincipalPermission"} <= set(request["allow"])  # the provider declares both
    farm = LabStore(standin.state).read()["hosts"][SP_HOST]
    (granted,) = farm["objects"]["AppPrincipalPermission"]
    assert (granted["NameIdentifier"], granted["Right"], granted["Scope"], granted["AppOnlyPolicy"]) == (
        EXCHANGE_NAME_ID, "FullControl", "SiteSubscription", True)


@pytest.mark.parametrize("issuers", [0, 2])
def test_a_source_writing_other_than_one_object_fails_the_command_unrun(standin: Standin, issuers: int) -> None:
    sharepoint_farm(standin, issuers)
    transport = standin.transport()
    (result,) = transport.invoke([piped_grant(Command("Get-SPTrustedSecurityTokenIssuer"))])
    assert not result.ok
    assert result.error == (f"Set-SPAppPrincipalPermission : not run: Get-SPTrustedSecurityTokenIssuer wrote "
                            f"{issuers} objects for -AppPrincipal, exactly one is needed")
    assert LabStore(standin.state).read()["hosts"][SP_HOST]["objects"]["AppPrincipalPermission"] == []


def test_a_pipe_whose_source_is_off_the_allow_list_is_refused_before_anything_is_sent(standin: Standin) -> None:
    sharepoint_farm(standin)
    transport = standin.transport()
    (result,) = transport.invoke([piped_grant(Command("Get-Process"))])
    assert not result.ok and result.error is not None
    assert result.error.startswith("Set-SPAppPrincipalPermission : refused by the pwsh transport: its pipe's source "
                                   "Get-Process: the cmdlet is not on its allow-list")
    assert standin.requests() == []
    assert transport.unsupported(piped_grant()) is None


# --- round trips in flight together (reconciler.commands.Overlapping) ----------------------------


def _requests_arrive(standin: Standin, count: int) -> None:
    waited_until = time.monotonic() + 120
    while len(standin.requests()) < count and time.monotonic() < waited_until:
        time.sleep(0.02)
    assert len(standin.requests()) == count


def test_begin_sends_the_request_and_returns_without_waiting_for_the_answer(standin: Standin) -> None:
    """The request is written to the process started for it; an answer that never comes does not hold begin up
    (it would wait out the 30s timeout and fail if it read the answer)."""
    standin.misbehave("hang")
    transport = standin.transport(timeoutSeconds=30)
    assert isinstance(transport, Overlapping)
    transport.begin(DISCOVERY)
    _requests_arrive(standin, 1)
    (start,) = standin.starts()
    transport.close()
    assert not pid_alive(start["pid"])


def test_answers_read_after_both_were_sent_are_what_invoke_reads(standin: Standin) -> None:
    one, two = standin.transport(), standin.transport()
    first, second = one.begin(DISCOVERY), two.begin(DISCOVERY)
    answered = second.result()
    assert answered == first.result() == one.invoke(DISCOVERY)  # one's process is reused: its request 2
    assert sorted(r["id"] for r in standin.requests()) == [1, 1, 2] and len(standin.starts()) == 2
    assert all(r.ok for r in answered) and [r.command for r in answered] == list(DISCOVERY)


def test_a_begun_start_that_cannot_import_its_modules_says_so_with_the_answer(standin: Standin) -> None:
    standin.monkeypatch.setenv("STANDIN_MISSING_MODULES", "SkypeForBusiness")
    transport = standin.transport(modules=["SkypeForBusiness"])
    pending = transport.begin(DISCOVERY)
    with pytest.raises(TransportError, match=r"could not import the modules \['SkypeForBusiness'\]"):
        pending.result()
    assert standin.requests() == []
    standin.monkeypatch.delenv("STANDIN_MISSING_MODULES")
    assert all(r.ok for r in transport.invoke(DISCOVERY))  # a new process for the next round trip


def test_a_begun_batch_with_a_refused_command_is_answered_at_once_with_nothing_sent(standin: Standin) -> None:
    (result,) = standin.transport().begin([Command("Stop-Computer", {"Force": True})]).result()
    assert not result.ok and result.error is not None and "refused by the pwsh transport" in result.error
    assert standin.starts() == [] and standin.requests() == []
