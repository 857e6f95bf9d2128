"""The lab transport: the same seam as a remote PowerShell session, backed by the lab state file.

One `invoke` is one round trip, like one remote script run: it waits the configured latency once,
holds the state's write lock for the whole batch, and counts the round trip and every call, so
tests and benchmarks can prove that discovery reads a target in one go. Commands are data; nothing
a manifest says is ever evaluated.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx

from reconciler.commands import Command, CommandResult
from reconciler.errors import TransportError
from reconciler.lab.emulator import CmdletContext, copy_data, execute_batch, find_host, platform, reads_only
from reconciler.lab.state import DEFAULT_STATE_PATH, LabStore
from reconciler.metadata import MetadataDocument, download_client, fetch_metadata
from reconciler.model import TargetSpec

METADATA_TIMEOUT = 10.0
CHECK_READS_ENV = "RECONCILE_LAB_CHECK_READS"
"""Set to 1, a batch of Gets is checked to have changed nothing its platform does not declare (the test suite does)."""
_TURN = threading.Lock()
"""One emulated round trip at a time in a process (after its latency, which all wait out together).

The emulation is the remote server's work, done here in Python: 200 targets' threads running it at once hand the
interpreter to each other at every file operation, and cost about three times the CPU of taking turns (discovery
at 200 targets: 0.43 s -> 0.33 s of CPU, benchmarks/README.md). Across processes the state's file lock orders them."""


@dataclass(frozen=True)
class _Before:
    """What a round trip's state was before its batch ran: all of it (`state`; None for a batch of Gets, `reads`,
    unless they are checked), the injected failures list, and the host's round-trip and call counts."""

    state: dict[str, Any] | None
    reads: bool
    failures: Any
    trips: Any
    calls: Any
    had_trips: bool
    had_calls: bool


@dataclass(frozen=True)
class _Pending:
    """A lab round trip under way, answered once `due` (its latency over). A batch that may change the state runs
    then, when its answer is asked for; a batch of Gets ran when it was sent (`read`: its results, or what it
    raised), as a remote server reads while the round trip is under way, not after it."""

    transport: LabTransport
    commands: tuple[Command, ...]
    stop_on_error: bool
    due: float
    read: list[CommandResult] | TransportError | None = None

    def result(self) -> list[CommandResult]:
        wait = self.due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if isinstance(self.read, TransportError):
            raise self.read
        if self.read is not None:
            return self.read
        return self.transport._round_trip(self.commands, self.stop_on_error)


class LabTransport:
    """Runs commands on one emulated host of a lab state file."""

    connection_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "state": {
                "type": "string",
                "description": "Path of the lab state file, relative to the working directory "
                f"(default {DEFAULT_STATE_PATH}).",
            },
            "host": {"type": "string", "description": "The emulated server, as `reconcile lab show` lists it."},
            "latencyMs": {
                "type": "number",
                "minimum": 0,
                "description": "Simulated network latency added once per round trip, in milliseconds.",
            },
        },
        "required": ["host"],
        "additionalProperties": False,
    }

    def __init__(
        self,
        state_path: str | Path,
        host: str,
        latency_ms: float = 0.0,
        *,
        metadata_timeout: float = METADATA_TIMEOUT,
    ) -> None:
        self.store = LabStore(state_path)
        self.host = host
        self.latency_ms = latency_ms
        self.metadata_timeout = metadata_timeout
        self._client: httpx.Client | None = None
        self._closed = False

    @classmethod
    def from_target(cls, target: TargetSpec) -> LabTransport:
        """Build from a target's `connection` block (its `transport` key is ignored)."""
        connection = target.connection
        host = connection.get("host")
        if not isinstance(host, str) or not host:
            raise TransportError(f"target {target.name!r}: the lab transport needs connection.host")
        state = connection.get("state", str(DEFAULT_STATE_PATH))
        if not isinstance(state, str) or not state:
            raise TransportError(f"target {target.name!r}: connection.state must be a path")
        latency = connection.get("latencyMs", 0)
        if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
            raise TransportError(f"target {target.name!r}: connection.latencyMs must be a number >= 0")
        return cls(Path.cwd() / state, host, float(latency))

    def _fetch(self, url: str) -> MetadataDocument:
        if self._client is None:
            self._client = download_client(self.metadata_timeout)
        return fetch_metadata(url, self._client, self.metadata_timeout)

    def invoke(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> list[CommandResult]:
        """One round trip: run the commands in order on the host; persist what succeeded."""
        return self.begin(commands, stop_on_error=stop_on_error).result()

    def begin(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> _Pending:
        """A round trip set going (reconciler.commands.Overlapping): its latency counts from now and its answer is
        read when it arrives. Many are in flight at once without a thread waiting on each (discovery of many lab
        targets).

        A batch of Gets runs now, as a remote server does its work while the round trip is under way: the
        emulation (the server's work, done in this process) fills the latency instead of following it (discovery
        of 200 targets: about 0.05 s of emulation, benchmarks/README.md "Ninth round"). A batch that may change
        the state runs when its answer is asked for, after its latency, as before: one interrupted while it waits
        has changed nothing."""
        if self._closed:
            raise TransportError(f"lab transport to {self.host} is closed")
        due = time.monotonic() + self.latency_ms / 1000
        batch = tuple(commands)
        if not reads_only(batch):
            return _Pending(self, batch, stop_on_error, due)
        try:
            read: list[CommandResult] | TransportError = self._round_trip(batch, stop_on_error)
        except TransportError as exc:
            read = exc
        return _Pending(self, batch, stop_on_error, due, read)

    def _round_trip(self, commands: Sequence[Command], stop_on_error: bool) -> list[CommandResult]:
        """The batch run on the host (once its latency is over)."""
        if self._closed:
            raise TransportError(f"lab transport to {self.host} is closed")
        context = CmdletContext(fetch=self._fetch)
        if not self.store.exists():
            self.store.read()  # raises the "does not exist" error (before a lock file appears)
        read_only = reads_only(commands)
        with _TURN, self.store.write_lock():
            # A batch of Gets leaves out the counts of earlier reads (another file): it adds its own, and adds those
            # only if it writes the state after all (`_save`).
            state = self.store.parse(self.store.read_text(), trips=not read_only)
            host = find_host(state, self.host)
            if host is None:
                known = ", ".join(sorted(state.get("hosts", {}))) or "none"
                raise TransportError(
                    f"lab {self.store.path} has no host {self.host!r} (hosts: {known}); "
                    "add it with `reconcile lab seed`"
                )
            # What the round trip started from, to tell whether it changed anything: a copy of the state just read;
            # for a batch of Gets that its platform does not list as changing the state when they read, which change
            # nothing but the injected failures they consume (`take_failure` replaces the list), the list itself and
            # the host's counts (and the copy too when RECONCILE_LAB_CHECK_READS asks to check that).
            record = state["hosts"][host]
            plat = platform(str(record.get("platform", "skype")))
            reads = read_only and not (plat.changed_by_reading and any(
                (plat.cmdlet_name(name) or name) in plat.changed_by_reading
                for command in commands for name in command.all_cmdlets))
            checked = reads and os.environ.get(CHECK_READS_ENV) == "1"
            before = _Before(None if reads and not checked else copy_data(state), reads, state.get("failures"),
                             record.get("roundTrips"), copy_data(record.get("calls")), "roundTrips" in record,
                             "calls" in record)
            try:
                # The state was read for this round trip alone: a batch of Gets may return its objects uncopied.
                return execute_batch(state, host, commands, stop_on_error=stop_on_error, context=context,
                                     copy_output=not read_only)
            finally:
                # Saved even when the batch raises: what its earlier commands did stays, as on a real server.
                self._save(state, before, host, trips_left_out=read_only)

    def _save(self, state: dict[str, Any], before: _Before, host: str, *, trips_left_out: bool) -> None:
        """Write the state when the round trip changed it; else only count the round trip (no rewrite, no fsync)."""
        record = state["hosts"][host]
        counted = {k: record.get(k) for k in ("roundTrips", "calls")}
        changed = state.get("failures") is not before.failures
        if before.state is not None and not (before.reads and changed):
            for key, had, value in (("roundTrips", before.had_trips, before.trips),
                                    ("calls", before.had_calls, before.calls)):
                if had:
                    record[key] = value
                else:
                    record.pop(key, None)
            differs = state != before.state
            record.update(counted)
            if before.reads and differs:
                raise TransportError(
                    f"lab: a batch of Gets changed the state of {host} on its own ({CHECK_READS_ENV}); the platform "
                    "must list the cmdlet in `changed_by_reading`")
            changed = differs
        if changed:
            if trips_left_out:
                self.store.add_trips(state)
            self.store.write(state)
            return
        old_calls = before.calls or {}
        calls = {name: int(n) - int(old_calls.get(name, 0)) for name, n in (counted["calls"] or {}).items()}
        if int(counted["roundTrips"] or 0) != int(before.trips or 0):
            self.store.count_trip(host, {name: n for name, n in calls.items() if n})

    def close(self) -> None:
        self._closed = True
        if self._client is not None:
            self._client.close()
            self._client = None
