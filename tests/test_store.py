"""The run store: what is recorded comes back exactly, several writers at once lose nothing, the schema
migrates without losing history, git details are right, and history renders for people and machines."""

from __future__ import annotations

import ast
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from reconciler.errors import StoreError
from reconciler.store import (
    DEFAULT_STORE,
    MIGRATIONS,
    ChangeRecord,
    GitInfo,
    Migration,
    RunRecord,
    SQLiteRunStore,
    format_run,
    format_runs,
    git_info,
    open_store,
    run_to_json,
    runs_to_json,
)
from reconciler.store.base import NextRun, NextRunReason, RunRequest, RunStore, Suspension

PROJECT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.123456

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="fake git scripts are POSIX shell")


def full_record(**overrides: object) -> RunRecord:
    """A record with every field set, including text a careless store might alter."""
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
                "Secret=*** (masked by the caller) \u00e9\u4e2d \"quoted\" \x00"),
    )
    values.update(overrides)
    return RunRecord(**values)  # type: ignore[arg-type]


def store_at(tmp_path: Path) -> SQLiteRunStore:
    return SQLiteRunStore(tmp_path / "state" / "runs.sqlite3")


# -- round trips -----------------------------------------------------------------------------------------


def test_start_finish_get_round_trip_with_every_field(tmp_path: Path) -> None:
    want = full_record()
    with store_at(tmp_path) as store:
        run_id = store.start(RunRecord(id=999, command=want.command, started_at=want.started_at,
                                       manifest_path=want.manifest_path, git=want.git, targets=("litware-pool",)))
        assert run_id != 999  # record.id is ignored
        store.finish(run_id, result="failed", changes=want.changes, errors=want.errors, ended_at=want.ended_at,
                     manifest_sha256=want.manifest_sha256, targets=want.targets)
        got = store.get(run_id)
        assert got == RunRecord(**{**want.__dict__, "id": run_id})
        assert got is not None and got.duration == pytest.approx(2.5)
        assert store.list() == [got]
    with store_at(tmp_path) as reopened:  # and from a fresh connection
        assert reopened.get(run_id) == got


def test_start_can_record_a_complete_run_at_once(tmp_path: Path) -> None:
    with store_at(tmp_path) as store:
        run_id = store.start(full_record())
        assert store.get(run_id) == full_record(id=run_id)


def test_the_store_alters_nothing_it_is_given(tmp_path: Path) -> None:
    """Masking is the caller's job: what comes back is byte for byte what went in."""
    tricky = ("password=hunter2", "*** ", "", "  padded  ", "tab\there", "\u202e rtl", "{\"json\": [1]}", "'; DROP")
    record = full_record(errors=tricky, targets=tricky[:3], manifest_path="C:\\manifests\\x'y\".yaml",
                         changes=(ChangeRecord(tricky[0], ("create",), tricky[6], tricky[3], tricky[4]),))
    with store_at(tmp_path) as store:
        run_id = store.start(record)
        assert store.get(run_id) == RunRecord(**{**record.__dict__, "id": run_id})


def test_git_none_and_git_with_unknown_fields_stay_distinct(tmp_path: Path) -> None:
    with store_at(tmp_path) as store:
        outside = store.start(full_record(git=None))
        broken = store.start(full_record(git=GitInfo(None, None, None)))
        clean = store.start(full_record(git=GitInfo("abc", None, False)))
        assert store.get(outside) is not None and store.get(outside).git is None  # type: ignore[union-attr]
        assert store.get(broken).git == GitInfo(None, None, None)  # type: ignore[union-attr]
        assert store.get(clean).git == GitInfo("abc", None, False)  # type: ignore[union-attr]


def test_finish_keeps_hash_and_targets_unless_given(tmp_path: Path) -> None:
    with store_at(tmp_path) as store:
        kept = store.start(RunRecord(None, "plan", T0, "m.yaml", manifest_sha256="h1", targets=("a",)))
        store.finish(kept, result="no-changes", ended_at=T0 + 1)
        replaced = store.start(RunRecord(None, "plan", T0, "m.yaml", manifest_sha256="h1", targets=("a",)))
        store.finish(replaced, result="changes", manifest_sha256="h2", targets=["a", "b"])
        k, r = store.get(kept), store.get(replaced)
        assert k is not None and (k.manifest_sha256, k.targets, k.ended_at) == ("h1", ("a",), T0 + 1)
        assert r is not None and (r.manifest_sha256, r.targets) == ("h2", ("a", "b"))
        assert r.ended_at is not None and abs(r.ended_at - time.time()) < 60  # defaults to now


def test_finish_refuses_unknown_and_finished_runs_and_unknown_words(tmp_path: Path) -> None:
    with store_at(tmp_path) as store:
        run_id = store.start(RunRecord(None, "apply", T0, "m.yaml"))
        with pytest.raises(StoreError, match="no run 12345"):
            store.finish(12345, result="applied")
        with pytest.raises(ValueError, match="unknown run result 'aplied'"):
            store.finish(run_id, result="aplied")
        store.finish(run_id, result="applied", ended_at=T0 + 1)
        with pytest.raises(StoreError, match="already finished"):
            store.finish(run_id, result="failed")
        with pytest.raises(ValueError, match="unknown run command 'aply'"):
            store.start(RunRecord(None, "aply", T0, "m.yaml"))
        got = store.get(run_id)
        assert got is not None and got.result == "applied" and got.ended_at == T0 + 1
        assert len(store.list()) == 1


def test_get_unknown_run_is_none(tmp_path: Path) -> None:
    with store_at(tmp_path) as store:
        assert store.get(1) is None


def test_unfinished_runs_stay_unfinished(tmp_path: Path) -> None:
    """A process killed mid-run leaves its start behind, with no result, end or duration."""
    with store_at(tmp_path) as store:
        run_id = store.start(RunRecord(None, "run", T0, "m.yaml", targets=("a",)))
    with store_at(tmp_path) as store:
        got = store.get(run_id)
        assert got is not None
        assert (got.result, got.ended_at, got.duration, got.finished) == (None, None, None, False)
        assert "unfinished" in format_runs([got]) and "unfinished" in format_run(got)


# -- listing ---------------------------------------------------------------------------------------------


def test_list_is_newest_first_and_limited(tmp_path: Path) -> None:
    with store_at(tmp_path) as store:
        ids = [store.start(RunRecord(None, "plan", T0 + n, "m.yaml")) for n in range(5)]
        late_insert_early_start = store.start(RunRecord(None, "plan", T0 - 10, "m.yaml"))
        same_start = store.start(RunRecord(None, "plan", T0 + 4, "m.yaml"))
        assert [r.id for r in store.list()] == [same_start, *reversed(ids), late_insert_early_start]
        assert [r.id for r in store.list(limit=2)] == [same_start, ids[4]]
        assert store.list(limit=0) == []
        with pytest.raises(ValueError):
            store.list(limit=-1)
        assert len(store.list(limit=1000)) == 7


def test_list_filters_by_manifest_and_command(tmp_path: Path) -> None:
    with store_at(tmp_path) as store:
        a_plan = store.start(RunRecord(None, "plan", T0, "/a.yaml"))
        a_apply = store.start(RunRecord(None, "apply", T0 + 1, "/a.yaml"))
        b_plan = store.start(RunRecord(None, "plan", T0 + 2, "/b.yaml"))
        b_drift = store.start(RunRecord(None, "drift", T0 + 3, "/b.yaml"))
        assert [r.id for r in store.list(manifest_path="/a.yaml")] == [a_apply, a_plan]
        assert [r.id for r in store.list(command="plan")] == [b_plan, a_plan]
        assert [r.id for r in store.list(manifest_path="/b.yaml", command="drift")] == [b_drift]
        assert store.list(manifest_path="/b.yaml", command="apply") == []
        assert store.list(manifest_path="/a.yaml'; --") == []


# -- several writers -------------------------------------------------------------------------------------


def test_two_store_objects_on_one_file_write_alternately(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    with SQLiteRunStore(path) as first, SQLiteRunStore(path) as second:
        started: list[int] = []
        for n in range(10):
            writer, other = (first, second) if n % 2 == 0 else (second, first)
            run_id = writer.start(RunRecord(None, "run", T0 + n, f"m{n % 2}.yaml"))
            started.append(run_id)
            other.finish(run_id, result="no-changes", ended_at=T0 + n + 1)  # finished by the other object
        assert len(set(started)) == 10
        for store in (first, second):
            runs = store.list(limit=100)
            assert sorted(r.id for r in runs if r.id is not None) == sorted(started)
            assert all(r.result == "no-changes" for r in runs)
            assert len(store.list(manifest_path="m1.yaml")) == 5


CHILD_WRITER = """
import sys, time
from pathlib import Path
from reconciler.store import RunRecord, SQLiteRunStore
with SQLiteRunStore(Path(sys.argv[1])) as store:
    print("ready", flush=True)
    sys.stdin.readline()
    for n in range(50):
        run_id = store.start(RunRecord(None, "run", time.time(), "child.yaml"))
        store.finish(run_id, result="no-changes", errors=[f"child {n}"])
"""


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH")) if p)
    return env


def test_a_second_process_writing_at_the_same_time_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    child = subprocess.Popen([sys.executable, "-c", CHILD_WRITER, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_python_env())
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        with SQLiteRunStore(path) as store:
            child.stdin.write("go\n")
            child.stdin.flush()
            for n in range(50):
                run_id = store.start(RunRecord(None, "run", time.time(), "parent.yaml"))
                store.finish(run_id, result="changes", errors=[f"parent {n}"])
            _, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            runs = store.list(limit=1000)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert len(runs) == 100
    assert len({r.id for r in runs}) == 100
    for who, result in (("parent", "changes"), ("child", "no-changes")):
        mine = [r for r in runs if r.manifest_path == f"{who}.yaml"]
        assert sorted(r.errors[0] for r in mine) == sorted(f"{who} {n}" for n in range(50))
        assert all(r.result == result for r in mine)


CREATOR = """
import sys, time
from pathlib import Path
from reconciler.store import RunRecord, SQLiteRunStore
go = float(sys.argv[2])
while time.time() < go:
    pass
with SQLiteRunStore(Path(sys.argv[1])) as store:
    store.finish(store.start(RunRecord(None, "run", time.time(), sys.argv[3])), result="no-changes")
"""


def test_processes_creating_the_same_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL does not wait on the busy handler in SQLite; the store retries it."""
    path = tmp_path / "new" / "runs.sqlite3"
    go = time.time() + 1.0
    children = [subprocess.Popen([sys.executable, "-c", CREATOR, str(path), str(go), f"m{n}.yaml"],
                                 stderr=subprocess.PIPE, text=True, env=_python_env()) for n in range(6)]
    errors = [child.communicate(timeout=120)[1] for child in children]
    assert [c.returncode for c in children] == [0] * 6, errors
    with SQLiteRunStore(path) as store:
        assert sorted(r.manifest_path for r in store.list()) == [f"m{n}.yaml" for n in range(6)]
        assert store.schema_version() == len(MIGRATIONS)


def test_the_file_is_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    with SQLiteRunStore(path) as store:
        assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- schema and migrations -------------------------------------------------------------------------------


def test_opening_an_existing_file_again_keeps_its_runs(tmp_path: Path) -> None:
    with store_at(tmp_path) as store:
        run_id = store.start(full_record())
    for _ in range(2):
        with store_at(tmp_path) as store:
            assert store.get(run_id) == full_record(id=run_id)
            assert store.schema_version() == len(MIGRATIONS)
    with sqlite3.connect(tmp_path / "state" / "runs.sqlite3") as raw:
        versions = [v for (v,) in raw.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [m.version for m in MIGRATIONS]


def test_a_later_migration_adds_a_column_and_keeps_history(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    with SQLiteRunStore(path) as store:
        run_id = store.start(full_record())
    later = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, ("ALTER TABLE runs ADD COLUMN note TEXT",)))
    with SQLiteRunStore(path, migrations=later) as store:
        assert store.schema_version() == len(later)
        assert store.get(run_id) == full_record(id=run_id)
    with sqlite3.connect(path) as raw:
        assert "note" in [row[1] for row in raw.execute("PRAGMA table_info(runs)")]
    with pytest.raises(StoreError, match="newer than this reconciler knows"):
        SQLiteRunStore(path)  # an older reconciler must not write to a newer file


def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    with SQLiteRunStore(path) as store:
        run_id = store.start(full_record())
    broken = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1,
                                     ("ALTER TABLE runs ADD COLUMN half_done TEXT", "THIS IS NOT SQL")))
    with pytest.raises(StoreError, match="syntax error"):
        SQLiteRunStore(path, migrations=broken)
    with SQLiteRunStore(path) as store:
        assert store.schema_version() == len(MIGRATIONS)
        assert store.get(run_id) == full_record(id=run_id)
    with sqlite3.connect(path) as raw:
        assert "half_done" not in [row[1] for row in raw.execute("PRAGMA table_info(runs)")]


def test_migrations_must_be_numbered_in_order(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1, 2, 3"):
        SQLiteRunStore(tmp_path / "x.sqlite3", migrations=(*MIGRATIONS, Migration(len(MIGRATIONS) + 2, ())))


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    path.write_bytes(b"this is a text file, not SQLite" * 100)
    with pytest.raises(StoreError, match="cannot open run store"):
        SQLiteRunStore(path)


# -- open_store ------------------------------------------------------------------------------------------


def test_open_store_default_is_under_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store(None) as store:
        assert isinstance(store, SQLiteRunStore)
        store.start(RunRecord(None, "plan", T0, "m.yaml"))
    assert (tmp_path / DEFAULT_STORE).is_file()
    assert DEFAULT_STORE == ".reconciler/runs.sqlite3"


def test_open_store_paths_and_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cases = {
        str(tmp_path / "plain" / "a.db"): tmp_path / "plain" / "a.db",
        "relative/b.db": tmp_path / "relative" / "b.db",
        f"sqlite://{tmp_path}/url/c.db": tmp_path / "url" / "c.db",
        "sqlite:rel/d.db": tmp_path / "rel" / "d.db",
        "SQLite:rel/e.db": tmp_path / "rel" / "e.db",
    }
    for location, expected in cases.items():
        with open_store(location) as store:
            assert isinstance(store, SQLiteRunStore)
            store.start(RunRecord(None, "plan", T0, location))
        assert expected.is_file(), location
    with open_store(tmp_path / "as-path.db") as store:
        assert isinstance(store, SQLiteRunStore) and store.path == tmp_path / "as-path.db"
    assert (tmp_path / "as-path.db").is_file()


@pytest.mark.parametrize("location", ["mysql://u:hunter2@h/d", "file:///tmp/x.db"])
def test_open_store_rejects_other_schemes_naming_the_supported_ones(location: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError) as caught:
        open_store(location)
    message = str(caught.value)
    assert location.split(":")[0] in message and "sqlite:///" in message and "sqlite:relative" in message
    assert "hunter2" not in message  # a database URL may carry a password
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("location", ["sqlite:", "sqlite://", "sqlite://host/x.db", "sqlite:///", ""])
def test_open_store_rejects_malformed_sqlite_urls(location: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="expected"):
        open_store(location)


# -- git -------------------------------------------------------------------------------------------------


@pytest.fixture
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Git with no user or system configuration, and no repository above tmp_path."""
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for name, value in (("GIT_AUTHOR_NAME", "t"), ("GIT_AUTHOR_EMAIL", "t@example.com"),
                        ("GIT_COMMITTER_NAME", "t"), ("GIT_COMMITTER_EMAIL", "t@example.com")):
        monkeypatch.setenv(name, value)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, git_env: None) -> Path:
    path = tmp_path / "repo"
    (path / "manifests").mkdir(parents=True)
    git(path, "init", "-q")
    git(path, "symbolic-ref", "HEAD", "refs/heads/trunk")
    return path


@needs_git
def test_git_info_in_a_repository(repo: Path) -> None:
    manifest = repo / "manifests" / "on-premises.yaml"
    manifest.write_text("apiVersion: reconciler/v1\n")
    (repo / "other.txt").write_text("x")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    head = git(repo, "rev-parse", "HEAD")
    assert git_info(manifest) == GitInfo(commit=head, branch="trunk", dirty=False)

    (repo / "other.txt").write_text("another file changed: the manifest is still clean")
    assert git_info(manifest) == GitInfo(commit=head, branch="trunk", dirty=False)

    manifest.write_text("apiVersion: reconciler/v1\n# edited\n")
    assert git_info(manifest) == GitInfo(commit=head, branch="trunk", dirty=True)

    git(repo, "checkout", "-q", "--detach")
    assert git_info(manifest) == GitInfo(commit=head, branch=None, dirty=True)


@needs_git
def test_git_info_untracked_manifest_is_dirty(repo: Path) -> None:
    (repo / "README").write_text("x")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "first")
    manifest = repo / "manifests" / "new.yaml"
    manifest.write_text("apiVersion: reconciler/v1\n")
    info = git_info(manifest)
    assert info is not None and info.dirty is True and info.branch == "trunk"


@needs_git
def test_git_info_in_a_repository_without_commits(repo: Path) -> None:
    manifest = repo / "manifests" / "m.yaml"
    manifest.write_text("x: 1\n")
    info = git_info(manifest)
    assert info is not None and info.commit is None and info.branch is None


@needs_git
def test_git_info_outside_a_repository(tmp_path: Path, git_env: None) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "m.yaml").write_text("x: 1\n")
    assert git_info(outside / "m.yaml") is None
    assert git_info(tmp_path / "missing" / "m.yaml") is None


@needs_git
def test_git_info_manifest_name_is_not_a_pathspec_pattern(repo: Path) -> None:
    """A manifest named like a glob must not make another file's changes count."""
    (repo / "a.yaml").write_text("a")
    (repo / "*.yaml").write_text("star")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "a.yaml").write_text("edited")
    assert git_info(repo / "*.yaml") == GitInfo(commit=git(repo, "rev-parse", "HEAD"), branch="trunk", dirty=False)


def fake_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str | None) -> None:
    """PATH holds only a `git` running `script` (or no git at all)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if script is not None:
        (bin_dir / "git").write_text("#!/bin/sh\n" + script)
        (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


@posix_only
def test_git_info_without_git_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_git(tmp_path, monkeypatch, None)
    assert git_info(tmp_path / "m.yaml") is None


@posix_only
def test_git_info_with_a_broken_git_gives_none_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_git(tmp_path, monkeypatch,
             'case "$*" in *--is-inside-work-tree*) echo true ;; *) echo "fatal: broken" >&2; exit 128 ;; esac\n')
    assert git_info(tmp_path / "m.yaml") == GitInfo(commit=None, branch=None, dirty=None)


@posix_only
def test_git_info_gives_up_on_a_hanging_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_git(tmp_path, monkeypatch, "exec /bin/sleep 30\n")
    began = time.monotonic()
    assert git_info(tmp_path / "m.yaml", timeout=0.3) is None
    assert time.monotonic() - began < 10


# -- rendering -------------------------------------------------------------------------------------------


def local(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def test_format_runs_is_a_table_with_every_column(tmp_path: Path) -> None:
    with store_at(tmp_path) as store:
        finished = store.start(full_record())
        unfinished = store.start(RunRecord(None, "drift", T0 + 100, "/srv/other.yaml"))
        text = format_runs(store.list())
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "STARTED", "COMMAND", "RESULT", "CHANGES", "DURATION", "GIT", "MANIFEST"]
    assert lines[1].split() == [str(unfinished), local(T0 + 100), "drift", "unfinished", "0", "-", "-",
                                "/srv/other.yaml"]
    assert lines[2].split() == [str(finished), local(T0), "apply", "failed", "2", "2.5s", "0123456", "main*",
                                "/srv/manifests/on-premises.yaml"]
    for header in ("STARTED", "COMMAND", "RESULT", "CHANGES", "DURATION", "GIT", "MANIFEST"):
        column = lines[0].index(header)  # fixed width: every value starts under its header
        assert lines[1][column - 1] == " " and lines[1][column] != " "
        assert lines[2][column - 1] == " " and lines[2][column] != " "
    assert format_runs([]) == "No runs recorded.\n"


def test_format_runs_git_column_forms() -> None:
    def git_cell(git: GitInfo | None) -> str:
        header, row = format_runs([full_record(id=1, git=git)]).splitlines()
        return row[header.index("GIT"):header.index("MANIFEST")].strip()

    assert git_cell(GitInfo("0123456789", "main", False)) == "0123456 main"
    assert git_cell(GitInfo("0123456789", None, True)) == "0123456*"
    assert git_cell(None) == "-"


def test_format_run_shows_every_detail() -> None:
    record = full_record(id=7)
    text = format_run(record)
    assert text.startswith("Run 7: apply failed\n")
    for expected in (f"started:  {local(T0)}", f"ended:    {local(T0 + 2.5)}", "duration: 2.5s",
                     "manifest: /srv/manifests/on-premises.yaml", "sha256:   " + "ab" * 32,
                     "0123456789abcdef0123456789abcdef01234567 on main, manifest modified",
                     "targets:  litware-pool, fabrikam-pool", "Changes (2):",
                     "  -/+ litware-pool.PartnerApplication.microsoft.exchange: failed, restored "
                     "(ApplicationIdentifier cannot be changed by Set-CsPartnerApplication)\n",
                     "  ~ litware-pool.OAuthServer.microsoft.sts: warned (drift) [mode: warn]\n",
                     "Errors (2):", "  New-CsPartnerApplication: the metadata document could not be downloaded\n"
                     "    second line\n"):
        assert expected in text, expected


def test_rendering_escapes_control_characters() -> None:
    record = full_record(id=1, errors=("red \x1b[31malert",), manifest_path="/m\x1b[2J.yaml")
    for text in (format_run(record), format_runs([record])):
        assert "\x1b" not in text and "\\x1b" in text


def test_json_has_every_field_and_round_trips_through_json() -> None:
    record = full_record(id=3)
    data = json.loads(json.dumps(runs_to_json([record, full_record(id=4, result=None, ended_at=None)])))
    first, second = data
    assert first == run_to_json(record)
    assert first["id"] == 3 and first["command"] == "apply" and first["result"] == "failed"
    assert first["started_at"] == T0 and first["ended_at"] == T0 + 2.5 and first["duration"] == pytest.approx(2.5)
    assert first["started"] == "2023-11-14T22:13:20Z"
    assert first["git"] == {"commit": record.git.commit, "branch": "main", "dirty": True}  # type: ignore[union-attr]
    assert first["targets"] == ["litware-pool", "fabrikam-pool"]
    assert first["changes"][0] == {"address": "litware-pool.PartnerApplication.microsoft.exchange",
                                   "actions": ["delete", "create"],
                                   "reason": "ApplicationIdentifier cannot be changed by Set-CsPartnerApplication",
                                   "mode": "enforce", "status": "failed, restored"}
    assert first["errors"] == list(record.errors)
    assert (second["result"], second["ended_at"], second["ended"], second["duration"]) == (None, None, None, None)


# -- layering --------------------------------------------------------------------------------------------


def test_the_store_depends_only_on_errors() -> None:
    """Any command (plan, apply, drift, the scheduler) may record runs, so the store imports none of them."""
    for path in (PROJECT / "reconciler" / "store").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        ours = {name for name in imported if name.startswith("reconciler")}
        assert ours <= {"reconciler.errors"} | {n for n in ours if n.startswith("reconciler.store")}, path


def check_operator_records(store: RunStore) -> None:
    """Suspensions, run requests and the loop's next run, as `reconcile suspend/resume/trigger` and `run` leave
    them: each backend keeps them per manifest and gives them back exactly."""
    mine, other = "/srv/manifests/on-premises.yaml", "/srv/manifests/cross-premises.yaml"
    assert store.suspensions(mine) == [] and store.last_request(mine) is None and store.next_run(mine) is None
    pool = Suspension(mine, "litware-pool", "maintenance window \u00e9", T0, "ops@mgmt01")
    app = Suspension(mine, "litware-exchange.PartnerApplication.microsoft.lync", "", T0 + 1, "ops@mgmt01")
    store.suspend(app)
    store.suspend(pool)
    store.suspend(Suspension(other, "litware-pool", "", T0, "x@y"))
    assert store.suspensions(mine) == [pool, app]  # oldest first
    again = Suspension(mine, "litware-pool", "extended", T0 + 5, "lead@mgmt02")
    store.suspend(again)  # suspending again replaces the reason, time and who
    assert store.suspensions(mine) == [app, again]
    assert store.resume(mine, "litware-pool") is True
    assert store.resume(mine, "litware-pool") is False
    assert store.suspensions(mine) == [app] and len(store.suspensions(other)) == 1

    first = store.request_run(RunRequest(None, mine, T0, "ops@mgmt01"))
    store.request_run(RunRequest(None, other, T0, "ops@mgmt01"))
    second = store.request_run(RunRequest(None, mine, T0 + 2, "lead@mgmt02"))
    assert second > first
    assert store.last_request(mine) == RunRequest(second, mine, T0 + 2, "lead@mgmt02")

    store.set_next_run(NextRun(mine, T0 + 900, NextRunReason.INTERVAL, T0, "pid 1 on a"))
    store.set_next_run(NextRun(mine, T0 + 20, NextRunReason.BACKOFF, T0 + 1, "pid 1 on a"))
    assert store.next_run(mine) == NextRun(mine, T0 + 20, NextRunReason.BACKOFF, T0 + 1, "pid 1 on a")
    assert store.next_run(other) is None
    store.clear_next_run(mine)
    assert store.next_run(mine) is None
    # Runners sharing a store share the row: one that stops leaves the next run another one recorded.
    store.set_next_run(NextRun(mine, T0 + 900, NextRunReason.INTERVAL, T0 + 2, "pid 2 on b"))
    store.clear_next_run(mine, by="pid 1 on a")
    assert store.next_run(mine) == NextRun(mine, T0 + 900, NextRunReason.INTERVAL, T0 + 2, "pid 2 on b")
    store.clear_next_run(mine, by="pid 2 on b")
    assert store.next_run(mine) is None


def check_identity_and_legacy_keys(store: RunStore) -> None:
    """A manifest read by its keys (its identity, then the absolute path older versions recorded it under) finds
    what was recorded under either, one suspension per address (the identity's preferred), and not another
    clone's legacy records; resuming and a stopping loop clear what is under both."""
    identity = "git+https://git.example.com/org/repo#manifests/x.yaml"
    legacy, elsewhere = "/srv/a/repo/manifests/x.yaml", "/opt/b/repo/manifests/x.yaml"
    keys = (identity, legacy)
    old = Suspension(legacy, "litware-pool", "before the upgrade", T0, "ops@a")
    store.suspend(old)
    store.suspend(Suspension(elsewhere, "litware-exchange", "", T0, "ops@b"))
    assert store.suspensions(keys) == [old]
    new = Suspension(identity, "litware-pool", "after the upgrade", T0 + 3, "ops@b")
    store.suspend(new)
    assert store.suspensions(keys) == [new]
    assert store.suspensions((identity, elsewhere)) == [
        Suspension(elsewhere, "litware-exchange", "", T0, "ops@b"), new]
    assert store.resume(keys, "litware-pool") is True
    assert store.suspensions(legacy) == [] and store.suspensions(identity) == []
    with pytest.raises(ValueError):
        store.suspensions(())

    ids = [store.start(RunRecord(None, "run", T0 + i, key)) for i, key in enumerate((legacy, identity, elsewhere))]
    assert [r.id for r in store.list(manifest_path=keys)] == [ids[1], ids[0]]
    assert [r.id for r in store.list(manifest_path=identity)] == [ids[1]]

    first = store.request_run(RunRequest(None, identity, T0, "ops@a"))
    assert store.last_request(keys) == RunRequest(first, identity, T0, "ops@a")
    second = store.request_run(RunRequest(None, legacy, T0 + 1, "an older version"))
    assert store.last_request(keys) == RunRequest(second, legacy, T0 + 1, "an older version")
    assert store.last_request((identity, elsewhere)) == RunRequest(first, identity, T0, "ops@a")

    stale = NextRun(legacy, T0 + 60, NextRunReason.INTERVAL, T0, "pid 1 on a")
    store.set_next_run(stale)
    assert store.next_run(keys) == stale
    fresh = NextRun(identity, T0 + 90, NextRunReason.INTERVAL, T0 + 30, "pid 2 on b")
    store.set_next_run(fresh)
    assert store.next_run(keys) == fresh
    store.clear_next_run(keys)
    assert store.next_run(legacy) is None and store.next_run(identity) is None


def test_operator_records_round_trip(tmp_path: Path) -> None:
    with SQLiteRunStore(tmp_path / "runs.sqlite3") as store:
        check_operator_records(store)


def test_a_manifest_is_read_by_its_identity_and_its_legacy_path(tmp_path: Path) -> None:
    with SQLiteRunStore(tmp_path / "runs.sqlite3") as store:
        check_identity_and_legacy_keys(store)


def test_a_version_1_file_gains_the_operator_tables_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    with SQLiteRunStore(path, migrations=MIGRATIONS[:1]) as old:
        run_id = old.start(RunRecord(None, "plan", T0, "/m.yaml"))
    with SQLiteRunStore(path) as store:
        assert store.schema_version() == len(MIGRATIONS) >= 2
        assert store.get(run_id) is not None
        check_operator_records(store)


def test_a_next_run_with_a_reason_this_version_does_not_know_reads_as_none(tmp_path: Path) -> None:
    # A newer loop may record a reason this version lacks: status shows no next run rather than failing.
    path, mine = tmp_path / "runs.sqlite3", "/srv/manifests/on-premises.yaml"
    with SQLiteRunStore(path) as store:
        store.set_next_run(NextRun(mine, T0 + 900, NextRunReason.INTERVAL, T0, "pid 1 on a"))
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE next_runs SET reason = 'paused-by-a-newer-version'")
    db.close()
    with SQLiteRunStore(path) as store:
        assert store.next_run(mine) is None
