"""A cache of validated manifests, so repeated plans and the `run` loop skip loading an unchanged one.

An entry is a JSON file in STATE_DIR/manifest-cache/, one per manifest path, written 0600 and replaced
atomically. It holds a digest of what the load depended on and the DesiredState it produced:

- the key: the manifest's bytes, the --var values, its path and the working directory (relative
  certificate paths and the locations shown in messages depend on both), the tool's version, a stat
  of the tool's own source files and of the installed providers' modules, the providers, kinds and
  transports the registry offers, and the Python version; only its sha256 is stored (--var values are
  not written down);
- every other file the load read (certificate files, whichever kind reads them), with its sha256,
  recorded as the load opens them (open() and os.open() are wrapped while a load runs; only the
  loading thread's opens are noted).

An entry is used only when its key matches and every such file still has its hash; anything else
(another manifest, a changed --var, an edited or replaced certificate, an upgrade) loads afresh and
replaces it. A manifest with problems is never cached: its errors are reported as before.

A command that loads its manifest once and ends (`reconcile plan`, `apply`, `drift` as a process) leaves its
entry to the end (`write_later`, `write_pending`): it is written after the command's output, by a detached
process where fork exists, so the caller has the exit status without waiting for it (~0.04 s of a first plan
of 10,000 resources). The `run` loop and `main` called in-process write each entry as its load ends.

DesiredState holds no secrets by design (a connection names the environment variables that hold them,
certificates are public certificates), so neither does the cache. It is decoded only into the model's
own classes (no pickle), and only from a file this user owns that no one else may write.
"""

from __future__ import annotations

import builtins
import dataclasses
import enum
import hashlib
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import reconciler
from reconciler.manifest import ahead
from reconciler.manifest.collector import collector_paused
from reconciler.manifest.entries import entry_path, others
from reconciler.model import (
    DesiredResource,
    DesiredState,
    Ensure,
    Mode,
    NotifyDestination,
    ResourceKey,
    SourceLocation,
    TargetSpec,
    VerifyCheck,
    desired_resource,
)

if TYPE_CHECKING:
    from reconciler.providers.base import Registry

FORMAT = 2
_CLASSES: dict[str, type[Any]] = {c.__name__: c for c in (
    DesiredState, TargetSpec, DesiredResource, VerifyCheck, NotifyDestination, ResourceKey, SourceLocation, Ensure,
    Mode)}
_TAG = "\0t"  # marks an encoded object; a manifest's text cannot hold a NUL (the loader refuses control characters)
_CODE = (".py", ".pyc", ".pyd", ".so", ".pth")


def load_cached(path: Path, registry: Registry, overrides: Mapping[str, str] | None, state_dir: Path,
                load: Callable[[Path, Registry, Mapping[str, str] | None], DesiredState] | None = None) -> DesiredState:
    """The manifest's DesiredState: from the cache when nothing it depends on changed, else loaded and cached."""
    load = load or _load_manifest
    overrides = dict(overrides or {})
    try:
        raw = path.read_bytes()
    except (OSError, ValueError):
        return load(path, registry, overrides)  # the loader reports it
    content = hashlib.sha256(raw).hexdigest()
    key = _key(path, content, registry, overrides)
    entry = entry_path(path, content, state_dir)
    kept = _KEPT.get(entry)
    if kept is not None and kept.key == key and kept.entry == _entry_stamp(entry) and \
            all(_sha256(f) == h for f, h in kept.files):
        ahead.drop(path)  # a read-ahead of it (reconciler.manifest.ahead) has nothing to give
        return kept.desired
    with collector_paused():
        found = _read(entry, key)
    if found is not None:
        _KEPT[entry] = found
        ahead.drop(path)
        return found.desired
    manifest = os.path.abspath(path)
    with _recording() as read:
        desired = load(path, registry, overrides)
    hashes = _hashes(sorted(f for f in read if f != manifest and _is_input(f)))
    if hashes is None:
        return desired  # a file it read is gone already: nothing to hold the entry to
    if _LATER is not None:
        _LATER.append((entry, key, desired, hashes))
        return desired
    with collector_paused():
        written = _write(entry, key, desired, hashes)
    if written is not None:
        _KEPT[entry] = written
    return desired


_Left = tuple[Path, str, DesiredState, list[list[str]]]
"""An entry left for later: where, its key, the state, and the files its load read with their hashes."""
_LATER: list[_Left] | None = None
"""Entries left for `write_pending` (after `write_later`), each with the hashes of the files its load read, taken as
the load ended; None: each entry is written as its load ends."""


def write_later() -> None:
    """Leave the entries of this process's loads to `write_pending`, for a command that loads its manifest once and
    ends (`reconcile plan`, `apply`, `drift` as a process): writing one is ~0.04 s of a first plan of 10,000 resources
    that nobody waits for when it is done after the command."""
    global _LATER
    if _LATER is None:
        _LATER = []


def write_pending() -> None:
    """Write the entries left by `write_later`: the last thing a process does, after its output is written.

    Where fork exists and no other thread runs, a detached process writes them (its own session, the standard streams
    on the null device, no other descriptor of this one's kept open) and this returns at once, so the caller of the
    command (a shell, a scheduler, `make`) has its exit status without waiting for them; the process that called this
    ends next and does not wait for the writer either. Elsewhere they are written here. Each is written as `_write`
    writes any entry (a temporary file replacing the entry): a writer cut short leaves the entry as it was, and a
    command started before the entry is written loads the manifest again, as it would without the entry."""
    global _LATER
    pending, _LATER = _LATER or [], None
    if not pending or _detached(pending):
        return
    with collector_paused():
        for entry, key, desired, hashes in pending:
            _write(entry, key, desired, hashes)


def _detached(pending: list[_Left]) -> bool:
    """True when a forked process writes `pending`; False where it cannot (no fork, another thread, fork failed)."""
    fork = getattr(os, "fork", None)
    if fork is None or not _alone():  # a forked child gets this thread only: a lock another held would stay held
        return False
    try:
        pid = fork()
    except OSError:
        return False
    if pid:
        return True  # not waited for: this process ends next, and the writer is then the init process's to reap
    code = 1
    try:
        os.setsid()  # the terminal's Ctrl-C and hang-up are for the command, not for a write it left behind
        signal.signal(signal.SIGTERM, _stop)  # a service stopped meanwhile: the temporary file is removed
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, _open_max())  # pipes and files of the command's caller are not held open by the writer
        with collector_paused():
            for entry, key, desired, hashes in pending:
                if entry.parent.parent.is_dir():  # a state directory removed since (a test's, a script's) stays so
                    _write(entry, key, desired, hashes)
        code = 0
    finally:
        os._exit(code)


def _alone(wait: float = 0.2) -> bool:
    """True when no other thread runs, waiting up to `wait` seconds for those that are ending (a metadata downloader
    that handed over the last document exits moments later, once it has the interpreter again)."""
    deadline = time.monotonic() + wait
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current:
            with suppress(RuntimeError):  # a thread not started by `threading` cannot be joined: it counts as running
                thread.join(max(0.0, deadline - time.monotonic()))
    return threading.active_count() == 1


def _open_max() -> int:
    try:
        return max(256, os.sysconf("SC_OPEN_MAX"))
    except (AttributeError, ValueError, OSError):
        return 65536


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(1)


@dataclasses.dataclass(frozen=True)
class _Kept:
    """A manifest as this process last read or wrote its entry: its key, the other files it read with their hashes,
    the entry file's stamp, and the DesiredState (frozen model objects no one changes: a plan works on copies)."""

    key: str
    files: tuple[tuple[str, str], ...]
    entry: tuple[int, ...] | None
    desired: DesiredState


def _entry_stamp(entry: Path) -> tuple[int, ...] | None:
    """The entry file as it is: replaced, rewritten or its mode changed, it is read (and judged) again."""
    try:
        return _stamp(os.stat(entry))
    except OSError:
        return None


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


_KEPT: dict[Path, _Kept] = {}
"""By entry: what a process that loads one manifest again and again (the `run` loop, a cycle every few minutes) gets
without reading its entry again (~0.04 s at 200 targets x 50 resources), while the key, the files and the entry
file itself are unchanged."""


def _load_manifest(path: Path, registry: Registry, overrides: Mapping[str, str] | None) -> DesiredState:
    """The loader, imported on a miss only: a cache hit never imports the YAML and schema machinery."""
    from reconciler.manifest.loader import load_manifest

    return load_manifest(path, registry, overrides)


def _key(path: Path, content: str, registry: Registry, overrides: Mapping[str, str]) -> str:
    """`content`: the sha256 of the manifest's bytes."""
    material = {
        "format": FORMAT,
        "manifest": content,
        "path": str(path),
        "cwd": os.getcwd(),
        "vars": sorted(overrides.items()),
        "tool": reconciler.__version__,
        "code": _code_stamp(),
        "registry": _registry_stamp(registry),
        "python": sys.version,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode("utf-8",
                                                                                        "surrogateescape")).hexdigest()


def _stat(path: str) -> list[Any]:
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [path, st.st_size, st.st_mtime_ns]


def _code_stamp() -> list[Any]:
    """The tool's own source files: an edited checkout invalidates the cache like a new version does."""
    package = os.path.dirname(reconciler.__file__ or "")
    return [_stat(os.path.join(folder, name)) for folder, _dirs, names in sorted(os.walk(package))
            for name in sorted(names) if name.endswith(".py")]


def _registry_stamp(registry: Registry) -> list[Any]:
    providers = []
    for name, provider in sorted(registry.providers.items()):
        cls = type(provider)
        module = sys.modules.get(cls.__module__)
        providers.append([name, cls.__module__, cls.__qualname__, sorted(provider.kinds),
                          _stat(getattr(module, "__file__", None) or "")])
    transports = [[name, getattr(factory, "__module__", ""), getattr(factory, "__qualname__", "")]
                  for name, factory in sorted(registry.transports.items())]
    return [providers, transports]


# --- what the load read -------------------------------------------------------------------------

_local = threading.local()
_patch_lock = threading.Lock()
_recorders = 0
_real_open = builtins.open
_real_os_open = os.open


def _note(name: Any, mode: Any, flags: Any) -> None:
    read: set[str] | None = getattr(_local, "read", None)
    if read is None or not isinstance(name, (str, bytes, os.PathLike)):
        return
    writing = (any(c in mode for c in "wax+") if isinstance(mode, str)
               else isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR)))
    if not writing:
        read.add(os.path.abspath(os.fsdecode(name)))


def _open(file: Any, mode: Any = "r", *args: Any, **kwargs: Any) -> Any:
    _note(file, mode, None)
    return _real_open(file, mode, *args, **kwargs)


def _os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
    _note(path, None, flags)
    return _real_os_open(path, flags, *args, **kwargs)


@contextmanager
def _recording() -> Iterator[set[str]]:
    """The files this thread opens for reading meanwhile, whichever kind opens them (open, Path.read_bytes,
    os.open go through the wrappers while a load is recorded; other threads' opens are not noted).

    Not an audit hook: a hook cannot be removed, and it would run for every audited event (the YAML
    composer alone raises hundreds of thousands) for the rest of the process.
    """
    global _recorders
    read: set[str] = set()
    with _patch_lock:
        if _recorders == 0:
            builtins.open = io.open = _open
            os.open = _os_open
        _recorders += 1
    _local.read = read
    try:
        yield read
    finally:
        _local.read = None
        with _patch_lock:
            _recorders -= 1
            if _recorders == 0:
                builtins.open = io.open = _real_open
                os.open = _real_os_open


def _is_input(path: str) -> bool:
    """A file the manifest read, not the interpreter's or a library's code (imported while loading)."""
    if path.endswith(_CODE) or f"{os.sep}__pycache__{os.sep}" in path:
        return False
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(reconciler.__file__ or "")}
    return not any(root and (path + os.sep).startswith(os.path.join(root, "")) for root in roots)


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest()
    except OSError:
        return None


# --- the entry ----------------------------------------------------------------------------------


def _read(entry: Path, key: str) -> _Kept | None:
    try:
        with open(entry, "rb") as stream:
            st = os.fstat(stream.fileno())
            if (hasattr(os, "getuid") and st.st_uid != os.getuid()) or st.st_mode & 0o022:
                return None  # not ours alone: not trusted
            document = json.loads(stream.read())
            stamp = _stamp(st)
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("key") != key:
        return None
    files = document.get("files")
    if not isinstance(files, list):
        return None
    for item in files:
        if not (isinstance(item, list) and len(item) == 2) or _sha256(str(item[0])) != item[1]:
            return None
    try:
        desired = _decode(document["desired"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):  # damaged: loaded again and rewritten
        return None
    if not isinstance(desired, DesiredState):
        return None
    return _Kept(key, tuple((str(f), str(h)) for f, h in files), stamp, desired)


def _hashes(files: list[str]) -> list[list[str]] | None:
    """Each file with its sha256, as it is now; None when one cannot be read."""
    hashes = []
    for f in files:
        digest = _sha256(f)
        if digest is None:
            return None
        hashes.append([f, digest])
    return hashes


def _write(entry: Path, key: str, desired: DesiredState, hashes: list[list[str]]) -> _Kept | None:
    """Best effort: a cache that cannot be written (read-only state dir, full disk) costs only the load. What this
    process keeps of it (None: nothing was written)."""
    try:  # the encoding carries every value exactly (tuples, sets, enums, the model's classes) or refuses it
        encoded = _encode(desired)
        text = json.dumps({"format": FORMAT, "key": key, "files": hashes, "desired": encoded},
                          ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False)
    except (TypeError, ValueError):
        return None
    try:
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".json")  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as stream:
                stream.write(text)
            os.replace(tmp, entry)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        return None
    for old in others(entry):  # the manifest's entries for its earlier contents: one entry per manifest path
        with suppress(OSError):
            os.unlink(old)
    return _Kept(key, tuple((str(f), str(h)) for f, h in hashes), _entry_stamp(entry), desired)


# --- the model as JSON (its own classes only) ---------------------------------------------------


_RESOURCE = ("key", "ensure", "fields", "location", "field_lines", "mode")


_ATOMS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> bool:
    """JSON as it is: what json.loads gives back equal, with nothing to tag."""
    if type(value) in _ATOMS:
        return True
    if type(value) is list:
        return all(type(v) in _ATOMS or _plain(v) for v in value)
    if type(value) is dict:
        for k, v in value.items():  # a resource's fields: mostly text, numbers and booleans, answered here
            if type(k) is not str or k == _TAG or (type(v) not in _ATOMS and not _plain(v)):
                return False
        return True
    return False


_COMPACT = tuple(f.name for f in dataclasses.fields(DesiredResource)) == _RESOURCE
"""Resources are written as lists (see `_decode_resources`): only while the model's resource has the fields this code
knows."""
_ENSURE = {e.value: e for e in Ensure}
_MODE = {m.value: m for m in Mode}


def _encode_resource(r: DesiredResource) -> Any:
    """A resource as one list (there are thousands: the compact form is what makes a cache hit cheap)."""
    # The fields and their lines as they are when they are dicts (the loader's): only serialised, never kept.
    fields = r.fields if type(r.fields) is dict else dict(r.fields)
    lines = r.field_lines if type(r.field_lines) is dict else dict(r.field_lines)
    if (not _COMPACT or type(r) is not DesiredResource or type(r.key) is not ResourceKey
            or type(r.location) is not SourceLocation or not _plain(fields) or not _plain(lines)):
        return _encode(r)
    return [r.key.target, r.key.kind, r.key.identity, r.ensure.value, fields, r.location.file,
            r.location.line, r.location.path, lines, None if r.mode is None else r.mode.value]


def _decode_resources(values: Any) -> tuple[DesiredResource, ...]:
    """The resources of an entry. A compact one's model objects are made by `desired_resource`, without the frozen
    classes' object.__setattr__ per field (a third of a cache hit's time at 50,000 resources)."""
    strings: dict[str, str] = {}
    intern = strings.setdefault  # the target, kind and file repeat: one string each, not one per resource
    out: list[DesiredResource] = []
    for v in values:
        if isinstance(v, dict) or not _COMPACT:
            decoded = _decode(v)
            if not isinstance(decoded, DesiredResource):
                raise ValueError("not a resource")
            out.append(decoded)
            continue
        target, kind, identity, ensure, fields, file, line, path, field_lines, mode = v
        if not (type(target) is str and type(kind) is str and type(file) is str):
            raise ValueError("not a resource")
        out.append(desired_resource(intern(target, target), intern(kind, kind), identity, _ENSURE[ensure], fields,
                                    intern(file, file), line, path, field_lines,
                                    None if mode is None else _MODE[mode]))
    return tuple(out)


def _encode(value: Any) -> Any:
    if isinstance(value, DesiredState):
        body = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "resources"}
        return {_TAG: "DesiredState", "v": body, "resources": [_encode_resource(r) for r in value.resources]}
    if isinstance(value, enum.Enum):
        return {_TAG: type(value).__name__, "v": value.value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if _CLASSES.get(name) is not type(value):
            raise TypeError(f"not a model class: {name}")
        return {_TAG: name, "v": {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v) for k, v in value.items()}
        raise TypeError("a mapping with keys that are not text")
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [_encode(v) for v in value]}
    if isinstance(value, frozenset):
        return {_TAG: "frozenset", "v": sorted((_encode(v) for v in value), key=repr)}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot cache a {type(value).__name__}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(_TAG)
    if tag is None:
        return {k: _decode(v) for k, v in value.items()}
    body = value["v"]
    if tag == "DesiredState":
        return DesiredState(**{k: _decode(v) for k, v in body.items()}, resources=_decode_resources(value["resources"]))
    if tag == "tuple":
        return tuple(_decode(v) for v in body)
    if tag == "frozenset":
        return frozenset(_decode(v) for v in body)
    cls = _CLASSES[tag]  # KeyError: not ours
    if issubclass(cls, enum.Enum):
        return cls(body)
    return cls(**{k: _decode(v) for k, v in body.items()})
