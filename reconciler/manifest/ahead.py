"""The manifest's YAML read in a second process while this one imports the command's modules.

A first plan of 10,000 resources spends ~0.15 s in the YAML parser and ~0.1 s importing the providers, httpx and
the rest before it needs the parsed document: `start` forks a process that reads and parses the file (as
`positions.parse` does, with the loader's `notable`) while this one goes on, and `take` collects its document when
the loader gets there (benchmarks/README.md, "Sixth round"). Both run at once on a machine with two cores.

What comes back is only ever a document the parser read without a problem, for exactly the bytes the loader read
(their sha256): anything else (a YAML mistake, a file that changed, a child that failed or was killed) and the
loader parses the file itself, so every message comes from the one path that reports. Data, lines and the notable
list cross the pipe with `marshal` (plain dicts, lists, tuples, text, numbers, booleans and None: all a YAML
document builds here).

Only a process that has no other thread forks (the console script at start-up, `reconciler.cli.run`), and only
where fork exists (not on Windows, which parses in-process as before).
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import select
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler.manifest.positions import ContainerLines, Document, parse
from reconciler.manifest.text import notable


@dataclass(frozen=True)
class _Child:
    pid: int
    fd: int
    while_waiting: Callable[[], None] | None


_STARTED: dict[str, _Child] = {}
"""By the manifest's absolute path: the process reading it."""


def start(path: Path, while_waiting: Callable[[], None] | None = None) -> None:
    """Fork a process that parses `path`; nothing where fork does not exist, in a process that runs another thread
    (a forked child gets only this one: a lock another held would stay held), or when one is already under way.

    `while_waiting` is work of this process's own that `take` does first when the document is not ready yet: what
    the command does later anyway and needs nothing of the manifest (the time would otherwise be spent waiting)."""
    fork = getattr(os, "fork", None)
    where = os.path.abspath(path)
    if fork is None or threading.active_count() > 1 or where in _STARTED:
        return
    try:
        read_end, write_end = os.pipe()
    except OSError:
        return
    try:
        pid = fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return
    if pid == 0:  # the child: parse, answer, end without running anything of the parent's (no atexit, no flush)
        code = 1
        try:
            os.close(read_end)
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it quietly, with the parent
            _answer(Path(where), write_end)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _STARTED[where] = _Child(pid, read_end, while_waiting)


def _answer(path: Path, fd: int) -> None:
    payload = b""
    try:
        raw = path.read_bytes()
        doc = parse(raw.decode("utf-8-sig"), notable)
        lines = doc.lines
        if doc.data is not None and not doc.problems and doc.notable is not None and isinstance(lines, ContainerLines):
            payload = marshal.dumps((hashlib.sha256(raw).digest(), doc.data, lines.root_line, lines.by_collection,
                                     doc.notable))
    except (OSError, ValueError, RecursionError):  # unreadable, not UTF-8, too deep: the loader says so
        payload = b""
    with os.fdopen(fd, "wb") as out, contextlib.suppress(OSError):  # the parent gone: nobody to tell
        out.write(payload)


def take(path: Path, raw: bytes) -> Document | None:
    """The document the process started for `path` read, if it read exactly `raw` without a problem; else None."""
    child = _STARTED.pop(os.path.abspath(path), None)
    if child is None:
        return None
    if child.while_waiting is not None and not select.select([child.fd], [], [], 0)[0]:
        with contextlib.suppress(Exception):  # work done early only: what fails here fails again where it belongs
            child.while_waiting()
    try:
        with os.fdopen(child.fd, "rb") as answer:
            payload = answer.read()
    except OSError:
        payload = b""
    _reap(child.pid)
    if not payload:
        return None
    try:
        digest, data, root_line, by_collection, picked = marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return None
    if digest != hashlib.sha256(raw).digest():
        return None  # the file changed in between: the loader reads what it read
    return Document(data, ContainerLines(data, root_line, by_collection), (), frozenset(), picked)


def discard() -> None:
    """End every process started and not taken (a command that stopped before loading, or never loaded)."""
    while _STARTED:
        _, child = _STARTED.popitem()
        with contextlib.suppress(OSError):
            os.close(child.fd)
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGKILL)
        _reap(child.pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)
