"""Where the manifest cache (reconciler.manifest.cache) keeps a manifest's entry.

A module of its own, light to import: the read-ahead process (reconciler.manifest.ahead) looks for the entry before
it parses anything, and importing the cache's module (the model, tempfile) would delay its parse by ~0.01 s."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_DIR = "manifest-cache"


def entry_path(path: Path, state_dir: Path) -> Path:
    """The cache entry of the manifest at `path` (one per manifest path, whatever its content)."""
    return state_dir / CACHE_DIR / (hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape"))
                                    .hexdigest()[:32] + ".json")
