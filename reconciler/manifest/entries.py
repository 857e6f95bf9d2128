"""Where the manifest cache (reconciler.manifest.cache) keeps a manifest's entry.

A module of its own, light to import: the read-ahead process (reconciler.manifest.ahead) looks for the entry before
it parses anything, and importing the cache's module (the model, tempfile) would delay its parse by ~0.01 s."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_DIR = "manifest-cache"


def entry_path(path: Path, content: str, state_dir: Path) -> Path:
    """The cache entry of the manifest at `path` whose bytes have the sha256 `content` (hex digits).

    Named by both, so that whether the cache may hold the manifest as it is now is told by the name alone (the
    read-ahead's question: an edited manifest is read ahead, its old entry notwithstanding); writing an entry
    removes the path's others (`others`): one per manifest path."""
    return state_dir / CACHE_DIR / f"{_of_path(path)}-{content[:_PATH_DIGITS]}.json"


def others(entry: Path) -> list[Path]:
    """The entries of `entry`'s manifest path other than `entry`: for its earlier contents, and the one entry per path
    an earlier version of this tool named by the path alone."""
    prefix = entry.name[:_PATH_DIGITS]
    try:
        names = os.listdir(entry.parent)
    except OSError:
        return []
    return [entry.parent / name for name in names
            if name != entry.name and name.endswith(".json") and name.startswith(prefix)
            and name[len(prefix):len(prefix) + 1] in ("-", ".")]


_PATH_DIGITS = 32


def _of_path(path: Path) -> str:
    return hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:_PATH_DIGITS]
