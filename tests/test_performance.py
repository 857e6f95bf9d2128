"""What the performance work must keep true (no timings here: `make bench` measures those)."""

from __future__ import annotations

from pathlib import Path

from reconciler.lab.state import LabStore
from reconciler.lab.transport import LabTransport
from reconciler.transports.base import Command
from tests.e2e import ON_PREMISES, Estate

LITWARE_POOL = "atl-cs-001"


def test_a_read_only_round_trip_counts_without_rewriting_the_state(lab_state: Path) -> None:
    state = lab_state
    store = LabStore(state)
    before = state.stat()
    transport = LabTransport(state, LITWARE_POOL)
    transport.invoke([Command("Get-CsOAuthConfiguration", {}), Command("Get-CsPartnerApplication", {})])
    transport.invoke([Command("Get-CsPartnerApplication", {})])
    after = state.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    host = store.read()["hosts"][LITWARE_POOL]
    assert host["roundTrips"] == 2
    assert host["calls"] == {"Get-CsOAuthConfiguration": 1, "Get-CsPartnerApplication": 2}

    # A round trip that changes something writes the state, its counts folded in.
    [result] = transport.invoke([Command("Set-CsOAuthConfiguration", {"Realm": "example.com"})])
    assert result.ok, result.error
    assert not store.trips_path.exists()
    host = store.read()["hosts"][LITWARE_POOL]
    assert host["roundTrips"] == 3 and host["calls"]["Get-CsPartnerApplication"] == 2
    assert host["objects"]["OAuthConfiguration"]["Realm"] == "example.com"
    transport.close()


def test_the_alias_guard_counts_expansions_not_values() -> None:
    from reconciler.manifest.positions import MAX_ALIASED, parse

    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for name, previous in zip("bcdef", "abcde", strict=True):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    document = parse("\n".join(levels) + "\n")
    assert document.data is None
    assert [p.message for p in document.problems] == [
        f"aliases expand to more than {MAX_ALIASED:,} values (alias bomb?)"]
    # Aliases and merge keys within the limit still work.
    assert parse("a: &x {k: 1}\nb: *x\nc: {<<: *x, j: 2}\n").data == {"a": {"k": 1}, "b": {"k": 1},
                                                                      "c": {"k": 1, "j": 2}}


def test_a_manifest_of_1000_targets_with_50_resources_each_loads(tmp_path: Path) -> None:
    import yaml

    from reconciler.manifest import load_manifest
    from reconciler.providers.base import Registry

    targets = {f"pool-{t:04d}": {"provider": "skype", "connection": {"transport": "lab", "host": f"cs-{t:04d}"}}
               for t in range(1000)}
    resources = [{"target": name, "kind": "PartnerApplication", "identity": f"app-{i:02d}.{name}.example",
                  "applicationIdentifier": f"00000000-0000-0000-0000-{t:06d}{i:06d}", "useOAuthServer": True,
                  "applicationTrustLevel": "Full"}
                 for t, name in enumerate(targets) for i in range(50)]
    path = tmp_path / "large.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "reconciler/v1", "targets": targets, "resources": resources},
                                   sort_keys=False), encoding="utf-8")
    desired = load_manifest(path, Registry.from_entry_points())
    assert len(desired.targets) == 1000 and len(desired.resources) == 50_000
    assert len(desired.for_target("pool-0999")) == 50


def test_every_schema_has_a_compiled_check_that_refuses_what_jsonschema_refuses() -> None:
    from reconciler.manifest.schema import SchemaChecker
    from reconciler.providers.base import Registry

    checker = SchemaChecker(Registry.from_entry_points())
    refs = ["#", "#/$defs/resource", *(f"#/$defs/{name}" for name in checker.schema["$defs"] if "." in name)]
    for ref in refs:
        assert checker._fast_check(ref) is not None, f"{ref}: valid manifests would take the slow path"
    ref = "#/$defs/skype.PartnerApplication"
    fast, slow = checker._fast_check(ref), checker._validator(ref)
    assert fast is not None
    valid = {"target": "pool", "kind": "PartnerApplication", "identity": "app", "useOAuthServer": True,
             "applicationIdentifier": "00000004-0000-0ff1-ce00-000000000000", "applicationTrustLevel": "Full"}
    invalid = [
        {**valid, "identity": " app"}, {**valid, "identity": "app\n"}, {**valid, "applicationTrustLevel": "Most"},
        {**valid, "metadataUrl": "https://example.com/metadata"}, {**valid, "realm": ""}, {**valid, "enabled": 1},
        {**valid, "applicationIdentifier": "00000004-0000-0ff1-ce00-00000000000\u0661"},
        {k: v for k, v in valid.items() if k != "applicationTrustLevel"}, {**valid, "unknown": True},
    ]
    assert fast(valid) and slow.is_valid(valid)
    for entry in invalid:
        assert not fast(entry) or slow.is_valid(entry), entry


def test_a_run_leaves_nothing_frozen_for_the_next_cycle(estate: Estate) -> None:
    import gc

    # reconcile_once sets the desired and live states aside from the cyclic collector while it runs
    # (gc.freeze): the next cycle of a `run` loop must find them collectable again.
    planned = estate.reconcile("plan", ON_PREMISES)
    assert planned.code == 0, planned.out + planned.err
    assert gc.get_freeze_count() == 0


IMPORTED = r"""
import sys
from reconciler.cli import main
try:
    code = main(sys.argv[1:])
finally:
    print("\n" + " ".join(sorted(sys.modules)), file=sys.stderr)
sys.exit(code)
"""


IMPORTED_BY_THE_CONSOLE_SCRIPT = r"""
import atexit, sys
from reconciler import cli
atexit.register(lambda: print("\n" + " ".join(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["reconcile", *sys.argv[1:]]
cli.run()
"""


def _imported(estate: Estate, *argv: str, program: str = IMPORTED) -> set[str]:
    import os
    import subprocess
    import sys

    env = {**os.environ, "RECONCILE_LOCK_DIR": str(estate.root / "locks")}
    run = subprocess.run([sys.executable, "-c", program, *argv], capture_output=True, text=True, cwd=estate.root,
                         env=env, timeout=120, check=False)
    assert run.returncode in (0, 2), run.stdout + run.stderr
    return set(run.stderr.strip().splitlines()[-1].split())


def test_each_command_imports_what_it_uses(estate: Estate) -> None:
    # --help loads no manifest, schema, HTTP or X.509 machinery; a plan takes no lock, so it loads no lock
    # machinery, and of the lab's platforms only those of the hosts it reads.
    helped = _imported(estate, "--help")
    assert not {"yaml", "jsonschema", "jsonschema_rs", "httpx", "cryptography", "filelock"} & helped
    planned = _imported(estate, "plan", "--var", f"lab={estate.url}", str(ON_PREMISES))
    assert {"yaml", "httpx", "reconciler.lab.skype"} <= planned  # it did load, read the lab and download
    assert not {"filelock", "reconciler.locks"} & planned


def test_a_plan_the_cache_holds_imports_no_yaml_reader(estate: Estate) -> None:
    """The console script starts reading a manifest ahead (reconciler.manifest.ahead), and the second process reads
    nothing when the cache holds the manifest: a repeated plan imports neither the YAML reader nor the loader."""
    argv = ("plan", "--var", f"lab={estate.url}", "--state-dir", str(estate.root / "state"), str(ON_PREMISES))
    first = _imported(estate, *argv, program=IMPORTED_BY_THE_CONSOLE_SCRIPT)
    assert {"yaml", "reconciler.manifest.ahead", "reconciler.manifest.loader"} <= first
    again = _imported(estate, *argv, program=IMPORTED_BY_THE_CONSOLE_SCRIPT)
    assert not {"yaml", "reconciler.manifest.positions", "reconciler.manifest.loader", "jsonschema_rs"} & again
