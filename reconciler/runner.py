"""One run over a manifest: open the targets, discover, plan, and (for apply) execute and re-read.

This is the glue between the layers; the CLI and the scheduler call it, and it holds no state
beyond the run it is doing.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from reconciler import clock, known_after_apply
from reconciler.changes import Action, Change, HandlerRun
from reconciler.checks import check_kinds, check_metadata, check_targets
from reconciler.commands import Overlapping, Pending, Transport
from reconciler.errors import DiscoveryError, ReconcilerError, TransportError
from reconciler.executor import ChangeOutcome, Status, execute_target
from reconciler.guards import DeletionLimits, guard
from reconciler.journal import Journal, applied_commands, read_events, unfinished
from reconciler.kinds.spec import DiagnoseContext, KindSpec
from reconciler.metadata import Documents
from reconciler.model import DesiredState, LiveState, Mode, ResourceKey, Severity, TargetSpec, VerifyCheck
from reconciler.plan import Diagnostic, LiveFingerprints, Plan, canonical_json
from reconciler.planner import plan_changes, plan_handlers
from reconciler.providers.base import Discovery, Registry, Stepwise, checks_of, handlers_of
from reconciler.references import Resolved, resolve
from reconciler.store.base import is_postgres
from reconciler.trustgraph import Declared, declared, trust_diagnostics

KindLookup = Callable[[Change], KindSpec | None]
T = TypeVar("T")
DEFAULT_PARALLEL = 256
"""Targets read and changed at once by default: discovery costs one round trip for estates up to this size
(each target is its own system, reached over its own connection; the threads mostly wait on the network).
Every target's transport is opened before discovery whatever this is: it bounds threads, not connections.
At 200 targets and 300 ms per round trip, 64 read in four waves (2.1 s for a plan), 256 in one (1.6 s)."""


@dataclass(frozen=True)
class Settings:
    state_dir: Path = Path(".reconciler")
    lock_timeout: float = 30.0
    metadata_timeout: float = 10.0
    check_metadata: bool = True
    parallel: int = DEFAULT_PARALLEL  # targets read and changed at once
    expiry_warning_days: int = 30  # plan warns about declared certificates expiring this soon
    deletions: DeletionLimits = field(default_factory=DeletionLimits)
    lock_directory: Path | None = None  # None: machine-wide (RECONCILE_LOCK_DIR, else /var/tmp/reconciler-locks)
    store: str | None = None  # the run store's location: a PostgreSQL store also holds the target locks

    @property
    def lock_dir(self) -> Path:
        from reconciler.locks import default_lock_dir

        return self.lock_directory if self.lock_directory is not None else default_lock_dir()

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.jsonl"


@dataclass
class Session:
    """The open transports of one run (one per target, reused for discovery and apply)."""

    desired: DesiredState
    registry: Registry
    parallel: int = 1
    transports: dict[str, Transport] = field(default_factory=dict)
    live: dict[str, LiveState] = field(default_factory=dict)
    """The live states read in this run (the latest read of each target): other targets' certificates come
    from them (reconciler.references)."""
    depends: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """target -> targets whose certificates it takes: changed before it in one apply."""
    followers: Mapping[str, frozenset[ResourceKey]] = field(default_factory=dict)
    """target -> the resources that take its certificates (reconciler.references)."""
    progress: Callable[[str], None] | None = None
    """Told a line as each target's discovery and apply finish (people at a terminal; called from worker threads)."""
    downloads: Downloads | None = None
    """The plan's metadata documents, downloading since `start_downloads` (closed with the session)."""

    def tell(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    def transport(self, target: str) -> Transport:
        if target not in self.transports:
            try:
                self.transports[target] = self.registry.open_transport(self.desired.targets[target])
            except KeyError as exc:
                raise ReconcilerError(str(exc.args[0])) from None
        return self.transports[target]

    def close(self) -> None:
        for transport in self.transports.values():
            transport.close()
        self.transports.clear()
        if self.downloads is not None:
            self.downloads.documents.close()
            self.downloads = None

    def kind_of(self, change: Change) -> KindSpec | None:
        if change.kind is not None:  # the planner attached it
            return change.kind
        target = self.desired.targets.get(change.key.target)
        if target is None:
            return None
        kinds = self.registry.provider(target.provider).kinds
        return kinds.get(change.key.kind)


@dataclass(frozen=True)
class Downloads:
    """The metadata documents a plan's checks and trust graph read, set downloading before discovery: the manifest
    names them (the trust graph's edges), and the downloads then wait on the network alongside the targets'."""

    desired: DesiredState
    """The desired state the edges were worked out from (a plan whose references change it works them out again)."""
    trust: Declared
    documents: Documents


def start_downloads(session: Session, settings: Settings) -> None:
    """Start downloading the documents the plan's metadata checks will read (nothing when they are off)."""
    if not settings.check_metadata or session.downloads is not None:
        return
    from reconciler.manifest import ahead  # the process that read the manifest ahead downloads them, if there is one

    trust = declared(session.desired, session.registry)
    documents = Documents(settings.metadata_timeout, elsewhere=ahead.downloads())
    session.downloads = Downloads(session.desired, trust, documents)
    documents.start(trust.urls)


@contextlib.contextmanager
def open_session(desired: DesiredState, registry: Registry, parallel: int = 1,
                 progress: Callable[[str], None] | None = None) -> Iterator[Session]:
    session = Session(desired, registry, parallel, progress=progress)
    try:
        yield session
    finally:
        session.close()


def _tell(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def locked(desired: DesiredState, settings: Settings, *,
           on_wait: Callable[[str], None] | None = _tell) -> Iterator[None]:
    """Hold the lock of every system the manifest reaches, each once however many targets reach it
    (reconciler.locks), in a fixed order so two runs cannot deadlock; all within one --lock-timeout.

    The file locks exclude every run on this machine. With a PostgreSQL run store the same locks are
    also taken there, as session-level advisory locks, after the file locks and in the same order:
    they exclude runners on other machines sharing that store. A run on a SQLite store does not see
    PostgreSQL locks (use one store for every runner of an estate).
    """
    from reconciler.locks import hold, holder_details, lock_keys  # what applies imports; a plan does not lock

    keys = lock_keys(desired.targets.values())
    deadline = time.monotonic() + settings.lock_timeout
    with contextlib.ExitStack() as stack:
        for key in keys:
            stack.enter_context(hold(settings.lock_dir, key, deadline=deadline, on_wait=on_wait))
        if keys and is_postgres(settings.store):
            assert settings.store is not None
            from reconciler.store.postgres import TargetLocks

            shared = stack.enter_context(TargetLocks(settings.store))
            for key in keys:
                stack.enter_context(shared.hold(
                    key.advisory_key, key.identity, key.label, deadline=deadline, on_wait=on_wait,
                    details=holder_details(target=", ".join(key.targets), identity=key.identity)))
        yield


def active_targets(desired: DesiredState) -> list[str]:
    """Targets a run reads: all but the suspended ones."""
    return [name for name, target in desired.targets.items() if target.mode is not Mode.SUSPEND]


def _each_target(names: list[str], work: Callable[[str], T], parallel: int,
                 meanwhile: Callable[[], None] | None = None) -> dict[str, T]:
    """Run `work` for each target, up to `parallel` at once; the first error is raised after all finish.

    Targets are independent systems, each with its own transport, so they are read and changed
    concurrently; within a target, commands stay strictly in order. `meanwhile` runs once every target's work
    is under way (before it, when they run one after another).
    """
    if parallel <= 1 or len(names) <= 1:
        if meanwhile is not None:
            meanwhile()
        return {name: work(name) for name in names}
    with ThreadPoolExecutor(max_workers=min(parallel, len(names)), thread_name_prefix="target") as pool:
        futures = {name: pool.submit(work, name) for name in names}
        if meanwhile is not None:
            meanwhile()
        errors = [f.exception() for f in futures.values() if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]
        return {name: future.result() for name, future in futures.items()}


def discover(session: Session, targets: list[str] | None = None,
             meanwhile: Callable[[], None] | None = None) -> dict[str, LiveState]:
    """Every target's live state, read at once; `meanwhile` runs while they are read (see `_each_target`).

    A target whose provider offers its discovery as steps (`Provider.discovery`) over a transport that overlaps
    round trips (`Overlapping`) is read from this thread (`_Together`); any other by a thread of its own."""
    names = targets if targets is not None else active_targets(session.desired)
    for name in names:
        session.transport(name)  # opened here, in one thread: opening may prompt or fail early
    together = [name for name in names if isinstance(session.transport(name), Overlapping) and isinstance(
        session.registry.provider(session.desired.targets[name].provider), Stepwise)]
    read_together = set(together)
    threaded = [name for name in names if name not in read_together]

    def read(name: str) -> LiveState:
        target = session.desired.targets[name]
        wanted = [r.key for r in session.desired.for_target(name)]
        started = time.monotonic()
        try:
            state = session.registry.provider(target.provider).discover(target, session.transport(name), wanted)
        except TransportError as exc:
            raise _read_failed(session, name, exc) from None
        _tell_read(session, name, state, started)
        return state

    reading = _Together(session, together, max(1, session.parallel - len(threaded)))
    reading.fill()  # their first round trips sent before the threads start

    def then() -> None:
        if meanwhile is not None:
            meanwhile()
        reading.run()

    by_thread = _each_target(threaded, read, session.parallel, then)
    failed = [reading.errors[name] for name in names if name in reading.errors]
    if failed:
        raise failed[0]
    found = {name: by_thread[name] if name in by_thread else reading.found[name] for name in names}
    session.live.update(found)
    return found


class _Together:
    """Targets read together from one thread: each one's discovery steps (`Provider.discovery`) sent with its
    transport's `begin`, up to `window` round trips in flight, their answers read in the order they were sent.

    A target that fails is kept in `errors` (what a thread of its own would have raised) and the others are read
    on; a TransportError is told as the thread's `read` tells it."""

    def __init__(self, session: Session, names: Sequence[str], window: int) -> None:
        self.session = session
        self.waiting = collections.deque(names)
        self.window = window
        self.in_flight: collections.deque[tuple[str, Discovery, Pending, float]] = collections.deque()
        self.found: dict[str, LiveState] = {}
        self.errors: dict[str, Exception] = {}

    def fill(self) -> None:
        """Send the first round trip of waiting targets while fewer than `window` are in flight."""
        while self.waiting and len(self.in_flight) < self.window:
            name = self.waiting.popleft()
            target = self.session.desired.targets[name]
            wanted = [r.key for r in self.session.desired.for_target(name)]
            provider = self.session.registry.provider(target.provider)
            assert isinstance(provider, Stepwise)
            self._step(name, provider.discovery(target, wanted), time.monotonic(), None)

    def run(self) -> None:
        """Read every answer (sending the next round trip of a target whose steps ask for one) until all are read."""
        self.fill()
        while self.in_flight:
            name, steps, pending, started = self.in_flight.popleft()
            self._step(name, steps, started, pending)
            self.fill()

    def _step(self, name: str, steps: Discovery, started: float, answered: Pending | None) -> None:
        """The target's next step: its first (`answered` None), or the one its answer in `answered` leads to."""
        session = self.session
        try:
            batch = next(steps) if answered is None else steps.send(answered.result())
            self.in_flight.append((name, steps, _overlapping(session.transport(name)).begin(batch), started))
        except StopIteration as done:
            state: LiveState = done.value
            self.found[name] = state
            _tell_read(session, name, state, started)
        except TransportError as exc:
            self.errors[name] = _read_failed(session, name, exc)
        except Exception as exc:  # what its provider raised, as a thread of its own would have
            self.errors[name] = exc


def _tell_read(session: Session, name: str, state: LiveState, started: float) -> None:
    """Tell that a target was read (either way of reading it)."""
    session.tell(f"read {name}: {len(state.resources)} object(s) in {time.monotonic() - started:.1f}s")


def _read_failed(session: Session, name: str, exc: TransportError) -> DiscoveryError:
    """Tell that a target could not be read; the error its discovery ends with (either way of reading it)."""
    session.tell(f"read {name}: failed")
    return DiscoveryError(f"target {name!r}: cannot read live state: {exc}")


def _overlapping(transport: Transport) -> Overlapping:
    assert isinstance(transport, Overlapping)
    return transport


def resolved(session: Session) -> Resolved:
    """The desired state with every `certificateOf` made concrete from the live states read so far."""
    result = resolve(session.desired, session.live, session.registry)
    session.depends = result.depends
    session.followers = result.followers
    return result


def make_plan(session: Session, live: dict[str, LiveState], settings: Settings) -> Plan:
    session.live.update(live)
    references = resolved(session)
    # then a value another target's apply makes known (reconciler.known_after_apply): as read, or a placeholder
    desired = known_after_apply.resolve(references.desired, session.live)
    # One set of downloads for the whole plan: the metadata checks and the trust graph read the same documents,
    # set going before discovery (start_downloads) or else now, while the changes are planned.
    early = session.downloads
    with contextlib.ExitStack() as stack:
        documents = early.documents if early is not None else stack.enter_context(Documents(settings.metadata_timeout))
        trust = None
        if settings.check_metadata:
            trust = early.trust if early is not None and early.desired is desired else \
                declared(desired, session.registry)
            documents.start(trust.urls)  # those not under way yet
        changes, guarded = guard(plan_changes(desired, live, session.registry), desired, live, settings.deletions)
        guarded = references.diagnostics + guarded
        handlers = plan_handlers(desired, changes, session.registry)
        changes, handlers = recover(session, changes, handlers, read_events(settings.journal_path))
        context = DiagnoseContext(clock.utc_now(), settings.expiry_warning_days)
        diagnostics = guarded + (check_metadata(changes, session.kind_of, timeout=settings.metadata_timeout,
                                                documents=documents) if settings.check_metadata else ())
        diagnostics += check_kinds(desired, live, session.registry, context)
        diagnostics += check_targets(desired, session.registry)
        diagnostics += check_runnable(session, changes, handlers)
        if trust is not None:
            diagnostics += trust_diagnostics(desired, session.registry, timeout=settings.metadata_timeout,
                                             documents=documents, parts=trust)
    return Plan(
        manifest_path=desired.manifest_path,
        manifest_sha256=desired.manifest_sha256,
        targets=tuple(active_targets(desired)),
        fingerprints=LiveFingerprints(live),
        changes=changes,
        diagnostics=diagnostics,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        checked=len(desired.resources),
        handlers=handlers,
        timeline=references.timeline,
    )


def check_runnable(session: Session, changes: tuple[Change, ...], handlers: tuple[HandlerRun, ...]) -> tuple[
        Diagnostic, ...]:
    """An error for each command the target's transport cannot run (a read-only snapshot, Exchange's restricted
    endpoint and an executable): the plan says so before apply, instead of apply failing halfway."""
    found = []
    work = [(c.key.target, c.key.address, c.commands) for c in changes if c.mode is Mode.ENFORCE]
    work += [(h.target, h.address, h.commands) for h in handlers]
    for target, address, commands in work:
        transport = session.transport(target)
        unsupported = getattr(transport, "unsupported", None)
        if unsupported is None or getattr(transport, "read_only", False):
            continue  # a read-only target plans normally; apply refuses it as a whole
        for command in commands:
            problem = unsupported(command)
            if problem:
                found.append(Diagnostic(Severity.ERROR, problem, address))
                break
    return tuple(found)


def recover(session: Session, changes: tuple[Change, ...], handlers: tuple[HandlerRun, ...],
            events: list[dict[str, Any]]) -> tuple[tuple[Change, ...], tuple[HandlerRun, ...]]:
    """Finish what a crashed or failed apply left undone, as the journal tells it.

    A replace killed between its Remove and its New (or whose New and restore both failed) left the object
    absent: the plan creates it again, and that create carries the removed object's values for the fields
    the manifest leaves out, as the replace would have. A handler that was due and has not run successfully
    since (a failed iisreset, or a run killed before it) is planned again, whatever this plan's changes are; so is
    a handler `until_applied` whose commands have not all run successfully (`_unapplied`).
    """
    desired = session.desired
    out_changes = list(changes)
    out_handlers = list(handlers)
    names = active_targets(desired)
    journal = _events_by_target(events, names)
    planned_at: dict[str, list[int]] | None = None  # the changes by address, indexed when a removal is left
    for name in names:
        if not events:  # nothing to finish; a handler never applied as declared is still due
            target = desired.targets[name]
            out_handlers = _unapplied(name, target, session.registry.provider(target.provider), events, out_handlers)
            continue
        left = unfinished(journal.get(name, []), name)
        if left.removed and planned_at is None:
            planned_at = {}
            for i, change in enumerate(out_changes):
                planned_at.setdefault(change.key.address, []).append(i)
        for i in sorted(i for address in left.removed for i in (planned_at or {}).get(address, ())):
            change = out_changes[i]
            removed = left.removed[change.key.address]
            spec = session.kind_of(change)
            if change.actions != (Action.CREATE,) or change.desired is None or spec is None:
                continue
            when, fields = removed
            after = spec.replacement(change.desired.fields, fields) if spec.replacement else dict(change.after or {})
            completed = dataclasses.replace(change, after=after, live=None, reason=(
                f"completes a replace interrupted at {when}: the journal holds the removed object, whose unmanaged "
                "values the new one keeps"))
            provider = session.registry.provider(desired.targets[name].provider)
            out_changes[i] = dataclasses.replace(completed, commands=provider.commands(completed))
        target = desired.targets[name]
        provider = session.registry.provider(target.provider)
        for address, since in left.handlers.items():
            handler = address.rsplit(".", 1)[-1]
            spec_ = handlers_of(provider).get(handler)
            settings = target.handlers.get(handler)
            if spec_ is None or settings is None or settings.get("enabled") is False:
                continue
            planned = next((i for i, h in enumerate(out_handlers) if h.address == address), None)
            if planned is not None:
                out_handlers[planned] = dataclasses.replace(out_handlers[planned], due_since=since)
            else:
                config = {k: v for k, v in settings.items() if k != "enabled"}
                out_handlers.append(HandlerRun(name, handler, (), spec_.commands(config), due_since=since))
        out_handlers = _unapplied(name, target, provider, journal.get(name, []), out_handlers)
    return tuple(out_changes), tuple(out_handlers)


def _events_by_target(events: list[dict[str, Any]], names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per target, in order, the journal's events `unfinished` reads for it (naming it, or an address under it):
    the journal is read once, not once per target."""
    wanted = set(names)
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        target = event.get("target")
        address = str(event.get("address", ""))
        under = {address[:i] for i, c in enumerate(address) if c == "."} if "." in address else set()
        for name in ({target} | under if isinstance(target, str) else under) & wanted:
            found.setdefault(name, []).append(event)
    return found


def _unapplied(name: str, target: TargetSpec, provider: object, events: list[dict[str, Any]],
               handlers: list[HandlerRun]) -> list[HandlerRun]:
    """A handler `until_applied` whose commands the journal (`events`: this target's) has not all seen run
    successfully on this target: planned with those commands (and any a change triggers), marked `unapplied`."""
    for handler, spec in handlers_of(provider).items():
        settings = target.handlers.get(handler)
        if not spec.until_applied or settings is None or settings.get("enabled") is False:
            continue
        address = f"{name}.handler.{handler}"
        done = applied_commands(events, address)
        wanted = spec.commands({k: v for k, v in settings.items() if k != "enabled"})
        missing = [c for c in wanted if canonical_json(c.to_json()) not in done]
        if not missing:
            continue
        planned = next((i for i, h in enumerate(handlers) if h.address == address), None)
        if planned is None:
            handlers.append(HandlerRun(name, handler, (), tuple(missing), unapplied=True))
        else:
            have = handlers[planned].commands
            commands = tuple(c for c in wanted if c in have or c in missing)  # the declared order
            handlers[planned] = dataclasses.replace(handlers[planned], commands=commands, unapplied=True)
    return handlers


@dataclass(frozen=True)
class HandlerOutcome:
    run: HandlerRun
    ran: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ApplyResult:
    outcomes: tuple[ChangeOutcome, ...]
    remaining: dict[str, tuple[Change, ...]]  # per target: what a re-read still finds to do
    handlers: tuple[HandlerOutcome, ...] = ()
    next_steps: dict[str, tuple[Change, ...]] = field(default_factory=dict)
    """Per target: the next step of stepwise kinds this apply advanced (the next cycle makes it)."""

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes) and self.converged and all(h.ok for h in self.handlers)

    @property
    def converged(self) -> bool:
        return not any(self.remaining.values())


def execute(session: Session, plan: Plan, settings: Settings) -> ApplyResult:
    """Apply each target's changes (targets concurrently, each stopping at its first failure); re-read."""
    journal = Journal(settings.journal_path)
    per_target: dict[str, list[Change]] = {}
    for change in plan.enforced:
        per_target.setdefault(change.key.target, []).append(change)
    due = {h.target for h in plan.handlers if h.due}
    applied_targets = [name for name in plan.targets if name in per_target or name in due]
    read_only = [name for name in applied_targets if getattr(session.transport(name), "read_only", False)]
    if read_only:
        raise ReconcilerError(
            f"target {read_only[0]!r} is read from a captured snapshot (transport: snapshot): plan and discover "
            "only; apply needs a real transport (pwsh or winrm). Nothing was changed.")

    def apply(name: str) -> tuple[tuple[ChangeOutcome, ...], tuple[HandlerOutcome, ...]]:
        provider = session.registry.provider(session.desired.targets[name].provider)
        mine = [h for h in plan.handlers if h.target == name]
        started = time.monotonic()
        done = execute_target(per_target.get(name, []), provider, session.transport(name), journal, session.kind_of,
                              handlers_due=[h.address for h in mine])
        ran = [run_handler(session, h, done, journal) for h in mine]
        failed = sum(1 for o in done if o.error) + sum(1 for h in ran if h.error)
        handlers = f", {sum(1 for h in ran if h.ran)} handler(s) ran" if ran else ""
        session.tell(f"applied {name}: {sum(1 for o in done if o.status is Status.APPLIED)} change(s), "
                     f"{failed} failed{handlers} in {time.monotonic() - started:.1f}s")
        return done, tuple(ran)

    def fill(name: str) -> bool:
        """A target whose commands hold a value another target's apply makes known (reconciler.known_after_apply):
        read its sources again now (after their wave) and fill the commands; False while some value stays unknown."""
        refs = known_after_apply.placeholders(cmd for c in per_target.get(name, []) for cmd in c.commands)
        if not refs:
            return True
        discover(session, sorted({r.target for r in refs}))
        per_target[name] = [dataclasses.replace(c, commands=tuple(known_after_apply.fill(cmd, session.live)
                                                                  for cmd in c.commands)) for c in per_target[name]]
        return not known_after_apply.placeholders(cmd for c in per_target[name] for cmd in c.commands)

    results: dict[str, tuple[tuple[ChangeOutcome, ...], tuple[HandlerOutcome, ...]]] = {}
    needed = known_after_apply.referenced_targets(session.desired)
    depends = _merged(session.depends, needed)
    if _cyclic(applied_targets, depends):  # certificateOf orders only where a value another target makes does not
        depends = _merged({}, needed)
    for wave in waves(applied_targets, depends):  # a signing side (or an appId's source) before the sides using it
        ready = [name for name in wave if fill(name)]
        results.update({name: _blocked(per_target[name]) for name in wave if name not in ready})
        results.update(_each_target(ready, apply, session.parallel))
    outcomes = [outcome for name in applied_targets for outcome in results[name][0]]
    handler_outcomes = tuple(h for name in applied_targets for h in results[name][1])
    sources = sorted({t for name in applied_targets for t in depends.get(name, ())} - set(applied_targets))
    after = discover(session, [*applied_targets, *sources])
    desired_now = known_after_apply.resolve(resolved(session).desired, session.live)
    following = _following(session, {o.change.key.target for o in outcomes if o.status in _CHANGED_SOMETHING})
    remaining = {}
    next_steps: dict[str, tuple[Change, ...]] = {}
    for name in applied_targets:
        only = _only(desired_now, name)
        replanned, _ = guard(plan_changes(only, {name: after[name]}, session.registry), only, {name: after[name]},
                             settings.deletions)
        advanced = {o.change.key for o in outcomes if o.ok and o.change.key.target == name}
        stepping = {c.key for c in replanned if (c.key in advanced and c.kind is not None and c.kind.stepwise)
                    or c.key in following}
        remaining[name] = tuple(c for c in replanned if c.mode is Mode.ENFORCE and c.key not in stepping)
        next_steps[name] = tuple(c for c in replanned if c.key in stepping)
    not_reached = {c.key for c in plan.enforced} - {o.change.key for o in outcomes}
    outcomes.extend(ChangeOutcome(c, Status.NOT_RUN) for c in plan.enforced if c.key in not_reached)
    outcomes.extend(ChangeOutcome(c, Status.WARNED) for c in plan.changes if c.mode is Mode.WARN)
    return ApplyResult(tuple(outcomes), remaining, handler_outcomes, next_steps)


def _merged(one: Mapping[str, frozenset[str]], other: Mapping[str, set[str]]) -> dict[str, frozenset[str]]:
    return {t: frozenset(one.get(t, frozenset()) | other.get(t, set())) for t in {*one, *other}}


def _blocked(changes: list[Change]) -> tuple[tuple[ChangeOutcome, ...], tuple[HandlerOutcome, ...]]:
    """A target some of whose commands still hold a placeholder: nothing of it runs; the changes that wait say for
    what (a placeholder is never sent to a system)."""
    outcomes = []
    for change in changes:
        unknown = known_after_apply.placeholders(change.commands)
        if unknown:
            ref = unknown[0]
            outcomes.append(ChangeOutcome(change, Status.FAILED, error=(
                f"not applied: the {ref.field} of {ref.source} is not known (target {ref.target!r} was read again "
                "before this target's turn)")))
        else:
            outcomes.append(ChangeOutcome(change, Status.NOT_RUN,
                                          error="not run: another change of this target waits for a value"))
    return tuple(outcomes), ()


def _following(session: Session, moved: set[str]) -> set[ResourceKey]:
    """Resources that take the certificates of a target this apply changed: what they must hold next (a certificate
    the source staged just now) is the next cycle's step, not a failure to converge."""
    return {key for source in moved for key in session.followers.get(source, ())}


def _cyclic(names: list[str], depends: Mapping[str, frozenset[str]]) -> bool:
    last = waves(names, depends)[-1:] or [[]]
    return any(depends.get(n, frozenset()) & set(last[0]) - {n} for n in last[0])


def waves(names: list[str], depends: Mapping[str, frozenset[str]]) -> list[list[str]]:
    """The targets in groups changed one after another: each after the targets whose certificates it takes (a
    cycle, which the manifest cannot express usefully, falls back to one group)."""
    left = list(names)
    out: list[list[str]] = []
    while left:
        ready = [n for n in left if not (depends.get(n, frozenset()) & set(left) - {n})]
        if not ready:
            return [*out, left]
        out.append(ready)
        left = [n for n in left if n not in ready]
    return out


_CHANGED_SOMETHING = frozenset({Status.APPLIED, Status.RESTORED, Status.RESTORE_FAILED})


def run_handler(session: Session, run: HandlerRun, done: tuple[ChangeOutcome, ...], journal: Journal) -> HandlerOutcome:
    """Run a handler once, if a change that triggers it really changed the target; report its failure."""
    if not run.due and not any(o.change.key.address in run.triggered_by and o.status in _CHANGED_SOMETHING
                               for o in done):
        # no triggering change was made: the journal must not keep it due (the batch recorded it as due)
        journal.record("handler", address=run.address, commands=[], error=None, ran=False)
        return HandlerOutcome(run, ran=False)
    try:
        results = session.transport(run.target).invoke(run.commands, stop_on_error=False)
    except TransportError as exc:
        outcome = HandlerOutcome(run, ran=True, error=str(exc))
    else:
        errors = [r.error or "failed" for r in results if not r.ok]
        if len(results) < len(run.commands):
            errors.append("not every command ran")
        outcome = HandlerOutcome(run, ran=True, error="; ".join(errors) or None)
    journal.record("handler", address=run.address, commands=[c.to_json() for c in run.commands],
                   error=outcome.error)
    return outcome


@dataclass(frozen=True)
class CheckOutcome:
    check: VerifyCheck
    ok: bool
    detail: str


def verify(session: Session) -> list[CheckOutcome]:
    """Run the manifest's `verify:` checks; one round trip per target; every check reports."""
    desired = session.desired
    by_target: dict[str, list[VerifyCheck]] = {}
    for check in desired.checks:
        by_target.setdefault(check.target, []).append(check)

    def run(name: str) -> list[CheckOutcome]:
        provider = session.registry.provider(desired.targets[name].provider)
        specs = checks_of(provider)
        checks = by_target[name]
        batches = [specs[c.check].commands(c.arguments) for c in checks]
        results = session.transport(name).invoke([cmd for batch in batches for cmd in batch], stop_on_error=False)
        outcomes, position = [], 0
        for check, batch in zip(checks, batches, strict=True):
            mine = results[position:position + len(batch)]
            position += len(batch)
            failed = [r.error or "failed" for r in mine if not r.ok]
            if len(mine) < len(batch):
                failed.append("not run")
            outcomes.append(CheckOutcome(check, not failed, "; ".join(failed) or "ok"))
        return outcomes

    done = _each_target(list(by_target), run, session.parallel)
    return [outcome for name in by_target for outcome in done[name]]


def _only(desired: DesiredState, target: str) -> DesiredState:
    return DesiredState(desired.manifest_path, desired.manifest_sha256,
                        {target: desired.targets[target]}, desired.for_target(target))
