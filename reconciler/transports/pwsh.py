"""The local PowerShell transport (`transport: pwsh`): one PowerShell process per target per run.

For admins who run `reconcile` on a management host that has the Skype for Business or Exchange
modules (Windows PowerShell 5.1 or PowerShell 7 on Windows, or pwsh on Linux). The process runs
`runner.ps1` (shipped next to this module), is started on the first `invoke`, reused for discovery,
apply and the re-read after it, and ended by `close()`: importing those modules takes seconds, so
one process per run instead of one per batch.

Requests and responses are JSON lines on the process's standard input and output (see runner.ps1
for the protocol). Commands stay data all the way: the runner splats each parameter map onto the
cmdlet, and a native command's argument array onto the executable (`& $executable @arguments`), so
no value is ever parsed as PowerShell. Cmdlet and executable names are checked against an allow-list
here, before anything is sent, and again by the runner. The allow-list is empty until `restrict_to`
sets it to the commands the target's provider declares (Registry.open_transport does); a target's
`allowCmdlets` is added either way.

Any failure to deliver a batch (the process missing, exiting, hanging past the timeout, or answering
out of protocol) kills the process and raises TransportError; a later `invoke` starts a new one. No
message ever contains a parameter marked sensitive.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from reconciler.commands import Pending
from reconciler.errors import OutputShapeError, TransportError
from reconciler.model import TargetSpec
from reconciler.portable import names_snapins
from reconciler.transports import psjson
from reconciler.transports.base import Command, CommandResult, send_unrefused

DEFAULT_TIMEOUT = 300.0
MODULES_ENV = "RECONCILER_PWSH_MODULES"
"""How the module list reaches the runner: an environment variable holding a JSON array, so no
name is ever quoted onto a command line."""
RUNNER = Path(__file__).with_name("runner.ps1")
"""The runner script, shipped as package data next to this module."""
STDERR_LINES = 20
CLOSE_GRACE = 5.0

DEFAULT_ALLOWED_CMDLETS: tuple[str, ...] = ()
"""Nothing runs until `restrict_to` names the commands: the registry passes exactly what the target's provider
declares (its kinds' documented syntax), plus a target's `allowCmdlets`. No provider knowledge lives here."""

CMDLET_NAME = psjson.CMDLET_NAME
NATIVE_NAME = psjson.NATIVE_NAME
PARAMETER_NAME = re.compile(r"^-?[A-Za-z_][A-Za-z0-9_]*$")
RUNNER_ARGS = ("-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File")
"""-ExecutionPolicy applies to this process only (ignored off Windows); a Group Policy still wins."""


def default_executable(modules: Sequence[str] = ()) -> str:
    """Windows PowerShell 5.1 (`powershell.exe`) when `modules` names a snap-in (e.g.
    Microsoft.Exchange.Management.PowerShell.SnapIn: snap-ins load only there), or on Windows without
    PowerShell 7 on PATH; else `pwsh` (PowerShell 7)."""
    if names_snapins(modules) or (os.name == "nt" and shutil.which("pwsh") is None):
        return "powershell.exe"
    return "pwsh"


class PwshTransport:
    """Runs commands in a local PowerShell process through runner.ps1 (one process per target per run)."""

    connection_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "executable": {
                "description": "The PowerShell to start: a program name or path (default `pwsh`, or "
                "`powershell.exe` when `modules` names a snap-in or on Windows without PowerShell 7), or a list "
                "of arguments to start it "
                "with (the runner's own arguments are appended).",
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                ],
            },
            "modules": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "description": "Modules to import (or Windows PowerShell snap-ins to add) before the first "
                "command, e.g. SkypeForBusiness or Microsoft.Exchange.Management.PowerShell.SnapIn.",
            },
            "timeoutSeconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": f"How long one batch (or the start) may take (default {DEFAULT_TIMEOUT:g}).",
            },
            "allowCmdlets": {
                "type": "array",
                "items": {"type": "string", "pattern": NATIVE_NAME.pattern},
                "description": "Cmdlets (Verb-Noun) or executables (e.g. iisreset) to allow beyond the "
                "commands the installed providers declare.",
            },
        },
        "additionalProperties": False,
    }

    def __init__(
        self,
        executable: str | Sequence[str] | None = None,
        *,
        modules: Sequence[str] = (),
        timeout: float = DEFAULT_TIMEOUT,
        allow_cmdlets: Sequence[str] = (),
        name: str = "pwsh",
    ) -> None:
        if executable is None:
            executable = default_executable(modules)
        self.argv: tuple[str, ...] = (executable,) if isinstance(executable, str) else tuple(executable)
        if not self.argv or not all(self.argv):
            raise TransportError(f"{name}: the PowerShell executable must be a non-empty name or argument list")
        self.modules = tuple(modules)
        self.timeout = timeout
        self.allow_cmdlets = tuple(allow_cmdlets)
        self.allowed: tuple[str, ...] = ()
        self._allowed_lower: frozenset[str] = frozenset()
        self._set_allowed(DEFAULT_ALLOWED_CMDLETS)
        self.name = name
        self._process: _Process | None = None
        self._next_id = 1
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def from_target(cls, target: TargetSpec) -> PwshTransport:
        """Build from a target's `connection` block (its `transport` key is ignored). Starts nothing."""
        connection = target.connection
        where = f"target {target.name!r}"
        unknown = sorted(set(connection) - {"transport", *cls.connection_schema["properties"]})
        if unknown:
            raise TransportError(f"{where}: unknown connection setting(s) for pwsh: {', '.join(unknown)}")
        executable = connection.get("executable")
        if executable is not None and not _is_text(executable) and not _is_text_list(executable, nonempty=True):
            raise TransportError(f"{where}: connection.executable must be a program name or a list of arguments")
        modules = connection.get("modules", [])
        if not _is_text_list(modules):
            raise TransportError(f"{where}: connection.modules must be a list of module names")
        timeout = connection.get("timeoutSeconds", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise TransportError(f"{where}: connection.timeoutSeconds must be a number > 0")
        extra = connection.get("allowCmdlets", [])
        if not _is_text_list(extra) or not all(NATIVE_NAME.match(name) for name in extra):
            raise TransportError(f"{where}: connection.allowCmdlets must be a list of cmdlet names (Verb-Noun) "
                                 "or executable names (e.g. iisreset)")
        return cls(executable, modules=modules, timeout=float(timeout), allow_cmdlets=extra,
                   name=f"pwsh ({target.name})")

    # --- the seam ---------------------------------------------------------------------------------

    def restrict_to(self, names: Iterable[str]) -> None:
        """Allow exactly these commands (cmdlets or executables, case-insensitive) plus `allowCmdlets`.

        Replaces the default allow-list; applies from the next `invoke` (the list travels with every
        request). Raises ValueError for an entry that is not a command name.
        """
        wanted = list(names)
        bad = [name for name in wanted if not isinstance(name, str) or not NATIVE_NAME.match(name)]
        if bad:
            raise ValueError(f"{self.name}: not command names: {bad!r}")
        with self._lock:
            self._set_allowed(wanted)

    def unsupported(self, command: Command) -> str | None:
        """Why this transport cannot run `command`, as a sentence; None when it can (nothing is sent)."""
        problem = self._problem(command)
        if problem is None:
            return None
        return f"the pwsh transport ({self.name}) cannot run {command.cmdlet}: {problem}"

    def invoke(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> list[CommandResult]:
        """One request to the PowerShell process; refused commands fail here without being sent.

        A refused command gets its error result in its place. With `stop_on_error` the commands
        before it are sent and nothing after it (exactly what the runner does at a failure); without,
        every other command is sent.
        """
        with self._lock:
            if self._closed:
                raise TransportError(f"{self.name}: the transport is closed")
            return send_unrefused(commands, self._refusals(commands), stop_on_error, self._round_trip)

    def begin(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> Pending:
        """The request written to the process now (started now if it is not running), its answer read by `result`
        (reconciler.commands.Overlapping): the processes of many targets start, import their modules and run
        their batches at once, read from one thread. Nothing else is sent on this transport until that answer is
        read. A batch with a refused command is answered as `invoke` answers it, then and there."""
        with self._lock:
            if self._closed:
                raise TransportError(f"{self.name}: the transport is closed")
            refusals = self._refusals(commands)
            if refusals:
                return _Answered(send_unrefused(commands, refusals, stop_on_error, self._round_trip))
            return self._send(commands, stop_on_error)

    def close(self) -> None:
        """End the process: close its input (the runner exits), then kill it if it lingers."""
        with self._lock:
            self._closed = True
            process, self._process = self._process, None
        if process is not None:
            process.shutdown(CLOSE_GRACE)

    # --- internals --------------------------------------------------------------------------------

    def _set_allowed(self, names: Iterable[str]) -> None:
        """The allow-list: `names` plus `allowCmdlets`, each once (case-insensitively, first spelling kept)."""
        by_lower: dict[str, str] = {}
        for name in (*names, *self.allow_cmdlets):
            by_lower.setdefault(name.lower(), name)
        self.allowed = tuple(by_lower.values())
        self._allowed_lower = frozenset(by_lower)

    def _problem(self, command: Command) -> str | None:
        """Why this command must not be sent (a clause, no value in it); None if it may be."""
        if command.native:
            return self._native_problem(command)
        if command.cmdlet.lower() not in self._allowed_lower or not CMDLET_NAME.match(command.cmdlet):
            return "the cmdlet is not on its allow-list (add it to connection.allowCmdlets if it is safe to run)"
        if command.pipe is not None:
            if not PARAMETER_NAME.match(command.pipe.parameter):
                return f"{command.pipe.parameter[:60]!r} is not a parameter name"
            problem = self._problem(command.pipe.source)
            if problem is not None:
                return f"its pipe's source {command.pipe.source.cmdlet}: {problem}"
        seen: set[str] = set()
        for name in command.parameters:
            if not isinstance(name, str) or not PARAMETER_NAME.match(name):
                return f"{str(name)[:60]!r} is not a parameter name"
            key = name.lstrip("-").lower()
            if key in seen:  # a splatted hashtable is case-insensitive: one value would silently win
                return f"parameter {name!r} is given twice"
            seen.add(key)
        try:
            json.dumps(dict(command.parameters), allow_nan=False)
        except (TypeError, ValueError) as exc:
            # The exception text names a type, never a value.
            return f"a parameter value cannot be sent as JSON ({type(exc).__name__})"
        return None

    def _native_problem(self, command: Command) -> str | None:
        if not NATIVE_NAME.match(command.cmdlet) or command.cmdlet.lower() not in self._allowed_lower:
            return ("the executable is not on its allow-list (add it to connection.allowCmdlets if it is safe "
                    "to run)")
        if command.parameters or command.select:
            return "a native command takes positional arguments only (no named parameters, no select)"
        if not all(isinstance(argument, str) for argument in command.arguments):
            return "every argument of a native command must be a string"
        return None

    def _refusals(self, commands: Sequence[Command]) -> dict[int, CommandResult]:
        """By position in the batch: the error result of each command that must not be sent."""
        return {index: refusal for index, command in enumerate(commands)
                if (refusal := self._refusal(command)) is not None}

    def _refusal(self, command: Command) -> CommandResult | None:
        """Why this command must not be sent, as an error result; None if it may be."""
        problem = self._problem(command)
        if problem is None:
            return None
        return CommandResult(command, ok=False, error=(
            f"{command.cmdlet} : refused by the pwsh transport: {problem}; nothing was sent"))

    def _request(self, request_id: int, commands: Sequence[Command], stop_on_error: bool) -> bytes:
        body = {
            "id": request_id,
            "allow": list(self.allowed),
            "stopOnError": stop_on_error,
            "commands": [psjson.protocol_command(c) for c in commands],
        }
        # ASCII-only JSON: non-ASCII travels as \u escapes, so no console code page can alter it,
        # and a newline inside a value can never end the line early.
        return (json.dumps(body, ensure_ascii=True, allow_nan=False, separators=(",", ":")) + "\n").encode("ascii")

    def _round_trip(self, commands: Sequence[Command], stop_on_error: bool) -> list[CommandResult]:
        return self._send(commands, stop_on_error).result()

    def _send(self, commands: Sequence[Command], stop_on_error: bool) -> _Sent:
        """Write the request (starting the process first if none is running: its ready line is read with the
        answer, so a new process imports its modules while the caller goes on)."""
        deadline = time.monotonic() + self.timeout
        with self._broken_on_error(commands):
            starting = self._process is None
            process = self._start() if starting else self._process
            assert process is not None
            self._process = process
            request_id = self._next_id
            self._next_id += 1
            try:
                process.send(self._request(request_id, commands, stop_on_error), deadline)
                unsent = None
            except TransportError as exc:
                if not starting:
                    raise
                unsent = exc  # a process that ended at start: its ready line says why (read with the answer)
        return _Sent(self, process, request_id, tuple(commands), stop_on_error, deadline, starting, unsent)

    def _answer(self, sent: _Sent) -> list[CommandResult]:
        with self._broken_on_error(sent.commands):
            if sent.starting:
                self._ready(sent.process, sent.commands, sent.deadline)
            if sent.unsent is not None:
                raise sent.unsent
            line = sent.process.receive(sent.deadline)
            return self._parse(line, sent.request_id, sent.commands, sent.stop_on_error)

    @contextlib.contextmanager
    def _broken_on_error(self, commands: Sequence[Command]) -> Iterator[None]:
        """A TransportError breaks the conversation (or it never began): this process is not used again."""
        try:
            yield
        except TransportError as exc:
            broken, self._process = self._process, None
            if broken is not None:
                broken.kill()
            raise TransportError(psjson.mask_text(str(exc), commands)) from None

    def _start(self) -> _Process:
        if not RUNNER.is_file():
            raise TransportError(f"{self.name}: {RUNNER} is missing: reinstall reconciler")
        argv = [*self.argv, *RUNNER_ARGS, str(RUNNER)]
        env = {**os.environ, MODULES_ENV: json.dumps(list(self.modules))}
        return _Process.start(argv, env, self.name, self.timeout)

    def _ready(self, process: _Process, commands: Sequence[Command], deadline: float) -> None:
        """The runner's first line: it imported the modules (else TransportError saying why)."""
        line = process.receive(deadline, starting=True)
        ready = _json_line(line, self.name, commands)
        if not isinstance(ready, Mapping) or "ready" not in ready:
            raise TransportError(f"{self.name}: the runner did not start with a ready line; got "
                                 f"{_snippet(line, commands)}")
        if ready.get("ready") is not True:
            error = psjson.mask_text(str(ready.get("error") or "no reason given"), commands)
            raise TransportError(f"{self.name}: PowerShell could not import the modules "
                                 f"{list(self.modules)}: {error}")

    def _parse(self, line: bytes, request_id: int, commands: Sequence[Command],
               stop_on_error: bool) -> list[CommandResult]:
        response = _json_line(line, self.name, commands)
        if not isinstance(response, Mapping) or response.get("id") != request_id:
            got = response.get("id") if isinstance(response, Mapping) else type(response).__name__
            raise TransportError(f"{self.name}: answered {got!r} to request {request_id}: the runner is out of "
                                 "step with this transport, so no result can be trusted")
        if "error" in response and "results" not in response:
            raise TransportError(f"{self.name}: the runner could not run request {request_id}: "
                                 f"{psjson.mask_text(str(response['error']), commands)}")
        raw = response.get("results")
        if not isinstance(raw, list):
            raise TransportError(f"{self.name}: response {request_id} has no list of results")
        if len(raw) > len(commands) or (len(raw) < len(commands) and not stop_on_error):
            raise TransportError(f"{self.name}: {len(raw)} results for {len(commands)} commands in request "
                                 f"{request_id}")
        results = [_result(command, item, self.name) for command, item in zip(commands, raw, strict=False)]
        if len(results) < len(commands) and (not results or results[-1].ok):
            raise TransportError(f"{self.name}: request {request_id} stopped after {len(results)} of "
                                 f"{len(commands)} commands without a failure")
        return results


@dataclass(frozen=True)
class _Sent:
    """A request written to a process: `result` reads its answer (and first the ready line of a process it
    started)."""

    transport: PwshTransport
    process: _Process
    request_id: int
    commands: tuple[Command, ...]
    stop_on_error: bool
    deadline: float
    starting: bool
    unsent: TransportError | None

    def result(self) -> list[CommandResult]:
        return self.transport._answer(self)


@dataclass(frozen=True)
class _Answered:
    """A round trip answered when it was begun (a batch with a refused command)."""

    results: list[CommandResult]

    def result(self) -> list[CommandResult]:
        return self.results


# --- one process ------------------------------------------------------------------------------------


class _Process:
    """A running PowerShell and the threads draining its output (so it can never block on a full pipe).

    Standard output is read line by line into a queue (None at end of file) so reads can time out on
    every platform; standard error keeps its last lines for error messages.
    """

    def __init__(self, popen: subprocess.Popen[bytes], name: str, timeout: float) -> None:
        self.popen = popen
        self.name = name
        self.timeout = timeout
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._readers = [
            threading.Thread(target=self._pump_stdout, name=f"{name} stdout", daemon=True),
            threading.Thread(target=self._pump_stderr, name=f"{name} stderr", daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], name: str, timeout: float) -> _Process:
        try:
            popen = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
            )
        except FileNotFoundError:
            raise TransportError(
                f"{name}: cannot start PowerShell: {argv[0]!r} was not found. Install PowerShell 7 (pwsh) "
                "or set connection.executable to powershell.exe or a full path") from None
        except OSError as exc:
            raise TransportError(f"{name}: cannot start PowerShell ({argv[0]!r}): {exc.strerror}") from None
        return cls(popen, name, timeout)

    def _pump_stdout(self) -> None:
        assert self.popen.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            for line in iter(self.popen.stdout.readline, b""):
                self.lines.put(line)
        self.lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.popen.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            for line in iter(self.popen.stderr.readline, b""):
                self.stderr.append(line.decode("utf-8", errors="replace").rstrip("\r\n"))

    def send(self, data: bytes, deadline: float) -> None:
        """Write one request, in a helper thread so a PowerShell that stopped reading cannot hang us."""
        failure: list[OSError] = []

        def write() -> None:
            assert self.popen.stdin is not None
            try:
                self.popen.stdin.write(data)
                self.popen.stdin.flush()
            except OSError as exc:
                failure.append(exc)

        writer = threading.Thread(target=write, name=f"{self.name} stdin", daemon=True)
        writer.start()
        writer.join(max(0.0, deadline - time.monotonic()))
        if writer.is_alive():
            raise self.timed_out()
        if failure:
            raise self.ended("while a request was being sent")

    def receive(self, deadline: float, *, starting: bool = False) -> bytes:
        """The next line of standard output; TransportError at end of file or at the deadline."""
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise self.timed_out(starting=starting) from None
        if line is None:
            raise self.ended("before it started" if starting else "before it answered")
        return line

    def timed_out(self, *, starting: bool = False) -> TransportError:
        seconds = f"{self.timeout:g}s"
        self.kill()
        if starting:
            return TransportError(f"{self.name}: PowerShell did not start within {seconds} (importing modules?)"
                                  f"{self._stderr_text()}")
        return TransportError(f"{self.name}: the batch timed out after {seconds}; the batch may have partly run: "
                              f"re-plan before retrying{self._stderr_text()}")

    def ended(self, when: str) -> TransportError:
        """PowerShell exited, or closed its output, mid-conversation: say so with its last words."""
        try:
            code: int | None = self.popen.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        self.kill()
        status = f"exited with code {code}" if code is not None else "closed its output"
        return TransportError(f"{self.name}: PowerShell {status} {when}{self._stderr_text()}")

    def _stderr_text(self) -> str:
        self._readers[1].join(timeout=1.0)  # let the last lines arrive
        lines = list(self.stderr)
        return ("; last lines of its standard error:\n  " + "\n  ".join(lines)) if lines else ""

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(OSError):
                self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5.0)
        self._close_pipes()

    def shutdown(self, grace: float) -> None:
        """Close standard input (the runner's signal to exit), wait `grace` seconds, then kill."""
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        self.kill()

    def _close_pipes(self) -> None:
        """Close our ends of the pipes; an output pipe only once its reader is done with it.

        (Closing a pipe another thread is reading could block; a reader still running after the
        process died means a grandchild holds the pipe, and the daemon thread is left to it.)
        """
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        for reader, pipe in zip(self._readers, (self.popen.stdout, self.popen.stderr), strict=True):
            reader.join(timeout=1.0)
            if pipe is not None and not reader.is_alive():
                with contextlib.suppress(OSError):
                    pipe.close()


# --- helpers ----------------------------------------------------------------------------------------


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_text_list(value: Any, *, nonempty: bool = False) -> bool:
    return isinstance(value, list) and (bool(value) or not nonempty) and all(_is_text(v) for v in value)


def _snippet(line: bytes, commands: Sequence[Command]) -> str:
    text = line.decode("utf-8", errors="replace").strip()
    text = psjson.mask_text(text, commands)
    return repr(text[:200] + ("…" if len(text) > 200 else ""))


def _json_line(line: bytes, name: str, commands: Sequence[Command]) -> Any:
    try:
        return json.loads(line.decode("utf-8"))
    except ValueError:
        raise TransportError(f"{name}: PowerShell wrote something that is not a JSON line to its output: "
                             f"{_snippet(line, commands)}") from None


def _result(command: Command, item: Any, name: str) -> CommandResult:
    """One command's result from the runner's `{"ok": ..., "output"|"error": ...}`."""
    if not isinstance(item, Mapping) or not isinstance(item.get("ok"), bool):
        raise TransportError(f"{name}: a result for {command.cmdlet} is not of the form {{\"ok\": true|false, ...}}")
    if not item["ok"]:
        error = item.get("error")
        text = str(error) if error else f"{command.cmdlet} : failed without an error message"
        return CommandResult(command, ok=False, error=psjson.mask_text(text, [command]))
    try:
        output = psjson.output_objects(item.get("output"), scalar=command.scalar)
    except OutputShapeError as exc:
        return CommandResult(command, ok=False, error=f"{command.cmdlet} : returned unusable output: {exc}")
    return CommandResult(command, ok=True, output=output)
