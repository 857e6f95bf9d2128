"""The PostgreSQL run store against a real server: runs and history round-trip as in the SQLite store, several
writers lose nothing, passwords never show, and the target locks it holds exclude runners on other machines
(simulated: each runner its own directory and its own machine-local lock directory), and go with their
connection.

Needs RECONCILE_TEST_POSTGRES=postgresql://user:password@127.0.0.1/database (.ci/run sets PostgreSQL up and
exports it). Each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from reconciler.errors import LockError, StoreError
from reconciler.lab.state import LabStore
from reconciler.locks import LOCK_DIR_ENV, lock_keys
from reconciler.manifest import load_manifest
from reconciler.providers.base import Registry
from reconciler.store import ChangeRecord, GitInfo, RunRecord, RunResult, UnknownResult, open_store
from reconciler.store.base import is_postgres, mask_secrets
from reconciler.store.postgres import MIGRATIONS
from tests.e2e import ON_PREMISES, REPO, Estate
from tests.test_store import check_identity_and_legacy_keys, check_operator_records

URL = os.environ.get("RECONCILE_TEST_POSTGRES", "")
pytestmark = pytest.mark.skipif(not URL, reason="RECONCILE_TEST_POSTGRES is not set (.ci/run sets up PostgreSQL "
                                                "and exports it): the PostgreSQL store needs a real server")
PASSWORD = urlsplit(URL).password or "" if URL else ""
DEADLINE = 120.0
T0 = 1_700_000_000.123456


def _admin() -> Any:
    import psycopg

    return psycopg.connect(URL, autocommit=True, connect_timeout=10)


@pytest.fixture
def pg() -> Iterator[str]:
    """A store URL whose tables live in a fresh schema of their own."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with _admin() as db:
        db.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in URL else "?"
    try:
        yield f"{URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with _admin() as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


def full_record(**overrides: object) -> RunRecord:
    values: dict[str, object] = dict(
        id=None, command="apply", started_at=T0, manifest_path="/srv/manifests/on-premises.yaml",
        manifest_sha256="ab" * 32, git=GitInfo(commit="0123456789abcdef0123456789abcdef01234567", branch="main",
                                               dirty=True),
        targets=("litware-pool", "fabrikam-pool"), ended_at=T0 + 2.5, result="failed",
        changes=(
            ChangeRecord("litware-pool.PartnerApplication.microsoft.exchange", ("delete", "create"),
                         "ApplicationIdentifier cannot be changed by Set-CsPartnerApplication", "enforce",
                         "failed, restored"),
            ChangeRecord("litware-pool.OAuthServer.microsoft.sts", ("update",), "drift", "warn", "warned"),
        ),
        errors=("New-CsPartnerApplication: the metadata document could not be downloaded\nsecond line",
                "Secret=*** (masked by the caller) \u00e9\u4e2d \"quoted\" \x00", "lone \ud800 surrogate"),
    )
    values.update(overrides)
    return RunRecord(**values)  # type: ignore[arg-type]


# -- the store -------------------------------------------------------------------------------------


def test_open_store_selects_postgresql_for_both_schemes(pg: str) -> None:
    assert is_postgres(pg) and is_postgres(pg.replace("postgresql://", "postgres://", 1))
    assert not is_postgres("runs.sqlite3") and not is_postgres(None)
    for location in (pg, pg.replace("postgresql://", "POSTGRES://", 1)):
        with open_store(location) as store:
            assert type(store).__name__ == "PostgresRunStore"
            assert store.schema_version() == len(MIGRATIONS)  # type: ignore[attr-defined]
            if PASSWORD:
                assert PASSWORD not in repr(store) and "***" in repr(store)


def test_start_finish_get_round_trip_with_every_field(pg: str) -> None:
    want = full_record()
    with open_store(pg) as store:
        run_id = store.start(RunRecord(id=999, command=want.command, started_at=want.started_at,
                                       manifest_path=want.manifest_path, git=want.git, targets=("litware-pool",)))
        assert run_id != 999
        store.finish(run_id, result="failed", changes=want.changes, errors=want.errors, ended_at=want.ended_at,
                     manifest_sha256=want.manifest_sha256, targets=want.targets)
        got = store.get(run_id)
        assert got == RunRecord(**{**want.__dict__, "id": run_id})  # NUL and a lone surrogate included
        assert got is not None and got.duration == pytest.approx(2.5)
        assert store.list() == [got]
    with open_store(pg) as reopened:
        assert reopened.get(run_id) == got
        assert reopened.get(2**70) is None and reopened.get(run_id + 1000) is None


def test_the_store_alters_nothing_it_is_given(pg: str) -> None:
    tricky = ("password=hunter2", "*** ", "", "  padded  ", "tab\there", "\u202e rtl", "{\"json\": [1]}", "'; DROP")
    record = full_record(errors=tricky, targets=tricky[:3], manifest_path="C:\\manifests\\x'y\".yaml",
                         changes=(ChangeRecord(tricky[0], ("create",), tricky[6], tricky[3], tricky[4]),),
                         git=GitInfo(None, None, None))
    with open_store(pg) as store:
        run_id = store.start(record)
        assert store.get(run_id) == RunRecord(**{**record.__dict__, "id": run_id})
        outside = store.start(full_record(git=None))
        assert store.get(outside).git is None  # type: ignore[union-attr]


def test_finish_keeps_what_start_recorded_and_refuses_a_second_finish(pg: str) -> None:
    with open_store(pg) as store:
        kept = store.start(RunRecord(None, "plan", T0, "m.yaml", manifest_sha256="h1", targets=("a",)))
        store.finish(kept, result="no-changes", ended_at=T0 + 1)
        k = store.get(kept)
        assert k is not None and (k.manifest_sha256, k.targets, k.ended_at, k.result) == ("h1", ("a",), T0 + 1,
                                                                                         "no-changes")
        replaced = store.start(RunRecord(None, "plan", T0, "m.yaml", manifest_sha256="h1", targets=("a",)))
        store.finish(replaced, result="changes", manifest_sha256="h2", targets=["a", "b"])
        r = store.get(replaced)
        assert r is not None and (r.manifest_sha256, r.targets) == ("h2", ("a", "b"))
        assert r.ended_at is not None and abs(r.ended_at - time.time()) < 60
        with pytest.raises(StoreError, match="no run 12345"):
            store.finish(12345, result="applied")
        with pytest.raises(StoreError, match="already finished"):
            store.finish(kept, result="failed")
        with pytest.raises(ValueError, match="unknown run result"):
            store.finish(replaced, result="aplied")
        with pytest.raises(ValueError, match="unknown run command"):
            store.start(RunRecord(None, "aply", T0, "m.yaml"))
        unfinished = store.start(RunRecord(None, "run", T0, "m.yaml"))
    with open_store(pg) as store:
        u = store.get(unfinished)
        assert u is not None and (u.result, u.ended_at, u.finished) == (None, None, False)


def test_list_is_newest_first_limited_and_filtered(pg: str) -> None:
    with open_store(pg) as store:
        ids = [store.start(RunRecord(None, "plan", T0 + n, "/a.yaml")) for n in range(5)]
        early = store.start(RunRecord(None, "apply", T0 - 10, "/b.yaml"))
        same_start = store.start(RunRecord(None, "drift", T0 + 4, "/b.yaml"))
        assert [r.id for r in store.list()] == [same_start, *reversed(ids), early]
        assert [r.id for r in store.list(limit=2)] == [same_start, ids[4]]
        assert store.list(limit=0) == []
        with pytest.raises(ValueError):
            store.list(limit=-1)
        assert [r.id for r in store.list(manifest_path="/b.yaml")] == [same_start, early]
        assert [r.id for r in store.list(command="plan", limit=2)] == [ids[4], ids[3]]
        assert [r.id for r in store.list(manifest_path="/b.yaml", command="apply")] == [early]
        assert store.list(manifest_path="/a.yaml'; --") == []


def test_every_result_round_trips_and_an_unknown_stored_word_is_kept(pg: str) -> None:
    import psycopg

    with open_store(pg) as store:
        ids: dict[RunResult, int] = {}
        for i, result in enumerate(RunResult):
            ids[result] = store.start(RunRecord(None, "apply", T0 + i, "/m.yaml"))
            store.finish(ids[result], result=result, ended_at=T0 + i + 1)
        for result, run_id in ids.items():
            got = store.get(run_id)
            assert got is not None and got.result is result
            assert [r.id for r in store.list(result=result)] == [run_id]
    with psycopg.connect(pg, autocommit=True) as db:
        assert {row[0] for row in db.execute("SELECT result FROM reconcile_runs")} == {r.value for r in RunResult}
        db.execute("UPDATE reconcile_runs SET result = 'skipped' WHERE id = %s", (ids[RunResult.APPLIED],))
    with open_store(pg) as store:
        got = store.get(ids[RunResult.APPLIED])
        assert got is not None and got.result == UnknownResult("skipped") and got.result_word == "skipped"
        assert store.list(limit=1)[0].result is RunResult.INTERRUPTED
        assert store.list(result=RunResult.APPLIED) == []


def test_several_writers_at_once_lose_nothing(pg: str) -> None:
    def write(n: int, out: list[int]) -> None:
        with open_store(pg) as store:
            for i in range(10):
                run_id = store.start(RunRecord(None, "run", T0 + i, f"m{n}.yaml"))
                store.finish(run_id, result="no-changes", ended_at=T0 + i + 1)
                out.append(run_id)

    found: list[int] = []
    threads = [threading.Thread(target=write, args=(n, found)) for n in range(4)]  # four fresh connections,
    for thread in threads:  # migrating the empty schema at the same moment
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert len(set(found)) == 40
    with open_store(pg) as store:
        runs = store.list(limit=100)
        assert len(runs) == 40 and all(r.result == "no-changes" for r in runs)


def test_a_store_written_by_a_newer_version_is_refused(pg: str) -> None:
    with open_store(pg):
        pass
    import psycopg

    with psycopg.connect(pg, autocommit=True) as db:
        db.execute("INSERT INTO reconcile_schema_version (version, applied_at) VALUES (99, 0)")
    with pytest.raises(StoreError, match="schema version 99, newer than this reconciler knows"):
        open_store(pg)


def test_passwords_never_show_in_errors(pg: str) -> None:
    wrong = urlsplit(URL)._replace(netloc=f"{urlsplit(URL).username}:not-the-hunter2-password@"
                                          f"{urlsplit(URL).hostname}:{urlsplit(URL).port or 5432}").geturl()
    with pytest.raises(StoreError) as caught:
        open_store(wrong)
    assert "not-the-hunter2-password" not in str(caught.value) and "***" in str(caught.value)
    with pytest.raises(StoreError) as refused:
        open_store("postgresql://ops:hunter2@127.0.0.1:1/runs?connect_timeout=5")
    assert "hunter2" not in str(refused.value) and "postgresql://ops:***@127.0.0.1:1/runs" in str(refused.value)
    with pytest.raises(StoreError) as bad_port:
        open_store("postgresql://ops:hunter2@127.0.0.1:99999/runs")
    assert "hunter2" not in str(bad_port.value)
    assert mask_secrets("postgresql://ops:p%40ss@db/x?password=again&sslmode=require") \
        == "postgresql://ops:***@db/x?password=***&sslmode=require"
    assert mask_secrets("host=db password='a b' user=x") == "host=db password=*** user=x"


# -- end to end: runners sharing one store ----------------------------------------------------------------


def runner(estate: Estate, machine: str, store: str, *args: str) -> subprocess.Popen[str]:
    """`reconcile ARGS` as if on another machine: its own working directory and its own local lock directory."""
    home = estate.root / machine
    home.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "reconciler", *args, "--store", store], cwd=home, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO), LOCK_DIR_ENV: str(home / "locks")})


def shared_manifest(estate: Estate, pool: str = "atl-cs-001") -> Path:
    text = ON_PREMISES.read_text(encoding="utf-8")
    for host, spelling in (("atl-cs-001", pool), ("atl-exchange-001", "atl-exchange-001")):
        text = text.replace(f"      host: {host}\n", f"      host: {spelling}\n      state: {estate.state}\n")
    return estate.write(f"shared-{pool}.yaml", text)


def apply_args(estate: Estate, manifest: Path, *extra: str) -> tuple[str, ...]:
    return ("apply", "--auto-approve", "--var", f"lab={estate.url}", *extra, str(manifest))


def advisory_holders(pg: str, manifest: Path, estate: Estate) -> list[int]:
    """The PostgreSQL backends holding the manifest's advisory locks."""
    import psycopg

    desired = load_manifest(manifest, Registry.from_entry_points(), {"lab": estate.url})
    wanted = {((k.advisory_key >> 32) & 0xFFFFFFFF, k.advisory_key & 0xFFFFFFFF)
              for k in lock_keys(desired.targets.values())}
    with psycopg.connect(pg, autocommit=True) as db:
        rows = db.execute("SELECT classid::int8, objid::int8, pid FROM pg_locks "
                          "WHERE locktype = 'advisory' AND granted AND objsubid = 1").fetchall()
    return [int(pid) for classid, objid, pid in rows if (classid, objid) in wanted]


def wait_for(predicate: Any, what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            pytest.fail(f"{what}: the process ended first: {process.communicate()}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_two_runners_on_one_store_one_target_exactly_one_applies(estate: Estate, pg: str) -> None:
    manifest = shared_manifest(estate)
    other_spelling = shared_manifest(estate, pool="ATL-CS-001")
    with LabStore(estate.state).locked():  # the first runner stops inside its locks, at its first lab call
        first = runner(estate, "machine-a", pg, *apply_args(estate, manifest))
        try:
            wait_for(lambda: len(advisory_holders(pg, manifest, estate)) == 2, "the first runner's locks", first)
            refused = runner(estate, "machine-b", pg, *apply_args(estate, other_spelling, "--lock-timeout", "0.5"))
            out, err = refused.communicate(timeout=DEADLINE)
            assert refused.returncode == 1, (out, err)
            assert "is locked by another run (pid" in err and f"pid {first.pid} on " in err and "backend" in err
            assert PASSWORD not in out + err and "***" in err
            second = runner(estate, "machine-b", pg, *apply_args(estate, other_spelling, "--lock-timeout", "120"))
            assert second.stderr is not None
            line = second.stderr.readline()
            assert line.startswith("waiting for the lock of ") and f"pid {first.pid}" in line, line
        except BaseException:
            first.kill()
            raise
    results = [p.communicate(timeout=DEADLINE) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], results
    assert "Apply complete: 5 applied" in results[0][0] and "No changes." in results[1][0]
    assert all(PASSWORD not in out + err for out, err in results)
    with open_store(pg) as store:  # one history for both machines
        applies = store.list(command="apply")
        assert sorted(r.result or "" for r in applies) == ["applied", "no-changes", "refused"]
        assert any("is locked by another run" in e for r in applies for e in r.errors)


def test_killing_the_holders_connection_lets_the_other_runner_proceed(estate: Estate, pg: str) -> None:
    manifest = shared_manifest(estate)
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from reconciler.locks import lock_keys\nfrom reconciler.manifest import load_manifest\n"
        "from reconciler.providers.base import Registry\nfrom reconciler.store.postgres import TargetLocks\n"
        "import time\n"
        f"d = load_manifest(Path({str(manifest)!r}), Registry.from_entry_points(), {{'lab': {estate.url!r}}})\n"
        "key = next(k for k in lock_keys(d.targets.values()) if 'litware-pool' in k.targets)\n"
        f"locks = TargetLocks({pg!r})\n"
        "with locks.hold(key.advisory_key, key.identity, key.label, deadline=time.monotonic() + 60,\n"
        "                details={'pid': 1, 'host': 'crashed-runner', 'since': 'then', 'command': 'reconcile run'}):\n"
        "    print(locks.backend_pid, flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout is not None
        backend = int(holder.stdout.readline())
        waiter = runner(estate, "machine-b", pg, *apply_args(estate, manifest, "--lock-timeout", "120"))
        assert waiter.stderr is not None
        line = waiter.stderr.readline()
        assert "waiting for the lock of target 'litware-pool'" in line and "crashed-runner" in line, line
        assert f"backend {backend}" in line
        with _admin() as db:  # the holder's connection goes (as when its machine dies): so does its lock
            assert db.execute("SELECT pg_terminate_backend(%s)", (backend,)).fetchone()[0] is True
        out, err = waiter.communicate(timeout=DEADLINE)
        assert waiter.returncode == 0, (out, err)
        assert "Apply complete: 5 applied" in out
    finally:
        holder.kill()
        holder.communicate(timeout=DEADLINE)
    assert estate.app("atl-cs-001", "app") is None


def test_locks_in_process_exclude_and_name_the_holder(pg: str) -> None:
    from reconciler.store.postgres import TargetLocks

    with TargetLocks(pg) as mine, TargetLocks(pg) as theirs:
        details = {"pid": 4242, "host": "runner-a", "since": "now", "command": "reconcile apply m.yaml"}
        with mine.hold(7, "lab|x|h", "target 'h'", deadline=time.monotonic() + 5, details=details):
            with pytest.raises(LockError) as caught, \
                    theirs.hold(7, "lab|x|h", "target 'h'", deadline=time.monotonic() + 0.3, details={}):
                pass
            assert "pid 4242 on runner-a since now: reconcile apply m.yaml" in str(caught.value)
            assert f"backend {mine.backend_pid}" in str(caught.value)
            with mine.hold(8, "lab|x|other", "target 'other'", deadline=time.monotonic() + 1, details=details):
                pass  # another key is free
        with theirs.hold(7, "lab|x|h", "target 'h'", deadline=time.monotonic() + 5, details={}):
            pass  # let go at the end of the block, not only with the connection


def test_operator_records_round_trip(pg: str) -> None:
    with open_store(pg) as store:
        check_operator_records(store)


def test_a_manifest_is_read_by_its_identity_and_its_legacy_path(pg: str) -> None:
    with open_store(pg) as store:
        check_identity_and_legacy_keys(store)


def test_clones_of_one_repository_on_two_machines_share_suspensions_and_runs(estate: Estate, pg: str) -> None:
    # The setup the PostgreSQL store exists for: runners on two machines, each from its own checkout.
    from tests.test_manifest_identity_e2e import clones

    _, a, b = clones(estate.root)
    assert estate.run("suspend", a, "litware-pool", "--store", pg).code == 0
    assert estate.reconcile("run", b, "--once", "--store", pg).code == 0
    assert estate.app("atl-cs-001", "app") is not None  # B honoured the suspension made through A
    run = estate.reconcile("status", a, "--json", "--store", pg)
    assert run.code == 0, run.err
    with open_store(pg) as store:
        [run_b] = store.list()
    pool = next(s for s in json.loads(run.out) if s["target"] == "litware-pool")
    exchange = next(s for s in json.loads(run.out) if s["target"] == "litware-exchange")
    assert pool["condition"] == "Suspended" and exchange["lastRun"] == run_b.id
