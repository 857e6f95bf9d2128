"""`history --target/--result/--since`, and handler runs (iisreset) in history and the event log, against the lab."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from reconciler.errors import ReconcilerError
from reconciler.history import parse_since
from reconciler.store import ChangeRecord, RunRecord, open_store
from reconciler.store.sqlite import SQLiteRunStore
from tests.e2e import CROSS_PREMISES, ON_PREMISES, Estate


def history(estate: Estate, *extra: str) -> list[dict[str, object]]:
    run = estate.run("history", "--json", *extra)
    assert run.code == 0, run.err
    return list(json.loads(run.out))


def cross(estate: Estate) -> Path:
    shutil.copytree(CROSS_PREMISES.parent / "certs", estate.root / "certs", dirs_exist_ok=True)
    return estate.write("cross.yaml", CROSS_PREMISES.read_text(encoding="utf-8"))


def test_history_filters_by_target_result_and_time(estate: Estate) -> None:
    assert estate.reconcile("plan", ON_PREMISES).code == 0                       # changes
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0   # applied
    assert estate.reconcile("plan", ON_PREMISES).code == 0                       # no-changes
    assert estate.reconcile("plan", cross(estate)).code == 0                    # changes, other targets
    everything = history(estate)
    assert [r["result"] for r in everything] == ["changes", "no-changes", "applied", "changes"]

    exchange = history(estate, "--target", "litware-exchange")
    assert len(exchange) == 3 and all("litware-exchange" in r["targets"] for r in exchange)  # type: ignore[operator]
    assert [r["result"] for r in history(estate, "--target", "fabrikam-tenant")] == ["changes"]
    assert history(estate, "--target", "LITWARE-POOL") == history(estate, "--target", "litware-pool")
    assert history(estate, "--target", "litware") == []  # a whole name, not a part of one
    assert history(estate, "--target", "litware%") == [] and history(estate, "--target", "litware_pool") == []

    assert [r["result"] for r in history(estate, "--result", "applied")] == ["applied"]
    assert [r["result"] for r in history(estate, "--result", "changes", "--target", "litware-pool")] == ["changes"]
    assert history(estate, "--result", "failed") == []
    bad = estate.run("history", "--result", "drifted")
    assert bad.code == 1 and "invalid choice: 'drifted'" in bad.err

    assert len(history(estate, "--since", "1h")) == 4
    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 3600))
    assert history(estate, "--since", future) == []
    assert len(history(estate, "--since", "2000-01-01")) == 4
    wrong = estate.run("history", "--since", "yesterday")
    assert wrong.code == 1 and "--since 'yesterday': expected a duration ago (24h" in wrong.err

    table = estate.run("history", "--target", "fabrikam-pool")
    assert table.code == 0 and len(table.out.strip().splitlines()) == 2 and "cross.yaml" in table.out


def test_an_iisreset_that_ran_is_in_history_and_the_event_log(estate: Estate) -> None:
    run = estate.reconcile("apply", ON_PREMISES, "--auto-approve")
    assert run.code == 0 and "Handler litware-exchange.handler.iisreset: ran once" in run.out
    last = history(estate, "--limit", "1")[0]
    handler = [c for c in last["changes"] if c["actions"] == ["run"]]  # type: ignore[union-attr,index]
    assert handler == [{"address": "litware-exchange.handler.iisreset", "actions": ["run"], "mode": "enforce",
                        "status": "ran", "reason": handler[0]["reason"]}]
    assert "iisreset atl-exchange-001; iisreset atl-exchange-002 (after litware-exchange." in handler[0]["reason"]
    shown = estate.run("history", str(last["id"]))
    assert "  > litware-exchange.handler.iisreset: ran (iisreset atl-exchange-001; iisreset atl-exchange-002" \
        in shown.out

    # the loop: a role removed behind its back is repaired and the handler runs; the event log says so
    estate.lab("remove", "atl-exchange-001", "ManagementRoleAssignment", next(
        a["Identity"] for a in estate.objects("atl-exchange-001", "ManagementRoleAssignment")
        if a["Role"] == "ArchiveApplication"))
    loop = estate.reconcile("run", ON_PREMISES, "--once", "--log-format", "json")
    assert loop.code == 0, loop.out + loop.err
    events = [json.loads(line) for line in loop.out.splitlines()]
    handlers = [e for e in events if e["event"] == "handler"]
    assert len(handlers) == 1 and handlers[0]["address"] == "litware-exchange.handler.iisreset"
    assert handlers[0]["status"] == "ran" and handlers[0]["level"] == "info"
    assert "iisreset atl-exchange-001" in handlers[0]["reason"]
    assert [r["command"] for r in history(estate, "--limit", "1")] == ["run"]


def test_a_failed_handler_is_recorded_as_failed_and_logged_as_an_error(estate: Estate) -> None:
    manifest = estate.write("bad-server.yaml", ON_PREMISES.read_text(encoding="utf-8").replace(
        "servers: [atl-exchange-001, atl-exchange-002]", "servers: [atl-exchange-001, atl-exchange-404]"))
    loop = estate.reconcile("run", manifest, "--once", "--log-format", "json")
    assert loop.code == 1
    handler = next(json.loads(line) for line in loop.out.splitlines() if '"event": "handler"' in line)
    assert handler["status"] == "failed" and handler["level"] == "error"
    failed = history(estate, "--result", "failed")
    assert len(failed) == 1
    assert {"address": "litware-exchange.handler.iisreset", "status": "failed"}.items() <= next(
        c for c in failed[0]["changes"] if c["actions"] == ["run"]).items()  # type: ignore[union-attr]


def _runs(store: object) -> None:
    records = [("plan", 100.0, ("a", "b"), "changes"), ("apply", 200.0, ("a",), "applied"),
               ("drift", 300.0, ('q"x', "under_score"), "failed"), ("run", 400.0, (), "error")]
    for command, started, targets, result in records:
        run_id = store.start(RunRecord(None, command, started, "/m.yaml", targets=targets))  # type: ignore[attr-defined]
        store.finish(run_id, result=result, ended_at=started + 1,  # type: ignore[attr-defined]
                     changes=[ChangeRecord("a.handler.iisreset", ("run",), "iisreset x", "enforce", "ran")])


def _check(store: object) -> None:
    def ids(**kw: object) -> list[str]:
        return [r.command for r in store.list(**kw)]  # type: ignore[attr-defined]
    assert ids(target="a") == ["apply", "plan"]
    assert ids(target="A") == ["apply", "plan"]
    assert ids(target='q"x') == ["drift"] and ids(target="under_score") == ["drift"]
    assert ids(target="under%") == [] and ids(target="under_scor") == [] and ids(target="q") == []
    assert ids(result="failed") == ["drift"]
    assert ids(since=200.0) == ["run", "drift", "apply"]
    assert ids(since=200.0, target="a", result="applied") == ["apply"]
    assert store.list(limit=1)[0].changes[0].actions == ("run",)  # type: ignore[attr-defined]


def test_sqlite_store_filters(tmp_path: Path) -> None:
    with SQLiteRunStore(tmp_path / "runs.sqlite3") as store:
        _runs(store)
        _check(store)


@pytest.mark.skipif(not os.environ.get("RECONCILE_TEST_POSTGRES"), reason="RECONCILE_TEST_POSTGRES is not set")
def test_postgres_store_filters() -> None:
    url = os.environ["RECONCILE_TEST_POSTGRES"]
    schema = f"history_filters_{os.getpid()}_{int(time.time() * 1000)}"
    import psycopg
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            with open_store(f"{url}?options=-csearch_path%3D{schema}") as store:
                _runs(store)
                _check(store)
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_since_accepts_durations_and_iso_times() -> None:
    assert parse_since("24h", clock=lambda: 100_000.0) == 100_000.0 - 86_400
    assert parse_since("1h30m", clock=lambda: 10_000.0) == 10_000.0 - 5_400
    assert parse_since("2026-01-31T08:00:00+00:00") == parse_since("2026-01-31T08:00:00Z") == 1769846400.0
    with pytest.raises(ReconcilerError, match="expected a duration ago"):
        parse_since("last tuesday")
