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
from reconciler.store.base import ChangeRecord, Keys, NextRun, RunRecord, RunRequest, RunResult, Suspension
from reconciler.store.sql import (
    Dialect,
    check_finishable,
    check_schema,
    next_run_from_row,
    run_from_row,
    run_request_from_row,
    suspensions_from_rows,
)

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



def _text(value: str | None) -> str | None:
    """Text SQLite can store: UTF-8 has no lone surrogates (from an undecodable path, say), so each is U+FFFD."""
    return None if value is None else _SURROGATE.sub("\ufffd", value)


def _dump(value: Any) -> str:
    return _SURROGATE.sub("\ufffd", json.dumps(value, ensure_ascii=False))


_SQL = Dialect(prefix="", mark="?", like="LIKE", text=_text, dump=_dump)


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
        sql, params = _SQL.insert_run(record)
        with self._write() as db:
            run_id = db.execute(sql, params).lastrowid
        assert run_id is not None
        return run_id

    def finish(self, run_id: int, *, result: RunResult, changes: Sequence[ChangeRecord] = (),
               errors: Sequence[str] = (), ended_at: float | None = None,
               manifest_sha256: str | None = None, targets: Sequence[str] | None = None) -> None:
        """Record the end of a run. Refuses an unknown run and one already finished."""
        sql, params = _SQL.finish_run(run_id, result=result, changes=changes, errors=errors, ended_at=ended_at,
                                      manifest_sha256=manifest_sha256, targets=targets)
        with self._write() as db:
            check_finishable(run_id, db.execute("SELECT result FROM runs WHERE id = ?", (run_id,)).fetchone(),
                             str(self.path))
            db.execute(sql, params)

    # -- reads -----------------------------------------------------------------------------------

    def list(self, *, limit: int = 20, manifest_path: Keys | None = None, command: str | None = None,
             result: RunResult | None = None, since: float | None = None, target: str | None = None) -> list[RunRecord]:
        """Newest first. `manifest_path` matches exactly: callers record and filter by a manifest's keys."""
        sql, params = _SQL.list_runs(limit=limit, manifest_path=manifest_path, command=command, result=result,
                                     since=since, target=target)
        return [run_from_row(row) for row in self._read(sql, params)]

    def get(self, run_id: int) -> RunRecord | None:
        rows = self._read(*_SQL.get_run(run_id))
        return run_from_row(rows[0]) if rows else None

    # -- what operators ask of the loop ------------------------------------------------------------

    def suspend(self, suspension: Suspension) -> None:
        with self._write() as db:
            db.execute(*_SQL.upsert_suspension(suspension))

    def resume(self, manifest_path: Keys, address: str) -> bool:
        with self._write() as db:
            return db.execute(*_SQL.delete_suspension(manifest_path, address)).rowcount > 0

    def suspensions(self, manifest_path: Keys) -> builtins.list[Suspension]:
        return suspensions_from_rows(self._read(*_SQL.select_suspensions(manifest_path)), manifest_path)

    def request_run(self, request: RunRequest) -> int:
        with self._write() as db:
            request_id = db.execute(*_SQL.insert_run_request(request)).lastrowid
        assert request_id is not None
        return request_id

    def last_request(self, manifest_path: Keys) -> RunRequest | None:
        rows = self._read(*_SQL.select_last_request(manifest_path))
        return run_request_from_row(rows[0]) if rows else None

    def set_next_run(self, next_run: NextRun) -> None:
        with self._write() as db:
            db.execute(*_SQL.upsert_next_run(next_run))

    def clear_next_run(self, manifest_path: Keys, by: str | None = None) -> None:
        with self._write() as db:
            db.execute(*_SQL.delete_next_run(manifest_path, by))

    def next_run(self, manifest_path: Keys) -> NextRun | None:
        rows = self._read(*_SQL.select_next_run(manifest_path))
        return next_run_from_row(rows[0]) if rows else None

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
                check_schema(str(self.path), current, migrations[-1].version if migrations else 0)
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
