"""What the run store records and the interface every backend keeps.

Every plan, apply, drift check and scheduled cycle becomes one RunRecord: started when the command
begins (so a run killed halfway still leaves a trace, with no result) and finished with its result,
its changes and its errors. The interface is a Protocol so a second backend (PostgreSQL for a team
sharing one history) can be added without touching the commands that record runs.

Secrets: the store keeps exactly what it is given and masks nothing itself. Callers pass the same
masked data they render (change reasons and error messages are already masked by the planner,
executor and renderers), so the store never sees a secret and cannot leak one.
"""

from __future__ import annotations

import builtins
import enum
import getpass
import json
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from reconciler.errors import StoreError
from reconciler.store.gitinfo import GitInfo

DEFAULT_STORE = ".reconciler/runs.sqlite3"

COMMANDS = frozenset({"plan", "apply", "drift", "run"})


class RunResult(enum.StrEnum):
    """How a recorded run ended. The values are the words the store keeps and `history`, `status`, the JSON
    outputs, metrics labels, events and notifications show: schedulers and dashboards switch on them."""

    NO_CHANGES = "no-changes"
    CHANGES = "changes"
    APPLIED = "applied"
    PARTIAL = "partial"
    FAILED = "failed"
    ERROR = "error"
    REFUSED = "refused"
    INTERRUPTED = "interrupted"


RESULTS = frozenset(r.value for r in RunResult)
"""The words of RunResult (for a command line's choices and label checks)."""


@dataclass(frozen=True)
class UnknownResult:
    """A result word this version does not know, read back from a row (a newer version wrote it). Shown as the
    store holds it, never counted as a success or a failure, and never written."""

    word: str

    def __str__(self) -> str:
        return self.word


@dataclass(frozen=True)
class ChangeRecord:
    """One change of a run, as text: what history shows, never the live values themselves.

    actions: ("create",), ("update",), ("delete",) or ("delete", "create") for a replace; ("run",) for a
    handler apply ran after the changes (address target.handler.name, status ran | failed | not needed).
    mode: the change's mode (enforce | warn). status: planned | applied | failed | not run |
    failed, restored | warned | ... (free text: executors may add outcomes without a migration).
    """

    address: str
    actions: tuple[str, ...]
    reason: str
    mode: str
    status: str


@dataclass(frozen=True)
class RunRecord:
    """One recorded command. `result` None means started but never finished (process killed)."""

    id: int | None
    command: str  # plan | apply | drift | run
    started_at: float  # epoch seconds
    manifest_path: str
    manifest_sha256: str | None = None
    git: GitInfo | None = None
    targets: tuple[str, ...] = ()
    ended_at: float | None = None
    result: RunResult | UnknownResult | None = None
    changes: tuple[ChangeRecord, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def duration(self) -> float | None:
        """Seconds from start to end; None while (or because) the run never finished."""
        return None if self.ended_at is None else self.ended_at - self.started_at

    @property
    def finished(self) -> bool:
        return self.result is not None

    @property
    def result_word(self) -> str | None:
        """The result as the store holds it (a word this version does not know too); None while unfinished."""
        return None if self.result is None else str(self.result)


@dataclass(frozen=True)
class Suspension:
    """A target or one resource an operator suspended (`reconcile suspend`): the `run` and `drift` loops skip it
    until `reconcile resume`, as Flux's `suspend: true`. Keyed by manifest (resolved path) and address, where the
    address is a target's name or a resource's `target.Kind.identity`, as the manifest spells them."""

    manifest_path: str
    address: str
    reason: str
    since: float  # epoch seconds
    by: str  # user@host that asked


class NextRunReason(enum.StrEnum):
    """Why the loop's next cycle is when it is."""

    RUNNING = "running"  # a cycle is running now
    INTERVAL = "interval"  # the jittered interval after a good cycle
    BACKOFF = "backoff"  # the capped backoff after a failed one


@dataclass(frozen=True)
class NextRun:
    """When a running `reconcile run` loop will start its next cycle (what `status` shows as NEXT RUN)."""

    manifest_path: str
    at: float  # epoch seconds
    reason: NextRunReason
    recorded_at: float
    by: str  # pid@host of the loop


@dataclass(frozen=True)
class RunRequest:
    """`reconcile trigger`: a request that a running loop reconcile this manifest now, instead of at its next run."""

    id: int | None
    manifest_path: str
    requested_at: float
    by: str  # user@host that asked


def who() -> str:
    """user@host, for the records an operator's command leaves (suspensions, run requests)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError, ImportError):  # no user name in the environment or the password database
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


Keys = str | tuple[str, ...]
"""A manifest as reads match it: one key, or several (its identity and the local path older records are keyed by,
see reconciler.store.gitinfo.ManifestKey), the first preferred where one record is wanted."""


def key_tuple(keys: Keys) -> tuple[str, ...]:
    return (keys,) if isinstance(keys, str) else keys


class RunStore(Protocol):
    """A place runs are recorded. Implementations must be safe with several processes writing."""

    def start(self, record: RunRecord) -> int:
        """Record a run that begins now; returns its new id (record.id is ignored)."""
        ...

    def finish(self, run_id: int, *, result: RunResult, changes: Sequence[ChangeRecord] = (),
               errors: Sequence[str] = (), ended_at: float | None = None,
               manifest_sha256: str | None = None, targets: Sequence[str] | None = None) -> None:
        """Record how a run ended. None for manifest_sha256/targets keeps what start recorded
        (the manifest may only be hashed, and targets known, once it has been loaded)."""
        ...

    def list(self, *, limit: int = 20, manifest_path: Keys | None = None, command: str | None = None,
             result: RunResult | None = None, since: float | None = None,
             target: str | None = None) -> list[RunRecord]:
        """The most recent runs, newest first, optionally for one manifest path, command or result, started at
        or after `since` (epoch seconds), or that included `target` (by name, ASCII case-insensitively). A manifest
        given as several keys (its identity and its local path) matches runs recorded under any of them."""
        ...

    def get(self, run_id: int) -> RunRecord | None: ...

    def suspend(self, suspension: Suspension) -> None:
        """Record a suspension (replacing one of the same manifest and address)."""
        ...

    def resume(self, manifest_path: Keys, address: str) -> bool:
        """Lift a suspension (under every key given); False when there was none."""
        ...

    def suspensions(self, manifest_path: Keys) -> builtins.list[Suspension]:
        """The manifest's suspensions, oldest first: one per address, under whichever key given (the first
        preferred)."""
        ...

    def request_run(self, request: RunRequest) -> int:
        """Record a request to reconcile now; returns its id (ids grow: a loop compares them)."""
        ...

    def last_request(self, manifest_path: Keys) -> RunRequest | None:
        """The manifest's newest run request (under any key given)."""
        ...

    def set_next_run(self, next_run: NextRun) -> None:
        """Record when the manifest's loop runs next (replacing what was recorded)."""
        ...

    def clear_next_run(self, manifest_path: Keys, by: str | None = None) -> None:
        """The loop stopped: no next run is scheduled (under any key given; with `by`, only one that loop recorded)."""
        ...

    def next_run(self, manifest_path: Keys) -> NextRun | None:
        """The loop's next run as most recently recorded under any key given."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> RunStore: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


def target_pattern(target: str) -> str:
    """A LIKE pattern (escape character backslash) matching a `targets` JSON list that holds `target`."""
    quoted = json.dumps(target, ensure_ascii=False)
    return "%" + quoted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def check_command(command: str) -> None:
    """Refuse an unknown command name: a typo would otherwise hide runs from `--command` filters."""
    if command not in COMMANDS:
        raise ValueError(f"unknown run command {command!r} (expected one of: {', '.join(sorted(COMMANDS))})")


def check_result(result: str | UnknownResult) -> RunResult:
    """The result to write, refusing any other word (one from an untyped caller, or an UnknownResult read back):
    history and schedulers switch on these exact words."""
    word = str(result)
    try:
        return RunResult(word)
    except ValueError:
        raise ValueError(f"unknown run result {word!r} (expected one of: {', '.join(sorted(RESULTS))})") from None


def read_result(word: str | None) -> RunResult | UnknownResult | None:
    """A stored result column as the record's result: None (unfinished), a RunResult, or an UnknownResult keeping
    a word this version does not know, so `history` still lists that run as the store holds it."""
    if word is None:
        return None
    try:
        return RunResult(word)
    except ValueError:
        return UnknownResult(word)


SUPPORTED_LOCATIONS = ("a file path, sqlite:///absolute/path (sqlite:///C:/path on Windows), sqlite:relative/path or "
                       "postgresql://user[:password]@host[:port]/database")
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})

# A URL scheme is at least two characters, so a Windows drive letter ("C:\runs.db") stays a path.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")
# user:password@ in any URL, and password=... in a query string or a libpq keyword/value string.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):(?P<secret>[^@/\s]*)@")
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^&\s]*)", re.IGNORECASE)
MASK = "***"


def mask_secrets(text: str) -> str:
    """`text` with every password a database URL or connection string may carry replaced by ***.

    Every message that names a store location goes through this: the location is the one place a
    secret may be written on the command line.
    """
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    return _KEYWORD_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}", text)


def is_postgres(location: str | Path | None) -> bool:
    """Whether `location` names a PostgreSQL store (postgresql:// or postgres://)."""
    if not isinstance(location, str):
        return False
    match = _SCHEME.match(location)
    return match is not None and match.group(1).lower() in POSTGRES_SCHEMES


def sqlite_url_path(path: str) -> Path:
    """The file of sqlite:///<path>: /<path> on POSIX; on Windows a drive path (sqlite:///C:/runs.db) as it is."""
    if os.name == "nt" and len(path) >= 3 and path[0].isascii() and path[0].isalpha() and path[1] == ":" \
            and path[2] in "/\\":
        return Path(path)
    return Path("/" + path)


def open_store(location: str | Path | None) -> RunStore:
    """The store at `location`: None (DEFAULT_STORE under the current directory), a path, or a URL.

    Only the scheme of an unsupported URL is echoed in the error: a database URL may carry a password.
    A postgresql:// (or postgres://) URL opens the PostgreSQL store (reconciler.store.postgres).
    """
    from reconciler.store.sqlite import SQLiteRunStore  # the backend imports this module

    if location is None:
        return SQLiteRunStore(Path(DEFAULT_STORE))
    if isinstance(location, Path):
        return SQLiteRunStore(location)
    match = _SCHEME.match(location)
    if match is None:
        if not location:
            raise StoreError(f"empty run store location (expected {SUPPORTED_LOCATIONS})")
        return SQLiteRunStore(Path(location))
    scheme = match.group(1).lower()
    if scheme in POSTGRES_SCHEMES:
        from reconciler.store.postgres import PostgresRunStore

        return PostgresRunStore(location)
    if scheme != "sqlite":
        raise StoreError(f"unsupported run store scheme {scheme!r} (supported: {SUPPORTED_LOCATIONS})")
    rest = location[match.end():]
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if host or not slash or not path:
            raise StoreError(f"bad sqlite run store URL (expected {SUPPORTED_LOCATIONS})")
        return SQLiteRunStore(sqlite_url_path(path))
    if not rest:
        raise StoreError(f"bad sqlite run store URL (expected {SUPPORTED_LOCATIONS})")
    return SQLiteRunStore(Path(rest))
