"""`reconcile` as a process ends without tearing its heap down (reconciler.cli.run), and loses nothing doing so:
its output is whole, its exit code is main's, atexit handlers run and threads that are not daemons finish."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import main
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
