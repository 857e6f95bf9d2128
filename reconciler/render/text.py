"""The plan for people, in Terraform's style: a symbol per action, only what changes, a summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring

from reconciler.changes import Action, Change
from reconciler.kinds.spec import KindSpec
from reconciler.model import Mode
from reconciler.plan import Plan
from reconciler.render.values import shown_value

KindLookup = Callable[[Change], KindSpec | None]

_HEADLINE = {"+": "will be created", "~": "will be updated in place", "-": "will be removed",
             "-/+": "must be replaced"}


def render_plan(plan: Plan, kind_of: KindLookup) -> str:
    lines: list[str] = []
    if plan.changes:
        lines.append("reconcile will perform the following actions:")
        lines.append("")
        for change in plan.changes:
            lines.extend(_render_change(change, kind_of(change)))
            lines.append("")
    for run in plan.handlers:
        lines.append(f"  # handler {run.address} will run once after the changes above")
        if run.due_since:
            lines.append(f"  # due since {run.due_since}: an earlier apply needed it and it has not run "
                         "successfully since (journal)")
        if run.unapplied:
            lines.append("  # not applied as declared yet: the journal has no successful run of these commands on "
                         "this target (they cannot be read back)")
        if run.triggered_by:
            lines.append(f"  # triggered by: {', '.join(run.triggered_by)}")
        lines.extend(f"    > {command.display()}" for command in run.commands)
        lines.append("")
    if plan.timeline:
        lines.append("Certificate rotation (each later run advances it from the live state and the clock):")
        lines.extend(f"  {entry.when:<27} {entry.source}: {entry.what}" for entry in plan.timeline)
        lines.append("")
    for diagnostic in plan.diagnostics:
        lines.append(str(diagnostic))
    if plan.diagnostics:
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines) + "\n"


def summary_line(plan: Plan) -> str:
    if not plan.changes and plan.handlers:
        return f"Plan: no changes. Then {len(plan.handlers)} handler{'s' if len(plan.handlers) != 1 else ''} " \
               "still due: " + ", ".join(h.address for h in plan.handlers) + "."
    if not plan.changes:
        targets = len(plan.targets)
        return (f"No changes. The live state matches the manifest ({plan.checked} resources checked on "
                f"{targets} target{'s' if targets != 1 else ''}).")
    s = plan.summary()
    line = f"Plan: {s['add']} to add, {s['change']} to change, {s['replace']} to replace, {s['remove']} to remove."
    if plan.handlers:
        line += f" Then {len(plan.handlers)} handler{'s' if len(plan.handlers) != 1 else ''}: " + \
            ", ".join(h.address for h in plan.handlers) + "."
    warned = len(plan.changes) - len(plan.enforced)
    if warned:
        line += f" ({warned} in warn mode: reported only, not applied.)"
    return line


def _fmt(value: object) -> str:
    # json.dumps(value, ensure_ascii=False) of text is encode_basestring(value), without an encoder built per call
    return json.dumps(value) if not isinstance(value, str) else encode_basestring(value)


def _list_change(spec: KindSpec | None, name: str, old: list[object], new: list[object]) -> str:
    """A collection as what it gains and loses, not two whole lists."""
    def items(value: list[object]) -> list[str]:
        shown = shown_value(spec, name, value)
        return [_fmt(v) for v in shown] if isinstance(shown, list) else [_fmt(shown)]

    before, after = items(old), items(new)
    parts = [f"+ {v}" for v in after if v not in before] + [f"- {v}" for v in before if v not in after]
    kept = sum(1 for v in after if v in before)
    return "[" + ", ".join(parts) + "]" + (f" ({kept} unchanged)" if kept else "")


def _render_change(change: Change, spec: KindSpec | None) -> list[str]:
    symbol = change.symbol
    key = change.key
    headline = _HEADLINE[symbol]
    if change.mode is Mode.WARN:
        headline = headline.replace("will be", "would be").replace("must be", "would be") + \
            " (mode: warn, reported only: apply leaves it)"
    out = [f"  # {key.address} {headline}", f"  # reason: {change.reason}"]
    out.append(f"{symbol:>3} {key.kind} \"{key.identity}\" {{")
    rows: list[tuple[str, str, str]] = []
    replace_fields = {n for n in change.changed if spec is not None and spec.field(n).replace_reason}
    if change.actions == (Action.DELETE,):
        for name, value in (change.before or {}).items():
            if value not in (None, ""):
                rows.append(("-", name, _fmt(shown_value(spec, name, value))))
    elif change.actions == (Action.CREATE,):
        for name, value in (change.after or {}).items():
            rows.append(("+", name, _fmt(shown_value(spec, name, value))))
    else:
        before = change.before or {}
        after = change.after or {}
        names = change.changed if not change.is_replace else tuple(after)
        for name in names:
            old, new = before.get(name), after.get(name)
            if name not in change.changed:
                rows.append((" ", name, _fmt(shown_value(spec, name, new))))
                continue
            note = "  # forces replacement" if name in replace_fields else ""
            if isinstance(old, list) and isinstance(new, list):
                rows.append(("~", name, _list_change(spec, name, old, new) + note))
            elif old in (None, ""):
                rows.append(("+", name, _fmt(shown_value(spec, name, new)) + note))
            else:
                rows.append(("~", name, f"{_fmt(shown_value(spec, name, old))} -> "
                                        f"{_fmt(shown_value(spec, name, new))}{note}"))
    width = max((len(name) for _, name, _ in rows), default=0)
    for sym, name, text in rows:
        out.append(f"      {sym} {name.ljust(width)} = {text}")
    out.append("    }")
    for command in change.commands:
        out.append(f"    > {command.display()}")
    return out
