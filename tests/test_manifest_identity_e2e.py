"""One manifest, several clones: runners and operators working from different checkouts of one git repository
(different machines, different paths) share one run store, so they must agree on what the manifest is called.

Every test here has two clones of one bare repository in tmp_path and one run store (the estate's default, in
the working directory): what is done through clone A's path must be seen through clone B's. A manifest outside
git, or in a repository without a remote, keeps its absolute path as its key; a record an older version keyed by
that path is still honoured.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.store import open_store
from reconciler.store.base import Suspension
from reconciler.store.gitinfo import manifest_key, normalise_remote
from tests.e2e import ON_PREMISES, Estate, loop_process, stop
from tests.test_loop_control_e2e import DEADLINE, wait_for

INSIDE = "manifests/on-premises.yaml"
TOKEN = "ghp_n0tAr3alT0kenButSecretAnyway"


def git(directory: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(["git", "-c", "init.defaultBranch=main", "-c", "user.name=Test", "-c",
                           "user.email=test@example.com", *args], cwd=directory, env=env, capture_output=True,
                          text=True, check=True, timeout=30)
    return done.stdout


def clones(root: Path) -> tuple[Path, Path, Path]:
    """A bare repository holding manifests/on-premises.yaml and two clones of it; returns (bare, A's manifest,
    B's manifest)."""
    bare = root / "origin" / "trust.git"
    bare.mkdir(parents=True)
    git(bare, "init", "--bare", "-q")
    seed = root / "seed"
    git(root, "clone", "-q", str(bare), str(seed))
    (seed / "manifests").mkdir()
    shutil.copyfile(ON_PREMISES, seed / INSIDE)
    git(seed, "add", INSIDE)
    git(seed, "commit", "-q", "-m", "manifest")
    git(seed, "push", "-q", "origin", "HEAD:main")
    manifests = []
    for where in ("srv/a/repo", "opt/b/repo"):
        clone = root / where
        clone.parent.mkdir(parents=True)
        git(root, "clone", "-q", str(bare), str(clone))
        manifests.append(clone / INSIDE)
    return bare, manifests[0], manifests[1]


def store_path(estate: Estate) -> Path:
    return estate.root / ".reconciler" / "runs.sqlite3"


def status(estate: Estate, manifest: Path) -> dict[str, dict[str, object]]:
    run = estate.reconcile("status", manifest, "--json")
    assert run.code == 0, run.err
    return {s["target"]: s for s in json.loads(run.out)}


def test_both_clones_have_one_identity_made_of_the_remote_and_the_path_inside(estate: Estate) -> None:
    bare, a, b = clones(estate.root)
    key_a, key_b = manifest_key(a), manifest_key(b)
    assert key_a.identity == key_b.identity == f"git+file://{bare.resolve().as_posix()[:-4]}#{INSIDE}"
    assert key_a.local == str(a.resolve()) != key_b.local == str(b.resolve())
    assert manifest_key(a.parent / ".." / INSIDE).identity == key_a.identity  # however the path is spelt


def test_a_suspension_made_through_one_clone_is_honoured_by_a_run_through_another(estate: Estate) -> None:
    _, a, b = clones(estate.root)
    run = estate.run("suspend", a, "litware-pool", "--reason", "maintenance window")
    assert run.code == 0, run.err
    assert status(estate, b)["litware-pool"]["reason"] == "SuspendedByOperator"

    assert estate.reconcile("run", b, "--once").code == 0
    assert estate.app("atl-cs-001", "app") is not None  # B's loop left the suspended pool's drift alone
    with open_store(store_path(estate)) as store:
        assert store.list()[0].targets == ("litware-exchange",)

    assert estate.run("resume", b, "litware-pool").code == 0  # lifted through the other clone
    assert status(estate, a)["litware-pool"]["condition"] != "Suspended"
    assert estate.reconcile("run", a, "--once").code == 0
    assert estate.app("atl-cs-001", "app") is None


def test_status_and_history_through_one_clone_show_the_runs_made_through_another(estate: Estate) -> None:
    _, a, b = clones(estate.root)
    assert estate.reconcile("run", b, "--once").code == 0
    with open_store(store_path(estate)) as store:
        [run_b] = store.list()
    assert run_b.manifest_path == manifest_key(b).identity
    assert status(estate, a)["litware-pool"]["lastRun"] == run_b.id

    history = estate.run("history", "--manifest", a)
    assert history.code == 0, history.err
    lines = history.out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"{run_b.id} ")
    assert lines[1].endswith(str(a.resolve()))  # the path this person gave, not the identity
    everything = estate.run("history")
    assert everything.out.splitlines()[1].endswith(manifest_key(a).identity)


def test_a_trigger_from_one_clone_wakes_the_loop_running_from_another(estate: Estate) -> None:
    _, a, b = clones(estate.root)
    with loop_process(estate, "run", "--var", f"lab={estate.url}", "--interval", "1h", "--jitter", "0",
                      "--wake-poll", "0.1", "--log-format", "json", str(b)) as loop:
        wait_for(lambda: status(estate, a)["litware-pool"]["nextRun"] is not None, "B's first cycle, seen from A",
                 loop)
        asked = estate.run("trigger", a, "--wait", "--timeout", "1m")
        assert asked.code == 0, asked.err
        assert f"pid {loop.pid}" in asked.err and asked.out.startswith("Run 2: ")  # the loop's second cycle
        with open_store(store_path(estate)) as store:
            assert [r.command for r in store.list()] == ["run", "run"]
        out, err = stop(loop, DEADLINE)
    assert loop.returncode == 0, err
    assert [json.loads(line)["event"] for line in out.splitlines()].count("run_requested") == 1
    assert status(estate, a)["litware-pool"]["nextRun"] is None


def test_credentials_in_a_remote_url_never_reach_the_store_or_the_output(estate: Estate) -> None:
    _, a, b = clones(estate.root)
    # One repository spelt three ways: with a token over HTTPS, over SSH scp-style, and without `.git`.
    git(a.parent.parent, "remote", "set-url", "origin", f"https://deploy:{TOKEN}@Git.Example.com/org/trust.git")
    git(b.parent.parent, "remote", "set-url", "origin", "git@git.example.com:org/trust.git")
    identity = f"git+https://git.example.com/org/trust#{INSIDE}"
    assert manifest_key(a).identity == manifest_key(b).identity == identity

    said = [estate.run("suspend", a, "litware-pool", "--reason", "window"),
            estate.reconcile("run", a, "--once"), estate.reconcile("run", b, "--once", "--log-format", "json"),
            estate.run("trigger", a), estate.run("history", "--manifest", a), estate.reconcile("status", b)]
    assert all(r.code == 0 for r in said), [r.err for r in said]
    assert estate.app("atl-cs-001", "app") is not None  # suspended through A, honoured through B
    assert not any(TOKEN in r.out + r.err for r in said)

    files = sorted(store_path(estate).parent.glob("runs.sqlite3*"))  # the database and its write-ahead log
    assert files and not any(TOKEN.encode() in f.read_bytes() for f in files)
    db = sqlite3.connect(store_path(estate))
    try:
        keys = {row[0] for table in ("runs", "suspensions", "run_requests")
                for row in db.execute("SELECT manifest_path FROM " + table)}
    finally:
        db.close()
    assert keys == {identity}


def test_a_manifest_outside_git_or_without_a_remote_keeps_its_absolute_path_as_its_key(estate: Estate) -> None:
    plain = estate.root / "plain" / "on-premises.yaml"
    plain.parent.mkdir()
    shutil.copyfile(ON_PREMISES, plain)
    local = estate.root / "local-only"
    git(estate.root, "init", "-q", str(local))
    (local / "manifests").mkdir()
    unshared = local / INSIDE
    shutil.copyfile(ON_PREMISES, unshared)
    for manifest in (plain, unshared):
        assert manifest_key(manifest).identity == str(manifest.resolve())
        assert estate.reconcile("plan", manifest).code in (0, 2)
    with open_store(store_path(estate)) as store:
        assert [r.manifest_path for r in store.list()] == [str(unshared.resolve()), str(plain.resolve())]


def test_a_suspension_an_older_version_keyed_by_the_absolute_path_is_still_honoured(estate: Estate) -> None:
    _, a, b = clones(estate.root)
    with open_store(store_path(estate)) as store:  # what `reconcile suspend` of an older version recorded
        store.suspend(Suspension(str(a.resolve()), "litware-pool", "before the upgrade", time.time(), "ops@a"))
    pool = status(estate, a)["litware-pool"]
    assert pool["condition"] == "Suspended" and "before the upgrade" in str(pool["message"])
    assert estate.reconcile("run", a, "--once").code == 0
    assert estate.app("atl-cs-001", "app") is not None  # still left alone after the upgrade
    assert status(estate, b)["litware-pool"]["condition"] != "Suspended"  # that row named A's checkout only

    assert estate.run("resume", a, "litware-pool").code == 0
    with open_store(store_path(estate)) as store:
        assert store.suspensions(str(a.resolve())) == []
    assert estate.reconcile("run", a, "--once").code == 0
    assert estate.app("atl-cs-001", "app") is None


def test_git_overrides_in_the_environment_do_not_change_the_identity(estate: Estate,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, a, _ = clones(estate.root)
    other = estate.root / "other"
    git(estate.root, "init", "-q", str(other))
    git(other, "remote", "add", "origin", "https://git.example.com/someone/else.git")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    assert manifest_key(a).identity.endswith(f"/origin/trust#{INSIDE}")


@pytest.mark.parametrize(("url", "expected"), [
    ("https://git.example.com/org/repo.git", "https://git.example.com/org/repo"),
    ("https://git.example.com/org/repo", "https://git.example.com/org/repo"),
    ("https://git.example.com/org/repo/", "https://git.example.com/org/repo"),
    ("git@git.example.com:org/repo.git", "https://git.example.com/org/repo"),
    ("git.example.com:org/repo", "https://git.example.com/org/repo"),
    ("ssh://git@git.example.com:2222/org/repo.git", "https://git.example.com/org/repo"),
    ("git://GIT.example.com//org//repo.git", "https://git.example.com/org/repo"),
    (f"https://deploy:{TOKEN}@git.example.com/org/repo.git?x=1#y", "https://git.example.com/org/repo"),
    (f"https://{TOKEN}@git.example.com/Org/Repo", "https://git.example.com/Org/Repo"),
    ("file:///srv/git/repo.git", "file:///srv/git/repo"),
    ("/srv/git/repo.git/", "file:///srv/git/repo"),
    ("https://git.example.com/", None),
    ("https://:443/org/repo", None),
    ("codecommit::eu-west-1://repo", None),
    ("", None),
])
def test_remote_urls_are_normalised_without_credentials(url: str, expected: str | None) -> None:
    assert normalise_remote(url, Path("/")) == expected


def test_a_relative_remote_path_is_read_from_the_work_tree(tmp_path: Path) -> None:
    expected = f"file://{(tmp_path / 'origin' / 'repo').resolve().as_posix()}"
    assert normalise_remote("../origin/repo.git", tmp_path / "clone") == expected
