"""The manifest: YAML in, a checked DesiredState out (every problem with file:line and field path)."""

from reconciler.manifest.loader import load_manifest
from reconciler.manifest.schema import build_schema, write_schema

__all__ = ["build_schema", "load_manifest", "write_schema"]
