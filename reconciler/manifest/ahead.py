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

A command that loads its manifest once (plan, apply, drift) also has that process download the plan's metadata
documents (`downloads`, reconciler.metadata.Documents): after its answer it waits for one list of URLs and answers
with the documents, downloaded and read on the other core while this one reads the targets (the downloads' client,
threads and parsing cost this process ~0.07 s of a 0.6 s plan, benchmarks/README.md "Ninth round"). Messages both
ways are framed (`_send`, `_receive`); a process that fails or is gone gives no answer, and the documents are then
downloaded here as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

try:
    import fcntl
except ImportError:  # Windows (which does not read ahead)
    fcntl = None  # type: ignore[assignment]

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
    """Its answers."""
    while_waiting: Callable[[], None] | None
    requests: int | None = None
    """Where this process asks it to download (None: it reads the manifest only)."""


_STARTED: dict[str, _Child] = {}
"""By the manifest's absolute path: the process reading it."""
_HELPER: list[tuple[_Child, bool]] = []
"""The process that read the manifest (at most one), kept to download documents; whether its answer was read."""


def start(path: Path, while_waiting: Callable[[], None] | None = None, *, state_dir: Path | None = None,
          downloads: bool = False) -> None:
    """Fork a process that parses `path`; nothing where fork does not exist, in a process that runs another thread
    (a forked child gets only this one: a lock another held would stay held), or when one is already under way.
    With `downloads` it then stays to download documents once (`downloads()`).

    `while_waiting` is work of this process's own that `take` does first when the document is not ready yet: what
    the command does later anyway and needs nothing of the manifest (the time would otherwise be spent waiting).

    The child decides whether the file is worth reading (`_worth_reading`: the cache entry's path, the file's size
    and first bytes): the fork comes as early as the command is known, and that work and what reading imports (the
    YAML reader) are the child's, done on the other core."""
    fork = getattr(os, "fork", None)
    where = os.path.abspath(path)
    if fork is None or threading.active_count() > 1 or where in _STARTED:
        return
    pipes: list[int] = []
    try:
        pipes.extend(os.pipe())
        _widen(pipes[1])
        if downloads:
            pipes.extend(os.pipe())
        pid = fork()
    except OSError:
        for fd in pipes:
            os.close(fd)
        return
    read_end, write_end, *asks = pipes
    if pid == 0:  # the child: parse, answer, end without running anything of the parent's (no atexit, no flush)
        code = 1
        try:
            os.close(read_end)
            if asks:
                os.close(asks[1])
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it quietly, with the parent
            _serve(Path(where), state_dir, write_end, asks[0] if asks else None)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    if asks:
        os.close(asks[0])
    _STARTED[where] = _Child(pid, read_end, while_waiting, asks[1] if asks else None)


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


def _serve(path: Path, state_dir: Path | None, fd: int, requests: int | None) -> None:
    """The child's work: answer with the manifest's document; then, when asked, download once."""
    with contextlib.suppress(OSError):  # the parent gone: nobody to tell
        _send(fd, _answer(path, state_dir))
        if requests is None:
            return
        from reconciler.metadata import answer_downloads, prepare_downloads

        with contextlib.suppress(Exception):
            prepare_downloads()  # while the parent loads: ready when it asks
        request = _receive(requests)
        if request is not None:
            _send(fd, answer_downloads(request))


def _answer(path: Path, state_dir: Path | None) -> bytes:
    from reconciler.manifest.positions import ContainerLines, parse
    from reconciler.manifest.text import notable

    try:
        worth = _worth_reading(path, state_dir)
        doc = None if worth is None else parse(worth[0].decode("utf-8-sig"), notable)
        if worth is not None and doc is not None and doc.data is not None and not doc.problems and \
                doc.notable is not None and isinstance(doc.lines, ContainerLines):
            return marshal.dumps((worth[1], doc.data, doc.lines.root_line, doc.lines.by_collection, doc.notable))
    except (OSError, ValueError, RecursionError):  # unreadable, not UTF-8, too deep: the loader says so
        pass
    return b""


_LENGTH = 8
"""A message's length leads it: 8 bytes, big-endian."""
_PIPE_BYTES = 1 << 20
"""What the answers' pipe holds (Linux; an unprivileged process may ask for up to 1 MiB): a 2 MB manifest's answer
then crosses in two parts, where the default 64 KiB pipe takes some thirty turns of the two processes (the hand-over
0.027 -> 0.009 s, benchmarks/README.md "Ninth round")."""


def _widen(fd: int) -> None:
    """Let the pipe hold `_PIPE_BYTES` where the system allows it (nothing elsewhere, or when refused)."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if setsize is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setsize, _PIPE_BYTES)


def _send(fd: int, message: bytes) -> None:
    view = memoryview(len(message).to_bytes(_LENGTH, "big") + message)
    while view:
        view = view[os.write(fd, view):]


def _receive(fd: int) -> bytes | None:
    """One message, or None when the other side ended first, sent something short, or cannot be read."""
    try:
        head = _exactly(fd, _LENGTH)
        return None if head is None else _exactly(fd, int.from_bytes(head, "big"))
    except OSError:
        return None


def _exactly(fd: int, size: int) -> bytes | None:
    chunks = []
    while size > 0:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


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
    payload = _read_answer(child)
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


def _read_answer(child: _Child) -> bytes | None:
    """The child's answer; the child kept to download when it was started to (`_HELPER`), else ended."""
    payload = _receive(child.fd)
    if child.requests is not None and payload is not None:
        _HELPER[:] = [(child, True)]
    else:
        _end(child)
    return payload


def drop(path: Path) -> None:
    """The manifest came from the cache: the process started for `path`, if one was and it was not taken, has nothing
    to give. It is kept to download when it was started to (its answer read when it is asked), else ended (a `run`
    loop would otherwise keep it, ended, until the loop ends)."""
    child = _STARTED.pop(os.path.abspath(path), None)
    if child is None:
        return
    if child.requests is not None:
        _HELPER[:] = [(child, False)]
    else:
        _end(child)


def downloads() -> Downloader | None:
    """The process that read the manifest, to download documents in once (reconciler.metadata.Documents); None when
    there is none, or when the answer it was not asked for (the manifest came from the cache) is not there yet."""
    if not _HELPER:
        return None
    child, answered = _HELPER.pop()
    if not answered and (not select.select([child.fd], [], [], 0)[0] or _receive(child.fd) is None):
        _end(child)
        return None
    return Downloader(child)


class Downloader:
    """Documents downloaded by the process that read the manifest: one request (`send`), one answer (`receive`); the
    process ends with its answer, or with `close`."""

    def __init__(self, child: _Child) -> None:
        self._child: _Child | None = child

    def send(self, request: bytes) -> bool:
        """Ask; False when the process cannot be asked (it is then ended)."""
        child = self._child
        if child is None or child.requests is None:
            return False
        try:
            _send(child.requests, request)
        except OSError:
            self.close()
            return False
        os.close(child.requests)  # one request: it answers, and ends
        self._child = dataclasses.replace(child, requests=None)
        return True

    def receive(self, timeout: float) -> bytes | None:
        """Its answer, or None when it gives none within `timeout` seconds (it is then ended); ends it."""
        child = self._child
        if child is None:
            return None
        answer = None
        try:
            if select.select([child.fd], [], [], timeout)[0]:
                answer = _receive(child.fd)
        except OSError:
            answer = None
        self.close()
        return answer

    def close(self) -> None:
        if self._child is not None:
            _end(self._child)
            self._child = None


def discard() -> None:
    """End every process started and not taken (a command that stopped before loading, or never loaded), and the one
    kept to download if it was not asked."""
    while _STARTED:
        _end(_STARTED.popitem()[1])
    while _HELPER:
        _end(_HELPER.pop()[0])


def _end(child: _Child) -> None:
    for fd in (child.fd, child.requests):
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    with contextlib.suppress(OSError):
        os.kill(child.pid, signal.SIGKILL)
    _reap(child.pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)
