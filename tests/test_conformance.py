"""Conformance: every command any provider can emit fits a parameter set of Microsoft's documented syntax.

Over many manifests and live states (generated with hypothesis from each kind's own declaration: its manifest
schema says what a manifest may hold, its Get properties what a server may report), every change the planner
makes is turned into commands by the provider, and each command is bound against the documented syntax of its
cmdlet (reconciler.kinds.syntax, the same data the lab binds against). A command outside every set, a parameter
the cmdlet lacks, or a value of the wrong type fails here with PowerShell's own message. Restores (a removed
object re-created from what was read) are checked the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from reconciler.commands import Command
from reconciler.errors import CommandSyntaxError
from reconciler.kinds.declaration import CmdletKind
from reconciler.kinds.syntax import CmdletSyntax, ParamType
from reconciler.model import (
    DesiredResource,
    DesiredState,
    Ensure,
    LiveResource,
    LiveState,
    ResourceKey,
    SourceLocation,
    TargetSpec,
)
from reconciler.planner import plan_changes
from reconciler.providers.base import Registry

REGISTRY = Registry.from_entry_points()
DECLARING = {name: p for name, p in REGISTRY.providers.items() if getattr(p, "syntax", ())}

GUIDS = ["00000002-0000-0ff1-ce00-000000000000", "00000004-0000-0ff1-ce00-000000000000",
         "00000003-0000-0ff1-ce00-000000000000", "8a1c5e3f-2b7d-4c9e-a6f0-1d2e3f4a5b6c"]
URLS = ["https://autodiscover.contoso.com/autodiscover/metadata/json/1", "https://pool.contoso.com/metadata/json/1",
        "https://accounts.accesscontrol.windows.net/8a1c5e3f-2b7d-4c9e-a6f0-1d2e3f4a5b6c/metadata/json/1"]
TEXT = ["contoso.com", "Full", "x", "Acs", "evoSTS", "O'Brien; Remove-Item -Recurse C:\\"]
THUMBPRINTS = ["E1BDF9AE58C93C75E76C9DD882138FB8FF0FA786", "BC6BF924D6EF046E64F8D1987DC1D7D2F4C0042A"]
DATES = ["2026-05-01T00:00:00Z", "2027-01-01T12:00:00+01:00"]


def syntax_of(provider: object) -> dict[str, CmdletSyntax]:
    return {s.name.casefold(): s for s in getattr(provider, "syntax", ())}


def cmdlet_kinds() -> list[tuple[str, CmdletKind]]:
    found = []
    for name, provider in DECLARING.items():
        module = __import__(type(provider).__module__, fromlist=["DECLARED"])
        found.extend((name, kind) for kind in getattr(module, "DECLARED", {}).values())
    return found


def value_strategy(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(value_strategy(schema.get("items", {"type": "string"})), max_size=3, unique=True)
    pattern = str(schema.get("pattern", ""))
    if "[0-9a-fA-F]{8}" in pattern:
        return st.sampled_from(GUIDS)
    if "https?" in pattern:
        return st.sampled_from(URLS)
    if "{40}" in pattern:
        return st.sampled_from(THUMBPRINTS)
    if r"\d{4}-\d{2}" in pattern:
        return st.sampled_from(DATES)
    return st.sampled_from(TEXT + GUIDS + URLS)


def manifest_fields(kind: CmdletKind) -> st.SearchStrategy[dict[str, Any]]:
    """Any subset of the kind's manifest fields, with values its schema accepts (checked below)."""
    props = kind.schema()["properties"]
    names = [n for n in props if n not in ("target", "kind", "identity", "ensure", "mode", "certificateFile")]
    return st.fixed_dictionaries({}, optional={n: value_strategy(props[n]) for n in names})


def live_fields(kind: CmdletKind) -> st.SearchStrategy[dict[str, Any]]:
    """What a Get may report: every readable field, each set or empty, the form fields exclusive."""
    readable = [p for p in kind.props if p.readable]
    schema = kind.schema()["properties"]

    def for_prop(name: str) -> st.SearchStrategy[Any]:
        value = value_strategy(schema.get(name, {"type": "string"}))
        return value if name in kind.required_when_present else st.one_of(st.none(), value)

    base = st.fixed_dictionaries({p.field: for_prop(p.field) for p in readable})
    if not kind.exclusive:
        return base

    def one_form(fields: dict[str, Any], form: str) -> dict[str, Any]:
        out = {**fields, **{f: None for f in kind.exclusive}}
        out["useOAuthServer"] = False if "useOAuthServer" in kind.exclusive else out.get("useOAuthServer")
        out[form] = True if form == "useOAuthServer" else (URLS[0] if form == "metadataUrl" else "QUJD")
        return out

    return st.builds(one_form, base, st.sampled_from(kind.exclusive))


def check(command: Command, syntax: Mapping[str, CmdletSyntax]) -> None:
    documented = syntax.get(command.cmdlet.casefold())
    assert documented is not None, f"{command.cmdlet} is emitted but not declared"
    if command.native:
        assert documented.native and not command.parameters
        return
    parameters = dict(command.parameters)
    if command.pipe is not None:  # its source must fit too; the parameter it binds takes the source's object
        check(command.pipe.source, syntax)
        param = documented.parameter(command.pipe.parameter)
        assert param is not None and param.type is ParamType.OBJECT, f"{command.pipe.parameter} takes no object"
        parameters[command.pipe.parameter] = {"piped": True}
    try:
        documented.bind(parameters)
    except CommandSyntaxError as exc:
        pytest.fail(f"{command.display()}: {exc} (documented: {documented.source})")
    for name in command.switches:
        param = documented.parameter(name)
        assert param is not None and param.type is ParamType.SWITCH


KINDS = cmdlet_kinds()


@pytest.mark.parametrize("provider_name,kind", KINDS, ids=[f"{p}.{k.kind}" for p, k in KINDS])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_every_planned_command_fits_a_documented_parameter_set(provider_name: str, kind: CmdletKind,
                                                               data: st.DataObject) -> None:
    provider = DECLARING[provider_name]
    identity = kind.singleton or data.draw(st.sampled_from(["microsoft.exchange", "Exchange Online", "o'x"]))
    fields = data.draw(manifest_fields(kind))
    ensure = data.draw(st.sampled_from([Ensure.PRESENT, Ensure.ABSENT])) if not kind.singleton else Ensure.PRESENT
    document = {"target": "t", "kind": kind.kind, "identity": identity, **fields}
    if ensure is Ensure.ABSENT:
        document["ensure"] = "absent"
    assume(jsonschema.Draft202012Validator(kind.schema()).is_valid(document))
    target = TargetSpec("t", provider_name, {"transport": "lab"},
                        prune=frozenset({kind.kind}) if data.draw(st.booleans()) else frozenset())
    key = ResourceKey("t", kind.kind, identity)
    declared = data.draw(st.booleans())
    desired = DesiredState("m.yaml", "0", {"t": target},
                           (DesiredResource(key, ensure, fields, SourceLocation("m.yaml", 1, "resources[0]")),)
                           if declared else ())
    live: dict[ResourceKey, LiveResource] = {}
    if kind.singleton or data.draw(st.booleans()):
        record = data.draw(live_fields(kind))
        if kind.new is not None:  # a server holds only objects some New parameter set could have made
            try:
                kind.new_command(identity, record)
            except ValueError:
                assume(False)
        live[key] = LiveResource(key, record)
    registry = Registry(providers={provider_name: provider})
    syntax = syntax_of(provider)
    for change in plan_changes(desired, {"t": LiveState("t", live)}, registry):
        for command in change.commands:
            check(command, syntax)
    for record in live.values():
        for command in provider.restore_commands(record):
            if kind.new is not None:
                check(command, syntax)


def test_the_check_finds_a_command_outside_every_set() -> None:
    syntax = syntax_of(DECLARING["skype"])
    with pytest.raises(pytest.fail.Exception, match="Parameter set cannot be resolved"):
        check(Command("New-CsPartnerApplication", {"Identity": "x", "MetadataUrl": URLS[0],
                                                   "ApplicationIdentifier": GUIDS[0], "ApplicationTrustLevel": "Full"}),
              syntax)
    with pytest.raises(pytest.fail.Exception, match="cannot be found that matches parameter name 'Realm'"):
        check(Command("Set-CsPartnerApplication", {"Identity": "x", "Realm": "r"}), syntax)


def test_every_provider_declares_what_it_runs() -> None:
    assert {"skype"} <= set(DECLARING)
    for provider in DECLARING.values():
        for documented in provider.syntax:  # type: ignore[attr-defined]
            assert documented.source, f"{documented.name} has no source"


@pytest.mark.parametrize("right", ["Read", "Write", "Manage", "FullControl"])
@pytest.mark.parametrize("scope", ["Site", "SiteCollection", "SiteSubscription"])
@pytest.mark.parametrize("app_only", [True, False])
def test_every_app_principal_grant_fits_the_documented_sets(right: str, scope: str, app_only: bool) -> None:
    from reconciler.providers.sharepoint import APP_PRINCIPAL_PERMISSION

    settings = {"grants": [{"issuer": "Exchange", "nameIdentifier": "00000002-0000-0ff1-ce00-000000000000@o'x",
                            "site": "https://sp.litwareinc.com", "right": right, "scope": scope,
                            "enableAppOnlyPolicy": app_only}]}
    assert jsonschema.Draft202012Validator(APP_PRINCIPAL_PERMISSION.schema).is_valid(settings)
    (command,) = APP_PRINCIPAL_PERMISSION.commands(settings)
    check(command, syntax_of(DECLARING["sharepoint"]))
    assert ("EnableAppOnlyPolicy" in command.parameters) is app_only


def test_the_check_refuses_a_piped_command_whose_parameter_takes_no_object() -> None:
    from reconciler.commands import Pipe

    syntax = syntax_of(DECLARING["sharepoint"])
    source = Command("Get-SPAppPrincipal", {"NameIdentifier": "a@b", "Site": "https://sp"})
    with pytest.raises(AssertionError, match="Site takes no object"):
        check(Command("Set-SPAppPrincipalPermission", {"AppPrincipal": {}, "Right": "Read", "Scope": "Site"},
                      pipe=Pipe(source, "Site")), syntax)
    with pytest.raises(pytest.fail.Exception, match="missing mandatory parameters: Site"):
        check(Command("Get-SPAppPrincipal", {"NameIdentifier": "a@b"}), syntax)
