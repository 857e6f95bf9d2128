"""A manifest's YAML read ahead by a second process (reconciler.manifest.ahead) loads exactly as one read in-process:
the same DesiredState, the same problems; a file changed in between, a YAML mistake or a child that is gone fall back
to the in-process read; and the console script starts the read only when the command loads a manifest the cache does
not hold."""

from __future__ import annotations

import argparse
import hashlib
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import cli, metadata
from reconciler.errors import ManifestError, MetadataError
from reconciler.manifest import ahead, load_manifest, positions
from reconciler.manifest.entries import entry_path
from reconciler.manifest.text import notable
from reconciler.metadata import Documents, MetadataDocument
from tests.e2e import ON_PREMISES, REPO, Estate
from tests.test_manifest import GOOD, registry

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="reading ahead needs fork (not on Windows)")


@pytest.fixture(autouse=True)
def _nothing_left_running() -> object:
    yield None
    ahead.discard()


def _manifest(tmp_path: Path, text: str = GOOD) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_document_read_ahead_is_the_one_read_in_process(tmp_path: Path) -> None:
    path = _manifest(tmp_path)
    raw = path.read_bytes()
    ahead.start(path)
    taken = ahead.take(path, hashlib.sha256(raw).digest())
    assert taken == positions.parse(raw.decode("utf-8-sig"), notable)
    assert taken is not None and taken.notable is not None


def test_the_loader_takes_it_and_builds_the_same_desired_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _manifest(tmp_path)
    (tmp_path / "sp.cer").write_text("not read by the fake kinds", encoding="utf-8")
    expected = load_manifest(path, registry())
    taken: list[bool] = []
    take = ahead.take
    monkeypatch.setattr(ahead, "take", lambda p, sha, meanwhile=None: taken.append(True) or take(p, sha, meanwhile))
    ahead.start(path)
    assert load_manifest(path, registry()) == expected
    assert taken == [True] and not ahead._STARTED


def test_a_file_changed_after_it_was_read_ahead_is_read_again_in_process(tmp_path: Path) -> None:
    path = _manifest(tmp_path)
    ahead.start(path)
    (child,) = ahead._STARTED.values()
    assert select.select([child.fd], [], [], 60)[0]  # it has answered: it read the file before the change below
    changed = path.read_text(encoding="utf-8").replace("applicationTrustLevel: Full", "applicationTrustLevel: Partial")
    path.write_text(changed, encoding="utf-8")
    assert ahead.take(path, _sha(path)) is None


def test_a_yaml_mistake_is_reported_by_the_in_process_read(tmp_path: Path) -> None:
    text = "apiVersion: reconciler/v1\ntargets: {}\nresources:\n  - kind: A\n  - kind: A\n    kind: B\n"
    path = _manifest(tmp_path, text)
    ahead.start(path)
    assert ahead.take(path, _sha(path)) is None
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, registry())
    assert any("duplicate" in str(p) and ":6" in str(p) for p in caught.value.problems)


def test_nothing_is_taken_for_another_file_or_twice(tmp_path: Path) -> None:
    path = _manifest(tmp_path)
    other = tmp_path / "other.yaml"
    other.write_bytes(path.read_bytes())
    ahead.start(path)
    assert ahead.take(other, _sha(other)) is None
    assert ahead.take(path, _sha(path)) is not None
    assert ahead.take(path, _sha(path)) is None


def test_a_child_not_taken_is_ended_and_reaped(tmp_path: Path) -> None:
    ahead.start(_manifest(tmp_path))
    (child,) = ahead._STARTED.values()
    ahead.discard()
    assert not ahead._STARTED
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)


def test_a_child_killed_before_answering_falls_back(tmp_path: Path) -> None:
    path = _manifest(tmp_path)
    ahead.start(path)
    (child,) = ahead._STARTED.values()
    os.kill(child.pid, 9)
    assert ahead.take(path, _sha(path)) in (None, positions.parse(path.read_text(encoding="utf-8"), notable))


def test_no_fork_where_the_process_runs_another_thread_or_fork_is_missing(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = _manifest(tmp_path)
    monkeypatch.setattr(ahead.threading, "active_count", lambda: 2)
    ahead.start(path)
    assert not ahead._STARTED
    monkeypatch.undo()
    monkeypatch.delattr(os, "fork")
    ahead.start(path)
    assert not ahead._STARTED and ahead.take(path, _sha(path)) is None


def _started(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> list[tuple[Path, Path | None, bool]]:
    started: list[tuple[Path, Path | None, bool]] = []
    monkeypatch.setattr(ahead, "start", lambda path, _=None, state_dir=None, downloads=False: started.append(
        (path, state_dir, downloads)))
    args = cli.parse(cli._parser(), argv)
    cli._read_ahead(args)
    return started


def test_the_command_line_reads_ahead_for_the_commands_that_load_a_manifest(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = _manifest(tmp_path)
    state = tmp_path / "state"
    for command in ("plan", "apply", "drift"):  # and that process downloads their documents
        assert _started(monkeypatch, [command, "--state-dir", str(state), str(path)]) == [(path, state, True)], command
    assert _started(monkeypatch, ["validate", str(path)]) == [(path, None, False)]  # validate does not use the cache
    assert _started(monkeypatch, ["run", "--state-dir", str(state), "--once", str(path)]) == [(path, state, False)]
    assert _started(monkeypatch, ["history", "--state-dir", str(state), "--manifest", str(path)]) == []
    assert _started(monkeypatch, ["graph", "--state-dir", str(state), str(path)]) == []


def _sha(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def _read(path: Path) -> tuple[bytes, bytes]:
    raw = path.read_bytes()
    return raw, hashlib.sha256(raw).digest()


def _entry(path: Path, state: Path) -> Path:
    """An entry (its content aside) for the manifest as it is now."""
    entry = entry_path(path, hashlib.sha256(path.read_bytes()).hexdigest(), state)
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text("{}", encoding="utf-8")
    return entry


def test_the_child_reads_only_what_the_command_will_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _manifest(tmp_path)
    state = tmp_path / "state"
    assert ahead._worth_reading(path, state) == _read(path)
    saved = tmp_path / "plan.json"
    saved.write_text('  {"format_version": "1.0"}', encoding="utf-8")
    assert ahead._worth_reading(saved, state) is None  # a saved plan for apply
    with pytest.raises(OSError):
        ahead._worth_reading(tmp_path / "missing.yaml", state)
    monkeypatch.setattr(ahead, "MAX_BYTES", path.stat().st_size - 1)
    assert ahead._worth_reading(path, state) is None  # larger than the limit: parsed in-process
    monkeypatch.setattr(ahead, "MAX_BYTES", path.stat().st_size)
    assert ahead._worth_reading(path, state) == _read(path)
    _entry(path, state)  # the cache holds it: the plan will not parse it
    assert ahead._worth_reading(path, state) is None
    assert ahead._worth_reading(path, None) == _read(path)  # validate does not use the cache
    monkeypatch.setattr(ahead, "MAX_BYTES", path.stat().st_size + 100)
    with path.open("a", encoding="utf-8") as edit:
        edit.write("# edited\n")  # its entry is for the bytes it had: the plan will parse it
    assert ahead._worth_reading(path, state) == _read(path)


def test_a_child_that_reads_nothing_answers_nothing(tmp_path: Path) -> None:
    path = _manifest(tmp_path)
    state = tmp_path / "state"
    _entry(path, state)
    ahead.start(path, state_dir=state)
    assert ahead.take(path, _sha(path)) is None
    ahead.start(tmp_path / "missing.yaml", state_dir=state)
    assert ahead.take(tmp_path / "missing.yaml", hashlib.sha256(b"").digest()) is None


def test_main_reads_ahead_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[argparse.Namespace] = []
    monkeypatch.setattr(cli, "_read_ahead", called.append)
    cli.main(["validate", str(tmp_path / "missing.yaml")])
    assert called == []
    cli.main(["validate", str(tmp_path / "missing.yaml")], as_process=True)
    assert len(called) == 1


def test_a_plan_process_that_read_ahead_prints_the_plan_main_prints(estate: Estate) -> None:
    """The console script (which reads ahead, a fresh state directory) prints the plan main in-process (which does
    not read ahead) prints."""
    argv = ["plan", "--var", f"lab={estate.url}", "--state-dir", str(estate.root / "fresh"), str(ON_PREMISES)]
    done = subprocess.run([sys.executable, "-m", "reconciler", *argv], cwd=estate.root, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    argv[4] = str(estate.root / "in-process")
    in_process = estate.run(*argv)
    assert in_process.code == 0
    assert done.stdout == in_process.out
    assert "Plan: 2 to add, 1 to change, 1 to replace, 1 to remove." in done.stdout


def test_a_plan_process_reports_a_document_it_cannot_download_as_main_does(estate: Estate) -> None:
    """The process that read the manifest ahead downloads the documents for the console script; a document that
    cannot be downloaded is reported as main in-process (which downloads them itself) reports it: the same plan,
    the same error, the same exit."""
    broken = estate.write("broken.yaml", ON_PREMISES.read_text(encoding="utf-8").replace(
        "${sharepointHost}/jsonmetadata.ashx", "${sharepointHost}/no-such-document.json"))
    argv = ["plan", "--var", f"lab={estate.url}", "--state-dir", str(estate.root / "fresh"), str(broken)]
    done = subprocess.run([sys.executable, "-m", "reconciler", *argv], cwd=estate.root, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    argv[4] = str(estate.root / "in-process")
    in_process = estate.run(*argv)
    assert (done.returncode, done.stdout) == (in_process.code, in_process.out)
    assert done.returncode == 1 and "no-such-document.json: HTTP 404" in done.stdout + done.stderr


def test_take_does_the_work_given_for_the_wait_only_while_the_document_is_not_ready(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _manifest(tmp_path)
    done: list[str] = []
    ahead.start(path, lambda: done.append("meanwhile"))
    (child,) = ahead._STARTED.values()
    assert select.select([child.fd], [], [], 60)[0]  # answered already: nothing to wait for
    assert ahead.take(path, _sha(path)) is not None and done == []
    monkeypatch.setattr(ahead.select, "select", lambda *_: ([], [], []))  # not answered yet
    ahead.start(path, lambda: done.append("meanwhile"))
    assert ahead.take(path, _sha(path), lambda: done.append("the loader's")) is not None
    assert done == ["meanwhile", "the loader's"]


def test_the_command_line_prepares_the_downloads_while_it_waits(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = _manifest(tmp_path)
    given: list[object] = []
    monkeypatch.setattr(ahead, "start", lambda _, meanwhile=None, state_dir=None, downloads=False: given.append(
        meanwhile))
    cli._read_ahead(cli.parse(cli._parser(), ["run", "--once", "--state-dir", str(tmp_path / "s"), str(path)]))
    cli._read_ahead(cli.parse(cli._parser(), ["plan", "--state-dir", str(tmp_path / "s"), str(path)]))
    cli._read_ahead(cli.parse(cli._parser(), ["validate", str(path)]))
    # a plan's documents are downloaded by the process reading ahead; validate downloads nothing
    assert given == [cli._prepare_downloads, None, None]


def test_work_for_the_wait_that_fails_does_not_stop_the_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _manifest(tmp_path)

    def fails() -> None:
        raise OSError("no TLS settings here")

    monkeypatch.setattr(ahead.select, "select", lambda *_: ([], [], []))  # not answered yet
    ahead.start(path, fails)
    assert ahead.take(path, _sha(path)) is not None


def test_a_plan_process_reports_a_yaml_mistake_as_main_does(tmp_path: Path) -> None:
    """The console script reads ahead; a document with a problem is read again in-process, so the message is the
    one main gives (file, line, field path), exit 1, no traceback."""
    path = tmp_path / "m.yaml"
    twice = "    applicationTrustLevel: Full\n    applicationTrustLevel: Partial\n"
    path.write_text(textwrap.dedent(GOOD).replace("    applicationTrustLevel: Full\n", twice, 1), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "reconciler", "plan", "--state-dir", str(tmp_path / "s"), str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"{path}:" in done.stderr and "duplicate key 'applicationTrustLevel'" in done.stderr, done.stderr


def test_a_manifest_with_problems_gets_the_same_messages_read_ahead(tmp_path: Path) -> None:
    """YAML without a mistake but a manifest with problems: the document read ahead is taken, and every problem
    names the line the in-process read names."""
    text = textwrap.dedent(GOOD).replace("applicationTrustLevel: Full", "applicationTrustLevel: Sometimes", 1)
    path = _manifest(tmp_path, text.replace("    realm: $${not a variable}\n", "    realm: [1, 2]\n"))
    with pytest.raises(ManifestError) as in_process:
        load_manifest(path, registry())
    ahead.start(path)
    with pytest.raises(ManifestError) as read_ahead:
        load_manifest(path, registry())
    assert not ahead._STARTED  # taken
    assert [str(p) for p in read_ahead.value.problems] == [str(p) for p in in_process.value.problems]
    assert len(in_process.value.problems) >= 2


def test_a_manifest_the_cache_holds_ends_the_read_ahead_started_for_it(tmp_path: Path) -> None:
    """The read-ahead starts before the cache is looked at; a cache hit (from the entry, or kept in the process, as a
    `run` loop's cycles are) ends it, instead of leaving an ended process to the end of the loop."""
    from reconciler.manifest import cache

    path = _manifest(tmp_path)
    state = tmp_path / "state"
    (tmp_path / "sp.cer").write_text("not read by the fake kinds", encoding="utf-8")
    first = cache.load_cached(path, registry(), {}, state)  # written, and kept by this process
    for _ in range(2):
        ahead.start(path, state_dir=state)
        (child,) = ahead._STARTED.values()
        assert cache.load_cached(path, registry(), {}, state) == first
        assert not ahead._STARTED
        with pytest.raises(ChildProcessError):
            os.waitpid(child.pid, os.WNOHANG)
        cache._KEPT.clear()  # the second time from the entry itself


# --- the process that read ahead downloads the plan's metadata documents ------------------------------------------

FIXTURES = REPO / "tests" / "fixtures" / "metadata"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[str]]:
    """Three real metadata documents (JSON, federation XML), a missing one and a refused connection, over HTTP from
    a server in a process of its own (the process reading ahead forks only without other threads)."""
    folder = tmp_path / "served"
    folder.mkdir()
    names = ["exchange-autodiscover.json", "acs-tenant.json", "adfs-federationmetadata.xml"]
    for name in names:
        (folder / name).write_bytes((FIXTURES / name).read_bytes())
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    port, closed = ports
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                               str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.02)
        base = f"http://127.0.0.1:{port}/"
        yield [base + name for name in names] + [base + "missing.json", f"http://127.0.0.1:{closed}/refused.json"]
    finally:
        server.kill()
        server.wait()


def _same(found: dict[str, Any], expected: dict[str, Any]) -> None:
    assert list(found) == list(expected)
    for url, doc in expected.items():
        if isinstance(doc, MetadataError):
            assert isinstance(found[url], MetadataError) and str(found[url]) == str(doc), url
        else:
            assert found[url] == doc, url


def _in_process(urls: list[str]) -> dict[str, Any]:
    with Documents(5.0) as documents:
        return documents.fetch(urls)


def _helper(path: Path, monkeypatch: pytest.MonkeyPatch) -> ahead.Downloader:
    """The process that read `path` ahead, kept to download; this process is then kept from downloading itself."""
    ahead.start(path, downloads=True)
    assert ahead.take(path, _sha(path)) is not None
    helper = ahead.downloads()
    assert helper is not None and ahead.downloads() is None  # one user
    return helper


def test_the_process_that_read_ahead_downloads_the_documents_this_process_would(
        tmp_path: Path, served: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _in_process(served)
    assert sum(isinstance(doc, MetadataDocument) for doc in expected.values()) == 3
    helper = _helper(_manifest(tmp_path), monkeypatch)
    pid = helper._child.pid if helper._child else 0

    def here(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("downloaded in this process")

    monkeypatch.setattr(metadata, "download_client", here)
    with Documents(5.0, elsewhere=helper) as documents:
        documents.start(served)
        found = documents.fetch(served)
    _same(found, expected)
    with pytest.raises(ChildProcessError):  # it ended with its answer, and was reaped
        os.waitpid(pid, os.WNOHANG)


def test_documents_the_other_process_does_not_answer_are_downloaded_here(
        tmp_path: Path, served: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _in_process(served)
    helper = _helper(_manifest(tmp_path), monkeypatch)
    assert helper._child is not None
    os.kill(helper._child.pid, signal.SIGKILL)  # gone before it was asked (or while it downloads)
    with Documents(5.0, elsewhere=helper) as documents:
        documents.start(served)
        _same(documents.fetch(served), expected)


def test_a_manifest_from_the_cache_still_has_its_documents_downloaded_by_that_process(
        tmp_path: Path, served: list[str]) -> None:
    path = _manifest(tmp_path)
    state = tmp_path / "state"
    _entry(path, state)  # the cache holds it: the process reads nothing, and answers so
    ahead.start(path, state_dir=state, downloads=True)
    (child,) = ahead._STARTED.values()
    assert select.select([child.fd], [], [], 60)[0]
    ahead.drop(path)  # the load came from the cache
    helper = ahead.downloads()
    assert helper is not None
    with Documents(5.0, elsewhere=helper) as documents:
        documents.start(served[:1])
        assert isinstance(documents.fetch(served[:1])[served[0]], MetadataDocument)


def test_a_process_kept_to_download_and_never_asked_is_ended(tmp_path: Path) -> None:
    path = _manifest(tmp_path)
    ahead.start(path, downloads=True)
    assert ahead.take(path, _sha(path)) is not None
    ((child, _),) = ahead._HELPER
    ahead.discard()
    assert not ahead._HELPER and ahead.downloads() is None
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)
    ahead.start(path)  # started to read only: ended once it answered
    assert ahead.take(path, _sha(path)) is not None and not ahead._HELPER


@pytest.mark.skipif(sys.platform != "linux", reason="pipe sizes are Linux's")
def test_the_answer_crosses_a_pipe_wide_enough_for_a_large_manifest(tmp_path: Path) -> None:
    import fcntl

    path = _manifest(tmp_path)
    ahead.start(path)
    (child,) = ahead._STARTED.values()
    assert fcntl.fcntl(child.fd, fcntl.F_GETPIPE_SZ) >= min(ahead._PIPE_BYTES, int(
        Path("/proc/sys/fs/pipe-max-size").read_text(encoding="ascii")))
    assert ahead.take(path, _sha(path)) is not None
