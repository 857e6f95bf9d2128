"""The `reconcile` command line.

Every error a user can cause ends as one clear message on stderr and a non-zero exit code, never
a traceback. Exit codes follow Terraform: 0 success (no changes with --detailed-exitcode),
1 error, 2 changes present (plan --detailed-exitcode). A usage error (unknown option, missing
argument) is an error like any other: exit 1 with the command's usage, never argparse's 2, which
schedulers would read as "changes".
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from reconciler import __version__
from reconciler.errors import ManifestError, ReconcilerError, UsageError

# Each command imports what it uses when it runs: `reconcile --help` and `--version` import none of it.
if TYPE_CHECKING:
    from reconciler.events import EventLog
    from reconciler.metrics import Metrics
    from reconciler.model import DesiredState, NotifyDestination
    from reconciler.plan import Plan
    from reconciler.providers.base import Registry
    from reconciler.recording import Recorder
    from reconciler.runner import ApplyResult, CheckOutcome, Session, Settings
    from reconciler.scheduler import Cycle, Schedule
    from reconciler.store import RunStore
    from reconciler.store.gitinfo import ManifestKey
    from reconciler.workflow import Request, Verdict

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors exit 1 (through UsageError), showing the failing command's usage.

    Subcommand parsers are made of the same class (argparse uses the parent's), so a mistake in
    `reconcile plan ...` prints plan's usage, not the top-level one.
    """

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageError(message)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, blaming unrecognized arguments on the subcommand that was given them (its usage is shown)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        owner = getattr(args, "usage_parser", None)
        (owner if isinstance(owner, argparse.ArgumentParser) else parser).error(
            f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None, registry: Registry | None = None, *, as_process: bool = False) -> int:
    """The command line; `as_process`: main is the whole process (`run`, with no other thread), so a manifest's YAML
    may be read by a second process while this one imports the command's modules (`_read_ahead`), and its cache entry
    written when the command is done (`_write_behind`)."""
    parser = _parser(_named_command(sys.argv[1:] if argv is None else argv))
    try:
        args = parse(parser, argv)
    except UsageError:
        return EXIT_ERROR
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    if as_process:
        _read_ahead(args)
        _write_behind(args)
    try:
        _check_outputs(args)
        if getattr(args, "lab_command", False):
            return int(args.func(args))
        if registry is None:
            from reconciler.providers.base import Registry
            registry = Registry.from_entry_points()
        return int(args.func(args, registry))
    except ManifestError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        if not exc.problems:
            print(f"error: {getattr(args, 'manifest', 'the manifest')}: cannot be used", file=sys.stderr)
        notify_file = str(getattr(args, "notify_file", None))
        what = "the notifications file" if exc.problems and all(p.file == notify_file for p in exc.problems) \
            else "the manifest"
        print(f"{len(exc.problems) or 1} problem(s) in {what}; nothing was changed.", file=sys.stderr)
        return EXIT_ERROR
    except ReconcilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # a file we were told to write or read (plan --out, schema --out, ...)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


_READS_MANIFEST = ("cmd_validate", "cmd_plan", "cmd_apply", "cmd_drift", "cmd_run")
_LOADS_ONCE = ("cmd_plan", "cmd_apply", "cmd_drift")
"""The commands that load their manifest through the cache once and end (`run` loads it every cycle, from an entry
it keeps; `validate` does not use the cache)."""


def _write_behind(args: argparse.Namespace) -> None:
    """A command that loads its manifest once leaves the cache entry to the end of the process (`run`: written after
    the output, by a process of its own, reconciler.manifest.cache.write_pending)."""
    if getattr(args.func, "__name__", "") in _LOADS_ONCE:
        from reconciler.manifest import cache

        cache.write_later()


def _read_ahead(args: argparse.Namespace) -> None:
    """Start reading the manifest's YAML in a second process (reconciler.manifest.ahead) when the command loads it; that
    process reads nothing when the cache (reconciler.manifest.cache) holds it (validate does not use the cache)."""
    manifest = getattr(args, "manifest", None)
    command = getattr(args.func, "__name__", "")
    if command not in _READS_MANIFEST or not isinstance(manifest, Path):
        return
    validate = command == "cmd_validate"  # loads without the cache, and downloads nothing
    state_dir = getattr(args, "state_dir", None)
    once = command in _LOADS_ONCE  # its documents are downloaded by that process (`run` downloads its own)
    from reconciler.manifest import ahead

    ahead.start(manifest, None if validate or once else _prepare_downloads,
                state_dir=state_dir if isinstance(state_dir, Path) and not validate else None, downloads=once)


def _prepare_downloads() -> None:
    """What a plan's metadata downloads need first (the TLS settings, the HTTP machinery), made while the manifest's
    YAML is still being read: not on the plan's way later (its discovery keeps the interpreter busy)."""
    from reconciler.metadata import prepare_downloads

    prepare_downloads()


def run() -> NoReturn:
    """The `reconcile` console script and `python -m reconciler`: `main`, then the process ends without tearing down
    its heap.

    A plan of 10,000 resources holds a million objects at the end; the interpreter's own shutdown frees them one by
    one and clears every module (about 0.04-0.08 s of a 0.6 s plan, benchmarks/README.md). Everything a clean
    shutdown does that matters is done here first, in its order: threads that are not daemons finish, `atexit`
    handlers run (logging's flush among them), stdout and stderr are flushed, the manifest's cache entry a command
    left for the end is written (by a process of its own where it can be: `_write_behind`); then `os._exit`.

    The cyclic garbage collector is off in such a process: a command's objects live until it ends and few of them
    are cyclic, and its collections (of every object imported and read) cost ~0.02 s of a plan. A command that stays
    up (the `run` loop, the lab's server) turns it back on.
    """
    gc.disable()
    code = main(as_process=True)
    ahead = sys.modules.get("reconciler.manifest.ahead")  # imported only by a command that read ahead
    if ahead is not None:
        ahead.discard()
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone (`reconcile plan | head`), a closed stream
            stream.flush()
    cache = sys.modules.get("reconciler.manifest.cache")  # imported only by a command that loads through it
    if cache is not None:
        cache.write_pending()
    os._exit(code)


def _named_command(argv: Sequence[str]) -> str | None:
    """The command `argv` starts with (`reconcile plan ...`): the one `_parser` makes arguments for; None (all of them)
    when it starts with an option (`reconcile --help`, `reconcile -h plan`) or is empty."""
    return argv[0] if argv and not argv[0].startswith("-") else None


class _Unmade(argparse.ArgumentParser):
    """Stands for the parser of a command that was not named (`_parser`): what its arguments would be is not made."""

    def __init__(self) -> None:  # nothing of an ArgumentParser is used
        pass

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return argparse.Action((), argparse.SUPPRESS)

    def set_defaults(self, **kwargs: Any) -> None:
        pass


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with `only`, a command's name, the other commands are listed (by name and help, as
    `reconcile --help` and a misspelt command show them) but their arguments are not made. Making all of them costs
    ~0.03 s of every command's start, before a first plan can start reading its manifest (benchmarks/README.md)."""
    parser = Parser(prog="reconcile", description=(
        "Keep Skype for Business / Lync, Exchange and Office 365 server-to-server OAuth trust "
        "exactly as a YAML manifest says."))
    parser.add_argument("--version", action="version", version=f"reconcile {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def made(name: str) -> bool:
        return only is None or only == name

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if not made(name):
            return _Unmade()
        p.set_defaults(usage_parser=p)  # whose usage an unrecognized argument shows
        return p

    def variable_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                       help="set a manifest variable (repeatable); overrides the manifest's value")
        p.add_argument("--var-file", action="append", default=[], type=Path, metavar="FILE",
                       help="set manifest variables from a YAML file of NAME: VALUE lines (repeatable; --var wins); "
                            "RECONCILE_VAR_<NAME> in the environment sets one too, below both")

    def manifest_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = command(name, help_text)
        p.add_argument("manifest", type=Path, help="the YAML manifest")
        variable_options(p)
        p.add_argument("--state-dir", type=Path, default=Path(".reconciler"),
                       help="where the journal and the run store live (default: .reconciler; locks are "
                            "machine-wide: RECONCILE_LOCK_DIR, else /var/tmp/reconciler-locks)")
        p.add_argument("--store", metavar="PATH|URL",
                       help="run store (default: STATE_DIR/runs.sqlite3; also sqlite:///path, or postgresql://... "
                            "which also holds the target locks for runners on several machines)")
        p.add_argument("--parallel", type=_positive_int, default=256, metavar="N",  # runner.DEFAULT_PARALLEL
                       help="targets read and changed at once (default 256)")
        p.add_argument("--expiry-warning-days", type=_positive_int, default=30, metavar="DAYS",
                       help="warn about declared certificates that expire within DAYS (default 30)")
        p.add_argument("--target", action="append", default=[], metavar="ADDRESS",
                       help="only changes whose address matches (a target, a target.kind, an address or a glob; "
                            "repeatable)")
        p.add_argument("--exclude", action="append", default=[], metavar="ADDRESS",
                       help="leave out changes whose address matches (repeatable)")
        p.add_argument("--no-color", action="store_true",
                       help="no colour even on a terminal (NO_COLOR=1 does the same; piped output never has any)")
        p.add_argument("--allow-deletions", type=_non_negative_int, default=0, metavar="N",
                       help="let this run remove N objects beyond the deletion guard (10 per run, or half a "
                            "target's objects from three on)")
        return p

    def unattended(p: argparse.ArgumentParser) -> None:
        p.add_argument("--log-format", choices=("text", "json"), default="text",
                       help="one event per line: readable text or JSON (default text)")
        p.add_argument("--metrics-file", type=_output_file, metavar="FILE",
                       help="write Prometheus metrics here after each run (node_exporter textfile collector)")
        notify_option(p)

    def notify_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--notify-file", type=Path, metavar="FILE", default=_env_path("RECONCILE_NOTIFY_FILE"),
                       help="notifications configured in a file of their own (`notify:` as in a manifest; told as "
                            "well as the manifest's); default: $RECONCILE_NOTIFY_FILE")

    p = manifest_command("validate", "check a manifest without touching any target")
    p.set_defaults(func=cmd_validate)

    p = manifest_command("plan", "show what apply would change")
    p.add_argument("--json", action="store_true", help="print the machine-readable plan")
    p.add_argument("--format", choices=("text", "json", "markdown"), default=None,
                   help="text (default), json (as --json) or markdown (for pull-request comments and CI job "
                        "summaries: one collapsible block per target)")
    p.add_argument("--out", type=_output_file, metavar="FILE",
                   help="save the plan to apply it later with `reconcile apply FILE`")
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 0 when there are no changes, 2 when there are, 1 on error")
    p.set_defaults(func=cmd_plan)

    p = manifest_command("apply", "make the live state match the manifest (or a saved plan)")
    p.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    p.add_argument("--verify", action="store_true", help="run the manifest's verify checks after applying")
    notify_option(p)
    p.add_argument("--lock-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                   help="seconds to wait for a target's lock (0: do not wait)")
    p.set_defaults(func=cmd_apply)

    p = manifest_command("drift", "plan only and record it: exit 0 in sync, 2 drifted, 1 error (for cron and CI)")
    unattended(p)
    p.set_defaults(func=cmd_drift)

    p = manifest_command("run", "reconcile on an interval like a GitOps controller (enforce/warn/suspend modes)")
    unattended(p)
    p.add_argument("--interval", default="15m", help="time between cycles: 90, 30s, 15m, 1h (default 15m)")
    p.add_argument("--jitter", type=_fraction, default=0.1, metavar="FRACTION",
                   help="fraction of the interval to vary by, 0 to below 1 (default 0.1)")
    p.add_argument("--retry-base", default="10s", help="first backoff after a failed cycle; doubles (default 10s)")
    p.add_argument("--max-backoff", help="cap on the backoff (default: the interval)")
    p.add_argument("--once", action="store_true", help="run one cycle and exit (for schedulers that start us)")
    p.add_argument("--max-cycles", type=int, help=argparse.SUPPRESS)
    p.add_argument("--metrics-port", type=port_number, metavar="PORT",
                   help="serve /metrics on 127.0.0.1:PORT while running (0: any free port)")
    p.add_argument("--metrics-bind", metavar="ADDRESS", default=None,
                   help="the address --metrics-port listens on (default 127.0.0.1; 0.0.0.0 or :: in a container: the "
                        "metrics name every target, so protect the port)")
    p.add_argument("--lock-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                   help="seconds to wait for a target's lock (0: do not wait)")
    p.add_argument("--wake-poll", default="5s", metavar="DURATION",
                   help="while sleeping, look this often for a `reconcile trigger` request (default 5s)")
    p.set_defaults(func=cmd_run)

    def store_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = command(name, help_text)
        p.add_argument("manifest", type=Path, help="the YAML manifest (the loop's, as `reconcile run` was given it)")
        variable_options(p)
        p.add_argument("--state-dir", type=Path, default=Path(".reconciler"),
                       help="the loop's state directory: its run store is STATE_DIR/runs.sqlite3 "
                            "(default: .reconciler)")
        p.add_argument("--store", metavar="PATH|URL", help="the loop's run store, if it was given --store")
        return p

    p = store_command("suspend", "stop the `run` and `drift` loops acting on a target or one resource until resumed "
                                 "(recorded in the run store)")
    p.add_argument("address", metavar="ADDRESS",
                   help="a target's name, or a resource's address (target.Kind.identity, as `plan` prints it)")
    p.add_argument("--reason", default="", help="why (shown by `reconcile status`)")
    p.set_defaults(func=cmd_suspend)

    p = store_command("resume", "let the loops act again on a target or resource `reconcile suspend` held")
    p.add_argument("address", metavar="ADDRESS", help="what `reconcile suspend` was given")
    p.set_defaults(func=cmd_resume)

    p = store_command("trigger", "ask a running `reconcile run` loop to reconcile the manifest now instead of at its "
                                 "next scheduled run")
    p.add_argument("--wait", action="store_true",
                   help="wait for the cycle the request starts and exit with its result (0 done, 1 failed)")
    p.add_argument("--timeout", default="10m", metavar="DURATION",
                   help="with --wait: give up after this long (default 10m; exit 1)")
    p.set_defaults(func=cmd_trigger)

    p = command("history", "list recorded runs, or show one")
    if made("history"):  # its choices come from the run store's package, imported only then
        from reconciler.store.base import RESULTS

        p.add_argument("run_id", nargs="?", type=int, help="show this run in full")
        p.add_argument("--limit", type=_non_negative_int, default=20, metavar="N",
                       help="show at most N runs, newest first (default 20)")
        p.add_argument("--manifest",
                       help="only runs of this manifest (by its identity: from any clone of its repository)")
        p.add_argument("--target", metavar="NAME", help="only runs that included this target")
        p.add_argument("--result", choices=sorted(RESULTS), metavar="RESULT",
                       help="only runs that ended so: " + ", ".join(sorted(RESULTS)))
        p.add_argument("--since", metavar="WHEN", help="only runs started since WHEN: a duration ago (24h, 7d, 90m) "
                                                       "or an ISO time (2026-01-31, 2026-01-31T08:00, ...+01:00)")
        p.add_argument("--json", action="store_true", help="print the runs as JSON")
        p.add_argument("--state-dir", type=Path, default=Path(".reconciler"),
                       help="where the run store lives (default: .reconciler; the store is STATE_DIR/runs.sqlite3)")
        p.add_argument("--store", metavar="PATH|URL",
                       help="the run store, if not STATE_DIR/runs.sqlite3 (sqlite:///path, postgresql://...)")
        p.set_defaults(func=cmd_history)

    p = manifest_command("verify", "run the manifest's end-to-end checks (e.g. Test-CsExStorageConnectivity)")
    p.set_defaults(func=cmd_verify)

    p = manifest_command("graph", "show who trusts whom (and whether each link checks out)")
    p.add_argument("--format", choices=("text", "dot", "mermaid"), default="text",
                   help="text (default), dot (Graphviz: | dot -Tsvg > trust.svg) or mermaid (wikis, GitHub)")
    p.set_defaults(func=cmd_graph)

    p = manifest_command("status", "where each target stands: Ready, Drifted, Failing or Suspended, since when, "
                                   "last run and applied revision")
    p.add_argument("--json", action="store_true", help="print the conditions as JSON")
    p.set_defaults(func=cmd_status)

    p = manifest_command("report", "write one HTML page: each target's status and drift, the trust graph as a "
                                    "picture, and the recent runs")
    p.add_argument("--out", type=_output_file, metavar="FILE", required=True, help="the HTML file to write")
    p.add_argument("--limit", type=_non_negative_int, default=50, metavar="N",
                   help="the most recent runs shown (default 50)")
    p.set_defaults(func=cmd_report)

    p = manifest_command("discover", "print the live state of every target in the manifest")
    p.add_argument("--json", action="store_true", help="print the live state as JSON")
    p.set_defaults(func=cmd_discover)

    p = manifest_command("export", "write the manifest that describes the live state of the manifest's targets")
    p.add_argument("--out", type=_output_file, metavar="FILE", required=True,
                   help="the manifest to write (certificates go beside it, in certs/)")
    p.add_argument("--kind", action="append", default=[], metavar="KIND", help="only these kinds (repeatable)")
    p.set_defaults(func=cmd_export)

    p = command("show", "render a saved plan (what `plan --out` writes) as text, JSON or Markdown")
    p.add_argument("plan_file", type=Path, metavar="PLAN", help="a plan saved with `reconcile plan --out PLAN`")
    p.add_argument("--json", action="store_true", help="print the plan's JSON document")
    p.add_argument("--format", choices=("text", "json", "markdown"), default=None,
                   help="text (default), json (as --json) or markdown")
    p.add_argument("--no-color", action="store_true",
                   help="no colour even on a terminal (NO_COLOR=1 does the same; piped output never has any)")
    p.set_defaults(func=cmd_show)

    from reconciler.starters import KINDS as STARTERS
    p = command("init", "write a commented starter manifest for an estate: " + ", ".join(STARTERS))
    p.add_argument("--type", choices=STARTERS, default=STARTERS[0], dest="estate",
                   help="the estate: " + ", ".join(STARTERS) + f" (default {STARTERS[0]})")
    p.add_argument("--out", type=_output_file, metavar="FILE", default=Path("reconcile.yaml"),
                   help="the manifest to write (default reconcile.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.set_defaults(func=cmd_init)

    p = command("schema", "print the manifest JSON Schema (what editors use)")
    p.add_argument("--out", type=_output_file, metavar="FILE", help="write it to FILE instead of printing it")
    p.set_defaults(func=cmd_schema)

    from reconciler.lab.cli import add_lab_parser
    add_lab_parser(sub, ops=made("lab"))
    return parser


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value) if value else None


def _notify(args: argparse.Namespace) -> tuple[NotifyDestination, ...]:
    """The destinations of --notify-file (checked before any work: a mistake there is an error like a manifest's)."""
    if getattr(args, "notify_file", None) is None:
        return ()
    from reconciler.manifest.notify import load_notify_file

    return load_notify_file(args.notify_file)


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _from_zero(text: str, expected: str, below: float, rule: str) -> float:
    """A number from 0 to below `below` (finite: `nan` is no number of anything)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not 0 <= value < below:
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
    return value


def _seconds(text: str) -> float:
    """A number of seconds to wait, 0 or more (`inf` is not a wait)."""
    return _from_zero(text, "a number of seconds", float("inf"), "0 or more seconds")


def _fraction(text: str) -> float:
    """A fraction from 0 to below 1: a jitter of 1 or more could make a loop's wait zero, cycle after cycle."""
    return _from_zero(text, "a fraction such as 0.1", 1.0, "0 or more and below 1")


def port_number(text: str) -> int:
    """A TCP port for a server of ours: 0 (any free port) to 65535."""
    value = _whole_number(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 (any free port) to 65535, got {value}")
    return value


def _output_file(text: str) -> Path:
    """A file we will write, as written: `dir/` names a directory (Path would forget the slash)."""
    if not text or text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; expected a file path")
    return Path(text)


def _check_outputs(args: argparse.Namespace) -> None:
    """Files the command will write: not a directory, in a folder that exists. Checked before any work."""
    for option in ("out", "metrics_file"):
        path = getattr(args, option, None)
        if not isinstance(path, Path):
            continue
        flag = "--" + option.replace("_", "-")
        if path.is_dir():
            raise ReconcilerError(f"{flag} {path}: it is a directory; expected a file path")
        if not path.parent.is_dir():
            raise ReconcilerError(f"{flag} {path}: the folder {path.parent} does not exist")


def _overrides(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            # Not echoed: a value typed without its NAME= may be a secret.
            raise ReconcilerError("--var: expected NAME=VALUE (one was given without a name and '='; "
                                  "it is not shown)")
        out[name] = value
    return out


VAR_ENV_PREFIX = "RECONCILE_VAR_"


def _variables(args: argparse.Namespace) -> dict[str, str]:
    """The values given for manifest variables, lowest precedence first: RECONCILE_VAR_<name> in the environment
    (only for variables the manifest declares, as Terraform's TF_VAR_), then each --var-file in order, then --var."""
    values: dict[str, str] = {}
    files: list[Path] = list(getattr(args, "var_file", None) or [])
    if any(key.upper().startswith(VAR_ENV_PREFIX) for key in os.environ):
        values.update(_environment_variables(Path(args.manifest)))
    for file in files:
        values.update(_var_file(file))
    values.update(_overrides(args.var))
    return values


def _environment_variables(manifest: Path) -> dict[str, str]:
    """RECONCILE_VAR_<name> for each variable the manifest declares; the name matched exactly, else ignoring case
    (Windows keeps environment names in upper case)."""
    try:
        declared = _sections_kept(manifest.read_text(encoding="utf-8-sig")).get("variables")
    except (OSError, ValueError):  # unreadable or not YAML: the manifest's load reports it
        return {}
    if not isinstance(declared, dict):
        return {}
    folded = {key.upper(): value for key, value in os.environ.items() if key.upper().startswith(VAR_ENV_PREFIX)}
    found: dict[str, str] = {}
    for name in map(str, declared):
        key = VAR_ENV_PREFIX + name
        if key in os.environ:
            found[name] = os.environ[key]
        elif key.upper() in folded:
            found[name] = folded[key.upper()]
    return found


def _var_file(path: Path) -> dict[str, str]:
    """A --var-file: a YAML (or JSON) mapping of variable names to values (strings, numbers or booleans)."""
    import yaml

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReconcilerError(f"--var-file {path}: {exc.strerror or exc}") from None
    text = _text_of(raw, f"--var-file {path}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ReconcilerError(f"--var-file {path}{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}"
                              + _tab_hint(text)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ReconcilerError(f"--var-file {path}: expected a mapping of variable names to values "
                              f"(lab: https://..., one per line), got {type(data).__name__}")
    values: dict[str, str] = {}
    for name, value in data.items():
        if isinstance(value, bool):
            values[str(name)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            values[str(name)] = str(value)
        else:
            raise ReconcilerError(f"--var-file {path}: {name}: a variable's value is text, a number or true/false, "
                                  f"not {type(value).__name__}")
    return values


def _text_of(raw: bytes, what: str) -> str:
    from reconciler.manifest.loader import decode_text

    return decode_text(raw, what)


def _tab_hint(text: str) -> str:
    return "; indent with spaces, not tabs" if "\t" in text else ""


def _write(args: argparse.Namespace, text: str, *, status: bool = False) -> None:
    """Text for people on stdout: coloured on a terminal (symbols, summary, errors), plain when piped or asked."""
    from reconciler.render import colour

    if colour.wanted(sys.stdout, disabled=getattr(args, "no_color", False)):
        text = colour.paint_status(text) if status else colour.paint(text)
    sys.stdout.write(text)


def _load(args: argparse.Namespace, registry: Registry) -> DesiredState:
    from reconciler.manifest import load_manifest

    return load_manifest(args.manifest, registry, _variables(args))


def _settings(args: argparse.Namespace) -> Settings:
    from reconciler.guards import DeletionLimits
    from reconciler.runner import Settings

    return Settings(state_dir=args.state_dir, lock_timeout=getattr(args, "lock_timeout", 30.0),
                    parallel=args.parallel, expiry_warning_days=args.expiry_warning_days, store=args.store,
                    deletions=DeletionLimits(allowed=args.allow_deletions))


def cmd_validate(args: argparse.Namespace, registry: Registry) -> int:
    desired = _load(args, registry)
    print(f"{args.manifest}: valid ({len(desired.resources)} resources on {len(desired.targets)} targets)")
    return EXIT_OK


def _store(args: argparse.Namespace) -> RunStore:
    from reconciler.store import open_store

    return open_store(args.store or args.state_dir / "runs.sqlite3")


def _manifest_key(manifest: str | Path) -> ManifestKey:
    """What the run store knows the manifest by (its identity across clones of one repository, and its local path),
    worked out once per command."""
    from reconciler.store.gitinfo import manifest_key

    return manifest_key(Path(manifest))


@contextlib.contextmanager
def _recorded(command: str, args: argparse.Namespace, *, events: EventLog | None = None,
              metrics: Metrics | None = None) -> Iterator[Recorder]:
    from reconciler.recording import Recorder

    notify = _notify(args)
    with contextlib.closing(_store(args)) as store, \
            Recorder(command, args.manifest, store=store, events=events, metrics=metrics, notify=notify,
                     key=_manifest_key(args.manifest)) as record:
        yield record


def cmd_plan(args: argparse.Namespace, registry: Registry) -> int:
    _plan_format(args)  # a contradiction (--json --format markdown) is refused before any work
    with _recorded("plan", args) as record:
        return _plan(args, registry, record)


def _plan(args: argparse.Namespace, registry: Registry, record: Recorder) -> int:
    from reconciler.render.json_plan import plan_to_json
    from reconciler.render.text import render_plan
    from reconciler.workflow import Verdict, reconcile_once

    saved: list[dict[str, Any]] = []

    def show(plan: Plan, session: Session) -> None:
        shown = _plan_format(args)
        if args.out or shown in ("markdown", "json"):  # the plan document (not built for the text alone)
            document = plan_to_json(plan, session.kind_of)
            document["variables"] = _variables(args)
            saved.append(document)
        if shown == "markdown":
            from reconciler.render.markdown import render_markdown
            sys.stdout.write(render_markdown(document))
        elif shown == "json":
            print(json.dumps(document, indent=2))
        else:
            _write(args, render_plan(plan, session.kind_of))

    outcome = reconcile_once(_request(args, show=show), registry, _settings(args), record)
    if args.out and saved:
        args.out.write_text(json.dumps(saved[0], indent=2) + "\n", encoding="utf-8")
        print(f"Saved the plan to {args.out}; apply it with: reconcile apply {args.out}", file=sys.stderr)
    if outcome.verdict is Verdict.ERROR:
        print("error: the plan has errors; apply would change nothing on "
              + ("any target" if set(outcome.blocked) >= set(outcome.plan.targets if outcome.plan else ())
                 else "target(s) " + ", ".join(outcome.blocked))
              + " until they are fixed.", file=sys.stderr)
    return outcome.verdict.exit_code(detailed=args.detailed_exitcode)


def _request(args: argparse.Namespace, **more: Any) -> Request:
    from reconciler.workflow import Request, Selection

    return Request(args.manifest, _variables(args), selection=Selection(tuple(args.target), tuple(args.exclude)),
                   progress=_progress(), **more)


def _progress() -> Callable[[str], None]:
    """A line on stderr as each target's discovery or apply finishes (stdout stays the plan or the JSON);
    numbered on a terminal ([3/40] in the order they finish)."""
    lock = threading.Lock()
    count = [0]
    numbered = sys.stderr.isatty() if hasattr(sys.stderr, "isatty") else False

    def tell(message: str) -> None:
        with lock:
            count[0] += 1
            print(f"  [{count[0]}] {message}" if numbered else f"  {message}", file=sys.stderr, flush=True)
    return tell


def _read_saved_plan(path: Path) -> dict[str, Any] | None:
    """A saved plan is our JSON document; anything else is taken for a manifest."""
    from reconciler.plan import FORMAT_VERSION

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
    from reconciler.render.saved import checked_for_apply

    return checked_for_apply(document, str(path))


def cmd_apply(args: argparse.Namespace, registry: Registry) -> int:
    saved = _read_saved_plan(args.manifest)
    if saved is not None:
        args.manifest = Path(saved["manifest"]["path"])
        if not args.var and not args.var_file:  # the plan's own variable values, unless new ones are given
            args.var = [f"{k}={v}" for k, v in saved.get("variables", {}).items()]
    with _recorded("apply", args) as record:
        return _apply(args, registry, record, saved)


def _apply(args: argparse.Namespace, registry: Registry, record: Recorder, saved: dict[str, Any] | None) -> int:
    from reconciler.render.text import render_plan
    from reconciler.workflow import Verdict, reconcile_once

    def show(plan: Plan, session: Session) -> None:
        _write(args, render_plan(plan, session.kind_of))

    def report(result: ApplyResult, plan: Plan, session: Session) -> None:
        _write(args, _report(result, plan, session))

    def blocked(targets: tuple[str, ...]) -> None:
        print(f"error: the plan has errors for {', '.join(targets)}: nothing is changed there; the other targets "
              "are applied.", file=sys.stderr)

    def confirm(plan: Plan) -> bool:
        return _confirm(sys.stdin, sys.stdout)

    interactive = saved is None and not args.auto_approve
    request = _request(args, apply=True, saved=saved, show=show, report=report, blocked=blocked,
                       confirm=confirm if interactive else None, verify=args.verify)
    outcome = reconcile_once(request, registry, _settings(args), record)
    plan = outcome.plan
    if outcome.verdict is Verdict.ERROR:
        print("error: the plan has errors; nothing was changed.", file=sys.stderr)
    elif outcome.result is None and plan is not None and plan.changes and not plan.enforced:
        print("Nothing to apply: every change above is in warn mode (reported only).")
    if outcome.checks:
        return _print_checks(list(outcome.checks))
    return outcome.verdict.exit_code()


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


def _report(result: ApplyResult, plan: Plan, session: Session) -> str:
    """What apply did, for people."""
    from reconciler.executor import Status

    lines: list[str] = []
    say = lines.append

    say("\nApplying:")
    for outcome in result.outcomes:
        change = outcome.change
        say(f"  {change.symbol:>3} {change.key.address}: {outcome.status.value}")
        if outcome.error:
            say(f"        error: {outcome.error}")
        if outcome.note:
            say(f"        {outcome.note}")
    counts = {s: sum(1 for o in result.outcomes if o.status is s) for s in Status}
    failed = len(result.outcomes) - counts[Status.APPLIED] - counts[Status.NOT_RUN] - counts[Status.WARNED]
    verdict = "Apply complete" if all(o.ok for o in result.outcomes) else "Apply stopped at the first failure"
    say(f"\n{verdict}: {counts[Status.APPLIED]} applied, {failed} failed, {counts[Status.NOT_RUN]} not run.")
    for handler in result.handlers:
        if handler.error:
            say(f"Handler {handler.run.address}: FAILED: {handler.error}")
        elif handler.ran:
            say(f"Handler {handler.run.address}: ran once (" + "; ".join(c.display() for c in handler.run.commands)
                  + ")")
        else:
            say(f"Handler {handler.run.address}: not needed (no triggering change was applied)")
    for target, remaining in result.remaining.items():
        if remaining:
            say(f"Re-read {target}: NOT converged, {len(remaining)} change(s) still needed: "
                  + ", ".join(c.key.address for c in remaining))
        else:
            say(f"Re-read {target}: converged (the live state matches the manifest).")
    for target, steps in result.next_steps.items():
        for change in steps:
            say(f"Re-read {target}: {change.key.address} advances one step per cycle; its next step is for the "
                  f"next run ({change.reason})")
    return "\n".join(lines) + "\n"


def _unattended(args: argparse.Namespace, registry: Registry, store: RunStore, metrics: Metrics,
                *, apply: bool, command: str) -> Cycle:
    from reconciler.events import EventLog
    from reconciler.scheduler import Cycle
    from reconciler.workflow import Selection

    settings = _settings(args)
    events = EventLog(sys.stdout, fmt=args.log_format)
    return Cycle(args.manifest, registry, settings, _variables(args), apply=apply, command=command,
                 store=store, events=events, metrics=metrics,
                 selection=Selection(tuple(args.target), tuple(args.exclude)), notify=_notify(args),
                 key=_manifest_key(args.manifest))


def _write_metrics(args: argparse.Namespace, metrics: Metrics) -> None:
    if args.metrics_file:
        metrics.write_textfile(args.metrics_file)


def cmd_drift(args: argparse.Namespace, registry: Registry) -> int:
    from reconciler.metrics import Metrics

    metrics = Metrics()
    with contextlib.closing(_store(args)) as store:
        cycle = _unattended(args, registry, store, metrics, apply=False, command="drift")
        try:
            verdict = cycle()
        finally:
            _write_metrics(args, metrics)
    return verdict.exit_code(detailed=True)


def cmd_run(args: argparse.Namespace, registry: Registry) -> int:
    from reconciler.metrics import Metrics
    from reconciler.scheduler import Schedule, parse_duration

    gc.enable()  # the loop stays up: it collects cyclic garbage (`run` turned the collector off)
    try:
        schedule = Schedule(parse_duration(args.interval), args.jitter, parse_duration(args.retry_base),
                            parse_duration(args.max_backoff) if args.max_backoff else None)
        parse_duration(args.wake_poll)
    except ValueError as exc:
        raise ReconcilerError(str(exc)) from None
    if args.metrics_bind is not None and args.metrics_port is None:
        raise ReconcilerError("--metrics-bind: give --metrics-port too (the port to serve /metrics on)")
    metrics = Metrics()
    stop = threading.Event()
    finished = threading.Event()  # a Windows close/logoff/shutdown handler waits for it (see console_stop)
    try:
        return _run(args, registry, schedule, metrics, stop, finished)
    finally:
        finished.set()


def _run(args: argparse.Namespace, registry: Registry, schedule: Schedule, metrics: Metrics,
         stop: threading.Event, finished: threading.Event) -> int:
    from reconciler.metrics import MetricsServer
    from reconciler.portable import console_stop
    from reconciler.scheduler import parse_duration, run_loop

    with contextlib.closing(_store(args)) as store, contextlib.ExitStack() as stack:
        cycle = _unattended(args, registry, store, metrics, apply=True, command="run")
        events = cycle.events
        assert events is not None
        if args.metrics_port is not None:
            server = stack.enter_context(MetricsServer(metrics, host=args.metrics_bind or "127.0.0.1",
                                                       port=args.metrics_port, allow_remote=True))
            events.emit("metrics", url=f"{server.base_url}/metrics")

        def on_signal(signum: int, _frame: object) -> None:
            events.emit("stop", signal=signal.Signals(signum).name,
                        note="finishing the current cycle, then exiting")
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.signal(sig, on_signal)
            stack.callback(signal.signal, sig, previous)

        def on_console_event(name: str) -> None:  # Windows: Ctrl+C, Ctrl+Break, close, logoff, shutdown
            events.emit("stop", signal=name, note="finishing the current cycle, then exiting")
            stop.set()

        stack.enter_context(console_stop(on_console_event, finished))

        def cycle_and_export() -> Verdict:
            try:
                return cycle()
            finally:
                _write_metrics(args, metrics)

        from reconciler.scheduler import StoreControl
        assert cycle.key is not None  # a cycle with a store has its manifest's key
        control = StoreControl(store, cycle.key, stop, poll=parse_duration(args.wake_poll), events=events)
        return run_loop(cycle_and_export, schedule, stop, events, control=None if args.once else control,
                        max_cycles=1 if args.once else args.max_cycles)


def cmd_history(args: argparse.Namespace, registry: Registry) -> int:
    from reconciler.store import format_run, format_runs, run_to_json, runs_to_json

    with contextlib.closing(_store(args)) as store:
        if args.run_id is not None:
            record = store.get(args.run_id)
            if record is None:
                raise ReconcilerError(f"no run with id {args.run_id}")
            print(json.dumps(run_to_json(record), indent=2) if args.json else format_run(record))
            return EXIT_OK
        key = _manifest_key(args.manifest) if args.manifest else None
        from reconciler.history import parse_since
        from reconciler.store import RunResult
        records = store.list(limit=args.limit, manifest_path=key.keys if key else None, target=args.target,
                             result=RunResult(args.result) if args.result else None,
                             since=parse_since(args.since) if args.since else None)
        print(json.dumps(runs_to_json(records), indent=2) if args.json
              else format_runs(records, shown=key.shown if key else None))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, registry: Registry) -> int:
    from reconciler.runner import open_session, verify

    desired = _load(args, registry)
    if not desired.checks:
        print(f"{args.manifest} declares no verify checks.")
        return EXIT_OK
    with open_session(desired, registry, args.parallel) as session:
        return _print_checks(verify(session))


def _print_checks(outcomes: list[CheckOutcome]) -> int:
    print("\nVerify:")
    for outcome in outcomes:
        check = outcome.check
        args = " ".join(f"{k}={v}" for k, v in check.arguments.items())
        print(f"  {'ok  ' if outcome.ok else 'FAIL'} {check.target} {check.check} {args}"
              + ("" if outcome.ok else f"\n       {outcome.detail}"))
    failed = sum(1 for o in outcomes if not o.ok)
    print(f"{len(outcomes) - failed} passed, {failed} failed." if failed else f"All {len(outcomes)} checks passed.")
    return EXIT_ERROR if failed else EXIT_OK


def cmd_graph(args: argparse.Namespace, registry: Registry) -> int:
    from reconciler.trustgraph import graph_dot, graph_mermaid, graph_text, trust_graph

    desired = _load(args, registry)
    graph = trust_graph(desired, registry, timeout=_settings(args).metadata_timeout)
    sys.stdout.write({"text": graph_text, "dot": graph_dot, "mermaid": graph_mermaid}[args.format](graph))
    return EXIT_ERROR if any(d.severity == "error" for d in graph.diagnostics) else EXIT_OK


def cmd_status(args: argparse.Namespace, registry: Registry) -> int:
    from reconciler.status import format_status, status_to_json, target_status

    desired = _load(args, registry)
    keys = _manifest_key(args.manifest).keys
    with contextlib.closing(_store(args)) as store:
        runs = store.list(limit=200, manifest_path=keys)
        suspensions = store.suspensions(keys)
        next_run = store.next_run(keys)
    statuses = [target_status(target, runs, suspensions, next_run) for target in desired.targets.values()]
    if args.json:
        print(json.dumps(status_to_json(statuses), indent=2))
    else:
        _write(args, format_status(statuses), status=True)
    return EXIT_OK


def _address(desired: DesiredState, text: str) -> str:
    """A target's name or a resource's address as the manifest spells it; an error suggests the nearest."""
    names = list(desired.targets) + [r.key.address for r in desired.resources]
    found = next((n for n in names if n.casefold() == text.casefold()), None)
    if found is not None:
        return found
    from reconciler.suggest import did_you_mean

    hint = did_you_mean(text, names) or f" (targets: {', '.join(desired.targets)})"
    raise ReconcilerError(f"{Path(desired.manifest_path).name} has no target or resource {text!r}{hint}")


def cmd_suspend(args: argparse.Namespace, registry: Registry) -> int:
    from reconciler.store.base import Suspension, who

    desired = _load(args, registry)
    address = _address(desired, args.address)
    with contextlib.closing(_store(args)) as store:
        store.suspend(Suspension(_manifest_key(args.manifest).identity, address, args.reason, time.time(), who()))
    print(f"Suspended {address}: `reconcile run` and `drift` leave it alone until `reconcile resume "
          f"{args.manifest} {address}` (a `reconcile apply` you run yourself still acts on it).")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace, registry: Registry) -> int:
    keys = _manifest_key(args.manifest).keys
    with contextlib.closing(_store(args)) as store:
        held = next((s.address for s in store.suspensions(keys)
                     if s.address.casefold() == args.address.casefold()), None)
        if held is None:
            _address(_load(args, registry), args.address)  # a misspelt address is an error, with a suggestion
            print(f"{args.address} is not suspended; nothing to resume.")
            return EXIT_OK
        store.resume(keys, held)  # a suspension recorded under the local path by an older version too
    print(f"Resumed {held}: the next cycle of `reconcile run` acts on it again (`reconcile trigger "
          f"{args.manifest}` to have it now).")
    return EXIT_OK


def cmd_trigger(args: argparse.Namespace, registry: Registry) -> int:
    from reconciler.scheduler import parse_duration
    from reconciler.store.base import RunRequest, who

    try:
        timeout = parse_duration(args.timeout)
    except ValueError as exc:
        raise ReconcilerError(f"--timeout: {exc}") from None
    if not args.manifest.is_file():
        raise ReconcilerError(f"{args.manifest}: no such manifest file")
    key = _manifest_key(args.manifest)
    requested = time.time()
    with contextlib.closing(_store(args)) as store:
        request_id = store.request_run(RunRequest(None, key.identity, requested, who()))
        loop = store.next_run(key.keys)
        if loop is None:
            print(f"Requested a run of {args.manifest} (request {request_id}); no `reconcile run` loop has recorded a "
                  "schedule for it in this run store: the request is served when one runs.", file=sys.stderr)
        else:
            print(f"Requested a run of {args.manifest} (request {request_id}) from the loop ({loop.by}).",
                  file=sys.stderr)
        if not args.wait:
            return EXIT_OK
        return _wait_for_run(store, key, requested, time.monotonic() + timeout, args.timeout)


def _wait_for_run(store: RunStore, key: ManifestKey, requested: float, deadline: float, timeout: str) -> int:
    """The exit code of the first `run` cycle that started after `requested` and finished, once it has."""
    from reconciler.workflow import Verdict

    while True:
        runs = store.list(limit=5, manifest_path=key.keys, command="run", since=requested)
        done = [r for r in runs if r.finished]
        if done:
            run = done[-1]  # the oldest: the one the request started
            print(f"Run {run.id}: {run.result_word}" + "".join(f"\n  error: {e}" for e in run.errors))
            verdict = None if run.result is None else Verdict.of(run.result)
            return EXIT_ERROR if verdict is None else verdict.exit_code()  # interrupted, or a word not known
        if time.monotonic() >= deadline:
            raise ReconcilerError(f"no `reconcile run` cycle of {key.local} finished within {timeout}")
        time.sleep(0.2)


def cmd_report(args: argparse.Namespace, registry: Registry) -> int:
    import shutil
    import subprocess

    from reconciler.render.html import render_report
    from reconciler.status import target_status
    from reconciler.trustgraph import graph_dot, trust_graph

    desired = _load(args, registry)
    keys = _manifest_key(args.manifest).keys
    with contextlib.closing(_store(args)) as store:
        runs = store.list(limit=max(200, args.limit), manifest_path=keys)
        suspensions = store.suspensions(keys)
        next_run = store.next_run(keys)
    statuses = [target_status(target, runs, suspensions, next_run) for target in desired.targets.values()]
    dot = graph_dot(trust_graph(desired, registry, timeout=_settings(args).metadata_timeout))
    svg = None
    if shutil.which("dot") is not None:
        try:
            svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60,
                                 check=True).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"warning: Graphviz could not draw the trust graph ({exc}); the report shows its DOT source",
                  file=sys.stderr)
    args.out.write_text(render_report(Path(args.manifest).name, statuses, runs[:args.limit], dot=dot, svg=svg),
                        encoding="utf-8")
    print(f"Wrote {args.out}: {len(statuses)} target(s), {min(len(runs), args.limit)} run(s), the trust graph "
          + ("as a picture." if svg is not None else "as DOT source (install Graphviz for a picture)."))
    return EXIT_OK


def cmd_discover(args: argparse.Namespace, registry: Registry) -> int:
    from reconciler.runner import discover, open_session

    desired = _load(args, registry)
    with open_session(desired, registry, args.parallel, _progress()) as session:
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


def cmd_export(args: argparse.Namespace, registry: Registry) -> int:

    from reconciler.export import export_manifest
    from reconciler.model import DesiredState
    from reconciler.runner import discover, open_session

    desired = _load(args, registry)
    wanted = set(args.target)
    if wanted:
        unknown = sorted(wanted - set(desired.targets))
        if unknown:
            raise ReconcilerError(f"--target {unknown[0]}: the manifest has no such target")
        desired = DesiredState(desired.manifest_path, desired.manifest_sha256,
                               {n: t for n, t in desired.targets.items() if n in wanted},
                               tuple(r for r in desired.resources if r.key.target in wanted), desired.checks)
    with open_session(desired, registry, args.parallel, _progress()) as session:
        live = discover(session)
    source = _sections_kept(Path(args.manifest).read_text(encoding="utf-8-sig"))
    kinds = {name: registry.provider(t.provider).kinds for name, t in desired.targets.items()}
    exported = export_manifest(desired, live, kinds, source, only_kinds=frozenset(args.kind),
                               variables=_resolved_variables(source, _variables(args)))
    written = exported.write(args.out)
    count = len(exported.document["resources"])
    print(f"Wrote {args.out}: {count} resources on {len(live)} targets" +
          (f", and {len(written) - 1} certificate file(s)" if len(written) > 1 else "") + ".")
    return EXIT_OK


def _sections_kept(text: str) -> dict[str, Any]:
    """The manifest's sections an export keeps as written (all but `resources`, which it writes anew), read as YAML.

    The block-style `resources:` section (to the next top-level key) is left out of the parse: at 10,000
    resources it is most of the text and of the time. Anything the cut could break (an alias into it, flow
    style) falls back to reading the whole text."""
    import re

    import yaml

    loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when PyYAML has it
    cut = re.search(r"^resources:[ \t]*(#.*)?\n(?:(?:[ \t#\-].*|)\n)*", text, re.MULTILINE)
    if cut is not None:
        with contextlib.suppress(yaml.YAMLError):
            data = yaml.load(text[:cut.start()] + text[cut.end():], Loader=loader)
            if isinstance(data, dict) and "resources" not in data:
                return data
    data = yaml.load(text, Loader=loader)
    return data if isinstance(data, dict) else {}


def _resolved_variables(source: Any, overrides: dict[str, str]) -> dict[str, str]:
    """The manifest's variables as this run resolved them (the manifest loaded, so they resolve)."""
    from reconciler.manifest.variables import resolve

    declared = source.get("variables") if isinstance(source, dict) else None
    templates = {str(k): v for k, v in (declared or {}).items() if isinstance(v, str)}
    values, _ = resolve(templates, overrides)
    return dict(values.values)


def _shown(session: Session, target: str, kind: str, fields: Any) -> dict[str, Any]:
    from reconciler.render.values import shown_record

    provider = session.registry.provider(session.desired.targets[target].provider)
    return shown_record(provider.kinds.get(kind), fields) or {}


def cmd_init(args: argparse.Namespace, registry: Registry) -> int:
    from reconciler.starters import starter

    if args.out.exists() and not args.force:
        raise ReconcilerError(f"{args.out} exists; nothing was written (--force overwrites it)")
    args.out.write_text(starter(args.estate, str(args.out)), encoding="utf-8")
    print(f"Wrote {args.out} ({args.estate}). Set its variables to your hosts, then: reconcile validate {args.out}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, registry: Registry) -> int:
    from reconciler.manifest import build_schema

    text = json.dumps(build_schema(registry), indent=2, sort_keys=True) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _plan_format(args: argparse.Namespace) -> str:
    """--format, or json for --json; both given and different is an error."""
    if args.json and args.format not in (None, "json"):
        raise ReconcilerError(f"--json and --format {args.format} ask for different outputs; give one")
    return "json" if args.json else args.format or "text"


def cmd_show(args: argparse.Namespace, registry: Registry) -> int:
    from reconciler.render.saved import header, plan_from_document, read_plan_document
    from reconciler.render.text import render_plan as render_text

    document = read_plan_document(args.plan_file)
    fmt = _plan_format(args)
    if fmt == "json":
        print(json.dumps(document, indent=2))
    elif fmt == "markdown":
        from reconciler.render.markdown import render_markdown
        sys.stdout.write(render_markdown(document))
    else:
        plan = plan_from_document(document, str(args.plan_file))
        _write(args, header(document) + "\n" + render_text(plan, lambda change: None))
    return EXIT_OK
