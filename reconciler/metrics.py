"""Run metrics in the Prometheus text exposition format (version 0.0.4), with no client library.

A reconcile loop that nobody watches drifts as silently as the hand-run scripts it replaces, so each
run is counted, timed and its drift reported in the format every monitoring stack already scrapes:
served over HTTP by `MetricsServer` for a long-running loop, or written with `Metrics.write_textfile`
for node_exporter's textfile collector after a one-shot run from a scheduler.

One `Metrics` object per process, passed to whoever observes; there is no module-level registry, so
tests and embedded uses never share counters by accident.

Label values are checked against the documented sets (the run store's `COMMANDS` and `RunResult`, `ERROR_KINDS`): a typo
fails loudly in the tests instead of quietly starting a new time series, and the series count stays
bounded. Target names are the one open-ended label; they come from the manifest.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import math
import os
import socket
import tempfile
import threading
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from reconciler.background import BackgroundHTTPServer
from reconciler.errors import MetricsFileError, ReconcilerError
from reconciler.portable import replace
from reconciler.store.base import COMMANDS, RunResult, check_result

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

ERROR_KINDS = frozenset({"manifest", "discovery", "metadata", "lock", "apply", "stale_plan", "transport", "other"})

_HELP = {
    "reconcile_run_duration_seconds": "Wall-clock duration of a reconcile run.",
    "reconcile_runs_total": "Reconcile runs, by command and result.",
    "reconcile_drifted_resources": "Resources of a target that differed from the manifest at the last run.",
    "reconcile_last_run_timestamp_seconds": "Unix time the last run of a command finished.",
    "reconcile_last_success_timestamp_seconds": "Unix time the last successful run of a command finished.",
    "reconcile_errors_total": "Errors met during runs, by kind.",
    "reconcile_up": "1 while the process that exposes these metrics is alive (or wrote this file).",
}

LabelSet = tuple[tuple[str, str], ...]


def format_value(value: float) -> str:
    """A sample value or `le` bound as Prometheus writes it: `1` not `1.0`, `+Inf`, `NaN`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def escape_label_value(value: str) -> str:
    """Backslash, double quote and newline escaped, as the text format requires inside `"..."`."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: LabelSet) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels) + "}"


def _check(value: str, allowed: frozenset[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r} (expected one of: {', '.join(sorted(allowed))})")


class _Histogram:
    """Per-bucket counts kept non-cumulative; `render` accumulates them (cheaper to observe)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        index = next((i for i, bound in enumerate(self.bounds) if value <= bound), len(self.bounds))
        self.counts[index] += 1
        self.total += value
        self.count += 1


class Metrics:
    """All metrics of one process. Thread-safe (a lock): the HTTP server thread reads while the loop writes."""

    def __init__(self, *, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        bounds = [float(b) for b in buckets]
        if bounds and math.isinf(bounds[-1]) and bounds[-1] > 0:
            bounds.pop()  # +Inf is always added; accept it written out
        if any(not math.isfinite(b) for b in bounds) or any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"histogram buckets must be finite and strictly increasing, got {list(buckets)!r}")
        self._bounds = tuple(bounds)
        self._lock = threading.Lock()
        self._durations: dict[str, _Histogram] = {}
        self._runs: dict[tuple[str, str], int] = {}
        self._drifted: dict[str, int] = {}
        self._last_run: dict[str, float] = {}
        self._last_success: dict[str, float] = {}
        # Every kind starts at 0: increase()/rate() miss the first error of a counter that appears at 1.
        self._errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)

    def observe_run(self, *, command: str, result: RunResult, duration_seconds: float, finished_at: float,
                    drifted: Mapping[str, int], success: bool) -> None:
        """Record one finished run. `drifted` replaces the gauge of each target it names; others keep theirs."""
        _check(command, COMMANDS, "command")
        label = check_result(result).value  # the label is the word; a caller without types may pass it
        if not math.isfinite(duration_seconds) or duration_seconds < 0:
            raise ValueError(f"duration_seconds must be a finite number >= 0, got {duration_seconds!r}")
        counts = {str(target): int(n) for target, n in drifted.items()}
        if any(n < 0 for n in counts.values()):
            raise ValueError(f"drifted counts must be >= 0, got {dict(drifted)!r}")
        with self._lock:
            histogram = self._durations.get(command)
            if histogram is None:
                histogram = self._durations[command] = _Histogram(self._bounds)
            histogram.observe(duration_seconds)
            self._runs[(command, label)] = self._runs.get((command, label), 0) + 1
            self._drifted.update(counts)
            self._last_run[command] = finished_at
            if success:
                self._last_success[command] = finished_at

    def observe_error(self, kind: str) -> None:
        """Count one error of a kind (manifest, discovery, metadata, lock, apply, stale_plan, transport, other)."""
        _check(kind, ERROR_KINDS, "error kind")
        with self._lock:
            self._errors[kind] += 1

    def render(self) -> str:
        """The whole exposition, families in a fixed order and series sorted by label values."""
        with self._lock:
            lines: list[str] = []
            name = "reconcile_run_duration_seconds"
            self._header(lines, name, "histogram")
            for command in sorted(self._durations):
                histogram = self._durations[command]
                cumulative = 0
                for bound, count in zip((*histogram.bounds, math.inf), histogram.counts, strict=True):
                    cumulative += count
                    labels = (("command", command), ("le", format_value(bound)))
                    lines.append(f"{name}_bucket{_labels(labels)} {cumulative}")
                lines.append(f"{name}_sum{_labels((('command', command),))} {format_value(histogram.total)}")
                lines.append(f"{name}_count{_labels((('command', command),))} {histogram.count}")
            self._family(lines, "reconcile_runs_total", "counter",
                         {(("command", c), ("result", r)): n for (c, r), n in self._runs.items()})
            self._family(lines, "reconcile_drifted_resources", "gauge",
                         {(("target", t),): n for t, n in self._drifted.items()})
            self._family(lines, "reconcile_last_run_timestamp_seconds", "gauge",
                         {(("command", c),): t for c, t in self._last_run.items()})
            self._family(lines, "reconcile_last_success_timestamp_seconds", "gauge",
                         {(("command", c),): t for c, t in self._last_success.items()})
            self._family(lines, "reconcile_errors_total", "counter",
                         {(("kind", k),): n for k, n in self._errors.items()})
            self._family(lines, "reconcile_up", "gauge", {(): 1})
        return "\n".join(lines) + "\n"

    def write_textfile(self, path: Path) -> None:
        """Write `render()` for node_exporter's textfile collector, atomically.

        The collector may read the file at any moment, so it is written to a temporary file in the same
        directory (same file system, so `os.replace` is atomic) and then renamed over the target. The
        temporary name does not end in `.prom`, so the collector never reads a half-written file.

        A `path` that is a directory, or whose folder does not exist, is refused before anything is
        written: a temporary file is only ever made next to the target. Raises MetricsFileError.
        """
        text = self.render()
        path = Path(path)
        check_textfile_path(path)
        try:
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise MetricsFileError(f"cannot write metrics to {path}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600; the collector may run as another user
            replace(tmp_name, path)  # retried briefly on Windows while the collector has the file open
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            if isinstance(exc, OSError):
                raise MetricsFileError(f"cannot write metrics to {path}: {exc.strerror or exc}") from None
            raise

    @staticmethod
    def _header(lines: list[str], name: str, kind: str) -> None:
        lines.append(f"# HELP {name} {_escape_help(_HELP[name])}")
        lines.append(f"# TYPE {name} {kind}")

    @classmethod
    def _family(cls, lines: list[str], name: str, kind: str, samples: Mapping[LabelSet, float]) -> None:
        cls._header(lines, name, kind)
        for labels in sorted(samples):
            lines.append(f"{name}{_labels(labels)} {format_value(samples[labels])}")


def check_textfile_path(path: Path) -> None:
    """Refuse a metrics file path that is a directory or lies in a folder that does not exist."""
    if not path.name or path.is_dir():
        raise MetricsFileError(f"cannot write metrics to {path}: it is a directory; give a file path "
                              "(e.g. reconcile.prom in the textfile collector's directory)")
    if not path.parent.is_dir():
        raise MetricsFileError(f"cannot write metrics to {path}: the folder {path.parent} does not exist")


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses; a host name other than localhost is not trusted."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "reconciler-metrics/1"
    timeout = 30  # drop idle keep-alive connections rather than keep their threads forever

    def do_GET(self) -> None:
        self._respond(with_body=True)

    def do_HEAD(self) -> None:
        self._respond(with_body=False)

    def _respond(self, *, with_body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            status, content_type, body = HTTPStatus.OK, CONTENT_TYPE, self.server.metrics.render().encode()
        elif path == "/healthz":
            status, content_type, body = HTTPStatus.OK, "text/plain; charset=utf-8", b"ok\n"
        else:
            status, content_type, body = HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a scrape every 15 seconds would drown the event log."""


class _MetricsHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Metrics) -> None:
        self.metrics = metrics
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a scraper that hangs up mid-response is not worth a traceback on stderr."""


class MetricsServer(BackgroundHTTPServer):
    """Serves `GET /metrics` and `GET /healthz` from a `Metrics`, in a daemon thread.

    Binds to loopback unless `allow_remote=True`: the metrics name every target, which is an inventory
    of the estate's servers, so exposing them to the network has to be a decision, not a default.
    """

    thread_name = "metrics-server"
    description = "the metrics server"

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0, *,
                 allow_remote: bool = False) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"refusing to serve metrics on {host!r}: it is not a loopback address and the metrics name "
                "every target; pass allow_remote=True (and protect the port) to expose them"
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ReconcilerError(f"cannot serve metrics on port {port!r}: a port is 0 (any free port) to 65535")
        super().__init__(host.strip("[]"), port)
        self.metrics = metrics

    def make_server(self, address: tuple[str, int]) -> ThreadingHTTPServer:
        """Bind; a port in use (or refused) is one clear ReconcilerError, not a socket traceback."""
        try:
            return _MetricsHTTPServer(address, self.metrics)
        except OSError as exc:
            host, port = address
            hint = " (another process listens there; choose another --metrics-port, or 0 for any free port)" \
                if exc.errno == errno.EADDRINUSE else ""
            raise ReconcilerError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}{hint}") from None
