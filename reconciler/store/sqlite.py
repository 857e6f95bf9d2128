"""The default run store: one SQLite file, shared safely by every process on the machine.

Cron cycles and a person at a terminal may record runs at the same moment, so the file is in WAL
mode (readers never block the writer) with a 10 s busy timeout, and every write is one short
`BEGIN IMMEDIATE` transaction (it takes the write lock up front instead of failing on a lock upgrade).

Changes and errors are JSON columns rather than child tables: they are written once, in the same
UPDATE as the run's result (so a run is never half-finished), and always read with their run; no
query needs to look inside them. A ChangeRecord that gains a field needs no migration (readers ignore
keys they do not know), and SQLite's json_each can still query them should history per address be
wanted; a later migration can add a child table then.

The schema is versioned: `schema_version` lists the migrations applied and MIGRATIONS is the ordered
list of all of them, so a later version adds a column by appending a Migration. A file written by a
newer version (a migration this code does not know) is refused rather than written to.
"""

from __future__ import annotations

import builtins
import json
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from reconciler.errors import StoreError
from reconciler.store.base import (
    ChangeRecord,
    NextRun,
    NextRunReason,
    RunRecord,
    RunRequest,
    Suspension,
    check_command,
    check_result,
    target_pattern,
)
from reconciler.store.gitinfo import GitInfo

BUSY_TIMEOUT = 10.0
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Migration:
    """One schema step. Versions start at 1 and follow each other; statements run in one transaction."""

    version: int
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, (
        # AUTOINCREMENT: ids are never reused, so a run id quoted in a ticket keeps meaning that run
        # even if old history is pruned one day.
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            command TEXT NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL,
            manifest_path TEXT NOT NULL,
            manifest_sha256 TEXT,
            in_git INTEGER NOT NULL DEFAULT 0,
            git_commit TEXT,
            git_branch TEXT,
            git_dirty INTEGER,
            targets TEXT NOT NULL DEFAULT '[]',
            result TEXT,
            changes TEXT NOT NULL DEFAULT '[]',
            errors TEXT NOT NULL DEFAULT '[]'
        )""",
        "CREATE INDEX runs_by_start ON runs (started_at, id)",
        "CREATE INDEX runs_by_manifest ON runs (manifest_path, started_at, id)",
        "CREATE INDEX runs_by_command ON runs (command, started_at, id)",
    )),
    Migration(2, (
        # What an operator asks of the loop (reconcile suspend / resume / trigger) and when the loop runs next.
        """CREATE TABLE suspensions (
            manifest_path TEXT NOT NULL,
            address TEXT NOT NULL,
            reason TEXT NOT NULL,
            since REAL NOT NULL,
            by_whom TEXT NOT NULL,
            PRIMARY KEY (manifest_path, address)
        )""",
        """CREATE TABLE run_requests (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            manifest_path TEXT NOT NULL,
            requested_at REAL NOT NULL,
            by_whom TEXT NOT NULL
        )""",
        "CREATE INDEX run_requests_by_manifest ON run_requests (manifest_path, id)",
        """CREATE TABLE next_runs (
            manifest_path TEXT PRIMARY KEY,
            next_run_at REAL NOT NULL,
            reason TEXT NOT NULL,
            recorded_at REAL NOT NULL,
            by_whom TEXT NOT NULL
        )""",
    )),
)

_COLUMNS = ("id, command, started_at, ended_at, manifest_path, manifest_sha256, in_git, git_commit, git_branch, "
            "git_dirty, targets, result, changes, errors")


class SQLiteRunStore:
    """A RunStore in one SQLite file; one connection per object, used from one thread."""

    def __init__(self, path: Path, *, migrations: Sequence[Migration] = MIGRATIONS,
                 busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        _check_sequence(migrations)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open run store {self.path}: {exc}") from exc
        try:
            self._use_wal(busy_timeout)
            self._migrate(migrations)
        except BaseException:
            self._db.close()
            raise

    # -- context manager -------------------------------------------------------------------------

    def __enter__(self) -> SQLiteRunStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # -- writes ----------------------------------------------------------------------------------

    def start(self, record: RunRecord) -> int:
        check_command(record.command)
        if record.result is not None:
            check_result(record.result)
        git = record.git
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO runs (command, started_at, ended_at, manifest_path, manifest_sha256, in_git, "
                "git_commit, git_branch, git_dirty, targets, result, changes, errors) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.command, record.started_at, record.ended_at, _text(record.manifest_path),
                 _text(record.manifest_sha256), git is not None, _text(git.commit if git else None),
                 _text(git.branch if git else None), git.dirty if git else None, _dump_list(record.targets),
                 record.result,
                 _dump_changes(record.changes), _dump_list(record.errors)))
            run_id = cursor.lastrowid
        assert run_id is not None
        return run_id

    def finish(self, run_id: int, *, result: str, changes: Sequence[ChangeRecord] = (),
               errors: Sequence[str] = (), ended_at: float | None = None,
               manifest_sha256: str | None = None, targets: Sequence[str] | None = None) -> None:
        """Record the end of a run. Refuses an unknown run and one already finished (history is
        append-only: a second finish is a bug in the caller, not a correction)."""
        check_result(result)
        ended = time.time() if ended_at is None else ended_at
        with self._write() as db:
            row = db.execute("SELECT result FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"no run {run_id} in {self.path}")
            if row[0] is not None:
                raise StoreError(f"run {run_id} is already finished ({row[0]})")
            db.execute(
                "UPDATE runs SET result = ?, ended_at = ?, changes = ?, errors = ?, "
                "manifest_sha256 = COALESCE(?, manifest_sha256), targets = COALESCE(?, targets) WHERE id = ?",
                (result, ended, _dump_changes(changes), _dump_list(errors), _text(manifest_sha256),
                 None if targets is None else _dump_list(targets), run_id))

    # -- reads -----------------------------------------------------------------------------------

    def list(self, *, limit: int = 20, manifest_path: str | None = None, command: str | None = None,
             result: str | None = None, since: float | None = None, target: str | None = None) -> list[RunRecord]:
        """Newest first. `manifest_path` matches exactly: callers record and filter by resolved paths."""
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        where: list[str] = []
        params: list[Any] = []
        if manifest_path is not None:
            where.append("manifest_path = ?")
            params.append(_text(manifest_path))
        if command is not None:
            where.append("command = ?")
            params.append(command)
        if result is not None:
            where.append("result = ?")
            params.append(result)
        if since is not None:
            where.append("started_at >= ?")
            params.append(since)
        if target is not None:
            where.append("targets LIKE ? ESCAPE '\\'")
            params.append(_text(target_pattern(target)))
        sql = f"SELECT {_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        params.append(limit)
        return [_record(row) for row in self._read(sql, params)]

    def get(self, run_id: int) -> RunRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM runs WHERE id = ?", [run_id])
        return _record(rows[0]) if rows else None

    # -- what operators ask of the loop ------------------------------------------------------------

    def suspend(self, suspension: Suspension) -> None:
        with self._write() as db:
            db.execute("INSERT INTO suspensions (manifest_path, address, reason, since, by_whom) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (manifest_path, address) DO UPDATE SET "
                       "reason = excluded.reason, since = excluded.since, by_whom = excluded.by_whom",
                       (_text(suspension.manifest_path), _text(suspension.address), _text(suspension.reason),
                        suspension.since, _text(suspension.by)))

    def resume(self, manifest_path: str, address: str) -> bool:
        with self._write() as db:
            cursor = db.execute("DELETE FROM suspensions WHERE manifest_path = ? AND address = ?",
                                (_text(manifest_path), _text(address)))
            return cursor.rowcount > 0

    def suspensions(self, manifest_path: str) -> builtins.list[Suspension]:
        rows = self._read("SELECT manifest_path, address, reason, since, by_whom FROM suspensions "
                          "WHERE manifest_path = ? ORDER BY since, address", [_text(manifest_path)])
        return [Suspension(*row) for row in rows]

    def request_run(self, request: RunRequest) -> int:
        with self._write() as db:
            cursor = db.execute("INSERT INTO run_requests (manifest_path, requested_at, by_whom) VALUES (?, ?, ?)",
                                (_text(request.manifest_path), request.requested_at, _text(request.by)))
            request_id = cursor.lastrowid
        assert request_id is not None
        return request_id

    def last_request(self, manifest_path: str) -> RunRequest | None:
        rows = self._read("SELECT id, manifest_path, requested_at, by_whom FROM run_requests "
                          "WHERE manifest_path = ? ORDER BY id DESC LIMIT 1", [_text(manifest_path)])
        return RunRequest(*rows[0]) if rows else None

    def set_next_run(self, next_run: NextRun) -> None:
        with self._write() as db:
            db.execute("INSERT INTO next_runs (manifest_path, next_run_at, reason, recorded_at, by_whom) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (manifest_path) DO UPDATE SET "
                       "next_run_at = excluded.next_run_at, reason = excluded.reason, "
                       "recorded_at = excluded.recorded_at, by_whom = excluded.by_whom",
                       (_text(next_run.manifest_path), next_run.at, next_run.reason.value, next_run.recorded_at,
                        _text(next_run.by)))

    def clear_next_run(self, manifest_path: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM next_runs WHERE manifest_path = ?", (_text(manifest_path),))

    def next_run(self, manifest_path: str) -> NextRun | None:
        rows = self._read("SELECT manifest_path, next_run_at, reason, recorded_at, by_whom FROM next_runs "
                          "WHERE manifest_path = ?", [_text(manifest_path)])
        if not rows:
            return None
        path, at, reason, recorded_at, by = rows[0]
        return NextRun(path, at, NextRunReason(reason), recorded_at, by)

    def schema_version(self) -> int:
        """The highest migration applied to the file."""
        return int(self._read("SELECT COALESCE(MAX(version), 0) FROM schema_version", [])[0][0])

    # -- internals -------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken (or waited for) before anything is read."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"run store {self.path}: {exc}") from exc
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise StoreError(f"run store {self.path}: {exc}") from exc

    def _read(self, sql: str, params: Sequence[Any]) -> builtins.list[tuple[Any, ...]]:
        # builtins.list: inside the class body, `list` is the method above.
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"run store {self.path}: {exc}") from exc

    def _use_wal(self, busy_timeout: float) -> None:
        """Switch the file to WAL (persistent: a no-op once it is). SQLite does not call the busy
        handler for this switch, so when two processes create the file at once it is retried here."""
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise StoreError(f"cannot open run store {self.path}: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise StoreError(f"cannot open run store {self.path}: {exc}") from exc
                time.sleep(0.02)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open run store {self.path}: {exc}") from exc

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        try:
            with self._write() as db:
                db.execute("CREATE TABLE IF NOT EXISTS schema_version "
                           "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
                current = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
                known = migrations[-1].version if migrations else 0
                if current > known:
                    raise StoreError(f"run store {self.path} has schema version {current}, newer than this "
                                     f"reconciler knows ({known}): upgrade reconciler")
                for migration in migrations:
                    if migration.version > current:
                        for statement in migration.statements:
                            db.execute(statement)
                        db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                                   (migration.version, time.time()))
        except sqlite3.Error as exc:  # e.g. "file is not a database"
            raise StoreError(f"cannot open run store {self.path}: {exc}") from exc


def _check_sequence(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, 3, ... in order, got {versions}")


def _text(value: str | None) -> str | None:
    """Text SQLite can store: UTF-8 has no lone surrogates (from an undecodable path, say), so each is U+FFFD."""
    return None if value is None else _SURROGATE.sub("\ufffd", value)


def _dump_list(values: Sequence[str]) -> str:
    return _SURROGATE.sub("\ufffd", json.dumps(list(values), ensure_ascii=False))


def _dump_changes(changes: Sequence[ChangeRecord]) -> str:
    return _SURROGATE.sub("\ufffd", json.dumps(
        [{"address": c.address, "actions": list(c.actions), "reason": c.reason, "mode": c.mode,
          "status": c.status} for c in changes], ensure_ascii=False))


def _load_change(data: dict[str, Any]) -> ChangeRecord:
    return ChangeRecord(address=str(data.get("address", "")), actions=tuple(data.get("actions", ())),
                        reason=str(data.get("reason", "")), mode=str(data.get("mode", "")),
                        status=str(data.get("status", "")))


def _record(row: tuple[Any, ...]) -> RunRecord:
    (run_id, command, started_at, ended_at, manifest_path, manifest_sha256, in_git, git_commit, git_branch,
     git_dirty, targets, result, changes, errors) = row
    git = GitInfo(commit=git_commit, branch=git_branch, dirty=None if git_dirty is None else bool(git_dirty)) \
        if in_git else None
    return RunRecord(id=run_id, command=command, started_at=started_at, manifest_path=manifest_path,
                     manifest_sha256=manifest_sha256, git=git, targets=tuple(json.loads(targets)),
                     ended_at=ended_at, result=result,
                     changes=tuple(_load_change(c) for c in json.loads(changes)),
                     errors=tuple(json.loads(errors)))
