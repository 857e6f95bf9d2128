"""Cmdlet syntax as Microsoft documents it: parameters, their types and the parameter sets.

Each cmdlet's SYNTAX block in Microsoft's cmdlet reference (the `MicrosoftDocs/office-docs-powershell`
markdown, one `### <SetName>` per parameter set) is written here as data, once, and used on both sides
of the seam: providers build commands that must fit a set, the lab refuses a call that fits none (as
PowerShell does), and a conformance test runs every command any provider can emit through `check`.

Binding follows PowerShell's rules for named parameters (prefix abbreviations and positional binding of
cmdlets are not modelled: we always name parameters):
1. a name the cmdlet does not have: "A parameter cannot be found that matches parameter name 'X'.";
2. the sets that contain every given name are candidates; none: "Parameter set cannot be resolved using
   the specified named parameters.";
3. of the candidates, those whose mandatory parameters are all given win; one: that set; several: the
   default set if it is one of them, else the same "cannot be resolved" error; none: the missing mandatory
   parameters of the default (or only) candidate.
"""

from __future__ import annotations

import datetime
import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import CommandSyntaxError

COMMON_PARAMETERS = frozenset(
    name.casefold()
    for name in (
        "Verbose", "Debug", "ErrorAction", "WarningAction", "InformationAction", "ErrorVariable",
        "WarningVariable", "InformationVariable", "OutVariable", "OutBuffer", "PipelineVariable",
    )
)
"""PowerShell's common parameters: every cmdlet accepts them, in every parameter set."""

NO_SET = "Parameter set cannot be resolved using the specified named parameters."


class ParamType(enum.StrEnum):
    """The .NET type of a parameter, as the reference's `Type:` line gives it (reduced to what binding checks)."""

    STRING = "String"
    SWITCH = "SwitchParameter"
    BOOLEAN = "Boolean"
    ENUM = "Enum"
    STRINGS = "String[]"
    """Multi-valued (String[] or MultiValuedProperty): one value or a list."""
    DATETIME = "DateTime"
    IDENTITY = "Identity"
    """An identity parameter (XdsIdentity, PartnerApplicationIdParameter, ...): a string in our use."""
    BYTES = "Byte[]"
    OBJECT = "Object"
    """An object only another cmdlet yields (an SPAppPrincipal): bound from that cmdlet's output through a pipe
    (reconciler.commands.Pipe), never given as text. `values` holds its .NET type name, for the binding error."""


@dataclass(frozen=True)
class Parameter:
    """One parameter of a cmdlet. `values` lists an enum's accepted names (matched case-insensitively)."""

    name: str
    type: ParamType = ParamType.STRING
    values: tuple[str, ...] = ()
    numbers: tuple[tuple[int, str], ...] = ()
    """An enum's numeric values where a source records them (ConvertTo-Json writes enums as numbers)."""

    def check(self, cmdlet: str, value: Any) -> None:
        """Fail as binding would when `value` cannot be bound to this parameter."""
        if value is None:
            if self.type in (ParamType.SWITCH, ParamType.BOOLEAN):
                raise CommandSyntaxError(cmdlet, f"Cannot bind argument to parameter '{self.name}' because it is null.")
            return  # $null clears a String or list property on Set-* cmdlets
        kind = self.type
        if kind in (ParamType.SWITCH, ParamType.BOOLEAN):
            # Boolean parameters accept only Boolean values and numbers (never the string "false").
            if not isinstance(value, bool | int | float):
                type_name = "Management.Automation.SwitchParameter" if kind is ParamType.SWITCH else "Boolean"
                given = "System.String" if isinstance(value, str) else type(value).__name__
                raise CommandSyntaxError(
                    cmdlet, f"Cannot process argument transformation on parameter '{self.name}'. Cannot convert "
                            f"value \"{given}\" to type \"System.{type_name}\". Boolean parameters accept only "
                            "Boolean values and numbers, such as $True, $False, 1 or 0.")
            return
        if kind is ParamType.OBJECT:
            if not isinstance(value, Mapping):
                given = f"{value}" if isinstance(value, str) else type(value).__name__
                target = self.values[0] if self.values else "System.Object"
                raise CommandSyntaxError(
                    cmdlet, f"Cannot bind parameter '{self.name}'. Cannot convert the \"{given}\" value of type "
                            f"\"System.String\" to type \"{target}\".")
            return
        if kind is ParamType.STRINGS:
            items = value if isinstance(value, list | tuple) else [value]
            if not all(isinstance(v, str) for v in items):
                raise _convert(cmdlet, self.name, value, "System.String[]")
            return
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _convert(cmdlet, self.name, value, "System.String")
        if kind is ParamType.ENUM and str(value).casefold() not in {v.casefold() for v in self.values}:
            raise CommandSyntaxError(
                cmdlet, f"Cannot bind parameter '{self.name}'. Cannot convert value \"{value}\" to type. Error: "
                        f"\"Unable to match the identifier name {value} to a valid enumerator name. Specify one of "
                        f"the following enumerator names and try again: {', '.join(self.values)}\"")
        if kind is ParamType.DATETIME:
            try:
                datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                raise _convert(cmdlet, self.name, value, "System.DateTime") from None


def _convert(cmdlet: str, name: str, value: Any, type_name: str) -> CommandSyntaxError:
    return CommandSyntaxError(cmdlet, f"Cannot bind parameter '{name}'. Cannot convert value \"{value}\" "
                                      f"to type \"{type_name}\".")


@dataclass(frozen=True)
class ParameterSet:
    name: str
    mandatory: frozenset[str]
    optional: frozenset[str]

    @functools.cached_property
    def names(self) -> frozenset[str]:
        return self.mandatory | self.optional


@dataclass(frozen=True)
class CmdletSyntax:
    """A cmdlet's documented syntax. `source` is where it was read (repository path of the reference page)."""

    name: str
    source: str
    parameters: Mapping[str, Parameter]
    sets: tuple[ParameterSet, ...]
    default_set: str | None = None
    native: bool = False
    """An executable (e.g. iisreset), documented outside the cmdlet reference; takes positional arguments."""
    _lower: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_lower", {n.casefold(): n for n in self.parameters})

    def parameter(self, name: str) -> Parameter | None:
        canonical = self._lower.get(name.lstrip("-").casefold())
        return self.parameters[canonical] if canonical else None

    def settable(self, name: str) -> bool:
        """Whether any parameter set has this parameter."""
        canonical = self._lower.get(name.casefold())
        return canonical is not None and any(canonical in s.names for s in self.sets)

    def bind(self, parameters: Mapping[str, Any]) -> tuple[ParameterSet, dict[str, Any]]:
        """The parameter set a call resolves to and its parameters under their canonical names.

        Raises CommandSyntaxError with PowerShell's wording when the call fits no documented set.
        """
        bound: dict[str, Any] = {}
        for raw, value in parameters.items():
            name = str(raw).lstrip("-")
            if name.casefold() in COMMON_PARAMETERS:
                continue
            param = self.parameter(name)
            if param is None:
                raise CommandSyntaxError(self.name,
                                         f"A parameter cannot be found that matches parameter name '{name}'.")
            if param.name in bound:
                raise CommandSyntaxError(self.name, f"Cannot bind parameter because parameter '{param.name}' is "
                                                    "specified more than once.")
            param.check(self.name, value)
            bound[param.name] = value
        return self.resolve(bound), bound

    def resolve(self, names: Iterable[str]) -> ParameterSet:
        given = frozenset(names)
        candidates = [s for s in self.sets if given <= s.names]
        if not candidates:
            raise CommandSyntaxError(self.name, NO_SET)
        complete = [s for s in candidates if s.mandatory <= given]
        if len(complete) == 1:
            return complete[0]
        default = next((s for s in (complete or candidates) if s.name == self.default_set), None)
        if complete:
            if default is not None:
                return default
            raise CommandSyntaxError(self.name, NO_SET)
        if len(candidates) > 1 and default is None:
            raise CommandSyntaxError(self.name, NO_SET)
        missing = sorted((default or candidates[0]).mandatory - given)
        raise CommandSyntaxError(self.name, "Cannot process command because of one or more missing mandatory "
                                            "parameters: " + " ".join(missing) + ".")


def cmdlet(name: str, source: str, parameters: Iterable[Parameter], sets: Mapping[str, str], *,
           common: str = "", default_set: str | None = None) -> CmdletSyntax:
    """Write a SYNTAX block compactly: each set is a space-separated list of names, `!` marking a mandatory one.

    `common` names parameters every set has (optional ones such as Confirm, DomainController, Force, WhatIf).
    Every named parameter must be declared in `parameters` (with its type); a missing one is a bug here. A
    declared parameter no set names is not the cmdlet's (so one list can serve New and Set).
    """
    params = {p.name: p for p in parameters}
    shared = common.split()
    built = []
    for set_name, spec in sets.items():
        words = spec.split() + shared
        mandatory = frozenset(w.rstrip("!") for w in words if w.endswith("!"))
        optional = frozenset(w for w in words if not w.endswith("!")) - mandatory
        unknown = (mandatory | optional) - params.keys()
        if unknown:
            raise ValueError(f"{name} set {set_name}: undeclared parameters {sorted(unknown)}")
        built.append(ParameterSet(set_name, mandatory, optional))
    used = {n for s in built for n in s.names}
    return CmdletSyntax(name, source, {n: p for n, p in params.items() if n in used}, tuple(built), default_set)


def native(name: str, source: str) -> CmdletSyntax:
    """An executable: no named parameters, positional arguments only."""
    return CmdletSyntax(name, source, {}, (ParameterSet("Arguments", frozenset(), frozenset()),), native=True)


def string(*names: str) -> list[Parameter]:
    return [Parameter(n) for n in names]


def switch(*names: str) -> list[Parameter]:
    return [Parameter(n, ParamType.SWITCH) for n in names]


def boolean(*names: str) -> list[Parameter]:
    return [Parameter(n, ParamType.BOOLEAN) for n in names]


def identity(*names: str) -> list[Parameter]:
    return [Parameter(n, ParamType.IDENTITY) for n in names]


def strings(*names: str) -> list[Parameter]:
    return [Parameter(n, ParamType.STRINGS) for n in names]


def obj(name: str, type_name: str) -> list[Parameter]:
    """A parameter that takes an object of `type_name` another cmdlet writes (see ParamType.OBJECT)."""
    return [Parameter(name, ParamType.OBJECT, (type_name,))]


def enum_(name: str, *values: str, numbers: tuple[tuple[int, str], ...] = ()) -> list[Parameter]:
    return [Parameter(name, ParamType.ENUM, values, numbers)]
