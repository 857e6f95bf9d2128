"""`reconcile lab ...`: the command line over reconciler.lab.admin and the lab server.

Every handler returns an exit code and reports a failure as one line on stderr, never a traceback:
these commands are typed by people setting up a demo.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.lab import admin
from reconciler.lab.server import DEFAULT_PORT, LabServer
from reconciler.lab.state import DEFAULT_STATE_PATH, LabStore

Handler = Callable[[argparse.Namespace], int]


def _guarded(handler: Handler) -> Handler:
    """Turn the errors a user can cause into one line on stderr and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ReconcilerError as exc:
            print(f"error: {exc}", file=sys.stderr)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1

    return run


def _init(args: argparse.Namespace) -> int:
    state = admin.init_lab(args.state, force=args.force)
    hosts = ", ".join(sorted(state["hosts"]))
    print(f"created lab {args.state} (hosts: {hosts}); serve its metadata with `reconcile lab serve`")
    return 0


def _serve(args: argparse.Namespace) -> int:
    store = LabStore(args.state)
    store.read()  # fail now, with the init hint, rather than on every request
    server = LabServer(args.state, host=args.bind, port=args.port).start()
    print(f"lab server on {server.base_url} (state {args.state}); Ctrl-C to stop", flush=True)
    server.serve_forever()
    return 0


def _show(args: argparse.Namespace) -> int:
    view = admin.show_lab(args.state, args.host)
    print(json.dumps(view, indent=2) if args.json else admin.format_view(view), end="" if not args.json else "\n")
    return 0


def _seed(args: argparse.Namespace) -> int:
    admin.seed_lab(args.state, admin.load_seed_file(args.file))
    print(f"seeded lab {args.state} from {args.file}")
    return 0


def _url(args: argparse.Namespace) -> int:
    path = admin.set_document_status(args.state, args.path_or_url, args.status)
    print(f"{path}: {args.status}")
    return 0


def _set(args: argparse.Namespace) -> int:
    updated = admin.set_object(args.state, args.host, args.kind, args.identity, admin.parse_assignments(args.values))
    print(f"{args.host} {args.kind} {updated['Identity']} updated")
    return 0


def _remove(args: argparse.Namespace) -> int:
    admin.remove_object(args.state, args.host, args.kind, args.identity)
    print(f"{args.host} {args.kind} {args.identity} removed")
    return 0


def _fail(args: argparse.Namespace) -> int:
    entry = admin.add_failure(
        args.state, args.host, args.cmdlet, identity=args.identity, times=args.times, message=args.message
    )
    target = f" for {entry['identity']}" if entry["identity"] else ""
    print(f"{entry['host']}: next {entry['times']} {entry['cmdlet']}{target} will fail")
    return 0


def _stats(args: argparse.Namespace) -> int:
    stats = admin.lab_stats(args.state, args.host, reset=args.reset)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    for host, entry in stats.items():
        print(f"{host}: {entry['roundTrips']} round trips")
        for cmdlet, count in entry["calls"].items():
            print(f"  {cmdlet}: {count}")
    if args.reset:
        print("counters reset")
    return 0


def add_lab_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `lab <op>` on the main CLI.

    Each op sets `func` to a handler `(args) -> exit code` and `lab_command=True` (the lab needs no
    provider registry).
    """
    lab = subparsers.add_parser(
        "lab",
        help="the built-in emulated estate (for demos and tests)",
        description="Manage the lab: emulated Skype for Business servers and their metadata documents.",
    )
    ops = lab.add_subparsers(dest="lab_op", metavar="OP", required=True)

    def op(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser = ops.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--state", type=Path, default=DEFAULT_STATE_PATH,
                            help=f"lab state file (default {DEFAULT_STATE_PATH})")
        # `lab_command` tells the main CLI to call func(args) without a provider registry.
        parser.set_defaults(func=_guarded(handler), lab_command=True)
        return parser

    p = op("init", _init, "create the default lab estate")
    p.add_argument("--force", action="store_true", help="overwrite an existing lab")

    p = op("serve", _serve, "serve the lab's metadata documents over HTTP until Ctrl-C")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")

    p = op("show", _show, "show the live objects per host (certificates as thumbprints)")
    p.add_argument("--host", help="only this host")
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = op("seed", _seed, "merge hosts, objects, documents and services from a YAML file")
    p.add_argument("file", type=Path, help="seed YAML file")

    p = op("url", _url, "make a metadata document answer ok, invalid, notfound or unreachable")
    p.add_argument("path_or_url", metavar="PATH_OR_URL", help="document path, or a URL whose path is used")
    p.add_argument("--status", required=True, choices=admin.STATUSES)

    p = op("set", _set, "change a live object behind the tool's back")
    p.add_argument("host", metavar="HOST")
    p.add_argument("kind", metavar="KIND", help="OAuthConfiguration, OAuthServer or PartnerApplication")
    p.add_argument("identity", metavar="IDENTITY", help="Global for OAuthConfiguration")
    p.add_argument("values", metavar="Prop=Value", nargs="+", help="true/false/null are parsed; else a string")

    p = op("remove", _remove, "delete a live object behind the tool's back")
    p.add_argument("host", metavar="HOST")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("identity", metavar="IDENTITY")

    p = op("fail", _fail, "make the next matching cmdlet calls fail")
    p.add_argument("host", metavar="HOST")
    p.add_argument("cmdlet", metavar="CMDLET")
    p.add_argument("--identity", help="only commands for this Identity (default: any)")
    p.add_argument("--times", type=int, default=1, help="how many calls fail (default 1)")
    p.add_argument("--message", help="the error text (default: a generic one)")

    p = op("stats", _stats, "round trips and cmdlet calls per host")
    p.add_argument("--host", help="only this host")
    p.add_argument("--reset", action="store_true", help="set the counters back to zero (after showing them)")
    p.add_argument("--json", action="store_true", help="JSON instead of text")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m reconciler.lab.cli lab ...`: the lab commands without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="reconcile")
    add_lab_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
