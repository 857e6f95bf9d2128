"""`reconcile export`: adopt an estate that already exists. Read the targets, write the manifest that describes them.

The targets (and variables) come from a manifest that declares them; its resources, if any, are ignored except
that a target reached through a read-one-at-a-time system (Office 365) exports what the manifest names. Each
live object becomes one resource with exactly the fields that describe it (a kind's `exported` rule: what New
would be given to re-create it), so `reconcile plan` against the export shows no changes. Certificates are
written as `.cer` files beside the new manifest (public certificates only; no private key is ever read).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.kinds.spec import KindSpec
from reconciler.model import DesiredState, JSONValue, LiveResource, LiveState

SKIP: tuple[object, ...] = (None, "", [], {})


@dataclass
class Export:
    """The exported manifest as a document, and the certificate files to write beside it."""

    document: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)

    def write(self, path: Path) -> list[Path]:
        written = []
        for name, data in self.files.items():
            target = path.parent / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            written.append(target)
        path.write_text(_HEADER + yaml.safe_dump(self.document, sort_keys=False, allow_unicode=True, width=120),
                        encoding="utf-8")
        return [*written, path]


_HEADER = ("# Written by `reconcile export` from the live state: `reconcile plan` against it shows no changes.\n"
           "# Review it, trim what you do not want managed, and commit it.\n")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _certificate_file(files: dict[str, bytes], target: str, identity: str, raw_base64: str) -> str:
    der = base64.b64decode(raw_base64)
    name = f"certs/{_safe(target)}-{_safe(identity)}-{hashlib.sha1(der).hexdigest()[:8]}.cer"
    files[name] = der
    return name


def resource_entry(resource: LiveResource, spec: KindSpec, files: dict[str, bytes]) -> dict[str, Any]:
    """One manifest entry describing a live object exactly."""
    key = resource.key
    properties = spec.schema.get("properties", {})
    entry: dict[str, Any] = {"target": key.target, "kind": key.kind}
    if "identity" in spec.schema.get("required", ()) or not spec.singleton:
        entry["identity"] = key.identity
    fields: Mapping[str, JSONValue] = spec.exported(resource.fields) if spec.exported is not None else dict(
        resource.fields)
    for name, value in fields.items():
        if value in SKIP:
            continue
        if name == "certificateRawData" and "certificateFile" in properties:
            entry["certificateFile"] = _certificate_file(files, key.target, key.identity, str(value))
        elif name == "keyCredentials" and "credentials" in properties:
            entry["credentials"] = [{"certificateFile": _certificate_file(files, key.target, key.identity, k["key"])}
                                    for k in value if isinstance(k, Mapping) and k.get("key")]
        elif name in properties:
            entry[name] = value
    return entry


def export_manifest(desired: DesiredState, live: Mapping[str, LiveState], kinds: Mapping[str, Mapping[str, KindSpec]],
                    source: Mapping[str, Any], *, only_kinds: frozenset[str] = frozenset()) -> Export:
    """The manifest describing `live` for the targets of `desired` (`kinds`: per target, its provider's kinds).

    `source` is the manifest read as YAML, whose `apiVersion`, `variables` and `targets` are kept as written."""
    files: dict[str, bytes] = {}
    resources = []
    for target in desired.targets:
        state = live.get(target)
        if state is None:
            continue
        for key, resource in sorted(state.resources.items()):
            if only_kinds and key.kind not in only_kinds:
                continue
            spec = kinds[target].get(key.kind)
            if spec is not None:
                resources.append(resource_entry(resource, spec, files))
    document: dict[str, Any] = {"apiVersion": source.get("apiVersion", "reconciler/v1")}
    if source.get("variables"):
        document["variables"] = source["variables"]
    document["targets"] = {name: spec for name, spec in (source.get("targets") or {}).items() if name in live}
    document["resources"] = resources
    return Export(document, files)
