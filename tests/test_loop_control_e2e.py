"""Steering the loop from the command line: `reconcile suspend` / `resume` (recorded in the run store, honoured by
`run` and `drift`, shown by `status`), `reconcile trigger` (a sleeping loop reconciles now) and the next scheduled
run in `status`.

The loop in the trigger test runs as its own process with a one-hour interval: only the request can make it
run a second cycle. Every wait is bounded by a deadline after which the test fails.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from reconciler.store import open_store
from tests.e2e import ON_PREMISES, Estate, loop_process, stop

DEADLINE = 60.0
EXCHANGE_APP = "litware-pool.PartnerApplication.microsoft.exchange"


def status(estate: Estate) -> dict[str, dict[str, Any]]:
    run = estate.reconcile("status", ON_PREMISES, "--json")
    assert run.code == 0, run.err
    return {s["target"]: s for s in json.loads(run.out)}


def runs(estate: Estate) -> list[Any]:
    with open_store(estate.root / ".reconciler" / "runs.sqlite3") as store:
        return store.list(limit=100)


def test_a_suspended_target_is_left_alone_by_the_loop_until_resumed(estate: Estate) -> None:
    run = estate.run("suspend", ON_PREMISES, "litware-pool", "--reason", "CU14 upgrade tonight")
    assert run.code == 0, run.err
    assert "Suspended litware-pool" in run.out
    pool = status(estate)["litware-pool"]
    assert pool["condition"] == "Suspended" and pool["reason"] == "SuspendedByOperator"
    assert "CU14 upgrade tonight" in pool["message"] and pool["since"] is not None

    assert estate.reconcile("run", ON_PREMISES, "--once").code == 0
    assert estate.app("atl-cs-001", "app") is not None  # the pool's drift is untouched...
    assert estate.reconcile("drift", ON_PREMISES, "--target", "litware-exchange").code == 0  # ...Exchange's is gone
    assert runs(estate)[1].targets == ("litware-exchange",)
    assert "Suspended" in estate.reconcile("status", ON_PREMISES).out

    run = estate.run("resume", ON_PREMISES, "litware-pool")
    assert run.code == 0 and "Resumed litware-pool" in run.out
    assert status(estate)["litware-pool"]["condition"] != "Suspended"
    assert estate.reconcile("run", ON_PREMISES, "--once").code == 0
    assert estate.app("atl-cs-001", "app") is None
    assert estate.reconcile("drift", ON_PREMISES).code == 0
    assert status(estate)["litware-pool"]["condition"] == "Ready"
    again = estate.run("resume", ON_PREMISES, "litware-pool")
    assert again.code == 0 and "not suspended" in again.out


def test_a_suspended_resource_keeps_its_drift_while_the_rest_of_its_target_is_reconciled(estate: Estate) -> None:
    estate.lab("set", "atl-cs-001", "PartnerApplication", "microsoft.exchange", "ApplicationTrustLevel=User")
    # Case-insensitive, as the manifest's identities are; recorded as the manifest spells it.
    assert estate.run("suspend", ON_PREMISES, EXCHANGE_APP.upper()).code == 0
    assert estate.reconcile("run", ON_PREMISES, "--once").code == 0
    assert estate.app("atl-cs-001", "app") is None  # the target's other changes were made
    assert estate.app("atl-cs-001", "microsoft.exchange")["ApplicationTrustLevel"] == "User"  # type: ignore[index]
    pool = status(estate)["litware-pool"]
    assert pool["suspendedResources"] == [EXCHANGE_APP]
    assert f"suspended: {EXCHANGE_APP}" in estate.reconcile("status", ON_PREMISES).out

    assert estate.run("resume", ON_PREMISES, EXCHANGE_APP).code == 0
    assert estate.reconcile("run", ON_PREMISES, "--once").code == 0
    assert estate.app("atl-cs-001", "microsoft.exchange")["ApplicationTrustLevel"] == "Full"  # type: ignore[index]


def test_a_misspelt_address_is_refused_with_a_suggestion_and_usage_errors_exit_1(estate: Estate) -> None:
    run = estate.run("suspend", ON_PREMISES, "litware-pol")
    assert run.code == 1 and "did you mean 'litware-pool'?" in run.err
    assert estate.run("resume", ON_PREMISES, "litware-exchang").code == 1
    assert estate.run("suspend", ON_PREMISES).code == 1  # no address: usage, exit 1 (never argparse's 2)
    assert estate.run("trigger").code == 1
    assert estate.run("trigger", ON_PREMISES, "--timeout", "soon").code == 1



def wait_for(predicate: Any, what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            pytest.fail(f"{what}: the loop ended first: {process.communicate()}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_trigger_wakes_a_sleeping_loop_and_status_shows_its_next_run(estate: Estate) -> None:
    with loop_process(estate, "run", "--var", f"lab={estate.url}", "--interval", "1h", "--jitter", "0",
                      "--wake-poll", "0.1", "--log-format", "json", str(ON_PREMISES)) as loop:
        wait_for(lambda: status(estate)["litware-pool"]["nextRun"] is not None
                 and status(estate)["litware-pool"]["nextRun"]["reason"] == "interval", "the first cycle", loop)
        assert [r.result for r in runs(estate)] == ["applied"]
        next_run = status(estate)["litware-pool"]["nextRun"]
        assert 3500 < next_run["at"] - time.time() <= 3600 and f"pid {loop.pid}" in next_run["by"]
        assert "in 59m" in estate.reconcile("status", ON_PREMISES).out

        estate.lab("set", "atl-cs-001", "PartnerApplication", "microsoft.exchange", "ApplicationTrustLevel=User")
        asked = estate.run("trigger", ON_PREMISES, "--wait", "--timeout", "1m")
        assert asked.code == 0, asked.err
        assert f"pid {loop.pid}" in asked.err and "applied" in asked.out
        assert [r.result for r in runs(estate)] == ["applied", "applied"]
        assert estate.app("atl-cs-001", "microsoft.exchange")["ApplicationTrustLevel"] == "Full"  # type: ignore[index]
        out, err = stop(loop, DEADLINE)
    assert loop.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events].count("run_requested") == 1
    assert status(estate)["litware-pool"]["nextRun"] is None  # a stopped loop schedules nothing


def test_trigger_without_a_loop_says_so_and_wait_gives_up_at_its_timeout(estate: Estate) -> None:
    run = estate.run("trigger", ON_PREMISES)
    assert run.code == 0 and "no `reconcile run` loop" in run.err
    waited = estate.run("trigger", ON_PREMISES, "--wait", "--timeout", "0.3s")
    assert waited.code == 1 and "finished within 0.3s" in waited.err
