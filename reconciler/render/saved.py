"""A saved plan (what `plan --out` writes) read back: checked, and turned into a Plan the renderers take.

`reconcile show PLAN.json` renders it as `plan` would have (like `terraform show`). The document holds
values already masked and shortened when it was written, so it is rendered with no kind lookups: what
is shown is exactly what was saved, never more. A file that is not a plan is refused with one line
that says what it is instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.changes import Action, ActionReason, Change, HandlerRun
from reconciler.commands import Command, Pipe
from reconciler.errors import NotAPlanError, ReconcilerError
from reconciler.model import Mode, ResourceKey, Severity
from reconciler.plan import FORMAT_VERSION, Diagnostic, Plan, TimelineEntry

PLAN_KEYS = ("format_version", "manifest", "resource_changes")


def read_plan_document(path: Path) -> dict[str, Any]:
    """The saved plan at `path`, or NotAPlanError saying what the file is instead."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ReconcilerError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise NotAPlanError(f"{path} is not a saved plan: it is not UTF-8 text "
                            "(a plan is the JSON `reconcile plan --out FILE` writes)") from None
    try:
        document = json.loads(text)
    except ValueError:
        what = "a YAML manifest" if "apiVersion" in text and "targets" in text else "not JSON"
        raise NotAPlanError(f"{path} is not a saved plan: it is {what} (a plan is the JSON "
                            "`reconcile plan --out FILE` writes)") from None
    missing = [k for k in PLAN_KEYS if not isinstance(document, dict) or k not in document]
    if missing:
        raise NotAPlanError(f"{path} is not a saved plan: JSON without {', '.join(missing)} (a plan is the JSON "
                            "`reconcile plan --out FILE` writes)")
    assert isinstance(document, dict)
    major = str(document["format_version"]).split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise NotAPlanError(f"{path}: plan format {document['format_version']} is not supported "
                            f"(this reconcile reads {FORMAT_VERSION})")
    return dict(document)


def command_from_json(data: Mapping[str, Any]) -> Command:
    """A saved command (Command.to_json); a piped one (format 1.1) with its source. Plans of format 1.0 have none."""
    if "executable" in data:
        return Command(str(data["executable"]), native=True, arguments=tuple(str(a) for a in data.get("arguments", ())))
    pipe = data.get("pipe")
    if isinstance(pipe, Mapping) and isinstance(pipe.get("source"), Mapping):
        return Command(str(data.get("cmdlet", "?")), dict(data.get("parameters") or {}),
                       pipe=Pipe(command_from_json(pipe["source"]), str(pipe.get("parameter", "?"))))
    return Command(str(data.get("cmdlet", "?")), dict(data.get("parameters") or {}))


def _change(data: Mapping[str, Any]) -> Change:
    change = data.get("change") or {}
    actions = tuple(Action(a) for a in change.get("actions") or ())
    if actions not in ((Action.CREATE,), (Action.UPDATE,), (Action.DELETE,), (Action.DELETE, Action.CREATE)):
        raise ValueError(f"unknown actions {change.get('actions')!r}")
    try:
        reason = ActionReason(data.get("action_reason", "drift"))
    except ValueError:
        reason = ActionReason.DRIFT
    return Change(
        key=ResourceKey(str(data["target"]), str(data["kind"]), str(data["identity"])),
        actions=actions, action_reason=reason, reason=str(data.get("reason", "")),
        before=change.get("before"), after=change.get("after"), changed=tuple(change.get("changed") or ()),
        commands=tuple(command_from_json(c) for c in data.get("commands") or ()),
        mode=Mode(data.get("mode", "enforce")))


def plan_from_document(document: Mapping[str, Any], source: str = "the plan") -> Plan:
    """The Plan a saved document describes (values as saved: masked), for the text renderer."""
    try:
        return Plan(
            manifest_path=str(document["manifest"]["path"]),
            manifest_sha256=str(document["manifest"].get("sha256", "")),
            targets=tuple(str(t) for t in document.get("targets") or ()),
            fingerprints={},
            changes=tuple(_change(c) for c in document["resource_changes"]),
            diagnostics=tuple(Diagnostic(Severity(d["severity"]), str(d["message"]), d.get("address"),
                                         d.get("location")) for d in document.get("diagnostics") or ()),
            created_at=str(document.get("created_at", "")),
            format_version=str(document["format_version"]),
            checked=int(document.get("checked", 0)),
            handlers=tuple(HandlerRun(str(h["target"]), str(h["name"]), tuple(h.get("triggered_by") or ()),
                                      tuple(command_from_json(c) for c in h.get("commands") or ()), h.get("due_since"),
                                      bool(h.get("unapplied")))
                           for h in document.get("handlers") or ()),
            timeline=tuple(TimelineEntry(str(e["when"]), str(e["source"]), str(e["what"]))
                           for e in document.get("timeline") or ()),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NotAPlanError(f"{source} is damaged: cannot read {exc} (make it again with `reconcile plan --out`)") \
            from None


def checked_for_apply(document: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A saved plan apply can hold the estate to: every part apply reads has the shape `plan --out` writes, or one
    line names the part (a hand-edited or truncated plan is refused, never a traceback)."""
    def damaged(where: str, expected: str) -> NotAPlanError:
        return NotAPlanError(f"{source} is damaged: {where} must be {expected} (make it again with "
                             "`reconcile plan --out`)")

    manifest = document.get("manifest")
    if not isinstance(manifest, Mapping) or not isinstance(manifest.get("path"), str) or not manifest["path"]:
        raise damaged("manifest.path", "the manifest's path")
    if not isinstance(manifest.get("sha256"), str):
        raise damaged("manifest.sha256", "the manifest's sha256, as text")
    variables = document.get("variables", {})
    if not isinstance(variables, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in variables.items()):
        raise damaged("variables", "a mapping of names to text")
    fingerprints = document.get("fingerprints", {})
    if not isinstance(fingerprints, Mapping) or not all(
            isinstance(target, str) and isinstance(records, Mapping)
            and all(isinstance(a, str) and isinstance(h, str) for a, h in records.items())
            for target, records in fingerprints.items()):
        raise damaged("fingerprints", "a mapping of targets to their records' hashes")
    for part in ("resource_changes", "handlers"):
        entries = document.get(part, [] if part == "handlers" else None)
        if not isinstance(entries, list):
            raise damaged(part, "a list")
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("address"), str):
                raise damaged(f"{part}[{index}].address", "text")
            if not isinstance(entry.get("commands", []), list):
                raise damaged(f"{part}[{index}].commands", "a list")
            if part == "resource_changes" and not isinstance(entry.get("change"), Mapping):
                raise damaged(f"{part}[{index}].change", "the change (its actions, before and after)")
    plan_from_document(document, source)  # the rest of its changes, handlers, diagnostics and timeline read back
    return dict(document)


def header(document: Mapping[str, Any]) -> str:
    """Which manifest the plan is of, and when it was made."""
    manifest = document.get("manifest") or {}
    sha = str(manifest.get("sha256") or "")[:12]
    return (f"Saved plan of {manifest.get('path', '?')} (sha256 {sha or '?'}), made {document.get('created_at') or '?'}"
            f" by reconcile {document.get('reconciler_version', '?')}.\n")
