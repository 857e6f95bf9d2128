"""Target locks are keyed by the real system and held machine-wide: two applies of one server exclude each
other whatever directory they run from and however they spell the host; one manifest naming a server twice
takes its lock once.

The end-to-end tests run `reconcile apply` as real processes and synchronise on files (the holder file of a
lock, the lab's writer lock), never on sleeps: the first apply is frozen inside its locks by holding the lab
state's writer lock in the test, so the second one meets a held lock every time, however busy the machine.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import LockError
from reconciler.lab.state import LabStore
from reconciler.locks import (
    DEFAULT_LOCK_DIR,
    LOCK_DIR_ENV,
    LockKey,
    default_lock_dir,
    hold,
    lock_identity,
    lock_keys,
    target_lock,
)
from reconciler.manifest import load_manifest
from reconciler.model import DesiredState, TargetSpec
from reconciler.providers.base import Registry
from reconciler.runner import Settings, locked
from tests.e2e import ON_PREMISES, REPO, Estate

DEADLINE = 120.0  # generous: a busy 2-core machine runs several Python processes here


def target(name: str = "t", **connection: Any) -> TargetSpec:
    return TargetSpec(name=name, provider="skype", connection=connection)


# -- the key ---------------------------------------------------------------------------------------


def test_lab_hosts_are_one_lock_however_spelt_and_wherever_the_command_runs(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    here = lock_identity(target(transport="lab", host="atl-cs-001", state="../lab.json"))
    monkeypatch.chdir(tmp_path / "b" / "sub")
    there = lock_identity(target(transport="LAB", host="  ATL-CS-001. ", state=str(tmp_path / "lab.json")))
    assert here == there == f"lab|{os.path.realpath(tmp_path / 'lab.json')}|atl-cs-001"
    # the same spelling of a relative state file in another directory is another emulated estate
    assert lock_identity(target(transport="lab", host="atl-cs-001", state="../lab.json")) != here
    assert lock_identity(target(transport="lab", host="atl-cs-002", state=str(tmp_path / "lab.json"))) != here


def test_graph_winrm_pwsh_and_snapshot_identities() -> None:
    tenant = "8A7B6C5D-0000-4000-8000-000000000001"
    graph = lock_identity(target(transport="graph", tenantId=tenant, clientId="x"))
    assert graph == lock_identity(target(transport="graph", tenantId=f" {tenant.lower()} ", clientId="y",
                                         graphUrl="HTTPS://Graph.Microsoft.com:443/"))
    assert graph == f"graph|https://graph.microsoft.com|{tenant.lower()}"
    assert graph != lock_identity(target(transport="graph", tenantId=tenant, graphUrl="http://127.0.0.1:8470/graph"))
    skype = target(transport="winrm", server="ATL-CS-001.litwareinc.com.", port=443, path="OcsPowershell")
    assert lock_identity(skype) == lock_identity(target(transport="winrm", server="atl-cs-001.LitwareInc.com")) \
        == "winrm|atl-cs-001.litwareinc.com"
    assert lock_identity(target(transport="pwsh")) == lock_identity(target(transport="pwsh", modules=["X"])) \
        and str(lock_identity(target(transport="pwsh"))).startswith("pwsh|")
    assert lock_identity(target(transport="snapshot", path="captured/")) is None
    assert lock_identity(target(transport="custom", Host="A ")) == lock_identity(target(transport="custom", Host="a"))


def test_targets_reaching_one_system_are_one_key_naming_both(tmp_path: Path) -> None:
    state = str(tmp_path / "lab.json")
    keys = lock_keys([target("pool", transport="lab", host="atl-cs-001", state=state),
                      target("pool-again", transport="lab", host="ATL-CS-001", state=state),
                      target("exchange", transport="lab", host="atl-exchange-001", state=state),
                      target("captured", transport="snapshot", path="x")])
    assert [k.targets for k in sorted(keys, key=lambda k: k.targets)] == [("exchange",), ("pool", "pool-again")]
    assert keys == sorted(keys, key=lambda k: k.digest)  # a fixed order for every run
    key = next(k for k in keys if len(k.targets) == 2)
    assert "'pool' and 'pool-again'" in key.label
    assert -2**63 <= key.advisory_key < 2**63
    assert key.advisory_key == LockKey(key.identity, ("other",)).advisory_key  # stable: the identity alone


def test_the_default_directory_is_machine_wide_and_can_be_overridden(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    monkeypatch.delenv(LOCK_DIR_ENV, raising=False)
    assert default_lock_dir() == DEFAULT_LOCK_DIR == Path("/var/tmp/reconciler-locks")
    monkeypatch.chdir(tmp_path)
    assert default_lock_dir().is_absolute() and Settings(state_dir=tmp_path / "s").lock_dir == DEFAULT_LOCK_DIR
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    assert default_lock_dir() == tmp_path / "locks" == Settings().lock_dir
    monkeypatch.setenv(LOCK_DIR_ENV, "  ")
    assert default_lock_dir() == DEFAULT_LOCK_DIR


# -- the files -------------------------------------------------------------------------------------


def test_directory_is_shared_like_tmp_and_lock_files_by_every_user(tmp_path: Path) -> None:
    directory = tmp_path / "machine" / "locks"
    old = os.umask(0o077)
    try:
        with target_lock(directory, target(transport="winrm", server="atl-cs-001")):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o1777
    files = sorted(directory.iterdir())
    assert [p.suffix for p in files] == [".holder", ".lock"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o666 for p in files)


def test_holder_file_names_the_holder_masks_passwords_and_is_cleared(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["reconcile", "apply", "--store", "postgresql://ops:hunter2@db/runs", "m.yaml"])
    spec = target("pool", transport="winrm", server="atl-cs-001")
    with target_lock(tmp_path, spec):
        holder = next(tmp_path.glob("*.holder"))
        info = json.loads(holder.read_text(encoding="utf-8"))
        assert info["pid"] == os.getpid() and info["target"] == "pool" and info["identity"] == "winrm|atl-cs-001"
        assert info["since"] and info["host"]
        assert "postgresql://ops:***@db/runs" in info["command"] and "hunter2" not in info["command"]
    assert holder.read_text(encoding="utf-8") == ""  # a finished holder is never named


def test_a_symlink_in_place_of_a_lock_file_or_the_directory_is_refused(tmp_path: Path) -> None:
    spec = target(transport="winrm", server="atl-cs-001")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    (tmp_path / "locks").mkdir()
    key = lock_keys([spec])[0]
    (tmp_path / "locks" / f"{key.stem}.lock").symlink_to(victim)
    with pytest.raises(LockError, match="symlink"), target_lock(tmp_path / "locks", spec):
        pass
    (tmp_path / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(LockError, match="not a directory"), target_lock(tmp_path / "linked", spec):
        pass
    assert victim.read_text(encoding="utf-8") == "keep me"


def test_a_held_lock_fails_after_the_timeout_naming_the_holder_and_says_it_waits(tmp_path: Path) -> None:
    spec = target("pool", transport="winrm", server="atl-cs-001")
    told: list[str] = []
    code = ("import sys, time\nfrom pathlib import Path\nfrom reconciler.locks import target_lock\n"
            "from reconciler.model import TargetSpec\n"
            "t = TargetSpec(name='pool', provider='skype', connection={'transport': 'winrm', 'server': 'ATL-CS-001'})\n"
            f"with target_lock(Path({str(tmp_path)!r}), t):\n"
            "    print('locked', flush=True)\n    sys.stdin.readline()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockError) as caught, target_lock(tmp_path, spec, timeout=0.3, on_wait=told.append):
            pass
        assert f"target 'pool' is locked by another run (pid {holder.pid} on " in str(caught.value)
        assert "waited" in str(caught.value)
        assert len(told) == 1 and f"pid {holder.pid}" in told[0]
    finally:
        holder.communicate("\n", timeout=DEADLINE)
    with target_lock(tmp_path, spec, timeout=DEADLINE):  # let go: free at once
        pass


def test_one_manifest_reaching_one_server_twice_takes_its_lock_once(tmp_path: Path) -> None:
    state = str(tmp_path / "lab.json")
    targets = {name: target(name, transport="lab", host=host, state=state)
               for name, host in (("pool", "atl-cs-001"), ("pool-again", "ATL-CS-001 "))}
    desired = DesiredState(tmp_path / "m.yaml", "0" * 64, targets, ())
    settings = Settings(lock_timeout=0.5, lock_directory=tmp_path / "locks")
    with locked(desired, settings, on_wait=None):
        assert len(list((tmp_path / "locks").glob("*.lock"))) == 1
    with hold(tmp_path / "locks", lock_keys(targets.values())[0], timeout=0.5):  # released afterwards
        pass


# -- end to end: real `reconcile apply` processes -------------------------------------------------------


def place(estate: Estate, directory: str, *, pool: str, exchange: str, extra_target: str = "") -> Path:
    """The on-premises manifest in its own directory, the lab hosts spelt as given, the lab state file named
    absolutely (one emulated estate, whatever the working directory)."""
    text = ON_PREMISES.read_text(encoding="utf-8")
    for host, spelling in (("atl-cs-001", pool), ("atl-exchange-001", exchange)):
        text = text.replace(f"      host: {host}\n", f"      host: {spelling}\n      state: {estate.state}\n")
    text = text.replace("\nresources:\n", f"{extra_target}\nresources:\n")
    root = estate.root / directory
    root.mkdir()
    path = root / "m.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def apply(estate: Estate, manifest: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--auto-approve", "--var", f"lab={estate.url}", *extra,
         str(manifest)], cwd=manifest.parent, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)})


def holders(manifest: Path, estate: Estate) -> list[int | None]:
    """The pid each lock of the manifest's systems names as its holder (None: free or not yet written)."""
    desired = load_manifest(manifest, Registry.from_entry_points(), {"lab": estate.url})
    found: list[int | None] = []
    for key in lock_keys(desired.targets.values()):
        try:
            found.append(json.loads((default_lock_dir() / f"{key.stem}.holder").read_text(encoding="utf-8"))["pid"])
        except (OSError, ValueError, KeyError):
            found.append(None)
    return found


def wait_for(predicate: Any, what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            pytest.fail(f"{what}: the process ended first: {process.communicate()}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@contextmanager
def frozen_lab(estate: Estate) -> Iterator[None]:
    """Hold the lab's writer lock: every apply that reaches the lab waits there, inside its target locks."""
    with LabStore(estate.state).locked():
        yield


def test_two_applies_from_two_directories_with_two_spellings_exclude_each_other(estate: Estate) -> None:
    first = place(estate, "ops-alice", pool="atl-cs-001", exchange="atl-exchange-001")
    second = place(estate, "ops-bob", pool="ATL-CS-001", exchange="Atl-Exchange-001")
    with frozen_lab(estate):
        holder = apply(estate, first)
        try:
            wait_for(lambda: holders(first, estate) == [holder.pid] * 2, "the first apply to hold its locks", holder)
            # from the other directory, spelt the other way: the same locks, held by the first apply
            assert holders(second, estate) == [holder.pid] * 2
            refused = apply(estate, second, "--lock-timeout", "0.5")
            out, err = refused.communicate(timeout=DEADLINE)
            assert refused.returncode == 1, (out, err)
            assert "is locked by another run (pid" in err and f"pid {holder.pid} on " in err
            assert "reconcile" in err and "apply" in err  # the holder's command line
            waiter = apply(estate, second, "--lock-timeout", str(DEADLINE))
            assert waiter.stderr is not None
            line = waiter.stderr.readline()
            assert line.startswith("waiting for the lock of ") and f"pid {holder.pid}" in line, line
        except BaseException:
            holder.kill()
            raise
    results = [p.communicate(timeout=DEADLINE) for p in (holder, waiter)]
    assert [p.returncode for p in (holder, waiter)] == [0, 0], results
    assert "Apply complete: 5 applied" in results[0][0]
    assert "No changes." in results[1][0]  # it waited, then found the first apply's work done
    assert not (estate.root / ".reconciler").exists()  # each ran in its own directory
    assert (first.parent / ".reconciler").is_dir() and (second.parent / ".reconciler").is_dir()
    assert estate.app("atl-cs-001", "app") is None


def test_a_manifest_naming_one_server_twice_applies_without_waiting_on_itself(estate: Estate) -> None:
    twice = ("\n  litware-pool-again:\n    provider: skype\n    connection:\n      transport: lab\n"
             f"      host: ATL-CS-001\n      state: {estate.state}\n")
    manifest = place(estate, "ops", pool="atl-cs-001", exchange="atl-exchange-001", extra_target=twice)
    run = apply(estate, manifest, "--lock-timeout", "5")
    out, err = run.communicate(timeout=DEADLINE)
    assert run.returncode == 0, (out, err)
    assert "Apply complete: 5 applied" in out and "locked" not in err
    assert estate.app("atl-cs-001", "app") is None
