"""Unattended operation end to end: drift checks, the run loop, modes, history, metrics, locks, signals.

Every loop here is bounded: by --once/--max-cycles, or by a deadline after which the test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.store import open_store
from tests.e2e import ON_PREMISES, REPO, Estate, loop_process, spawn, stop

DEADLINE = 30.0


def manifest_with(estate: Estate, *, target_extra: str = "", exchange_extra: str = "", latency: int = 0,
                  name: str = "m.yaml") -> Path:
    """The on-premises manifest with a target mode / resource mode / lab latency added."""
    text = ON_PREMISES.read_text(encoding="utf-8")
    for host in ("atl-cs-001", "atl-exchange-001"):  # every target of the manifest
        connection = f"      host: {host}\n"
        text = text.replace(connection, connection + (f"      latencyMs: {latency}\n" if latency else "")
                            + target_extra)
    anchor = "    identity: microsoft.exchange\n"
    text = text.replace(anchor, anchor + exchange_extra)
    return estate.write(name, text)


def runs(estate: Estate) -> list[Any]:
    with open_store(estate.root / ".reconciler" / "runs.sqlite3") as store:
        return store.list(limit=100)



def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_drift_exits_2_when_drifted_records_it_and_0_once_in_sync(estate: Estate) -> None:
    run = estate.reconcile("drift", ON_PREMISES, "--log-format", "json", "--metrics-file", "m.prom")
    assert run.code == 2
    events = [json.loads(line) for line in run.out.splitlines()]
    assert events[0]["event"] == "run_start"
    assert events[-1]["event"] == "run_end" and events[-1]["result"] == "changes" and events[-1]["drifted"] == 5
    changes = [e for e in events if e["event"] == "change"]
    assert {e["address"] for e in changes} >= {"litware-pool.PartnerApplication.app"}
    assert all(e["status"] == "planned" and e["reason"] for e in changes)
    assert estate.app("atl-cs-001", "app") is not None  # drift never changes anything
    assert 'reconcile_drifted_resources{target="litware-pool"} 4' in (estate.root / "m.prom").read_text()

    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    assert estate.reconcile("drift", ON_PREMISES).code == 0
    assert [r.command for r in runs(estate)] == ["drift", "apply", "drift"]
    assert [r.result for r in runs(estate)] == ["no-changes", "applied", "changes"]


def test_run_once_enforces_and_drift_behind_our_back_is_corrected_next_cycle(estate: Estate) -> None:
    assert estate.reconcile("run", ON_PREMISES, "--once").code == 0
    assert estate.app("atl-cs-001", "app") is None
    estate.lab("set", "atl-cs-001", "PartnerApplication", "microsoft.exchange", "ApplicationTrustLevel=User")
    estate.lab("remove", "atl-cs-001", "PartnerApplication", "microsoft.sharepoint")
    run = estate.reconcile("run", ON_PREMISES, "--once", "--log-format", "json")
    assert run.code == 0, run.out
    assert estate.app("atl-cs-001", "microsoft.exchange")["ApplicationTrustLevel"] == "Full"  # type: ignore[index]
    assert estate.app("atl-cs-001", "microsoft.sharepoint") is not None
    statuses = {e["address"]: e["status"] for e in map(json.loads, run.out.splitlines()) if e["event"] == "change"}
    assert statuses == {"litware-pool.PartnerApplication.microsoft.exchange": "applied",
                        "litware-pool.PartnerApplication.microsoft.sharepoint": "applied"}


def test_warn_mode_reports_and_changes_nothing(estate: Estate) -> None:
    manifest = manifest_with(estate, target_extra="    mode: warn\n")
    before = estate.snapshot()["hosts"]["atl-cs-001"]["objects"]
    run = estate.reconcile("run", manifest, "--once", "--log-format", "json")
    assert run.code == 2
    events = [json.loads(line) for line in run.out.splitlines()]
    assert {e["status"] for e in events if e["event"] == "change"} == {"warned"}
    assert events[-1]["result"] == "changes"
    assert estate.snapshot()["hosts"]["atl-cs-001"]["objects"] == before
    plan = estate.reconcile("plan", manifest)
    assert "would be replaced (mode: warn, reported only: apply leaves it)" in plan.out
    apply = estate.reconcile("apply", manifest, "--auto-approve")
    assert apply.code == 0 and "Nothing to apply" in apply.out
    assert estate.snapshot()["hosts"]["atl-cs-001"]["objects"] == before


def test_suspended_target_is_not_even_read(estate: Estate) -> None:
    manifest = manifest_with(estate, target_extra="    mode: suspend\n")
    run = estate.reconcile("run", manifest, "--once")
    assert run.code == 0
    assert estate.round_trips("atl-cs-001") == 0
    assert estate.app("atl-cs-001", "app") is not None


def test_suspended_resource_is_skipped_and_never_pruned(estate: Estate) -> None:
    manifest = manifest_with(estate, target_extra="    prune: [PartnerApplication]\n",
                             exchange_extra="    mode: suspend\n")
    plan = estate.reconcile("plan", manifest)
    assert "microsoft.exchange" not in plan.out  # neither replaced nor pruned
    assert estate.reconcile("run", manifest, "--once").code == 0
    exchange = estate.app("atl-cs-001", "microsoft.exchange")
    assert exchange is not None and exchange["ApplicationIdentifier"] == "00000005-0000-0ff1-ce00-000000000000"


def test_history_lists_runs_with_the_manifest_git_commit(estate: Estate) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=estate.root, check=True, capture_output=True, text=True).stdout

    try:
        git("init", "-q", "-b", "main")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    manifest = estate.write("trust.yaml", ON_PREMISES.read_text(encoding="utf-8"))
    git("add", "trust.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "trust")
    head = git("rev-parse", "HEAD").strip()
    assert estate.reconcile("plan", manifest).code == 0
    assert estate.reconcile("apply", manifest, "--auto-approve").code == 0
    listed = estate.run("history", "--json")
    assert listed.code == 0
    records = json.loads(listed.out)
    assert [r["command"] for r in records] == ["apply", "plan"]
    assert all(r["git"]["commit"] == head and r["git"]["branch"] == "main" for r in records)
    shown = estate.run("history", str(records[0]["id"]))
    assert shown.code == 0
    assert "litware-pool.PartnerApplication.app" in shown.out and head[:7] in shown.out
    table = estate.run("history")
    assert "apply" in table.out and "applied" in table.out


def test_the_loop_corrects_drift_serves_metrics_and_stops_cleanly_on_sigterm(estate: Estate) -> None:
    with loop_process(estate, "run", "--var", f"lab={estate.url}", "--interval", "0.3", "--jitter", "0",
                      "--metrics-port", "0", "--log-format", "json", str(ON_PREMISES)) as proc:
        wait_for(lambda: any(r.result == "applied" for r in runs(estate)), "the first cycle to apply")
        estate.lab("set", "atl-cs-001", "PartnerApplication", "microsoft.exchange", "ApplicationTrustLevel=User")
        wait_for(lambda: estate.app("atl-cs-001", "microsoft.exchange")["ApplicationTrustLevel"] == "Full",  # type: ignore[index]
                 "the loop to correct the drift")
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + DEADLINE
        while url is None and time.monotonic() < deadline:
            event = json.loads(proc.stdout.readline())
            url = event.get("url") if event["event"] == "metrics" else None
        assert url is not None
        response = httpx.get(url, timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'reconcile_runs_total{command="run",result="applied"}' in response.text
        assert "reconcile_last_success_timestamp_seconds" in response.text
        out, err = stop(proc, DEADLINE)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert any(e["event"] == "stop" and e["signal"] == "SIGTERM" for e in events)
    assert all(r.result is not None for r in runs(estate))  # no cycle was cut off half-way
    assert "Traceback" not in err


def test_two_applies_at_once_never_overlap_and_nothing_is_lost(estate: Estate) -> None:
    manifest = manifest_with(estate, latency=300)
    args = ("apply", "--auto-approve", "--var", f"lab={estate.url}", str(manifest))
    first, second = spawn(estate, *args), spawn(estate, *args)
    outs = [p.communicate(timeout=DEADLINE) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    texts = [o[0] for o in outs]
    assert sum("Apply complete: 5 applied" in t for t in texts) == 1  # one applied...
    assert sum("No changes." in t for t in texts) == 1  # ...the other waited, re-read, found nothing to do
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0


def test_a_second_apply_with_a_short_lock_timeout_fails_naming_the_holder(estate: Estate) -> None:
    manifest = manifest_with(estate, latency=700)
    holder = spawn(estate, "apply", "--auto-approve", "--var", f"lab={estate.url}", str(manifest))
    try:
        wait_for(lambda: estate.round_trips("atl-cs-001") >= 1 or holder.poll() is not None, "the first apply")
        run = estate.reconcile("apply", manifest, "--auto-approve", "--lock-timeout", "0.2")
    finally:
        holder.communicate(timeout=DEADLINE)
    assert run.code == 1
    assert "is locked by another run (pid" in run.err
    assert holder.returncode == 0


def test_a_lock_left_by_a_crashed_process_is_recovered(estate: Estate) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from reconciler.locks import default_lock_dir, target_lock\n"
        "from reconciler.manifest import load_manifest\n"
        "from reconciler.providers.base import Registry\n"
        f"d = load_manifest(Path({str(ON_PREMISES)!r}), Registry.from_entry_points(), {{'lab': {estate.url!r}}})\n"
        "with target_lock(default_lock_dir(), d.targets['litware-pool']):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=estate.root, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    blocked = estate.reconcile("apply", ON_PREMISES, "--auto-approve", "--lock-timeout", "0.2")
    assert blocked.code == 1 and f"pid {holder.pid}" in blocked.err
    holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the flock
    holder.wait(timeout=DEADLINE)
    run = estate.reconcile("apply", ON_PREMISES, "--auto-approve", "--lock-timeout", "5")
    assert run.code == 0, run.err
