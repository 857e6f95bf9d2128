"""The run store on PostgreSQL, for several runners on several machines sharing one history and one set of locks.

`--store postgresql://user:password@host/database` selects it (psycopg 3: `pip install
'reconciler[postgresql]'`). It keeps the same interface and the same columns as the SQLite store;
changes, errors and targets are JSON text, as there, so what comes back is exactly what went in (a NUL
or a lone surrogate included, which PostgreSQL's text and jsonb types refuse). Tables are prefixed
`reconcile_` and created in the connection's current schema (add `?options=-csearch_path%3Dname` to
the URL to use another one); the schema is versioned like the SQLite file's, and two runners
migrating at once take turns on a transaction-level advisory lock.

Target locks are PostgreSQL session-level advisory locks (`pg_try_advisory_lock`), as Terraform's pg
backend holds its state lock: the lock belongs to a connection, so a runner that crashes, loses its
network or has its connection terminated (`pg_terminate_backend`) lets go of every lock it held, with
nothing stale left behind. Each runner takes them on a connection of its own (TargetLocks), keyed
by a stable 64-bit number derived from the normalized identity of the system (reconciler.locks),
and writes who it is into `reconcile_lock_holders` so a waiting runner can name it; a row whose
connection no longer holds the lock is never shown.

Passwords: the URL may carry one. It is never printed: every message names the store by its masked
location, and driver errors have the password scrubbed out before they are shown.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import unquote, urlsplit

from reconciler.errors import LockError, StoreError
from reconciler.store.base import (
    MASK,
    ChangeRecord,
    Keys,
    NextRun,
    RunRecord,
    RunRequest,
    RunResult,
    Suspension,
    mask_secrets,
)
from reconciler.store.sql import (
    Dialect,
    check_finishable,
    check_schema,
    next_run_from_row,
    run_from_row,
    run_request_from_row,
    suspensions_from_rows,
)

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT = 10
APPLICATION_NAME = "reconcile"
MIGRATION_LOCK = 0x7265636F6E63696C  # "reconcil": serializes schema migrations between runners
INSTALL_HINT = "the PostgreSQL store needs psycopg 3: pip install 's2s-trust-reconciler[postgresql]'"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE reconcile_runs (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            command TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
            ended_at DOUBLE PRECISION,
            manifest_path TEXT NOT NULL,
            manifest_sha256 TEXT,
            in_git BOOLEAN NOT NULL DEFAULT FALSE,
            git_commit TEXT,
            git_branch TEXT,
            git_dirty BOOLEAN,
            targets TEXT NOT NULL DEFAULT '[]',
            result TEXT,
            changes TEXT NOT NULL DEFAULT '[]',
            errors TEXT NOT NULL DEFAULT '[]'
        )""",
        "CREATE INDEX reconcile_runs_by_start ON reconcile_runs (started_at, id)",
        "CREATE INDEX reconcile_runs_by_manifest ON reconcile_runs (manifest_path, started_at, id)",
        "CREATE INDEX reconcile_runs_by_command ON reconcile_runs (command, started_at, id)",
        """CREATE TABLE reconcile_lock_holders (
            lock_key BIGINT PRIMARY KEY,
            identity TEXT NOT NULL,
            backend_pid INTEGER NOT NULL,
            details TEXT NOT NULL
        )""",
    ),
    (
        # What an operator asks of the loop (reconcile suspend / resume / trigger) and when the loop runs next.
        """CREATE TABLE reconcile_suspensions (
            manifest_path TEXT NOT NULL,
            address TEXT NOT NULL,
            reason TEXT NOT NULL,
            since DOUBLE PRECISION NOT NULL,
            by_whom TEXT NOT NULL,
            PRIMARY KEY (manifest_path, address)
        )""",
        """CREATE TABLE reconcile_run_requests (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            manifest_path TEXT NOT NULL,
            requested_at DOUBLE PRECISION NOT NULL,
            by_whom TEXT NOT NULL
        )""",
        "CREATE INDEX reconcile_run_requests_by_manifest ON reconcile_run_requests (manifest_path, id)",
        """CREATE TABLE reconcile_next_runs (
            manifest_path TEXT PRIMARY KEY,
            next_run_at DOUBLE PRECISION NOT NULL,
            reason TEXT NOT NULL,
            recorded_at DOUBLE PRECISION NOT NULL,
            by_whom TEXT NOT NULL
        )""",
    ),
)

def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError(INSTALL_HINT) from None
    return psycopg


class _Connection:
    """One connection and what is needed to talk about it without its password."""

    def __init__(self, url: str, *, purpose: str, connect_timeout: int = CONNECT_TIMEOUT) -> None:
        self.location = mask_secrets(url)
        self._secrets = _secrets_of(url)
        self.driver = _driver()
        scheme, sep, rest = url.partition("://")
        url = f"{scheme.lower()}{sep}{rest}"  # libpq knows the schemes in lower case only
        try:
            self.db: psycopg.Connection[Any] = self.driver.connect(
                url, autocommit=True, connect_timeout=connect_timeout,
                application_name=f"{APPLICATION_NAME} {purpose}")
        except self.driver.Error as exc:
            raise StoreError(f"cannot open run store {self.location}: {self.scrub(exc)}") from None
        except ValueError as exc:  # a malformed URL (bad port, ...)
            raise StoreError(f"cannot open run store {self.location}: {self.scrub(exc)}") from None

    def scrub(self, error: BaseException | str) -> str:
        """A driver message with the password (as written, and decoded) removed."""
        text = mask_secrets(str(error).strip())
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text.splitlines()[0] if text else type(error).__name__ if isinstance(error, BaseException) else ""

    def error(self, exc: BaseException) -> StoreError:
        return StoreError(f"run store {self.location}: {self.scrub(exc)}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.db.close()


def _secrets_of(url: str) -> list[str]:
    found: list[str] = []
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    for part in urlsplit(url).query.split("&") if "?" in url else ():
        name, _, value = part.partition("=")
        if name.lower() == "password" and value:
            found += [value, unquote(value)]
    return sorted({s for s in found if s}, key=len, reverse=True)


class _Client:
    """A connection of its own to a migrated database, closed with the object (or at once if it cannot migrate)."""

    purpose: ClassVar[str]
    """What the connection is for, in its application_name."""

    def __init__(self, url: str, *, connect_timeout: int = CONNECT_TIMEOUT) -> None:
        self._conn = _Connection(url, purpose=self.purpose, connect_timeout=connect_timeout)
        self.location = self._conn.location
        try:
            migrate(self._conn)
        except BaseException:
            self._conn.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        try:
            self._conn.db.execute(sql, params)
        except self._conn.driver.Error as exc:
            raise self._conn.error(exc) from None

    def _one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        try:
            return self._conn.db.execute(sql, params).fetchone()
        except self._conn.driver.Error as exc:
            raise self._conn.error(exc) from None

    def _all(self, sql: str, params: Sequence[Any]) -> builtins.list[tuple[Any, ...]]:
        # builtins.list: in PostgresRunStore's body, `list` is its method.
        try:
            return self._conn.db.execute(sql, params).fetchall()
        except self._conn.driver.Error as exc:
            raise self._conn.error(exc) from None


class PostgresRunStore(_Client):
    """A RunStore in a PostgreSQL database; one connection per object, used from one thread."""

    purpose = "store"

    def __repr__(self) -> str:
        return f"PostgresRunStore({self.location!r})"

    # -- writes ----------------------------------------------------------------------------------

    def start(self, record: RunRecord) -> int:
        sql, params = _SQL.insert_run(record)
        row = self._one(sql + " RETURNING id", params)
        assert row is not None
        return int(row[0])

    def finish(self, run_id: int, *, result: RunResult, changes: Sequence[ChangeRecord] = (),
               errors: Sequence[str] = (), ended_at: float | None = None,
               manifest_sha256: str | None = None, targets: Sequence[str] | None = None) -> None:
        """Record the end of a run; refuses an unknown run and one already finished."""
        sql, params = _SQL.finish_run(run_id, result=result, changes=changes, errors=errors, ended_at=ended_at,
                                      manifest_sha256=manifest_sha256, targets=targets)
        try:
            with self._conn.db.transaction():
                check_finishable(run_id, self._conn.db.execute(
                    "SELECT result FROM reconcile_runs WHERE id = %s FOR UPDATE", (run_id,)).fetchone(), self.location)
                self._conn.db.execute(sql, params)
        except self._conn.driver.Error as exc:
            raise self._conn.error(exc) from None

    # -- reads -----------------------------------------------------------------------------------

    def list(self, *, limit: int = 20, manifest_path: Keys | None = None, command: str | None = None,
             result: RunResult | None = None, since: float | None = None,
             target: str | None = None) -> builtins.list[RunRecord]:
        """Newest first. `manifest_path` matches exactly: callers record and filter by a manifest's keys."""
        sql, params = _SQL.list_runs(limit=limit, manifest_path=manifest_path, command=command, result=result,
                                     since=since, target=target)
        return [run_from_row(row) for row in self._all(sql, params)]

    def get(self, run_id: int) -> RunRecord | None:
        if not -2**63 <= run_id < 2**63:
            return None
        rows = self._all(*_SQL.get_run(run_id))
        return run_from_row(rows[0]) if rows else None

    # -- what operators ask of the loop ------------------------------------------------------------

    def suspend(self, suspension: Suspension) -> None:
        self._execute(*_SQL.upsert_suspension(suspension))

    def resume(self, manifest_path: Keys, address: str) -> bool:
        sql, params = _SQL.delete_suspension(manifest_path, address)
        return bool(self._all(sql + " RETURNING address", params))

    def suspensions(self, manifest_path: Keys) -> builtins.list[Suspension]:
        return suspensions_from_rows(self._all(*_SQL.select_suspensions(manifest_path)), manifest_path)

    def request_run(self, request: RunRequest) -> int:
        sql, params = _SQL.insert_run_request(request)
        row = self._one(sql + " RETURNING id", params)
        assert row is not None
        return int(row[0])

    def last_request(self, manifest_path: Keys) -> RunRequest | None:
        rows = self._all(*_SQL.select_last_request(manifest_path))
        return run_request_from_row(rows[0]) if rows else None

    def set_next_run(self, next_run: NextRun) -> None:
        self._execute(*_SQL.upsert_next_run(next_run))

    def clear_next_run(self, manifest_path: Keys, by: str | None = None) -> None:
        self._execute(*_SQL.delete_next_run(manifest_path, by))

    def next_run(self, manifest_path: Keys) -> NextRun | None:
        rows = self._all(*_SQL.select_next_run(manifest_path))
        return next_run_from_row(rows[0]) if rows else None

    def schema_version(self) -> int:
        return int(self._all("SELECT COALESCE(MAX(version), 0) FROM reconcile_schema_version", [])[0][0])


def migrate(conn: _Connection) -> None:
    """Bring the schema up to date (once, however many runners start at the same moment)."""
    db = conn.db
    try:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS reconcile_schema_version "
                       "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
            row = db.execute("SELECT COALESCE(MAX(version), 0) FROM reconcile_schema_version").fetchone()
            current = int(row[0]) if row else 0
            check_schema(conn.location, current, len(MIGRATIONS))
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version > current:
                    for statement in statements:
                        db.execute(statement)
                    db.execute("INSERT INTO reconcile_schema_version (version, applied_at) VALUES (%s, %s)",
                               (version, time.time()))
    except conn.driver.Error as exc:
        raise StoreError(f"cannot open run store {conn.location}: {conn.scrub(exc)}") from None


# -- target locks --------------------------------------------------------------------------------


class TargetLocks(_Client):
    """Session-level advisory locks on a connection of their own: closing it (or losing it) releases them all."""

    purpose = "locks"

    @property
    def backend_pid(self) -> int:
        """This connection's server process: what `pg_terminate_backend` takes to cut it (and free its locks)."""
        return int(self._conn.db.info.backend_pid)

    @contextlib.contextmanager
    def hold(self, key: int, identity: str, label: str, *, deadline: float, details: dict[str, Any],
             poll: float = 0.2, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold advisory lock `key` for the block; wait until `deadline` (monotonic), then fail naming the holder."""
        start = time.monotonic()
        told = False
        while not self._try(key):
            now = time.monotonic()
            if now >= deadline:
                raise LockError(f"{label} is locked by another run ({self.holder(key)}) in {self.location}; "
                                f"waited {now - start:.1f}s")
            if not told and on_wait is not None:
                on_wait(f"waiting for the lock of {label} in {self.location}, held by {self.holder(key)}")
                told = True
            time.sleep(poll)
        try:
            self._execute(
                "INSERT INTO reconcile_lock_holders (lock_key, identity, backend_pid, details) "
                "VALUES (%s, %s, pg_backend_pid(), %s) ON CONFLICT (lock_key) DO UPDATE SET "
                "identity = EXCLUDED.identity, backend_pid = EXCLUDED.backend_pid, details = EXCLUDED.details",
                (key, _text(identity), _dump(details)))
            yield
        finally:
            with contextlib.suppress(StoreError):  # a lost connection has already let go
                self._execute("DELETE FROM reconcile_lock_holders WHERE lock_key = %s "
                              "AND backend_pid = pg_backend_pid()", (key,))
                self._execute("SELECT pg_advisory_unlock(%s)", (key,))

    def holder(self, key: int) -> str:
        """Who holds `key` now: the holder's own details if it wrote them, else what PostgreSQL knows of it."""
        rows = self._all(
            "SELECT h.details, a.pid, host(a.client_addr), a.application_name, a.backend_start "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "LEFT JOIN reconcile_lock_holders h ON h.lock_key = %s AND h.backend_pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::int8 = %s AND l.objid::int8 = %s",
            (key, (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF))
        if not rows:
            return "holder unknown: it may have just finished"
        details, backend, client, application, since = rows[0]
        if details:
            info = json.loads(details)
            text = f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
            if info.get("command"):
                text += f": {info['command']}"
            return f"{text}; PostgreSQL backend {backend}"
        where = f" from {client}" if client else ""
        return f"PostgreSQL backend {backend}{where} ({application or 'no application name'}) since {since}"

    def _try(self, key: int) -> bool:
        row = self._all("SELECT pg_try_advisory_lock(%s)", (key,))
        return bool(row and row[0][0])


# -- rows ----------------------------------------------------------------------------------------


def _text(value: str | None) -> str | None:
    """A scalar column's text: PostgreSQL cannot hold NUL or a lone surrogate; those become U+FFFD."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    return value.replace("\x00", "\ufffd")


def _dump(value: Any) -> str:
    """JSON text that PostgreSQL's text type can hold whatever it contains (NULs are escaped by JSON;
    a lone surrogate is escaped as \\udXXX by falling back to ASCII), and that loads back exactly."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True)
    return text


_SQL = Dialect(prefix="reconcile_", mark="%s", like="ILIKE", text=_text, dump=_dump)
"""ILIKE: case-insensitive for ASCII, as SQLite's LIKE is."""
