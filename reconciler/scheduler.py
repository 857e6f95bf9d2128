"""Unattended runs: one level-triggered cycle, and a loop of them like a Flux controller.

Each cycle reads the manifest afresh (so a `git pull` between cycles is picked up), discovers,
plans and, for targets and resources in enforce mode, applies. The loop sleeps a jittered interval
after a good cycle and a capped exponential backoff after a bad one. A stop request (SIGTERM or
SIGINT sets an event) is honoured between cycles and during sleeps, never in the middle of one:
a batch of commands is never cut in half.

Operators steer a running loop through the run store (StoreControl), which works the same on every platform and,
with a PostgreSQL store, from another machine: targets and resources suspended with `reconcile suspend` are
skipped by each cycle until `reconcile resume`; `reconcile trigger` wakes a sleeping loop (looked for every
`--wake-poll`, 5 s by default) so it reconciles now; and the loop records when its next cycle is due, which
`reconcile status` shows.
"""

from __future__ import annotations

import enum
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from reconciler.errors import ReconcilerError, StoreError
from reconciler.events import EventLog
from reconciler.metrics import Metrics
from reconciler.model import NotifyDestination
from reconciler.providers.base import Registry
from reconciler.recording import Recorder
from reconciler.runner import Settings
from reconciler.store import RunStore
from reconciler.store.base import NextRun, NextRunReason
from reconciler.store.gitinfo import ManifestKey, manifest_key
from reconciler.workflow import Request, Selection, Verdict, reconcile_once


@dataclass(frozen=True)
class Cycle:
    """What one cycle needs; `apply` False makes it a drift check (plan and record only)."""

    manifest: Path
    registry: Registry
    settings: Settings
    overrides: Mapping[str, str] = field(default_factory=dict)
    apply: bool = True
    command: str = "run"
    store: RunStore | None = None
    events: EventLog | None = None
    metrics: Metrics | None = None
    selection: Selection = field(default_factory=Selection)
    notify: tuple[NotifyDestination, ...] = ()
    """Destinations from a notifications file, told as well as the manifest's `notify:`."""
    key: ManifestKey | None = None
    """What the store knows the manifest by (worked out once, here, when not given)."""

    def __post_init__(self) -> None:
        if self.key is None and self.store is not None:
            object.__setattr__(self, "key", manifest_key(self.manifest))

    def __call__(self) -> Verdict:
        """Run one cycle; returns its verdict. Errors are recorded, then raised."""
        with Recorder(self.command, self.manifest, store=self.store, events=self.events,
                      metrics=self.metrics, notify=self.notify, key=self.key) as record:
            suspended = self.suspended()
            outcome = reconcile_once(Request(self.manifest, self.overrides, apply=self.apply, selection=self.selection,
                                             suspended=suspended),
                                     self.registry, self.settings, record)
            if self.metrics is not None and outcome.plan is not None and outcome.plan.has_errors:
                self.metrics.observe_error("metadata")
            if self.metrics is not None and outcome.verdict is Verdict.FAILED:
                self.metrics.observe_error("apply")
            return outcome.verdict

    def suspended(self) -> frozenset[str]:
        """The addresses `reconcile suspend` recorded for this manifest (read afresh every cycle)."""
        if self.store is None or self.key is None:
            return frozenset()
        found = self.store.suspensions(self.key.keys)
        if found and self.events is not None:
            self.events.emit("suspended", addresses=[s.address for s in found],
                             note="skipped until `reconcile resume`")
        return frozenset(s.address for s in found)


class Wake(enum.StrEnum):
    """Why a sleep between cycles ended."""

    ELAPSED = "elapsed"
    REQUESTED = "requested"  # `reconcile trigger`
    STOPPED = "stopped"


class LoopControl(Protocol):
    """What the loop tells, and asks of, whoever steers it (StoreControl: the run store)."""

    def starting(self) -> None:
        """A cycle starts now: requests made until now are served by it."""
        ...

    def sleep(self, seconds: float, reason: str) -> Wake:
        """Sleep until the next cycle is due, a stop is asked for, or a run is requested."""
        ...

    def stopped(self) -> None: ...


class StoreControl:
    """Steers the loop through the run store: records its next run, wakes it on `reconcile trigger`.

    Requests are compared by id: one made before a cycle started is served by that cycle; one made while
    the cycle ran wakes the sleep that follows at once (the manifest may have changed since the cycle read it).
    """

    def __init__(self, store: RunStore, manifest: Path | ManifestKey, stop: threading.Event, *, poll: float = 5.0,
                 events: EventLog | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.key = manifest if isinstance(manifest, ManifestKey) else manifest_key(manifest)
        """Requests are read under its identity and local path (a request of an older version); the next run is
        recorded under its identity."""
        self.stop = stop
        self.poll = poll
        self.events = events
        self.clock = clock
        self.by = f"pid {os.getpid()} on {socket.gethostname()}"
        self.served = 0  # the newest request id a cycle has started since

    def starting(self) -> None:
        self.served = self._newest_request()
        self._record(NextRunReason.RUNNING, 0.0)

    def sleep(self, seconds: float, reason: str) -> Wake:
        self._record(NextRunReason(reason), seconds)
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return Wake.ELAPSED
            if self.stop.wait(min(self.poll, left)):
                return Wake.STOPPED
            newest = self._newest_request()
            if newest > self.served:
                request = self.store.last_request(self.key.keys)
                if self.events is not None and request is not None:
                    self.events.emit("run_requested", by=request.by, request_id=request.id)
                return Wake.REQUESTED

    def stopped(self) -> None:
        try:
            self.store.clear_next_run(self.key.keys, by=self.by)  # not another runner's
        except StoreError as exc:
            self._warn(exc)

    def _newest_request(self) -> int:
        try:
            request = self.store.last_request(self.key.keys)
        except StoreError as exc:  # a store out of reach for a moment: keep to the schedule
            self._warn(exc)
            return self.served
        return (request.id or 0) if request is not None else 0

    def _record(self, reason: NextRunReason, seconds: float) -> None:
        now = self.clock()
        try:
            self.store.set_next_run(NextRun(self.key.identity, now + seconds, reason, now, self.by))
        except StoreError as exc:
            self._warn(exc)

    def _warn(self, exc: StoreError) -> None:
        if self.events is not None:
            self.events.emit("store", level="warning", error=str(exc))


@dataclass(frozen=True)
class Schedule:
    interval: float
    jitter: float = 0.1
    retry_base: float = 10.0
    max_backoff: float | None = None  # default: the interval

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> tuple[float, str]:
        """Seconds to sleep and why: a jittered interval, or backoff doubling from retry_base, capped."""
        if failures:
            cap = self.max_backoff if self.max_backoff is not None else self.interval
            return min(cap, self.retry_base * 2 ** (failures - 1)), "backoff"
        spread = self.interval * self.jitter
        return max(0.0, self.interval + (rand() * 2 - 1) * spread), "interval"


def run_loop(cycle: Callable[[], Verdict], schedule: Schedule, stop: threading.Event, events: EventLog, *,
             max_cycles: int | None = None, rand: Callable[[], float] = random.random,
             control: LoopControl | None = None) -> int:
    """Cycle until stopped (or max_cycles, for tests and `--once`). Returns the last cycle's exit code."""
    try:
        return _loop(cycle, schedule, stop, events, max_cycles, rand, control)
    finally:
        if control is not None:
            control.stopped()


def _loop(cycle: Callable[[], Verdict], schedule: Schedule, stop: threading.Event, events: EventLog,
          max_cycles: int | None, rand: Callable[[], float], control: LoopControl | None) -> int:
    failures = 0
    cycles = 0
    verdict = Verdict.NO_CHANGES
    while not stop.is_set():
        if control is not None:
            control.starting()
        try:
            verdict = cycle()
        except ReconcilerError:
            verdict = Verdict.ERROR  # already recorded and logged by the cycle
        except Exception as exc:  # a controller must outlive a bug in one cycle; say so loudly
            verdict = Verdict.ERROR
            events.emit("cycle_crashed", level="error", error=f"{type(exc).__name__}: {exc}")
        cycles += 1
        failures = failures + 1 if verdict.failed else 0
        if (max_cycles is not None and cycles >= max_cycles) or stop.is_set():
            break
        delay, reason = schedule.delay(failures, rand)
        events.emit("cycle_sleep", seconds=round(delay, 3), reason=reason, failures=failures)
        if control is None:
            stop.wait(delay)
        else:
            control.sleep(delay, reason)
    return verdict.exit_code(detailed=True)


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90`, `30s`, `15m`, `1h30m`, `2d` -> seconds."""
    parts = re.fullmatch(r"\s*((?:\d+(?:\.\d+)?[smhd]?)+)\s*", text)
    if not parts or not text.strip():
        raise ValueError(f"{text!r} is not a duration (examples: 90, 30s, 15m, 1h30m)")
    total = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhd]?)", parts.group(1)))
    if total <= 0:
        raise ValueError(f"{text!r}: a duration must be more than zero")
    return total
