"""The planner is pure: same desired and live state in, same ordered changes out."""

from __future__ import annotations

from typing import Any

from reconciler.changes import Action, ActionReason
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
from reconciler.providers.skype import SkypeProvider

T = "pool"
EXCHANGE = "00000002-0000-0ff1-ce00-000000000000"
WRONG = "00000005-0000-0ff1-ce00-000000000000"


def registry() -> Registry:
    return Registry(providers={"skype": SkypeProvider()})


def want(kind: str, identity: str, ensure: Ensure = Ensure.PRESENT, **fields: Any) -> DesiredResource:
    return DesiredResource(ResourceKey(T, kind, identity), ensure, fields, SourceLocation("m.yaml", 10, "resources[0]"))


def have(kind: str, identity: str, **fields: Any) -> LiveResource:
    return LiveResource(ResourceKey(T, kind, identity), fields)


def plan(desired: list[DesiredResource], live: list[LiveResource], prune: frozenset[str] = frozenset()):
    target = TargetSpec(T, "skype", {"transport": "lab", "host": "h"}, prune)
    state = DesiredState("m.yaml", "x", {T: target}, tuple(desired))
    return plan_changes(state, {T: LiveState(T, {r.key: r for r in live})}, registry())


def config(**fields: Any) -> LiveResource:
    base = {"serviceName": None, "realm": "litwareinc.com"}
    return have("OAuthConfiguration", "Global", **{**base, **fields})


def test_absent_partner_application_is_created_with_new() -> None:
    desired = want("PartnerApplication", "microsoft.exchange", metadataUrl="http://x/m", applicationTrustLevel="Full")
    changes = plan([desired], [config()])
    assert [c.actions for c in changes] == [(Action.CREATE,)]
    assert changes[0].commands[0].cmdlet == "New-CsPartnerApplication"
    assert dict(changes[0].commands[0].parameters) == {
        "Identity": "microsoft.exchange", "MetadataUrl": "http://x/m", "ApplicationTrustLevel": "Full"}


def test_wrong_application_identifier_replaces_remove_right_before_new() -> None:
    live = have("PartnerApplication", "microsoft.exchange", applicationIdentifier=WRONG,
                metadataUrl="http://x/m", applicationTrustLevel="Full")
    changes = plan([want("PartnerApplication", "microsoft.exchange", metadataUrl="http://x/m",
                         applicationIdentifier=EXCHANGE, applicationTrustLevel="Full")], [live, config()])
    (change,) = changes
    assert change.is_replace
    assert change.action_reason is ActionReason.REPLACE_BECAUSE_CANNOT_UPDATE
    assert "ApplicationIdentifier cannot be changed by Set-CsPartnerApplication" in change.reason
    assert [c.cmdlet for c in change.commands] == ["Remove-CsPartnerApplication", "New-CsPartnerApplication"]
    assert change.changed == ("applicationIdentifier",)


def test_present_and_right_sets_only_the_fields_that_differ() -> None:
    live = have("PartnerApplication", "microsoft.exchange", applicationIdentifier=EXCHANGE, metadataUrl="http://x/m",
                applicationTrustLevel="User", enabled=True)
    changes = plan([want("PartnerApplication", "microsoft.exchange", metadataUrl="HTTP://X/m",
                         applicationIdentifier=EXCHANGE.upper(), applicationTrustLevel="Full", enabled=True)],
                   [live, config()])
    (change,) = changes
    assert change.actions == (Action.UPDATE,)
    assert change.changed == ("applicationTrustLevel",)
    assert dict(change.commands[0].parameters) == {"Identity": "microsoft.exchange", "ApplicationTrustLevel": "Full"}


def test_nothing_to_do_when_nothing_differs_and_identity_case_is_ignored() -> None:
    live = have("PartnerApplication", "Microsoft.Exchange", applicationIdentifier=EXCHANGE, useOAuthServer=True,
                applicationTrustLevel="Full")
    changes = plan([want("PartnerApplication", "microsoft.exchange", applicationIdentifier=EXCHANGE,
                         useOAuthServer=True, applicationTrustLevel="full")], [live, config()])
    assert changes == ()


def test_switching_form_is_a_set_as_seed_004_does() -> None:
    """Set-CsPartnerApplication has the UseOAuthServer parameter set: a certificate-based application becomes an
    OAuth-server one in place (seed 004: `Set-CsPartnerApplication -ApplicationTrustLevel Full -UseOAuthServer`)."""
    live = have("PartnerApplication", "microsoft.exchange", applicationIdentifier=EXCHANGE,
                certificateRawData="AAAA", realm="r", applicationTrustLevel="Application")
    changes = plan([want("PartnerApplication", "microsoft.exchange", applicationIdentifier=EXCHANGE,
                         useOAuthServer=True, applicationTrustLevel="Full")], [live, config()])
    (change,) = changes
    assert not change.is_replace
    assert [c.display() for c in change.commands] == [
        "Set-CsPartnerApplication -Identity 'microsoft.exchange' -UseOAuthServer -ApplicationTrustLevel 'Full'"]
    assert change.after is not None and change.after["certificateRawData"] is None


def test_a_different_application_identifier_is_a_replace_with_the_documented_reason() -> None:
    live = have("PartnerApplication", "microsoft.exchange", applicationIdentifier="wrong", useOAuthServer=True,
                applicationTrustLevel="Full")
    (change,) = plan([want("PartnerApplication", "microsoft.exchange", applicationIdentifier=EXCHANGE,
                           useOAuthServer=True, applicationTrustLevel="Full")], [live, config()])
    assert change.is_replace
    assert "ApplicationIdentifier cannot be changed by Set-CsPartnerApplication" in change.reason


def test_removals_first_then_oauth_server_before_partner_apps_then_configuration() -> None:
    desired = [
        want("OAuthConfiguration", "Global", serviceName="00000004-0000-0ff1-ce00-000000000000"),
        want("PartnerApplication", "microsoft.exchange", applicationIdentifier=EXCHANGE, useOAuthServer=True,
             applicationTrustLevel="Full"),
        want("OAuthServer", "microsoft.sts", metadataUrl="http://acs/new"),
        want("PartnerApplication", "app", ensure=Ensure.ABSENT),
    ]
    live = [config(), have("OAuthServer", "microsoft.sts", metadataUrl="http://acs/old"),
            have("PartnerApplication", "app", applicationIdentifier="x", useOAuthServer=True)]
    changes = plan(desired, live)
    assert [(c.key.identity, c.symbol) for c in changes] == [
        ("app", "-"), ("microsoft.sts", "~"), ("microsoft.exchange", "+"), ("Global", "~")]
    sts = changes[1]
    assert [c.display() for c in sts.commands] == [
        "Set-CsOAuthServer -Identity 'microsoft.sts' -MetadataUrl 'http://acs/new'"]


def test_realm_of_an_oauth_server_is_replaced_because_set_has_no_realm() -> None:
    desired = [want("OAuthServer", "microsoft.sts", metadataUrl="http://acs/new", realm="new-tenant")]
    live = [config(), have("OAuthServer", "microsoft.sts", metadataUrl="http://acs/new", realm="old-tenant")]
    (change,) = plan(desired, live)
    assert change.is_replace
    assert change.reason == "Realm cannot be changed by Set-CsOAuthServer (in none of its documented parameter sets)"
    assert [c.cmdlet for c in change.commands] == ["Remove-CsOAuthServer", "New-CsOAuthServer"]


def test_prune_removes_only_unlisted_objects_of_the_opted_in_kinds() -> None:
    live = [config(), have("PartnerApplication", "stray", applicationIdentifier="x", useOAuthServer=True),
            have("OAuthServer", "other", metadataUrl="http://o")]
    assert plan([], live) == ()
    changes = plan([], live, prune=frozenset({"PartnerApplication"}))
    assert [(c.key.identity, c.action_reason) for c in changes] == [("stray", ActionReason.PRUNE)]


def test_singleton_is_updated_never_created_or_removed() -> None:
    changes = plan([want("OAuthConfiguration", "Global", ensure=Ensure.ABSENT)], [config()])
    assert changes == ()
    changes = plan([want("OAuthConfiguration", "Global", realm="contoso.com")], [config()])
    assert [c.actions for c in changes] == [(Action.UPDATE,)]
    assert dict(changes[0].commands[0].parameters) == {"Identity": "Global", "Realm": "contoso.com"}


def test_ensure_absent_on_missing_object_is_no_change() -> None:
    assert plan([want("PartnerApplication", "app", ensure=Ensure.ABSENT)], [config()]) == ()


def test_restore_commands_recreate_the_object_as_read() -> None:
    live = have("PartnerApplication", "microsoft.exchange", applicationIdentifier=WRONG,
                certificateRawData="QUJD", realm="litwareinc.com", applicationTrustLevel="Application", enabled=True,
                acceptSecurityIdentifierInformation=False, metadataUrl=None, useOAuthServer=False)
    (command,) = SkypeProvider().restore_commands(live)
    assert command.cmdlet == "New-CsPartnerApplication"
    assert dict(command.parameters) == {
        "Identity": "microsoft.exchange", "ApplicationIdentifier": "00000005-0000-0ff1-ce00-000000000000",
        "CertificateRawData": "QUJD", "Realm": "litwareinc.com", "ApplicationTrustLevel": "Application",
        "Enabled": True, "AcceptSecurityIdentifierInformation": False}
    assert "QUJD" not in command.display()


def test_a_replace_keeps_what_the_manifest_does_not_manage() -> None:
    """Issue: a replace reset fields the manifest leaves out (a disabled app came back enabled). The New of a
    replace carries the live values of unmanaged fields that fit the parameter set it uses, and shows them."""
    live = have("PartnerApplication", "microsoft.exchange", applicationIdentifier="wrong", useOAuthServer=True,
                applicationTrustLevel="Full", enabled=False, acceptSecurityIdentifierInformation=True, realm="r")
    (change,) = plan([want("PartnerApplication", "microsoft.exchange", applicationIdentifier=EXCHANGE,
                           metadataUrl="https://x/metadata/json/1", applicationTrustLevel="Full")], [live, config()])
    assert change.is_replace and change.after is not None
    assert change.after["enabled"] is False and change.after["acceptSecurityIdentifierInformation"] is True
    assert "useOAuthServer" not in change.after and "realm" not in change.after  # the old form does not come back
    new = change.commands[1]
    assert dict(new.parameters) == {"Identity": "microsoft.exchange", "MetadataUrl": "https://x/metadata/json/1",
                                    "ApplicationTrustLevel": "Full", "Enabled": False,
                                    "AcceptSecurityIdentifierInformation": True}


def test_a_change_carries_its_kind() -> None:
    (change,) = plan([want("PartnerApplication", "x", applicationIdentifier=EXCHANGE, useOAuthServer=True,
                           applicationTrustLevel="Full")], [config()])
    assert change.kind is SkypeProvider.kinds["PartnerApplication"]
