"""What the SQL backends share: the statements that write and read runs and what operators ask of the loop,
written once for both dialects, and the rows they read back as records.

Each backend keeps its own connection, transactions and error handling; a Dialect says only what differs in the
SQL itself (table names, the parameter mark, a case-insensitive LIKE) and how each backend makes text and JSON
storable (SQLite refuses lone surrogates; PostgreSQL refuses those and NUL too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.errors import StoreError
from reconciler.store.base import (
    ChangeRecord,
    Keys,
    NextRun,
    NextRunReason,
    RunRecord,
    RunRequest,
    RunResult,
    Suspension,
    check_command,
    check_result,
    key_tuple,
    read_result,
    target_pattern,
)
from reconciler.store.gitinfo import GitInfo

RUN_COLUMNS = ("id", "command", "started_at", "ended_at", "manifest_path", "manifest_sha256", "in_git", "git_commit",
               "git_branch", "git_dirty", "targets", "result", "changes", "errors")
"""The runs table's columns, in the order `run_from_row` reads them."""
_SELECT_RUN = ", ".join(RUN_COLUMNS)


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' statements about runs."""

    prefix: str
    """Of every table's name (`runs`, `reconcile_runs`)."""
    mark: str
    """The parameter placeholder (`?`, `%s`)."""
    like: str
    """An ASCII case-insensitive LIKE (SQLite's LIKE is one; PostgreSQL's ILIKE)."""
    text: Callable[[str | None], str | None]
    """A scalar text value as the database can store it."""
    dump: Callable[[Any], str]
    """A JSON column's text, as the database can store it, that loads back exactly."""

    @property
    def runs(self) -> str:
        return f"{self.prefix}runs"

    def insert_run(self, record: RunRecord) -> tuple[str, tuple[Any, ...]]:
        """The INSERT of a run that begins (its command, and its result if it has one, checked first)."""
        check_command(record.command)
        result = None if record.result is None else check_result(record.result).value
        columns = RUN_COLUMNS[1:]
        git = record.git
        sql = f"INSERT INTO {self.runs} ({', '.join(columns)}) VALUES ({', '.join([self.mark] * len(columns))})"
        return sql, (record.command, record.started_at, record.ended_at, self.text(record.manifest_path),
                     self.text(record.manifest_sha256), git is not None, self.text(git.commit if git else None),
                     self.text(git.branch if git else None), git.dirty if git else None,
                     self.dump(list(record.targets)), result, self.dump(change_dicts(record.changes)),
                     self.dump(list(record.errors)))

    def finish_run(self, run_id: int, *, result: RunResult, changes: Sequence[ChangeRecord], errors: Sequence[str],
                   ended_at: float | None, manifest_sha256: str | None,
                   targets: Sequence[str] | None) -> tuple[str, tuple[Any, ...]]:
        """The UPDATE that records how a run ended (`result` checked first); None keeps what start recorded."""
        word = check_result(result).value
        m = self.mark
        sql = (f"UPDATE {self.runs} SET result = {m}, ended_at = {m}, changes = {m}, errors = {m}, "
               f"manifest_sha256 = COALESCE({m}, manifest_sha256), targets = COALESCE({m}, targets) WHERE id = {m}")
        return sql, (word, time.time() if ended_at is None else ended_at, self.dump(change_dicts(changes)),
                     self.dump(list(errors)), self.text(manifest_sha256),
                     None if targets is None else self.dump(list(targets)), run_id)

    def _in(self, column: str, keys: Keys) -> tuple[str, list[Any]]:
        """`column` is one of `keys`: an IN list of parameters (at least one key)."""
        found = key_tuple(keys)
        if not found:
            raise ValueError("no manifest key to match")
        return f"{column} IN ({', '.join([self.mark] * len(found))})", [self.text(k) for k in found]

    def list_runs(self, *, limit: int, manifest_path: Keys | None, command: str | None,
                  result: RunResult | None, since: float | None, target: str | None) -> tuple[str, list[Any]]:
        """The SELECT of RunStore.list: newest first, each filter given (`result` refused if not a RunResult's word,
        as finish refuses it)."""
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        m = self.mark
        where: list[str] = []
        params: list[Any] = []
        word = None if result is None else check_result(result).value
        if manifest_path is not None:
            clause, keys = self._in("manifest_path", manifest_path)
            where.append(clause)
            params.extend(keys)
        for column, value in (("command", command), ("result", word)):
            if value is not None:
                where.append(f"{column} = {m}")
                params.append(self.text(value))
        if since is not None:
            where.append(f"started_at >= {m}")
            params.append(since)
        if target is not None:
            where.append(f"targets {self.like} {m} ESCAPE '\\'")
            params.append(self.text(target_pattern(target)))
        sql = f"SELECT {_SELECT_RUN} FROM {self.runs}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY started_at DESC, id DESC LIMIT {m}"
        params.append(limit)
        return sql, params

    def get_run(self, run_id: int) -> tuple[str, list[Any]]:
        return f"SELECT {_SELECT_RUN} FROM {self.runs} WHERE id = {self.mark}", [run_id]

    # -- what operators ask of the loop: suspensions, run requests, the next run ---------------------

    def upsert_suspension(self, suspension: Suspension) -> tuple[str, tuple[Any, ...]]:
        m = self.mark
        return (f"INSERT INTO {self.prefix}suspensions (manifest_path, address, reason, since, by_whom) "
                f"VALUES ({m}, {m}, {m}, {m}, {m}) ON CONFLICT (manifest_path, address) DO UPDATE SET "
                "reason = EXCLUDED.reason, since = EXCLUDED.since, by_whom = EXCLUDED.by_whom",
                (self.text(suspension.manifest_path), self.text(suspension.address), self.text(suspension.reason),
                 suspension.since, self.text(suspension.by)))

    def delete_suspension(self, manifest_path: Keys, address: str) -> tuple[str, tuple[Any, ...]]:
        """Under every key: a suspension recorded under the local path before manifests had an identity is lifted
        too."""
        clause, keys = self._in("manifest_path", manifest_path)
        return (f"DELETE FROM {self.prefix}suspensions WHERE {clause} AND address = {self.mark}",
                (*keys, self.text(address)))

    def select_suspensions(self, manifest_path: Keys) -> tuple[str, list[Any]]:
        """Rows under any key: `suspensions_from_rows` keeps one per address."""
        clause, keys = self._in("manifest_path", manifest_path)
        return (f"SELECT manifest_path, address, reason, since, by_whom FROM {self.prefix}suspensions "
                f"WHERE {clause} ORDER BY since, address", keys)

    def insert_run_request(self, request: RunRequest) -> tuple[str, tuple[Any, ...]]:
        m = self.mark
        return (f"INSERT INTO {self.prefix}run_requests (manifest_path, requested_at, by_whom) VALUES ({m}, {m}, {m})",
                (self.text(request.manifest_path), request.requested_at, self.text(request.by)))

    def select_last_request(self, manifest_path: Keys) -> tuple[str, list[Any]]:
        """The newest request under any key."""
        clause, keys = self._in("manifest_path", manifest_path)
        return (f"SELECT id, manifest_path, requested_at, by_whom FROM {self.prefix}run_requests "
                f"WHERE {clause} ORDER BY id DESC LIMIT 1", keys)

    def upsert_next_run(self, next_run: NextRun) -> tuple[str, tuple[Any, ...]]:
        m = self.mark
        return (f"INSERT INTO {self.prefix}next_runs (manifest_path, next_run_at, reason, recorded_at, by_whom) "
                f"VALUES ({m}, {m}, {m}, {m}, {m}) ON CONFLICT (manifest_path) DO UPDATE SET "
                "next_run_at = EXCLUDED.next_run_at, reason = EXCLUDED.reason, "
                "recorded_at = EXCLUDED.recorded_at, by_whom = EXCLUDED.by_whom",
                (self.text(next_run.manifest_path), next_run.at, next_run.reason.value, next_run.recorded_at,
                 self.text(next_run.by)))

    def delete_next_run(self, manifest_path: Keys, by: str | None = None) -> tuple[str, list[Any]]:
        """Under every key: a loop of this version that stops clears what an older one left under the local path.
        With `by`, only a row that loop recorded: runners sharing a store share the row, and one that stops must not
        clear the next run another one recorded."""
        clause, keys = self._in("manifest_path", manifest_path)
        if by is None:
            return f"DELETE FROM {self.prefix}next_runs WHERE {clause}", keys
        return f"DELETE FROM {self.prefix}next_runs WHERE {clause} AND by_whom = {self.mark}", [*keys, self.text(by)]

    def select_next_run(self, manifest_path: Keys) -> tuple[str, list[Any]]:
        """The most recently recorded under any key."""
        clause, keys = self._in("manifest_path", manifest_path)
        return (f"SELECT manifest_path, next_run_at, reason, recorded_at, by_whom FROM {self.prefix}next_runs "
                f"WHERE {clause} ORDER BY recorded_at DESC LIMIT 1", keys)


def check_finishable(run_id: int, row: Sequence[Any] | None, where: str) -> None:
    """Refuse to finish an unknown run or one already finished (`row`: its result column, read in the same
    transaction). History is append-only: a second finish is a bug in the caller, not a correction."""
    if row is None:
        raise StoreError(f"no run {run_id} in {where}")
    if row[0] is not None:
        raise StoreError(f"run {run_id} is already finished ({row[0]})")


def check_schema(where: str, current: int, known: int) -> None:
    """Refuse a store written by a newer version (a migration this code does not know)."""
    if current > known:
        raise StoreError(f"run store {where} has schema version {current}, newer than this reconciler knows "
                         f"({known}): upgrade reconciler")


def change_dicts(changes: Sequence[ChangeRecord]) -> list[dict[str, Any]]:
    """A run's changes as its `changes` JSON column holds them."""
    return [{"address": c.address, "actions": list(c.actions), "reason": c.reason, "mode": c.mode,
             "status": c.status} for c in changes]


def _change(data: dict[str, Any]) -> ChangeRecord:
    return ChangeRecord(address=str(data.get("address", "")), actions=tuple(data.get("actions", ())),
                        reason=str(data.get("reason", "")), mode=str(data.get("mode", "")),
                        status=str(data.get("status", "")))


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """A row of RUN_COLUMNS as the record it was written from."""
    (run_id, command, started_at, ended_at, manifest_path, manifest_sha256, in_git, git_commit, git_branch,
     git_dirty, targets, result, changes, errors) = row
    git = GitInfo(commit=git_commit, branch=git_branch, dirty=None if git_dirty is None else bool(git_dirty)) \
        if in_git else None
    return RunRecord(id=int(run_id), command=command, started_at=started_at, manifest_path=manifest_path,
                     manifest_sha256=manifest_sha256, git=git, targets=tuple(json.loads(targets)),
                     ended_at=ended_at, result=read_result(result),
                     changes=tuple(_change(c) for c in json.loads(changes)), errors=tuple(json.loads(errors)))


def next_run_from_row(row: Sequence[Any]) -> NextRun | None:
    """None for a reason this version does not know (a newer loop wrote it): `status` shows no next run rather than
    a wrong one, and does not fail."""
    path, at, reason, recorded_at, by = row
    try:
        known = NextRunReason(reason)
    except ValueError:
        return None
    return NextRun(path, at, known, recorded_at, by)


def suspensions_from_rows(rows: Sequence[Sequence[Any]], keys: Keys) -> list[Suspension]:
    """One suspension per address (rows oldest first): the one under the earliest of `keys` (the identity) when a
    suspension was recorded under the identity and the local path both."""
    order = {key: rank for rank, key in enumerate(key_tuple(keys))}
    chosen: dict[str, Suspension] = {}
    for row in rows:
        found = Suspension(*row)
        held = chosen.get(found.address)
        if held is None or order.get(found.manifest_path, len(order)) < order.get(held.manifest_path, len(order)):
            chosen[found.address] = found
    return sorted(chosen.values(), key=lambda s: (s.since, s.address))


def run_request_from_row(row: Sequence[Any]) -> RunRequest:
    request_id, path, at, by = row
    return RunRequest(int(request_id), path, at, by)
