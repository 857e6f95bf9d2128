"""Value helpers that several providers share (schema pieces live in reconciler.kinds.schema)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from reconciler.changes import Action, Change
from reconciler.commands import Command
from reconciler.kinds.certificates import certificate_thumbprint
from reconciler.kinds.schema import BOOLEAN, GUID, GUID_PATTERN, IDENTITY, URL, resource_schema
from reconciler.model import JSONValue

__all__ = ["BOOLEAN", "GUID", "GUID_PATTERN", "IDENTITY", "URL", "certificate_thumbprint", "lifecycle_commands",
           "resource_schema"]


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


CREDENTIAL_ITEM_SCHEMA: dict[str, Any] = {  # a key credential of an Office 365 principal or application
    "type": "object", "additionalProperties": False,
    "oneOf": [{"required": ["certificateFile"]}, {"required": ["certificateOf"]}],
    "errorMessage": "needs exactly one of certificateFile | certificateOf",
    "properties": {"certificateFile": {"type": "string", "minLength": 1},
                   "certificateOf": {"type": "string", "minLength": 1,
                                     "description": "A target of this manifest whose signing certificates are "
                                                    "taken from its live state: a Skype pool declaring its "
                                                    "OAuthCertificate, an Exchange organization declaring its "
                                                    "AuthCertificate."}}}
