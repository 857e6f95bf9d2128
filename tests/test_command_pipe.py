"""A command that takes the one object another cmdlet writes (reconciler.commands.Pipe): its forms for people and
for machines, a saved plan, and how the lab runs it (Get-SPAppPrincipal piped into Set-SPAppPrincipalPermission).

The pwsh runner's and WinRM's handling are tested with the other tests of those transports
(tests/test_transport_pwsh.py, tests/test_transport_winrm.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.changes import HandlerRun
from reconciler.commands import Command, Pipe, pipe_count_error
from reconciler.lab import certs
from reconciler.lab import sharepoint as lab
from reconciler.lab.emulator import CmdletContext, execute_batch
from reconciler.metadata import MetadataDocument, SigningKey
from reconciler.plan import FORMAT_VERSION, Plan
from reconciler.render.json_plan import plan_to_json
from reconciler.render.saved import command_from_json, plan_from_document
from reconciler.render.text import render_plan

EXCHANGE = "00000002-0000-0ff1-ce00-000000000000"
NAME_ID = f"{EXCHANGE}@litwareinc.com"
SITE = "https://atl-sharepoint-001.litwareinc.com"
METADATA = "https://atl-exchange-001.litwareinc.com/autodiscover/metadata/json/1"


def grant(name_identifier: str = NAME_ID, *, right: str = "FullControl", scope: str = "SiteSubscription",
          app_only: bool = True) -> Command:
    parameters: dict[str, Any] = {"Site": SITE, "Right": right, "Scope": scope}
    if app_only:
        parameters["EnableAppOnlyPolicy"] = True
    return Command("Set-SPAppPrincipalPermission", parameters, switches=frozenset({"EnableAppOnlyPolicy"}),
                   pipe=Pipe(Command("Get-SPAppPrincipal", {"NameIdentifier": name_identifier, "Site": SITE}),
                             "AppPrincipal"))


# --- the contract --------------------------------------------------------------------------------------------


def test_display_is_one_readable_powershell_pipeline() -> None:
    assert grant().display() == (
        f"Get-SPAppPrincipal -NameIdentifier '{NAME_ID}' -Site '{SITE}' | Set-SPAppPrincipalPermission "
        f"-Site '{SITE}' -Right 'FullControl' -Scope 'SiteSubscription' -EnableAppOnlyPolicy")
    quoted = grant("it's@realm").display()
    assert "-NameIdentifier 'it''s@realm'" in quoted  # a value is quoted as data, never spliced


def test_to_json_carries_the_source_and_the_parameter_and_reads_back_equal() -> None:
    document = grant().to_json()
    assert document == {
        "cmdlet": "Set-SPAppPrincipalPermission",
        "parameters": {"Site": SITE, "Right": "FullControl", "Scope": "SiteSubscription", "EnableAppOnlyPolicy": True},
        "pipe": {"source": {"cmdlet": "Get-SPAppPrincipal", "parameters": {"NameIdentifier": NAME_ID, "Site": SITE}},
                 "parameter": "AppPrincipal"},
    }
    back = command_from_json(json.loads(json.dumps(document)))
    assert back.pipe == grant().pipe and back.parameters == grant().parameters
    assert "pipe" not in Command("Get-SPAppPrincipal", {"Site": SITE}).to_json()


def test_a_piped_parameter_cannot_also_be_given_and_only_cmdlets_pipe() -> None:
    source = Command("Get-SPAppPrincipal", {"NameIdentifier": NAME_ID, "Site": SITE})
    with pytest.raises(ValueError, match="-AppPrincipal is both piped and given"):
        Command("Set-SPAppPrincipalPermission", {"appprincipal": "x"}, pipe=Pipe(source, "AppPrincipal"))
    with pytest.raises(ValueError, match="only a cmdlet takes a pipe"):
        Command("iisreset", native=True, pipe=Pipe(source, "AppPrincipal"))
    with pytest.raises(ValueError, match="only a cmdlet takes a pipe"):
        Command("Set-SPAppPrincipalPermission", pipe=Pipe(Command("iisreset", native=True), "AppPrincipal"))
    assert grant().all_cmdlets == ("Get-SPAppPrincipal", "Set-SPAppPrincipalPermission")


def test_a_saved_plan_keeps_the_pipe_and_a_format_1_0_plan_still_reads() -> None:
    plan = Plan("m.yaml", "0" * 64, ("litware-sharepoint",), {}, (),
                handlers=(HandlerRun("litware-sharepoint", "appPrincipalPermission",
                                     ("litware-sharepoint.TrustedSecurityTokenIssuer.Exchange",), (grant(),)),))
    document = json.loads(json.dumps(plan_to_json(plan, lambda change: None)))
    assert FORMAT_VERSION == "1.1" and document["format_version"] == "1.1"
    (saved,) = document["handlers"]
    assert saved["commands"] == [grant().to_json()]
    back = plan_from_document(document)
    assert back.handlers[0].commands[0].pipe == grant().pipe
    assert f"> {grant().display()}" in render_plan(back, lambda change: None)

    old = dict(document, format_version="1.0")  # a 1.0 file has no pipes: its commands read as before
    old["handlers"] = [dict(saved, commands=[{"cmdlet": "iisreset-like", "parameters": {"X": "y"}}])]
    assert plan_from_document(old).handlers[0].commands == (Command("iisreset-like", {"X": "y"}),)


# --- the lab ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def der() -> bytes:
    return certs.make_certificate("atl-exchange-001.litwareinc.com")


def farm(der: bytes) -> tuple[dict[str, Any], CmdletContext]:
    state = {"hosts": {"sp": {"platform": "sharepoint", "objects": lab.empty_objects()}}, "failures": []}

    def fetch(url: str) -> MetadataDocument:
        return MetadataDocument(url, EXCHANGE, "litwareinc.com", NAME_ID, "Exchange", (SigningKey(None, der),))
    return state, CmdletContext(fetch=fetch)


def run(state: dict[str, Any], context: CmdletContext, *commands: Command) -> list[Any]:
    return execute_batch(state, "sp", commands, stop_on_error=True, context=context)


def test_the_lab_grants_to_the_app_principal_of_a_registered_issuer(der: bytes) -> None:
    state, context = farm(der)
    made, granted = run(state, context, Command("New-SPTrustedSecurityTokenIssuer",
                                                {"Name": "Exchange", "MetadataEndPoint": METADATA}), grant())
    assert made.ok and granted.ok, granted.error
    assert granted.command == grant() and granted.output == ()
    host = state["hosts"]["sp"]
    assert host["objects"]["AppPrincipalPermission"] == [{
        "Identity": f"{NAME_ID}|SiteSubscription|{SITE}", "NameIdentifier": NAME_ID, "Site": SITE,
        "Scope": "SiteSubscription", "Right": "FullControl", "AppOnlyPolicy": True}]
    assert host["calls"]["Get-SPAppPrincipal"] == 1 and host["calls"]["Set-SPAppPrincipalPermission"] == 1

    # the same principal, site and scope again: the right is set, not added; an omitted switch leaves the policy
    (again,) = run(state, context, grant(NAME_ID.upper(), right="read", app_only=False))
    assert again.ok, again.error
    (stored,) = host["objects"]["AppPrincipalPermission"]
    assert stored["Right"] == "Read" and stored["AppOnlyPolicy"] is True


def test_the_lab_get_writes_the_principal_and_refuses_an_unknown_name_identifier(der: bytes) -> None:
    state, context = farm(der)
    run(state, context, Command("New-SPTrustedSecurityTokenIssuer", {"Name": "Exchange", "MetadataEndPoint": METADATA}))
    (found,) = run(state, context, Command("Get-SPAppPrincipal", {"NameIdentifier": NAME_ID, "Site": SITE}))
    assert found.output == ({"NameIdentifier": NAME_ID, "DisplayName": "Exchange"},)

    (unknown,) = run(state, context, grant(f"{EXCHANGE}@elsewhere"))
    assert not unknown.ok
    assert unknown.error == (f"Get-SPAppPrincipal : The app principal with name identifier '{EXCHANGE}@elsewhere' "
                             "was not found.")
    (no_site,) = run(state, context, Command("Get-SPAppPrincipal", {"NameIdentifier": NAME_ID, "Site": "sp"}))
    assert no_site.error == "Get-SPAppPrincipal : Cannot find an SPWeb object with Id or Url: sp."
    assert state["hosts"]["sp"]["objects"]["AppPrincipalPermission"] == []


@pytest.mark.parametrize("field,value,message", [
    ("Right", "Full Control", "Unable to match the identifier name Full Control to a valid enumerator name. Specify "
                              "one of the following enumerator names and try again: Read, Write, Manage, FullControl"),
    ("Scope", "Farm", "Specify one of the following enumerator names and try again: Site, SiteCollection, "
                      "SiteSubscription"),
    ("EnableAppOnlyPolicy", "yes", "Boolean parameters accept only Boolean values"),
])
def test_the_lab_binds_right_scope_and_the_switch_as_documented(der: bytes, field: str, value: Any,
                                                                 message: str) -> None:
    state, context = farm(der)
    run(state, context, Command("New-SPTrustedSecurityTokenIssuer", {"Name": "Exchange", "MetadataEndPoint": METADATA}))
    command = grant()
    (result,) = run(state, context, Command(command.cmdlet, {**command.parameters, field: value}, pipe=command.pipe))
    assert not result.ok and message in str(result.error)
    assert result.error.startswith("Set-SPAppPrincipalPermission : ")
    assert state["hosts"]["sp"]["objects"]["AppPrincipalPermission"] == []


@pytest.mark.parametrize("issuers", [0, 2])
def test_a_source_that_writes_other_than_one_object_leaves_the_command_unrun(der: bytes, issuers: int) -> None:
    state, context = farm(der)
    for name in ["Exchange", "Exchange 2"][:issuers]:
        run(state, context, Command("New-SPTrustedSecurityTokenIssuer", {"Name": name, "MetadataEndPoint": METADATA}))
    command = Command("Set-SPAppPrincipalPermission", {"Site": SITE, "Right": "Read", "Scope": "Site"},
                      pipe=Pipe(Command("Get-SPTrustedSecurityTokenIssuer"), "AppPrincipal"))
    (result,) = run(state, context, command)
    assert not result.ok
    assert result.error == pipe_count_error(command, issuers) == (
        f"Set-SPAppPrincipalPermission : not run: Get-SPTrustedSecurityTokenIssuer wrote {issuers} objects for "
        "-AppPrincipal, exactly one is needed")
    assert state["hosts"]["sp"]["objects"]["AppPrincipalPermission"] == []
    assert "Set-SPAppPrincipalPermission" in state["hosts"]["sp"]["calls"]  # counted as sent, never run


def test_the_lab_remove_takes_the_grant_away(der: bytes) -> None:
    state, context = farm(der)
    run(state, context, Command("New-SPTrustedSecurityTokenIssuer", {"Name": "Exchange", "MetadataEndPoint": METADATA}),
        grant())
    remove = Command("Remove-SPAppPrincipalPermission", {"Site": SITE, "Scope": "SiteSubscription"},
                     pipe=grant().pipe)
    (removed,) = run(state, context, remove)
    assert removed.ok, removed.error
    assert state["hosts"]["sp"]["objects"]["AppPrincipalPermission"] == []


def test_a_snapshot_target_refuses_a_piped_command_even_when_it_ends_in_a_get(tmp_path: Any) -> None:
    from reconciler.transports.snapshot import SnapshotTransport

    transport = SnapshotTransport(tmp_path, target="farm")
    piped_get = Command("Get-SPTrustedSecurityTokenIssuer", pipe=grant().pipe)
    assert transport.unsupported(piped_get) == ("the snapshot target 'farm' is read-only: plan and discover only; "
                                                "apply needs a real transport (Get-SPTrustedSecurityTokenIssuer is "
                                                "not run)")
    assert transport.unsupported(Command("Get-SPTrustedSecurityTokenIssuer")) is None
