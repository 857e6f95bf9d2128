"""`reconcile status`: where each target stands, as Flux shows a resource's conditions.

Per target, from the manifest (its mode) and the run store (what plan, apply, drift and run recorded):
- Ready: the last run found it in sync, or applied and converged;
- Drifted: the last run found changes it did not make (drift, plan, or warn mode);
- Failing: the last run that touched it failed (an apply error, a plan error, not converged);
- Suspended: `mode: suspend` on the target in the manifest, or `reconcile suspend` recorded in the run store;
- Unknown: no run recorded it yet, or its last run ended with a result this version does not know (a newer
  version recorded it).
With the reason, a message, since when the condition holds (the oldest run of the current streak), the last
run, the git revision of the last apply that succeeded, the resources suspended on their own, and when a
running `reconcile run` loop starts its next cycle.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.model import Mode, TargetSpec
from reconciler.store.base import NextRun, NextRunReason, RunRecord, RunResult, Suspension, UnknownResult


class Condition(enum.StrEnum):
    READY = "Ready"
    DRIFTED = "Drifted"
    FAILING = "Failing"
    SUSPENDED = "Suspended"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class TargetStatus:
    target: str
    condition: Condition
    reason: str
    message: str
    since: float | None = None
    last_run: RunRecord | None = None
    last_applied_revision: str | None = None
    suspended_resources: tuple[str, ...] = ()
    """Resources of this target suspended with `reconcile suspend` (the target itself is not)."""
    next_run: NextRun | None = None
    """The loop's next cycle; None for a suspended target, or when no loop runs this manifest."""


_FAILED = frozenset({RunResult.FAILED, RunResult.ERROR, RunResult.PARTIAL, RunResult.REFUSED, RunResult.INTERRUPTED})


def _mine(run: RunRecord, target: str) -> bool:
    return target in run.targets or any(c.address.startswith(f"{target}.") for c in run.changes)


def _condition(run: RunRecord, target: str) -> tuple[Condition, str, str]:
    changes = [c for c in run.changes if c.address.startswith(f"{target}.") and "run" not in c.actions]
    errors = [e for e in run.errors if e.startswith(f"{target}") or f"{target}." in e or f"'{target}'" in e]
    if isinstance(run.result, UnknownResult):
        return (Condition.UNKNOWN, "UnknownResult",
                f"the run ended {run.result.word!r}, a result this version does not know")
    if run.result in _FAILED and (errors or run.result is not RunResult.PARTIAL):
        detail = (errors or list(run.errors) or [run.result_word or "failed"])[0]
        return Condition.FAILING, f"{run.command.capitalize()}{(run.result_word or '').capitalize()}", detail
    if run.result is RunResult.CHANGES or any(c.status in ("planned", "warned") for c in changes):
        return Condition.DRIFTED, "DriftDetected", f"{len(changes)} change(s) pending"
    if run.result is RunResult.APPLIED:
        return Condition.READY, "ReconciliationSucceeded", f"applied {len(changes)} change(s); converged"
    return Condition.READY, "InSync", "the live state matches the manifest"


def target_status(target: TargetSpec, runs: Sequence[RunRecord], suspensions: Sequence[Suspension] = (),
                  next_run: NextRun | None = None) -> TargetStatus:
    """`runs`: this manifest's recorded runs, newest first; `suspensions` and `next_run`: what the run store
    holds for this manifest."""
    mine = [r for r in runs if r.finished and _mine(r, target.name)]
    last = mine[0] if mine else None
    applied = next((r for r in mine if r.result is RunResult.APPLIED and r.git is not None and r.git.commit), None)
    revision = applied.git.commit if applied is not None and applied.git is not None else None
    if target.mode is Mode.SUSPEND:
        return TargetStatus(target.name, Condition.SUSPENDED, "Suspended", "mode: suspend in the manifest",
                            None, last, revision)
    held = next((s for s in suspensions if s.address.casefold() == target.name.casefold()), None)
    if held is not None:
        why = f": {held.reason}" if held.reason else ""
        return TargetStatus(target.name, Condition.SUSPENDED, "SuspendedByOperator",
                            f"reconcile suspend by {held.by}{why}", held.since, last, revision)
    prefix = f"{target.name}.".casefold()
    resources = tuple(s.address for s in suspensions if s.address.casefold().startswith(prefix))
    if last is None:
        return TargetStatus(target.name, Condition.UNKNOWN, "NeverReconciled", "no recorded run includes it",
                            suspended_resources=resources, next_run=next_run)
    condition, reason, message = _condition(last, target.name)
    since = last.started_at
    for run in mine[1:]:
        if _condition(run, target.name)[0] is not condition:
            break
        since = run.started_at
    return TargetStatus(target.name, condition, reason, message, since, last, revision, resources, next_run)


def _when(next_run: NextRun | None, now: float) -> str:
    if next_run is None:
        return "-"
    if next_run.reason is NextRunReason.RUNNING:
        return "running now"
    seconds = int(next_run.at - now)
    if seconds < 0:
        return f"overdue {_span(-seconds)}"
    return f"in {_span(seconds)}" + (" (backoff)" if next_run.reason is NextRunReason.BACKOFF else "")


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _ago(moment: float | None, now: float) -> str:
    if moment is None:
        return "-"
    return f"{_span(max(0, int(now - moment)))} ago"


def format_status(statuses: Sequence[TargetStatus], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [("TARGET", "CONDITION", "REASON", "SINCE", "LAST RUN", "NEXT RUN", "REVISION", "MESSAGE")]
    for s in statuses:
        last = f"#{s.last_run.id} {s.last_run.command} {_ago(s.last_run.started_at, now)}" if s.last_run else "-"
        message = s.message + (f"; suspended: {', '.join(s.suspended_resources)}" if s.suspended_resources else "")
        rows.append((s.target, s.condition.value, s.reason, _ago(s.since, now), last, _when(s.next_run, now),
                     (s.last_applied_revision or "-")[:12], message))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
                     for r in rows) + "\n"


def status_to_json(statuses: Sequence[TargetStatus]) -> list[dict[str, object]]:
    return [{"target": s.target, "condition": s.condition.value, "reason": s.reason, "message": s.message,
             "since": s.since, "lastRun": s.last_run.id if s.last_run else None,
             "lastAppliedRevision": s.last_applied_revision, "suspendedResources": list(s.suspended_resources),
             "nextRun": None if s.next_run is None else {"at": s.next_run.at, "reason": s.next_run.reason.value,
                                                         "by": s.next_run.by}}
            for s in statuses]
