"""One reconcile: the workflow plan, apply, drift and run all share, with one vocabulary of verdicts.

load -> lock (apply) -> discover -> plan -> (a saved plan held to what was reviewed) -> show -> isolate the
targets a plan error blocks -> confirm -> execute -> re-read -> record -> verify. The CLI and the scheduler
differ only in what they pass here (show, confirm, apply or not); recording, metrics and exit codes derive
from the one `Verdict`, so they cannot diverge again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fnmatch
import gc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.changes import Change
from reconciler.errors import StalePlanError
from reconciler.manifest.cache import load_cached
from reconciler.model import DesiredState, Mode, Severity
from reconciler.plan import Plan, fingerprint_differences
from reconciler.providers.base import Registry
from reconciler.recording import Recorder
from reconciler.render.json_plan import saved_command_differences
from reconciler.runner import (
    ApplyResult,
    CheckOutcome,
    Session,
    Settings,
    discover,
    execute,
    locked,
    make_plan,
    open_session,
    start_downloads,
    verify,
)
from reconciler.store.base import RunResult, UnknownResult


class Verdict(enum.StrEnum):
    """How a run ended. Its `result` is what the run store, the event log and metrics record."""

    NO_CHANGES = RunResult.NO_CHANGES.value
    CHANGES = RunResult.CHANGES.value
    APPLIED = RunResult.APPLIED.value
    PARTIAL = RunResult.PARTIAL.value
    """Applied where it could; a plan error blocked one or more targets (their changes were not made)."""
    FAILED = RunResult.FAILED.value
    ERROR = RunResult.ERROR.value
    REFUSED = RunResult.REFUSED.value

    @property
    def failed(self) -> bool:
        return self in (Verdict.PARTIAL, Verdict.FAILED, Verdict.ERROR, Verdict.REFUSED)

    def exit_code(self, *, detailed: bool = False) -> int:
        """0 success, 1 error, 2 changes present (only when asked: plan --detailed-exitcode, drift)."""
        if self.failed:
            return 1
        return 2 if detailed and self is Verdict.CHANGES else 0

    @property
    def result(self) -> RunResult:
        """The run's result as it is recorded."""
        return _RESULTS[self]

    @classmethod
    def of(cls, result: RunResult | UnknownResult) -> Verdict | None:
        """The verdict a recorded result came from; None for one no verdict gives (interrupted, or a word this
        version does not know)."""
        return next((v for v in cls if v.result is result), None)


_RESULTS = {verdict: RunResult(verdict.value) for verdict in Verdict}  # each verdict is recorded as its own word


@dataclass(frozen=True)
class Selection:
    """`--target` / `--exclude`: address patterns (globs, e.g. `litware-pool.*`) a run is limited to."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def wants(self, address: str) -> bool:
        def hit(pattern: str) -> bool:
            return fnmatch.fnmatchcase(address.casefold(), pattern.casefold()) or \
                address.casefold().startswith(pattern.casefold().rstrip(".") + ".")
        if self.include and not any(hit(p) for p in self.include):
            return False
        return not any(hit(p) for p in self.exclude)


@dataclass(frozen=True)
class Request:
    """What a caller asks of one reconcile."""

    manifest: Path
    overrides: Mapping[str, str] = field(default_factory=dict)
    apply: bool = False
    saved: Mapping[str, Any] | None = None
    """A saved plan: apply only if the plan made now is exactly it (manifest, live state, commands)."""
    confirm: Callable[[Plan], bool] | None = None
    """Asked before anything is changed; None: no question (auto-approve, a saved plan, unattended)."""
    verify: bool = False
    selection: Selection = field(default_factory=Selection)
    show: Callable[[Plan, Session], None] | None = None
    """Called with the plan (inside the session, so kinds can be looked up), e.g. to print it."""
    report: Callable[[ApplyResult, Plan, Session], None] | None = None
    blocked: Callable[[tuple[str, ...]], None] | None = None
    """Told which targets a plan error keeps from being applied, when others go ahead."""
    progress: Callable[[str], None] | None = None
    """Told a line as each target's discovery and apply finish."""
    suspended: frozenset[str] = frozenset()
    """Targets and resource addresses `reconcile suspend` recorded: skipped as `mode: suspend` would be."""


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    plan: Plan | None = None
    result: ApplyResult | None = None
    checks: tuple[CheckOutcome, ...] = ()
    blocked: tuple[str, ...] = ()


def blocked_targets(plan: Plan) -> tuple[str, ...]:
    """Targets a plan error blocks: the target its address names, or every target for an error of the whole run."""
    found: list[str] = []
    for diagnostic in plan.diagnostics:
        if diagnostic.severity != Severity.ERROR:
            continue
        owner = next((t for t in plan.targets if (diagnostic.address or "").startswith(f"{t}.")), None)
        if owner is None:
            return plan.targets
        found.append(owner)
    return tuple(dict.fromkeys(found))


def check_saved(saved: Mapping[str, Any], plan: Plan) -> None:
    """Refuse a saved plan that is not what apply would do now: live state, changes or exact commands."""
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
    differences = saved_command_differences(dict(saved), plan)
    if differences:
        raise StalePlanError("the saved plan is not what apply would run now (" + "; ".join(differences)
                             + "): a file it reads (a certificate?) changed, or the plan was edited; "
                               "run `reconcile plan` again")


def _select(plan: Plan, selection: Selection) -> Plan:
    if not selection.include and not selection.exclude:
        return plan
    keep: Callable[[Change], bool] = lambda c: selection.wants(c.key.address)  # noqa: E731
    return dataclasses.replace(plan, changes=tuple(c for c in plan.changes if keep(c)),
                               handlers=tuple(h for h in plan.handlers if selection.wants(h.address)))


def _without(plan: Plan, targets: tuple[str, ...]) -> Plan:
    return dataclasses.replace(plan, changes=tuple(c for c in plan.changes if c.key.target not in targets),
                               handlers=tuple(h for h in plan.handlers if h.target not in targets),
                               diagnostics=tuple(d for d in plan.diagnostics if d.severity != Severity.ERROR))


def _errors(plan: Plan) -> tuple[str, ...]:
    return tuple(str(d) for d in plan.diagnostics if d.severity == Severity.ERROR)


def suspend(desired: DesiredState, addresses: frozenset[str]) -> DesiredState:
    """`desired` with the targets and resources `addresses` names (case-insensitively) in `mode: suspend`."""
    wanted = {a.casefold() for a in addresses}
    if not wanted:
        return desired
    targets = {name: dataclasses.replace(t, mode=Mode.SUSPEND) if name.casefold() in wanted else t
               for name, t in desired.targets.items()}
    resources = tuple(dataclasses.replace(r, mode=Mode.SUSPEND) if r.key.address.casefold() in wanted else r
                      for r in desired.resources)
    return dataclasses.replace(desired, targets=targets, resources=resources)


@contextlib.contextmanager
def _long_lived() -> Iterator[None]:
    """Unfreeze, when the run ends, what `gc.freeze()` set aside during it.

    The desired and live states are read once and kept to the end of a run, and there are millions of objects
    in them at 1,000 targets x 50 resources: frozen once read, the cyclic collector's full collections stop
    scanning them again and again (they took a third of the plan's CPU there). Reference counting still frees
    them; anything cyclic among them waits for the unfreeze at the end of the run, which also gives a `run`
    loop's next cycle a heap the collector sees whole again.
    """
    try:
        yield
    finally:
        gc.unfreeze()


def reconcile_once(request: Request, registry: Registry, settings: Settings, record: Recorder) -> Outcome:
    """One reconcile of a manifest, recorded; raises ReconcilerError for what stops it before a verdict."""
    with _long_lived():
        return _reconcile_once(request, registry, settings, record)


def _reconcile_once(request: Request, registry: Registry, settings: Settings, record: Recorder) -> Outcome:
    desired = suspend(load_cached(request.manifest, registry, request.overrides, settings.state_dir),
                      request.suspended)
    gc.freeze()
    record.loaded(desired, settings.state_dir)
    if request.saved is not None and request.saved["manifest"]["sha256"] != desired.manifest_sha256:
        raise StalePlanError(f"the saved plan is stale: {desired.manifest_path} (or its --var values) changed "
                             "since the plan was made; run `reconcile plan` again")
    lock = locked(desired, settings) if request.apply else contextlib.nullcontext()
    with lock, open_session(desired, registry, settings.parallel, request.progress) as session:
        # The plan's metadata documents download while the targets are read: set going once every target's read is
        # (its threads started before the downloads' work competes with their start, benchmarks/README.md).
        live = discover(session, meanwhile=lambda: start_downloads(session, settings))
        gc.freeze()
        plan = _select(make_plan(session, live, settings), request.selection)
        if request.saved is not None:
            check_saved(request.saved, plan)
        record.planned(plan)
        if request.show is not None:
            request.show(plan, session)
        blocked = blocked_targets(plan)
        busy = {c.key.target for c in plan.enforced} | {h.target for h in plan.handlers_due}
        actionable = [t for t in plan.targets if t not in blocked and t in busy]
        if not request.apply or (blocked and not actionable):
            verdict = Verdict.ERROR if plan.has_errors else Verdict.CHANGES if plan.has_changes else Verdict.NO_CHANGES
            record.finish(verdict.result, _errors(plan))
            return Outcome(verdict, plan, blocked=blocked)
        if not actionable:
            verdict = Verdict.CHANGES if plan.has_changes else Verdict.NO_CHANGES
            record.finish(verdict.result)
            return Outcome(verdict, plan)
        if request.confirm is not None and not request.confirm(plan):
            record.finish(Verdict.REFUSED.result, ("not confirmed",))
            return Outcome(Verdict.REFUSED, plan)
        if blocked and request.blocked is not None:
            request.blocked(blocked)
        result = execute(session, _without(plan, blocked), settings)
        if request.selection.include or request.selection.exclude:  # converged means: on what was selected
            result = dataclasses.replace(result, remaining={
                t: tuple(c for c in left if request.selection.wants(c.key.address))
                for t, left in result.remaining.items()})
        record.applied(result)
        errors = tuple(f"{o.change.key.address}: {o.error}" for o in result.outcomes if o.error)
        errors += tuple(f"{h.run.address}: {h.error}" for h in result.handlers if h.error)
        errors += tuple(f"{t}: not converged" for t, left in result.remaining.items() if left)
        errors += tuple(f"{t}: blocked by a plan error" for t in blocked) + (_errors(plan) if blocked else ())
        verdict = Verdict.APPLIED if result.ok else Verdict.FAILED
        if verdict is Verdict.APPLIED and blocked:
            verdict = Verdict.PARTIAL
        record.finish(verdict.result, errors)
        if request.report is not None:
            request.report(result, plan, session)
        checks: tuple[CheckOutcome, ...] = ()
        if request.verify and result.ok and desired.checks:
            checks = tuple(verify(session))
        return Outcome(verdict, plan, result, checks, blocked)
