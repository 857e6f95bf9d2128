"""One declaration per cmdlet-managed kind, and everything derived from it.

A `CmdletKind` holds, once: the documented syntax of its Get/New/Set/Remove cmdlets (reconciler.kinds.syntax,
cited to Microsoft's reference), the properties its Get cmdlet really returns and the manifest field each maps
to (`Prop`), and how each field compares. From it derive:

- the planner's KindSpec: a field whose parameter is in no parameter set of the Set cmdlet forces a replace,
  with that reason (derived from the syntax, not guessed);
- the discovery command (Get, selecting the properties read) and the parser of its output;
- New (the parameter set the declared fields satisfy), Set (one command per parameter set the changed fields
  need, fewest first), Remove, and the restore of a removed object (New from what was read);
- the manifest schema of the kind's fields (from the parameter types) and the cmdlets a transport may run.

Adding a field to a kind is one `Prop` (plus its test); adding a kind is one `CmdletKind`.
"""

from __future__ import annotations

import builtins
import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.changes import Action, Change
from reconciler.commands import Command
from reconciler.kinds.certificates import CertificateLookup
from reconciler.kinds.schema import resource_schema
from reconciler.kinds.spec import DiagnoseContext, FieldSpec, Finding, KindSpec
from reconciler.kinds.syntax import CmdletSyntax, Parameter, ParameterSet, ParamType
from reconciler.model import JSONValue

Reader = Callable[[Mapping[str, Any]], JSONValue]
"""Reads one field from a Get output object whose keys are lower-cased property names."""


@dataclass(frozen=True)
class Prop:
    """One manifest field of a kind: where Get reports it, which parameter writes it, how it compares.

    `property`: the Get property (None: write-only, never read or compared, e.g. TrustAnySSLCertificate).
    `parameter`: the New/Set parameter (default: the property's name); None: read-only, never written.
    `read`: a custom reader over the whole (lower-cased) output object, for values not held in one property
    (e.g. a Skype partner application's form, which Get reports in `AuthToken`).
    `schema`: the JSON Schema of the manifest value (default: from the parameter's documented type).
    `manifest`: whether the manifest may declare it (False for facts only read, shown to people).
    """

    field: str
    property: str | None
    parameter: str | None = ""
    read: Reader | None = None
    schema: Mapping[str, Any] | None = None
    manifest: bool = True
    ignore_case: bool = False
    sensitive: bool = False
    metadata_url: bool = False
    display: Callable[[Any], Any] | None = None
    equal: Callable[[Any, Any, Mapping[str, Any]], bool] | None = None
    description: str = ""
    write: Callable[[Any, Mapping[str, Any]], Any] | None = None
    """The parameter value for (a desired value, the object's other fields) when they differ: e.g. a switch, or the
    metadata URL again, that makes the server re-read what it caches."""

    @builtins.property
    def readable(self) -> bool:
        return self.property is not None or self.read is not None

    @builtins.property
    def writes(self) -> str | None:
        return self.property if self.parameter == "" else self.parameter


@dataclass(frozen=True)
class CmdletKind:
    """A kind managed with Get/New/Set/Remove cmdlets, declared once.

    `identity_property`: the Get property naming an object; `new_identity` / `identity_parameter`: the parameter
    naming it on New and on Set/Remove (Exchange: -Name on New, -Identity after). A singleton (`singleton`
    set to its fixed identity, e.g. "Global") has no New or Remove and is never named on Set unless
    `identity_parameter` says so.
    `together`: groups of fields always written together (when one is written, the others declared are too).
    `set_extra`: parameters added to a Set command whose parameter set has them (e.g. -Force where Microsoft's
    own scripts pass it).
    """

    kind: str
    description: str
    get: CmdletSyntax
    props: tuple[Prop, ...]
    new: CmdletSyntax | None = None
    set: CmdletSyntax | None = None
    remove: CmdletSyntax | None = None
    identity_property: str = "Identity"
    new_identity: str | None = "Identity"
    identity_parameter: str | None = "Identity"
    singleton: str | None = None
    after: tuple[str, ...] = ()
    together: tuple[tuple[str, ...], ...] = ()
    set_extra: Mapping[str, Any] = field(default_factory=dict)
    rules: tuple[dict[str, Any], ...] = ()
    required_when_present: tuple[str, ...] = ()
    identity_schema: Mapping[str, Any] | None = None
    extra_schema: Mapping[str, Any] = field(default_factory=dict)
    """Manifest-only fields that `prepare` turns into declared ones (e.g. certificateFile)."""
    prepare: Callable[[dict[str, JSONValue], Path], dict[str, JSONValue]] | None = None
    diagnose: Callable[[Mapping[str, JSONValue], Mapping[str, JSONValue] | None, DiagnoseContext],
                       list[Finding]] | None = None
    exclusive: tuple[str, ...] = ()
    """Fields of which an object holds one at a time (a partner application's form): writing one clears the others."""
    resolve: Callable[[Mapping[str, JSONValue], CertificateLookup], dict[str, JSONValue]] | None = None
    references: Callable[[Mapping[str, JSONValue]], tuple[str, ...]] | None = None
    """`certificateOf` fields and how they become concrete (see KindSpec.resolve, reconciler.references)."""
    refresh_note: str = ""
    follows_source: bool = True

    # --- lookups --------------------------------------------------------------------------------

    def prop(self, name: str) -> Prop:
        for p in self.props:
            if p.field == name:
                return p
        raise KeyError(f"{self.kind} has no field {name!r}")

    @property
    def cmdlets(self) -> tuple[CmdletSyntax, ...]:
        return tuple(c for c in (self.get, self.new, self.set, self.remove) if c is not None)

    def _settable(self, p: Prop) -> bool:
        return self.set is not None and p.writes is not None and self.set.settable(p.writes)

    # --- the planner's view -----------------------------------------------------------------------

    def replace_reason(self, p: Prop) -> str | None:
        """Why a difference in this field needs Remove + New: its parameter is in no set of the Set cmdlet."""
        if self.singleton or p.writes is None or not p.readable or self._settable(p):
            return None
        if self.new is None or self.new.parameter(p.writes) is None:
            return None
        verb = self.set.name if self.set is not None else f"Set-{self.new.name.split('-', 1)[1]}"
        return f"{p.writes} cannot be changed by {verb} (in none of its documented parameter sets)"

    def spec(self) -> KindSpec:
        fields = {
            p.field: FieldSpec(p.field, replace_reason=self.replace_reason(p), ignore_case=p.ignore_case,
                               sensitive=p.sensitive, metadata_url=p.metadata_url, display=p.display,
                               equal=p.equal, control=not p.readable)
            for p in self.props
        }
        return KindSpec(kind=self.kind, fields=fields, schema=self.schema(), singleton=self.singleton is not None,
                        after=self.after, prepare=self.prepare, description=self.description,
                        diagnose=self.diagnose, exclusive=self.exclusive, replacement=self.replacement,
                        exported=self.exported, resolve=self.resolve, references=self.references,
                        refresh_note=self.refresh_note, follows_source=self.follows_source)

    def schema(self) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        if self.identity_schema is not None:
            properties["identity"] = dict(self.identity_schema)
        for p in self.props:
            if not p.manifest:
                continue
            properties[p.field] = dict(p.schema) if p.schema is not None else self._field_schema(p)
            if p.description:
                properties[p.field]["description"] = p.description
        properties.update(self.extra_schema)
        return resource_schema(self.kind, properties, description=self.description,
                               required_when_present=self.required_when_present, rules=self.rules,
                               identity_required=self.singleton is None)

    def _field_schema(self, p: Prop) -> dict[str, Any]:
        param = self._parameter(p.writes) if p.writes else None
        if param is None:
            return {"type": "string", "minLength": 1}
        if param.type in (ParamType.BOOLEAN,):
            return {"type": "boolean"}
        if param.type is ParamType.SWITCH:
            return {"const": True, "errorMessage": "must be true when set"}
        if param.type is ParamType.ENUM:
            return {"enum": list(param.values)}
        if param.type is ParamType.STRINGS:
            return {"type": "array", "uniqueItems": True, "items": {"type": "string", "minLength": 1}}
        return {"type": "string", "minLength": 1}

    def _parameter(self, name: str) -> Parameter | None:
        for syntax in (self.new, self.set):
            if syntax is not None and (found := syntax.parameter(name)) is not None:
                return found
        return None

    # --- discovery --------------------------------------------------------------------------------

    def discovery(self) -> Command:
        """The Get command, selecting on the server the properties this kind reads."""
        read = [p.property for p in self.props if p.property is not None and p.read is None]
        extra = [name for p in self.props if p.read is not None for name in _read_properties(p)]
        return Command(self.get.name, select=tuple(dict.fromkeys([self.identity_property, "Identity", *read,
                                                                   *extra])))

    def parse(self, obj: Mapping[str, Any]) -> tuple[str, dict[str, JSONValue]]:
        """(identity, fields) of one Get output object, read the way the real server returns it."""
        try:
            lowered = {k.lower(): v for k, v in obj.items()}
        except AttributeError:  # a property name that is not text
            lowered = {str(k).lower(): v for k, v in obj.items()}
        fields: dict[str, JSONValue] = {}
        normalised = self._normalised
        reading, identity_property = self._reading()
        for name, read, property_, param, always in reading:
            value = read(lowered) if read is not None else lowered.get(property_)
            # Only an empty string, an enum and a multi-valued parameter read as something else (_normalised).
            if always or value == "":
                value = normalised(param, value)
            fields[name] = value
        identity = self.singleton or _identity_text(lowered.get(identity_property) or lowered.get("identity"))
        return identity, fields

    def _reading(self) -> tuple[tuple[tuple[str, Reader | None, str, Parameter | None, bool], ...], str]:
        """Per readable field: its name, reader, lower-cased property, parameter and whether its values are always
        normalised (an enum or a multi-valued parameter); and the identity property, lower-cased. Worked out once
        per kind."""
        facts = self.__dict__.get("_facts")
        if facts is None:
            plan = []
            for p in self.props:
                if p.readable:
                    param = self._parameter(p.writes) if p.writes else None
                    plan.append((p.field, p.read, str(p.property).lower(), param,
                                 param is not None and param.type in _NORMALISED))
            facts = (tuple(plan), self.identity_property.lower())
            object.__setattr__(self, "_facts", facts)  # a cache, not a field: equality and hash ignore it
        return facts

    @staticmethod
    def _normalised(param: Parameter | None, value: Any) -> JSONValue:
        """Empty strings read as unset; enums sent as numbers (ConvertTo-Json) read by their name."""
        if value == "":
            return None
        if param is None:
            return value
        if param.type is ParamType.ENUM and isinstance(value, int) and not isinstance(value, bool):
            return dict(param.numbers).get(value, value)
        if param.type is ParamType.STRINGS:
            if value is None:
                return []
            return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
        return value

    # --- commands -----------------------------------------------------------------------------------

    def _value(self, p: Prop, value: Any, fields: Mapping[str, Any]) -> Any:
        if p.write is not None:
            return p.write(value, fields)
        return list(value) if isinstance(value, list | tuple) else value

    def _written_by(self, syntax: CmdletSyntax) -> tuple[tuple[Prop, Parameter], ...]:
        """The props a cmdlet's parameters write, each with its parameter, in declaration order (worked out once
        per kind and cmdlet)."""
        cache: dict[str, tuple[tuple[Prop, Parameter], ...]] | None = self.__dict__.get("_writers_of")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_writers_of", cache)  # a cache, not a field: equality and hash ignore it
        found = cache.get(syntax.name)
        if found is None:
            found = cache[syntax.name] = tuple((p, param) for p in self.props if p.writes is not None
                                               and (param := syntax.parameter(p.writes)) is not None)
        return found

    def _new_writes(self, fields: Mapping[str, JSONValue]) -> dict[str, Any]:
        """The New parameters the fields give values for (a switch only when true)."""
        assert self.new is not None, f"{self.kind} has no New cmdlet"
        available: dict[str, Any] = {}
        for p, param in self._written_by(self.new):
            value = fields.get(p.field)
            if not _is_set(value) or (param.type is ParamType.SWITCH and value is not True):
                continue
            available[param.name] = self._value(p, value, fields)
        return available

    def new_set(self, fields: Mapping[str, JSONValue]) -> ParameterSet | None:
        """The New parameter set these fields satisfy, the one that writes the most of them (first on a tie)."""
        return self._new_set(self._new_writes(fields))

    def _new_set(self, writes: Mapping[str, Any]) -> ParameterSet | None:
        assert self.new is not None, f"{self.kind} has no New cmdlet"
        available = writes.keys() | ({self.new_identity} if self.new_identity else set())
        best: tuple[int, int, ParameterSet] | None = None
        for rank, candidate in enumerate(self.new.sets):
            if candidate.mandatory <= available:
                score = (len(available & candidate.names), -rank)
                if best is None or score > best[:2]:
                    best = (score[0], score[1], candidate)
        return best[2] if best is not None else None

    def new_command(self, identity: str, fields: Mapping[str, JSONValue]) -> Command:
        """New with the parameter set the fields satisfy (the one that writes the most of them)."""
        assert self.new is not None, f"{self.kind} has no New cmdlet"
        writes = self._new_writes(fields)
        chosen = self._new_set(writes)
        if chosen is None:
            raise ValueError(f"{self.kind} {identity!r}: the declared fields fit no parameter set of {self.new.name}")
        params: dict[str, Any] = {self.new_identity: identity} if self.new_identity else {}
        names = chosen.names
        params.update({n: v for n, v in writes.items() if n in names})
        return self._command(self.new, params)

    def exported(self, live: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
        """The manifest fields that describe a live object exactly: those New would be given to re-create it (the
        parameter set its values satisfy), or for a singleton those Set writes; empty values and false switches
        left out. `reconcile export` writes these, so a plan against the export shows no changes."""
        chosen = self.new_set(live) if self.new is not None else None
        out: dict[str, JSONValue] = {}
        for p in self.props:
            value = live.get(p.field)
            if not p.manifest or not p.readable or p.writes is None or not _is_set(value):
                continue
            syntax = self.new if chosen is not None else self.set
            param = syntax.parameter(p.writes) if syntax is not None else None
            if param is None or (chosen is not None and param.name not in chosen.names):
                continue
            if chosen is None and not self._settable(p):
                continue
            if param.type is ParamType.SWITCH and value is not True:
                continue
            out[p.field] = value
        return out

    def replacement(self, desired: Mapping[str, JSONValue], live: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
        """What a replace's New creates: the manifest's fields, plus the live values of the fields it leaves out
        that fit the parameter set the manifest's fields choose (a disabled application comes back disabled;
        the old form does not come back next to the new one)."""
        if self.new is None:
            return dict(desired)
        chosen = self.new_set(desired)
        kept: dict[str, JSONValue] = {}
        for p in self.props:
            if p.field in desired or not p.readable or p.writes is None or chosen is None:
                continue
            param = self.new.parameter(p.writes)
            value = live.get(p.field)
            if param is None or param.name not in chosen.names or not _is_set(value):
                continue
            if param.type is ParamType.SWITCH and value is not True:
                continue
            kept[p.field] = value
        return {**kept, **desired}

    def set_commands(self, identity: str, changed: Sequence[str], after: Mapping[str, JSONValue],
                     desired: Mapping[str, JSONValue]) -> tuple[Command, ...]:
        """Set with the changed fields: one command per parameter set needed, the set covering most first."""
        assert self.set is not None, f"{self.kind} has no Set cmdlet"
        names = set(changed)
        for group in self.together:
            if names & set(group):
                names |= {f for f in group if _is_set(after.get(f)) or _is_set(desired.get(f))}
        writes: dict[str, Any] = {}
        merged: dict[str, Any] | None = None  # what a prop's `write` reads: the desired fields, then the after ones
        for p, _ in self._written_by(self.set):
            if p.field in names and p.writes is not None:
                value = after.get(p.field, desired.get(p.field)) if p.readable else desired.get(p.field)
                if not p.readable and not _is_set(value):
                    continue
                if p.write is not None and merged is None:
                    merged = {**desired, **after}
                writes[p.writes] = self._value(p, value, merged if merged is not None else {})
        commands = []
        remaining = dict(writes)
        while remaining:
            best = max(self.set.sets, key=lambda s: len(remaining.keys() & s.names))
            take = {n: v for n, v in remaining.items() if n in best.names}
            if not take:
                raise ValueError(f"{self.set.name}: no parameter set has {sorted(remaining)}")
            params: dict[str, Any] = {}
            if self.identity_parameter and self.identity_parameter in best.names:
                params[self.identity_parameter] = identity
            params.update(take)
            params.update({n: v for n, v in self.set_extra.items() if n in best.names})
            commands.append(self._command(self.set, params))
            remaining = {n: v for n, v in remaining.items() if n not in take}
        return tuple(commands)

    def commands(self, change: Change) -> tuple[Command, ...]:
        """The commands that carry out a change: Remove, New, Set, or a replace's Remove right before its New."""
        identity = change.key.identity
        after = change.after or {}
        if change.is_replace:
            return (self.remove_command(identity), self.new_command(identity, after))
        if change.actions[0] is Action.DELETE:
            return (self.remove_command(identity),)
        if change.actions[0] is Action.CREATE:
            return (self.new_command(identity, after),)
        desired = change.desired.fields if change.desired is not None else after
        return self.set_commands(identity, change.changed, after, desired)

    def restore(self, fields: Mapping[str, JSONValue], identity: str) -> tuple[Command, ...]:
        """Re-create an object exactly as it was read (when a replace's New failed after its Remove)."""
        return (self.new_command(identity, fields),) if self.new is not None else ()

    def remove_command(self, identity: str) -> Command:
        assert self.remove is not None, f"{self.kind} has no Remove cmdlet"
        return Command(self.remove.name, {self.identity_parameter or "Identity": identity})

    def _command(self, syntax: CmdletSyntax, params: dict[str, Any]) -> Command:
        names = self._parameter_facts(syntax)
        switches = []
        shown: dict[str, str] = {}
        sensitive = set()
        for name, value in params.items():
            facts = names.get(name)
            if facts is None:
                param = syntax.parameter(name)
                facts = names[name] = (param is not None and param.type is ParamType.SWITCH, self.prop_for(name))
            switch, p = facts
            if switch:
                switches.append(name)
            if p is not None and p.display is not None and _is_set(value):
                shown[name] = str(p.display(value))
            if p is not None and p.sensitive:
                sensitive.add(name)
        return Command(syntax.name, params, switches=frozenset(switches), shown=shown, sensitive=frozenset(sensitive))

    def _parameter_facts(self, syntax: CmdletSyntax) -> dict[str, tuple[bool, Prop | None]]:
        """Per parameter name as given to a command of this cmdlet: whether it is a switch, and the prop it writes
        (filled as names are met, once per kind and cmdlet)."""
        cache: dict[str, dict[str, tuple[bool, Prop | None]]] | None = self.__dict__.get("_facts_of")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_facts_of", cache)  # a cache, not a field: equality and hash ignore it
        return cache.setdefault(syntax.name, {})

    def prop_for(self, parameter: str) -> Prop | None:
        """The field a parameter writes (the first declared, when several do)."""
        writers: dict[str, Prop] | None = self.__dict__.get("_writers")
        if writers is None:
            writers = {}
            for p in self.props:
                if p.writes is not None:
                    writers.setdefault(p.writes.casefold(), p)
            object.__setattr__(self, "_writers", writers)  # a cache, not a field: equality and hash ignore it
        return writers.get(parameter.casefold())


def _read_properties(p: Prop) -> tuple[str, ...]:
    reads = getattr(p.read, "properties", ())
    return tuple(reads)


def reads(*properties: str) -> Callable[[Reader], Reader]:
    """Mark a custom reader with the Get properties it needs (so discovery selects them)."""
    def mark(fn: Reader) -> Reader:
        fn.properties = properties  # type: ignore[attr-defined]
        return fn
    return mark


def _identity_text(value: Any) -> str:
    if isinstance(value, Mapping):  # ConvertTo-Json of an identity object
        inner = {str(k).lower(): v for k, v in value.items()}
        value = inner.get("name") or inner.get("instanceid") or inner.get("rdn") or ""
    return "" if value is None else str(value)


def _is_set(value: Any) -> bool:
    return value is not None and value != "" and value != []


_NORMALISED = frozenset({ParamType.ENUM, ParamType.STRINGS})
"""Parameter types whose values `_normalised` reads differently from how they arrive."""
_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def read_date(value: Any) -> str | None:
    """A date as ISO 8601: accepts ISO text and Windows PowerShell 5.1's `/Date(ms)/` (what ConvertTo-Json writes)."""
    if value in (None, ""):
        return None
    text = str(value)
    match = _DATE.match(text)
    if match:
        moment = datetime.datetime.fromtimestamp(int(match.group(1)) / 1000, tz=datetime.UTC)
        return moment.isoformat()
    return text
