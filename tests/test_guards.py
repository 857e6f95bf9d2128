"""Guards: nothing is deleted that the manifest did not ask to delete, and mass deletion needs an explicit yes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.changes import Action, ActionReason
from reconciler.guards import DeletionLimits, guard
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
from tests.e2e import Estate

T = "pool"
REGISTRY = Registry(providers={"skype": SkypeProvider()})
APP = {"applicationIdentifier": "00000002-0000-0ff1-ce00-000000000000", "useOAuthServer": True,
       "applicationTrustLevel": "Full"}


def state(desired: list[DesiredResource], prune: frozenset[str]) -> DesiredState:
    target = TargetSpec(T, "skype", {"transport": "lab", "host": "h"}, prune)
    return DesiredState("m.yaml", "x", {T: target}, tuple(desired))


def app(identity: str, ensure: Ensure = Ensure.PRESENT) -> DesiredResource:
    return DesiredResource(ResourceKey(T, "PartnerApplication", identity), ensure, dict(APP),
                           SourceLocation("m.yaml", 1, "resources[0]"))


def live_apps(*names: str) -> dict[str, LiveState]:
    resources = {ResourceKey(T, "PartnerApplication", n): LiveResource(ResourceKey(T, "PartnerApplication", n),
                                                                        dict(APP)) for n in names}
    return {T: LiveState(T, resources)}


def planned(desired: DesiredState, live: dict[str, LiveState], limits: DeletionLimits | None = None):
    return guard(plan_changes(desired, live, REGISTRY), desired, live, limits or DeletionLimits())


def test_prune_on_an_emptied_list_deletes_nothing_and_says_so() -> None:
    changes, diagnostics = planned(state([], frozenset({"PartnerApplication"})), live_apps("a", "b", "c"))
    assert changes == ()
    (warning,) = diagnostics
    assert warning.severity == "warning"
    assert "prune is on for PartnerApplication on target 'pool', but the manifest declares no PartnerApplication" \
        in warning.message and "3 pruning removal(s) not planned" in warning.message


def test_prune_with_a_declared_resource_removes_the_others() -> None:
    changes, diagnostics = planned(state([app("a")], frozenset({"PartnerApplication"})), live_apps("a", "b"))
    assert [(c.key.identity, c.action_reason) for c in changes] == [("b", ActionReason.PRUNE)]
    assert diagnostics == ()


def test_mass_deletion_is_an_error_until_allowed() -> None:
    names = [f"app{i}" for i in range(8)]
    desired = state([app("app0")], frozenset({"PartnerApplication"}))
    changes, diagnostics = planned(desired, live_apps(*names))
    assert len(changes) == 7
    (error,) = diagnostics
    assert error.severity == "error"
    assert error.message == ("deletion guard: this plan removes 7 of the 8 live PartnerApplication objects on "
                             "target 'pool' (more than 50%); review it and allow them with --allow-deletions 7")
    _, allowed = planned(desired, live_apps(*names), DeletionLimits(allowed=7))
    assert allowed == ()


def test_more_deletions_than_one_run_may_make() -> None:
    names = [f"app{i}" for i in range(40)]
    desired = state([app(n) for n in names[:25]], frozenset({"PartnerApplication"}))
    _, diagnostics = planned(desired, live_apps(*names))
    assert [d.message for d in diagnostics] == [
        "deletion guard: this plan removes 15 objects, more than the 10 one run may remove; review it and allow "
        "them with --allow-deletions 5"]


KINDS = ("PartnerApplication", "OAuthServer")
NAMES = ("a", "b", "c", "d")


@settings(max_examples=200, deadline=None)
@given(live_names=st.sets(st.tuples(st.sampled_from(KINDS), st.sampled_from(NAMES))),
       declared=st.dictionaries(st.tuples(st.sampled_from(KINDS), st.sampled_from(NAMES)),
                                st.sampled_from([Ensure.PRESENT, Ensure.ABSENT])),
       prune=st.frozensets(st.sampled_from(KINDS)))
def test_plan_never_deletes_what_the_manifest_did_not_ask_to_delete(
        live_names: set[tuple[str, str]], declared: dict[tuple[str, str], Ensure], prune: frozenset[str]) -> None:
    fields = {"PartnerApplication": APP, "OAuthServer": {"metadataUrl": "https://acs/metadata/json/1"}}
    desired = [DesiredResource(ResourceKey(T, k, n), e, dict(fields[k]), SourceLocation("m.yaml", 1, "r"))
               for (k, n), e in declared.items()]
    live = {T: LiveState(T, {ResourceKey(T, k, n): LiveResource(ResourceKey(T, k, n), dict(fields[k]))
                             for k, n in live_names})}
    changes, _ = planned(state(desired, prune), live)
    declared_kinds = {k for k, _ in declared}
    for change in changes:
        if Action.DELETE not in change.actions or change.is_replace:
            continue
        ident = (change.key.kind, change.key.identity)
        asked = declared.get(ident) is Ensure.ABSENT
        pruned = (change.key.kind in prune and ident not in declared and change.key.kind in declared_kinds)
        assert asked or pruned, f"{change.key.address} deleted without being asked"
        assert ident in live_names


def test_an_emptied_resources_list_with_prune_on_deletes_nothing_end_to_end(estate: Estate) -> None:
    manifest = estate.write("empty.yaml", """\
apiVersion: reconciler/v1
targets:
  litware-pool:
    provider: skype
    connection: {transport: lab, host: atl-cs-001}
    prune: [PartnerApplication]
resources: []
""")
    before = estate.objects("atl-cs-001", "PartnerApplication")
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out + run.err
    assert "prune is on for PartnerApplication on target 'litware-pool', but the manifest declares no " \
           "PartnerApplication there" in run.out
    assert estate.objects("atl-cs-001", "PartnerApplication") == before


def test_a_protected_object_is_never_removed_whatever_prune_or_ensure_say(estate: Estate) -> None:
    manifest = estate.write("protect.yaml", """\
apiVersion: reconciler/v1
targets:
  litware-pool:
    provider: skype
    connection: {transport: lab, host: atl-cs-001}
    prune: [PartnerApplication]
    protect: [PartnerApplication.app, Microsoft.Exchange]
resources:
  - target: litware-pool
    kind: PartnerApplication
    identity: app
    ensure: absent
  - target: litware-pool
    kind: PartnerApplication
    identity: microsoft.sharepoint
    applicationIdentifier: 00000003-0000-0ff1-ce00-000000000000
    useOAuthServer: true
    applicationTrustLevel: Full
""")
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out + run.err
    assert ("warning: litware-pool.PartnerApplication.app: protected by targets.litware-pool.protect: not removed "
            "(ensure_absent)") in run.out
    assert ("litware-pool.PartnerApplication.microsoft.exchange: protected by targets.litware-pool.protect: not "
            "removed (delete_because_not_in_manifest)") in run.out
    assert estate.app("atl-cs-001", "app") is not None and estate.app("atl-cs-001", "microsoft.exchange") is not None
    assert estate.app("atl-cs-001", "microsoft.sharepoint") is not None
