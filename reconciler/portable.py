"""What differs on Windows, in one place: file access lists, console stop events, renames over open files, paths.

`reconcile` runs on Linux and on Windows management hosts. This module imports on every platform: the
Windows APIs (advapi32 and kernel32, through ctypes) are loaded only inside the functions that run on
Windows, and those few functions (`_win_*`) are the boundary the tests replace, so every branch above
them is tested on Linux too. The `_win_*` functions themselves have not been run on Windows by this
project's CI (see README, "Windows").
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from reconciler.errors import TransportError


def on_windows() -> bool:
    return os.name == "nt"


# -- paths -----------------------------------------------------------------------------------------


def beside(folder: PurePath, name: str | PurePath) -> PurePath:
    """`name` as written in a manifest in `folder`: an absolute path as it is, a relative one from `folder`.

    The path flavour is `folder`'s, so on Windows a drive letter (C:/certs/a.cer, C:\\certs\\a.cer) or a
    UNC path (\\\\server\\share\\a.cer) is absolute, and a path rooted without a drive (\\certs\\a.cer)
    lands on the folder's drive.
    """
    path = type(folder)(name)
    return path if path.is_absolute() else folder / path


def beside_path(folder: Path, name: str | PurePath) -> Path:
    """`beside` for a concrete folder on this machine."""
    return Path(beside(folder, name))


def is_drive_path(text: str) -> bool:
    """Whether `text` starts with a Windows drive letter and a separator (C:/ or C:\\)."""
    return len(text) >= 3 and text[0].isascii() and text[0].isalpha() and text[1] == ":" and text[2] in "/\\"


# -- renaming over a file someone has open ---------------------------------------------------------

REPLACE_ATTEMPTS = 20
REPLACE_DELAY = 0.05


def replace(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
            attempts: int = REPLACE_ATTEMPTS, delay: float = REPLACE_DELAY) -> None:
    """`os.replace`, retried briefly on Windows while another process has `target` open.

    On Windows a rename over a file fails with PermissionError (sharing violation) while a reader (the
    metrics exporter, a lab reader) has it open; readers hold it for milliseconds, so a second later it
    is free. On POSIX a rename never waits for readers, and any error is final.
    """
    for attempt in range(attempts):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if not on_windows() or attempt == attempts - 1:
                raise
            time.sleep(delay)


# -- an exclusive lock on a file -----------------------------------------------------------------

LOCK_POLL = 0.002


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], *, poll: float = LOCK_POLL) -> Iterator[None]:
    """Hold an exclusive OS lock on `path` (created if missing), waiting for it; released by the OS if the holder dies.

    Where there is flock (POSIX), on a descriptor of its own, so two threads of one process exclude each other as
    two processes do: a few system calls, for locks taken thousands of times a run (the lab's state), where the
    `filelock` package costs about twenty times more. Without flock (Windows), that package's lock (msvcrt),
    polled every `poll` seconds.
    """
    try:
        import fcntl
    except ImportError:
        from filelock import FileLock

        with FileLock(os.fspath(path), thread_local=False, poll_interval=poll):
            yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -- private files -------------------------------------------------------------------------------

SYSTEM_SID = "S-1-5-18"
ADMINISTRATORS_SID = "S-1-5-32-544"
TRUSTED_SIDS = frozenset({SYSTEM_SID, ADMINISTRATORS_SID})
FILE_READ_DATA, FILE_WRITE_DATA, FILE_APPEND_DATA = 0x1, 0x2, 0x4
WRITE_DAC, WRITE_OWNER = 0x40000, 0x80000
GENERIC_ALL, GENERIC_WRITE, GENERIC_READ = 0x10000000, 0x40000000, 0x80000000
READ_OR_CHANGE = (FILE_READ_DATA | FILE_WRITE_DATA | FILE_APPEND_DATA | WRITE_DAC | WRITE_OWNER
                  | GENERIC_ALL | GENERIC_WRITE | GENERIC_READ)
"""Rights that let a principal read the file, change it, or give itself the right to (its access list, owner)."""


@dataclass(frozen=True)
class AccessEntry:
    """One entry of a file's access list that applies to the file itself."""

    sid: str
    name: str
    allowed: bool
    mask: int


@dataclass(frozen=True)
class FileAcl:
    """A file's owner and access list (`entries` None: the file has no access list, so anyone may do anything)."""

    owner_sid: str
    owner_name: str
    entries: tuple[AccessEntry, ...] | None


def others_with_access(acl: FileAcl) -> list[str]:
    """Who, beyond the owner, SYSTEM and Administrators, may read or change the file (names, in ACL order).

    Deny entries are not subtracted: the check is deliberately the strict reading, as `chmod 600` is.
    """
    if acl.entries is None:
        return ["Everyone (the file has no access list)"]
    names: list[str] = []
    for entry in acl.entries:
        if not entry.allowed or not entry.mask & READ_OR_CHANGE:
            continue
        if entry.sid == acl.owner_sid or entry.sid in TRUSTED_SIDS:
            continue
        if entry.name not in names:
            names.append(entry.name)
    return names


def check_private(path: Path, what: str) -> None:
    """Refuse a credential file others may read or change (like ssh does with keys).

    POSIX: no group or other mode bits. Windows (no mode bits): the file's access list may grant access
    to its owner, SYSTEM and Administrators only; the message names everyone else who has access.
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise TransportError(f"{what}: cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(info.st_mode):
        raise TransportError(f"{what}: {path} is not a regular file")
    if on_windows():
        try:
            acl = _win_file_acl(str(path))
        except OSError as exc:
            raise TransportError(f"{what}: cannot read the access list of {path} "
                                 f"({exc.strerror or exc})") from None
        others = others_with_access(acl)
        if others:
            raise TransportError(
                f"{what}: {path} may be read or changed by {', '.join(others)} (only its owner "
                f"{acl.owner_name}, SYSTEM and Administrators may); run "
                f"`icacls \"{path}\" /inheritance:r /grant:r \"{acl.owner_name}:F\" \"SYSTEM:F\" "
                f"\"Administrators:F\"`")
        return
    if info.st_mode & 0o077:
        raise TransportError(f"{what}: {path} is readable or writable by group or others "
                             f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`")


def _win_file_acl(path: str) -> FileAcl:  # pragma: no cover - the Windows boundary, replaced in tests
    """The owner and access list of `path`, through GetNamedSecurityInfoW (advapi32)."""
    if sys.platform != "win32":
        raise OSError("file access lists are read on Windows only")
    import ctypes
    from ctypes import wintypes

    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    se_file_object, owner_information, dacl_information = 1, 0x1, 0x4
    acl_size_information, inherit_only_ace = 2, 0x8
    allowed_ace, denied_ace = 0, 1

    class AclSizeInformation(ctypes.Structure):
        _fields_ = [("AceCount", wintypes.DWORD), ("AclBytesInUse", wintypes.DWORD),
                    ("AclBytesFree", wintypes.DWORD)]

    class AceHeader(ctypes.Structure):
        _fields_ = [("AceType", wintypes.BYTE), ("AceFlags", wintypes.BYTE), ("AceSize", wintypes.WORD)]

    class AccessAce(ctypes.Structure):  # ACCESS_ALLOWED_ACE and ACCESS_DENIED_ACE share this layout
        _fields_ = [("Header", AceHeader), ("Mask", wintypes.DWORD), ("SidStart", wintypes.DWORD)]

    def sid_string(sid: ctypes.c_void_p) -> str:
        text = ctypes.c_wchar_p()
        if not advapi32.ConvertSidToStringSidW(sid, ctypes.byref(text)):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            return str(text.value)
        finally:
            kernel32.LocalFree(text)

    def account(sid: ctypes.c_void_p) -> str:
        name, domain = ctypes.create_unicode_buffer(256), ctypes.create_unicode_buffer(256)
        name_size, domain_size, use = wintypes.DWORD(256), wintypes.DWORD(256), wintypes.DWORD()
        if not advapi32.LookupAccountSidW(None, sid, name, ctypes.byref(name_size), domain,
                                          ctypes.byref(domain_size), ctypes.byref(use)):
            return sid_string(sid)  # a deleted account, or one this machine cannot resolve
        return f"{domain.value}\\{name.value}" if domain.value else str(name.value)

    owner, dacl, descriptor = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
    status = advapi32.GetNamedSecurityInfoW(ctypes.c_wchar_p(path), se_file_object,
                                            owner_information | dacl_information, ctypes.byref(owner), None,
                                            ctypes.byref(dacl), None, ctypes.byref(descriptor))
    if status != 0:
        raise OSError(None, ctypes.FormatError(status), path, status)
    try:
        if not dacl.value:
            return FileAcl(sid_string(owner), account(owner), None)
        size = AclSizeInformation()
        if not advapi32.GetAclInformation(dacl, ctypes.byref(size), ctypes.sizeof(size), acl_size_information):
            raise ctypes.WinError(ctypes.get_last_error())
        entries: list[AccessEntry] = []
        for index in range(size.AceCount):
            pointer = ctypes.c_void_p()
            if not advapi32.GetAce(dacl, index, ctypes.byref(pointer)):
                raise ctypes.WinError(ctypes.get_last_error())
            header = AceHeader.from_address(pointer.value)
            if header.AceFlags & inherit_only_ace or header.AceType not in (allowed_ace, denied_ace):
                continue  # for children only, or an object/callback entry (not used on files)
            ace = AccessAce.from_address(pointer.value)
            sid = ctypes.c_void_p(pointer.value + AccessAce.SidStart.offset)
            entries.append(AccessEntry(sid_string(sid), account(sid), header.AceType == allowed_ace, ace.Mask))
        return FileAcl(sid_string(owner), account(owner), tuple(entries))
    finally:
        kernel32.LocalFree(descriptor)


# -- stopping gracefully -------------------------------------------------------------------------

CTRL_C_EVENT, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT = 0, 1, 2
CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT = 5, 6
CONSOLE_EVENTS = {CTRL_C_EVENT: "CTRL_C_EVENT", CTRL_BREAK_EVENT: "CTRL_BREAK_EVENT",
                  CTRL_CLOSE_EVENT: "CTRL_CLOSE_EVENT", CTRL_LOGOFF_EVENT: "CTRL_LOGOFF_EVENT",
                  CTRL_SHUTDOWN_EVENT: "CTRL_SHUTDOWN_EVENT"}
ENDING_EVENTS = frozenset({CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT})
"""Windows ends the process as soon as the handler returns from these: the handler waits for the cycle instead."""
ENDING_GRACE = 19.0
"""How long a close, logoff or shutdown handler waits for the cycle (Windows allows 5 s for a closed console and
about 20 s at shutdown, then ends the process whatever the handler does)."""

StopCallback = Callable[[str], None]


@contextlib.contextmanager
def console_stop(on_stop: StopCallback, finished: threading.Event, *,
                 grace: float = ENDING_GRACE) -> Iterator[None]:
    """On Windows, turn console control events into `on_stop(<event name>)` for the block; elsewhere nothing.

    Ctrl+C and Ctrl+Break (what a service wrapper or `taskkill` without /F sends to a console program)
    return at once: the loop finishes its cycle and exits. Close, logoff and shutdown keep the handler
    waiting on `finished` (set when the loop is done) for up to `grace` seconds, because Windows ends
    the process when the handler returns. POSIX signals stay the caller's business.
    """
    if not on_windows():
        yield
        return

    def handler(event: int) -> bool:
        on_stop(CONSOLE_EVENTS.get(event, f"console event {event}"))
        if event in ENDING_EVENTS:
            finished.wait(grace)
        return True  # handled: Python's own handler (KeyboardInterrupt) is not called

    remove = _win_console_handler(handler)
    try:
        yield
    finally:
        remove()


def _win_console_handler(handler: Callable[[int], bool]) -> Callable[[], None]:  # pragma: no cover
    """Register `handler` with SetConsoleCtrlHandler (kernel32); returns what unregisters it."""
    if sys.platform != "win32":
        raise OSError("console control handlers exist on Windows only")
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    routine_type = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)
    routine = routine_type(lambda event: bool(handler(int(event))))
    if not kernel32.SetConsoleCtrlHandler(routine, True):
        raise ctypes.WinError(ctypes.get_last_error())

    def remove() -> None:
        kernel32.SetConsoleCtrlHandler(routine, False)

    # Kept for the life of the process: Windows calls it from its own thread, which may still be waiting
    # in it (a close or shutdown) after it is unregistered.
    _KEEP.add(routine)
    return remove


_KEEP: set[Any] = set()


# -- PowerShell --------------------------------------------------------------------------------------

SNAPIN_SUFFIXES = (".powershell.snapin", ".snapin", ".pssnapin")


def names_snapins(modules: Sequence[str]) -> bool:
    """Whether any of `modules` is a Windows PowerShell snap-in by its name (e.g.
    Microsoft.Exchange.Management.PowerShell.SnapIn, Microsoft.Exchange.Management.PowerShell.E2010): snap-ins
    load only in Windows PowerShell 5.1, never in PowerShell 7."""
    for module in modules:
        folded = module.strip().casefold()
        if folded.endswith(SNAPIN_SUFFIXES) or ".powershell.e20" in folded:
            return True
    return False
