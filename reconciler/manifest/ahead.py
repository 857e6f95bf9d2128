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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.manifest.positions import Document

MAX_BYTES = 8 * 1024 * 1024
"""A larger manifest is parsed in-process: handing its document over costs more than the imports it overlaps.
Measured at 200 x 50 (2 MB) a first plan is 0.05-0.09 s faster read ahead; at 1,000 x 50 (10 MB) about the same
either way (benchmarks/README.md, "Sixth round")."""


@dataclass(frozen=True)
class _Child:
    pid: int
    fd: int
    while_waiting: Callable[[], None] | None


_STARTED: dict[str, _Child] = {}
"""By the manifest's absolute path: the process reading it."""


def start(path: Path, while_waiting: Callable[[], None] | None = None, *, state_dir: Path | None = None) -> None:
    """Fork a process that parses `path`; nothing where fork does not exist, in a process that runs another thread
    (a forked child gets only this one: a lock another held would stay held), or when one is already under way.

    `while_waiting` is work of this process's own that `take` does first when the document is not ready yet: what
    the command does later anyway and needs nothing of the manifest (the time would otherwise be spent waiting).

    The child decides whether the file is worth reading (`_worth_reading`: the cache entry's path, the file's size
    and first bytes): the fork comes as early as the command is known, and that work and what reading imports (the
    YAML reader) are the child's, done on the other core."""
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
            _answer(Path(where), state_dir, write_end)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _STARTED[where] = _Child(pid, read_end, while_waiting)


def _worth_reading(path: Path, state_dir: Path | None) -> tuple[bytes, bytes] | None:
    """The manifest's bytes and their sha256, or None when the command will not parse them: it is a saved plan (JSON,
    for apply) or larger than MAX_BYTES, or the cache holds the manifest as it is (an entry for these bytes in
    `state_dir`, given for a command that uses the cache; an edited manifest's entry is for other bytes). Raises
    OSError for a file it cannot read."""
    with path.open("rb") as file:
        if os.fstat(file.fileno()).st_size > MAX_BYTES:
            return None
        raw = file.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES or raw.lstrip().startswith(b"{"):
        return None
    digest = hashlib.sha256(raw)
    if state_dir is not None:
        from reconciler.manifest.entries import entry_path

        if entry_path(path, digest.hexdigest(), state_dir).exists():
            return None
    return raw, digest.digest()


def _answer(path: Path, state_dir: Path | None, fd: int) -> None:
    from reconciler.manifest.positions import ContainerLines, parse
    from reconciler.manifest.text import notable

    payload = b""
    try:
        worth = _worth_reading(path, state_dir)
        doc = None if worth is None else parse(worth[0].decode("utf-8-sig"), notable)
        if worth is not None and doc is not None and doc.data is not None and not doc.problems and \
                doc.notable is not None and isinstance(doc.lines, ContainerLines):
            payload = marshal.dumps((worth[1], doc.data, doc.lines.root_line, doc.lines.by_collection, doc.notable))
    except (OSError, ValueError, RecursionError):  # unreadable, not UTF-8, too deep: the loader says so
        payload = b""
    with os.fdopen(fd, "wb") as out, contextlib.suppress(OSError):  # the parent gone: nobody to tell
        out.write(payload)


def take(path: Path, sha256: bytes, while_waiting: Callable[[], None] | None = None) -> Document | None:
    """The document the process started for `path` read, if it read exactly the bytes the loader read (their `sha256`
    digest) without a problem; else None.

    When it is not ready yet, the work given to `start` and then `while_waiting` (the loader's) is done first."""
    child = _STARTED.pop(os.path.abspath(path), None)
    if child is None:
        return None
    for work in (child.while_waiting, while_waiting):
        if work is not None and not select.select([child.fd], [], [], 0)[0]:
            with contextlib.suppress(Exception):  # done early only: what fails here fails again where it belongs
                work()
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
    if digest != sha256:
        return None  # the file changed in between: the loader reads what it read
    from reconciler.manifest.positions import ContainerLines, Document

    return Document(data, ContainerLines(data, root_line, by_collection), (), frozenset(), picked)


def drop(path: Path) -> None:
    """End the process started for `path`, if one was and it was not taken: the manifest came from the cache (a `run`
    loop would otherwise keep it, ended, until the loop ends)."""
    child = _STARTED.pop(os.path.abspath(path), None)
    if child is not None:
        _end(child)


def discard() -> None:
    """End every process started and not taken (a command that stopped before loading, or never loaded)."""
    while _STARTED:
        _end(_STARTED.popitem()[1])


def _end(child: _Child) -> None:
    with contextlib.suppress(OSError):
        os.close(child.fd)
    with contextlib.suppress(OSError):
        os.kill(child.pid, signal.SIGKILL)
    _reap(child.pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)
