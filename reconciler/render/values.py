"""How field values are shown: masked when sensitive, shortened by the field's display function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.commands import MASK
from reconciler.kinds.spec import KindSpec
from reconciler.model import JSONValue


def shown_value(spec: KindSpec | None, name: str, value: JSONValue) -> JSONValue:
    if spec is None:
        return value
    if value is None:
        return None
    field = spec.fields.get(name)
    if field is None:  # a field the kind does not declare: neither sensitive nor shown another way
        return value
    if field.sensitive:
        return MASK
    if field.display is not None:
        return field.display(value)
    return value


def shown_record(spec: KindSpec | None, record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {name: shown_value(spec, name, value) for name, value in record.items()}


def sensitive_map(spec: KindSpec | None, record: Mapping[str, Any] | None) -> dict[str, bool]:
    if spec is None or record is None:
        return {}
    fields = spec.fields
    return {name: True for name in record if (field := fields.get(name)) is not None and field.sensitive}
