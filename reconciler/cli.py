"""The `reconcile` command line.

Every error a user can cause ends as one clear message on stderr and a non-zero exit code, never
a traceback. Exit codes follow Terraform: 0 success (no changes with --detailed-exitcode),
1 error, 2 changes present (plan --detailed-exitcode).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from reconciler import __version__
from reconciler.errors import ManifestError, ReconcilerError, StalePlanError
from reconciler.executor import Status
from reconciler.manifest import build_schema, load_manifest
from reconciler.model import DesiredState
from reconciler.plan import FORMAT_VERSION, Plan, fingerprint_differences
from reconciler.providers.base import Registry
from reconciler.render.json_plan import plan_to_json
from reconciler.render.text import render_plan, summary_line
from reconciler.runner import ApplyResult, Session, Settings, discover, execute, locked, make_plan, open_session

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def main(argv: Sequence[str] | None = None, registry: Registry | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        if getattr(args, "lab_command", False):
            return int(args.func(args))
        return int(args.func(args, registry or Registry.from_entry_points()))
    except ManifestError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in the manifest; nothing was changed.", file=sys.stderr)
        return EXIT_ERROR
    except ReconcilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reconcile", description=(
        "Keep Skype for Business / Lync, Exchange and Office 365 server-to-server OAuth trust "
        "exactly as a YAML manifest says."))
    parser.add_argument("--version", action="version", version=f"reconcile {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def manifest_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("manifest", type=Path, help="the YAML manifest")
        p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                       help="set a manifest variable (repeatable); overrides the manifest's value")
        p.add_argument("--state-dir", type=Path, default=Path(".reconciler"),
                       help="where locks and the journal live (default: .reconciler)")
        return p

    p = manifest_command("validate", "check a manifest without touching any target")
    p.set_defaults(func=cmd_validate)

    p = manifest_command("plan", "show what apply would change")
    p.add_argument("--json", action="store_true", help="print the machine-readable plan")
    p.add_argument("--out", type=Path, help="save the plan to apply it later with `reconcile apply FILE`")
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 0 when there are no changes, 2 when there are, 1 on error")
    p.set_defaults(func=cmd_plan)

    p = manifest_command("apply", "make the live state match the manifest (or a saved plan)")
    p.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    p.add_argument("--lock-timeout", type=float, default=30.0, help="seconds to wait for a target's lock")
    p.set_defaults(func=cmd_apply)

    p = manifest_command("discover", "print the live state of every target in the manifest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_discover)

    p = sub.add_parser("schema", help="print the manifest JSON Schema (what editors use)")
    p.add_argument("--out", type=Path)
    p.set_defaults(func=cmd_schema)

    from reconciler.lab.cli import add_lab_parser
    add_lab_parser(sub)
    return parser


def _overrides(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ReconcilerError(f"--var {pair!r}: expected NAME=VALUE")
        out[name] = value
    return out


def _load(args: argparse.Namespace, registry: Registry) -> DesiredState:
    return load_manifest(args.manifest, registry, _overrides(args.var))


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(state_dir=args.state_dir, lock_timeout=getattr(args, "lock_timeout", 30.0))


def cmd_validate(args: argparse.Namespace, registry: Registry) -> int:
    desired = _load(args, registry)
    print(f"{args.manifest}: valid ({len(desired.resources)} resources on {len(desired.targets)} targets)")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, registry: Registry) -> int:
    desired = _load(args, registry)
    with open_session(desired, registry) as session:
        plan = make_plan(session, discover(session), _settings(args))
        document = plan_to_json(plan, session.kind_of)
        if args.json:
            print(json.dumps(document, indent=2))
        else:
            sys.stdout.write(render_plan(plan, session.kind_of))
    if args.out:
        args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"Saved the plan to {args.out}; apply it with: reconcile apply {args.out}", file=sys.stderr)
    if plan.has_errors:
        print("error: the plan has errors; apply would change nothing until they are fixed.", file=sys.stderr)
        return EXIT_ERROR
    if args.detailed_exitcode and plan.has_changes:
        return EXIT_CHANGES
    return EXIT_OK


def _read_saved_plan(path: Path) -> dict[str, Any] | None:
    """A saved plan is our JSON document; anything else is taken for a manifest."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReconcilerError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text.lstrip().startswith("{"):
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict) or "format_version" not in document:
        return None
    major = str(document["format_version"]).split(".")[0]
    if major != FORMAT_VERSION.split(".")[0]:
        raise ReconcilerError(f"{path}: plan format {document['format_version']} is not supported "
                              f"(this reconcile writes {FORMAT_VERSION})")
    return document


def cmd_apply(args: argparse.Namespace, registry: Registry) -> int:
    saved = _read_saved_plan(args.manifest)
    if saved is not None:
        args.manifest = Path(saved["manifest"]["path"])
    desired = _load(args, registry)
    if saved is not None and saved["manifest"]["sha256"] != desired.manifest_sha256:
        raise StalePlanError(f"the saved plan is stale: {desired.manifest_path} (or its --var values) changed "
                             "since the plan was made; run `reconcile plan` again")
    settings = _settings(args)
    with locked(desired, settings), open_session(desired, registry) as session:
        live = discover(session)
        plan = make_plan(session, live, settings)
        if saved is not None:
            _check_still_current(saved, plan)
        sys.stdout.write(render_plan(plan, session.kind_of))
        if plan.has_errors:
            print("error: the plan has errors; nothing was changed.", file=sys.stderr)
            return EXIT_ERROR
        if not plan.has_changes:
            return EXIT_OK
        if saved is None and not args.auto_approve and not _confirm(sys.stdin, sys.stdout):
            return EXIT_ERROR
        result = execute(session, plan, settings)
    _report(result, plan, session)
    return EXIT_OK if result.ok else EXIT_ERROR


def _check_still_current(saved: dict[str, Any], plan: Plan) -> None:
    changed: list[str] = []
    for target, current in plan.fingerprints.items():
        changed += fingerprint_differences(saved.get("fingerprints", {}).get(target, {}), current)
    if changed:
        raise StalePlanError("the saved plan is stale: the live state changed since it was made ("
                             + ", ".join(changed) + "); run `reconcile plan` again")
    wanted = [(c["address"], c["change"]["actions"]) for c in saved.get("resource_changes", [])]
    now = [(c.key.address, [a.value for a in c.actions]) for c in plan.changes]
    if wanted != now:
        raise StalePlanError("the saved plan no longer matches what the manifest and live state give; "
                             "run `reconcile plan` again")


def _confirm(stdin: TextIO, stdout: TextIO) -> bool:
    if not stdin.isatty():
        print("error: apply needs confirmation: run it on a terminal, or pass --auto-approve "
              "(or apply a saved plan)", file=sys.stderr)
        return False
    stdout.write("\nDo you want to perform these actions? Only 'yes' will be accepted.\n  Enter a value: ")
    stdout.flush()
    if stdin.readline().strip() != "yes":
        print("Apply cancelled; nothing was changed.")
        return False
    return True


_MARK = {Status.APPLIED: "ok", Status.FAILED: "FAILED", Status.NOT_RUN: "not run",
         Status.RESTORED: "FAILED", Status.RESTORE_FAILED: "FAILED"}


def _report(result: ApplyResult, plan: Plan, session: Session) -> None:
    print("\nApplying:")
    for outcome in result.outcomes:
        change = outcome.change
        print(f"  {change.symbol:>3} {change.key.address}: {outcome.status.value}")
        if outcome.error:
            print(f"        error: {outcome.error}")
        if outcome.note:
            print(f"        {outcome.note}")
    counts = {s: sum(1 for o in result.outcomes if o.status is s) for s in Status}
    failed = len(result.outcomes) - counts[Status.APPLIED] - counts[Status.NOT_RUN]
    verdict = "Apply complete" if all(o.ok for o in result.outcomes) else "Apply stopped at the first failure"
    print(f"\n{verdict}: {counts[Status.APPLIED]} applied, {failed} failed, {counts[Status.NOT_RUN]} not run.")
    for target, remaining in result.remaining.items():
        if remaining:
            print(f"Re-read {target}: NOT converged, {len(remaining)} change(s) still needed: "
                  + ", ".join(c.key.address for c in remaining))
        else:
            print(f"Re-read {target}: converged (the live state matches the manifest).")


def cmd_discover(args: argparse.Namespace, registry: Registry) -> int:
    desired = _load(args, registry)
    with open_session(desired, registry) as session:
        live = discover(session)
    document = {
        name: [{"kind": key.kind, "identity": key.identity, **_shown(session, key.target, key.kind, res.fields)}
               for key, res in sorted(state.resources.items())]
        for name, state in live.items()
    }
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        for name, records in document.items():
            print(f"{name}:")
            for record in records:
                rest = {k: v for k, v in record.items() if k not in ("kind", "identity") and v not in (None, "")}
                print(f"  {record['kind']} {record['identity']!r}: " + json.dumps(rest))
    return EXIT_OK


def _shown(session: Session, target: str, kind: str, fields: Any) -> dict[str, Any]:
    from reconciler.render.values import shown_record
    provider = session.registry.provider(session.desired.targets[target].provider)
    return shown_record(provider.kinds.get(kind), fields) or {}


def cmd_schema(args: argparse.Namespace, registry: Registry) -> int:
    text = json.dumps(build_schema(registry), indent=2, sort_keys=True) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


__all__ = ["main", "summary_line"]
