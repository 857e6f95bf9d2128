"""One lock per target, so two applies never change the same system at once.

A lock is an flock on a file: the kernel releases it when its holder exits, however it exits, so a
crashed run never leaves a stale lock behind. The file also records who holds it, for the message
the second run prints.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from reconciler.errors import LockError
from reconciler.model import TargetSpec
from reconciler.plan import canonical_json


def lock_path(lock_dir: Path, target: TargetSpec) -> Path:
    """Keyed by where the target is (its connection), not only its name in one manifest."""
    digest = hashlib.sha256(canonical_json(dict(target.connection)).encode()).hexdigest()[:16]
    return lock_dir / f"{target.provider}-{digest}.lock"


@contextmanager
def target_lock(lock_dir: Path, target: TargetSpec, *, timeout: float = 30.0,
                poll: float = 0.1) -> Iterator[None]:
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_path(lock_dir, target)
    handle: IO[str] = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole block
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockError(f"target {target.name!r} is locked by another run "
                                    f"({_holder(path)}); waited {timeout:g}s") from None
                time.sleep(poll)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "target": target.name}))
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the flock


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
