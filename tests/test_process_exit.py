"""`reconcile` as a process ends without tearing its heap down (reconciler.cli.run), and loses nothing doing so:
its output is whole, its exit code is main's, atexit handlers run and threads that are not daemons finish."""

from __future__ import annotations

import ast
import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.manifest.cache import load_cached
from reconciler.manifest.entries import CACHE_DIR
from reconciler.manifest.loader import load_manifest
from reconciler.model import DesiredState
from reconciler.providers.base import Registry
from tests.e2e import ON_PREMISES, REPO, Estate

PROGRAM = """
import atexit, sys, threading, time
from pathlib import Path
from reconciler.cli import run

out = Path(sys.argv[1])
def late():  # a thread that is not a daemon, still working when main returns
    time.sleep(0.2)
    out.with_suffix('.thread').write_text('finished')
threading.Thread(target=late).start()
atexit.register(lambda: out.write_text('atexit ran'))
sys.argv = ['reconcile', *sys.argv[2:]]
run()
"""


def _run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path / "mark.txt"), *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO),
                                                                            "PATH": "/usr/bin:/bin"})


def test_a_plan_process_prints_everything_and_exits_with_mains_code(estate: Estate, tmp_path: Path) -> None:
    done = _run(estate.root, "plan", "--detailed-exitcode", "--var", f"lab={estate.url}", str(ON_PREMISES))
    assert done.returncode == 2, done.stderr
    assert done.stdout.rstrip().splitlines()[-1].startswith("Plan: 2 to add, 1 to change, 1 to replace, 1 to remove.")
    assert (estate.root / "mark.txt").read_text() == "atexit ran"
    assert (estate.root / "mark.thread").read_text() == "finished"


def test_an_error_exits_1_with_its_message(tmp_path: Path) -> None:
    done = _run(tmp_path, "validate", str(tmp_path / "missing.yaml"))
    assert done.returncode == 1
    assert "missing.yaml" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "mark.txt").read_text() == "atexit ran"


def test_a_reader_that_goes_away_ends_the_process_with_mains_verdict_not_a_traceback(estate: Estate) -> None:
    """`reconcile plan | head -1` whose reader has gone: the output main could not write is an error main reports
    (exit 1), or output still buffered when main returns is dropped (main's code); never a traceback."""
    process = subprocess.Popen([sys.executable, "-m", "reconciler", "plan", "--detailed-exitcode", "--var",
                                f"lab={estate.url}", str(ON_PREMISES)], cwd=estate.root, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the process writes anything
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) in (1, 2)
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_the_collector_is_off_in_a_one_shot_process_and_back_on_in_the_loop_and_the_lab_server(
        estate: Estate, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` (the process entry) turns the cyclic collector off; a command that stays up turns it back on."""
    from reconciler.lab.server import LabServer

    done = subprocess.run([sys.executable, "-c", "import gc, sys\nfrom reconciler import cli\n"
                           "cli.main = lambda **_: print(gc.isenabled()) or 0\ncli.run()"],
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO)})
    assert done.stdout.strip() == "False", done.stderr
    monkeypatch.setattr(LabServer, "serve_forever", LabServer.stop)  # started, then stopped at once
    try:
        for argv in (["run", "--once", "--var", f"lab={estate.url}", str(ON_PREMISES)],
                     ["lab", "serve", "--port", "0", "--state", str(estate.state)]):
            gc.disable()
            assert main(argv) in (0, 2), argv
            assert gc.isenabled(), argv
    finally:
        gc.enable()


WRITER = """
import os, sys, time
from pathlib import Path
from reconciler.cli import run
from reconciler.manifest import cache

marks = Path(sys.argv[1])
command = os.getpid()
real = cache._write
def held(*args):  # in the writer: says who it is and what it holds, then waits for the test's word
    fds = sorted(os.listdir('/proc/self/fd'), key=int) if os.path.isdir('/proc/self/fd') else None
    out = [os.readlink(f'/proc/self/fd/{fd}') for fd in (1, 2)] if fds is not None else None
    (marks / 'writer.tmp').write_text(repr((os.getpid(), os.getsid(0), fds, out)))
    (marks / 'writer.tmp').replace(marks / 'writer')
    if os.getpid() == command:
        return real(*args)  # written by the command itself: the test says so, without waiting
    deadline = time.monotonic() + 60
    while not (marks / 'go').exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return real(*args)
cache._write = held
sys.argv = ['reconcile', *sys.argv[2:]]
run()
"""


def _appears(path: Path) -> Path:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the entry is written by a forked process where fork exists")
def test_a_plan_process_ends_before_its_cache_entry_is_written_and_the_entry_is_the_one_the_next_plan_uses(
        estate: Estate, tmp_path: Path) -> None:
    """The console script's plan leaves its manifest's cache entry to a detached writer: the command's output and exit
    status come while the writer still writes (it holds none of the caller's pipes, in a session of its own, so the
    terminal's Ctrl-C is not for it), and what it writes is the entry a later plan reads instead of loading."""
    marks, state = tmp_path / "marks", tmp_path / "state"
    marks.mkdir()
    argv = ["plan", "--var", f"lab={estate.url}", "--state-dir", str(state), str(ON_PREMISES)]
    done = subprocess.run([sys.executable, "-c", WRITER, str(marks), *argv], cwd=estate.root, capture_output=True,
                          text=True, timeout=50, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "Plan: 2 to add, 1 to change, 1 to replace, 1 to remove." in done.stdout
    pid, session, fds, out = ast.literal_eval(_appears(marks / "writer").read_text())
    assert session == pid != os.getsid(0)
    if fds is not None:
        assert out == [os.devnull, os.devnull] and len(fds) <= 4, fds  # 0-2 and the listing's own
    assert not (state / CACHE_DIR).exists() or not any((state / CACHE_DIR).iterdir())  # still waiting
    (marks / "go").write_text("", encoding="utf-8")
    _appears(state / CACHE_DIR)

    def written() -> bool:
        return any(p.suffix == ".json" and not p.name.startswith(".") for p in (state / CACHE_DIR).iterdir())

    deadline = time.monotonic() + 60
    while not written():
        assert time.monotonic() < deadline, "the entry was never written"
        time.sleep(0.02)

    def no_load(*_: object) -> DesiredState:
        raise AssertionError("loaded: the entry was not used")

    cached = load_cached(ON_PREMISES, Registry.from_entry_points(), {"lab": estate.url}, state, no_load)
    assert cached == load_manifest(ON_PREMISES, Registry.from_entry_points(), {"lab": estate.url})
