"""Nothing lost after a crash or a failure: apply reads the journal first and finishes what was left undone.

- A replace whose New failed and whose restore failed too (or a run killed between Remove and New) leaves
  the object absent; the journal holds it as it was read. The next plan creates it again, keeping the
  removed object's values for what the manifest does not manage, and says why.
- A handler that was due and did not run successfully (a failed iisreset, or a run killed before it) is
  planned again on the next run, even when there are no changes, until it succeeds.
"""

from __future__ import annotations

import json

from reconciler.lab.state import LabStore
from tests.e2e import ON_PREMISES, Estate

EXCHANGE_ID = "00000002-0000-0ff1-ce00-000000000000"


def resets(estate: Estate) -> dict[str, int]:
    record = LabStore(estate.state).read()["hosts"]["atl-exchange-001"]
    return dict(record.get("iisResets") or {})


def test_a_failed_handler_is_due_until_it_runs(estate: Estate) -> None:
    assert estate.lab("fail", "atl-exchange-001", "iisreset").code == 0
    first = estate.reconcile("apply", ON_PREMISES, "--auto-approve")
    assert first.code == 1 and "FAILED" in first.out
    plan = estate.reconcile("plan", ON_PREMISES, "--detailed-exitcode")
    assert plan.code == 2, plan.out + plan.err
    assert "# due since" in plan.out
    assert "Then 1 handler still due: litware-exchange.handler.iisreset." in plan.out
    before = resets(estate)
    again = estate.reconcile("apply", ON_PREMISES, "--auto-approve")
    assert again.code == 0, again.out + again.err
    assert resets(estate).get("atl-exchange-001", 0) == before.get("atl-exchange-001", 0) + 1, (before, again.out)
    assert estate.reconcile("plan", ON_PREMISES, "--detailed-exitcode").code == 0


def test_a_replace_whose_new_and_restore_failed_is_completed_from_the_journal(estate: Estate) -> None:
    # The seed's microsoft.exchange has the wrong ApplicationIdentifier: a replace. An admin disabled it.
    assert estate.lab("set", "atl-cs-001", "PartnerApplication", "microsoft.exchange", "Enabled=false").code == 0
    # Its New fails, and so does the executor's restore (the same cmdlet, twice): the object is gone.
    assert estate.lab("fail", "atl-cs-001", "New-CsPartnerApplication", "--identity", "microsoft.exchange",
                      "--times", "2").code == 0
    broken = estate.reconcile("apply", ON_PREMISES, "--auto-approve")
    assert broken.code == 1 and "RESTORE FAILED" in broken.out
    assert estate.app("atl-cs-001", "microsoft.exchange") is None
    plan = estate.reconcile("plan", ON_PREMISES)
    assert "completes a replace interrupted at" in plan.out
    assert "-Enabled:$false" in plan.out  # the removed object's unmanaged value is kept
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    back = estate.app("atl-cs-001", "microsoft.exchange")
    assert back is not None and back["ApplicationIdentifier"] == EXCHANGE_ID and back["Enabled"] is False
    assert "completes a replace" not in estate.reconcile("plan", ON_PREMISES).out


def test_a_run_killed_between_remove_and_new_is_completed(estate: Estate) -> None:
    """What SIGKILL between a replace's Remove and New leaves on disk: the journal's batch_start (with the removed
    object) and no batch_end, and the object absent on the server. Reproduced here without the kill."""
    assert estate.lab("set", "atl-cs-001", "PartnerApplication", "microsoft.exchange",
                      "AcceptSecurityIdentifierInformation=true").code == 0
    plan = json.loads(estate.reconcile("plan", ON_PREMISES, "--json").out)
    change = next(c for c in plan["resource_changes"] if c["identity"] == "microsoft.exchange")
    assert change["change"]["actions"] == ["delete", "create"]
    replaced = dict(change["change"]["before"])
    journal = estate.root / ".reconciler" / "journal.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text(json.dumps({"time": "2026-11-26T03:00:00+0000", "event": "batch_start",
                                   "target": "litware-pool", "handlers_due": [],
                                   "changes": [{"address": change["address"], "actions": ["delete", "create"],
                                                "replaced": replaced}]}) + "\n", encoding="utf-8")
    assert estate.lab("remove", "atl-cs-001", "PartnerApplication", "microsoft.exchange").code == 0
    run = estate.reconcile("plan", ON_PREMISES)
    assert "completes a replace interrupted at 2026-11-26T03:00:00+0000" in run.out
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    back = estate.app("atl-cs-001", "microsoft.exchange")
    assert back is not None and back["AcceptSecurityIdentifierInformation"] is True


def test_the_journal_replay_keeps_an_earlier_removal_when_a_later_batch_was_not_delivered() -> None:
    from reconciler.journal import unfinished

    removed = {"enabled": False}
    events = [
        {"time": "t1", "event": "batch_start", "target": "pool",
         "changes": [{"address": "pool.PartnerApplication.a", "replaced": removed}]},
        {"time": "t2", "event": "batch_start", "target": "pool",
         "changes": [{"address": "pool.PartnerApplication.b", "replaced": removed}], "handlers_due": ["pool.h.x"]},
        {"time": "t2", "event": "batch_undelivered", "target": "pool", "error": "connection refused"},
        {"time": "t3", "event": "handler", "address": "pool.h.x", "error": None, "ran": False},
    ]
    left = unfinished(events, "pool")
    assert list(left.removed) == ["pool.PartnerApplication.a"]
    assert left.handlers == {}


def test_a_handler_whose_changes_all_failed_is_not_left_due(estate: Estate) -> None:
    """The batch records iisreset as due; when every change that triggers it failed, it is not needed after all,
    and the next plan must not present it as overdue (it is triggered again by the retried change instead)."""
    assert estate.lab("fail", "atl-exchange-001", "New-LinkedUser").code == 0
    first = estate.reconcile("apply", ON_PREMISES, "--auto-approve")
    assert first.code == 1 and "not needed" in first.out
    plan = estate.reconcile("plan", ON_PREMISES)
    assert "litware-exchange.handler.iisreset will run once" in plan.out
    assert "# due since" not in plan.out


def test_a_journal_line_changed_by_hand_stops_the_plan_with_its_line_named_and_a_torn_last_line_does_not(
        estate: Estate) -> None:
    """Recovery cannot tell what a whole line that is not an event records (skipping it could forget a removed
    object): the plan stops with the file, the line and what is wrong, exit 1. A last line cut short by a crash is
    skipped, as before."""
    journal = estate.root / ".reconciler" / "journal.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    good = json.dumps({"time": "2026-11-26T03:00:00+0000", "event": "handler", "address": "litware-exchange.iisreset",
                       "commands": [], "ran": True})
    for line, problem in ((json.dumps({"event": "batch_start", "target": "litware-pool", "changes": "oops"}),
                           "'changes' is not a list of records"),
                          (json.dumps({"event": "batch_end", "target": "litware-pool", "outcomes": [1]}),
                           "'outcomes' is not a list of records"),
                          (json.dumps({"event": "batch_start", "target": "litware-pool",
                                       "changes": [{"replaced": {"Identity": "x"}}]}),
                           "changes[0] has a replaced object without its address and fields"),
                          (json.dumps({"event": "batch_start", "target": "litware-pool", "handlers_due": 5}),
                           "'handlers_due' is not a list")):
        journal.write_text(good + "\n" + line + "\n", encoding="utf-8")
        run = estate.reconcile("plan", ON_PREMISES)
        assert run.code == 1 and f"journal.jsonl:2: {problem}, not what apply writes" in run.err, run.err
    journal.write_text(good + "\n" + line[: len(line) // 2], encoding="utf-8")  # a crash mid-write
    assert estate.reconcile("plan", ON_PREMISES, "--detailed-exitcode").code == 2
