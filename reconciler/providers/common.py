"""Schema pieces and value helpers that several providers share."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.changes import Action, Change
from reconciler.commands import Command
from reconciler.model import JSONValue

GUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

# Values may also be written as ${variable} references: the loader checks them after substitution,
# and this alternative keeps editors (which see the raw text) from flagging them.
_VARIABLE = r"|^.*\$\{[A-Za-z_][A-Za-z0-9_]*\}.*$"

GUID: dict[str, Any] = {
    "type": "string",
    "pattern": GUID_PATTERN + _VARIABLE,
    "errorMessage": "is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
}

URL: dict[str, Any] = {
    "type": "string",
    "pattern": r"^https?://[^\s/$.?#][^\s]*$" + _VARIABLE,
    "errorMessage": "is not an http(s) URL",
}

BOOLEAN: dict[str, Any] = {"type": "boolean"}

IDENTITY: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": r"^[^\s].*$"}


def resource_schema(kind: str, properties: dict[str, Any], *, description: str = "",
                    required_when_present: tuple[str, ...] = (), rules: tuple[dict[str, Any], ...] = (),
                    identity_required: bool = True) -> dict[str, Any]:
    """JSON Schema of one manifest entry of `kind`: the common keys plus the kind's own fields.

    Fields required to create an object are required only when `ensure` is not `absent`.
    """
    common: dict[str, Any] = {
        "target": {"type": "string", "description": "Name of a target defined under `targets`."},
        "kind": {"const": kind},
        "identity": {**IDENTITY, "description": "Identity of the object on the target."},
        "ensure": {"enum": ["present", "absent"], "description": "absent removes the object."},
        "mode": {"enum": ["enforce", "warn", "suspend"],
                 "description": "enforce (default: the target's mode) applies, warn only reports, suspend skips."},
    }
    all_of: list[dict[str, Any]] = list(rules)
    if required_when_present:
        all_of.insert(0, {
            "if": {"not": {"properties": {"ensure": {"const": "absent"}}, "required": ["ensure"]}},
            "then": {"required": list(required_when_present)},
        })
    schema: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": {**common, **properties},
        "required": ["target", "kind", "identity"] if identity_required else ["target", "kind"],
        "additionalProperties": False,
    }
    if all_of:
        schema["allOf"] = all_of
    return schema


def certificate_thumbprint(raw_base64: Any) -> str:
    """SHA-1 thumbprint of a base64 DER certificate, as Windows shows it. Never shows key material."""
    try:
        der = base64.b64decode(str(raw_base64), validate=False)
    except (ValueError, TypeError):
        return "(unreadable certificate)"
    return "certificate " + hashlib.sha1(der).hexdigest().upper()


def lifecycle_commands(change: Change, remove: Command, new: Callable[[Mapping[str, JSONValue]], Command],
                       update: Callable[[Mapping[str, JSONValue]], Command]) -> tuple[Command, ...]:
    """The Remove / New / Set shape most kinds share; a replace is its Remove right before its New.

    `new` builds the creating command from the fields after the change, `update` the Set command
    (it reads `change.changed` itself through its closure or argument).
    """
    if change.is_replace:
        assert change.after is not None
        return (remove, new(change.after))
    if change.actions[0] is Action.DELETE:
        return (remove,)
    assert change.after is not None
    if change.actions[0] is Action.CREATE:
        return (new(change.after),)
    return (update(change.after),)
