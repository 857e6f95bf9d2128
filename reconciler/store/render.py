"""Run history for people (`reconcile history`) and for machines (`--json`).

Values are shown as the store holds them, a result word this version does not know too (UnknownResult);
control characters are escaped so an error message or a path cannot move the cursor or recolour a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from reconciler.store.base import ChangeRecord, RunRecord
from reconciler.store.gitinfo import GitInfo

UNFINISHED = "unfinished"
_HEADERS = ("ID", "STARTED", "COMMAND", "RESULT", "CHANGES", "DURATION", "GIT", "MANIFEST")
_SYMBOLS = {("create",): "+", ("update",): "~", ("delete",): "-", ("delete", "create"): "-/+", ("run",): ">"}
"""`>`: a handler that apply ran (or tried to) after the changes, e.g. iisreset, as the plan shows its commands."""


def format_runs(records: Sequence[RunRecord], *, shown: Callable[[str], str] | None = None) -> str:
    """A fixed-width table, one run per line, columns as wide as their widest value. `shown`: the manifest as a
    person reads it from the key a run was recorded under (`history <manifest>`: its local path); without it, the
    key (a git identity, or the absolute path)."""
    if not records:
        return "No runs recorded.\n"
    rows: list[tuple[str, ...]] = [_HEADERS]
    rows += [(str(r.id), local_time(r.started_at), r.command, r.result_word or UNFINISHED, str(len(r.changes)),
              format_duration(r.duration), format_git(r.git),
              shown(r.manifest_path) if shown else r.manifest_path) for r in records]
    rows = [tuple(_printable(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
             for row in rows]
    return "\n".join(lines) + "\n"


def format_run(record: RunRecord) -> str:
    """Everything recorded about one run: times, manifest, git, targets, each change and each error."""
    git = record.git
    lines = [
        f"Run {record.id}: {record.command} {record.result_word or UNFINISHED}",
        f"  started:  {local_time(record.started_at)}",
        f"  ended:    {local_time(record.ended_at) if record.ended_at is not None else '-'}",
        f"  duration: {format_duration(record.duration)}",
        f"  manifest: {record.manifest_path}",
        f"  sha256:   {record.manifest_sha256 or '-'}",
        f"  git:      {_git_detail(git)}",
        f"  targets:  {', '.join(record.targets) if record.targets else '-'}",
    ]
    lines.append(f"Changes ({len(record.changes)}):" if record.changes else "Changes: none")
    lines.extend(f"  {format_change(change)}" for change in record.changes)
    if record.errors:
        lines.append(f"Errors ({len(record.errors)}):")
        for error in record.errors:
            first, *rest = error.splitlines() or [""]
            lines.append(f"  {first}")
            lines.extend(f"    {line}" for line in rest)
    return "\n".join(_printable(line) for line in lines) + "\n"


def format_change(change: ChangeRecord) -> str:
    """`-/+ address: status (reason)`, with the mode when it is not the default (enforce)."""
    symbol = _SYMBOLS.get(tuple(change.actions), "?")
    text = f"{symbol} {change.address}: {change.status}"
    if change.reason:
        text += f" ({change.reason})"
    if change.mode and change.mode != "enforce":
        text += f" [mode: {change.mode}]"
    return text


def runs_to_json(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    return [run_to_json(record) for record in records]


def run_to_json(record: RunRecord) -> dict[str, Any]:
    """Every field, epoch times plus their UTC ISO form; `result` null means the run never finished."""
    git = record.git
    return {
        "id": record.id,
        "command": record.command,
        "started_at": record.started_at,
        "started": utc_time(record.started_at),
        "ended_at": record.ended_at,
        "ended": utc_time(record.ended_at) if record.ended_at is not None else None,
        "duration": record.duration,
        "result": record.result_word,
        "manifest_path": record.manifest_path,
        "manifest_sha256": record.manifest_sha256,
        "git": None if git is None else {"commit": git.commit, "branch": git.branch, "dirty": git.dirty},
        "targets": list(record.targets),
        "changes": [{"address": c.address, "actions": list(c.actions), "reason": c.reason, "mode": c.mode,
                     "status": c.status} for c in record.changes],
        "errors": list(record.errors),
    }


def local_time(epoch: float) -> str:
    """Local ISO time to the second, with its UTC offset (history is read across time zones)."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def utc_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 59.95:  # would round to 60.0s
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"


def format_git(git: GitInfo | None) -> str:
    """Short commit and branch, `*` when the manifest was dirty: `1a2b3c4 main*`."""
    if git is None:
        return "-"
    text = git.commit[:7] if git.commit else "(no commit)"
    if git.branch:
        text += f" {git.branch}"
    return text + ("*" if git.dirty else "")


def _git_detail(git: GitInfo | None) -> str:
    if git is None:
        return "not in a git work tree"
    dirty = {True: "manifest modified", False: "manifest clean", None: "manifest state unknown"}[git.dirty]
    return f"{git.commit or '(no commit)'} on {git.branch or '(detached or unknown)'}, {dirty}"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() or c in "\t" else c.encode("unicode_escape").decode("ascii")
                   for c in text)
