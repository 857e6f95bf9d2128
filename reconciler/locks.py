"""One lock per real system, so two applies never change the same system at once.

A lock is keyed by the system a target reaches, not by the target's name or by where the command runs:
`lock_identity` normalizes a target's connection to "transport|where" (host names and tenants
case-folded and trimmed, a trailing dot dropped, URLs reduced to scheme://host[:port]/path), so
`host: atl-cs-001` and `host: ATL-CS-001` are one lock, and two targets of one manifest that reach the
same server are one lock, taken once (never a wait on oneself).

    lab      lab|<resolved state file>|<host>   (the emulated server lives in that file)
    graph    graph|<graphUrl>|<tenantId>
    winrm    winrm|<server>                     (whatever port, path or endpoint is used)
    pwsh     pwsh|<this computer's name>        (the modules run on the machine reconcile runs on)
    snapshot no lock: a captured snapshot is read, never changed
    other    <transport>|<the connection block, strings case-folded>

The locks live in one machine-wide directory (RECONCILE_LOCK_DIR, else /var/tmp/reconciler-locks;
on Windows %ProgramData%/reconciler/locks), so every process on the machine sees them whatever its
working directory or --state-dir. The directory is created like /tmp (mode 1777: anyone may create a
lock, nobody may delete another's) and lock files are 0666, so runs as different users exclude each
other too.

A lock is an OS file lock on `<transport>-<digest>.lock`, taken through the `filelock` package (flock
on POSIX, LockFileEx through msvcrt on Windows): the operating system releases it when its holder exits,
however it exits, so a crashed run never leaves a stale lock behind. Who holds it (pid, host, command
line with any password masked, since when) is written to a separate `<transport>-<digest>.holder` next
to it (Windows does not let another process read a locked file), for the message a waiting run prints;
the holder clears it when it lets go.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shlex
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from reconciler.errors import LockError
from reconciler.lab.state import DEFAULT_STATE_PATH
from reconciler.model import TargetSpec
from reconciler.plan import canonical_json
from reconciler.store.base import mask_secrets
from reconciler.transports.graph import DEFAULT_GRAPH_URL

LOCK_DIR_ENV = "RECONCILE_LOCK_DIR"
DEFAULT_LOCK_DIR = Path("/var/tmp/reconciler-locks")
DIRECTORY_MODE = 0o1777
FILE_MODE = 0o666
POLL = 0.1

Notify = Callable[[str], None]


def default_lock_dir() -> Path:
    """RECONCILE_LOCK_DIR if set (and not blank), else the machine-wide DEFAULT_LOCK_DIR."""
    override = os.environ.get(LOCK_DIR_ENV, "").strip()
    if override:
        return Path(override)
    if os.name == "nt":  # no /var/tmp: the machine-wide application data folder every user can write
        return Path(os.environ.get("PROGRAMDATA") or r"C:\ProgramData") / "reconciler" / "locks"
    return DEFAULT_LOCK_DIR


# -- the key -------------------------------------------------------------------------------------


def _fold(value: Any) -> str:
    return str(value).strip().casefold()


def _host(value: Any) -> str:
    return _fold(value).rstrip(".")


def _url(value: Any) -> str:
    """scheme://host[:port]/path, case-folded where DNS and schemes are, default ports and slashes dropped."""
    text = str(value).strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return _fold(text)
    scheme = parts.scheme.casefold()
    host = (parts.hostname or "").rstrip(".")
    if port is not None and (scheme, port) not in {("https", 443), ("http", 80)}:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def _folded(value: Any) -> Any:
    if isinstance(value, str):
        return _fold(value)
    if isinstance(value, Mapping):
        return {str(k): _folded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_folded(v) for v in value]
    return value


def lock_identity(target: TargetSpec) -> str | None:
    """The normalized identity of the system `target` reaches; None when nothing needs a lock (snapshot)."""
    connection = target.connection
    transport = _fold(connection.get("transport", ""))
    if transport == "snapshot":
        return None
    if transport == "lab":
        # The lab transport resolves its state file against the working directory, so the same
        # spelling in two directories is two emulated estates, and two spellings of one file are one.
        # normcase: on Windows C:\Lab and c:\lab are one file (a no-op on POSIX).
        state = connection.get("state", str(DEFAULT_STATE_PATH))
        return f"lab|{os.path.normcase(os.path.realpath(Path.cwd() / str(state)))}|{_host(connection.get('host', ''))}"
    if transport == "graph":
        return f"graph|{_url(connection.get('graphUrl', DEFAULT_GRAPH_URL))}|{_fold(connection.get('tenantId', ''))}"
    if transport == "winrm":
        return f"winrm|{_host(connection.get('server', ''))}"
    if transport == "pwsh":
        return f"pwsh|{_host(socket.gethostname())}"
    rest = {k: v for k, v in connection.items() if k != "transport"}
    return f"{transport}|{canonical_json(_folded(rest))}"


@dataclass(frozen=True)
class LockKey:
    """One system to lock, and the manifest's names for it (for messages)."""

    identity: str
    targets: tuple[str, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.identity.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def stem(self) -> str:
        transport = re.sub(r"[^a-z0-9_]+", "_", self.identity.partition("|")[0]) or "target"
        return f"{transport}-{self.digest[:24]}"

    @property
    def advisory_key(self) -> int:
        """A stable signed 64-bit number for PostgreSQL's advisory locks (the first 8 bytes of the digest)."""
        return int.from_bytes(bytes.fromhex(self.digest[:16]), "big", signed=True)

    @property
    def label(self) -> str:
        names = " and ".join(repr(t) for t in self.targets)
        return f"target {names}" if len(self.targets) == 1 else f"targets {names} (one system)"


def lock_keys(targets: Iterable[TargetSpec]) -> list[LockKey]:
    """One key per distinct system, in a fixed order (by digest) so two runs never wait on each other in a cycle."""
    names: dict[str, list[str]] = {}
    for target in targets:
        identity = lock_identity(target)
        if identity is not None:
            names.setdefault(identity, []).append(target.name)
    keys = [LockKey(identity, tuple(sorted(found))) for identity, found in names.items()]
    return sorted(keys, key=lambda k: k.digest)


def lock_path(lock_dir: Path, target: TargetSpec) -> Path | None:
    """The lock file of the system `target` reaches (None: no lock needed)."""
    identity = lock_identity(target)
    return None if identity is None else lock_dir / f"{LockKey(identity, (target.name,)).stem}.lock"


# -- who holds a lock -----------------------------------------------------------------------------


def holder_details(*, target: str, identity: str) -> dict[str, Any]:
    """What a holder tells a waiting run about itself. The command line is masked (a store URL may carry a password)."""
    command = " ".join(shlex.quote(mask_secrets(arg)) for arg in sys.argv)
    if len(command) > 400:
        command = command[:399] + "…"
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "target": target, "identity": identity}


def describe_holder(info: Mapping[str, Any] | None) -> str:
    if not info or "pid" not in info:
        return "holder unknown: it may have just finished"
    text = f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
    if info.get("command"):
        text += f": {info['command']}"
    return text


# -- the file lock --------------------------------------------------------------------------------


def _ensure_directory(directory: Path) -> None:
    """Create the shared directory like /tmp; refuse a symlink or a file in its place."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        info = directory.lstat()
    except OSError as exc:
        raise LockError(f"cannot create the lock directory {directory}: {exc.strerror or exc} "
                        f"(set {LOCK_DIR_ENV} to a directory every run on this machine can write)") from None
    if not stat.S_ISDIR(info.st_mode):
        raise LockError(f"the lock directory {directory} is not a directory (a symlink or a file is in its place); "
                        f"remove it or set {LOCK_DIR_ENV}")
    if os.name != "nt" and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != DIRECTORY_MODE:
        with contextlib.suppress(OSError):  # the umask took bits away: put them back, like /tmp
            os.chmod(directory, DIRECTORY_MODE)


def _open_shared(path: Path) -> int:
    """Open (or create) a lock or holder file that every user may lock and write; never through a symlink.

    An existing file is opened without O_CREAT: Linux refuses O_CREAT on another user's file in a
    sticky world-writable directory (fs.protected_regular), though its mode allows the open.
    """
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(5):
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
            except FileExistsError:
                continue  # another run created it in between: open theirs
            if hasattr(os, "fchmod"):  # POSIX (Windows has no mode bits to widen)
                with contextlib.suppress(OSError):
                    os.fchmod(fd, FILE_MODE)  # past the umask
            return fd
        except OSError as exc:
            hint = " (a symlink in its place?)" if exc.errno == errno.ELOOP else ""
            raise LockError(f"cannot open the lock file {path}: {exc.strerror or exc}{hint}") from None
        return fd
    raise LockError(f"cannot open the lock file {path}: it keeps appearing and disappearing")


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode("utf-8", "surrogatepass"))


@contextlib.contextmanager
def hold(lock_dir: Path, key: LockKey, *, timeout: float = 30.0, deadline: float | None = None,
         poll: float = POLL, on_wait: Notify | None = None) -> Iterator[None]:
    """Hold `key`'s file lock for the block: wait until `deadline` (monotonic; else now + timeout),
    then fail naming the holder. `on_wait` is told once, when the lock is found busy."""
    from filelock import FileLock, Timeout  # imported by what locks (apply), not by every command

    _ensure_directory(lock_dir)
    path = lock_dir / f"{key.stem}.lock"
    holder_path = lock_dir / f"{key.stem}.holder"
    os.close(_open_shared(path))  # created shared (mode 0666 past the umask), and never a symlink
    lock = FileLock(str(path), mode=FILE_MODE, thread_local=False)
    try:
        start = time.monotonic()
        end = start + timeout if deadline is None else deadline
        told = False
        while True:
            try:
                lock.acquire(timeout=0)
                break
            except Timeout:  # before OSError: Timeout is a TimeoutError
                now = time.monotonic()
                if now >= end:
                    raise LockError(f"{key.label} is locked by another run "
                                    f"({describe_holder(_read_holder(holder_path))}); "
                                    f"waited {now - start:.1f}s") from None
                if not told and on_wait is not None:
                    on_wait(f"waiting for the lock of {key.label}, held by "
                            f"{describe_holder(_read_holder(holder_path))}")
                    told = True
                time.sleep(poll)
            except OSError as exc:
                hint = " (a symlink in its place?)" if exc.errno == errno.ELOOP else ""
                raise LockError(f"cannot lock {path}: {exc.strerror or exc}{hint}") from None
        with contextlib.suppress(OSError):  # fresh while held: a /var/tmp cleaner ages files by their times
            os.utime(path)
        holder = _open_shared(holder_path)
        try:
            _write(holder, json.dumps(holder_details(target=", ".join(key.targets), identity=key.identity)))
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.ftruncate(holder, 0)  # before the flock goes: a waiter never reads a finished holder
        finally:
            os.close(holder)
    finally:
        lock.release()  # a no-op when it was never acquired


@contextlib.contextmanager
def target_lock(lock_dir: Path, target: TargetSpec, *, timeout: float = 30.0, poll: float = POLL,
                on_wait: Notify | None = None) -> Iterator[None]:
    """Hold the lock of the system one target reaches (nothing for a snapshot target)."""
    keys = lock_keys([target])
    if not keys:
        yield
        return
    with hold(lock_dir, keys[0], timeout=timeout, poll=poll, on_wait=on_wait):
        yield
