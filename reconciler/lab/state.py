"""The lab's state file: every emulated server, document and injected failure in one JSON file.

One file keeps the lab inspectable (`reconcile lab show`, or just `cat`) and lets the CLI, the
transport and the HTTP server run as separate processes.

Concurrency: writers take an exclusive OS file lock (`reconciler.portable.exclusive_lock`: flock on POSIX,
msvcrt on Windows) on `<state>.lock`, released by the OS if the writer dies, and replace the file
atomically (temp file in the same directory, then `os.replace`). Readers never take the lock: an
atomic replace means they always see a whole file. This matters because the lab transport holds the
lock while New-CsPartnerApplication downloads a metadata document from the lab HTTP server, which
reads the state to answer; if the server waited for the lock the two would deadlock.

Shape (format 1):

    {"format": 1,
     "tenantId": "<guid>",
     "services": {"<name>": {"serviceName": "<guid>", "realm": "<realm>", "host": "<certificate CN>",
                             "style": "exchange|sharepoint|acs", "name": "<display name>",
                             "certificate": "<base64 DER>"}},
     "documents": {"<URL path>": {"service": "<service name>", "status": "ok|invalid|notfound|unreachable"}},
     "hosts": {"<host>": {"platform": "skype", "roundTrips": 0, "calls": {"<Cmdlet>": 0},
                          "objects": {"OAuthConfiguration": {...}, "OAuthServer": [...],
                                      "PartnerApplication": [...]}}},
     "failures": [{"host": "<host>", "cmdlet": "<Cmdlet>", "identity": "<identity or null: any>",
                   "times": 1, "message": "<error text or null: a default>"}]}

Round trips that change nothing (discovery, every Get) write nothing to the state file: their counts
(`roundTrips`, `calls`) are appended as one short line each to `<state>.trips`, without fsync, and
every read adds them in; the next write of the state folds them in and removes that file. So a
read-only round trip costs one small append, not a rewrite and fsync of the whole state, and
`roundTrips` reads the same as before. (A reader without the lock may, for the instant between a
write and the removal of `<state>.trips`, count those round trips twice.)

Documents are keyed by URL path (first segment: the emulated host name) so the same state works
whatever port the lab server listens on. Objects use the cmdlets' PascalCase property names.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from reconciler.errors import LabStateError
from reconciler.portable import exclusive_lock, replace

FORMAT = 1
DEFAULT_STATE_PATH = Path(".lab/state.json")
DEFAULT_PORT = 8470  # the lab server's (here so `reconcile lab --help` need not import the server)
STATUSES = ("ok", "invalid", "notfound", "unreachable")  # what a metadata document can be made to answer
INIT_HINT = "run `reconcile lab init` to create the lab"
LOCK_POLL = 0.002
TRIPS_FOLD_BYTES = 4096


def _read_utf8(path: Path) -> str:
    """A whole file as UTF-8 text, read unbuffered (open, size, read, close: no terminal check, no seek)."""
    with open(path, "rb", buffering=0) as file:
        return file.readall().decode("utf-8")


class LabStore:
    """Reads and writes one lab state file (see the module docstring for locking)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.trips_path = self.path.with_name(self.path.name + ".trips")

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> dict[str, Any]:
        """The whole state, without the lock (safe: writes are atomic replaces), read-only round trips counted."""
        return self.parse(self.read_text())

    def read_text(self) -> str:
        """The state file's text as it is (without the counts of read-only round trips)."""
        try:
            return _read_utf8(self.path)
        except FileNotFoundError:
            raise self._missing() from None
        except OSError as exc:
            raise LabStateError(f"lab state {self.path} cannot be read: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise LabStateError(f"lab state {self.path} is not valid JSON ({exc}): {INIT_HINT} --force") from None

    def parse(self, text: str, *, trips: bool = True) -> dict[str, Any]:
        """The state from the file's text, plus (unless `trips` is false) the counts of the read-only round trips
        since its last write: a round trip that only reads leaves them out, and adds them (`add_trips`) if it
        writes after all."""
        try:
            state = json.loads(text)
        except ValueError as exc:
            raise LabStateError(f"lab state {self.path} is not valid JSON ({exc}): {INIT_HINT} --force") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise LabStateError(f"lab state {self.path} is not a format {FORMAT} lab state: {INIT_HINT} --force")
        if trips:
            self.add_trips(state)
        return state

    def add_trips(self, state: dict[str, Any]) -> None:
        """Add to `state` the counts of the read-only round trips since the state file was last written."""
        try:
            lines = _read_utf8(self.trips_path).splitlines()
        except (OSError, UnicodeDecodeError):
            return  # none since the last write
        hosts = state.get("hosts")
        try:  # every line in one parse; one by one when some line is not whole (being appended right now)
            trips: list[Any] = json.loads("[" + ",".join(lines) + "]")
        except ValueError:
            trips = []
            for line in lines:
                try:
                    trips.append(json.loads(line))
                except ValueError:
                    continue
        for trip in trips:
            try:
                record = hosts[trip["host"]] if isinstance(hosts, dict) else None
            except (KeyError, TypeError):
                continue  # a host removed since
            if not isinstance(record, dict) or not isinstance(trip.get("calls"), dict):
                continue
            record["roundTrips"] = int(record.get("roundTrips", 0)) + int(trip.get("trips", 1))
            calls = record.setdefault("calls", {})
            for name, count in trip["calls"].items():
                calls[name] = int(calls.get(name, 0)) + int(count)

    def count_trip(self, host: str, calls: dict[str, int]) -> None:
        """Count one round trip that changed nothing (hold `locked()`): one appended line, no state write.

        Once the file passes TRIPS_FOLD_BYTES (a read-only loop adds a line a round trip, and every read parses them
        all), its lines are folded into one per host (`"trips": n`) first."""
        line = json.dumps({"host": host, "calls": calls}, separators=(",", ":")) + "\n"
        # One line appended in as few system calls as do (each lets another thread in: 200 targets read at once).
        fd = os.open(self.trips_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < TRIPS_FOLD_BYTES:
                os.write(fd, line.encode("utf-8"))
                return
        finally:
            os.close(fd)
        self._fold_trips(line)

    def _fold_trips(self, line: str) -> None:
        folded: dict[str, dict[str, Any]] = {}
        for text in [*self.trips_path.read_text(encoding="utf-8").splitlines(), line]:
            try:
                trip = json.loads(text)
                host, calls, trips = str(trip["host"]), dict(trip["calls"]), int(trip.get("trips", 1))
            except (ValueError, KeyError, TypeError):
                continue
            entry = folded.setdefault(host, {"host": host, "trips": 0, "calls": {}})
            entry["trips"] += trips
            for name, count in calls.items():
                entry["calls"][name] = int(entry["calls"].get(name, 0)) + int(count)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=self.trips_path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.writelines(json.dumps(entry, separators=(",", ":")) + "\n" for entry in folded.values())
            replace(temp, self.trips_path)  # readers see the lines before or after, never half
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def _missing(self) -> LabStateError:
        return LabStateError(f"lab state {self.path} does not exist: {INIT_HINT}")

    def write_lock(self) -> AbstractContextManager[None]:
        """The writers' lock of a lab whose state file exists (`locked` without making its directory first)."""
        return exclusive_lock(self.lock_path, poll=LOCK_POLL)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writers' lock. Not re-entrant: never nest edit() or locked() in one thread."""
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.write_lock():  # writers hold it for milliseconds: a short poll
            yield

    @contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        """Lock, read, yield the state to change in place, save.

        The state is saved even when the body raises: a batch that fails halfway keeps what its
        earlier commands did, as a real server would.
        """
        if not self.exists():
            raise self._missing()  # before locking: the lock file must not appear where there is no lab
        with self.locked():
            state = self.read()
            try:
                yield state
            finally:
                self._write(state)

    def create(self, state: dict[str, Any], *, force: bool = False) -> None:
        """Write a new state file; refuse to overwrite an existing one unless `force`."""
        with self.locked():
            if self.path.exists() and not force:
                raise LabStateError(f"lab state {self.path} already exists (use --force to overwrite it)")
            self._write(state)

    def write(self, state: dict[str, Any]) -> None:
        """Save a state read with `parse` (its read-only round trips included). Hold `locked()`."""
        self._write(state)

    def _write(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(state, out, indent=2)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            replace(temp, self.path)  # retried briefly on Windows while a reader has the file open
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        self.trips_path.unlink(missing_ok=True)  # folded into what was just written (or reset by create)
