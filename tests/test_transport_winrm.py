"""The WinRM transport, tested at its boundary: no Windows server is reachable from here.

What is real and what is not:

* pipelines are pypsrp's own `PowerShell` objects, built on pypsrp's own (unopened) `RunspacePool`;
* the wire payload is produced by pypsrp's own fragmenter and serializer, exactly as it would be
  sent, and read back here as CLIXML;
* `FakeEndpoint` replaces only pypsrp's WinRS shell (the object that turns PSRP fragments into
  WS-Management requests): everything above it - RunspacePool negotiation, PowerShell begin/end
  invoke, message parsing, pypsrp's deserializer turning CLIXML into `GenericComplexObject`s - is
  pypsrp's real code. The CLIXML the fake answers with is hand-written to look like what
  PowerShell sends; it was not captured from a Skype for Business or Exchange server.
* connection, TLS and authentication failures go through the real pypsrp/requests stack against
  a closed local port and a local HTTPS stub that answers 401 (not a WinRM server).
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import ipaddress
import os
import pickle
import socket
import ssl
import struct
import subprocess
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jsonschema import Draft202012Validator
from pypsrp.complex_objects import GenericComplexObject, PSThreadOptions
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.messages import Destination, ErrorRecordMessage, MessageType
from pypsrp.powershell import Fragment, PowerShell, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import NAMESPACES

from reconciler.errors import TransportError
from reconciler.model import TargetSpec
from reconciler.providers.base import Registry, command_names
from reconciler.transports.base import MASK, Command, Sensitive
from reconciler.transports.winrm import (
    DEFAULT_NATIVE_CONFIGURATION,
    DEFAULT_PASSWORD_ENV,
    DEFAULT_USERNAME_ENV,
    INSTALL_HINT,
    WinRMSettings,
    WinRMTransport,
    build_native_pipeline,
    build_pipeline,
    describe_failure,
    error_text,
    output_object,
    pypsrp_pool,
    read_credential_file,
    settings_from_connection,
)

PASSWORD = "Pa55w0rd!-never-shown"
USER = "LITWARE\\svc-reconcile"
SERVER = "fe01.litwareinc.com"
EMPTY_ID = "00000000-0000-0000-0000-000000000000"
RSP = NAMESPACES["rsp"]

INJECTION_CORPUS = [
    "'",
    '"',
    "''; Remove-Item C:\\ -Recurse",
    "$(Remove-Item C:\\)",
    "; Stop-Computer -Force",
    "`; Stop-Computer",
    "back`tick`n",
    "line1\nline2\r\n",
    "@{a=1}",
    "$env:PATH",
    "a | Out-File x",
    "a & calc.exe",
    "</S><S N=\"Cmd\">Stop-Computer</S>",
    "_x000A_ literal escape",
    "Ünïcødé ✓ \U0001d518 — 中文",  # includes a character outside the BMP
    "\x00\x07 control",
]


def settings(**overrides: Any) -> WinRMSettings:
    values: dict[str, Any] = {"server": SERVER, "username": USER, "password": Sensitive(PASSWORD)}
    values.update(overrides)
    return WinRMSettings(**values)


# ---------------------------------------------------------------------------------------------
# The fake WinRS shell under pypsrp's real RunspacePool


@dataclass
class WireCommand:
    """One command of a pipeline as it travels: name, IsScript flag, parameters (named) and arguments
    (positional) as the server reads them."""

    cmdlet: str
    is_script: bool
    parameters: dict[str, Any]
    raw: str
    arguments: list[Any] = field(default_factory=list)


@dataclass
class Invocation:
    pipeline_id: str
    xml: str
    statements: list[list[WireCommand]]

    @property
    def commands(self) -> list[WireCommand]:
        """The commands of a one-statement pipeline (every test of cmdlets sends exactly one)."""
        assert len(self.statements) == 1, "one statement only"
        return self.statements[0]

    @property
    def cmdlet(self) -> str:
        """The command a pipeline is about: its first one; for a native command, the executable."""
        if len(self.statements) == 3 and self.statements[0][0].cmdlet == "Remove-Variable":
            return self.statements[1][0].cmdlet
        return self.statements[0][0].cmdlet


@dataclass
class Reply:
    """What the fake server answers: output objects, error records, a terminating error (all CLIXML)."""

    output: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failure: str | None = None


def parse_create_pipeline(xml: str) -> list[list[WireCommand]]:
    """Read a CREATE_PIPELINE message's statements (each a list of commands), deserializing each value
    with pypsrp's Serializer. One statement travels in Cmds; several in ExtraCmds (Cmds repeats the first)."""
    root = ET.fromstring(xml)
    serializer = Serializer()
    for tn in root.iter("TN"):  # type names are declared once per message and referenced after
        serializer.tn[tn.attrib["RefId"]] = [t.text for t in tn]
    shell = root.find("MS/Obj[@N='PowerShell']/MS")
    assert shell is not None
    first = shell.find("Obj[@N='Cmds']/LST")
    assert first is not None
    if shell.find("Nil[@N='ExtraCmds']") is not None:
        lists = [first]
    else:
        lists = [s for s in shell.findall("Obj[@N='ExtraCmds']/LST/Obj/MS/Obj[@N='Cmds']/LST")]
        assert len(lists) > 1, "ExtraCmds carries two statements or more"
    statements = []
    for statement in lists:
        commands = []
        for obj in statement:
            cmd = obj.find("MS/S[@N='Cmd']")
            is_script = obj.find("MS/B[@N='IsScript']")
            assert cmd is not None and is_script is not None
            parameters: dict[str, Any] = {}
            arguments: list[Any] = []
            for arg in obj.findall("MS/Obj[@N='Args']/LST/Obj"):
                name = arg.find("MS/S[@N='N']")
                value = arg.find("MS/*[@N='V']")
                assert value is not None
                if name is None:
                    assert arg.find("MS/Nil[@N='N']") is not None, "an argument is named or positional"
                    arguments.append(serializer.deserialize(value, clear=False))
                else:
                    parameters[str(name.text)] = serializer.deserialize(value, clear=False)
            commands.append(WireCommand(str(cmd.text), is_script.text == "true", parameters,
                                        ET.tostring(obj, encoding="unicode"), arguments))
        statements.append(commands)
    return statements


def server_message(message_type: int, rpid: str, pid: str | None, xml: str) -> bytes:
    """A PSRP message from the server, laid out as [MS-PSRP] 2.2.1 says."""
    return (struct.pack("<I", Destination.CLIENT) + struct.pack("<I", message_type)
            + uuid.UUID(rpid).bytes_le + uuid.UUID(pid or EMPTY_ID).bytes_le + xml.encode("utf-8"))


SESSION_CAPABILITY = ('<Obj RefId="0"><MS><Version N="protocolversion">2.3</Version>'
                      '<Version N="PSVersion">2.0</Version>'
                      '<Version N="SerializationVersion">1.1.0.1</Version></MS></Obj>')
POOL_OPENED = '<Obj RefId="0"><MS><I32 N="RunspaceState">2</I32></MS></Obj>'


def pipeline_state(state: int, error_record: str | None = None) -> str:
    record = error_record.replace('<Obj RefId="0">', '<Obj N="ExceptionAsErrorRecord" RefId="1">', 1) \
        if error_record else ""
    return f'<Obj RefId="0"><MS><I32 N="PipelineState">{state}</I32>{record}</MS></Obj>'


class FakeEndpoint:
    """Stands in for pypsrp's WinRS shell (`pool.shell`), the only part that would send WS-Management.

    It records `begin` (Command), `end` (Receive), `release` (Signal), `open` and `close` events,
    decodes every CREATE_PIPELINE it is sent and answers through `handler`.
    """

    def __init__(self, handler: Callable[[Invocation], Reply] | None = None,
                 open_error: BaseException | None = None) -> None:
        self.handler = handler or (lambda invocation: Reply())
        self.open_error = open_error
        self.events: list[tuple[str, str]] = []
        self.invocations: list[Invocation] = []
        self.pool: Any = None
        self._buffers: dict[str, bytes] = {}
        self._names: dict[str, str] = {}
        self._object_id = 100
        self.resource_uri = ""

    def attach(self, pool: Any) -> Any:
        self.resource_uri = pool.shell.resource_uri  # what pypsrp's own shell would have connected to
        pool.shell = self
        self.pool = pool
        return pool

    # the WinRS interface RunspacePool and PowerShell use
    def open(self, options: Any = None, content: Any = None) -> None:
        self.events.append(("open", ""))
        if self.open_error is not None:
            raise self.open_error

    def close(self) -> None:
        self.events.append(("close", ""))

    def command(self, executable: str, arguments: list[str], command_id: str) -> ET.Element:
        fragment, _ = Fragment.unpack(base64.b64decode(arguments[0]))
        self._buffers[command_id] = fragment.data
        self.events.append(("begin", command_id))
        response = ET.Element("Body")
        ET.SubElement(ET.SubElement(response, f"{{{RSP}}}CommandResponse"), f"{{{RSP}}}CommandId").text = command_id
        return response

    def send(self, stream: str, data: bytes, command_id: str | None = None) -> None:
        assert command_id is not None
        self._buffers[command_id] += Fragment.unpack(data)[0].data

    def signal(self, code: str, command_id: str | None = None) -> None:
        self.events.append(("release", command_id or ""))

    def receive(self, stream: str = "stdout", command_id: str | None = None,
                timeout: Any = None) -> tuple[Any, Any, dict[str, bytes]]:
        rpid = self.pool.id
        if command_id is None:
            messages = [server_message(MessageType.SESSION_CAPABILITY, rpid, None, SESSION_CAPABILITY),
                        server_message(MessageType.RUNSPACEPOOL_STATE, rpid, None, POOL_OPENED)]
        else:
            invocation = self._invocation(command_id)
            self.events.append(("end", command_id))
            reply = self.handler(invocation)
            messages = [server_message(MessageType.PIPELINE_OUTPUT, rpid, command_id, o) for o in reply.output]
            messages += [server_message(MessageType.ERROR_RECORD, rpid, command_id, e) for e in reply.errors]
            state = pipeline_state(5, reply.failure) if reply.failure else pipeline_state(4)
            messages.append(server_message(MessageType.PIPELINE_STATE, rpid, command_id, state))
        stdout = b""
        for message in messages:
            self._object_id += 1
            stdout += Fragment(self._object_id, 0, message, True, True).pack()
        return None, None, {"stdout": stdout}

    def _invocation(self, command_id: str) -> Invocation:
        data = self._buffers[command_id]
        assert struct.unpack("<I", data[4:8])[0] == MessageType.CREATE_PIPELINE
        xml = data[40:].decode("utf-8-sig")
        invocation = Invocation(command_id, xml, parse_create_pipeline(xml))
        self.invocations.append(invocation)
        self._names[command_id] = invocation.cmdlet
        return invocation

    def timeline(self) -> list[tuple[str, str]]:
        """Events with pipeline ids replaced by their cmdlet names."""
        return [(event, self._names.get(ref, ref)) for event, ref in self.events]


@dataclass
class Rig:
    transport: WinRMTransport
    endpoint: FakeEndpoint
    pools_made: list[Any]
    native: FakeEndpoint
    """The endpoint behind the second pool, the one native commands run in."""


def rig(handler: Callable[[Invocation], Reply] | None = None,
        native_handler: Callable[[Invocation], Reply] | None = None, restrict: bool = True, **overrides: Any) -> Rig:
    """A transport whose pools are pypsrp's real RunspacePools (built by the real factory) over FakeEndpoints:
    `endpoint` for the target's own settings, `native` for the native-command settings."""
    endpoint = FakeEndpoint(handler)
    native = FakeEndpoint(native_handler)
    made: list[Any] = []
    base = settings(**overrides)

    def factory(s: WinRMSettings) -> Any:
        pool = (endpoint if s is base else native).attach(pypsrp_pool(s))
        made.append(pool)
        return pool

    transport = WinRMTransport(base, pool_factory=factory)
    if restrict:
        transport.restrict_to(DECLARED)  # as Registry.open_transport does: what the installed providers declare
    return Rig(transport, endpoint, made, native)


DECLARED = tuple(dict.fromkeys(n for p in Registry.from_entry_points().providers.values() for n in command_names(p)))


# CLIXML as PowerShell serializes a Select-Object'ed Skype object over remoting (hand-written).
PARTNER_APP = """<Obj RefId="0"><TN RefId="0">
<T>Selected.Microsoft.Rtc.Management.WritableConfig.Policy.OAuth.PartnerApplication</T>
<T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN>
<ToString>@{Identity=microsoft.exchange}</ToString>
<MS>
<S N="Identity">microsoft.exchange</S>
<S N="ApplicationIdentifier">00000002-0000-0ff1-ce00-000000000000</S>
<Obj N="ApplicationTrustLevel" RefId="1"><TN RefId="1">
<T>Deserialized.Microsoft.Rtc.Management.WritableConfig.Policy.OAuth.ApplicationTrustLevel</T>
<T>Deserialized.System.Enum</T><T>Deserialized.System.ValueType</T><T>Deserialized.System.Object</T></TN>
<ToString>Full</ToString><I32>0</I32></Obj>
<B N="Enabled">true</B>
<S N="MetadataUrl">https://atl-exchange-001.litwareinc.com/autodiscover/metadata/json/1</S>
<DT N="WhenChanged">2024-05-06T07:08:09.1234567+02:00</DT>
<G N="Guid">7f1c2a9e-3c5b-4d8e-9f00-112233445566</G>
<Obj N="Domains" RefId="2"><TN RefId="2">
<T>System.Collections.Generic.List`1[[System.String, mscorlib, Version=4.0.0.0]]</T><T>System.Object</T></TN>
<LST><S>litwareinc.com</S><S>contoso.com</S></LST></Obj>
<Obj N="Certificate" RefId="3"><TN RefId="3">
<T>Deserialized.System.Security.Cryptography.X509Certificates.X509Certificate2</T>
<T>Deserialized.System.Object</T></TN>
<ToString>[Subject] CN=Microsoft Exchange Server Auth Certificate</ToString>
<Props><S N="Thumbprint">ABCDEF</S></Props></Obj>
<S N="PSComputerName">fe01.litwareinc.com</S>
<G N="RunspaceId">0b7e2f0a-1111-2222-3333-444455556666</G>
<B N="PSShowComputerName">false</B>
</MS></Obj>"""

# Without Select-Object: the cmdlet's own properties are adapted (Props); remoting adds note properties.
OAUTH_SERVER = """<Obj RefId="0"><TN RefId="0">
<T>Deserialized.Microsoft.Rtc.Management.WritableConfig.Policy.OAuth.OAuthServer</T>
<T>Deserialized.System.Object</T></TN>
<ToString>Identity=microsoft.sts</ToString>
<Props>
<S N="Identity">microsoft.sts</S>
<S N="MetadataUrl">https://accounts.accesscontrol.windows.net/metadata/json/1</S>
<Nil N="AuthorizationUriOverride" />
</Props>
<MS><S N="PSComputerName">fe01.litwareinc.com</S><B N="PSShowComputerName">false</B></MS>
</Obj>"""


def error_record(message: str, fq_error: str = "ItemNotFound,Microsoft.Rtc.Management.RemoveCmdlet",
                 *, to_string: bool = True) -> str:
    """An ErrorRecord as PowerShell serializes it (hand-written, shape from [MS-PSRP] 2.2.3.15)."""
    text = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return ('<Obj RefId="0"><TN RefId="0"><T>System.Management.Automation.ErrorRecord</T><T>System.Object</T></TN>'
            + (f"<ToString>{text}</ToString>" if to_string else "")
            + '<MS><Obj N="Exception" RefId="1"><TN RefId="1"><T>System.Management.Automation.ItemNotFoundException</T>'
            f'<T>System.Exception</T><T>System.Object</T></TN><ToString>{text}</ToString>'
            f'<Props><S N="Message">{text}</S></Props></Obj>'
            f'<Nil N="TargetObject" /><S N="FullyQualifiedErrorId">{fq_error}</S>'
            '<Nil N="InvocationInfo" /><I32 N="ErrorCategory_Category">13</I32>'
            '<S N="ErrorCategory_Activity">Remove-CsPartnerApplication</S>'
            '<S N="ErrorCategory_Reason">ItemNotFoundException</S>'
            '<S N="ErrorCategory_Message">ObjectNotFound: (:) [Remove-CsPartnerApplication], '
            'ItemNotFoundException</S><B N="SerializeExtendedInfo">false</B></MS></Obj>')


# ---------------------------------------------------------------------------------------------
# Pipelines: real pypsrp objects, no script text


def unopened_pool() -> RunspacePool:
    """pypsrp's real RunspacePool, never opened; the protocol version is what a server would negotiate."""
    pool = pypsrp_pool(settings())
    assert isinstance(pool, RunspacePool)
    pool.protocol_version = "2.3"
    return pool


def test_a_command_becomes_cmdlets_with_parameters_never_script() -> None:
    command = Command("New-CsPartnerApplication",
                      {"Identity": "microsoft.exchange",
                       "ApplicationIdentifier": "00000002-0000-0ff1-ce00-000000000000", "UseOAuthServer": True,
                       "Enabled": False, "ApplicationTrustLevel": "Full"},
                      select=("Identity", "Enabled"))
    ps = build_pipeline(PowerShell, unopened_pool(), command)

    assert [c.cmd for c in ps.commands] == ["New-CsPartnerApplication", "Select-Object"]
    assert all(c.is_script is False for c in ps.commands)
    main, select = ps.commands
    assert [(a.name, a.value) for a in main.args] == [
        ("Identity", "microsoft.exchange"), ("ApplicationIdentifier", "00000002-0000-0ff1-ce00-000000000000"),
        ("UseOAuthServer", True), ("Enabled", False), ("ApplicationTrustLevel", "Full"), ("ErrorAction", "Stop")]
    assert [(a.name, a.value) for a in select.args] == [("Property", ["Identity", "Enabled"])]
    assert not main.end_of_statement  # Get | Select-Object is one pipeline


def test_no_select_means_no_select_object_and_an_explicit_error_action_is_kept() -> None:
    ps = build_pipeline(PowerShell, unopened_pool(), Command("Remove-CsOAuthServer", {"Identity": "x"}))
    assert [c.cmd for c in ps.commands] == ["Remove-CsOAuthServer"]
    ps = build_pipeline(PowerShell, unopened_pool(), Command("Remove-CsOAuthServer", {"ErrorAction": "Continue"}))
    assert [(a.name, a.value) for a in ps.commands[0].args] == [("ErrorAction", "Continue")]


@pytest.mark.parametrize("payload", INJECTION_CORPUS, ids=range(len(INJECTION_CORPUS)))
def test_injection_corpus_stays_a_literal_parameter_value(payload: str) -> None:
    command = Command("Set-CsOAuthServer", {"Identity": payload, "MetadataUrl": payload,
                                            "Type": [payload, "x"]})
    ps = build_pipeline(PowerShell, unopened_pool(), command)
    (main,) = ps.commands
    assert main.cmd == "Set-CsOAuthServer" and main.is_script is False
    values = {a.name: a.value for a in main.args}
    assert values["Identity"] is payload and values["MetadataUrl"] is payload
    assert values["Type"] == [payload, "x"]

    # pypsrp's own serializer: the CLIXML this command is on the wire
    element = Serializer().serialize(main)
    assert element is not None
    wire = ET.tostring(element, encoding="unicode")
    assert element.find("MS/S[@N='Cmd']").text == "Set-CsOAuthServer"  # type: ignore[union-attr]
    assert element.find("MS/B[@N='IsScript']").text == "false"  # type: ignore[union-attr]
    args = element.findall("MS/Obj[@N='Args']/LST/Obj")
    assert [a.find("MS/S[@N='N']").text for a in args] == ["Identity", "MetadataUrl", "Type", "ErrorAction"]  # type: ignore[union-attr]
    for arg in args[:2]:
        value = arg.find("MS/S[@N='V']")
        assert value is not None, "a string value is an <S> element"
        assert Serializer().deserialize(value) == payload
    listed = args[2].find("MS/Obj[@N='V']/LST")
    assert listed is not None and Serializer().deserialize(listed[0]) == payload
    assert wire.count("<S N=\"Cmd\">") == 1, "the payload never becomes a command element"
    if "<" in payload:
        assert "&lt;" in wire and payload not in wire, "markup in a value is escaped"


def test_injection_corpus_on_the_wire_through_a_real_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PowerShell, "add_script", lambda *a, **k: pytest.fail("add_script must never be used"))
    r = rig()
    commands = [Command("Set-CsPartnerApplication", {"Identity": p, "MetadataUrl": p, "Enabled": True})
                for p in INJECTION_CORPUS]
    results = r.transport.invoke(commands)
    assert all(result.ok for result in results)
    assert len(r.endpoint.invocations) == len(INJECTION_CORPUS)
    for payload, invocation in zip(INJECTION_CORPUS, r.endpoint.invocations, strict=True):
        (wire,) = invocation.commands
        assert wire.cmdlet == "Set-CsPartnerApplication" and wire.is_script is False
        assert wire.parameters == {"Identity": payload, "MetadataUrl": payload, "Enabled": True,
                                   "ErrorAction": "Stop"}


def test_parameter_values_keep_their_types_on_the_wire() -> None:
    big = 2**40
    r = rig()
    r.transport.invoke([Command("Set-CsOAuthConfiguration", {
        "Switch": True, "Off": False, "Nothing": None, "Count": 5, "Big": big, "Ratio": 0.1,
        "Domains": ("litwareinc.com", "contoso.com")})])
    (invocation,) = r.endpoint.invocations
    (wire,) = invocation.commands
    assert wire.parameters == {"Switch": True, "Off": False, "Nothing": None, "Count": 5, "Big": big,
                               "Ratio": 0.1, "Domains": ["litwareinc.com", "contoso.com"],
                               "ErrorAction": "Stop"}
    assert '<B N="V">true</B>' in wire.raw and '<Nil N="V" />' in wire.raw
    assert f'<I64 N="V">{big}</I64>' in wire.raw and '<Db N="V">0.1</Db>' in wire.raw


@pytest.mark.parametrize("command", [
    Command("Get-CsOAuthServer; Stop-Computer"),
    Command("Get-CsOAuthServer", {"Identity -Force": "x"}),
    Command("Get-CsOAuthServer", {"$(x)": "x"}),
    Command("Get-CsOAuthServer", select=("Identity; Stop-Computer",)),
], ids=["cmdlet", "parameter", "subexpression", "select"])
def test_names_must_be_identifiers(command: Command) -> None:
    with pytest.raises(ValueError):
        build_pipeline(PowerShell, unopened_pool(), command)
    r = rig()
    with pytest.raises(ValueError):
        r.transport.invoke([command])
    assert r.pools_made == [], "a bad batch is refused before connecting"


# ---------------------------------------------------------------------------------------------
# Invocation: one pool, concurrent reads, ordered writes


DISCOVERY = [Command("Get-CsOAuthConfiguration", select=("Identity",)),
             Command("Get-CsOAuthServer", select=("Identity",)),
             Command("Get-CsPartnerApplication", select=("Identity",))]


def test_discovery_starts_every_read_before_collecting_any() -> None:
    r = rig(lambda inv: Reply(output=[PARTNER_APP]))
    results = r.transport.invoke(DISCOVERY)

    assert [res.command for res in results] == DISCOVERY and all(res.ok for res in results)
    assert [res.output for res in results] == [({"Identity": "microsoft.exchange"},)] * 3
    timeline = [e for e in r.endpoint.timeline() if e[0] in ("begin", "end")]
    assert timeline == [("begin", "Get-CsOAuthConfiguration"), ("begin", "Get-CsOAuthServer"),
                        ("begin", "Get-CsPartnerApplication"), ("end", "Get-CsOAuthConfiguration"),
                        ("end", "Get-CsOAuthServer"), ("end", "Get-CsPartnerApplication")]
    assert sorted(name for event, name in r.endpoint.timeline() if event == "release") == sorted(
        c.cmdlet for c in DISCOVERY), "every finished pipeline is released on the server"


def test_writes_run_one_after_another_and_stop_at_the_first_failure() -> None:
    def server(inv: Invocation) -> Reply:
        if inv.cmdlet == "Remove-CsPartnerApplication":
            return Reply(failure=error_record('Cannot find "app".'))
        return Reply()

    r = rig(server)
    batch = [Command("Set-CsOAuthServer", {"Identity": "a"}),
             Command("Remove-CsPartnerApplication", {"Identity": "app"}),
             Command("New-CsPartnerApplication", {"Identity": "app"})]
    results = r.transport.invoke(batch, stop_on_error=True)

    assert [(res.command.cmdlet, res.ok) for res in results] == [("Set-CsOAuthServer", True),
                                                                 ("Remove-CsPartnerApplication", False)]
    assert results[1].error == 'Remove-CsPartnerApplication : Cannot find "app".'
    assert [e for e in r.endpoint.timeline() if e[0] != "open"] == [
        ("begin", "Set-CsOAuthServer"), ("end", "Set-CsOAuthServer"), ("release", "Set-CsOAuthServer"),
        ("begin", "Remove-CsPartnerApplication"), ("end", "Remove-CsPartnerApplication"),
        ("release", "Remove-CsPartnerApplication")]
    assert "New-CsPartnerApplication" not in [i.cmdlet for i in r.endpoint.invocations]


def test_without_stop_on_error_every_command_runs() -> None:
    r = rig(lambda inv: Reply(failure=error_record("no")) if inv.cmdlet.startswith("Remove") else Reply())
    batch = [Command("Remove-CsOAuthServer", {"Identity": "a"}), Command("New-CsOAuthServer", {"Identity": "a"})]
    results = r.transport.invoke(batch, stop_on_error=False)
    assert [res.ok for res in results] == [False, True]


def test_a_mixed_batch_is_not_run_concurrently() -> None:
    r = rig()
    r.transport.invoke([Command("Get-CsOAuthServer"), Command("Remove-CsOAuthServer", {"Identity": "a"})])
    begins_and_ends = [e for e, _ in r.endpoint.timeline() if e in ("begin", "end")]
    assert begins_and_ends == ["begin", "end", "begin", "end"]


def test_concurrent_reads_report_up_to_the_first_failure_with_stop_on_error() -> None:
    r = rig(lambda inv: Reply(failure=error_record("denied")) if inv.cmdlet == "Get-CsOAuthServer" else Reply())
    results = r.transport.invoke(DISCOVERY, stop_on_error=True)
    assert [(res.command.cmdlet, res.ok) for res in results] == [("Get-CsOAuthConfiguration", True),
                                                                 ("Get-CsOAuthServer", False)]
    assert results[1].error == "Get-CsOAuthServer : denied"
    assert len(r.transport.invoke(DISCOVERY, stop_on_error=False)) == 3


def test_one_pool_per_target_reused_for_discovery_and_apply_and_closed_once() -> None:
    r = rig()
    r.transport.invoke(DISCOVERY)
    r.transport.invoke([Command("Set-CsOAuthServer", {"Identity": "a"})])
    r.transport.invoke([])
    assert len(r.pools_made) == 1 and r.transport.pools_opened == 1
    assert [e for e, _ in r.endpoint.events].count("open") == 1
    (pool,) = r.pools_made
    assert pool.max_runspaces == 3 and pool.shell.pool is pool

    r.transport.close()
    r.transport.close()
    assert [e for e, _ in r.endpoint.events].count("close") == 1
    with pytest.raises(TransportError, match="closed"):
        r.transport.invoke(DISCOVERY)


def test_close_before_any_invoke_opens_nothing() -> None:
    r = rig()
    r.transport.close()
    r.transport.close()
    assert r.pools_made == [] and r.endpoint.events == []


def test_the_pool_is_configured_from_the_settings() -> None:
    r = rig(configuration_name="Microsoft.Exchange", max_runspaces=5, path="PowerShell", ssl=False, port=80,
            auth="kerberos")
    r.transport.invoke([Command("Get-PartnerApplication")])
    (pool,) = r.pools_made
    assert isinstance(pool, RunspacePool)
    assert pool.shell is r.endpoint and pool.max_runspaces == 5
    assert r.endpoint.resource_uri == "http://schemas.microsoft.com/powershell/Microsoft.Exchange"
    transport = pool.connection.transport
    assert (transport.server, transport.port, transport.ssl, transport.path, transport.auth) == (
        SERVER, 80, False, "PowerShell", "kerberos")
    assert transport.endpoint == "http://fe01.litwareinc.com:80/PowerShell"


# ---------------------------------------------------------------------------------------------
# Native commands: a second pool, positional arguments, the exit code


IISRESET = Command("iisreset", native=True, arguments=("atl-exchange-001",))
IISRESET_LINES = ["", "Attempting stop...", "Internet services successfully stopped", "Attempting start...",
                  "Internet services successfully restarted"]
ACCESS_DENIED = "Access denied, you must be an administrator of the remote computer to use this command."
EXCHANGE: dict[str, Any] = {"configuration_name": "Microsoft.Exchange", "path": "PowerShell", "ssl": False, "port": 80,
            "auth": "kerberos"}


def native_reply(lines: list[str], code: int | None = 0, errors: tuple[str, ...] = ()) -> Callable[[Invocation], Reply]:
    """What the unrestricted endpoint answers to a native pipeline: the lines, then LASTEXITCODE's value."""
    def escape(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    output = [f"<S>{escape(line)}</S>" for line in lines] + ["<Nil />" if code is None else f"<I32>{code}</I32>"]
    return lambda invocation: Reply(output=output, errors=[error_record(e) for e in errors])


def test_a_native_command_is_three_structured_statements_never_script() -> None:
    command = Command("iisreset", native=True, arguments=("atl-exchange-001", "/noforce"))
    ps = build_native_pipeline(PowerShell, unopened_pool(), command)
    assert [c.cmd for c in ps.commands] == ["Remove-Variable", "iisreset", "Get-Variable"]
    assert all(c.is_script is False for c in ps.commands)
    assert [c.end_of_statement for c in ps.commands] == [True, True, False]
    reset, run, read = ps.commands
    assert [(a.name, a.value) for a in run.args] == [(None, "atl-exchange-001"), (None, "/noforce")]
    assert [(a.name, a.value) for a in reset.args] == [
        ("Name", "LASTEXITCODE"), ("Scope", "Global"), ("ErrorAction", "SilentlyContinue")]
    assert [(a.name, a.value) for a in read.args] == [
        ("Name", "LASTEXITCODE"), ("Scope", "Global"), ("ValueOnly", True), ("ErrorAction", "SilentlyContinue")]
    with pytest.raises(ValueError, match="not a native command"):
        build_native_pipeline(PowerShell, unopened_pool(), Command("Get-CsOAuthServer"))
    with pytest.raises(ValueError, match="built by build_native_pipeline"):
        build_pipeline(PowerShell, unopened_pool(), command)  # never with -ErrorAction as an argument


@pytest.mark.parametrize("command", [
    Command("C:\\Windows\\System32\\iisreset.exe", native=True),
    Command("iisreset;calc", native=True),
    Command("iisreset", {"Server": "x"}, native=True),
    Command("iisreset", native=True, select=("Line",)),
    Command("iisreset", native=True, arguments=(1,)),  # type: ignore[arg-type]
], ids=["path", "separator", "parameters", "select", "non-string"])
def test_malformed_native_commands_are_refused_before_connecting(command: Command) -> None:
    r = rig()
    with pytest.raises(ValueError):
        r.transport.invoke([command])
    assert r.pools_made == []
    assert (r.transport.unsupported(command) or "").startswith("the winrm transport cannot run it: ")


def test_native_arguments_travel_one_by_one_as_literal_positional_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PowerShell, "add_script", lambda *a, **k: pytest.fail("add_script must never be used"))
    r = rig(native_handler=native_reply(["ok"]), allow_cmdlets=("echoargs",))
    (result,) = r.transport.invoke([Command("echoargs", native=True, arguments=tuple(INJECTION_CORPUS))])
    assert result.ok, result.error
    (invocation,) = r.native.invocations
    reset, run, read = invocation.statements
    assert [len(reset), len(run), len(read)] == [1, 1, 1]
    assert all(not wire.is_script for statement in invocation.statements for wire in statement)
    assert run[0].cmdlet == "echoargs" and run[0].parameters == {}
    assert run[0].arguments == INJECTION_CORPUS  # each value one argument, exactly as given
    names = {str(e.text) for e in ET.fromstring(invocation.xml).iter("S") if e.get("N") == "Cmd"}
    assert names == {"Remove-Variable", "echoargs", "Get-Variable"}, "no value ever becomes a command"
    assert r.endpoint.invocations == [] and r.transport.pools_opened == 0, "the main endpoint is not used"
    assert r.transport.native_pools_opened == 1


def test_native_commands_run_over_a_second_pool_on_the_server_s_wsman_listener() -> None:
    r = rig(native_handler=native_reply(IISRESET_LINES), **EXCHANGE)
    results = r.transport.invoke([Command("Set-AuthConfig", {"CertificateThumbprint": "AB"}), IISRESET,
                                  Command("Get-AuthConfig")])
    assert [res.ok for res in results] == [True, True, True]
    assert results[1].output == tuple({"Stream": "Output", "Line": line} for line in IISRESET_LINES)
    main, native = r.pools_made
    assert r.endpoint.resource_uri == "http://schemas.microsoft.com/powershell/Microsoft.Exchange"
    assert r.native.resource_uri == "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
    transport = native.connection.transport
    assert transport.endpoint == "http://fe01.litwareinc.com:5985/wsman"
    assert (transport.auth, transport.username, transport.password) == ("kerberos", USER, PASSWORD)
    assert native.max_runspaces == 1 and main.max_runspaces == 3
    assert [i.cmdlet for i in r.endpoint.invocations] == ["Set-AuthConfig", "Get-AuthConfig"]
    assert [i.cmdlet for i in r.native.invocations] == ["iisreset"]

    r.transport.invoke([IISRESET])
    assert (r.transport.pools_opened, r.transport.native_pools_opened) == (1, 1), "each pool is reused"
    r.transport.close()
    assert ("close", "") in r.endpoint.events and ("close", "") in r.native.events


def test_a_non_zero_exit_code_fails_the_command_with_the_code_and_its_last_lines() -> None:
    r = rig(native_handler=native_reply(["Attempting stop..."], 5, errors=(ACCESS_DENIED,)))
    results = r.transport.invoke([IISRESET, Command("Get-CsOAuthServer")])
    assert [res.ok for res in results] == [False]
    assert results[0].error == f"iisreset : exited with code 5: {ACCESS_DENIED}"
    assert results[0].output == ({"Stream": "Output", "Line": "Attempting stop..."},
                                 {"Stream": "Error", "Line": ACCESS_DENIED})
    assert r.endpoint.invocations == [], "stop_on_error: nothing after the failure runs"


def test_standard_error_with_exit_code_zero_is_a_success_that_keeps_the_lines() -> None:
    r = rig(native_handler=native_reply(["done"], 0, errors=("a warning on stderr",)))
    (result,) = r.transport.invoke([IISRESET])
    assert result.ok and result.output == ({"Stream": "Output", "Line": "done"},
                                           {"Stream": "Error", "Line": "a warning on stderr"})


@pytest.mark.parametrize("errors,expected", [
    (("The term 'iisreset' is not recognized as a name of a cmdlet, function, script file, or executable program.",),
     "iisreset : The term 'iisreset' is not recognized"),
    ((), "iisreset : it ran, but left no exit code"),
])
def test_no_exit_code_is_a_failure(errors: tuple[str, ...], expected: str) -> None:
    r = rig(native_handler=native_reply([], None, errors=errors))
    (result,) = r.transport.invoke([IISRESET])
    assert not result.ok and (result.error or "").startswith(expected), result.error


def test_with_native_commands_disabled_a_native_command_is_explained_and_refused_unsent() -> None:
    r = rig(**EXCHANGE, native_configuration_name=None)
    message = r.transport.unsupported(IISRESET)
    assert message == (
        "the WinRM target fe01.litwareinc.com connects to the restricted Microsoft.Exchange endpoint, which runs "
        "no executables, and native commands are disabled (connection.nativeConfigurationName is null), so the "
        "executable iisreset cannot run there; set connection.nativeConfigurationName to an unrestricted session "
        "configuration such as Microsoft.PowerShell, which runs executables over a second connection to "
        "http://fe01.litwareinc.com:5985/wsman (connection.nativePort sets another port)")
    assert r.transport.unsupported(Command("Get-AuthConfig")) is None

    batch = [Command("Set-AuthConfig", {"CertificateThumbprint": "AB"}), IISRESET, Command("Get-AuthConfig")]
    results = r.transport.invoke(batch)
    assert [res.ok for res in results] == [True, False]
    assert results[1].error == f"iisreset : refused by the winrm transport: {message}; nothing was sent"
    assert [i.cmdlet for i in r.endpoint.invocations] == ["Set-AuthConfig"]
    assert r.native.events == [] and len(r.pools_made) == 1, "no pool for native commands"

    results = r.transport.invoke(batch, stop_on_error=False)
    assert [res.ok for res in results] == [True, False, True]

    other = rig(native_configuration_name=None)
    assert "connects to the Microsoft.PowerShell session configuration, and native commands are disabled" in (
        other.transport.unsupported(IISRESET) or "")


# ---------------------------------------------------------------------------------------------
# The allow-list


def test_restrict_to_refuses_a_cmdlet_outside_the_list_with_nothing_sent() -> None:
    r = rig(allow_cmdlets=("Get-CsUser",))
    r.transport.restrict_to(["get-csoauthserver", "Set-CsOAuthServer", "IISRESET"])
    (refused,) = r.transport.invoke([Command("Remove-CsOAuthServer", {"Identity": "a"})])
    assert not refused.ok and refused.error == (
        "Remove-CsOAuthServer : refused by the winrm transport: the cmdlet Remove-CsOAuthServer is not on the winrm "
        "transport's allow-list for fe01.litwareinc.com (add it to connection.allowCmdlets if it is safe to run); "
        "nothing was sent")
    assert r.pools_made == [] and r.endpoint.events == [], "nothing was sent, nothing was opened"

    results = r.transport.invoke([Command("Get-CsOAuthServer"), Command("Get-CsUser"),
                                  Command("Remove-CsOAuthServer", {"Identity": "a"})], stop_on_error=False)
    assert [res.ok for res in results] == [True, True, False]
    assert [i.cmdlet for i in r.endpoint.invocations] == ["Get-CsOAuthServer", "Get-CsUser"]
    assert r.transport.unsupported(Command("SET-CSOAUTHSERVER")) is None
    assert r.transport.unsupported(IISRESET) is None
    assert "is not on the winrm transport's allow-list" in (
        r.transport.unsupported(Command("Remove-CsOAuthServer")) or "")

    r.transport.restrict_to(["Get-CsOAuthServer"])
    assert "the executable iisreset is not on" in (r.transport.unsupported(IISRESET) or "")
    with pytest.raises(ValueError, match="not command names"):
        r.transport.restrict_to(["Get-X; Stop-Computer"])


def test_before_restrict_to_cmdlets_are_not_limited_here_but_executables_are() -> None:
    r = rig(native_handler=native_reply(IISRESET_LINES), restrict=False)
    (result,) = r.transport.invoke([Command("Get-CsUser")])
    assert result.ok
    assert r.transport.unsupported(IISRESET) is not None  # no executable runs until a provider declares it
    (refused,) = r.transport.invoke([Command("cmd", native=True, arguments=("/c", "calc"))])
    assert not refused.ok and "the executable cmd is not on the winrm transport's allow-list" in (refused.error or "")
    assert r.native.events == []
    allowed = rig(native_handler=native_reply([]), restrict=False, allow_cmdlets=("appcmd",))
    assert allowed.transport.invoke([Command("appcmd", native=True, arguments=("list", "site"))])[0].ok


# ---------------------------------------------------------------------------------------------
# Results


def test_output_objects_from_clixml_become_plain_dicts_of_the_selected_properties() -> None:
    select = ("Identity", "ApplicationIdentifier", "ApplicationTrustLevel", "Enabled", "MetadataUrl",
              "WhenChanged", "Guid", "Domains", "Certificate", "Realm")
    r = rig(lambda inv: Reply(output=[PARTNER_APP]))
    (result,) = r.transport.invoke([Command("Get-CsPartnerApplication", select=select)])
    assert result.ok
    assert result.output == ({
        "Identity": "microsoft.exchange",
        "ApplicationIdentifier": "00000002-0000-0ff1-ce00-000000000000",
        "ApplicationTrustLevel": "Full",
        "Enabled": True,
        "MetadataUrl": "https://atl-exchange-001.litwareinc.com/autodiscover/metadata/json/1",
        "WhenChanged": "2024-05-06T07:08:09.1234567+02:00",
        "Guid": "7f1c2a9e-3c5b-4d8e-9f00-112233445566",
        "Domains": ["litwareinc.com", "contoso.com"],
        "Certificate": "[Subject] CN=Microsoft Exchange Server Auth Certificate",
        "Realm": None,
    },)
    (wire,) = r.endpoint.invocations[0].commands[1:]
    assert wire.cmdlet == "Select-Object" and wire.parameters == {"Property": list(select)}


def test_selection_is_case_insensitive_and_spelled_as_asked() -> None:
    r = rig(lambda inv: Reply(output=[PARTNER_APP]))
    (result,) = r.transport.invoke([Command("Get-CsPartnerApplication", select=("identity", "ENABLED"))])
    assert result.output == ({"identity": "microsoft.exchange", "ENABLED": True},)


def test_without_a_selection_every_property_but_the_remoting_ones() -> None:
    r = rig(lambda inv: Reply(output=[OAUTH_SERVER, OAUTH_SERVER]))
    (result,) = r.transport.invoke([Command("Get-CsOAuthServer")])
    assert result.output == ({"Identity": "microsoft.sts",
                              "MetadataUrl": "https://accounts.accesscontrol.windows.net/metadata/json/1",
                              "AuthorizationUriOverride": None},) * 2


def test_hand_built_pypsrp_objects_convert() -> None:
    enum_on_wire = GenericComplexObject()
    enum_on_wire.types = ["Deserialized.Microsoft.Rtc.Type", "Deserialized.System.Enum", "Deserialized.System.Object"]
    enum_on_wire.to_string = "Application"
    enum_on_wire.property_sets = [1]
    enum_without_text = GenericComplexObject()
    enum_without_text.types = ["X", "System.Enum"]
    enum_without_text.property_sets = [2]
    nested = GenericComplexObject()
    nested.to_string = "CN=nested"
    nested.adapted_properties = {"Subject": "CN=nested"}
    nameless = GenericComplexObject()
    nameless.types = ["Some.Type"]
    obj = GenericComplexObject()
    obj.adapted_properties = {
        "Identity": "app", "Level": enum_on_wire, "Raw": enum_without_text,
        "Threads": PSThreadOptions(value=PSThreadOptions.USE_NEW_THREAD),
        "When": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "Day": dt.date(2024, 1, 2),
        "Id": uuid.UUID("00000002-0000-0ff1-ce00-000000000000"), "Bytes": b"\x01\x02",
        "Nested": nested, "Nameless": nameless, "List": [nested, 1, "a"], "Map": {"k": nested},
        "Identity2": "overridden",
    }
    obj.extended_properties = {"Identity2": "extended wins", "PSComputerName": "fe01", "RunspaceId": uuid.uuid4()}
    assert output_object(obj) == {
        "Identity": "app", "Level": "Application", "Raw": 2, "Threads": "UseNewThread",
        "When": "2024-01-02T03:04:05+00:00", "Day": "2024-01-02", "Id": "00000002-0000-0ff1-ce00-000000000000",
        "Bytes": "AQI=", "Nested": "CN=nested", "Nameless": "Some.Type", "List": ["CN=nested", 1, "a"],
        "Map": {"k": "CN=nested"}, "Identity2": "extended wins"}
    assert output_object(obj, ("Level", "missing")) == {"Level": "Application", "missing": None}
    assert output_object("plain text") == {"Value": "plain text"}
    assert output_object(enum_on_wire) == {"Value": "Application"}
    assert output_object({"a": 1}) == {"a": 1}


def test_error_records_give_powershell_s_message() -> None:
    plain = ErrorRecordMessage()
    plain._to_string = "to string"
    assert error_text(plain) == "to string"
    detailed = ErrorRecordMessage(details_message="details win")
    detailed._to_string = "to string"
    assert error_text(detailed) == "details win"
    exception = GenericComplexObject()
    exception.adapted_properties = {"Message": "from the exception"}
    assert error_text(ErrorRecordMessage(exception=exception)) == "from the exception"
    assert error_text(ErrorRecordMessage(fq_error="Some.Error,Id")) == "Some.Error,Id"
    assert error_text(ErrorRecordMessage()) == "an error without a message"


def test_non_terminating_and_terminating_errors_fail_the_command_once_each_message() -> None:
    def server(inv: Invocation) -> Reply:
        if inv.cmdlet == "Get-CsOAuthServer":  # an ERROR_RECORD but the pipeline completed
            return Reply(output=[OAUTH_SERVER], errors=[error_record("not quite")])
        record = error_record("boom", to_string=False)  # message only on the exception
        return Reply(errors=[record], failure=record)

    r = rig(server)
    first, second = r.transport.invoke([Command("Get-CsOAuthServer"), Command("Set-CsOAuthServer")],
                                       stop_on_error=False)
    assert (first.ok, first.error) == (False, "Get-CsOAuthServer : not quite")
    assert first.output and first.output[0]["Identity"] == "microsoft.sts"
    assert (second.ok, second.error) == (False, "Set-CsOAuthServer : boom")


def test_a_sensitive_value_echoed_in_an_error_is_masked() -> None:
    secret_value = "MIIB-very-secret-certificate"
    r = rig(lambda inv: Reply(failure=error_record(f"Cannot bind '{secret_value}'.")))
    (result,) = r.transport.invoke([Command("New-CsPartnerApplication", {"CertificateRawData": secret_value},
                                            sensitive=frozenset({"CertificateRawData"}))])
    assert result.error == f"New-CsPartnerApplication : Cannot bind '{MASK}'."


# ---------------------------------------------------------------------------------------------
# Failures to reach the endpoint


def test_failures_while_opening_name_server_port_and_auth_never_the_password() -> None:
    import requests

    cases: list[tuple[BaseException, str]] = [
        (requests.exceptions.ConnectionError(f"HTTPSConnectionPool(host='{SERVER}', port=5986): refused"),
         f"cannot connect to {SERVER}:5986 (negotiate): "),
        (AuthenticationError(f"Failed to authenticate the user {USER} with negotiate"),
         f"authentication failed for {USER} (negotiate) at https://{SERVER}:5986/wsman"),
        (requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
         f"certificate validation failed for {SERVER}:5986 (negotiate): the server's certificate is not trusted by "
         "the system's trusted CAs; set connection.caBundle"),
        (WinRMTransportError("http", 404, "not found"), "answered HTTP 404 (negotiate); check connection.path"),
        (WinRMTransportError("http", 500, f"echo {PASSWORD}"), "answered HTTP 500 (negotiate): Bad HTTP response"),
        (WSManFaultError(2150858770, SERVER, "The client cannot connect", None, None, None),
         f"WinRM fault from {SERVER}:5986 (negotiate): The client cannot connect"),
        (requests.exceptions.ReadTimeout("read timed out"), f"timed out talking to {SERVER}:5986 (negotiate)"),
        (RuntimeError(f"odd {PASSWORD}"), f"WinRM with {SERVER}:5986 (negotiate) failed: RuntimeError: odd {MASK}"),
    ]
    for error, expected in cases:
        endpoint = FakeEndpoint(open_error=error)
        transport = WinRMTransport(settings(), pool_factory=lambda s, e=endpoint: e.attach(pypsrp_pool(s)))
        with pytest.raises(TransportError) as raised:
            transport.invoke(DISCOVERY)
        message = str(raised.value)
        assert expected in message, message
        assert PASSWORD not in message
        assert transport.pools_opened == 0


def test_spnego_failure_is_an_authentication_failure() -> None:
    from spnego.exceptions import NoCredentialError

    message = describe_failure(NoCredentialError(context_msg="kinit first"), settings(username=None))
    assert message.startswith(f"authentication failed for the Kerberos ticket cache user (negotiate) at https://{SERVER}")


def test_a_failure_in_the_middle_of_a_batch_is_a_transport_error() -> None:
    import requests

    def server(inv: Invocation) -> Reply:
        raise requests.exceptions.ConnectionError("connection reset")

    r = rig(server)
    with pytest.raises(TransportError, match=f"cannot connect to {SERVER}:5986 \\(negotiate\\): connection reset"):
        r.transport.invoke(DISCOVERY)
    r.endpoint.handler = lambda inv: Reply()
    assert all(res.ok for res in r.transport.invoke(DISCOVERY))
    assert len(r.pools_made) == 2, "a pool whose connection failed is dropped and the next invoke opens another"


def test_iis_endpoint_without_a_port_gets_a_hint() -> None:
    import requests

    message = describe_failure(requests.exceptions.ConnectionError("refused"), settings(path="OcsPowershell"))
    assert message.endswith("the IIS-hosted /OcsPowershell endpoint usually listens on 443: set connection.port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_real_pypsrp_stack_against_a_closed_port(no_proxy: None) -> None:
    port = free_port()
    transport = WinRMTransport(settings(server="127.0.0.1", port=port, ssl=False, auth="ntlm",
                                        operation_timeout=1, read_timeout=5))
    with pytest.raises(TransportError) as raised:
        transport.invoke(DISCOVERY)
    assert str(raised.value).startswith(f"cannot connect to 127.0.0.1:{port} (ntlm): ")
    assert PASSWORD not in str(raised.value) and PASSWORD not in repr(transport)
    transport.close()


@pytest.fixture
def https_stub(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A local HTTPS server (self-signed certificate for 127.0.0.1) answering every request with 401."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "stub.pem", tmp_path / "stub.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    class Deny(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), cert_path
    finally:
        server.shutdown()
        server.server_close()


def test_real_pypsrp_stack_untrusted_certificate_then_401_with_the_ca_bundle(
        https_stub: tuple[int, Path], no_proxy: None) -> None:
    port, ca = https_stub
    base = {"server": "127.0.0.1", "port": port, "auth": "basic", "operation_timeout": 1, "read_timeout": 5}

    untrusted = WinRMTransport(settings(**base))
    with pytest.raises(TransportError) as raised:
        untrusted.invoke(DISCOVERY)
    message = str(raised.value)
    assert message.startswith(f"certificate validation failed for 127.0.0.1:{port} (basic): the server's "
                              "certificate is not trusted by the system's trusted CAs; set connection.caBundle")
    assert PASSWORD not in message

    trusted = WinRMTransport(settings(**base, ca_bundle=str(ca)))
    with pytest.raises(TransportError) as raised:
        trusted.invoke(DISCOVERY)
    message = str(raised.value)
    assert message == f"authentication failed for {USER} (basic) at https://127.0.0.1:{port}/wsman"
    assert PASSWORD not in message


# ---------------------------------------------------------------------------------------------
# Settings and credentials


def connection(**values: Any) -> dict[str, Any]:
    return {"transport": "winrm", "server": SERVER, **values}


ENV = {DEFAULT_USERNAME_ENV: USER, DEFAULT_PASSWORD_ENV: PASSWORD}


def test_defaults_and_credentials_from_the_environment(tmp_path: Path) -> None:
    s = settings_from_connection(connection(), environ=ENV, base=tmp_path)
    assert (s.effective_port, s.ssl, s.path, s.configuration_name, s.auth, s.max_runspaces) == (
        5986, True, "wsman", "Microsoft.PowerShell", "negotiate", 3)
    assert (s.operation_timeout, s.read_timeout, s.cert_validation) == (20, 30.0, True)
    assert s.username == USER and s.password is not None and s.password.reveal() == PASSWORD
    assert settings_from_connection(connection(ssl=False), environ=ENV).effective_port == 5985
    custom = settings_from_connection(connection(usernameEnv="SKYPE_USER", passwordEnv="SKYPE_PASS"),
                                      environ={"SKYPE_USER": "u@LITWAREINC.COM", "SKYPE_PASS": PASSWORD})
    assert custom.username == "u@LITWAREINC.COM"


def test_skype_and_exchange_endpoints() -> None:
    skype = settings_from_connection(connection(path="OcsPowershell", port=443), environ=ENV)
    assert skype.endpoint == f"https://{SERVER}:443/OcsPowershell"
    exchange = settings_from_connection(
        connection(server="ex01.litwareinc.com", path="PowerShell", ssl=False, port=80, auth="kerberos",
                   configurationName="Microsoft.Exchange"), environ=ENV)
    assert exchange.endpoint == "http://ex01.litwareinc.com:80/PowerShell"
    assert exchange.wsman_arguments()["auth"] == "kerberos" and exchange.configuration_name == "Microsoft.Exchange"


def test_native_command_settings() -> None:
    default = settings_from_connection(connection(), environ=ENV)
    assert (default.native_configuration_name, default.native_port, default.allow_cmdlets) == (
        DEFAULT_NATIVE_CONFIGURATION, None, ()) and DEFAULT_NATIVE_CONFIGURATION == "Microsoft.PowerShell"
    for off in (None, "", "  "):
        s = settings_from_connection(connection(nativeConfigurationName=off), environ=ENV)
        assert s.native_configuration_name is None and s.native_settings() is None
    custom = settings_from_connection(connection(nativeConfigurationName="Reconcile.Admin", nativePort=15985,
                                                 allowCmdlets=["iisreset", "Get-CsUser"]), environ=ENV)
    assert custom.allow_cmdlets == ("iisreset", "Get-CsUser")
    native = custom.native_settings()
    assert native is not None and native.configuration_name == "Reconcile.Admin" and native.endpoint == (
        f"https://{SERVER}:15985/wsman")


@pytest.mark.parametrize("values,endpoint", [
    ({}, f"https://{SERVER}:5986/wsman"),  # the same listener
    ({"port": 5999}, f"https://{SERVER}:5999/wsman"),  # the same listener, its port
    ({"path": "/WSMAN/", "ssl": False}, f"http://{SERVER}:5985/wsman"),
    ({"path": "OcsPowershell", "port": 443}, f"https://{SERVER}:5986/wsman"),  # IIS: the WinRM listener instead
    ({"path": "PowerShell", "port": 80, "ssl": False, "configuration_name": "Microsoft.Exchange"},
     f"http://{SERVER}:5985/wsman"),
    ({"path": "PowerShell", "port": 80, "ssl": False, "native_port": 5986}, f"http://{SERVER}:5986/wsman"),
])
def test_native_settings_reach_the_server_s_wsman_listener(values: dict[str, Any], endpoint: str) -> None:
    base = settings(**values)
    native = base.native_settings()
    assert native is not None and native.endpoint == endpoint
    assert (native.configuration_name, native.max_runspaces, native.server, native.auth) == (
        "Microsoft.PowerShell", 1, SERVER, base.auth)
    assert native.password is base.password and PASSWORD not in repr(native)


def test_kerberos_ticket_cache_needs_no_credentials() -> None:
    s = settings_from_connection(connection(auth="kerberos"), environ={})
    assert s.username is None and s.password is None


@pytest.mark.parametrize("conn,environ,expected", [
    (connection(auth="ntlm"), {}, "auth ntlm needs a username and password: set the environment variable(s) "
                                  f"{DEFAULT_USERNAME_ENV} and {DEFAULT_PASSWORD_ENV}"),
    (connection(), {DEFAULT_USERNAME_ENV: USER}, f"set the environment variable(s) {DEFAULT_PASSWORD_ENV}"),
    (connection(usernameEnv="MY_USER"), {DEFAULT_PASSWORD_ENV: PASSWORD}, "set the environment variable(s) MY_USER"),
    (connection(auth="basic", ssl=False), ENV, "connection.ssl must be true with auth: basic"),
    (connection(auth="bogus"), ENV, "connection.auth must be one of"),
    (connection(port="5986"), ENV, "connection.port must be an integer"),
    (connection(readTimeout=10, operationTimeout=20), ENV, "readTimeout must be longer than operationTimeout"),
    (connection(secret="x"), ENV, "unknown winrm connection setting(s): secret"),
    (connection(server=""), ENV, "connection.server must be a non-empty string"),
    (connection(server="https://fe01/OcsPowershell"), ENV, "connection.server must be a host name only"),
    (connection(path="/wsman?x=1"), ENV, "connection.path must be a URL path"),
    (connection(usernameEnv="not a name"), ENV, "must be the name of an environment variable"),
    (connection(certificateValidation=False, caBundle="ca.pem"), ENV, "caBundle makes no sense"),
    (connection(caBundle="missing.pem"), ENV, "caBundle names no readable file"),
    (connection(certificatePem="c.pem"), ENV, "certificatePem is only used with auth: certificate"),
    (connection(auth="certificate"), ENV, "auth: certificate needs connection.certificatePem"),
    (connection(nativeConfigurationName=3), ENV, "connection.nativeConfigurationName must be a session configuration "
                                                 "name (such as Microsoft.PowerShell), or null to disable"),
    (connection(nativePort=70000), ENV, "connection.nativePort must be at most 65535"),
    (connection(nativePort=5985, nativeConfigurationName=None), ENV, "nativePort makes no sense with native commands "
                                                                     "disabled"),
    (connection(allowCmdlets=["Get-X; rm"]), ENV, "connection.allowCmdlets must be a list of cmdlet names"),
    (connection(allowCmdlets="iisreset"), ENV, "connection.allowCmdlets must be a list"),
], ids=lambda v: "" if not isinstance(v, str) else v[:30])
def test_bad_settings_are_refused_clearly(conn: dict[str, Any], environ: dict[str, str], expected: str,
                                          tmp_path: Path) -> None:
    with pytest.raises(TransportError) as raised:
        settings_from_connection(conn, target="litware-pool", environ=environ, base=tmp_path)
    assert expected in str(raised.value)
    assert str(raised.value).startswith("target 'litware-pool': ")
    assert PASSWORD not in str(raised.value)


def write_private(path: Path, text: str, mode: int) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_credential_file_0600_is_read(tmp_path: Path) -> None:
    write_private(tmp_path / "creds", f"# reconcile\nusername = {USER}\n\npassword={PASSWORD}\n", 0o600)
    s = settings_from_connection(connection(credentialFile="creds", auth="ntlm"), environ={}, base=tmp_path)
    assert s.username == USER and s.password is not None and s.password.reveal() == PASSWORD
    assert PASSWORD not in repr(s) and PASSWORD not in str(s)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_credential_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_private(tmp_path / "creds", f"username={USER}\npassword={PASSWORD}\n", mode)
    with pytest.raises(TransportError) as raised:
        read_credential_file(path)
    assert f"readable or writable by group or others (mode {mode:04o}); run `chmod 600 {path}`" in str(raised.value)
    assert PASSWORD not in str(raised.value)


@pytest.mark.parametrize("text,expected", [
    (f"username={USER}\n{PASSWORD}\n", ":2: expected a `username=...` or `password=...` line"),
    (f"username={USER}\nsecret={PASSWORD}\n", ":2: expected"),
    (f"username={USER}\n", "needs both a username=... and a password=... line"),
    (f"username={USER}\npassword={PASSWORD}\npassword={PASSWORD}\n", ":3: password is given twice"),
])
def test_malformed_credential_files_never_echo_a_value(tmp_path: Path, text: str, expected: str) -> None:
    path = write_private(tmp_path / "creds", text, 0o600)
    with pytest.raises(TransportError) as raised:
        read_credential_file(path)
    assert expected in str(raised.value) and PASSWORD not in str(raised.value)


def test_credential_file_and_environment_names_are_exclusive(tmp_path: Path) -> None:
    write_private(tmp_path / "creds", f"username={USER}\npassword={PASSWORD}\n", 0o600)
    with pytest.raises(TransportError, match=r"either connection\.credentialFile or"):
        settings_from_connection(connection(credentialFile="creds", passwordEnv="P"), environ=ENV, base=tmp_path)
    with pytest.raises(TransportError, match="cannot read"):
        settings_from_connection(connection(credentialFile="nope"), environ=ENV, base=tmp_path)


def test_the_password_never_shows_in_reprs_or_pickles() -> None:
    s = settings()
    transport = WinRMTransport(s)
    for text in (repr(s), str(s), repr(transport), str(transport), repr(s.password), str(s.password)):
        assert PASSWORD not in text
    assert repr(s.password) == MASK
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_ca_bundle_becomes_pypsrp_cert_validation(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    s = settings_from_connection(connection(caBundle="ca.pem"), environ=ENV, base=tmp_path)
    assert s.cert_validation == str(tmp_path / "ca.pem")
    pool = pypsrp_pool(s)
    assert pool.connection.transport.cert_validation == str(tmp_path / "ca.pem")  # type: ignore[attr-defined]
    off = settings_from_connection(connection(certificateValidation=False), environ=ENV)
    assert pypsrp_pool(off).connection.transport.cert_validation is False  # type: ignore[attr-defined]


def test_password_auth_reaches_pypsrp() -> None:
    pool: Any = pypsrp_pool(settings(auth="ntlm"))
    transport = pool.connection.transport
    assert (transport.username, transport.password, transport.auth) == (USER, PASSWORD, "ntlm")


def test_certificate_auth_settings_pass_through(tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_text("cert", encoding="utf-8")
    write_private(tmp_path / "client.key", "key", 0o600)
    conn = connection(auth="certificate", certificatePem="client.pem", certificateKeyPem="client.key")
    s = settings_from_connection(conn, environ=ENV, base=tmp_path)
    assert s.username is None and s.password is None, "certificate auth never picks up the password variables"
    pool: Any = pypsrp_pool(s)
    transport = pool.connection.transport
    assert (transport.auth, transport.certificate_pem, transport.certificate_key_pem) == (
        "certificate", str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
    assert transport.username is None and transport.password is None
    (tmp_path / "client.key").chmod(0o644)
    with pytest.raises(TransportError, match=r"certificateKeyPem: .* readable or writable by group or others"):
        settings_from_connection(conn, environ=ENV, base=tmp_path)
    with pytest.raises(TransportError, match="ssl must be true with auth: certificate"):
        settings_from_connection({**conn, "ssl": False}, environ=ENV, base=tmp_path)


def test_the_schema_refuses_basic_without_tls_and_unknown_fields() -> None:
    validator = Draft202012Validator(WinRMTransport.connection_schema)
    Draft202012Validator.check_schema(WinRMTransport.connection_schema)
    ok = {"server": SERVER, "path": "OcsPowershell", "port": 443, "auth": "negotiate"}
    assert not list(validator.iter_errors(ok))
    assert not list(validator.iter_errors({"server": SERVER, "auth": "basic"}))
    assert list(validator.iter_errors({"server": SERVER, "auth": "basic", "ssl": False}))
    assert list(validator.iter_errors({"server": SERVER, "password": PASSWORD}))
    assert list(validator.iter_errors({"server": SERVER, "auth": "certificate"}))
    assert list(validator.iter_errors({"server": SERVER, "path": "/wsman?x=$(y)"}))
    for ok_native in ({"nativeConfigurationName": None}, {"nativeConfigurationName": ""},
                      {"nativeConfigurationName": "Microsoft.PowerShell", "nativePort": 5985},
                      {"allowCmdlets": ["iisreset", "Get-CsUser", "appcmd.exe"]}):
        assert not list(validator.iter_errors({"server": SERVER, **ok_native})), ok_native
    for bad_native in ({"nativeConfigurationName": 3}, {"nativePort": 0}, {"allowCmdlets": ["a b"]},
                       {"allowCmdlets": ["..\\cmd"]}, {"allowCmdlets": "iisreset"}):
        assert list(validator.iter_errors({"server": SERVER, **bad_native})), bad_native


def test_manifest_errors_for_a_winrm_target(tmp_path: Path) -> None:
    from reconciler.errors import ManifestError
    from reconciler.manifest import load_manifest

    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "apiVersion: reconciler/v1\n"
        "targets:\n"
        "  pool:\n"
        "    provider: skype\n"
        "    connection:\n"
        "      transport: winrm\n"
        f"      server: {SERVER}\n"
        "      auth: basic\n"
        "      ssl: false\n"
        "resources: []\n", encoding="utf-8")
    with pytest.raises(ManifestError) as raised:
        load_manifest(manifest, Registry.from_entry_points())
    assert "m.yaml:9: targets.pool.connection.ssl: false is not allowed with auth: basic" in str(raised.value)


def test_a_manifest_can_disable_native_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.manifest import load_manifest

    monkeypatch.setenv(DEFAULT_USERNAME_ENV, USER)
    monkeypatch.setenv(DEFAULT_PASSWORD_ENV, PASSWORD)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "apiVersion: reconciler/v1\n"
        "targets:\n"
        "  exchange:\n"
        "    provider: exchange\n"
        "    connection:\n"
        "      transport: winrm\n"
        "      server: ex01.litwareinc.com\n"
        "      path: PowerShell\n"
        "      port: 80\n"
        "      ssl: false\n"
        "      auth: kerberos\n"
        "      configurationName: Microsoft.Exchange\n"
        "      nativeConfigurationName: null\n"
        "      allowCmdlets: [Get-Mailbox]\n"
        "resources: []\n", encoding="utf-8")
    loaded = load_manifest(manifest, Registry.from_entry_points())
    transport = WinRMTransport.from_target(loaded.targets["exchange"])
    assert transport.settings.native_configuration_name is None
    assert "connects to the restricted Microsoft.Exchange endpoint" in (transport.unsupported(
        Command("iisreset", native=True)) or "")


def test_from_target_through_the_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEFAULT_USERNAME_ENV, USER)
    monkeypatch.setenv(DEFAULT_PASSWORD_ENV, PASSWORD)
    registry = Registry.from_entry_points()
    assert registry.transports["winrm"] is WinRMTransport
    target = TargetSpec("litware-pool", "skype", connection(path="OcsPowershell", port=443))
    transport = registry.open_transport(target)
    assert isinstance(transport, WinRMTransport)
    assert transport.settings.endpoint == f"https://{SERVER}:443/OcsPowershell"
    assert transport.pools_opened == 0, "nothing is contacted until the first invoke"
    transport.close()


def test_missing_pypsrp_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pypsrp", "pypsrp.powershell", "pypsrp.wsman"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(TransportError) as raised:
        WinRMTransport.from_target(TargetSpec("pool", "skype", connection()))
    assert str(raised.value) == ("transport 'winrm' needs the pypsrp package, which is not installed: "
                                 f"{INSTALL_HINT}")
    assert INSTALL_HINT == "pip install 's2s-trust-reconciler[winrm]'"
    with pytest.raises(TransportError, match="reconciler\\[winrm\\]"):
        WinRMTransport(settings()).invoke(DISCOVERY)


def test_the_core_loads_without_pypsrp() -> None:
    code = ("import sys\n"
            "for n in ('pypsrp', 'spnego', 'requests'): sys.modules[n] = None\n"
            "from reconciler.providers.base import Registry\n"
            "from reconciler.manifest import build_schema\n"
            "r = Registry.from_entry_points()\n"
            "assert 'winrm' in r.transports and 'winrm' in str(build_schema(r))\n"
            "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


# ---------------------------------------------------------------------------------------------
# A piped command: Get-SPAppPrincipal ... | Set-SPAppPrincipalPermission ... (the object stays on the server)

SP_SITE = "https://atl-sharepoint-001.litwareinc.com"
EXCHANGE_NAME_ID = "00000002-0000-0ff1-ce00-000000000000@litwareinc.com"
# A deserialized SPAppPrincipal (hand-written; its properties are not documented and are not read).
APP_PRINCIPAL = f"""<Obj RefId="0"><TN RefId="0"><T>Deserialized.Microsoft.SharePoint.SPAppPrincipal</T>
<T>Deserialized.System.Object</T></TN><ToString>{EXCHANGE_NAME_ID}</ToString>
<Props><S N="NameIdentifier">{EXCHANGE_NAME_ID}</S><S N="DisplayName">Exchange</S></Props></Obj>"""


def piped_grant() -> Command:
    from reconciler.commands import Pipe

    return Command("Set-SPAppPrincipalPermission", {"Site": SP_SITE, "Right": "FullControl",
                                                    "Scope": "SiteSubscription", "EnableAppOnlyPolicy": True},
                   switches=frozenset({"EnableAppOnlyPolicy"}),
                   pipe=Pipe(Command("Get-SPAppPrincipal", {"NameIdentifier": EXCHANGE_NAME_ID, "Site": SP_SITE}),
                             "AppPrincipal"))


def principals(count: int) -> Callable[[Invocation], Reply]:
    """A farm whose Get-SPAppPrincipal writes `count` principals when run alone."""
    def handler(invocation: Invocation) -> Reply:
        if [c.cmdlet for c in invocation.commands] == ["Get-SPAppPrincipal"]:
            return Reply(output=[APP_PRINCIPAL] * count)
        return Reply()
    return handler


def test_a_piped_command_counts_its_source_then_runs_one_structured_pipeline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PowerShell, "add_script", lambda *a, **k: pytest.fail("add_script must never be used"))
    r = rig(principals(1))
    (result,) = r.transport.invoke([piped_grant()])
    assert result.ok, result.error
    count, piped = r.endpoint.invocations
    assert [(c.cmdlet, c.parameters) for c in count.commands] == [
        ("Get-SPAppPrincipal", {"NameIdentifier": EXCHANGE_NAME_ID, "Site": SP_SITE, "ErrorAction": "Stop"})]
    assert [(c.cmdlet, c.parameters) for c in piped.commands] == [
        ("Get-SPAppPrincipal", {"NameIdentifier": EXCHANGE_NAME_ID, "Site": SP_SITE, "ErrorAction": "Stop"}),
        ("Select-Object", {"First": 1}),
        ("Set-SPAppPrincipalPermission", {"Site": SP_SITE, "Right": "FullControl", "Scope": "SiteSubscription",
                                          "EnableAppOnlyPolicy": True, "ErrorAction": "Stop"})]
    assert all(c.is_script is False for c in piped.commands)
    assert "AppPrincipal" not in piped.commands[2].parameters  # bound on the server from the pipeline


@pytest.mark.parametrize("count", [0, 2])
def test_a_source_writing_other_than_one_object_leaves_the_command_unsent(count: int) -> None:
    r = rig(principals(count))
    first, after = r.transport.invoke([piped_grant(), Command("Get-CsOAuthServer")], stop_on_error=False)
    assert not first.ok
    assert first.error == (f"Set-SPAppPrincipalPermission : not run: Get-SPAppPrincipal wrote {count} objects for "
                           "-AppPrincipal, exactly one is needed")
    assert after.ok  # without stop_on_error the batch goes on
    sent = [[c.cmdlet for c in i.commands] for i in r.endpoint.invocations]
    assert sent == [["Get-SPAppPrincipal"], ["Get-CsOAuthServer"]]  # the Set never travelled

    r = rig(principals(count))
    results = r.transport.invoke([piped_grant(), Command("Get-CsOAuthServer")])
    assert [x.ok for x in results] == [False]  # stop_on_error: nothing after it


def test_a_failing_source_fails_the_piped_command_with_its_error() -> None:
    def handler(invocation: Invocation) -> Reply:
        return Reply(errors=[error_record("The app principal was not found.")])
    r = rig(handler)
    (result,) = r.transport.invoke([piped_grant()])
    assert not result.ok and result.error == "Get-SPAppPrincipal : The app principal was not found."
    assert len(r.endpoint.invocations) == 1


def test_a_pipe_s_source_must_be_on_the_allow_list_too() -> None:
    r = rig(principals(1), restrict=False)
    r.transport.restrict_to(["Set-SPAppPrincipalPermission"])
    (result,) = r.transport.invoke([piped_grant()])
    assert not result.ok and result.error is not None
    assert "the cmdlet Get-SPAppPrincipal is not on the winrm transport's allow-list" in result.error
    assert r.endpoint.invocations == [] and r.pools_made == []
