"""The validated-manifest cache: used only while nothing the load depended on changed, never trusted otherwise."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import ManifestError
from reconciler.lab.certs import make_certificate
from reconciler.manifest.cache import FORMAT, load_cached
from reconciler.manifest.entries import CACHE_DIR
from reconciler.manifest.loader import load_manifest
from reconciler.manifest.notify import DEFAULT_INTERVAL, EVENTS
from reconciler.model import DesiredState, NotifyDestination
from reconciler.providers.base import Registry

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


class Counting:
    def __init__(self) -> None:
        self.loads = 0

    def __call__(self, path: Path, registry: Registry, overrides: Mapping[str, str] | None) -> DesiredState:
        self.loads += 1
        return load_manifest(path, registry, overrides)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Registry, Counting]:
    folder = tmp_path / "repo"
    (folder / "certs").mkdir(parents=True)
    shutil.copy(MANIFESTS / "cross-premises.yaml", folder / "cross-premises.yaml")
    shutil.copy(MANIFESTS / "certs" / "fabrikam-oauth.cer", folder / "certs" / "fabrikam-oauth.cer")
    return folder / "cross-premises.yaml", tmp_path / "state", Registry.from_entry_points(), Counting()


def test_an_unchanged_manifest_is_loaded_once_and_the_cache_gives_the_same_state(
        setup: tuple[Path, Path, Registry, Counting]) -> None:
    manifest, state, registry, load = setup
    first = load_cached(manifest, registry, {"lab": "http://127.0.0.1:9"}, state, load)
    second = load_cached(manifest, registry, {"lab": "http://127.0.0.1:9"}, state, load)
    assert load.loads == 1
    assert second == first and second.manifest_sha256 == first.manifest_sha256
    assert second.by_target.keys() == first.by_target.keys()
    [entry] = (state / CACHE_DIR).iterdir()
    if os.name == "posix":
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    text = entry.read_text(encoding="utf-8")
    assert "fabrikam-oauth.cer" in text  # the certificate file is an input, recorded with its hash
    assert "127.0.0.1:9" in text  # in the state (the loaded URLs), as in every plan: --var values are not secrets
    assert '"vars"' not in text  # the key is a digest


def test_any_input_change_loads_again(setup: tuple[Path, Path, Registry, Counting]) -> None:
    manifest, state, registry, load = setup
    load_cached(manifest, registry, {}, state, load)
    load_cached(manifest, registry, {"lab": "http://127.0.0.1:9"}, state, load)  # another --var value
    assert load.loads == 2
    cert = manifest.parent / "certs" / "fabrikam-oauth.cer"
    cert.write_bytes(make_certificate("other.fabrikam.com"))  # the certificate file the manifest reads
    changed = load_cached(manifest, registry, {"lab": "http://127.0.0.1:9"}, state, load)
    assert load.loads == 3
    assert changed == load_manifest(manifest, registry, {"lab": "http://127.0.0.1:9"})
    manifest.write_text(manifest.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    load_cached(manifest, registry, {"lab": "http://127.0.0.1:9"}, state, load)
    assert load.loads == 4
    load_cached(manifest, registry, {"lab": "http://127.0.0.1:9"}, state, load)
    assert load.loads == 4


def test_a_manifest_with_problems_is_not_cached(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text("targets: 3\n", encoding="utf-8")
    for _ in range(2):
        with pytest.raises(ManifestError):
            load_cached(manifest, Registry.from_entry_points(), {}, tmp_path / "state")
    assert not (tmp_path / "state" / CACHE_DIR).exists() or not any((tmp_path / "state" / CACHE_DIR).iterdir())


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_an_entry_others_may_write_or_a_forged_one_is_not_trusted(
        setup: tuple[Path, Path, Registry, Counting]) -> None:
    manifest, state, registry, load = setup
    load_cached(manifest, registry, {}, state, load)
    [entry] = (state / CACHE_DIR).iterdir()
    entry.chmod(0o666)
    load_cached(manifest, registry, {}, state, load)
    assert load.loads == 2  # not read: loaded again (and the entry rewritten 0600)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    entry.write_text(entry.read_text(encoding="utf-8").replace('"DesiredState"', '"Unknown"'), encoding="utf-8")
    assert load_cached(manifest, registry, {}, state, load) == load_manifest(manifest, registry, {})
    assert load.loads == 3


def test_a_damaged_entry_with_the_right_key_is_loaded_again(setup: tuple[Path, Path, Registry, Counting]) -> None:
    """An entry changed by hand (its key still right) is read as a miss, whatever shape its values take."""
    manifest, state, registry, load = setup
    load_cached(manifest, registry, {}, state, load)
    [entry] = (state / CACHE_DIR).iterdir()
    good = json.loads(entry.read_text(encoding="utf-8"))
    damages = [("v", "not the fields"), ("resources", [[1, 2, 3]]), ("resources", "x"), ("v", {"targets": [1]})]
    for loads, (part, value) in enumerate(damages, start=2):
        document = json.loads(json.dumps(good))
        document["desired"][part] = value
        entry.write_text(json.dumps(document), encoding="utf-8")
        assert load_cached(manifest, registry, {}, state, load) == load_manifest(manifest, registry, {})
        assert load.loads == loads, part


def test_notify_destinations_come_back_as_records_and_an_older_format_is_not_read(
        setup: tuple[Path, Path, Registry, Counting]) -> None:
    manifest, state, registry, load = setup
    manifest.write_text(manifest.read_text(encoding="utf-8") + "notify:\n  - type: teams\n    urlEnv: TEAMS_URL\n"
                        "  - type: webhook\n    urlEnv: HOOK_URL\n    events: [drift]\n    minInterval: 0s\n",
                        encoding="utf-8")
    first = load_cached(manifest, registry, {}, state, load)
    second = load_cached(manifest, registry, {}, state, load)
    assert load.loads == 1
    assert second.notify == first.notify == (
        NotifyDestination("teams", "TEAMS_URL", EVENTS, DEFAULT_INTERVAL),
        NotifyDestination("webhook", "HOOK_URL", ("drift",), "0s"))
    [entry] = (state / CACHE_DIR).iterdir()
    document = json.loads(entry.read_text(encoding="utf-8"))
    assert document["format"] == FORMAT
    entry.write_text(json.dumps({**document, "format": FORMAT - 1}), encoding="utf-8")
    assert load_cached(manifest, registry, {}, state, load) == first
    assert load.loads == 2  # an entry of another format is loaded afresh, never decoded


def test_a_process_loading_one_manifest_again_keeps_what_it_read_while_nothing_changed(
        setup: tuple[Path, Path, Registry, Counting], monkeypatch: pytest.MonkeyPatch) -> None:
    """The `run` loop's cycles: the DesiredState read or written last is used again, without reading the entry,
    while the key, the files the load read and the entry file itself are unchanged."""
    from reconciler.manifest import cache

    manifest, state, registry, load = setup
    first = load_cached(manifest, registry, {}, state, load)
    reads: list[Path] = []
    real_read = cache._read
    monkeypatch.setattr(cache, "_read", lambda entry, key: reads.append(entry) or real_read(entry, key))
    assert load_cached(manifest, registry, {}, state, load) is first
    assert reads == [] and load.loads == 1
    certificate = manifest.parent / "certs" / "fabrikam-oauth.cer"
    certificate.write_bytes(make_certificate("other.example"))  # a file the load read: loaded again
    second = load_cached(manifest, registry, {}, state, load)
    assert second is not first and load.loads == 2
    reads.clear()
    [entry] = (state / CACHE_DIR).iterdir()
    entry.write_text(entry.read_text(encoding="utf-8") + " ", encoding="utf-8")  # the entry rewritten: read again
    third = load_cached(manifest, registry, {}, state, load)
    assert reads == [entry] and load.loads == 2 and third == second and third is not second


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> object:
    """Loads leave their entries for `write_pending`, as in a `reconcile plan` process (reconciler.cli.run)."""
    from reconciler.manifest import cache

    monkeypatch.setattr(cache, "_LATER", None)
    cache.write_later()
    return cache


def test_a_command_that_ends_after_one_load_writes_the_same_entry_when_it_is_done(
        setup: tuple[Path, Path, Registry, Counting], later: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, state, registry, load = setup
    first = load_cached(manifest, registry, {}, state, load)
    assert not (state / CACHE_DIR).exists()  # nothing written while the command works
    monkeypatch.delattr(os, "fork", raising=False)  # as on Windows: written by this process
    later.write_pending()
    [entry] = (state / CACHE_DIR).iterdir()
    assert "fabrikam-oauth.cer" in entry.read_text(encoding="utf-8")
    assert load_cached(manifest, registry, {}, state, load) == first
    assert load.loads == 1  # from the entry
    later.write_pending()  # nothing left: nothing done
    assert later._LATER is None


def test_an_entry_written_at_the_end_holds_the_files_as_the_load_read_them(
        setup: tuple[Path, Path, Registry, Counting], later: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A certificate file changed between the load and the write: the entry is not used for the changed file."""
    manifest, state, registry, load = setup
    load_cached(manifest, registry, {}, state, load)
    (manifest.parent / "certs" / "fabrikam-oauth.cer").write_bytes(make_certificate("other.fabrikam.com"))
    monkeypatch.delattr(os, "fork", raising=False)
    later.write_pending()
    assert load_cached(manifest, registry, {}, state, load) == load_manifest(manifest, registry, {})
    assert load.loads == 2


def test_the_entries_left_are_written_by_a_forked_process_only_where_no_other_thread_runs(
        setup: tuple[Path, Path, Registry, Counting], later: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    manifest, state, registry, load = setup
    forks: list[int] = []
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or 4242, raising=False)  # this process is the parent
    load_cached(manifest, registry, {}, state, load)
    later.write_pending()
    assert forks == [1] and not (state / CACHE_DIR).exists()  # the writer's to write; this one ends next
    later.write_later()
    load_cached(manifest, registry, {}, state, load)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        later.write_pending()  # a fork would give the writer this thread alone: written here
    finally:
        stop.set()
        other.join()
    assert forks == [1] and len(list((state / CACHE_DIR).iterdir())) == 1
    later.write_later()
    manifest.write_text(manifest.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")  # loaded again
    load_cached(manifest, registry, {}, state, load)
    go = threading.Event()
    ending = threading.Thread(target=go.wait)  # a downloader that has handed over its last document
    ending.start()
    go.set()
    later.write_pending()  # waited for: it ends at once
    assert forks == [1, 1] and not ending.is_alive()


def test_the_command_line_leaves_entries_to_the_end_only_for_the_commands_that_load_once_and_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler import cli
    from reconciler.manifest import cache

    path, state = tmp_path / "m.yaml", tmp_path / "state"
    for argv, expected in ((["plan", str(path)], True), (["apply", str(path)], True), (["drift", str(path)], True),
                           (["run", str(path)], False), (["validate", str(path)], False),
                           (["history", "--state-dir", str(state)], False)):
        monkeypatch.setattr(cache, "_LATER", None)
        cli._write_behind(cli.parse(cli._parser(), argv))
        assert (cache._LATER is not None) is expected, argv
    monkeypatch.setattr(cache, "_LATER", None)
    called: list[object] = []
    monkeypatch.setattr(cli, "_write_behind", called.append)
    monkeypatch.setattr(cli, "_read_ahead", lambda args: None)
    cli.main(["validate", str(tmp_path / "missing.yaml")])
    assert called == []  # main in-process (tests, embedding) writes each entry as its load ends
    cli.main(["validate", str(tmp_path / "missing.yaml")], as_process=True)
    assert len(called) == 1


def test_an_entry_is_named_by_the_manifests_path_and_content_and_one_is_kept_per_path(
        setup: tuple[Path, Path, Registry, Counting]) -> None:
    """Whether the cache may hold a manifest as it is now is told by the entry's name (what the read-ahead asks, so
    an edited manifest is read ahead): an edit's load writes the new content's entry and removes the old one, and
    an entry named by the path alone (an earlier version's) goes too."""
    import hashlib

    from reconciler.manifest.entries import entry_path

    manifest, state, registry, load = setup
    load_cached(manifest, registry, {}, state, load)
    [first] = (state / CACHE_DIR).iterdir()
    assert first == entry_path(manifest, hashlib.sha256(manifest.read_bytes()).hexdigest(), state)
    legacy = state / CACHE_DIR / (first.name.split("-")[0] + ".json")
    legacy.write_text("{}", encoding="utf-8")
    elsewhere = state / CACHE_DIR / ("0" * 32 + "-" + "1" * 32 + ".json")  # another manifest's
    elsewhere.write_text("{}", encoding="utf-8")
    manifest.write_text(manifest.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    load_cached(manifest, registry, {}, state, load)
    assert load.loads == 2
    assert sorted((state / CACHE_DIR).iterdir()) == sorted(
        [entry_path(manifest, hashlib.sha256(manifest.read_bytes()).hexdigest(), state), elsewhere])
