"""Unattended runs: one level-triggered cycle, and a loop of them like a Flux controller.

Each cycle reads the manifest afresh (so a `git pull` between cycles is picked up), discovers,
plans and, for targets and resources in enforce mode, applies. The loop sleeps a jittered interval
after a good cycle and a capped exponential backoff after a bad one. A stop request (SIGTERM or
SIGINT sets an event) is honoured between cycles and during sleeps, never in the middle of one:
a batch of commands is never cut in half.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.events import EventLog
from reconciler.metrics import Metrics
from reconciler.providers.base import Registry
from reconciler.recording import Recorder
from reconciler.runner import Settings
from reconciler.store import RunStore
from reconciler.workflow import Request, Selection, Verdict, reconcile_once

FAILED_VERDICTS = frozenset(v.value for v in Verdict if v.failed)
EXIT_CODES = {v.value: v.exit_code(detailed=True) for v in Verdict}


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

    def __call__(self) -> str:
        """Run one cycle; returns its verdict. Errors are recorded, then raised."""
        with Recorder(self.command, self.manifest, store=self.store, events=self.events,
                      metrics=self.metrics) as record:
            outcome = reconcile_once(Request(self.manifest, self.overrides, apply=self.apply, selection=self.selection),
                                     self.registry, self.settings, record)
            if self.metrics is not None and outcome.plan is not None and outcome.plan.has_errors:
                self.metrics.observe_error("metadata")
            if self.metrics is not None and outcome.verdict is Verdict.FAILED:
                self.metrics.observe_error("apply")
            return outcome.verdict.value


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


def run_loop(cycle: Callable[[], str], schedule: Schedule, stop: threading.Event, events: EventLog, *,
             max_cycles: int | None = None, rand: Callable[[], float] = random.random) -> int:
    """Cycle until stopped (or max_cycles, for tests and `--once`). Returns the last cycle's exit code."""
    failures = 0
    cycles = 0
    verdict = "no-changes"
    while not stop.is_set():
        try:
            verdict = cycle()
        except ReconcilerError:
            verdict = "error"  # already recorded and logged by the cycle
        except Exception as exc:  # a controller must outlive a bug in one cycle; say so loudly
            verdict = "error"
            events.emit("cycle_crashed", level="error", error=f"{type(exc).__name__}: {exc}")
        cycles += 1
        failures = failures + 1 if verdict in FAILED_VERDICTS else 0
        if (max_cycles is not None and cycles >= max_cycles) or stop.is_set():
            break
        delay, reason = schedule.delay(failures, rand)
        events.emit("cycle_sleep", seconds=round(delay, 3), reason=reason, failures=failures)
        stop.wait(delay)
    return EXIT_CODES.get(verdict, 1)


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
