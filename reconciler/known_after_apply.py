"""A field whose value another target's object holds, known after that target's apply: `{from:
<target>.<Kind>.<identity>, field: <live field>}`. (reconciler.references takes certificates another target publishes
now; this takes a value that may only exist once another target's apply has run.)

The dedicated Exchange hybrid application's appId is assigned by Entra ID when the application is created; the
Exchange auth server needs it (`Set-AuthServer -ApplicationIdentifier`). A manifest says where the value lives
instead of copying it:

    applicationIdentifier:
      from: fabrikam-tenant.Application.ExchangeServerApp-<organization GUID>
      field: appId

- Plan: the value is read from the referenced object's live record (every target is discovered before planning).
  When that object does not exist yet, the field plans as a placeholder, `(known after apply: <from> <field>)`,
  which the plan shows as such.
- Apply: a target whose commands hold a placeholder is changed after the targets it refers to (the runner's waves,
  shared with reconciler.references' certificate sources); at its turn they are read again and the placeholders in
  its commands are replaced by the values read, then it is applied. A value
  still unknown then (the referenced target failed, or did not create the object) fails those changes, naming the
  reference; a placeholder is never sent to a system.
- Re-read: convergence is judged against the values read after the apply, so a fresh estate converges in one apply.

Rules (checked when the manifest is loaded): the referenced resource is declared in the manifest, present, on
another target, and that target refers to no other (one level: the order of targets is then always known).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.commands import Command
from reconciler.model import DesiredResource, DesiredState, Ensure, JSONValue, LiveState

FIELDS = ("appId",)
"""The live fields a reference may read (what the manifests need today: an application's appId)."""

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["from", "field"],
    "properties": {
        "from": {"type": "string", "pattern": r"^[^.\s]+\.[A-Za-z]+\..+$",
                 "description": "<target>.<Kind>.<identity> of a resource this manifest declares on another target."},
        "field": {"enum": list(FIELDS), "description": "The field of that object's live record."},
    },
    "description": "The value another target's object holds, read when it is known (after that target's apply).",
}

PLACEHOLDER = re.compile(r"\(known after apply: ([^()\s]+(?: [^()\s]+)*) (\w+)\)")


@dataclasses.dataclass(frozen=True)
class Reference:
    target: str
    kind: str
    identity: str
    field: str

    @property
    def source(self) -> str:
        return f"{self.target}.{self.kind}.{self.identity}"

    @property
    def placeholder(self) -> str:
        return f"(known after apply: {self.source} {self.field})"


def reference(value: Any) -> Reference | None:
    """The reference a manifest value is, or None for any other value."""
    if not isinstance(value, Mapping) or set(value) != {"from", "field"}:
        return None
    source, name = value.get("from"), value.get("field")
    if not isinstance(source, str) or not isinstance(name, str):
        return None
    parts = source.split(".", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return Reference(parts[0], parts[1], parts[2], name)


_PLAIN = frozenset({str, int, float, bool, type(None), list})
"""Types of value that are never a reference (no mapping): most fields' values, passed over without a call."""


def references(resource: DesiredResource) -> list[tuple[str, Reference]]:
    """(field, reference) of each field of a resource whose value is a reference."""
    return [(name, ref) for name, value in resource.fields.items()
            if type(value) not in _PLAIN and (ref := reference(value)) is not None]


def problems(desired: DesiredState) -> list[tuple[DesiredResource, str, str]]:
    """(resource, field, message) for each reference that breaks the rules (see the module's docstring)."""
    declared = {(r.key.target, r.key.kind, r.key.identity.casefold()): r for r in desired.resources}
    referring = {r.key.target for r in desired.resources if references(r)}
    found = []
    for resource in desired.resources:
        for name, ref in references(resource):
            target = resource.key.target
            other = declared.get((ref.target, ref.kind, ref.identity.casefold()))
            if ref.target == target:
                message = "refers to its own target; a value from the same target is not supported"
            elif other is None:
                message = f"refers to {ref.source}, which this manifest does not declare"
            elif other.ensure is not Ensure.PRESENT:
                message = f"refers to {ref.source}, which this manifest declares absent"
            elif ref.target in referring:
                message = (f"refers to target {ref.target!r}, which itself refers to another target (one level of "
                           "references only, so the order of targets is always known)")
            else:
                continue
            found.append((resource, name, message))
    return found


def referenced_targets(desired: DesiredState) -> dict[str, set[str]]:
    """Per target, the targets its resources refer to."""
    out: dict[str, set[str]] = {}
    for resource in desired.resources:
        for _, ref in references(resource):
            out.setdefault(resource.key.target, set()).add(ref.target)
    return out


def value_of(ref: Reference, live: Mapping[str, LiveState]) -> str | None:
    state = live.get(ref.target)
    if state is None:
        return None
    for key, record in state.resources.items():
        if key.kind == ref.kind and key.identity.casefold() == ref.identity.casefold():
            value = record.fields.get(ref.field)
            return str(value) if value not in (None, "") else None
    return None


def resolve(desired: DesiredState, live: Mapping[str, LiveState]) -> DesiredState:
    """`desired` with each reference replaced by the value read in `live`, or by its placeholder."""
    plain = _PLAIN
    resources: list[DesiredResource] | None = None  # a copy, made at the first resource that refers
    for index, resource in enumerate(desired.resources):
        for value in resource.fields.values():
            if type(value) not in plain:
                break
        else:
            continue  # no field can hold a reference (the common case, seen without a call)
        found = references(resource)
        if found:
            fields: dict[str, JSONValue] = dict(resource.fields)
            for name, ref in found:
                fields[name] = value_of(ref, live) or ref.placeholder
            if resources is None:
                resources = list(desired.resources)
            resources[index] = dataclasses.replace(resource, fields=fields)
    return desired if resources is None else dataclasses.replace(desired, resources=tuple(resources))


def placeholders(commands: Iterable[Command]) -> list[Reference]:
    """The references whose placeholders these commands still hold."""
    out = []
    for command in commands:
        for value in _strings(command.parameters):
            for match in PLACEHOLDER.finditer(value):
                parts = match.group(1).split(".", 2)
                if len(parts) == 3:
                    out.append(Reference(parts[0], parts[1], parts[2], match.group(2)))
    return out


def fill(command: Command, live: Mapping[str, LiveState]) -> Command:
    """The command with each placeholder replaced by the value now read (unknown ones left as they are)."""
    def one(value: Any) -> Any:
        if isinstance(value, str):
            return PLACEHOLDER.sub(lambda m: _value(m, live), value)
        if isinstance(value, list):
            return [one(v) for v in value]
        if isinstance(value, dict):
            return {k: one(v) for k, v in value.items()}
        return value

    return dataclasses.replace(command, parameters={k: one(v) for k, v in command.parameters.items()})


def _value(match: re.Match[str], live: Mapping[str, LiveState]) -> str:
    parts = match.group(1).split(".", 2)
    if len(parts) != 3:
        return match.group(0)
    return value_of(Reference(parts[0], parts[1], parts[2], match.group(2)), live) or match.group(0)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
