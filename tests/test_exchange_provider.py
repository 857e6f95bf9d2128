"""The Exchange provider on its own: discovery mapping (fake transport) and pure planner calls."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from reconciler.changes import Action, ActionReason, Change
from reconciler.checks import metadata_urls_needed
from reconciler.errors import DiscoveryError
from reconciler.kinds.spec import DiagnoseContext
from reconciler.kinds.syntax import ParamType
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
from reconciler.providers.exchange import (
    BUILT_IN_PARTNER_APPLICATIONS,
    FORM_SWITCH_REASON,
    HANDLER_TRIGGER_KINDS,
    IISRESET,
    ExchangeProvider,
)
from reconciler.providers.exchange_enterprise import ENTERPRISE_APPLICATIONS
from reconciler.transports.base import Command, CommandResult

T = "ex"
SKYPE = "00000004-0000-0ff1-ce00-000000000000"
OTHER = "00000005-0000-0ff1-ce00-000000000000"
POOL = "https://atl-cs-001.litwareinc.com/metadata/json/1"
POOL2 = "https://atl-cs-002.litwareinc.com/metadata/json/1"
ACCOUNT = "LyncEnterprise-ApplicationAccount"
THUMB_A = "0123456789ABCDEF0123456789ABCDEF01234567"
THUMB_B = "89ABCDEF0123456789ABCDEF0123456789ABCDEF"
PROVIDER = ExchangeProvider()


# --- helpers ------------------------------------------------------------------------------------

def want(kind: str, identity: str, ensure: Ensure = Ensure.PRESENT, **fields: Any) -> DesiredResource:
    """A desired resource as the loader makes it (through the kind's prepare hook)."""
    spec = PROVIDER.kinds[kind]
    prepared = spec.prepare(dict(fields), Path(".")) if spec.prepare else dict(fields)
    return DesiredResource(ResourceKey(T, kind, identity), ensure, prepared,
                           SourceLocation("m.yaml", 10, "resources[0]"))


def have(kind: str, identity: str, **fields: Any) -> LiveResource:
    return LiveResource(ResourceKey(T, kind, identity), fields)


def plan(desired: list[DesiredResource], live: LiveState | list[LiveResource],
         prune: frozenset[str] = frozenset()) -> tuple[Change, ...]:
    target = TargetSpec(T, "exchange", {"transport": "lab", "host": "atl-exchange-001"}, prune)
    state = DesiredState("m.yaml", "x", {T: target}, tuple(desired))
    if isinstance(live, list):
        live = LiveState(T, {r.key: r for r in live})
    return plan_changes(state, {T: live}, Registry(providers={"exchange": PROVIDER}))


def calls(change: Change) -> list[tuple[str, dict[str, Any]]]:
    return [(c.cmdlet, dict(c.parameters)) for c in change.commands]


class FakeShell:
    """Answers each Get by cmdlet name; records every batch sent."""

    def __init__(self, outputs: Mapping[str, list[dict[str, Any]]], fail: str | None = None,
                 short: bool = False) -> None:
        self.outputs = outputs
        self.fail = fail
        self.short = short
        self.sent: list[Sequence[Command]] = []

    def invoke(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> list[CommandResult]:
        self.sent.append(commands)
        results = []
        for command in commands:
            if command.cmdlet == self.fail:
                results.append(CommandResult(command, False, error="Access denied"))
                if stop_on_error:
                    break
                continue
            results.append(CommandResult(command, True, tuple(self.outputs.get(command.cmdlet, []))))
        return results[:-1] if self.short else results

    def close(self) -> None:
        pass


def partner(name: str, **props: Any) -> dict[str, Any]:
    base = {"Name": name, "Identity": name, "ApplicationIdentifier": SKYPE, "Realm": "", "AuthMetadataUrl": None,
            "Enabled": True, "LinkedAccount": None, "AcceptSecurityIdentifierInformation": False,
            "AccountType": "OrganizationalAccount", "UseAuthServer": False}
    return {**base, **props}


def lync_app(**props: Any) -> dict[str, Any]:
    return partner("LyncEnterprise", **{"AuthMetadataUrl": POOL, "Realm": "litwareinc.com",
                                        "LinkedAccount": f"litwareinc.com/Users/{ACCOUNT}", **props})


def user(name: str = ACCOUNT) -> dict[str, Any]:
    return {"Name": name, "Identity": f"litwareinc.com/Users/{name}", "UserPrincipalName": f"{name}@litwareinc.com"}


def assignment(role: str, assignee: str = ACCOUNT) -> dict[str, Any]:
    name = f"{role}-{assignee}"
    return {"Name": name, "Identity": name, "Role": role, "RoleAssigneeName": assignee, "RoleAssigneeType": "User"}


CONFIG = {"Identity": "Auth Configuration", "ServiceName": "00000002-0000-0ff1-ce00-000000000000",
          "Realm": "", "CurrentCertificateThumbprint": THUMB_A, "NextCertificateThumbprint": None,
          "NextCertificateEffectiveDate": None, "PreviousCertificateThumbprint": None}


def discovered(partners: Sequence[dict[str, Any]] = (), users: Sequence[dict[str, Any]] = (),
               assignments: Sequence[dict[str, Any]] = (), servers: Sequence[dict[str, Any]] = (),
               config: dict[str, Any] = CONFIG, wanted: Sequence[ResourceKey] | None = None) -> LiveState:
    """The provider's discovery over canned answers; by default as for a manifest declaring both enterprise
    applications (their linked users and role assignments are read only then)."""
    if wanted is None:
        wanted = [ResourceKey(T, "EnterprisePartnerApplication", name) for name in ("Lync", "SharePoint")]
    shell = FakeShell({"Get-AuthConfig": [config], "Get-AuthServer": list(servers),
                       "Get-PartnerApplication": list(partners), "Get-LinkedUser": list(users),
                       "Get-ManagementRoleAssignment": list(assignments)})
    return PROVIDER.discover(TargetSpec(T, "exchange", {"transport": "lab"}), shell, wanted)


def in_sync_lync(**props: Any) -> LiveState:
    return discovered([lync_app(**props)], [user()],
                      [assignment("UserApplication"), assignment("ArchiveApplication")])


def lync(**fields: Any) -> DesiredResource:
    return want("EnterprisePartnerApplication", "Lync", authMetadataUrl=POOL, **fields)


# --- PartnerApplication -------------------------------------------------------------------------

def test_partner_application_created_in_the_metadata_form_with_exact_parameters() -> None:
    desired = want("PartnerApplication", "Skype", authMetadataUrl=POOL, trustAnySSLCertificate=True, enabled=True,
                   linkedAccount="Skype-ApplicationAccount", accountType="OrganizationalAccount")
    (change,) = plan([desired], [])
    assert change.actions == (Action.CREATE,)
    assert calls(change) == [("New-PartnerApplication", {
        "Name": "Skype", "AuthMetadataUrl": POOL, "TrustAnySSLCertificate": True, "Enabled": True,
        "LinkedAccount": "Skype-ApplicationAccount", "AccountType": "OrganizationalAccount"})]
    assert metadata_urls_needed(change, PROVIDER.kinds["PartnerApplication"]) == [("authMetadataUrl", POOL)]


def test_partner_application_created_in_the_identifier_form_with_realm() -> None:
    (change,) = plan([want("PartnerApplication", "Skype", applicationIdentifier=SKYPE, realm="litwareinc.com",
                           acceptSecurityIdentifierInformation=True)], [])
    assert calls(change) == [("New-PartnerApplication", {
        "Name": "Skype", "ApplicationIdentifier": SKYPE, "Realm": "litwareinc.com",
        "AcceptSecurityIdentifierInformation": True})]


def test_metadata_url_change_is_set_in_place_with_trust_any_ssl_certificate() -> None:
    live = discovered([partner("Skype", AuthMetadataUrl=POOL, Realm="litwareinc.com")])
    (change,) = plan([want("PartnerApplication", "skype", authMetadataUrl=POOL2, trustAnySSLCertificate=True)], live)
    assert change.actions == (Action.UPDATE,)
    assert change.changed == ("authMetadataUrl",)
    assert calls(change) == [("Set-PartnerApplication", {
        "Identity": "Skype", "AuthMetadataUrl": POOL2, "TrustAnySSLCertificate": True})]
    assert metadata_urls_needed(change, PROVIDER.kinds["PartnerApplication"]) == [("authMetadataUrl", POOL2)]


def test_application_identifier_and_realm_are_set_in_place() -> None:
    live = discovered([partner("Skype", Realm="old.com")])
    (change,) = plan([want("PartnerApplication", "Skype", applicationIdentifier=OTHER, realm="litwareinc.com")], live)
    assert change.actions == (Action.UPDATE,)
    assert calls(change) == [("Set-PartnerApplication", {
        "Identity": "Skype", "ApplicationIdentifier": OTHER, "Realm": "litwareinc.com"})]


def test_write_only_trust_any_ssl_certificate_and_case_are_never_drift() -> None:
    live = discovered([partner("Skype", AuthMetadataUrl=POOL, LinkedAccount="litwareinc.com/Users/Acct")])
    desired = want("PartnerApplication", "SKYPE", authMetadataUrl=POOL.upper(), trustAnySSLCertificate=True,
                   linkedAccount="acct", accountType="organizationalaccount")
    assert plan([desired], live) == ()


def test_switching_forms_is_a_replace_with_the_reason_and_restore_recreates_as_read() -> None:
    live = discovered([partner("Skype", AuthMetadataUrl=POOL, Realm="litwareinc.com")])
    (change,) = plan([want("PartnerApplication", "Skype", applicationIdentifier=SKYPE, realm="litwareinc.com")], live)
    assert change.is_replace
    assert change.action_reason is ActionReason.REPLACE_BECAUSE_CANNOT_UPDATE
    assert change.reason == FORM_SWITCH_REASON
    assert FORM_SWITCH_REASON == ("Set-PartnerApplication cannot switch a partner application between "
                                  "AuthMetadataUrl and ApplicationIdentifier (each of its documented parameter sets "
                                  "holds one form: AuthMetadataUrl | ACSTrustApplication)")
    assert calls(change) == [("Remove-PartnerApplication", {"Identity": "Skype"}),
                             ("New-PartnerApplication", {"Name": "Skype", "ApplicationIdentifier": SKYPE,
                                                         "Realm": "litwareinc.com", "Enabled": True,
                                                         "AcceptSecurityIdentifierInformation": False,
                                                         "AccountType": "OrganizationalAccount"})]
    assert change.live is not None
    (restore,) = PROVIDER.restore_commands(change.live)
    assert (restore.cmdlet, dict(restore.parameters)) == ("New-PartnerApplication", {
        "Name": "Skype", "AuthMetadataUrl": POOL, "Enabled": True, "AcceptSecurityIdentifierInformation": False,
        "AccountType": "OrganizationalAccount"})


def test_ensure_absent_removes_a_partner_application() -> None:
    live = discovered([partner("app")])
    (change,) = plan([want("PartnerApplication", "App", ensure=Ensure.ABSENT)], live)
    assert calls(change) == [("Remove-PartnerApplication", {"Identity": "app"})]


# --- AuthServer ---------------------------------------------------------------------------------

ACS = "https://accounts.accesscontrol.windows.net/litwareinc.onmicrosoft.com/metadata/json/1"


def server(name: str = "ACS", **props: Any) -> dict[str, Any]:
    base = {"Name": name, "Identity": name, "AuthMetadataUrl": ACS, "Type": "MicrosoftACS", "Enabled": True,
            "DomainName": ["litwareinc.com"], "IssuerIdentifier": "00000001-0000-0000-c000-000000000000",
            "Realm": "r"}
    return {**base, **props}


def test_auth_server_created_with_exact_parameters() -> None:
    (change,) = plan([want("AuthServer", "ACS", authMetadataUrl=ACS, type="MicrosoftACS", enabled=True,
                           domainName=["litwareinc.com", "contoso.com"])], [])
    assert calls(change) == [("New-AuthServer", {
        "Name": "ACS", "AuthMetadataUrl": ACS, "Type": "MicrosoftACS", "Enabled": True,
        "DomainName": ["litwareinc.com", "contoso.com"]})]


def test_auth_server_url_in_place_but_type_change_replaces() -> None:
    live = discovered(servers=[server()])
    (change,) = plan([want("AuthServer", "ACS", authMetadataUrl=ACS + "?v=2")], live)
    assert calls(change) == [("Set-AuthServer", {"Identity": "ACS", "AuthMetadataUrl": ACS + "?v=2"})]
    (change,) = plan([want("AuthServer", "ACS", authMetadataUrl=ACS, type="AzureAD")], live)
    assert change.is_replace and change.reason == ("Type cannot be changed by Set-AuthServer (in none of its "
                                                   "documented parameter sets)")
    assert [c.cmdlet for c in change.commands] == ["Remove-AuthServer", "New-AuthServer"]
    assert change.live is not None
    assert PROVIDER.restore_commands(change.live)[0].parameters["Type"] == "MicrosoftACS"


def test_domain_names_compare_as_a_set_ignoring_case() -> None:
    live = discovered(servers=[server(DomainName=["Contoso.com", "litwareinc.com"])])
    assert plan([want("AuthServer", "ACS", authMetadataUrl=ACS, domainName=["LITWAREINC.COM", "contoso.com"])],
                live) == ()
    (change,) = plan([want("AuthServer", "ACS", authMetadataUrl=ACS, domainName=["litwareinc.com"])], live)
    assert calls(change) == [("Set-AuthServer", {"Identity": "ACS", "DomainName": ["litwareinc.com"]})]


# --- AuthConfig ---------------------------------------------------------------------------------

def test_staged_rotation_sets_only_the_next_certificate_and_its_date() -> None:
    wanted = [ResourceKey(T, "AuthConfig", "Global")]
    live = discovered(wanted=wanted)
    desired = want("AuthConfig", "Global", currentCertificateThumbprint=THUMB_A.lower(),
                   nextCertificateThumbprint=THUMB_B, nextCertificateEffectiveDate="2026-05-01T00:00:00Z")
    (change,) = plan([desired], live)
    assert change.actions == (Action.UPDATE,)
    assert calls(change) == [("Set-AuthConfig", {"NewCertificateThumbprint": THUMB_B,
                                                 "NewCertificateEffectiveDate": "2026-05-01T00:00:00Z",
                                                 "Force": True})]
    assert change.commands[0].display() == (f"Set-AuthConfig -NewCertificateThumbprint '{THUMB_B}' "
                                            "-NewCertificateEffectiveDate '2026-05-01T00:00:00Z' -Force")


def test_thumbprints_ignore_case_and_dates_compare_as_instants() -> None:
    config = {**CONFIG, "NextCertificateThumbprint": THUMB_B.lower(),
              "NextCertificateEffectiveDate": "2026-05-01T02:00:00+02:00"}
    live = discovered(config=config, wanted=[ResourceKey(T, "AuthConfig", "Global")])
    desired = want("AuthConfig", "Global", currentCertificateThumbprint=THUMB_A.lower(),
                   nextCertificateThumbprint=THUMB_B, nextCertificateEffectiveDate="2026-05-01T00:00:00Z")
    assert plan([desired], live) == ()
    later = want("AuthConfig", "Global", nextCertificateThumbprint=THUMB_B,
                 nextCertificateEffectiveDate="2026-05-02T00:00:00Z")
    (change,) = plan([later], live)
    assert calls(change) == [("Set-AuthConfig", {"NewCertificateThumbprint": THUMB_B,
                                                 "NewCertificateEffectiveDate": "2026-05-02T00:00:00Z",
                                                 "Force": True})]


def test_auth_config_is_read_under_the_manifests_identity_and_never_removed() -> None:
    (key,) = [k for k in discovered().resources if k.kind == "AuthConfig"]
    assert key.identity == "Auth Configuration"
    live = discovered(wanted=[ResourceKey(T, "AuthConfig", "Global")])
    assert [k.identity for k in live.resources if k.kind == "AuthConfig"] == ["Global"]
    (change,) = plan([want("AuthConfig", "Global", currentCertificateThumbprint=THUMB_B)], live)
    assert calls(change) == [("Set-AuthConfig", {"CertificateThumbprint": THUMB_B})]
    assert plan([], live, prune=frozenset({"AuthConfig"})) == ()


# --- EnterprisePartnerApplication -----------------------------------------------------------------

def test_fresh_enterprise_application_creates_user_then_roles_then_app() -> None:
    desired = lync(trustAnySSLCertificate=True, accountUserPrincipalName=f"{ACCOUNT}@litwareinc.com")
    (change,) = plan([desired], discovered())
    assert change.actions == (Action.CREATE,)
    assert calls(change) == [
        ("New-LinkedUser", {"Name": ACCOUNT, "UserPrincipalName": f"{ACCOUNT}@litwareinc.com"}),
        ("New-ManagementRoleAssignment", {"Role": "UserApplication", "User": ACCOUNT}),
        ("New-ManagementRoleAssignment", {"Role": "ArchiveApplication", "User": ACCOUNT}),
        ("New-PartnerApplication", {"Name": "LyncEnterprise", "AuthMetadataUrl": POOL, "TrustAnySSLCertificate": True,
                                    "LinkedAccount": ACCOUNT, "Enabled": True}),
    ]
    assert metadata_urls_needed(change, PROVIDER.kinds["EnterprisePartnerApplication"]) == [("authMetadataUrl", POOL)]


def test_fresh_sharepoint_enterprise_application_has_one_role() -> None:
    (change,) = plan([want("EnterprisePartnerApplication", "sharepoint", authMetadataUrl=POOL)], discovered())
    assert [c.cmdlet for c in change.commands] == ["New-LinkedUser", "New-ManagementRoleAssignment",
                                                   "New-PartnerApplication"]
    assert change.commands[1].parameters == {"Role": "UserApplication",
                                             "User": "SharePointEnterprise-ApplicationAccount"}
    assert change.commands[2].parameters["Name"] == "SharePointEnterprise"


def test_enterprise_application_in_sync_with_extra_roles_left_alone() -> None:
    live = discovered([lync_app()], [user()], [assignment("UserApplication"), assignment("ArchiveApplication"),
                                               assignment("MyCustomRole")])
    assert plan([lync(trustAnySSLCertificate=True, accountUserPrincipalName="x@y.com")], live) == ()
    (record,) = [r for k, r in live.resources.items() if k.kind == "EnterprisePartnerApplication"]
    assert record.fields["roles"] == ["ArchiveApplication", "MyCustomRole", "UserApplication"]


def test_missing_role_only_adds_that_role() -> None:
    live = discovered([lync_app()], [user()], [assignment("UserApplication")])
    (change,) = plan([lync()], live)
    assert change.actions == (Action.UPDATE,)
    assert change.changed == ("missingRoles",)
    assert calls(change) == [("New-ManagementRoleAssignment", {"Role": "ArchiveApplication", "User": ACCOUNT})]


def test_wrong_linked_account_is_set_back() -> None:
    live = discovered([lync_app(LinkedAccount="litwareinc.com/Users/Someone")], [user(), user("Someone")],
                      [assignment("UserApplication"), assignment("ArchiveApplication")])
    (change,) = plan([lync()], live)
    assert change.changed == ("linkedToApplicationAccount",)
    assert calls(change) == [("Set-PartnerApplication", {"Identity": "LyncEnterprise", "LinkedAccount": ACCOUNT})]


def test_deleted_account_is_recreated_with_its_roles_and_linked_again() -> None:
    live = discovered([lync_app()], [], [])
    (change,) = plan([lync(accountUserPrincipalName="lync@litwareinc.com")], live)
    assert change.actions == (Action.UPDATE,)
    assert calls(change) == [
        ("New-LinkedUser", {"Name": ACCOUNT, "UserPrincipalName": "lync@litwareinc.com"}),
        ("New-ManagementRoleAssignment", {"Role": "UserApplication", "User": ACCOUNT}),
        ("New-ManagementRoleAssignment", {"Role": "ArchiveApplication", "User": ACCOUNT}),
        ("Set-PartnerApplication", {"Identity": "LyncEnterprise", "LinkedAccount": ACCOUNT}),
    ]
    # Assignments still naming the deleted account are not made twice (Exchange refuses a duplicate).
    live = discovered([lync_app()], [], [assignment("UserApplication")])
    (change,) = plan([lync()], live)
    assert [c.cmdlet for c in change.commands] == ["New-LinkedUser", "New-ManagementRoleAssignment",
                                                   "Set-PartnerApplication"]
    assert change.commands[1].parameters["Role"] == "ArchiveApplication"


def test_missing_application_only_is_created_alone() -> None:
    live = discovered([], [user()], [assignment("UserApplication"), assignment("ArchiveApplication")])
    (change,) = plan([lync(enabled=False)], live)
    assert change.actions == (Action.UPDATE,)
    assert calls(change) == [("New-PartnerApplication", {"Name": "LyncEnterprise", "AuthMetadataUrl": POOL,
                                                         "LinkedAccount": ACCOUNT, "Enabled": False})]


def test_enterprise_url_and_enabled_are_set_in_place() -> None:
    (change,) = plan([want("EnterprisePartnerApplication", "Lync", authMetadataUrl=POOL2, enabled=False,
                           trustAnySSLCertificate=True)], in_sync_lync())
    assert calls(change) == [("Set-PartnerApplication", {"Identity": "LyncEnterprise", "AuthMetadataUrl": POOL2,
                                                         "TrustAnySSLCertificate": True, "Enabled": False})]
    assert metadata_urls_needed(change, PROVIDER.kinds["EnterprisePartnerApplication"]) == [("authMetadataUrl", POOL2)]


def test_ensure_absent_removes_app_every_assignment_and_account() -> None:
    live = discovered([lync_app()], [user()], [assignment("UserApplication"), assignment("ArchiveApplication"),
                                               assignment("MyCustomRole")])
    (change,) = plan([want("EnterprisePartnerApplication", "lync", ensure=Ensure.ABSENT)], live)
    assert change.actions == (Action.DELETE,)
    assert calls(change) == [
        ("Remove-PartnerApplication", {"Identity": "LyncEnterprise"}),
        ("Remove-ManagementRoleAssignment", {"Identity": "ArchiveApplication-" + ACCOUNT}),
        ("Remove-ManagementRoleAssignment", {"Identity": "MyCustomRole-" + ACCOUNT}),
        ("Remove-ManagementRoleAssignment", {"Identity": "UserApplication-" + ACCOUNT}),
        ("Remove-LinkedUser", {"Identity": ACCOUNT}),
    ]
    assert plan([want("EnterprisePartnerApplication", "lync", ensure=Ensure.ABSENT)], discovered()) == ()


def test_enterprise_apps_are_never_plain_partner_applications_so_prune_keeps_them() -> None:
    live = in_sync_lync()
    kinds = {(k.kind, k.identity) for k in live.resources}
    assert ("EnterprisePartnerApplication", "Lync") in kinds
    assert not any(kind == "PartnerApplication" for kind, _ in kinds)
    live = discovered([lync_app(), partner("stray")], [user()], [])
    changes = plan([], live, prune=frozenset({"PartnerApplication"}))
    assert [(c.key.kind, c.key.identity, c.action_reason) for c in changes] == [
        ("PartnerApplication", "stray", ActionReason.PRUNE)]


# --- ordering, discovery, schema --------------------------------------------------------------------

def test_order_removals_then_auth_servers_then_partner_apps_then_auth_config() -> None:
    live = discovered([partner("old")], wanted=[ResourceKey(T, "AuthConfig", "Global")])
    desired = [
        want("AuthConfig", "Global", currentCertificateThumbprint=THUMB_B),
        lync(),
        want("PartnerApplication", "Skype", authMetadataUrl=POOL),
        want("AuthServer", "ACS", authMetadataUrl=ACS),
        want("PartnerApplication", "old", ensure=Ensure.ABSENT),
    ]
    assert [(c.key.kind, c.symbol) for c in plan(desired, live)] == [
        ("PartnerApplication", "-"), ("AuthServer", "+"), ("EnterprisePartnerApplication", "+"),
        ("PartnerApplication", "+"), ("AuthConfig", "~")]
    assert HANDLER_TRIGGER_KINDS == ("PartnerApplication", "EnterprisePartnerApplication")


def test_discovery_is_one_batch_of_five_selected_gets() -> None:
    shell = FakeShell({"Get-AuthConfig": [CONFIG], "Get-AuthServer": [server()],
                       "Get-PartnerApplication": [lync_app(), partner("Skype", AuthMetadataUrl=POOL)],
                       "Get-LinkedUser": [user()], "Get-ManagementRoleAssignment": [assignment("UserApplication")]})
    lync = ResourceKey(T, "EnterprisePartnerApplication", "Lync")
    live = PROVIDER.discover(TargetSpec(T, "exchange", {"transport": "lab"}), shell, [lync])
    assert len(shell.sent) == 1
    assert [c.cmdlet for c in shell.sent[0]] == ["Get-AuthConfig", "Get-AuthServer", "Get-PartnerApplication",
                                                 "Get-LinkedUser", "Get-ManagementRoleAssignment"]
    assert all(c.select for c in shell.sent[0])
    assert "RoleAssigneeName" in shell.sent[0][4].select
    records = {(k.kind, k.identity): dict(r.fields) for k, r in live.resources.items()}
    assert records[("EnterprisePartnerApplication", "Lync")] == {
        "authMetadataUrl": POOL, "enabled": True, "partnerApplicationExists": True, "accountExists": True,
        "linkedToApplicationAccount": True, "missingRoles": ["ArchiveApplication"],
        "linkedAccount": f"litwareinc.com/Users/{ACCOUNT}", "roles": ["UserApplication"],
        "roleAssignmentIdentities": ["UserApplication-" + ACCOUNT], "trustedKeys": []}
    assert records[("PartnerApplication", "Skype")]["authMetadataUrl"] == POOL
    assert records[("PartnerApplication", "Skype")]["realm"] is None  # empty string reads as unset
    assert records[("AuthServer", "ACS")]["domainName"] == ["litwareinc.com"]
    assert set(records) == {("AuthConfig", "Auth Configuration"), ("AuthServer", "ACS"),
                            ("PartnerApplication", "Skype"), ("EnterprisePartnerApplication", "Lync")}


@pytest.mark.parametrize("cmdlet", ["Get-AuthConfig", "Get-LinkedUser", "Get-ManagementRoleAssignment"])
def test_a_failed_get_is_an_error_never_an_absence(cmdlet: str) -> None:
    target = TargetSpec(T, "exchange", {"transport": "lab"})
    lync = [ResourceKey(T, "EnterprisePartnerApplication", "Lync")]
    with pytest.raises(DiscoveryError, match=f"{cmdlet}: Access denied"):
        PROVIDER.discover(target, FakeShell({}, fail=cmdlet), lync)
    with pytest.raises(DiscoveryError, match="too few results"):
        PROVIDER.discover(target, FakeShell({}, short=True), [])


def test_linked_users_are_read_only_when_an_enterprise_application_is_declared() -> None:
    """Get-LinkedUser is documented for the cloud only: a target that does not declare the enterprise kind never
    depends on it (nor on role assignments)."""
    shell = FakeShell({"Get-AuthConfig": [CONFIG], "Get-AuthServer": [], "Get-PartnerApplication": [lync_app()]})
    live = PROVIDER.discover(TargetSpec(T, "exchange", {"transport": "lab"}), shell, [])
    assert [c.cmdlet for c in shell.sent[0]] == ["Get-AuthConfig", "Get-AuthServer", "Get-PartnerApplication"]
    assert {k.kind for k in live.resources} == {"AuthConfig"}  # LyncEnterprise is never a plain PartnerApplication


def schema_errors(kind: str, resource: dict[str, Any]) -> list[str]:
    validator = Draft202012Validator(PROVIDER.kinds[kind].schema)
    found = []
    for error in validator.iter_errors({"target": T, "kind": kind, **resource}):
        custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
        found.append(custom if isinstance(custom, str) else error.message)
    return found


def test_schema_rejects_mixed_partner_application_forms_with_the_message() -> None:
    mixed = schema_errors("PartnerApplication", {"identity": "Skype", "authMetadataUrl": POOL,
                                                 "applicationIdentifier": SKYPE})
    assert mixed == ["a partner application needs exactly one of: authMetadataUrl [+ trustAnySSLCertificate] | "
                     "applicationIdentifier [+ realm]"]
    assert schema_errors("PartnerApplication", {"identity": "Skype"}) == mixed
    assert "realm cannot be set together with authMetadataUrl (the realm comes from the metadata document)" in \
        schema_errors("PartnerApplication", {"identity": "Skype", "authMetadataUrl": POOL, "realm": "r"})
    assert schema_errors("PartnerApplication", {"identity": "Skype", "applicationIdentifier": SKYPE,
                                                "trustAnySSLCertificate": True}) == [
        "trustAnySSLCertificate applies only together with authMetadataUrl"]
    assert schema_errors("PartnerApplication", {"identity": "Skype", "authMetadataUrl": POOL,
                                                "trustAnySSLCertificate": True}) == []
    assert schema_errors("PartnerApplication", {"identity": "Skype", "applicationIdentifier": SKYPE,
                                                "realm": "r"}) == []


def test_schema_of_the_other_kinds() -> None:
    assert schema_errors("EnterprisePartnerApplication", {"identity": "sharepoint", "authMetadataUrl": POOL}) == []
    assert schema_errors("EnterprisePartnerApplication", {"identity": "Skype", "authMetadataUrl": POOL})
    assert schema_errors("EnterprisePartnerApplication", {"identity": "Lync"})  # URL required when present
    assert schema_errors("EnterprisePartnerApplication", {"identity": "Lync", "ensure": "absent"}) == []
    assert schema_errors("PartnerApplication", {"identity": "LyncEnterprise", "applicationIdentifier": SKYPE})
    assert schema_errors("AuthServer", {"identity": "ACS", "authMetadataUrl": ACS, "type": "Foo"})
    assert schema_errors("AuthConfig", {"nextCertificateThumbprint": THUMB_B}) == [
        "nextCertificateThumbprint needs nextCertificateEffectiveDate (Set-AuthConfig takes them together)"]
    assert schema_errors("AuthConfig", {"identity": "auth configuration", "nextCertificateThumbprint": THUMB_B,
                                        "nextCertificateEffectiveDate": "2026-05-01T00:00:00+02:00"}) == []
    assert schema_errors("AuthConfig", {"currentCertificateThumbprint": "abc"})
    assert schema_errors("AuthConfig", {"nextCertificateThumbprint": THUMB_B,
                                        "nextCertificateEffectiveDate": "2026-05-01"})  # no time, no zone


def test_the_enterprise_table_is_the_documented_field_names() -> None:
    assert {k: (a.partner_name, a.linked_account, a.roles) for k, a in ENTERPRISE_APPLICATIONS.items()} == {
        "Lync": ("LyncEnterprise", ACCOUNT, ("UserApplication", "ArchiveApplication")),
        "SharePoint": ("SharePointEnterprise", "SharePointEnterprise-ApplicationAccount", ("UserApplication",)),
    }


def test_a_rotation_that_already_took_over_is_reported_not_rolled_back() -> None:
    spec = PROVIDER.kinds["AuthConfig"]
    assert spec.diagnose is not None
    context = DiagnoseContext(now=datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC))
    taken_over = {"currentCertificateThumbprint": THUMB_B.lower(), "nextCertificateThumbprint": None}
    staged = {"nextCertificateThumbprint": THUMB_B, "nextCertificateEffectiveDate": "2026-05-01T00:00:00Z"}
    ((severity, field, message),) = spec.diagnose({**staged, "currentCertificateThumbprint": THUMB_A},
                                                  taken_over, context)
    assert (severity, field) == ("error", "currentCertificateThumbprint")
    assert "would roll the rotation back" in message
    ((severity, _, _),) = spec.diagnose(staged, taken_over, context)
    assert severity == "warning"
    assert spec.diagnose({**staged, "currentCertificateThumbprint": THUMB_A},
                         {"currentCertificateThumbprint": THUMB_A}, context) == []


# --- built-in partner applications ------------------------------------------------------------------

def built_in(name: str, **props: Any) -> dict[str, Any]:
    """A built-in application as Get-PartnerApplication returns it (GetPartnerApplication.xml's shape)."""
    return partner(name, ApplicationIdentifier=BUILT_IN_PARTNER_APPLICATIONS[name], UseAuthServer=True,
                   AuthMetadataUrl="", Realm="", AccountType=1, **props)


BUILT_INS = [built_in("Exchange Online", LinkedAccount="contoso.lab/Users/Exchange Online-ApplicationAccount"),
             built_in("Microsoft Graph", AcceptSecurityIdentifierInformation=True, ActAsPermissions=["Mail.Read"]),
             built_in("TeamsScheduler", Enabled=False), built_in("CloudVoicemail", Enabled=False),
             built_in("SfBLegacy")]


def test_built_in_partner_applications_are_the_recorded_ones() -> None:
    assert dict(BUILT_IN_PARTNER_APPLICATIONS) == {
        "Exchange Online": "00000002-0000-0ff1-ce00-000000000000",
        "Microsoft Graph": "00000003-0000-0000-c000-000000000000",
        "TeamsScheduler": "7557eb47-c689-4224-abcf-aef9bd7573df",
        "CloudVoicemail": "db7de2b5-2149-435e-8043-e080dd50afae",
        "SfBLegacy": SKYPE,
    }


def test_prune_never_removes_built_in_partner_applications() -> None:
    live = discovered([*BUILT_INS, partner("stray")])
    assert {k.identity for k in live.resources if k.kind == "PartnerApplication"} == {"stray"}
    changes = plan([], live, prune=frozenset({"PartnerApplication"}))
    assert [(c.key.identity, c.action_reason) for c in changes] == [("stray", ActionReason.PRUNE)]


def test_a_declared_built_in_is_read_and_managed_normally() -> None:
    wanted = [ResourceKey(T, "PartnerApplication", "exchange online"),
              ResourceKey(T, "PartnerApplication", "SfBLegacy")]
    live = discovered(BUILT_INS, wanted=wanted)
    records = {k.identity: r.fields for k, r in live.resources.items() if k.kind == "PartnerApplication"}
    assert set(records) == {"Exchange Online", "SfBLegacy"}
    online = records["Exchange Online"]
    assert (online["linkedAccount"], online["accountType"], online["useAuthServer"], online["realm"]) == (
        "contoso.lab/Users/Exchange Online-ApplicationAccount", "OrganizationalAccount", True, None)
    desired = [want("PartnerApplication", "Exchange Online", applicationIdentifier=EXCHANGE_ONLINE, enabled=False,
                    linkedAccount="Exchange Online-ApplicationAccount"),
               want("PartnerApplication", "SfBLegacy", ensure=Ensure.ABSENT)]
    legacy_change, online_change = plan(desired, live, prune=frozenset({"PartnerApplication"}))  # removals first
    assert calls(online_change) == [("Set-PartnerApplication", {"Identity": "Exchange Online", "Enabled": False})]
    assert online_change.commands[0].display() == "Set-PartnerApplication -Identity 'Exchange Online' -Enabled:$false"
    assert calls(legacy_change) == [("Remove-PartnerApplication", {"Identity": "SfBLegacy"})]


def test_restore_of_a_built_in_keeps_what_exchange_made() -> None:
    live = discovered(BUILT_INS, wanted=[ResourceKey(T, "PartnerApplication", "Microsoft Graph")])
    (graph,) = [r for k, r in live.resources.items() if k.identity == "Microsoft Graph"]
    (restore,) = PROVIDER.restore_commands(graph)
    assert dict(restore.parameters) == {
        "Name": "Microsoft Graph", "ApplicationIdentifier": BUILT_IN_PARTNER_APPLICATIONS["Microsoft Graph"],
        "Enabled": True, "AcceptSecurityIdentifierInformation": True, "AccountType": "OrganizationalAccount",
        "ActAsPermissions": ["Mail.Read"]}


# --- shapes as recorded -------------------------------------------------------------------------------

def test_recorded_shapes_are_read() -> None:
    """ConvertTo-Json writes AccountType as its number, an ADObjectId and SmtpDomain as objects."""
    app = partner("Skype", AccountType=1, LinkedAccount={"Name": "Acct", "Rdn": "CN=Acct", "Depth": 3})
    acs = server(DomainName=[{"Domain": "Contoso.com", "IsStar": False}], Type="microsoftacs")
    live = discovered([app], servers=[acs])
    records = {(k.kind, k.identity): r.fields for k, r in live.resources.items()}
    assert records[("PartnerApplication", "Skype")]["accountType"] == "OrganizationalAccount"
    assert records[("PartnerApplication", "Skype")]["linkedAccount"] == "Acct"
    assert (records[("AuthServer", "ACS")]["domainName"], records[("AuthServer", "ACS")]["type"]) == (
        ["Contoso.com"], "MicrosoftACS")
    config = {**CONFIG, "Name": "Auth Configuration", "PreviousCertificateThumbprint": "",
              "NextCertificateEffectiveDate": "/Date(1675433762000)/"}
    fields = discovered(config=config).resources[ResourceKey(T, "AuthConfig", "Auth Configuration")].fields
    assert fields["previousCertificateThumbprint"] is None
    assert fields["nextCertificateEffectiveDate"] == "2023-02-03T14:16:02+00:00"


# --- AuthServer parameter sets ------------------------------------------------------------------------

EVO = "https://login.windows.net/8a1c5e3f-2b7d-4c9e-a6f0-1d2e3f4a5b6c/federationmetadata/2007-06/federationmetadata.xml"
APP_ID = "6f1d2b3c-4d5e-4f60-9b0c-1d2e3f4a5b6c"


def test_azure_ad_server_is_new_in_its_set_then_set_for_what_new_cannot_take() -> None:
    desired = want("AuthServer", "EvoSts", authMetadataUrl=EVO, type="AzureAD", domainName=["contoso.com"],
                   applicationIdentifier=APP_ID, isDefaultAuthorizationEndpoint=True, trustAnySSLCertificate=True)
    (change,) = plan([desired], [])
    assert calls(change) == [
        ("New-AuthServer", {"Name": "EvoSts", "AuthMetadataUrl": EVO, "TrustAnySSLCertificate": True,
                            "Type": "AzureAD", "DomainName": ["contoso.com"]}),
        ("Set-AuthServer", {"Identity": "EvoSts", "IsDefaultAuthorizationEndpoint": True}),
        ("Set-AuthServer", {"Identity": "EvoSts", "ApplicationIdentifier": APP_ID}),
    ]
    assert [c.display() for c in change.commands][:2] == [
        f"New-AuthServer -Name 'EvoSts' -AuthMetadataUrl '{EVO}' -TrustAnySSLCertificate -Type 'AzureAD' "
        "-DomainName 'contoso.com'",
        "Set-AuthServer -Identity 'EvoSts' -IsDefaultAuthorizationEndpoint:$true"]


def test_app_secret_server_needs_no_document() -> None:
    (change,) = plan([want("AuthServer", "Facebook", type="Facebook", applicationIdentifier=APP_ID)], [])
    assert calls(change) == [("New-AuthServer", {"Name": "Facebook", "Type": "Facebook",
                                                 "ApplicationIdentifier": APP_ID})]
    assert metadata_urls_needed(change, PROVIDER.kinds["AuthServer"]) == []
    assert schema_errors("AuthServer", {"identity": "x", "enabled": True}) == [
        "an auth server needs authMetadataUrl [+ type] or, without a metadata document (New-AuthServer's AppSecret "
        "set), type [+ applicationIdentifier]"]
    assert schema_errors("AuthServer", {"identity": "x", "type": "LinkedIn"}) == []


def test_auth_server_changes_split_over_set_auth_servers_parameter_sets() -> None:
    live = discovered(servers=[server(Type="AzureAD", AuthMetadataUrl=EVO)])
    desired = want("AuthServer", "ACS", authMetadataUrl=EVO, applicationIdentifier=APP_ID, enabled=False,
                   isDefaultAuthorizationEndpoint=True)
    (change,) = plan([desired], live)
    assert calls(change) == [
        ("Set-AuthServer", {"Identity": "ACS", "Enabled": False, "IsDefaultAuthorizationEndpoint": True}),
        ("Set-AuthServer", {"Identity": "ACS", "ApplicationIdentifier": APP_ID}),
    ]


# --- every command fits the documented syntax -----------------------------------------------------------

EXCHANGE_ONLINE = "00000002-0000-0ff1-ce00-000000000000"


def every_change() -> list[Change]:
    live = discovered([partner("Skype", AuthMetadataUrl=POOL, Realm="litwareinc.com"), partner("old"), lync_app()],
                      [user()], [assignment("UserApplication")], [server()],
                      wanted=[ResourceKey(T, "AuthConfig", "Global"), ResourceKey(T, "EnterprisePartnerApplication",
                                                                                  "Lync")])
    desired = [
        want("AuthConfig", "Global", serviceName=EXCHANGE_ONLINE, realm="litwareinc.com",
             currentCertificateThumbprint=THUMB_B, nextCertificateThumbprint=THUMB_A,
             nextCertificateEffectiveDate="2026-05-01T00:00:00Z"),
        want("PartnerApplication", "Skype", applicationIdentifier=SKYPE, realm="litwareinc.com", enabled=False),
        want("PartnerApplication", "New", authMetadataUrl=POOL2, trustAnySSLCertificate=True,
             linkedAccount=ACCOUNT, accountType="ConsumerAccount", acceptSecurityIdentifierInformation=True),
        want("AuthServer", "ACS", authMetadataUrl=ACS, type="AzureAD", isDefaultAuthorizationEndpoint=True),
        want("AuthServer", "App", type="LinkedIn", applicationIdentifier=APP_ID, enabled=False),
        want("EnterprisePartnerApplication", "SharePoint", authMetadataUrl=POOL, trustAnySSLCertificate=True,
             accountUserPrincipalName="sp@litwareinc.com"),
        want("EnterprisePartnerApplication", "Lync", authMetadataUrl=POOL2, enabled=False,
             trustAnySSLCertificate=True),
    ]
    changes = list(plan(desired, live, prune=frozenset({"PartnerApplication", "AuthServer"})))
    changes += plan([want("EnterprisePartnerApplication", "Lync", ensure=Ensure.ABSENT)], live)
    return changes


def test_every_command_fits_a_documented_parameter_set_of_the_declared_syntax() -> None:
    syntax = {s.name: s for s in PROVIDER.syntax}
    commands = [c for change in every_change() for c in change.commands]
    commands += [c for change in every_change() if change.live is not None
                 for c in PROVIDER.restore_commands(change.live)]
    commands += list(IISRESET.commands({"servers": ["atl-exchange-001"]}))
    assert {c.cmdlet for c in commands} >= {
        "New-PartnerApplication", "Set-PartnerApplication", "Remove-PartnerApplication", "New-AuthServer",
        "Set-AuthServer", "Remove-AuthServer", "Set-AuthConfig", "New-LinkedUser", "Remove-LinkedUser",
        "New-ManagementRoleAssignment", "Remove-ManagementRoleAssignment", "iisreset"}
    for command in commands:
        documented = syntax[command.cmdlet]
        assert documented.native is command.native
        if not command.native:
            documented.bind(command.parameters)  # raises CommandSyntaxError outside every set
        switches = {n for n in command.parameters if documented.parameter(n).type is ParamType.SWITCH}  # type: ignore
        assert command.switches == switches, command


def test_the_provider_declares_every_command_it_may_run() -> None:
    names = [s.name for s in PROVIDER.syntax]
    assert names == ["Get-AuthConfig", "Set-AuthConfig", "Get-AuthServer", "New-AuthServer", "Set-AuthServer",
                     "Remove-AuthServer", "Get-PartnerApplication", "New-PartnerApplication", "Set-PartnerApplication",
                     "Remove-PartnerApplication", "Get-SettingOverride", "New-SettingOverride", "Set-SettingOverride",
                     "Remove-SettingOverride", "Get-OrganizationConfig", "Set-OrganizationConfig",
                     "Get-LinkedUser", "New-LinkedUser", "Remove-LinkedUser",
                     "Get-ManagementRoleAssignment", "New-ManagementRoleAssignment", "Remove-ManagementRoleAssignment",
                     "iisreset", "New-ExchangeCertificate", "Get-ExchangeCertificate"]
    unconfirmed = [s.name for s in PROVIDER.syntax if "*unconfirmed*" in s.source]
    assert unconfirmed == ["New-LinkedUser", "Remove-LinkedUser"]
    assert all(s.source.startswith("MicrosoftDocs/office-docs-powershell: exchange/exchange-ps/ExchangePowerShell/")
               for s in PROVIDER.syntax if s.name not in ("iisreset", *unconfirmed))


def test_displays_booleans_switches_and_iisreset_as_written() -> None:
    desired = lync(trustAnySSLCertificate=True)
    (change,) = plan([desired], discovered())
    assert change.commands[-1].display() == (
        f"New-PartnerApplication -Name 'LyncEnterprise' -AuthMetadataUrl '{POOL}' -TrustAnySSLCertificate "
        f"-LinkedAccount '{ACCOUNT}' -Enabled:$true")
    (reset,) = IISRESET.commands({"servers": ["atl-exchange-001"]})
    assert (reset.native, reset.arguments, dict(reset.parameters)) == (True, ("atl-exchange-001",), {})
    assert reset.display() == "iisreset atl-exchange-001"
    assert reset.to_json() == {"executable": "iisreset", "arguments": ["atl-exchange-001"]}


def test_force_only_with_the_next_certificate() -> None:
    live = discovered(wanted=[ResourceKey(T, "AuthConfig", "Global")])
    (change,) = plan([want("AuthConfig", "Global", serviceName=SKYPE, currentCertificateThumbprint=THUMB_B)], live)
    assert calls(change) == [("Set-AuthConfig", {"CertificateThumbprint": THUMB_B}),
                             ("Set-AuthConfig", {"ServiceName": SKYPE})]


# --- SettingOverride ------------------------------------------------------------------------------------------

OVERRIDE = {"Name": "EnableExchangeHybrid3PAppFeature", "Identity": "EnableExchangeHybrid3PAppFeature",
            "Reason": "Created by ConfigureExchangeHybridApplication.ps1", "ComponentName": "Global",
            "SectionName": "ExchangeOnpremAsThirdPartyAppId", "Parameters": ["Enabled=true"], "Server": None}


def test_setting_override_is_read_as_get_reports_it_and_only_component_and_section_force_a_replace() -> None:
    from reconciler.kinds.exchange import SETTING_OVERRIDE
    from reconciler.model import ResourceKey

    shell = FakeShell({"Get-AuthConfig": [CONFIG], "Get-SettingOverride": [OVERRIDE]})
    declared = [ResourceKey(T, "SettingOverride", "EnableExchangeHybrid3PAppFeature")]
    live = PROVIDER.discover(TargetSpec(T, "exchange", {"transport": "lab"}), shell, declared)
    assert len(shell.sent) == 1 and shell.sent[0][-1].cmdlet == "Get-SettingOverride"  # same round trip
    (record,) = [r for k, r in live.resources.items() if k.kind == "SettingOverride"]
    assert record.key.identity == "EnableExchangeHybrid3PAppFeature"
    assert dict(record.fields) == {"component": "Global", "section": "ExchangeOnpremAsThirdPartyAppId",
                                   "parameters": ["Enabled=true"], "reason": OVERRIDE["Reason"], "server": []}
    spec = PROVIDER.kinds["SettingOverride"]
    assert spec.fields["component"].replace_reason and "Set-SettingOverride" in str(
        spec.fields["component"].replace_reason)
    assert spec.fields["section"].replace_reason
    assert spec.fields["parameters"].replace_reason is None and spec.fields["server"].replace_reason is None
    assert spec.fields["reason"].equal is not None and spec.fields["reason"].equal("a", "b", {})  # never compared
    new = SETTING_OVERRIDE.new_command("EnableExchangeHybrid3PAppFeature", {
        "component": "Global", "section": "ExchangeOnpremAsThirdPartyAppId", "parameters": ["Enabled=true"],
        "reason": "why"})
    assert new.parameters == {"Name": "EnableExchangeHybrid3PAppFeature", "Component": "Global",
                              "Section": "ExchangeOnpremAsThirdPartyAppId", "Parameters": ["Enabled=true"],
                              "Reason": "why"}
    (set_,) = SETTING_OVERRIDE.set_commands("EnableExchangeHybrid3PAppFeature", ["parameters"],
                                            {"parameters": ["Enabled=false"]}, {"parameters": ["Enabled=false"]})
    assert set_.cmdlet == "Set-SettingOverride" and set_.parameters == {
        "Identity": "EnableExchangeHybrid3PAppFeature", "Parameters": ["Enabled=false"]}
    assert "Set-SettingOverride" in {c.name for c in PROVIDER.syntax}
