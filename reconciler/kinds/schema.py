"""JSON Schema pieces of the manifest that every kind shares (the common keys, GUIDs, URLs)."""

from __future__ import annotations

from typing import Any

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
