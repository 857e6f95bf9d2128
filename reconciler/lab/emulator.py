"""Runs commands against the lab state the way a remote PowerShell session would.

This module holds what every emulated platform shares: PowerShell-like parameter binding (names
case-insensitive, unknown names rejected, common parameters accepted), error results that read like
PowerShell's (`<Cmdlet> : <message>`), injected failures, call counting, and the batch loop. Each
platform (Skype for Business in `skype.py`, Exchange in `exchange.py`) is one module exposing a
`Platform` value, and one line in `platform()`.

Parameters are data: values are stored or compared, never evaluated.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.commands import Command, CommandResult, pipe_count_error
from reconciler.errors import CmdletError, CommandSyntaxError, TransportError
from reconciler.kinds.syntax import CmdletSyntax
from reconciler.metadata import MetadataDocument

_ATOMS = (str, int, float, bool, type(None))


def copy_data(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, text, numbers), several times faster than copy.deepcopy,
    which the lab paid for every object of every Get; anything else is copied by copy.deepcopy."""
    if isinstance(value, dict):
        return {k: v if type(v) in _ATOMS else copy_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [v if type(v) in _ATOMS else copy_data(v) for v in value]
    if type(value) in _ATOMS:
        return value
    return copy.deepcopy(value)

COMMON_PARAMETERS = frozenset(
    name.lower()
    for name in (
        "Verbose", "Debug", "ErrorAction", "WarningAction", "InformationAction", "ErrorVariable",
        "WarningVariable", "InformationVariable", "OutVariable", "OutBuffer", "PipelineVariable",
    )
)
"""PowerShell's common parameters: accepted by every cmdlet and, in the lab, without effect."""


@dataclass(frozen=True)
class CmdletContext:
    """What cmdlets may reach outside their host's objects: downloading a metadata document (real HTTP).

    `state` and `host` (the whole lab state and the state's spelling of the host running the command)
    are filled by run_command, for the few commands that look beyond their host's objects:
    Test-CsExStorageConnectivity reads the linked Exchange server, iisreset counts on its host record.
    """

    fetch: Callable[[str], MetadataDocument]
    state: dict[str, Any] | None = None
    host: str | None = None
    arguments: tuple[str, ...] = ()
    """A native command's positional arguments (e.g. the server `iisreset` names), filled by run_command."""


Handler = Callable[[str, Mapping[str, Any], dict[str, Any], CmdletContext], list[dict[str, Any]]]
"""A cmdlet: (canonical cmdlet name, parameters, the host's objects, context) -> output objects.

It must validate everything before changing `objects`, so a failed command changes nothing."""


@dataclass(frozen=True)
class Platform:
    """One emulated product: its cmdlets and the kinds of objects a host of it holds.

    `kinds` maps each object kind to whether it is a singleton (one object) or a list.
    `normalize` completes and checks an object written by hand (seed, `lab set`): raises ValueError.
    `certificate_fields` are properties holding base64 DER, shown as thumbprints.
    """

    name: str
    cmdlets: Mapping[str, Handler]
    kinds: Mapping[str, bool]
    empty_objects: Callable[[], dict[str, Any]]
    normalize: Callable[[str, Mapping[str, Any]], dict[str, Any]]
    certificate_fields: frozenset[str] = field(default_factory=frozenset)
    changed_by_reading: frozenset[str] = frozenset()
    """Gets whose reading can change the host's state (Exchange's Get-AuthConfig makes a staged certificate current
    once its date has passed): a batch of other Gets changes nothing but the injected failures it consumes, so the
    lab transport keeps no copy of the state to tell (`RECONCILE_LAB_CHECK_READS=1` checks it, as the tests do)."""
    syntax: Mapping[str, CmdletSyntax] = field(default_factory=dict)
    """Microsoft's documented syntax of the cmdlets (the same declarations the providers build commands from):
    every call is bound against it before its handler runs, so a call outside every documented parameter set
    fails here as PowerShell fails it."""

    def cmdlet_name(self, name: str) -> str | None:
        """The canonical spelling of a cmdlet name (PowerShell matches them case-insensitively)."""
        lowered = name.lower()
        return next((known for known in self.cmdlets if known.lower() == lowered), None)

    def kind_name(self, name: str) -> str | None:
        lowered = name.lower()
        return next((known for known in self.kinds if known.lower() == lowered), None)


_PLATFORMS = {"skype": "reconciler.lab.skype", "exchange": "reconciler.lab.exchange_certificates",
              "sharepoint": "reconciler.lab.sharepoint"}
"""Each platform's module (its `PLATFORM`): imported when a host of it is first used, as they import this module's
toolkit, and a lab of Skype pools need not load Exchange's and SharePoint's emulation."""


def platform(name: str) -> Platform:
    """The platform for a host's `platform` value; raises TransportError for an unknown one."""
    module = _PLATFORMS.get(name.lower())
    if module is None:
        known = ", ".join(sorted(_PLATFORMS))
        raise TransportError(f"unknown lab platform {name!r} (known: {known})") from None
    found: Platform = importlib.import_module(module).PLATFORM
    return found


def with_defaults(kind: str, data: Mapping[str, Any], defaults_by_kind: Mapping[str, Mapping[str, Any]]
                  ) -> dict[str, Any]:
    """An object written by hand (seed, `lab set`), completed with its kind's defaults, property names canonicalised
    (matched case-insensitively). Raises ValueError for an unknown kind or property."""
    defaults = defaults_by_kind.get(kind)
    if defaults is None:
        raise ValueError(f"unknown kind {kind!r} (known: {', '.join(defaults_by_kind)})")
    names = {name.lower(): name for name in defaults}
    result = copy.deepcopy(dict(defaults))
    for raw, value in data.items():
        name = names.get(str(raw).lower())
        if name is None:
            raise ValueError(f"{kind} has no property {raw!r} (known: {', '.join(defaults)})")
        result[name] = value
    return result


# --- parameter binding --------------------------------------------------------------------------


def bind(cmdlet: str, parameters: Mapping[str, Any], accepted: Iterable[str]) -> dict[str, Any]:
    """Parameters under their canonical names, as PowerShell binds named parameters.

    Names match case-insensitively (a leading `-` is allowed); a name the cmdlet does not have fails
    as in PowerShell. Common parameters are dropped. Prefix abbreviations are not modelled.
    """
    canonical = {name.lower(): name for name in accepted}
    bound: dict[str, Any] = {}
    for raw, value in parameters.items():
        name = str(raw).lstrip("-")
        key = name.lower()
        if key in COMMON_PARAMETERS:
            continue
        if key not in canonical:
            raise CmdletError(cmdlet, f"A parameter cannot be found that matches parameter name '{name}'.")
        if canonical[key] in bound:
            raise CmdletError(
                cmdlet,
                f"Cannot bind parameter because parameter '{canonical[key]}' is specified more than once.",
            )
        bound[canonical[key]] = value
    return bound


def require(cmdlet: str, bound: Mapping[str, Any], *names: str) -> None:
    """Fail like PowerShell when mandatory parameters are missing, null or empty (non-interactive)."""
    missing = [name for name in names if name not in bound]
    if missing:
        raise CmdletError(
            cmdlet,
            "Cannot process command because of one or more missing mandatory parameters: "
            + " ".join(missing) + ".",
        )
    for name in names:
        if bound[name] is None:
            raise CmdletError(cmdlet, f"Cannot bind argument to parameter '{name}' because it is null.")
        if bound[name] == "":
            raise CmdletError(cmdlet, f"Cannot bind argument to parameter '{name}' because it is an empty string.")


def as_string(cmdlet: str, name: str, value: Any) -> str | None:
    """A [string] parameter: scalars convert as PowerShell converts them; collections do not."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return str(value)
    raise CmdletError(
        cmdlet,
        f"Cannot convert '{type(value).__name__}' to the type 'System.String' required by parameter '{name}'.",
    )


def as_bool(cmdlet: str, name: str, value: Any) -> bool:
    """A [bool] parameter: PowerShell accepts only booleans and numbers (never the string "false")."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    kind = "System.String" if isinstance(value, str) else type(value).__name__
    raise CmdletError(
        cmdlet,
        f"Cannot process argument transformation on parameter '{name}'. Cannot convert value "
        f'"{kind}" to type "System.Boolean". Boolean parameters accept only Boolean values and numbers, '
        "such as $True, $False, 1 or 0.",
    )


def as_switch(cmdlet: str, name: str, value: Any) -> bool:
    """A switch: present is True; `-Switch:$false` is False."""
    return as_bool(cmdlet, name, value)


def as_enum(cmdlet: str, name: str, value: Any, allowed: Sequence[str]) -> str:
    """An enumeration parameter: case-insensitive, stored under its canonical spelling."""
    text = as_string(cmdlet, name, value) or ""
    for option in allowed:
        if option.lower() == text.lower():
            return option
    raise CmdletError(
        cmdlet,
        f"Cannot bind parameter '{name}'. Cannot convert value \"{text}\" to type \"{name}\". "
        f'Error: "Unable to match the identifier name {text} to a valid enumerator name. Specify one of '
        f'the following enumerator names and try again: {", ".join(allowed)}"',
    )


def find(items: Sequence[Mapping[str, Any]], identity: str) -> int | None:
    """Index of the object with this Identity (case-insensitive, as the cmdlets match), or None."""
    lowered = identity.lower()
    return next((i for i, item in enumerate(items) if str(item.get("Identity", "")).lower() == lowered), None)


def parameter(parameters: Mapping[str, Any], name: str) -> Any:
    """A parameter's value by case-insensitive name (before binding), or None."""
    lowered = name.lower()
    return next((v for k, v in parameters.items() if str(k).lstrip("-").lower() == lowered), None)


# --- running commands ---------------------------------------------------------------------------


def find_host(state: Mapping[str, Any], name: str) -> str | None:
    """The state's spelling of a host name (host names are case-insensitive, like DNS)."""
    hosts = state.get("hosts", {})
    if name in hosts:
        return name
    lowered = name.lower()
    return next((h for h in hosts if h.lower() == lowered), None)


def take_failure(state: dict[str, Any], host: str, cmdlet: str, identity: Any) -> str | None:
    """Consume one matching injected failure and return its message, or None if none matches.

    An entry matches on host and cmdlet (case-insensitive) and on identity unless it has none.
    Entries whose count reaches zero are removed.
    """
    failures = state.get("failures") or []
    for entry in failures:
        if int(entry.get("times", 0)) <= 0:
            continue
        if str(entry.get("host", "")).lower() != host.lower():
            continue
        if str(entry.get("cmdlet", "")).lower() != cmdlet.lower():
            continue
        wanted = entry.get("identity")
        if wanted not in (None, "", "*") and str(wanted).lower() != str(identity or "").lower():
            continue
        entry["times"] = int(entry["times"]) - 1
        state["failures"] = [f for f in failures if int(f.get("times", 0)) > 0]
        message = entry.get("message") or "The operation failed because of an injected lab failure."
        return str(message)
    return None


def reads_only(commands: Sequence[Command]) -> bool:
    """Whether every command of a batch (and every source piped into one) is a Get-: no later command of it can
    change what an earlier one returned."""
    return all(not command.native and all(cmdlet[:4].lower() == "get-" for cmdlet in command.all_cmdlets)
               for command in commands)


def run_command(state: dict[str, Any], host: str, command: Command, context: CmdletContext, *,
                copy_output: bool = True) -> CommandResult:
    """Run one command on one host of the state (which it may change); never raises for cmdlet errors.

    The output is a copy, so that a later command of the batch changing the state leaves what this one returned as
    it was; `copy_output=False` when there is no such later change (the batch `reads_only`, its state read for it
    alone).

    A piped command (`command.pipe`) runs its source first, on the same host: a failed source fails the
    command, a source that wrote other than one object fails it unrun (`pipe_count_error`), and the one
    object is bound to the pipe's parameter, as PowerShell binds pipeline input by value."""
    if command.pipe is not None:
        return _run_piped(state, host, command, context)
    record = state["hosts"][host]
    plat = platform(str(record.get("platform", "skype")))
    name = plat.cmdlet_name(command.cmdlet) or command.cmdlet
    injected = take_failure(state, host, name, parameter(command.parameters, "Identity"))
    try:
        if injected is not None:
            raise CmdletError(name, injected)
        handler = plat.cmdlets.get(name)
        if handler is None:
            raise CmdletError(
                name,
                f"The term '{command.cmdlet}' is not recognized as the name of a cmdlet, function, "
                "script file, or operable program.",
            )
        documented = plat.syntax.get(name)
        if documented is not None and not command.native:
            try:
                documented.bind(command.parameters)
            except CommandSyntaxError as exc:
                raise CmdletError(name, exc.message) from None
        objects = record.setdefault("objects", plat.empty_objects())
        output = handler(name, command.parameters, objects,
                         replace(context, state=state, host=host, arguments=tuple(command.arguments)))
    except CmdletError as exc:
        return CommandResult(command=command, ok=False, error=exc.message)
    return CommandResult(command=command, ok=True, output=tuple(copy_data(output) if copy_output else output))


def _run_piped(state: dict[str, Any], host: str, command: Command, context: CmdletContext) -> CommandResult:
    assert command.pipe is not None
    source = run_command(state, host, command.pipe.source, context)
    if not source.ok:
        return CommandResult(command=command, ok=False, error=source.error)
    if len(source.output) != 1:
        return CommandResult(command=command, ok=False, error=pipe_count_error(command, len(source.output)))
    bound = replace(command, parameters={**command.parameters, command.pipe.parameter: source.output[0]}, pipe=None)
    result = run_command(state, host, bound, context)
    return replace(result, command=command)


def _selected(result: CommandResult, select: Sequence[str]) -> CommandResult:
    """Like `| Select-Object -Property ...` on the server: only the asked-for properties come back."""
    if not select or not result.ok:
        return result
    wanted = {name.lower() for name in select}
    # The objects of one Get share their property names: each name is matched once, not once per object.
    names = {name for name in set().union(*result.output) if name.lower() in wanted}
    output = tuple({k: v for k, v in obj.items() if k in names} for obj in result.output)
    return CommandResult(result.command, result.ok, output, result.error)


def execute_batch(
    state: dict[str, Any],
    host: str,
    commands: Sequence[Command],
    *,
    stop_on_error: bool,
    context: CmdletContext,
    copy_output: bool = True,
) -> list[CommandResult]:
    """One round trip to one host: count it, run the commands in order, stop at a failure if asked.

    `copy_output`: see run_command.

    `host` must be the state's spelling (see find_host). Results cover the commands that ran.
    """
    record = state["hosts"][host]
    plat = platform(str(record.get("platform", "skype")))
    record["roundTrips"] = int(record.get("roundTrips", 0)) + 1
    calls = record.setdefault("calls", {})
    results: list[CommandResult] = []
    for command in commands:
        for cmdlet in command.all_cmdlets:  # a piped command's source runs too
            name = plat.cmdlet_name(cmdlet) or cmdlet
            calls[name] = int(calls.get(name, 0)) + 1
        result = _selected(run_command(state, host, command, context, copy_output=copy_output), command.select)
        results.append(result)
        if stop_on_error and not result.ok:
            break
    return results
