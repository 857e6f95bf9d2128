"""`reconcile lab ...`: the command line over reconciler.lab.admin and the lab server.

Every handler returns an exit code and reports a failure as one line on stderr, never a traceback:
these commands are typed by people setting up a demo.

`reconcile lab graph <op>` works on the lab's Office 365 tenants (Microsoft Graph and the token
endpoint the lab server emulates, reconciler.lab.graph); every op takes `--state` and `--tenant`
(default: the lab's tenant):

    reconcile lab graph show [--tenant T] [--json]     service principals (keys as thumbprint + dates), clients
    reconcile lab graph set APPID accountEnabled=false servicePrincipalNames=a,b    drift
    reconcile lab graph add-key APPID CERTFILE          add a keyCredential behind the tool's back
    reconcile lab graph remove-key APPID THUMBPRINT     remove one (thumbprint or keyId)
    reconcile lab graph fault --status 429|503 [--retry-after 2] [--times 1] [--method PATCH]
                              [--path SUBSTRING] [--inner]     next matching Graph requests are throttled
    reconcile lab graph expire-tokens                   every access token issued so far expires now
    reconcile lab graph client CLIENTID (--secret-env VAR | --certificate CERTFILE) [--roles R ...]
                              [--display-name NAME]     register or change a client app; the secret is
                                                        read from the environment variable VAR, never argv
    reconcile lab graph stats [--reset] [--json]        Graph round trips per tenant
"""

from __future__ import annotations

import argparse
import errno
import functools
import gc
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reconciler.errors import ReconcilerError, UsageError
from reconciler.lab.state import DEFAULT_PORT, DEFAULT_STATE_PATH, STATUSES, LabStore

# The handlers import the lab's admin and server modules when they run: building the parser (every
# `reconcile` command does) must not import the emulator, cryptography or http.server.

Handler = Callable[[argparse.Namespace], int]


def _guarded(handler: Handler) -> Handler:
    """Turn the errors a user can cause into one line on stderr and exit code 1."""

    @functools.wraps(handler)
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
    from reconciler.lab import admin

    state = admin.init_lab(args.state, force=args.force)
    hosts = ", ".join(sorted(state["hosts"]))
    print(f"created lab {args.state} (hosts: {hosts}); serve its metadata with `reconcile lab serve`")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from reconciler.lab.server import LabServer

    gc.enable()  # the server stays up: it collects cyclic garbage (`reconciler.cli.run` turned the collector off)
    store = LabStore(args.state)
    store.read()  # fail now, with the init hint, rather than on every request
    try:
        server = LabServer(args.state, host=args.bind, port=args.port).start()
    except (OSError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        hint = (" (another process listens there, perhaps a lab server already running; choose another --port, "
                "or 0 for any free port)") if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE else ""
        raise ReconcilerError(f"cannot serve the lab on {args.bind}:{args.port}: {reason}{hint}") from None
    print(f"lab server on {server.base_url} (state {args.state}); Ctrl-C to stop", flush=True)
    server.serve_forever()
    return 0


def _show(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    view = admin.show_lab(args.state, args.host)
    print(json.dumps(view, indent=2) if args.json else admin.format_view(view), end="" if not args.json else "\n")
    return 0


def _seed(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    admin.seed_lab(args.state, admin.load_seed_file(args.file))
    print(f"seeded lab {args.state} from {args.file}")
    return 0


def _url(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    path = admin.set_document_status(args.state, args.path_or_url, args.status)
    print(f"{path}: {args.status}")
    return 0


def _set(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    updated = admin.set_object(args.state, args.host, args.kind, args.identity, admin.parse_assignments(args.values))
    print(f"{args.host} {args.kind} {updated['Identity']} updated")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    admin.remove_object(args.state, args.host, args.kind, args.identity)
    print(f"{args.host} {args.kind} {args.identity} removed")
    return 0


def _fail(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    entry = admin.add_failure(
        args.state, args.host, args.cmdlet, identity=args.identity, times=args.times, message=args.message
    )
    target = f" for {entry['identity']}" if entry["identity"] else ""
    print(f"{entry['host']}: next {entry['times']} {entry['cmdlet']}{target} will fail")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

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


def _graph_show(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    view = admin.graph_show(args.state, args.tenant)
    print(json.dumps(view, indent=2) if args.json else admin.format_view(view), end="" if not args.json else "\n")
    return 0


def _graph_set(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    admin.graph_set(args.state, args.app_id, admin.parse_graph_assignments(args.values), args.tenant)
    print(f"service principal {args.app_id} updated")
    return 0


def _graph_add_key(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    key = admin.graph_add_key(args.state, args.app_id, args.certificate, args.tenant)
    print(f"service principal {args.app_id}: key {key['thumbprint']} added (keyId {key['keyId']}, "
          f"{key['startDateTime']} to {key['endDateTime']})")
    return 0


def _graph_remove_key(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    count = admin.graph_remove_key(args.state, args.app_id, args.thumbprint, args.tenant)
    print(f"service principal {args.app_id}: {count} key(s) {args.thumbprint} removed")
    return 0


def _graph_fault(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    entry = admin.add_graph_fault(args.state, status=args.status, retry_after=args.retry_after, times=args.times,
                                  method=args.method, path=args.path, inner=args.inner, tenant=args.tenant)
    which = " ".join(filter(None, [entry["method"], f"matching {entry['path']!r}" if entry["path"] else None]))
    where = "inner (batched) " if entry["inner"] else ""
    print(f"next {entry['times']} {where}Graph request(s){' ' + which if which else ''} will answer "
          f"{entry['status']} (Retry-After {entry['retryAfter']})")
    return 0


def _graph_expire_tokens(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    count = admin.expire_graph_tokens(args.state, args.tenant)
    print(f"{count} valid access token(s) expired")
    return 0


def _graph_client(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    secret = None
    if args.secret_env is not None:
        secret = os.environ.get(args.secret_env)
        if not secret:
            print(f"error: environment variable {args.secret_env} is not set or empty", file=sys.stderr)
            return 1
    roles = None if args.roles is None else [r.strip() for item in args.roles for r in item.split(",") if r.strip()]
    entry = admin.register_graph_client(args.state, args.client_id, secret=secret, certificate=args.certificate,
                                        roles=roles, display_name=args.display_name, tenant=args.tenant)
    how = ", ".join(filter(None, ["secret" if entry["secret"] else None,
                                  f"certificate {entry['certificateThumbprint']}" if entry["certificateThumbprint"]
                                  else None]))
    print(f"client {entry['clientId']} registered ({how}; roles: {', '.join(entry['roles']) or 'none'})")
    return 0


def _graph_stats(args: argparse.Namespace) -> int:
    from reconciler.lab import admin

    stats = admin.graph_stats(args.state, args.tenant, reset=args.reset)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    for tenant, entry in stats.items():
        print(f"{tenant}: {entry['roundTrips']} Graph round trips")
    if args.reset:
        print("counters reset")
    return 0


def _add_graph_parser(lab_ops: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`lab graph <op>`: the lab's Office 365 tenants (see the module docstring)."""
    graph = lab_ops.add_parser(
        "graph",
        help="the lab's Office 365 tenants (Microsoft Graph service principals, client apps, faults)",
        description="Inspect and change the lab's emulated Microsoft Graph and Entra ID token endpoint.",
    )
    ops = graph.add_subparsers(dest="graph_op", metavar="OP", required=True)

    def op(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        # allow_abbrev=False: `--secret VALUE` must not pass for `--secret-env` (no secret on argv)
        parser = ops.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        parser.add_argument("--state", type=Path, default=DEFAULT_STATE_PATH,
                            help=f"lab state file (default {DEFAULT_STATE_PATH})")
        parser.add_argument("--tenant", help="tenant id (default: the lab's tenant)")
        parser.set_defaults(func=_guarded(handler), lab_command=True, usage_parser=parser)
        return parser

    p = op("show", _graph_show, "service principals (keys as thumbprints and dates), clients, faults, tokens")
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = op("set", _graph_set, "change a service principal behind the tool's back")
    p.add_argument("app_id", metavar="APPID", help="the service principal's appId")
    p.add_argument("values", metavar="Prop=Value", nargs="+",
                   help="accountEnabled=true|false, servicePrincipalNames=a,b (comma list; empty: none)")

    p = op("add-key", _graph_add_key, "add a certificate as a keyCredential (dates from its validity)")
    p.add_argument("app_id", metavar="APPID", help="the service principal's appId")
    p.add_argument("certificate", metavar="CERTFILE", type=Path, help=".cer file (DER, PEM or base64)")

    p = op("remove-key", _graph_remove_key, "remove a keyCredential by certificate thumbprint (or keyId)")
    p.add_argument("app_id", metavar="APPID", help="the service principal's appId")
    p.add_argument("thumbprint", metavar="THUMBPRINT", help="the certificate's SHA-1 thumbprint, or the keyId")

    p = op("fault", _graph_fault, "make the next matching Graph requests answer 429 or 503 with Retry-After")
    p.add_argument("--status", type=int, required=True, choices=(429, 503), help="the status to answer with")
    p.add_argument("--retry-after", type=int, default=2, help="Retry-After seconds (default 2)")
    p.add_argument("--times", type=int, default=1, help="how many requests (default 1)")
    p.add_argument("--method", help="only this HTTP method (GET, PATCH, POST...)")
    p.add_argument("--path", help="only URLs containing this (relative to /v1.0, e.g. $batch or an appId)")
    p.add_argument("--inner", action="store_true", help="requests inside a $batch, not the HTTP request")

    op("expire-tokens", _graph_expire_tokens, "expire every access token issued so far")

    p = op("client", _graph_client, "register or change a client app the tool signs in as")
    p.add_argument("client_id", metavar="CLIENTID", help="the client application's id (appId)")
    credential = p.add_mutually_exclusive_group()
    credential.add_argument("--secret-env", metavar="VAR",
                            help="read the client secret from this environment variable (never from argv)")
    credential.add_argument("--certificate", metavar="CERTFILE", type=Path,
                            help="certificate whose key signs the client's assertions")
    p.add_argument("--roles", nargs="*", metavar="ROLE",
                   help="application roles (space or comma separated; default for a new client: "
                        "Application.ReadWrite.All; none: --roles with no value)")
    p.add_argument("--display-name", help="the client's display name")

    p = op("stats", _graph_stats, "Graph round trips per tenant")
    p.add_argument("--reset", action="store_true", help="set the counters back to zero (after showing them)")
    p.add_argument("--json", action="store_true", help="JSON instead of text")


def _port(text: str) -> int:
    from reconciler.cli import port_number  # the main CLI imports this module: import at use

    return port_number(text)


def add_lab_parser(subparsers: argparse._SubParsersAction[Any], *, ops: bool = True) -> None:
    """Register `lab <op>` on the main CLI (without `ops`, `lab` alone: another command was named).

    Each op sets `func` to a handler `(args) -> exit code` and `lab_command=True` (the lab needs no
    provider registry).
    """
    lab = subparsers.add_parser(
        "lab",
        help="the built-in emulated estate (for demos and tests)",
        description="Manage the lab: emulated Skype for Business and Exchange servers and their metadata documents.",
    )
    if not ops:
        return
    commands = lab.add_subparsers(dest="lab_op", metavar="OP", required=True)

    def op(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--state", type=Path, default=DEFAULT_STATE_PATH,
                            help=f"lab state file (default {DEFAULT_STATE_PATH})")
        # `lab_command` tells the main CLI to call func(args) without a provider registry.
        parser.set_defaults(func=_guarded(handler), lab_command=True, usage_parser=parser)
        return parser

    p = op("init", _init, "create the default lab estate")
    p.add_argument("--force", action="store_true", help="overwrite an existing lab")

    p = op("serve", _serve, "serve the lab's metadata documents, Graph and token endpoint over HTTP until Ctrl-C")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")

    p = op("show", _show, "show the live objects per host (certificates as thumbprints)")
    p.add_argument("--host", help="only this host")
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = op("seed", _seed, "merge hosts, objects, documents and services from a YAML file")
    p.add_argument("file", type=Path, help="seed YAML file")

    p = op("url", _url, "make a metadata document answer ok, invalid, notfound or unreachable")
    p.add_argument("path_or_url", metavar="PATH_OR_URL", help="document path, or a URL whose path is used")
    p.add_argument("--status", required=True, choices=STATUSES, help="how the document answers from now on")

    p = op("set", _set, "change a live object behind the tool's back")
    p.add_argument("host", metavar="HOST", help="the lab host (atl-cs-001, atl-exchange-001, ...)")
    p.add_argument("kind", metavar="KIND", help="OAuthConfiguration, OAuthServer or PartnerApplication (Skype); "
                   "PartnerApplication, AuthServer, AuthConfig, LinkedUser or ManagementRoleAssignment (Exchange)")
    p.add_argument("identity", metavar="IDENTITY", help="Global for OAuthConfiguration and AuthConfig")
    p.add_argument("values", metavar="Prop=Value", nargs="+", help="true/false/null are parsed; else a string")

    p = op("remove", _remove, "delete a live object behind the tool's back")
    p.add_argument("host", metavar="HOST", help="the lab host (atl-cs-001, atl-exchange-001, ...)")
    p.add_argument("kind", metavar="KIND", help="the object's kind (PartnerApplication, AuthServer, ...)")
    p.add_argument("identity", metavar="IDENTITY", help="the object's Identity")

    p = op("fail", _fail, "make the next matching cmdlet calls fail")
    p.add_argument("host", metavar="HOST", help="the lab host (atl-cs-001, atl-exchange-001, ...)")
    p.add_argument("cmdlet", metavar="CMDLET", help="the cmdlet that fails (New-CsPartnerApplication, ...)")
    p.add_argument("--identity", help="only commands for this Identity (default: any)")
    p.add_argument("--times", type=int, default=1, help="how many calls fail (default 1)")
    p.add_argument("--message", help="the error text (default: a generic one)")

    p = op("stats", _stats, "round trips and cmdlet calls per host")
    p.add_argument("--host", help="only this host")
    p.add_argument("--reset", action="store_true", help="set the counters back to zero (after showing them)")
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    _add_graph_parser(commands)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m reconciler.lab.cli lab ...`: the lab commands without the rest of the CLI."""
    from reconciler.cli import Parser, parse

    parser = Parser(prog="reconcile")
    add_lab_parser(parser.add_subparsers(dest="command", required=True))
    try:
        args = parse(parser, argv)
    except UsageError:
        return 1
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
