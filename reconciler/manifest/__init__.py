"""The manifest: YAML in, a checked DesiredState out (every problem with file:line and field path)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.manifest.loader import load_manifest
    from reconciler.manifest.schema import build_schema, write_schema

__all__ = ["build_schema", "load_manifest", "write_schema"]

# Imported when first used: the loader brings YAML, jsonschema and httpx, which a command that does not
# load a manifest (or finds it in the cache, reconciler.manifest.cache) does not need.
_WHERE = {"load_manifest": "reconciler.manifest.loader", "build_schema": "reconciler.manifest.schema",
          "write_schema": "reconciler.manifest.schema"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
