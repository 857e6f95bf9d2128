"""Benchmark: our plan/apply (one batched round trip per target) against per-object calls.

`make bench` runs this file. For each size TxR it generates T lab targets, each with its own state
file, holding R partner applications with drift, and measures PLAN and APPLY for two strategies:

- ours: the real code path (manifest YAML -> load_manifest -> open_session -> discover ->
  make_plan -> execute), with metadata checks off;
- per-object: what the seed scripts and tools like Microsoft365DSC do: one
  `Get-CsPartnerApplication -Identity X` per desired object, then one call per Set/New/Remove,
  through the same LabTransport with the same latency.

Remote calls are the round trips the lab counts (`hosts[h].roundTrips` in each state file). Wall
and CPU time come from a pass with memory tracing off; peak memory (tracemalloc) from a second pass
on a fresh copy of the same estate with no latency, so tracing never inflates the times.

Run `python benchmarks/run.py --help` for the options; see benchmarks/README.md for the columns.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.lab import certs, skype
from reconciler.lab.admin import init_lab
from reconciler.lab.estate import SKYPE_ID, default_estate
from reconciler.lab.state import LabStore
from reconciler.lab.transport import LabTransport
from reconciler.manifest import load_manifest
from reconciler.providers.base import Registry
from reconciler.runner import Settings, discover, execute, make_plan, open_session
from reconciler.transports.base import Command

RESULTS = Path(__file__).resolve().parent / "results" / "latest.md"
DEFAULT_SIZES = "1x10,10x10,20x50"
TRUST_DESIRED, TRUST_DRIFTED, TRUST_STRAY = "Full", "Application", "User"
NAMESPACE = uuid.UUID("6f1d7a52-3c0e-4b8e-9a7d-2f4c1e0b5a93")


# --- the synthetic estate -----------------------------------------------------------------------


@dataclass(frozen=True)
class App:
    identity: str
    application_id: str
    ensure: str  # "present" or "absent" (a stray the manifest removes)
    live_trust: str | None  # None: missing on the server


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    state: Path
    apps: tuple[App, ...]

    @property
    def objects(self) -> int:
        """Desired objects: the partner applications plus the OAuth configuration."""
        return len(self.apps) + 1

    def actions(self) -> dict[str, int]:
        """What a correct plan must do here (the drift was made to these proportions)."""
        present = [a for a in self.apps if a.ensure == "present"]
        return {
            "set": sum(1 for a in present if a.live_trust not in (None, TRUST_DESIRED)),
            "new": sum(1 for a in present if a.live_trust is None),
            "remove": sum(1 for a in self.apps if a.ensure == "absent" and a.live_trust is not None),
        }


@dataclass(frozen=True)
class Size:
    targets: int
    resources: int

    @property
    def label(self) -> str:
        return f"{self.targets}x{self.resources}"

    @property
    def objects(self) -> int:
        return self.targets * (self.resources + 1)


def parse_sizes(text: str) -> list[Size]:
    sizes: list[Size] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        t, sep, r = item.lower().partition("x")
        if not sep or not t.isdigit() or not r.isdigit() or int(t) < 1 or int(r) < 3:
            raise argparse.ArgumentTypeError(f"size {item!r}: expected TARGETSxRESOURCES, e.g. 10x50 (R >= 3)")
        sizes.append(Size(int(t), int(r)))
    return sizes


def plan_targets(root: Path, size: Size) -> list[Target]:
    """The targets of one size: R partner-application resources each, 1-2 of them strays to remove.

    Of the apps the manifest wants present, every 10th (index % 10 == 3) has another trust level
    live (-> Set) and every 20th (index % 20 == 7) is missing (-> New).
    """
    targets: list[Target] = []
    for t in range(size.targets):
        strays = 1 + t % 2
        apps: list[App] = []
        for i in range(size.resources):
            identity = f"partner-{i:03d}.t{t:03d}.bench.example"
            app_id = str(uuid.uuid5(NAMESPACE, identity))
            if i >= size.resources - strays:
                apps.append(App(f"stray-{i:03d}.t{t:03d}.bench.example", app_id, "absent", TRUST_STRAY))
            elif i % 20 == 7:
                apps.append(App(identity, app_id, "present", None))
            elif i % 10 == 3:
                apps.append(App(identity, app_id, "present", TRUST_DRIFTED))
            else:
                apps.append(App(identity, app_id, "present", TRUST_DESIRED))
        targets.append(Target(f"pool-{t:03d}", f"bench-cs-{t:03d}", root / "lab" / f"pool-{t:03d}.json",
                              tuple(apps)))
    return targets


def base_estate(certificate: bytes) -> dict[str, Any]:
    """The lab's default estate (services and documents) with one certificate reused, and no hosts."""
    state = default_estate(make_certificate=lambda _common_name: certificate)
    state["hosts"] = {}
    return state


def write_estates(targets: Sequence[Target], base: Mapping[str, Any]) -> None:
    """(Re)write every target's own state file with its drifted live objects and zeroed counters."""
    for target in targets:
        objects = skype.empty_objects()
        objects[skype.CONFIGURATION].update(ServiceName=SKYPE_ID, Realm="bench.example")
        objects[skype.PARTNER_APPLICATION] = [
            skype.normalize(skype.PARTNER_APPLICATION, {
                "Identity": app.identity,
                "ApplicationIdentifier": app.application_id,
                "ApplicationTrustLevel": app.live_trust,
                "UseOAuthServer": True,
            })
            for app in target.apps if app.live_trust is not None
        ]
        state = copy.deepcopy(dict(base))
        state["hosts"] = {target.host: {"platform": "skype", "roundTrips": 0, "calls": {}, "objects": objects}}
        init_lab(target.state, force=True, estate=state)


def write_manifest(path: Path, targets: Sequence[Target], latency_ms: float) -> Path:
    manifest: dict[str, Any] = {
        "apiVersion": "reconciler/v1",
        "targets": {
            t.name: {"provider": "skype",
                     "connection": {"transport": "lab", "host": t.host, "state": str(t.state),
                                    "latencyMs": latency_ms}}
            for t in targets
        },
        "resources": [],
    }
    for t in targets:
        for app in t.apps:
            resource: dict[str, Any] = {"target": t.name, "kind": "PartnerApplication", "identity": app.identity}
            if app.ensure == "absent":
                resource["ensure"] = "absent"
            else:
                resource.update(applicationIdentifier=app.application_id, useOAuthServer=True,
                                applicationTrustLevel=TRUST_DESIRED)
            manifest["resources"].append(resource)
        manifest["resources"].append({"target": t.name, "kind": "OAuthConfiguration", "serviceName": SKYPE_ID})
    path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return path


def round_trips(targets: Sequence[Target]) -> int:
    return sum(int(LabStore(t.state).read()["hosts"][t.host].get("roundTrips", 0)) for t in targets)


def live_apps(targets: Sequence[Target]) -> dict[str, list[tuple[str, str]]]:
    """Every host's partner applications (identity, trust level), to check both strategies agree."""
    result: dict[str, list[tuple[str, str]]] = {}
    for t in targets:
        apps = LabStore(t.state).read()["hosts"][t.host]["objects"][skype.PARTNER_APPLICATION]
        result[t.host] = sorted((a["Identity"].lower(), a["ApplicationTrustLevel"]) for a in apps)
    return result


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Measure:
    calls: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    peak_mib: float | None = None
    estimated: bool = False


@dataclass
class Phases:
    plan: Measure = field(default_factory=Measure)
    apply: Measure = field(default_factory=Measure)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    gc.collect()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall0, time.process_time() - cpu0


def traced(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run fn under tracemalloc; its peak of Python allocations in MiB."""
    gc.collect()
    tracemalloc.start()
    try:
        value = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return value, peak / (1024 * 1024)


# --- strategy 1: ours ---------------------------------------------------------------------------


class Ours:
    """The real code path, split into PLAN (load + discover + plan) and APPLY (execute + re-read)."""

    def __init__(self, manifest: Path, work: Path, parallel: int = 8) -> None:
        self.manifest = manifest
        self.parallel = parallel
        # check_metadata=False: downloading metadata documents is network work outside this comparison.
        self.settings = Settings(state_dir=work / ".reconciler", check_metadata=False, parallel=parallel)
        self.registry = Registry.from_entry_points()
        self._session_cm: Any = None
        self.session: Any = None
        self.plan: Any = None

    def do_plan(self) -> Any:
        desired = load_manifest(self.manifest, self.registry)
        self._session_cm = open_session(desired, self.registry, self.parallel)
        self.session = self._session_cm.__enter__()
        self.plan = make_plan(self.session, discover(self.session), self.settings)
        return self.plan

    def do_apply(self) -> Any:
        try:
            result = execute(self.session, self.plan, self.settings)
        finally:
            self._session_cm.__exit__(None, None, None)
        if not result.ok:
            raise SystemExit(f"ours: apply did not succeed and converge: {result}")
        return result


def run_ours(manifest: Path, work: Path, targets: Sequence[Target], expected: Mapping[str, int],
             parallel: int) -> Phases:
    phases = Phases()
    ours = Ours(manifest, work, parallel)
    before = round_trips(targets)
    plan, phases.plan.wall, phases.plan.cpu = timed(ours.do_plan)
    middle = round_trips(targets)
    counted = {"set": 0, "new": 0, "remove": 0}
    for change in plan.changes:
        action = change.actions[0].value
        counted[{"update": "set", "create": "new", "delete": "remove"}[action]] += 1
    if counted != dict(expected):
        raise SystemExit(f"ours: the plan has {counted}, the estate was drifted for {dict(expected)}")
    _, phases.apply.wall, phases.apply.cpu = timed(ours.do_apply)
    phases.plan.calls, phases.apply.calls = middle - before, round_trips(targets) - middle
    return phases


def trace_ours(manifest: Path, work: Path) -> tuple[float, float]:
    ours = Ours(manifest, work)  # memory does not depend on parallelism
    _, plan_peak = traced(ours.do_plan)
    _, apply_peak = traced(ours.do_apply)
    return plan_peak, apply_peak


# --- strategy 2: per-object (the baseline) ------------------------------------------------------


@dataclass(frozen=True)
class Action:
    target: Target
    command: Command


class PerObject:
    """One Get per desired object, then one call per action: each call its own round trip."""

    def __init__(self, targets: Sequence[Target], latency_ms: float) -> None:
        self.targets = targets
        self.latency_ms = latency_ms
        self.transports: dict[str, LabTransport] = {}
        self.actions: list[Action] = []

    def transport(self, target: Target) -> LabTransport:
        if target.name not in self.transports:
            self.transports[target.name] = LabTransport(target.state, target.host, self.latency_ms)
        return self.transports[target.name]

    def get(self, target: Target, cmdlet: str, identity: str | None) -> Mapping[str, Any] | None:
        params: dict[str, Any] = {"ErrorAction": "SilentlyContinue"}
        if identity is not None:
            params["Identity"] = identity
        [result] = self.transport(target).invoke([Command(cmdlet, params)], stop_on_error=False)
        if result.ok:
            return result.output[0] if result.output else None
        # The lab reports an unknown identity as an error; -ErrorAction SilentlyContinue would hide it.
        if "does not exist" in (result.error or ""):
            return None
        raise SystemExit(f"per-object: {cmdlet} {identity} failed: {result.error}")

    def do_plan(self) -> list[Action]:
        self.actions = []
        for target in self.targets:
            config = self.get(target, "Get-CsOAuthConfiguration", None)
            if config is None or str(config.get("ServiceName", "")).lower() != SKYPE_ID:
                self.actions.append(Action(target, Command("Set-CsOAuthConfiguration", {"ServiceName": SKYPE_ID})))
            for app in target.apps:
                live = self.get(target, "Get-CsPartnerApplication", app.identity)
                if app.ensure == "absent":
                    if live is not None:
                        self.actions.append(Action(target, Command("Remove-CsPartnerApplication",
                                                                   {"Identity": app.identity})))
                elif live is None:
                    self.actions.append(Action(target, Command("New-CsPartnerApplication", {
                        "Identity": app.identity, "ApplicationIdentifier": app.application_id,
                        "UseOAuthServer": True, "ApplicationTrustLevel": TRUST_DESIRED})))
                elif str(live.get("ApplicationTrustLevel", "")).lower() != TRUST_DESIRED.lower():
                    self.actions.append(Action(target, Command("Set-CsPartnerApplication", {
                        "Identity": app.identity, "ApplicationTrustLevel": TRUST_DESIRED})))
        return self.actions

    def do_apply(self) -> None:
        try:
            for action in self.actions:
                [result] = self.transport(action.target).invoke([action.command])
                if not result.ok:
                    raise SystemExit(f"per-object: {action.command.display()} failed: {result.error}")
        finally:
            for transport in self.transports.values():
                transport.close()
            self.transports.clear()

    def counted(self) -> dict[str, int]:
        names = {"Set": "set", "New": "new", "Remove": "remove"}
        counts = {"set": 0, "new": 0, "remove": 0}
        for action in self.actions:
            counts[names[action.command.cmdlet.split("-")[0]]] += 1
        return counts


def run_per_object(targets: Sequence[Target], latency_ms: float, expected: Mapping[str, int]) -> Phases:
    phases = Phases()
    baseline = PerObject(targets, latency_ms)
    before = round_trips(targets)
    _, phases.plan.wall, phases.plan.cpu = timed(baseline.do_plan)
    middle = round_trips(targets)
    if baseline.counted() != dict(expected):
        raise SystemExit(f"per-object: planned {baseline.counted()}, the estate was drifted for {dict(expected)}")
    _, phases.apply.wall, phases.apply.cpu = timed(baseline.do_apply)
    phases.plan.calls, phases.apply.calls = middle - before, round_trips(targets) - middle
    return phases


def trace_per_object(targets: Sequence[Target]) -> tuple[float, float]:
    baseline = PerObject(targets, 0.0)
    _, plan_peak = traced(baseline.do_plan)
    _, apply_peak = traced(baseline.do_apply)
    return plan_peak, apply_peak


def expected_actions(targets: Sequence[Target]) -> dict[str, int]:
    total = {"set": 0, "new": 0, "remove": 0}
    for t in targets:
        for name, count in t.actions().items():
            total[name] += count
    return total


def extrapolate(sample: Measure, calls: int) -> Measure:
    """Scale a sample by its per-call cost to `calls` calls (memory: the sample's, as a lower bound)."""
    per_call = 1 / sample.calls if sample.calls else 0.0
    return Measure(calls, sample.wall * per_call * calls, sample.cpu * per_call * calls, sample.peak_mib,
                   estimated=True)


# --- one size -----------------------------------------------------------------------------------


@dataclass
class SizeResult:
    size: Size
    ours: Phases
    per_object: Phases
    sample_targets: int | None = None  # set when the baseline was extrapolated from a sample


def bench_size(size: Size, options: argparse.Namespace, base: Mapping[str, Any]) -> SizeResult:
    with tempfile.TemporaryDirectory(prefix=f"bench-{size.label}-") as tmp:
        root = Path(tmp)
        targets = plan_targets(root, size)
        expected = expected_actions(targets)
        write_estates(targets, base)
        manifest = write_manifest(root / "manifest.yaml", targets, options.latency_ms)
        ours = run_ours(manifest, root, targets, expected, options.parallel)
        converged = live_apps(targets)

        estimate = size.objects > options.skip_baseline_above
        sample = targets[: max(1, min(options.baseline_sample, size.targets))] if estimate else targets
        write_estates(sample, base)
        per_object = run_per_object(sample, options.latency_ms, expected_actions(sample))
        if live_apps(sample) != {t.host: converged[t.host] for t in sample}:
            raise SystemExit(f"{size.label}: the two strategies left different live states")

        if not options.no_memory:
            write_estates(targets, base)
            zero = write_manifest(root / "manifest-no-latency.yaml", targets, 0)
            ours.plan.peak_mib, ours.apply.peak_mib = trace_ours(zero, root)
            write_estates(sample, base)
            per_object.plan.peak_mib, per_object.apply.peak_mib = trace_per_object(sample)

        if estimate:
            plan_calls = sum(t.objects for t in targets)
            apply_calls = sum(expected.values())
            per_object = Phases(extrapolate(per_object.plan, plan_calls), extrapolate(per_object.apply, apply_calls))
        return SizeResult(size, ours, per_object, len(sample) if estimate else None)


# --- report -------------------------------------------------------------------------------------


def machine_facts(options: argparse.Namespace) -> list[str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
        f"- python: {platform.python_version()} ({platform.python_implementation()}), {platform.platform()}",
        f"- cpus: {os.cpu_count()} (usable by this process: {usable})",
        f"- latency: {options.latency_ms:g} ms per round trip (LabTransport `latencyMs`)",
        f"- ours: up to {options.parallel} targets at once (`--parallel`); per-object: sequential, as the seed "
        "scripts run",
        f"- baseline measured up to {options.skip_baseline_above} objects; above that it is extrapolated "
        f"from {options.baseline_sample} target(s) by per-call cost (marked ~)",
    ]


def _num(value: float | None, fmt: str, estimated: bool) -> str:
    if value is None:
        return "n/a"
    return ("~" if estimated else "") + format(value, fmt)


def _total(phases: Phases) -> Measure:
    peaks = [p for p in (phases.plan.peak_mib, phases.apply.peak_mib) if p is not None]
    return Measure(phases.plan.calls + phases.apply.calls, phases.plan.wall + phases.apply.wall,
                   phases.plan.cpu + phases.apply.cpu, max(peaks) if peaks else None,
                   phases.plan.estimated or phases.apply.estimated)


def table(results: Sequence[SizeResult]) -> list[str]:
    lines = [
        "| size (targets x apps) | objects | strategy | phase | remote calls | wall s | CPU s | peak MiB "
        "| speed-up (wall, ours vs per-object) |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for strategy, phases in (("ours", r.ours), ("per-object", r.per_object)):
            for phase in ("plan", "apply", "total"):
                m = _total(phases) if phase == "total" else getattr(phases, phase)
                theirs = _total(r.per_object) if phase == "total" else getattr(r.per_object, phase)
                speed = ""
                if strategy == "ours" and m.wall > 0:
                    speed = _num(theirs.wall / m.wall, ".1f", theirs.estimated) + "x"
                calls = ("~" if m.estimated else "") + str(m.calls)
                lines.append(
                    f"| {r.size.label} | {r.size.objects} | {strategy} | {phase} | {calls} | "
                    f"{_num(m.wall, '.2f', m.estimated)} | {_num(m.cpu, '.2f', m.estimated)} | "
                    f"{_num(m.peak_mib, '.1f', m.estimated)} | {speed} |"
                )
    return lines


NOTES = [
    "Notes:",
    "- objects = desired objects: T x (R partner applications + 1 OAuth configuration). Drift per target: "
    "~10% of apps with another trust level (Set), ~5% missing (New), 1-2 strays `ensure: absent` (Remove).",
    "- remote calls = round trips counted by the lab (`hosts[h].roundTrips`); each one sleeps the latency once "
    "and reads + rewrites (fsync) that target's JSON state file.",
    "- ours PLAN = load_manifest (YAML + JSON Schema) + discover + make_plan with Settings(check_metadata=False): "
    "metadata-document downloads are network work outside this comparison. One round trip per target, up to "
    "--parallel targets at once.",
    "- ours APPLY = execute: one batched round trip per changed target, then one re-read round trip per changed "
    "target to prove convergence (the per-object baseline does not verify).",
    "- per-object PLAN = one Get per desired object (Get-CsPartnerApplication -Identity X, "
    "Get-CsOAuthConfiguration), APPLY = one call per Set/New/Remove.",
    "- wall/CPU come from a pass without memory tracing; peak MiB (tracemalloc: Python allocations only) from "
    "a second pass on a fresh copy of the estate with no latency. ~ = extrapolated, not measured.",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes(DEFAULT_SIZES),
                        help=f"comma-separated TARGETSxRESOURCES (default {DEFAULT_SIZES}; "
                             "the issue's largest: 200x50)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="simulated latency per round trip (default 50)")
    parser.add_argument("--skip-baseline-above", type=int, default=5000, metavar="N",
                        help="above N desired objects, run the per-object baseline on a sample of targets only and "
                             "extrapolate it by per-call cost (default 5000)")
    parser.add_argument("--baseline-sample", type=int, default=2, metavar="TARGETS",
                        help="targets the extrapolated baseline is measured on (default 2)")
    parser.add_argument("--parallel", type=int, default=8, metavar="N",
                        help="targets ours reads and changes at once (reconcile --parallel; default 8)")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass (peak MiB n/a)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"Markdown output (default {RESULTS})")
    options = parser.parse_args(argv)

    facts = machine_facts(options)
    print("\n".join(facts), flush=True)
    base = base_estate(certs.make_certificate("bench.example"))  # one certificate, generated once, reused
    results: list[SizeResult] = []
    started = time.perf_counter()
    for size in options.sizes:
        print(f"... {size.label} ({size.objects} objects)", file=sys.stderr, flush=True)
        results.append(bench_size(size, options, base))
    report = ["# reconciler benchmark: batched plan/apply vs per-object calls", "", *facts, "",
              *table(results), "", *NOTES, "", f"Total benchmark time: {time.perf_counter() - started:.0f} s", ""]
    text = "\n".join(report)
    print("\n" + "\n".join(report[len(facts) + 2:]))
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(text, encoding="utf-8")
    print(f"written to {options.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
