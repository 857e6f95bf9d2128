"""`reconcile export`: adopt an estate that already exists. Read the targets, write the manifest that describes them.

The targets (and variables) come from a manifest that declares them; its resources, if any, are ignored except
that a target reached through a read-one-at-a-time system (Office 365) exports what the manifest names. Each
live object becomes one resource with exactly the fields that describe it (a kind's `exported` rule: what New
would be given to re-create it), so `reconcile plan` against the export shows no changes. Certificates are
written as `.cer` files beside the new manifest (public certificates only; no private key is ever read).

Values are written with variables, as a person would write the manifest: the source manifest's own variables
wherever their value appears (`${exchangeHost}/autodiscover/metadata/json/1`), the Office 365 tenant id as
`${tenantId}`, and every host that appears in two values or more as a variable of its own
(`atlExchange001Host: https://atl-exchange-001.litwareinc.com`). A literal `${` is written `$${`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.kinds.spec import KindSpec
from reconciler.model import DesiredState, JSONValue, LiveResource, LiveState

SKIP: tuple[object, ...] = (None, "", [], {})
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
"""libyaml's emitter when PyYAML has it (about ten times faster at 10,000 resources), else the pure-Python one."""


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
        text = yaml.dump(self.document, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=120)
        path.write_text(_HEADER + text, encoding="utf-8")
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
                    source: Mapping[str, Any], *, only_kinds: frozenset[str] = frozenset(),
                    variables: Mapping[str, str] | None = None) -> Export:
    """The manifest describing `live` for the targets of `desired` (`kinds`: per target, its provider's kinds).

    `source` is the manifest read as YAML, whose `apiVersion`, `variables` and `targets` are kept as written;
    `variables`: its variables' values as resolved for this run (with --var), written back wherever they appear."""
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
    tenants = [str(value) for t in desired.targets.values() if t.name in live
               for key, value in t.connection.items() if key.casefold() == "tenantid" and isinstance(value, str)]
    written = {name: spec for name, spec in (source.get("targets") or {}).items() if name in live}
    resources, written, added = factor_variables(resources, variables or {}, tenants, written)
    document: dict[str, Any] = {"apiVersion": source.get("apiVersion", "reconciler/v1")}
    if source.get("variables") or added:
        document["variables"] = {**(source.get("variables") or {}), **added}
    document["targets"] = written
    document["resources"] = resources
    return Export(document, files)


# -- variables -----------------------------------------------------------------------------------

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ORIGIN = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^/\s?#$\"'<>]+")
"""scheme://host[:port] anywhere in a string: what repeated hosts are factored out as."""
SHORTEST = 6
"""Variables whose value is shorter are never substituted (a short value would match inside unrelated text)."""


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    return []


def _camel(label: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", label) if w]
    return words[0].lower() + "".join(w[:1].upper() + w[1:].lower() for w in words[1:]) if words else ""


def _host_name(origin: str) -> str:
    """`https://atl-exchange-001.litwareinc.com` -> atlExchange001Host; an address -> host127_0_0_1_8470."""
    authority = origin.split("://", 1)[1].rsplit("@", 1)[-1]
    host, _, port = authority.rpartition(":") if authority.count(":") == 1 else (authority, "", "")
    if re.fullmatch(r"[\d.]+|\[[0-9A-Fa-f:.]+\]", host):
        return "host" + "_".join(p for p in re.split(r"[^0-9A-Fa-f]+", host + ":" + port) if p)
    name = _camel(host.split(".")[0])
    name = name if name[:1].isalpha() else "h" + name
    return f"{name}Host"


def _unique(name: str, taken: set[str]) -> str:
    found, n = name, 2
    while found in taken:
        found, n = f"{name}{n}", n + 1
    taken.add(found)
    return found


def _pattern(values: Mapping[str, str]) -> re.Pattern[str] | None:
    """One alternation of every value, longest first, matched only between word boundaries of a URL or name."""
    usable = sorted((v for v in values if len(v) >= SHORTEST), key=lambda v: (-len(v), v))
    if not usable:
        return None
    return re.compile(r"(?<![A-Za-z0-9\-])(?:" + "|".join(re.escape(v) for v in usable)
                      + r")(?![A-Za-z0-9\-]|\.[A-Za-z0-9])")


def _substitute(text: str, pattern: re.Pattern[str] | None, names: Mapping[str, str]) -> str:
    """`text` as a manifest writes it: every variable's value as `${name}`, and a literal `${` as `$${`."""
    out: list[str] = []
    end = 0
    for match in pattern.finditer(text) if pattern is not None else ():
        out.append(text[end:match.start()].replace("${", "$${"))
        out.append("${" + names[match.group(0)] + "}")
        end = match.end()
    out.append(text[end:].replace("${", "$${"))
    return "".join(out)


def _rewrite(value: Any, pattern: re.Pattern[str] | None, names: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _substitute(value, pattern, names)
    if isinstance(value, list):
        return [_rewrite(item, pattern, names) for item in value]
    if isinstance(value, dict):
        return {k: _rewrite(v, pattern, names) for k, v in value.items()}
    return value


def _realms(value: Any, key: str = "") -> list[str]:
    """GUIDs held in realm fields: a realm that is a GUID is an Office 365 tenant id."""
    if isinstance(value, str):
        return [value.lower()] if "realm" in key.lower() and GUID.match(value) else []
    if isinstance(value, list):
        return [s for item in value for s in _realms(item, key)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _realms(v, str(k))]
    return []


def factor_variables(resources: list[dict[str, Any]], declared: Mapping[str, str], tenants: Sequence[str] = (),
                     targets: Mapping[str, Any] | None = None) \
        -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
    """The resources and targets written with variables, and the variables added for them.

    `declared`: the source manifest's variables, resolved (name -> value), used wherever their value appears;
    added: the tenant id (`tenants`, and GUIDs in realm fields) and every host (scheme://host[:port]) that
    appears in two values or more, unless a declared variable already holds it. In resources only field values
    change, never targets, kinds or identities; in `targets` (the source's, as written) only strings written
    without any `$`. The manifest they make expands back to exactly what was read.
    """
    names: dict[str, str] = {}  # value -> variable
    for name, value in declared.items():
        names.setdefault(value, name)
    taken = set(declared)
    added: dict[str, str] = {}
    fields = [{k: v for k, v in r.items() if k not in ("target", "kind", "identity")} for r in resources]
    found_tenants = dict.fromkeys(t.lower() for t in tenants if GUID.match(t))
    found_tenants.update(dict.fromkeys(g for f in fields for g in _realms(f)))
    literal_targets = [t for t in _strings(dict(targets or {})) if "$" not in t]
    texts = [s for f in fields for s in _strings(f)] + literal_targets
    for tenant in found_tenants:
        if tenant not in names and any(tenant in t.lower() for t in texts):
            spelled = next((m.group(0) for t in texts for m in re.finditer(re.escape(tenant), t, re.I)), tenant)
            name = _unique("tenantId", taken)
            names[spelled] = name
            added[name] = spelled
    origins: dict[str, int] = {}
    for text in texts:
        for match in ORIGIN.finditer(text):
            origins[match.group(0)] = origins.get(match.group(0), 0) + 1
    for origin, count in sorted(origins.items()):
        if count >= 2 and origin not in names:
            name = _unique(_host_name(origin), taken)
            names[origin] = name
            added[name] = origin
    pattern = _pattern(names)
    rewritten = [{k: v if k in ("target", "kind", "identity") else _rewrite(v, pattern, names)
                  for k, v in r.items()} for r in resources]
    return rewritten, _rewrite_written(dict(targets or {}), pattern, names), added


def _rewrite_written(value: Any, pattern: re.Pattern[str] | None, names: Mapping[str, str]) -> Any:
    """Text as the source manifest wrote it: only strings without any `$` (no reference, no escape) are rewritten."""
    if isinstance(value, str):
        return value if "$" in value else _substitute(value, pattern, names)
    if isinstance(value, list):
        return [_rewrite_written(item, pattern, names) for item in value]
    if isinstance(value, dict):
        return {k: _rewrite_written(v, pattern, names) for k, v in value.items()}
    return value
