"""One workflow for plan, apply, drift and run: selection, deletion guards with their flag, and isolation."""

from __future__ import annotations

from tests.e2e import ON_PREMISES, Estate

SEED = """\
hosts:
  atl-cs-001:
    PartnerApplication:
{apps}
"""
APP = """\
      - Identity: {name}
        ApplicationIdentifier: 00000009-0000-0ff1-ce00-00000000000{i}
        ApplicationTrustLevel: Full
        UseOAuthServer: true
"""
PRUNING = """\
apiVersion: reconciler/v1
targets:
  pool:
    provider: skype
    connection: {transport: lab, host: atl-cs-001}
    prune: [PartnerApplication]
resources:
  - target: pool
    kind: PartnerApplication
    identity: keep
    applicationIdentifier: 00000009-0000-0ff1-ce00-000000000000
    useOAuthServer: true
    applicationTrustLevel: Full
"""


def seed_apps(estate: Estate, *names: str) -> None:
    seed = estate.write("seed.yaml", SEED.format(apps="".join(APP.format(name=n, i=i) for i, n in enumerate(names))))
    assert estate.lab("seed", str(seed)).code == 0


def test_mass_prune_is_refused_then_allowed_with_the_flag(estate: Estate) -> None:
    seed_apps(estate, "keep", "old1", "old2", "old3", "old4")
    manifest = estate.write("prune.yaml", PRUNING)
    refused = estate.reconcile("apply", manifest, "--auto-approve")
    assert refused.code == 1
    assert ("deletion guard: this plan removes 4 of the 5 live PartnerApplication objects on target 'pool'"
            in refused.out)
    assert "--allow-deletions 4" in refused.out
    assert len(estate.objects("atl-cs-001", "PartnerApplication")) == 5
    allowed = estate.reconcile("apply", manifest, "--auto-approve", "--allow-deletions", "4")
    assert allowed.code == 0, allowed.out + allowed.err
    assert [a["Identity"] for a in estate.objects("atl-cs-001", "PartnerApplication")] == ["keep"]


def test_target_and_exclude_select_what_a_run_changes(estate: Estate) -> None:
    only_exchange = estate.reconcile("apply", ON_PREMISES, "--auto-approve", "--target", "litware-exchange")
    assert only_exchange.code == 0, only_exchange.out + only_exchange.err
    assert "litware-pool" not in only_exchange.out.split("Applying:")[1]
    assert estate.app("atl-cs-001", "app") is not None  # the pool was not touched
    keep_app = estate.reconcile("apply", ON_PREMISES, "--auto-approve",
                                "--exclude", "litware-pool.PartnerApplication.app")
    assert keep_app.code == 0, keep_app.out + keep_app.err
    assert estate.app("atl-cs-001", "app") is not None
    rest = estate.reconcile("plan", ON_PREMISES, "--detailed-exitcode")
    assert rest.code == 2 and "litware-pool.PartnerApplication.app will be removed" in rest.out


def test_a_partial_run_is_recorded_as_partial(estate: Estate) -> None:
    assert estate.lab("url", "/atl-exchange-001.litwareinc.com/autodiscover/metadata/json/1", "--status",
                      "unreachable").code == 0
    applied = estate.reconcile("apply", ON_PREMISES, "--auto-approve")
    assert applied.code == 1
    history = estate.run("history", "--limit", "1")
    assert history.code == 0 and "partial" in history.out


def test_a_command_the_transport_cannot_run_is_a_plan_error_before_apply() -> None:
    """iisreset over WinRM with native commands disabled: Exchange's restricted endpoint runs no executables, so
    the plan says so (an error on that handler), instead of apply failing after the partner applications changed."""
    from reconciler.changes import HandlerRun
    from reconciler.commands import Command
    from reconciler.runner import check_runnable

    class NoExecutables:
        def unsupported(self, command: Command) -> str | None:
            return "the WinRM target runs no executables" if command.native else None

    class Sessionish:
        def transport(self, target: str) -> NoExecutables:
            return NoExecutables()

    run = HandlerRun("org", "iisreset", ("org.PartnerApplication.x",),
                     (Command("iisreset", native=True, arguments=("atl-exchange-001",)),))
    (problem,) = check_runnable(Sessionish(), (), (run,))  # type: ignore[arg-type]
    assert problem.severity == "error" and problem.address == "org.handler.iisreset"
    assert problem.message == "the WinRM target runs no executables"
