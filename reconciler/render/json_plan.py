"""The plan for machines: a versioned JSON document modelled on Terraform's JSON plan format.

`format_version` changes its major number only on incompatible changes. Each resource change has
`actions` (["create"], ["update"], ["delete"] or ["delete","create"] for a replace), `action_reason`,
`before`/`after` with `*_sensitive` maps (sensitive values are replaced, never written), and the
commands as data. The same document is what `plan --out` saves.

A REST command (Microsoft Graph) carries its request body whole, exactly as apply will send it (the text
plan shows a short form, e.g. certificates as thumbprints); a body its provider marks sensitive is masked.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler import __version__
from reconciler.commands import HTTP_METHODS, Command
from reconciler.plan import Plan
from reconciler.render.text import KindLookup
from reconciler.render.values import sensitive_map, shown_record


def command_to_json(command: Command) -> dict[str, Any]:
    """A command as data: sensitive parameters masked; a REST request's body whole unless it is sensitive."""
    document = command.to_json()
    if command.cmdlet in HTTP_METHODS and not command.native and "body" in command.parameters \
            and "body" not in command.sensitive:
        document["parameters"]["body"] = command.parameters["body"]
    return document


def saved_command_differences(saved: dict[str, Any], plan: Plan) -> list[str]:
    """Where the commands a saved plan shows differ from those apply would run now, by address.

    The saved document is what was reviewed: a certificate file replaced after `plan --out`, or a command
    edited by hand, gives other commands now, and apply must refuse rather than run what nobody saw.
    """
    def canonical(commands: Any) -> str:
        return json.dumps(commands, sort_keys=True, default=str)

    saved_commands = {c.get("address"): canonical(c.get("commands")) for c in saved.get("resource_changes", [])}
    saved_commands.update({h.get("address"): canonical(h.get("commands")) for h in saved.get("handlers", [])})
    current = {c.key.address: canonical([command_to_json(x) for x in c.commands]) for c in plan.changes}
    current.update({h.address: canonical([command_to_json(x) for x in h.commands]) for h in plan.handlers})
    return [f"{address}: its commands differ" for address in sorted(set(saved_commands) | set(current), key=str)
            if saved_commands.get(address) != current.get(address)]


def plan_to_json(plan: Plan, kind_of: KindLookup) -> dict[str, Any]:
    changes = []
    for change in plan.changes:
        spec = kind_of(change)
        changes.append({
            "address": change.key.address,
            "target": change.key.target,
            "kind": change.key.kind,
            "identity": change.key.identity,
            "change": {
                "actions": [a.value for a in change.actions],
                "before": shown_record(spec, change.before),
                "after": shown_record(spec, change.after),
                "before_sensitive": sensitive_map(spec, change.before),
                "after_sensitive": sensitive_map(spec, change.after),
                "changed": list(change.changed),
            },
            "action_reason": change.action_reason.value,
            "mode": change.mode.value,
            "reason": change.reason,
            "commands": [command_to_json(c) for c in change.commands],
        })
    return {
        "format_version": plan.format_version,
        "reconciler_version": __version__,
        "created_at": plan.created_at,
        "manifest": {"path": plan.manifest_path, "sha256": plan.manifest_sha256},
        "targets": list(plan.targets),
        "fingerprints": {t: dict(f) for t, f in plan.fingerprints.items()},
        "resource_changes": changes,
        "diagnostics": [
            {"severity": d.severity, "message": d.message, "address": d.address, "location": d.location}
            for d in plan.diagnostics
        ],
        "timeline": [{"when": e.when, "source": e.source, "what": e.what} for e in plan.timeline],
        "handlers": [
            {"address": h.address, "target": h.target, "name": h.name, "triggered_by": list(h.triggered_by),
             "due_since": h.due_since, "unapplied": h.unapplied,
             "commands": [command_to_json(c) for c in h.commands]}
            for h in plan.handlers
        ],
        "summary": plan.summary(),
        "checked": plan.checked,
        "errored": plan.has_errors,
    }
