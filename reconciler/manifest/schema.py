"""The combined manifest JSON Schema, and turning its validation errors into one clear line each.

The schema is assembled from the installed plugins (providers' kind schemas, transports'
connection schemas), so a new provider needs no change here. It is written to
schemas/manifest.schema.json for editors; the loader validates with the same schema, but each
resource against its exact kind schema, so messages name the real mistake instead of every
alternative JSON Schema tried.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.manifest.notify import SCHEMA as NOTIFY_SCHEMA
from reconciler.manifest.positions import FieldPath
from reconciler.manifest.variables import NAME_PATTERN as VARIABLE_NAME_PATTERN
from reconciler.providers.base import Registry, checks_of, handlers_of
from reconciler.suggest import did_you_mean

if TYPE_CHECKING:  # jsonschema is imported when a document is refused (it explains why): valid ones never need it
    from jsonschema import Draft202012Validator, ValidationError

API_VERSION = "reconciler/v1"
TARGET_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MODE_SCHEMA: dict[str, Any] = {
    "enum": ["enforce", "warn", "suspend"],
    "description": "enforce (default) applies changes; warn only reports them; suspend skips.",
}
COMMON_FIELDS = ("target", "kind", "identity", "ensure", "mode")
"""Keys every resource entry has; everything else is a field of the kind."""

_TYPE_NAMES = {
    "string": "a string", "boolean": "a boolean", "integer": "an integer", "number": "a number",
    "object": "a mapping", "array": "a list", "null": "null",
}
_PER_FIELD = ("additionalProperties", "unevaluatedProperties")


def kind_def(provider: str, kind: str) -> str:
    """Name of a kind's schema under `$defs` (provider-qualified: two providers may share a kind)."""
    return f"{provider}.{kind}"


def _plain(value: Any) -> Any:
    """A deep copy as plain dicts and lists, so plugin schemas (any Mapping) serialize and never alias."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _selector(key: str, value: str) -> dict[str, Any]:
    """The `if` of an if/then chosen by a discriminator key (`required` so a missing key matches nothing)."""
    return {"properties": {key: {"const": value}}, "required": [key]}


def _connection_schema(registry: Registry) -> dict[str, Any]:
    branches = []
    for name, factory in sorted(registry.transports.items()):
        then = _plain(factory.connection_schema)
        then["properties"] = {**then.get("properties", {}), "transport": {"const": name}}
        branches.append({"if": _selector("transport", name), "then": then})
    schema: dict[str, Any] = {
        "type": "object",
        "description": "How to reach the target; `transport` selects the other settings. Never secrets.",
        "required": ["transport"],
        "properties": {"transport": {"enum": sorted(registry.transports)}},
    }
    if branches:
        schema["allOf"] = branches
    return schema


def _handlers_schema(provider: object) -> dict[str, Any]:
    """The `handlers` block of a target of this provider: each declared handler's settings + enabled."""
    properties = {}
    for name, spec in sorted(handlers_of(provider).items()):
        settings = _plain(spec.schema)
        settings["properties"] = {"enabled": {"type": "boolean", "description": "false: never run it."},
                                  **settings.get("properties", {})}
        settings.setdefault("description", spec.description)
        properties[name] = settings
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _target_schema(registry: Registry) -> dict[str, Any]:
    prune_rules = [
        {"if": _selector("provider", name),
         "then": {"properties": {"prune": {"items": {"enum": sorted(k for k, s in provider.kinds.items()
                                                                     if s.prunable)}},
                                 "handlers": _handlers_schema(provider)}}}
        for name, provider in sorted(registry.providers.items())
    ]
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["provider", "connection"],
        "properties": {
            "provider": {"enum": sorted(registry.providers), "description": "The system this target is."},
            "connection": {"$ref": "#/$defs/connection"},
            "prune": {
                "type": "array", "uniqueItems": True, "items": {"type": "string"},
                "description": "Kinds whose live objects that this manifest does not list are removed.",
            },
            "protect": {
                "type": "array", "uniqueItems": True, "items": {"type": "string", "minLength": 1},
                "description": "Objects never removed, whatever prune or ensure say: `Kind.identity` or an identity "
                               "(e.g. PartnerApplication.microsoft.exchange).",
            },
            "mode": MODE_SCHEMA,
            "handlers": {"type": "object", "description": "Follow-ups the provider offers (e.g. iisreset)."},
        },
    }
    if prune_rules:
        schema["allOf"] = prune_rules
    return schema


def _check_schema(registry: Registry) -> dict[str, Any]:
    """One `verify:` entry: target, check name, and that check's arguments."""
    rules = []
    names: set[str] = set()
    for _, provider in sorted(registry.providers.items()):
        for name, spec in sorted(checks_of(provider).items()):
            names.add(name)
            then = _plain(spec.schema)
            then["properties"] = {"target": {"type": "string"}, "check": {"const": name},
                                  **then.get("properties", {})}
            then["additionalProperties"] = False
            rules.append({"if": _selector("check", name), "then": then})
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["target", "check"],
        "properties": {
            "target": {"type": "string", "description": "Name of a target defined under `targets`."},
            "check": {"enum": sorted(names), "description": "Which end-to-end check to run."},
        },
    }
    if rules:
        schema["allOf"] = rules
    return schema


def _resource_schema(owners: Mapping[str, list[str]]) -> dict[str, Any]:
    rules = []
    for kind, providers in sorted(owners.items()):
        refs = [{"$ref": f"#/$defs/{kind_def(p, kind)}"} for p in providers]
        # A kind name shared by providers cannot pick one schema alone: the loader picks by the
        # target's provider; editors accept any of them.
        rules.append({"if": _selector("kind", kind), "then": refs[0] if len(refs) == 1 else {"anyOf": refs}})
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["target", "kind"],
        "properties": {
            "target": {"type": "string", "description": "Name of a target defined under `targets`."},
            "kind": {"enum": sorted(owners), "description": "What kind of object this is."},
            "identity": {"type": "string", "description": "Identity of the object on the target."},
            "ensure": {"enum": ["present", "absent"], "description": "absent removes the object."},
            "mode": MODE_SCHEMA,
        },
    }
    if rules:
        schema["allOf"] = rules
    return schema


def build_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a whole manifest, for the installed providers and transports."""
    owners: dict[str, list[str]] = {}
    defs: dict[str, Any] = {}
    for pname, provider in sorted(registry.providers.items()):
        for kname, spec in sorted(provider.kinds.items()):
            owners.setdefault(kname, []).append(pname)
            defs[kind_def(pname, kname)] = _plain(spec.schema)
    defs["connection"] = _connection_schema(registry)
    defs["target"] = _target_schema(registry)
    defs["resource"] = _resource_schema(owners)
    defs["check"] = _check_schema(registry)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "reconciler manifest",
        "description": "Server-to-server OAuth trust that reconcile keeps exactly as declared.",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "targets"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "variables": {
                "type": "object",
                "description": "Text referenced as ${name} in any string under targets and resources.",
                "propertyNames": {
                    "pattern": VARIABLE_NAME_PATTERN,
                    "errorMessage": "is not a valid variable name (letters, digits and _, "
                                    "not starting with a digit)",
                },
                "additionalProperties": {"type": "string"},
            },
            "targets": {
                "type": "object",
                "minProperties": 1,
                "description": "The systems to reconcile, by name.",
                "propertyNames": {
                    "pattern": TARGET_NAME_PATTERN,
                    "errorMessage": "is not a valid target name (letters, digits, _ . -, "
                                    "starting with a letter or digit)",
                },
                "additionalProperties": {"$ref": "#/$defs/target"},
            },
            "resources": {"type": "array", "items": {"$ref": "#/$defs/resource"}},
            "verify": {"type": "array", "items": {"$ref": "#/$defs/check"},
                       "description": "End-to-end checks `reconcile verify` runs (and `apply --verify`)."},
            "notify": NOTIFY_SCHEMA,
        },
        "$defs": defs,
    }


def write_schema(registry: Registry, path: Path) -> None:
    """Write the schema as stable, diff-friendly JSON (sorted keys, trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_schema(registry), indent=2, sort_keys=True) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class SchemaIssue:
    """One schema mistake: where (relative to the checked value) and what, in words."""

    path: FieldPath
    message: str


class SchemaChecker:
    """Validates a manifest's parts against the combined schema, one readable issue per mistake.

    Holds its validators for the duration of one load (they are built lazily per sub-schema).
    """

    def __init__(self, registry: Registry) -> None:
        self.schema = build_schema(registry)
        self._validators: dict[str, Draft202012Validator] = {}
        self._fast: dict[str, Callable[[Any], bool] | None] = {}

    def _schema(self, ref: str) -> dict[str, Any]:
        """The schema `ref` is checked against (see `_validator`)."""
        defs = self.schema["$defs"]
        if ref == "#":
            schema = dict(self.schema)
            # Resource entries are checked one by one (against the exact kind): see check_resource.
            schema["properties"] = {**schema["properties"], "resources": {"type": "array",
                                                                          "items": {"type": "object"}}}
            return schema
        if ref == "#/$defs/resource":
            return {"$defs": defs, "$ref": ref}
        # The kind's own schema, plus the common keys' types in case a kind schema is lax.
        common = {k: v for k, v in defs["resource"]["properties"].items() if k != "kind"}
        return {"$defs": defs, "allOf": [{"$ref": ref}, {"properties": common}]}

    def _fast_check(self, ref: str) -> Callable[[Any], bool] | None:
        """A compiled validator for `ref` (jsonschema-rs), or None when the schema uses what it cannot check.

        It only answers "valid": a document it refuses goes through jsonschema, which says why. Compiled
        validators are kept per schema for the process (the `run` loop loads the same schemas every cycle).
        """
        if ref not in self._fast:
            self._fast[ref] = _compiled(json.dumps(self._schema(ref), sort_keys=True))
        return self._fast[ref]

    def _validator(self, ref: str) -> Draft202012Validator:
        if ref not in self._validators:
            from jsonschema import Draft202012Validator

            self._validators[ref] = Draft202012Validator(
                self._schema(ref), format_checker=Draft202012Validator.FORMAT_CHECKER)
        return self._validators[ref]

    def prepare(self) -> None:
        """Compile the document's check now (what `check_document` does first): for a load with time to spare
        before it has the document (reconciler.manifest.ahead)."""
        self._fast_check("#")

    def check_document(self, data: Any) -> list[SchemaIssue]:
        """Everything except the inside of each resource entry."""
        return self._check("#", data)

    def check_resource(self, item: Any, provider: str | None, kind: str | None) -> list[SchemaIssue]:
        """One resource entry: against `provider`'s `kind` schema when known, else the generic one."""
        ref = f"#/$defs/{kind_def(provider, kind)}" if provider and kind else "#/$defs/resource"
        return self._check(ref, item)

    def resource_check(self, provider: str | None, kind: str) -> Callable[[Any], list[SchemaIssue]]:
        """`check_resource` of `provider`'s `kind`, with its schema looked up once (a load checks thousands)."""
        ref = f"#/$defs/{kind_def(provider, kind)}" if provider and kind else "#/$defs/resource"
        fast = self._fast_check(ref)

        def check(item: Any) -> list[SchemaIssue]:
            if fast is not None:
                try:
                    if fast(item):
                        return []
                except Exception:  # as in _check: jsonschema decides
                    pass
            return explain(self._validator(ref), item)

        return check

    def _check(self, ref: str, instance: Any) -> list[SchemaIssue]:
        fast = self._fast_check(ref)
        if fast is not None:
            try:
                if fast(instance):
                    return []  # valid: nothing to explain
            except Exception:  # could not tell (a value it cannot take, e.g. a huge integer): jsonschema decides
                pass
        return explain(self._validator(ref), instance)


def explain(validator: Draft202012Validator, instance: Any) -> list[SchemaIssue]:
    """What is wrong with `instance` by `validator`'s schema, one readable issue per mistake."""
    found: list[_Found] = []
    for error in validator.iter_errors(instance):
        found.extend(_describe(_pick(validator, error)))
    # One line per mistake: a value of the wrong type also fails its enum/pattern, so say only
    # the type; a misspelt field also leaves its object short of a required one, so say only
    # the misspelling.
    typed = {f.path for f in found if f.tag == _TYPE}
    misspelt = {f.path[:-1] for f in found if f.tag == _TYPO}
    issues: dict[tuple[FieldPath, str], SchemaIssue] = {}
    for f in found:
        if (f.path in typed and f.tag != _TYPE) or (f.path in misspelt and f.tag == _OTHER):
            continue
        issues.setdefault((f.path, f.message), SchemaIssue(f.path, f.message))
    return list(issues.values())


# Keywords jsonschema-rs checks as jsonschema does (draft 2020-12); a schema using any other keyword (`format`
# above all: jsonschema asserts formats, jsonschema-rs only annotates them) is left to jsonschema alone, so the
# compiled check never accepts a document jsonschema would refuse.
_FAST_KEYWORDS = frozenset({
    "$defs", "$ref", "$schema", "additionalProperties", "allOf", "anyOf", "const", "description", "enum",
    "errorMessage", "exclusiveMaximum", "exclusiveMinimum", "if", "then", "else", "items", "maxItems", "maxLength",
    "maxProperties", "maximum", "minItems", "minLength", "minProperties", "minimum", "not", "oneOf", "pattern",
    "patternProperties", "properties", "propertyNames", "required", "title", "type", "uniqueItems",
})
_NAMED = ("properties", "patternProperties", "$defs")  # keywords whose keys are names, not keywords


def _keywords_known(schema: Any) -> bool:
    if isinstance(schema, list):
        return all(_keywords_known(item) for item in schema)
    if not isinstance(schema, Mapping):
        return True
    for key, value in schema.items():
        if key not in _FAST_KEYWORDS:
            return False
        if key in ("enum", "const", "required", "description", "title", "errorMessage", "$schema", "$ref"):
            continue
        if key in _NAMED:
            if not isinstance(value, Mapping) or not all(_keywords_known(v) for v in value.values()):
                return False
        elif not _keywords_known(value):
            return False
    return True


@functools.lru_cache(maxsize=64)
def _compiled(schema_json: str) -> Callable[[Any], bool] | None:
    """jsonschema-rs's `is_valid` for the schema (draft 2020-12), or None: not installed, or not a schema it takes.

    Its regular expressions are ECMA 262's: where they differ from Python's (`$` before a final line break,
    `\\d` for non-ASCII digits) they are the stricter, so a refusal it makes wrongly only costs the slow path.
    """
    schema = json.loads(schema_json)
    if not _keywords_known(schema):
        return None
    try:
        import jsonschema_rs
    except ImportError:  # a platform without its wheel: jsonschema alone checks every document
        return None
    try:
        validator = jsonschema_rs.validator_for(schema, validate_formats=False)
    except Exception:  # a schema it cannot compile: jsonschema alone checks it
        return None
    is_valid: Callable[[Any], bool] = validator.is_valid
    return is_valid


_TYPE, _TYPO, _UNKNOWN, _OTHER = "type", "typo", "unknown", "other"


@dataclass(frozen=True)
class _Found:
    """An issue before de-duplication, tagged with what kind of complaint it is."""

    path: FieldPath
    tag: str
    message: str


def _custom_message(error: ValidationError) -> str | None:
    """A schema's own wording: `errorMessage` (a string, or a mapping keyword -> string)."""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    custom = schema.get("errorMessage")
    if isinstance(custom, Mapping):
        custom = custom.get(str(error.validator))
    return custom if isinstance(custom, str) else None


def _alternatives(error: ValidationError) -> list[str] | None:
    """For anyOf/oneOf whose branches only require fields: the alternatives, like `a | b + c`."""
    branches = error.validator_value
    if error.validator not in ("anyOf", "oneOf") or not isinstance(branches, list):
        return None
    if not all(isinstance(b, Mapping) and set(b) == {"required"} for b in branches):
        return None
    return [" + ".join(str(n) for n in b["required"]) for b in branches]


def _type_fits(validator: Draft202012Validator, error: ValidationError) -> bool:
    """Whether the failing branch was at least meant for this type of value."""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    types = schema.get("type")
    if types is None:
        return True
    names = [types] if isinstance(types, str) else list(types)
    return any(validator.is_type(error.instance, str(t)) for t in names)


def _pick(validator: Draft202012Validator, error: ValidationError) -> ValidationError:
    """For anyOf/oneOf, descend to the branch error most likely to be the user's actual mistake.

    Preference: a branch meant for this type of value, then the deepest path, then a concrete
    keyword over another anyOf/oneOf. A schema's own errorMessage stops the descent.
    """
    while error.context and _custom_message(error) is None and _alternatives(error) is None:
        error = min(error.context, key=lambda e: (not _type_fits(validator, e), -len(e.absolute_path),
                                                  e.validator in ("anyOf", "oneOf")))
    return error


def _show(value: Any) -> str:
    """A value as a user wrote it (YAML spelling), short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"'{value if len(value) <= 80 else value[:77] + '...'}'"
    return str(value)


def _plain_option(value: Any) -> str:
    return value if isinstance(value, str) else _show(value)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list)


def _relocated(error: ValidationError, path: FieldPath) -> FieldPath:
    """`not: {required: [x]}` is about field x: point at x's own line."""
    value = error.validator_value
    if error.validator == "not" and isinstance(value, Mapping) and set(value) == {"required"}:
        names = [n for n in value["required"] if isinstance(error.instance, Mapping) and n in error.instance]
        if len(names) == 1:
            return (*path, str(names[0]))
    return path


def _describe(error: ValidationError) -> list[_Found]:
    """The issue(s) of one picked error; unknown fields yield one each, at their own line."""
    path: FieldPath = tuple(error.absolute_path)
    keyword = error.validator
    value: Any = error.validator_value
    instance = error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if "propertyNames" in error.absolute_schema_path and isinstance(instance, str):
        path = (*path, instance)  # a bad key: point at the key itself
    if keyword in _PER_FIELD and value is False and isinstance(instance, Mapping):
        return _unknown_fields(schema, instance, path)
    custom = _custom_message(error)
    if custom is not None:
        message = f"{_show(instance)} {custom}" if _is_scalar(instance) else custom
        return [_Found(_relocated(error, path), _OTHER, message)]
    if keyword == "type":
        return [_Found(path, _TYPE, _type_message(value, instance))]
    if keyword == "required" and isinstance(instance, Mapping):
        return [_Found(path, _OTHER, f"missing required field '{n}'") for n in value if n not in instance]
    return [_Found(_relocated(error, path), _OTHER, _message(error, schema))]


def _unknown_fields(schema: Mapping[str, Any], instance: Mapping[str, Any], path: FieldPath) -> list[_Found]:
    known = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    expected = f"expected one of: {', '.join(sorted(known))}" if known else "no fields are allowed here"
    absent = [k for k in known if k not in instance]
    return [_Found((*path, key), _TYPO if _near_miss(key, absent) else _UNKNOWN,
                   f"unknown field '{key}' ({expected}){did_you_mean(key, absent)}")
            for key in instance
            if key not in known and not any(re.search(p, key) for p in patterns)]


def _near_miss(key: str, absent: list[str]) -> bool:
    """Whether `key` looks like a misspelling of a field the object lacks (`metadataURL`, `hots`)."""
    folded = {a.casefold() for a in absent}
    return key.casefold() in folded or bool(difflib.get_close_matches(key, absent, n=1, cutoff=0.7))


def _type_message(expected: Any, instance: Any) -> str:
    names = [expected] if isinstance(expected, str) else list(expected)
    message = f"expected {' or '.join(_TYPE_NAMES.get(str(n), str(n)) for n in names)}, got {_show(instance)}"
    if "string" in names and isinstance(instance, bool | int | float):
        message += " (put it in quotes to keep it as text)"
    return message


def _message(error: ValidationError, schema: Mapping[str, Any]) -> str:
    keyword, instance = error.validator, error.instance
    value: Any = error.validator_value
    shown = _show(instance)
    if keyword == "enum":
        options = ", ".join(_plain_option(v) for v in value)
        return f"{shown} is not one of {options}" if _is_scalar(instance) else \
            f"expected one of {options}, got {shown}"
    if keyword == "const":
        return f"expected {_plain_option(value)}, got {shown}"
    if keyword == "pattern":
        description = schema.get("description")
        return f"{shown} does not match {value}" + (f" ({description})" if description else "")
    if keyword == "format":
        return f"{shown} is not a valid {value}"
    if keyword == "minLength":
        return "must not be empty" if value == 1 else f"{shown} is shorter than {value} characters"
    if keyword == "maxLength":
        return f"{shown} is longer than {value} characters"
    if keyword in ("minProperties", "minItems"):
        return "must not be empty" if value == 1 else f"needs at least {value} entries"
    if keyword in ("maxProperties", "maxItems"):
        return f"allows at most {value} entries"
    if keyword == "uniqueItems" and isinstance(instance, list):
        repeated = next((v for i, v in enumerate(instance) if v in instance[:i]), None)
        return f"{_show(repeated)} is listed more than once"
    if keyword in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return f"{shown} is out of range ({error.message.split(' is ', 1)[-1]})"
    if keyword == "not":
        return f"{shown} is not allowed here" if _is_scalar(instance) else "this combination is not allowed"
    if keyword is None:  # the `false` schema
        return "is not allowed here"
    if keyword == "dependentRequired" and isinstance(instance, Mapping):
        missing = [f"'{k}' requires '{d}'" for k, deps in value.items() if k in instance
                   for d in deps if d not in instance]
        return "; ".join(missing) or error.message
    alternatives = _alternatives(error)
    if alternatives is not None:
        if keyword == "oneOf" and not error.context:
            return f"set only one of: {' | '.join(alternatives)}"
        return f"needs one of: {' | '.join(alternatives)}"
    return error.message
