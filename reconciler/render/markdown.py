"""The plan as Markdown, for pull-request comments and CI job summaries (`plan --format markdown`).

Rendered from the JSON plan document (reconciler.render.json_plan), so it shows exactly what the JSON
plan and `plan --out` show: sensitive values masked, certificates as thumbprints. Layout: a summary
line, then one collapsible `<details>` block per target that has something to do, each change as its
symbol, address and reason, the fields it changes as a `diff` block and the commands as a `powershell`
block; handlers and diagnostics after. Text that comes from a manifest or a live system is escaped, so
it cannot open HTML or break out of a code block.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.render.saved import command_from_json

MAX_CHARS = 60_000
"""GitHub refuses comments over 65,536 characters; past this the rest is summarized, not shown."""

_SYMBOLS = {("create",): "+", ("update",): "~", ("delete",): "-", ("delete", "create"): "-/+"}
_VERBS = {"+": "create", "~": "update in place", "-": "remove", "-/+": "replace"}
_COUNTED = {"+": "add", "~": "change", "-/+": "replace", "-": "remove"}  # as the summary line counts them


def _text(value: object) -> str:
    """Inline text: HTML escaped, Markdown's active characters backslash-escaped, one line."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return re.sub(r"([\\`*_\[\]#|~])", r"\\\1", text)


def _code(value: object) -> str:
    """Inline code that no backtick in the value can end early."""
    text = " ".join(str(value).split())
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _block(lines: Sequence[str], language: str) -> list[str]:
    """A fenced block whose fence is longer than any backtick run inside it."""
    run = max((len(m) for line in lines for m in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, run + 1)
    return [f"{fence}{language}", *lines, fence]


def _value(value: object) -> str:
    return value if isinstance(value, str) and "\n" not in value else json.dumps(value, ensure_ascii=False)


def _field_lines(change: Mapping[str, Any]) -> list[str]:
    detail = change.get("change") or {}
    actions = tuple(detail.get("actions") or ())
    before, after = detail.get("before") or {}, detail.get("after") or {}
    lines: list[str] = []
    if actions == ("create",):
        lines = [f"+ {name} = {_value(v)}" for name, v in after.items() if v not in (None, "")]
    elif actions == ("delete",):
        lines = [f"- {name} = {_value(v)}" for name, v in before.items() if v not in (None, "")]
    else:
        for name in detail.get("changed") or ():
            if before.get(name) not in (None, ""):
                lines.append(f"- {name} = {_value(before.get(name))}")
            lines.append(f"+ {name} = {_value(after.get(name))}")
    return [line.replace("\r", " ").replace("\n", " ") for line in lines]


def _summary(document: Mapping[str, Any]) -> str:
    s = document.get("summary") or {}
    changes = document.get("resource_changes") or []
    handlers = document.get("handlers") or []
    if not changes and not handlers:
        targets = len(document.get("targets") or [])
        return (f"**No changes.** The live state matches the manifest ({document.get('checked', 0)} resources "
                f"checked on {targets} target{'s' if targets != 1 else ''}).")
    line = (f"**Plan: {s.get('add', 0)} to add, {s.get('change', 0)} to change, {s.get('replace', 0)} to replace, "
            f"{s.get('remove', 0)} to remove.**")
    if handlers:
        line += f" Then {len(handlers)} handler{'s' if len(handlers) != 1 else ''}: " + \
            ", ".join(_code(h.get("address", "")) for h in handlers) + "."
    warned = sum(1 for c in changes if c.get("mode") == "warn")
    if warned:
        line += f" ({warned} in warn mode: reported only, not applied.)"
    return line


def _target_summary(changes: Sequence[Mapping[str, Any]], handlers: Sequence[Mapping[str, Any]]) -> str:
    counts = dict.fromkeys(_COUNTED.values(), 0)
    for change in changes:
        counts[_COUNTED[_SYMBOLS.get(tuple((change.get("change") or {}).get("actions") or ()), "~")]] += 1
    parts = [f"{n} to {verb}" for verb, n in counts.items() if n]
    if handlers:
        parts.append(f"{len(handlers)} handler{'s' if len(handlers) != 1 else ''}")
    return ", ".join(parts)


def _change_lines(change: Mapping[str, Any]) -> list[str]:
    symbol = _SYMBOLS.get(tuple((change.get("change") or {}).get("actions") or ()), "?")
    mode = " *(warn mode: reported only)*" if change.get("mode") == "warn" else ""
    lines = [f"#### {_code(symbol)} {_code(change.get('address', ''))}{mode}", "",
             f"{_VERBS.get(symbol, 'change').capitalize()}: {_text(change.get('reason', ''))}", ""]
    fields = _field_lines(change)
    if fields:
        lines += [*_block(fields, "diff"), ""]
    commands = [command_from_json(c).display() for c in change.get("commands") or ()]
    if commands:
        lines += [*_block(commands, "powershell"), ""]
    return lines


def _handler_lines(handler: Mapping[str, Any]) -> list[str]:
    lines = [f"#### Handler {_code(handler.get('address', ''))}: runs once after the changes", ""]
    if handler.get("due_since"):
        lines += [f"Due since {_text(handler['due_since'])}: an earlier apply needed it and it has not run "
                  "successfully since.", ""]
    if handler.get("unapplied"):
        lines += ["Not applied as declared yet: the journal has no successful run of these commands on this target "
                  "(they cannot be read back).", ""]
    if handler.get("triggered_by"):
        lines += ["Triggered by: " + ", ".join(_code(a) for a in handler["triggered_by"]) + ".", ""]
    commands = [command_from_json(c).display() for c in handler.get("commands") or ()]
    if commands:
        lines += [*_block(commands, "powershell"), ""]
    return lines


def render_markdown(document: Mapping[str, Any], *, title: str = "reconcile plan",
                    max_chars: int = MAX_CHARS) -> str:
    """The plan document as GitHub-flavoured Markdown (also valid in GitLab and Azure DevOps)."""
    manifest = (document.get("manifest") or {}).get("path", "")
    out = [f"### {_text(title)}: {_code(manifest)}", "", _summary(document), ""]
    changes = list(document.get("resource_changes") or [])
    handlers = list(document.get("handlers") or [])
    targets = [str(t) for t in document.get("targets") or []]
    targets += [t for t in dict.fromkeys(str(c.get("target")) for c in [*changes, *handlers]) if t not in targets]
    quiet: list[str] = []
    left_out: list[str] = []
    for target in targets:
        mine = [c for c in changes if c.get("target") == target]
        theirs = [h for h in handlers if h.get("target") == target]
        if not mine and not theirs:
            quiet.append(target)
            continue
        block = [f"<details><summary><b>{html.escape(target)}</b>: {html.escape(_target_summary(mine, theirs))}"
                 "</summary>", ""]
        for change in mine:
            block += _change_lines(change)
        for handler in theirs:
            block += _handler_lines(handler)
        block += ["</details>", ""]
        if sum(len(line) + 1 for line in out + block) > max_chars:
            left_out.append(target)
            continue
        out += block
    if left_out:
        out += [f"*Not shown here (the comment would be too long): {', '.join(_code(t) for t in left_out)}; "
                "see the job's full plan.*", ""]
    if quiet:
        out += ["No changes on " + ", ".join(_code(t) for t in quiet) + ".", ""]
    timeline = document.get("timeline") or []
    if timeline:
        out += ["#### Certificate rotation", ""]
        out += [f"- {_code(str(e.get('when', '')))} {_code(str(e.get('source', '')))}: {_text(str(e.get('what', '')))}"
                for e in timeline]
        out.append("")
    diagnostics = document.get("diagnostics") or []
    if diagnostics:
        out += ["#### Diagnostics", ""]
        for d in diagnostics:
            where = " ".join(_code(x) for x in (d.get("location"), d.get("address")) if x)
            out.append(f"- **{_text(d.get('severity', ''))}**{': ' + where if where else ''}: "
                       f"{_text(d.get('message', ''))}")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
