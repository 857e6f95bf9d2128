"""The Office 365 provider on its own: collection semantics, certificate checks, discovery mapping."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from reconciler.errors import DiscoveryError, FieldProblem
from reconciler.kinds.spec import DiagnoseContext, Finding
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
from reconciler.providers.office365 import Office365Provider, _prepare, key_id_for
from reconciler.transports.base import Command, CommandResult

SKYPE = "00000004-0000-0ff1-ce00-000000000000"
FIXTURES = Path(__file__).parent / "fixtures" / "graph"
NOW = datetime.datetime(2026, 11, 23, tzinfo=datetime.UTC)


def cert(cn: str, start: datetime.datetime, end: datetime.datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    built = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
             .sign(key, hashes.SHA256()))
    return built.public_bytes(Encoding.DER)


def thumb(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


def live_key(der: bytes, key_id: str) -> dict[str, Any]:
    return {"keyId": key_id, "key": base64.b64encode(der).decode(), "type": "AsymmetricX509Cert", "usage": "Verify",
            "displayName": "CN=old", "startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2027-01-01T00:00:00Z"}


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, bytes]:
    made = {
        "old.cer": cert("old", NOW - datetime.timedelta(days=300), NOW + datetime.timedelta(days=400)),
        "new.cer": cert("new", NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=700)),
        "soon.cer": cert("soon", NOW - datetime.timedelta(days=300), NOW + datetime.timedelta(days=10)),
        "expired.cer": cert("expired", NOW - datetime.timedelta(days=300), NOW - datetime.timedelta(days=1)),
        "future.cer": cert("future", NOW + datetime.timedelta(days=5), NOW + datetime.timedelta(days=500)),
    }
    for name, der in made.items():
        (tmp_path / name).write_bytes(der)
    return made


def desired(tmp_path: Path, **fields: Any) -> DesiredResource:
    prepared = _prepare(dict(fields), tmp_path)
    return DesiredResource(ResourceKey("tenant", "ServicePrincipal", SKYPE), Ensure.PRESENT, prepared,
                           SourceLocation("m.yaml", 5, "resources[0]"))


def plan(want: DesiredResource, live_fields: dict[str, Any] | None) -> Any:
    target = TargetSpec("tenant", "office365", {"transport": "graph"})
    state = DesiredState("m.yaml", "h", {"tenant": target}, (want,))
    live = {} if live_fields is None else {want.key: LiveResource(want.key, live_fields)}
    registry = Registry(providers={"office365": Office365Provider()})
    return plan_changes(state, {"tenant": LiveState("tenant", live)}, registry)


def b64(der: bytes) -> str:
    return base64.b64encode(der).decode()


def kept(der: bytes) -> dict[str, Any]:
    """A key that stays, as Microsoft's script re-sends it: exactly {key, type, usage}."""
    return {"key": b64(der), "type": "AsymmetricX509Cert", "usage": "Verify"}


def test_adding_a_key_re_sends_every_key_that_stays(tmp_path: Path, certs: dict[str, bytes]) -> None:
    other = cert("someone-else", NOW, NOW + datetime.timedelta(days=90))
    live = {"accountEnabled": True, "servicePrincipalNames": [SKYPE],
            "keyCredentials": [live_key(certs["old.cer"], "k-old"), live_key(other, "k-other")]}
    (change,) = plan(desired(tmp_path, credentials=[{"certificateFile": "new.cer"}]), live)
    (command,) = change.commands
    assert command.cmdlet == "PATCH" and command.parameters["path"] == f"/servicePrincipals(appId='{SKYPE}')"
    new_id = key_id_for(SKYPE, thumb(certs["new.cer"]))
    assert command.parameters["body"] == {"keyCredentials": [
        kept(certs["old.cer"]), kept(other),
        {"displayName": "CN=new", "keyId": new_id, "type": "AsymmetricX509Cert", "usage": "Verify",
         "key": b64(certs["new.cer"])}]}
    # never customKeyIdentifier (Graph defaults it to the thumbprint) nor dates; the keyId is fixed
    assert uuid.UUID(new_id).version == 5 and new_id == key_id_for(SKYPE.upper(), thumb(certs["new.cer"]).lower())
    assert new_id != key_id_for("00000002-0000-0ff1-ce00-000000000000", thumb(certs["new.cer"]))
    # the plan shows thumbprints, never key material
    shown = command.display()
    assert thumb(certs["new.cer"]) in shown and base64.b64encode(certs["new.cer"]).decode()[:40] not in shown


def test_kept_keys_read_the_same_before_and_after_in_the_plan(tmp_path: Path, certs: dict[str, bytes]) -> None:
    """Re-sent as {key, type, usage}, a kept key still shows its subject and end date (the certificate's)."""
    live = {"keyCredentials": [live_key(certs["old.cer"], "k-old")]}
    (change,) = plan(desired(tmp_path, credentials=[{"certificateFile": "new.cer"}]), live)
    spec = Office365Provider().kinds["ServicePrincipal"]
    display = spec.field("keyCredentials").display
    assert display is not None and change.before is not None and change.after is not None
    before, after = display(change.before["keyCredentials"]), display(change.after["keyCredentials"])
    assert before[0] == after[0] and before[0].startswith(thumb(certs["old.cer"]) + " (CN=old, until ")
    assert after[1].startswith(thumb(certs["new.cer"]) + " (CN=new, until ")


def test_authoritative_list_removes_undeclared_keys_and_rotation_keeps_both(tmp_path: Path,
                                                                            certs: dict[str, bytes]) -> None:
    live = {"keyCredentials": [live_key(certs["old.cer"], "k-old")]}
    both = desired(tmp_path, credentials=[{"certificateFile": "old.cer"}, {"certificateFile": "new.cer"}],
                   credentialsAuthoritative=True)
    (change,) = plan(both, live)
    assert {thumb(base64.b64decode(k["key"])) for k in change.commands[0].parameters["body"]["keyCredentials"]} == {
        thumb(certs["old.cer"]), thumb(certs["new.cer"])}
    only_new = desired(tmp_path, credentials=[{"certificateFile": "new.cer"}], credentialsAuthoritative=True)
    live_both = {"keyCredentials": [live_key(certs["old.cer"], "k-old"), live_key(certs["new.cer"], "k-new")]}
    (change,) = plan(only_new, live_both)
    assert change.commands[0].parameters["body"] == {"keyCredentials": [kept(certs["new.cer"])]}
    # not authoritative: the old key simply stays, nothing to do
    assert plan(desired(tmp_path, credentials=[{"certificateFile": "new.cer"}]), live_both) == ()


def test_spns_declared_are_ensured_others_kept_unless_authoritative(tmp_path: Path) -> None:
    live = {"servicePrincipalNames": [SKYPE, f"{SKYPE}/other.example"]}
    pool = f"{SKYPE}/lync.contoso.com"
    (change,) = plan(desired(tmp_path, servicePrincipalNames=[pool]), live)
    assert change.commands[0].parameters["body"] == {"servicePrincipalNames": [SKYPE, f"{SKYPE}/other.example", pool]}
    (change,) = plan(desired(tmp_path, servicePrincipalNames=[pool], servicePrincipalNamesAuthoritative=True), live)
    assert change.commands[0].parameters["body"] == {"servicePrincipalNames": [pool]}
    assert plan(desired(tmp_path, servicePrincipalNames=[SKYPE.upper()]), live) == ()


def test_account_enabled_is_patched_alone(tmp_path: Path) -> None:
    (change,) = plan(desired(tmp_path, accountEnabled=True), {"accountEnabled": False})
    assert change.commands[0].parameters["body"] == {"accountEnabled": True}


def findings(tmp_path: Path, files: Sequence[str], live_keys: list[dict[str, Any]] | None) -> list[Finding]:
    want = desired(tmp_path, credentials=[{"certificateFile": f} for f in files])
    live = None if live_keys is None else {"keyCredentials": live_keys}
    spec = Office365Provider().kinds["ServicePrincipal"]
    assert spec.diagnose is not None
    return spec.diagnose(want.fields, live, DiagnoseContext(NOW, 30))


def test_certificate_dates_are_checked(tmp_path: Path, certs: dict[str, bytes]) -> None:
    assert findings(tmp_path, ["new.cer"], []) == []
    (soon,) = findings(tmp_path, ["soon.cer"], [])
    assert soon[0] == "warning" and "expires in 10 days" in soon[2] and "soon.cer" in soon[2]
    (expired,) = findings(tmp_path, ["expired.cer"], [])
    assert expired[0] == "error" and "refusing to upload" in expired[2] and "expired.cer" in expired[2]
    (already,) = findings(tmp_path, ["expired.cer"], [live_key(certs["expired.cer"], "k")])
    assert already[0] == "warning"
    (future,) = findings(tmp_path, ["future.cer"], [])
    assert future[0] == "error" and "not valid yet" in future[2]
    (missing,) = findings(tmp_path, [], None)
    assert missing[0] == "error" and "does not exist in the tenant" in missing[2]


def test_unreadable_or_invalid_certificate_file_names_the_entry(tmp_path: Path) -> None:
    (tmp_path / "junk.cer").write_bytes(b"junk")
    with pytest.raises(FieldProblem, match=r"\[0\] cannot read certificate file 'nope.cer'"):
        _prepare({"credentials": [{"certificateFile": "nope.cer"}]}, tmp_path)
    with pytest.raises(FieldProblem, match=r"\[0\] 'junk.cer' is not an X.509 certificate"):
        _prepare({"credentials": [{"certificateFile": "junk.cer"}]}, tmp_path)


class FakeGraph:
    def __init__(self, results: list[CommandResult]) -> None:
        self.results = results
        self.sent: list[Sequence[Command]] = []

    def invoke(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> list[CommandResult]:
        self.sent.append(commands)
        return self.results

    def close(self) -> None:
        pass


def test_discovery_is_one_batch_404_is_absent_and_other_errors_raise() -> None:
    target = TargetSpec("tenant", "office365", {"transport": "graph"})
    keys = [ResourceKey("tenant", "ServicePrincipal", a) for a in (SKYPE, "00000002-0000-0ff1-ce00-000000000000")]
    get = Command("GET", {})
    ok = CommandResult(get, True, ({"appId": SKYPE, "accountEnabled": True, "servicePrincipalNames": [],
                                    "keyCredentials": []},))
    missing = CommandResult(get, False, error="GET /servicePrincipals(...): 404 Request_ResourceNotFound: gone",
                            status=404)
    graph = FakeGraph([ok, missing])
    live = Office365Provider().discover(target, graph, keys)
    assert len(graph.sent) == 1 and len(graph.sent[0]) == 2
    assert "$select" in graph.sent[0][0].parameters["query"]
    assert list(live.resources) == [keys[0]]
    denied = CommandResult(get, False, error="GET /servicePrincipals(...): 403 Authorization_RequestDenied: no",
                           status=403)
    with pytest.raises(DiscoveryError, match="403"):
        Office365Provider().discover(target, FakeGraph([ok, denied]), keys)
    # A server error whose message mentions 404 is an error, not an absent principal (it was reported as absent)
    broken = CommandResult(get, False, error="GET /servicePrincipals(...): 500 InternalServerError: upstream 404 "
                                             "from the directory", status=500)
    with pytest.raises(DiscoveryError, match="500"):
        Office365Provider().discover(target, FakeGraph([ok, broken]), keys)


# --- recorded response shapes (tests/fixtures/graph, sources in SOURCES.md) ------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_graph_fixture(name: str) -> None:
    """A real-shaped GET answer is discovered as is, and the PATCH planned from it is the expected body."""
    case = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    app_id = case["appId"]
    target = TargetSpec("tenant", "office365", {"transport": "graph"})
    key = ResourceKey("tenant", "ServicePrincipal", app_id)
    graph = FakeGraph([CommandResult(Command("GET", {}), True, (case["response"],))])
    live = Office365Provider().discover(target, graph, [key])
    (get,) = graph.sent[0]
    assert get.parameters["path"] == f"/servicePrincipals(appId='{app_id}')"
    assert "keyCredentials" in get.parameters["query"]["$select"].split(",")
    found = live.resources[key].fields
    assert found["keyCredentials"] == case["response"]["keyCredentials"]
    assert found["accountEnabled"] is case["response"]["accountEnabled"]
    assert found["servicePrincipalNames"] == case["response"]["servicePrincipalNames"]

    want = DesiredResource(key, Ensure.PRESENT, _prepare(dict(case["manifest"]), FIXTURES),
                           SourceLocation("m.yaml", 1, "resources[0]"))
    state = DesiredState("m.yaml", "h", {"tenant": target}, (want,))
    registry = Registry(providers={"office365": Office365Provider()})
    expect = case["expect"]
    if "error" in expect:
        with pytest.raises(DiscoveryError, match=expect["error"]):
            plan_changes(state, {"tenant": live}, registry)
        return
    changes = plan_changes(state, {"tenant": live}, registry)
    if expect["body"] is None:
        assert changes == ()
        return
    (change,) = changes
    (command,) = change.commands
    assert command.cmdlet == "PATCH" and command.parameters["path"] == f"/servicePrincipals(appId='{app_id}')"
    assert command.parameters["body"] == expect["body"]
    for sent in command.parameters["body"].get("keyCredentials", []):
        assert set(sent) in ({"key", "type", "usage"}, {"displayName", "keyId", "type", "usage", "key"})
