"""One run over a manifest: open the targets, discover, plan, and (for apply) execute and re-read.

This is the glue between the layers; the CLI and the scheduler call it, and it holds no state
beyond the run it is doing.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from reconciler.changes import Change
from reconciler.checks import check_kinds, check_metadata
from reconciler.errors import DiscoveryError, ReconcilerError, TransportError
from reconciler.executor import ChangeOutcome, Status, execute_target
from reconciler.journal import Journal
from reconciler.locks import lock_path, target_lock
from reconciler.model import DesiredState, LiveState, Mode
from reconciler.plan import Plan, fingerprint_live
from reconciler.planner import plan_changes
from reconciler.providers.base import DiagnoseContext, KindSpec, Registry
from reconciler.transports.base import Transport

KindLookup = Callable[[Change], KindSpec | None]
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    state_dir: Path = Path(".reconciler")
    lock_timeout: float = 30.0
    metadata_timeout: float = 10.0
    check_metadata: bool = True
    parallel: int = 8  # targets read and changed at once
    expiry_warning_days: int = 30  # plan warns about declared certificates expiring this soon

    @property
    def lock_dir(self) -> Path:
        return self.state_dir / "locks"

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

    def kind_of(self, change: Change) -> KindSpec | None:
        target = self.desired.targets.get(change.key.target)
        if target is None:
            return None
        kinds = self.registry.provider(target.provider).kinds
        return kinds.get(change.key.kind)


@contextlib.contextmanager
def open_session(desired: DesiredState, registry: Registry, parallel: int = 1) -> Iterator[Session]:
    session = Session(desired, registry, parallel)
    try:
        yield session
    finally:
        session.close()


@contextlib.contextmanager
def locked(desired: DesiredState, settings: Settings) -> Iterator[None]:
    """Hold every target's lock, taken in a fixed order so two runs cannot deadlock."""
    targets = sorted(desired.targets.values(), key=lambda t: lock_path(settings.lock_dir, t).name)
    with contextlib.ExitStack() as stack:
        for target in targets:
            stack.enter_context(target_lock(settings.lock_dir, target, timeout=settings.lock_timeout))
        yield


def active_targets(desired: DesiredState) -> list[str]:
    """Targets a run reads: all but the suspended ones."""
    return [name for name, target in desired.targets.items() if target.mode is not Mode.SUSPEND]


def _each_target(names: list[str], work: Callable[[str], T], parallel: int) -> dict[str, T]:
    """Run `work` for each target, up to `parallel` at once; the first error is raised after all finish.

    Targets are independent systems, each with its own transport, so they are read and changed
    concurrently; within a target, commands stay strictly in order.
    """
    if parallel <= 1 or len(names) <= 1:
        return {name: work(name) for name in names}
    with ThreadPoolExecutor(max_workers=min(parallel, len(names)), thread_name_prefix="target") as pool:
        futures = {name: pool.submit(work, name) for name in names}
        errors = [f.exception() for f in futures.values() if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]
        return {name: future.result() for name, future in futures.items()}


def discover(session: Session, targets: list[str] | None = None) -> dict[str, LiveState]:
    names = targets if targets is not None else active_targets(session.desired)
    for name in names:
        session.transport(name)  # opened here, in one thread: opening may prompt or fail early

    def read(name: str) -> LiveState:
        target = session.desired.targets[name]
        wanted = [r.key for r in session.desired.resources if r.key.target == name]
        try:
            return session.registry.provider(target.provider).discover(target, session.transport(name), wanted)
        except TransportError as exc:
            raise DiscoveryError(f"target {name!r}: cannot read live state: {exc}") from None

    return _each_target(names, read, session.parallel)


def make_plan(session: Session, live: dict[str, LiveState], settings: Settings) -> Plan:
    desired = session.desired
    changes = plan_changes(desired, live, session.registry)
    diagnostics = check_metadata(changes, session.kind_of, timeout=settings.metadata_timeout) \
        if settings.check_metadata else ()
    context = DiagnoseContext(datetime.datetime.now(datetime.UTC), settings.expiry_warning_days)
    diagnostics += check_kinds(desired, live, session.registry, context)
    return Plan(
        manifest_path=desired.manifest_path,
        manifest_sha256=desired.manifest_sha256,
        targets=tuple(active_targets(desired)),
        fingerprints={name: fingerprint_live(state) for name, state in live.items()},
        changes=changes,
        diagnostics=diagnostics,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        checked=sum(1 for r in desired.resources),
    )


@dataclass(frozen=True)
class ApplyResult:
    outcomes: tuple[ChangeOutcome, ...]
    remaining: dict[str, tuple[Change, ...]]  # per target: what a re-read still finds to do

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes) and self.converged

    @property
    def converged(self) -> bool:
        return not any(self.remaining.values())


def execute(session: Session, plan: Plan, settings: Settings) -> ApplyResult:
    """Apply each target's changes (targets concurrently, each stopping at its first failure); re-read."""
    journal = Journal(settings.journal_path)
    per_target: dict[str, list[Change]] = {}
    for change in plan.enforced:
        per_target.setdefault(change.key.target, []).append(change)
    applied_targets = [name for name in plan.targets if name in per_target]

    def apply(name: str) -> tuple[ChangeOutcome, ...]:
        provider = session.registry.provider(session.desired.targets[name].provider)
        return execute_target(per_target[name], provider, session.transport(name), journal, session.kind_of)

    done = _each_target(applied_targets, apply, session.parallel)
    outcomes = [outcome for name in applied_targets for outcome in done[name]]
    after = discover(session, applied_targets)
    remaining = {}
    for name in applied_targets:
        replanned = plan_changes(_only(session.desired, name), {name: after[name]}, session.registry)
        remaining[name] = tuple(c for c in replanned if c.mode is Mode.ENFORCE)
    not_reached = {c.key for c in plan.enforced} - {o.change.key for o in outcomes}
    outcomes.extend(ChangeOutcome(c, Status.NOT_RUN) for c in plan.enforced if c.key in not_reached)
    outcomes.extend(ChangeOutcome(c, Status.WARNED) for c in plan.changes if c.mode is Mode.WARN)
    return ApplyResult(tuple(outcomes), remaining)


def _only(desired: DesiredState, target: str) -> DesiredState:
    return DesiredState(desired.manifest_path, desired.manifest_sha256,
                        {target: desired.targets[target]}, desired.for_target(target))
