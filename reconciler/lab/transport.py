"""The lab transport: the same seam as a remote PowerShell session, backed by the lab state file.

One `invoke` is one round trip, like one remote script run: it waits the configured latency once,
holds the state's write lock for the whole batch, and counts the round trip and every call, so
tests and benchmarks can prove that discovery reads a target in one go. Commands are data; nothing
a manifest says is ever evaluated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx

from reconciler.commands import Command, CommandResult
from reconciler.errors import TransportError
from reconciler.lab.emulator import CmdletContext, copy_data, execute_batch, find_host, reads_only
from reconciler.lab.state import DEFAULT_STATE_PATH, LabStore
from reconciler.metadata import MetadataDocument, fetch_metadata
from reconciler.model import TargetSpec

METADATA_TIMEOUT = 10.0
_TURN = threading.Lock()
"""One emulated round trip at a time in a process (after its latency, which all wait out together).

The emulation is the remote server's work, done here in Python: 200 targets' threads running it at once hand the
interpreter to each other at every file operation, and cost about three times the CPU of taking turns (discovery
at 200 targets: 0.43 s -> 0.33 s of CPU, benchmarks/README.md). Across processes the state's file lock orders them."""


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
            self._client = httpx.Client(follow_redirects=True, timeout=self.metadata_timeout)
        return fetch_metadata(url, self._client, self.metadata_timeout)

    def invoke(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> list[CommandResult]:
        """One round trip: run the commands in order on the host; persist what succeeded."""
        if self._closed:
            raise TransportError(f"lab transport to {self.host} is closed")
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        context = CmdletContext(fetch=self._fetch)
        if not self.store.exists():
            self.store.read()  # raises the "does not exist" error (before a lock file appears)
        with _TURN, self.store.locked():
            state = self.store.parse(self.store.read_text())
            # What the round trip started from, to tell whether it changed anything: a copy of the state just read
            # (not the file parsed and its round-trip counts read a second time).
            before = copy_data(state)
            host = find_host(state, self.host)
            if host is None:
                known = ", ".join(sorted(state.get("hosts", {}))) or "none"
                raise TransportError(
                    f"lab {self.store.path} has no host {self.host!r} (hosts: {known}); "
                    "add it with `reconcile lab seed`"
                )
            try:
                # The state was read for this round trip alone: a batch of Gets may return its objects uncopied.
                return execute_batch(state, host, commands, stop_on_error=stop_on_error, context=context,
                                     copy_output=not reads_only(commands))
            finally:
                # Saved even when the batch raises: what its earlier commands did stays, as on a real server.
                self._save(state, before, host)

    def _save(self, state: dict[str, Any], before: dict[str, Any], host: str) -> None:
        """Write the state when the round trip changed it; else only count the round trip (no rewrite, no fsync)."""
        record, was = state["hosts"][host], before["hosts"][host]
        counted = {k: record.get(k) for k in ("roundTrips", "calls")}
        for key in counted:
            if key in was:
                record[key] = was[key]
            else:
                record.pop(key, None)
        changed = state != before
        record.update(counted)
        if changed:
            self.store.write(state)
            return
        old_calls = was.get("calls", {})
        calls = {name: int(n) - int(old_calls.get(name, 0)) for name, n in (counted["calls"] or {}).items()}
        if int(counted["roundTrips"] or 0) != int(was.get("roundTrips", 0)):
            self.store.count_trip(host, {name: n for name, n in calls.items() if n})

    def close(self) -> None:
        self._closed = True
        if self._client is not None:
            self._client.close()
            self._client = None
