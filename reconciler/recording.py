"""Recording a run: the run store, the event log and the metrics see every run, however it ends.

One Recorder per run. Callers report the plan and the apply result as they get them; an exception
leaving the `with` block is classified (manifest, lock, discovery, ...) and recorded as the run's
error before it propagates. Only masked data reaches any of the three sinks.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from reconciler.errors import (
    DiscoveryError,
    LockError,
    ManifestError,
    ReconcilerError,
    StalePlanError,
    TransportError,
)
from reconciler.events import EventLog
from reconciler.executor import ChangeOutcome
from reconciler.metrics import Metrics
from reconciler.model import DesiredState, NotifyDestination
from reconciler.plan import Plan
from reconciler.runner import ApplyResult, HandlerOutcome
from reconciler.store import ChangeRecord, RunRecord, RunResult, RunStore, git_info
from reconciler.store.base import check_result
from reconciler.store.gitinfo import ManifestKey, manifest_key

ERROR_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (ManifestError, "manifest"), (LockError, "lock"), (StalePlanError, "stale_plan"),
    (DiscoveryError, "discovery"), (TransportError, "transport"), (ReconcilerError, "other"),
)
SUCCEEDED = frozenset({RunResult.NO_CHANGES, RunResult.CHANGES, RunResult.APPLIED})
"""Results that count as a success (metrics' last success); the rest do not."""
LOGGED_AS_ERRORS = frozenset({RunResult.FAILED, RunResult.ERROR, RunResult.REFUSED})
"""Results whose `run_end` event is logged at level error."""


def error_kind(exc: BaseException) -> str:
    return next((kind for cls, kind in ERROR_KINDS if isinstance(exc, cls)), "other")


class Recorder:
    def __init__(self, command: str, manifest: Path, *, store: RunStore | None = None,
                 events: EventLog | None = None, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.time, notify: tuple[NotifyDestination, ...] = (),
                 key: ManifestKey | None = None) -> None:
        self.command = command
        self.manifest = manifest
        self.key = key
        """What the run is recorded under (worked out on entering when not given: a loop works it out once)."""
        self.store = store
        self.events = events
        self.metrics = metrics
        self.clock = clock
        self.run_id: int | None = None
        self.started = 0.0
        self.result: RunResult | None = None
        self.plan: Plan | None = None
        self.changes: list[ChangeRecord] = []
        self.handlers: list[ChangeRecord] = []
        """Handler runs of an apply (iisreset, ...): recorded with the changes, action `run`; a `handler` event each."""
        self.apply_result: ApplyResult | None = None
        self.errors: tuple[str, ...] = ()
        self.on_finish: Callable[[Recorder], None] | None = None
        """Called once the run is recorded (reconciler.notify sets it from the manifest's `notify:`)."""
        self.notify = notify
        """Destinations from a notifications file (`--notify-file`), told as well as the manifest's."""

    def __enter__(self) -> Recorder:
        self.started = self.clock()
        git = git_info(self.manifest)
        if self.store is not None:
            # The manifest's identity: one history for one manifest, however it is reached and from whichever clone.
            key = self.key if self.key is not None else manifest_key(self.manifest)
            self.run_id = self.store.start(RunRecord(None, self.command, self.started, key.identity, git=git))
        self._emit("run_start", command=self.command, manifest=str(self.manifest),
                   git_commit=git.commit if git else None, run_id=self.run_id)
        return self

    def planned(self, plan: Plan) -> None:
        self.plan = plan
        self.changes = [ChangeRecord(c.key.address, tuple(a.value for a in c.actions), c.reason, c.mode.value,
                                     "planned" if c.mode.value == "enforce" else "warned") for c in plan.changes]

    def loaded(self, desired: DesiredState, state_dir: Path) -> None:
        """The manifest is loaded: its `notify:` destinations, and those of a notifications file, are told how this
        run ends (not for `plan`)."""
        destinations = (*desired.notify, *self.notify)
        if destinations and self.command != "plan" and self.on_finish is None:
            from reconciler.notify import Notifier
            self.on_finish = Notifier(destinations, state_dir, events=self.events).on_finish

    def applied(self, result: ApplyResult) -> None:
        self.apply_result = result
        self.changes = [_record(o) for o in result.outcomes]
        self.handlers = [_handler_record(h) for h in result.handlers]

    def finish(self, result: RunResult, errors: tuple[str, ...] = ()) -> None:
        """How the run ended, recorded once (a later call is ignored). A word that is not a RunResult's is refused
        (ValueError) before anything is recorded."""
        if self.result is not None:
            return
        result = check_result(result)  # a caller without types may pass the word
        self.result = result
        self.errors = errors
        ended = self.clock()
        for change in self.changes:
            self._emit("change", address=change.address, actions=list(change.actions), reason=change.reason,
                       mode=change.mode, status=change.status)
        for handler in self.handlers:
            self._emit("handler", level="error" if handler.status == "failed" else "info", address=handler.address,
                       status=handler.status, reason=handler.reason)
        drifted = self._drifted()
        if self.store is not None and self.run_id is not None:
            plan = self.plan
            self.store.finish(self.run_id, result=result, changes=self.changes + self.handlers, errors=errors,
                              ended_at=ended,
                              manifest_sha256=plan.manifest_sha256 if plan else None,
                              targets=list(plan.targets) if plan else None)
        if self.metrics is not None:
            self.metrics.observe_run(command=self.command, result=result, duration_seconds=ended - self.started,
                                     finished_at=ended, drifted=drifted,
                                     success=result in SUCCEEDED)
        level = "error" if result in LOGGED_AS_ERRORS else "info"
        self._emit("run_end", level=level, command=self.command, result=result.value,
                   duration_seconds=round(ended - self.started, 3), drifted=sum(drifted.values()),
                   errors=list(errors), run_id=self.run_id)
        if self.on_finish is not None:
            self.on_finish(self)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.finish(self.result or RunResult.NO_CHANGES)
            return
        if isinstance(exc, KeyboardInterrupt):
            self.finish(RunResult.INTERRUPTED, ("interrupted",))
            return
        kind = error_kind(exc)
        if self.metrics is not None:
            self.metrics.observe_error(kind)
        messages = tuple(str(p) for p in exc.problems) if isinstance(exc, ManifestError) else (str(exc),)
        self.finish(RunResult.REFUSED if kind in ("lock", "stale_plan") else RunResult.ERROR, messages)

    def _drifted(self) -> dict[str, int]:
        if self.plan is None:
            return {}
        counts = Counter(c.key.target for c in self.plan.changes)
        return {target: counts.get(target, 0) for target in self.plan.targets}

    def _emit(self, event: str, level: str = "info", **fields: object) -> None:
        if self.events is not None:
            self.events.emit(event, level=level, **fields)


def _handler_record(outcome: HandlerOutcome) -> ChangeRecord:
    """A handler's outcome as history keeps it: action `run`, status ran | failed | not needed, the commands."""
    run = outcome.run
    status = "failed" if outcome.error else "ran" if outcome.ran else "not needed"
    reason = "; ".join(c.display() for c in run.commands)
    if run.triggered_by:
        reason += " (after " + ", ".join(run.triggered_by) + ")"
    elif run.due_since:
        reason += f" (due since {run.due_since})"
    elif run.unapplied:
        reason += " (not applied as declared before)"
    return ChangeRecord(run.address, ("run",), reason, "enforce", status)


def _record(outcome: ChangeOutcome) -> ChangeRecord:
    change = outcome.change
    return ChangeRecord(change.key.address, tuple(a.value for a in change.actions), change.reason,
                        change.mode.value, outcome.status.value)
