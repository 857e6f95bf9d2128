"""Windows portability, proved on Linux: nothing POSIX-only is imported, and every Windows branch runs here with
the Windows APIs replaced at the boundary (`reconciler.portable._win_*`, `os.name`, `shutil.which`).

What this does not prove: that the ctypes calls in `_win_file_acl` and `_win_console_handler` behave on a real
Windows host (see README, "Windows").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from reconciler import locks, portable
from reconciler.errors import TransportError
from reconciler.locks import default_lock_dir, lock_identity
from reconciler.model import TargetSpec
from reconciler.portable import (
    ADMINISTRATORS_SID,
    CTRL_BREAK_EVENT,
    CTRL_C_EVENT,
    CTRL_CLOSE_EVENT,
    CTRL_SHUTDOWN_EVENT,
    FILE_READ_DATA,
    GENERIC_READ,
    SYSTEM_SID,
    AccessEntry,
    FileAcl,
    beside,
    check_private,
    console_stop,
    replace,
)
from reconciler.store import base as store_base
from reconciler.store.base import open_store, sqlite_url_path
from reconciler.transports.pwsh import PwshTransport, default_executable
from tests.e2e import ON_PREMISES, REPO, Estate

POSIX_ONLY = ("fcntl", "pty", "termios", "resource")


class WindowsOs:
    """`os` as one module sees it on Windows (os.name "nt"), everything else the real module's.

    Set on a single module (monkeypatch.setattr(module, "os", WindowsOs())) where that module builds a Path:
    pathlib.Path() itself picks WindowsPath by os.name, which cannot be instantiated on Linux.
    """

    name = "nt"

    def __getattr__(self, attribute: str) -> object:
        return getattr(os, attribute)

# -- nothing POSIX-only is imported ----------------------------------------------------------------

WITHOUT_POSIX_MODULES = f"""
import importlib, importlib.abc, pkgutil, sys

BLOCKED = {POSIX_ONLY!r}

class NotOnWindows(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {{name!r}} (blocked: Windows has no such module)")
        return None

for name in BLOCKED:
    sys.modules.pop(name, None)
sys.meta_path.insert(0, NotOnWindows())

import reconciler
imported = []
for info in pkgutil.walk_packages(reconciler.__path__, "reconciler."):
    if info.name.endswith(".__main__"):
        continue  # importing it runs the CLI: `python -m reconciler` is what runs it below
    importlib.import_module(info.name)
    imported.append(info.name)
print("imported", len(imported), file=sys.stderr)
assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED], "a POSIX-only module was imported"

from reconciler.cli import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED], "a POSIX-only module was imported"
sys.exit(code)
"""


def test_every_module_imports_and_the_cli_plans_without_posix_only_modules(estate: Estate) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RECONCILE_LOCK_DIR": str(estate.root / "locks")}
    version = subprocess.run([sys.executable, "-c", WITHOUT_POSIX_MODULES, "--version"], capture_output=True,
                             text=True, cwd=estate.root, env=env, timeout=120, check=False)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("reconcile ")
    imported = int(version.stderr.split("imported ")[1].split()[0])
    assert imported > 50  # every module of the package, not just the CLI's
    # Without fcntl, filelock falls back here to its soft lock (a marker file: on Windows it would use msvcrt).
    # The lab's flock file, left by `lab init` in this process, would read as a held soft lock: remove it.
    estate.state.with_name(estate.state.name + ".lock").unlink(missing_ok=True)
    plan = subprocess.run([sys.executable, "-c", WITHOUT_POSIX_MODULES, "plan", "--detailed-exitcode",
                           "--var", f"lab={estate.url}", str(ON_PREMISES)],
                          capture_output=True, text=True, cwd=estate.root, env=env, timeout=120, check=False)
    assert plan.returncode == 2, plan.stdout + plan.stderr  # changes to make: the lab was read and planned against
    assert "Plan:" in plan.stdout and "Traceback" not in plan.stderr


def test_the_import_hook_really_blocks() -> None:
    probe = WITHOUT_POSIX_MODULES.split("import reconciler")[0] + "import fcntl\n"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode != 0 and "blocked: Windows has no such module" in run.stderr


# -- credential files: the access list on Windows, the mode on POSIX -------------------------------

OWNER = "S-1-5-21-1-2-3-1001"


def acl(*entries: AccessEntry, owner: str = OWNER) -> FileAcl:
    return FileAcl(owner, "CONTOSO\\svc-reconcile", entries)


def allow(sid: str, name: str, mask: int = GENERIC_READ) -> AccessEntry:
    return AccessEntry(sid, name, True, mask)


PRIVATE = acl(allow(OWNER, "CONTOSO\\svc-reconcile", 0x1F01FF), allow(SYSTEM_SID, "NT AUTHORITY\\SYSTEM", 0x1F01FF),
              allow(ADMINISTRATORS_SID, "BUILTIN\\Administrators", 0x1F01FF))


@pytest.fixture
def credential(tmp_path: Path) -> Path:
    path = tmp_path / "winrm.json"
    path.write_text("{}", encoding="utf-8")
    path.chmod(0o644)  # would be refused on POSIX: on Windows only the access list counts
    return path


def on_windows_with(monkeypatch: pytest.MonkeyPatch, found: FileAcl | Exception) -> list[str]:
    asked: list[str] = []

    def fake_acl(path: str) -> FileAcl:
        asked.append(path)
        if isinstance(found, Exception):
            raise found
        return found

    monkeypatch.setattr(portable, "_win_file_acl", fake_acl)
    monkeypatch.setattr(os, "name", "nt")
    return asked


def test_windows_credential_file_readable_only_by_owner_system_and_administrators_is_accepted(
        credential: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = on_windows_with(monkeypatch, PRIVATE)
    check_private(credential, "credential file")
    assert asked == [str(credential)]


def test_windows_credential_file_others_can_read_is_refused_naming_them(credential: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    users = allow("S-1-5-32-545", "BUILTIN\\Users", FILE_READ_DATA | 0x120000)
    everyone = allow("S-1-1-0", "Everyone", 0x1F01FF)
    on_windows_with(monkeypatch, acl(*PRIVATE.entries or (), users, everyone, users))
    with pytest.raises(TransportError) as caught:
        check_private(credential, "credential file")
    message = str(caught.value)
    monkeypatch.undo()
    assert f"credential file: {credential} may be read or changed by BUILTIN\\Users, Everyone " in message
    assert "(only its owner CONTOSO\\svc-reconcile, SYSTEM and Administrators may)" in message
    assert f'icacls "{credential}" /inheritance:r /grant:r "CONTOSO\\svc-reconcile:F"' in message
    assert "chmod" not in message


def test_windows_acl_entries_that_deny_or_grant_no_read_or_write_do_not_count(credential: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    denied = AccessEntry("S-1-1-0", "Everyone", False, 0x1F01FF)
    attributes_only = allow("S-1-5-11", "NT AUTHORITY\\Authenticated Users", 0x100080)  # SYNCHRONIZE | attributes
    on_windows_with(monkeypatch, acl(*PRIVATE.entries or (), denied, attributes_only))
    check_private(credential, "credential file")


def test_windows_file_without_an_access_list_is_open_to_everyone(credential: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    on_windows_with(monkeypatch, FileAcl(OWNER, "CONTOSO\\svc-reconcile", None))
    with pytest.raises(TransportError, match=r"may be read or changed by Everyone \(the file has no access list\)"):
        check_private(credential, "credential file")


def test_windows_access_list_that_cannot_be_read_is_an_error(credential: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    on_windows_with(monkeypatch, OSError(None, "Access is denied", str(credential), 5))
    with pytest.raises(TransportError, match=r"cannot read the access list of .*Access is denied"):
        check_private(credential, "credential file")


def test_posix_keeps_the_mode_check(credential: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(portable, "_win_file_acl", lambda path: pytest.fail("no access list off Windows"))
    with pytest.raises(TransportError, match=r"mode 0644.*chmod 600"):
        check_private(credential, "credential file")
    credential.chmod(0o600)
    check_private(credential, "credential file")


# -- paths and URLs with drive letters -------------------------------------------------------------


@pytest.mark.parametrize("name,expected", [
    ("certs\\edge.cer", "C:\\ops\\manifests\\certs\\edge.cer"),
    ("certs/edge.cer", "C:\\ops\\manifests\\certs\\edge.cer"),
    ("D:\\pki\\edge.cer", "D:\\pki\\edge.cer"),
    ("d:/pki/edge.cer", "d:\\pki\\edge.cer"),
    ("\\\\pki01\\certs\\edge.cer", "\\\\pki01\\certs\\edge.cer"),
    ("\\pki\\edge.cer", "C:\\pki\\edge.cer"),  # rooted without a drive: the manifest's drive
])
def test_manifest_relative_paths_on_windows(name: str, expected: str) -> None:
    assert beside(PureWindowsPath("C:\\ops\\manifests"), name) == PureWindowsPath(expected)


def test_manifest_relative_paths_on_posix() -> None:
    assert beside(PurePosixPath("/srv/ops"), "certs/edge.cer") == PurePosixPath("/srv/ops/certs/edge.cer")
    assert beside(PurePosixPath("/srv/ops"), "/etc/pki/edge.cer") == PurePosixPath("/etc/pki/edge.cer")


def test_sqlite_urls_with_drive_letters(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sqlite_url_path("var/lib/runs.db") == Path("/var/lib/runs.db")
    assert sqlite_url_path("C:/runs.db") == Path("/C:/runs.db")  # on POSIX a drive letter is just a name
    monkeypatch.setattr(store_base, "os", WindowsOs())
    found = [sqlite_url_path(p) for p in ("C:/ProgramData/reconcile/runs.db", "c:\\reconcile\\runs.db",
                                          "srv/runs.db")]
    assert found == [Path("C:/ProgramData/reconcile/runs.db"), Path("c:\\reconcile\\runs.db"), Path("/srv/runs.db")]


def test_a_windows_store_path_stays_a_path_not_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # on Linux "C:\\runs.db" is a file name in the working directory
    store = open_store("C:\\runs.db")
    try:
        assert store.path == Path("C:\\runs.db")  # type: ignore[attr-defined]
    finally:
        store.close()


def test_windows_state_dir_and_lock_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.cli import _parser

    args = _parser().parse_args(["run", "--state-dir", "C:\\ProgramData\\reconcile", "m.yaml"])
    assert str(args.state_dir) == "C:\\ProgramData\\reconcile"
    monkeypatch.delenv("RECONCILE_LOCK_DIR", raising=False)
    monkeypatch.setenv("PROGRAMDATA", "D:\\Data")
    monkeypatch.setattr(locks, "os", WindowsOs())
    found = default_lock_dir()
    assert found == Path("D:\\Data") / "reconciler" / "locks"


def test_lab_lock_identity_folds_case_where_the_file_system_does(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spelt = [TargetSpec(name=n, provider="skype", connection={"transport": "lab", "state": s, "host": "h"})
             for n, s in (("a", "Lab/State.json"), ("b", "lab/state.json"))]
    assert lock_identity(spelt[0]) != lock_identity(spelt[1])  # POSIX: two files
    monkeypatch.setattr(os.path, "normcase", lambda p: p.lower())  # ntpath.normcase, without its separators
    assert lock_identity(spelt[0]) == lock_identity(spelt[1])


# -- renaming over a file a reader has open -----------------------------------------------------------


def flaky_replace(monkeypatch: pytest.MonkeyPatch, failures: int) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    real = os.replace

    def fake(source: str, target: str) -> None:
        calls.append((source, target))
        if len(calls) <= failures:
            raise PermissionError(13, "The process cannot access the file because it is being used by another process")
        real(source, target)

    monkeypatch.setattr(os, "replace", fake)
    return calls


def test_windows_replace_retries_while_a_reader_has_the_file_open(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "new").write_text("new", encoding="utf-8")
    calls = flaky_replace(monkeypatch, failures=2)
    monkeypatch.setattr(os, "name", "nt")
    replace(tmp_path / "new", tmp_path / "metrics.prom", delay=0)
    monkeypatch.undo()
    assert len(calls) == 3 and (tmp_path / "metrics.prom").read_text(encoding="utf-8") == "new"


def test_windows_replace_gives_up_and_posix_never_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = flaky_replace(monkeypatch, failures=100)
    with pytest.raises(PermissionError):
        replace(tmp_path / "a", tmp_path / "b", delay=0)
    assert len(calls) == 1
    monkeypatch.setattr(os, "name", "nt")
    try:
        with pytest.raises(PermissionError):
            replace(tmp_path / "a", tmp_path / "b", attempts=4, delay=0)
    finally:
        monkeypatch.setattr(os, "name", "posix")
    assert len(calls) == 5


def test_the_metrics_textfile_is_written_through_the_retrying_replace(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.metrics import Metrics

    calls = flaky_replace(monkeypatch, failures=1)
    monkeypatch.setattr(portable, "on_windows", lambda: True)
    monkeypatch.setattr(portable, "REPLACE_DELAY", 0)
    Metrics().write_textfile(tmp_path / "reconcile.prom")
    assert len(calls) == 2 and "reconcile_up" in (tmp_path / "reconcile.prom").read_text(encoding="utf-8")


# -- graceful stop on console control events ---------------------------------------------------------


class FakeConsole:
    """Stands in for SetConsoleCtrlHandler: keeps the registered handler, and whether it was removed."""

    def __init__(self) -> None:
        self.handler: Callable[[int], bool] | None = None
        self.removed = False

    def register(self, handler: Callable[[int], bool]) -> Callable[[], None]:
        self.handler = handler

        def remove() -> None:
            self.removed = True

        return remove


def test_console_events_ask_for_a_stop_and_ending_events_wait_for_the_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    console = FakeConsole()
    monkeypatch.setattr(portable, "_win_console_handler", console.register)
    monkeypatch.setattr(os, "name", "nt")
    told: list[str] = []
    finished = threading.Event()
    with console_stop(told.append, finished, grace=30):
        monkeypatch.setattr(os, "name", "posix")
        assert console.handler is not None
        assert console.handler(CTRL_C_EVENT) is True and console.handler(CTRL_BREAK_EVENT) is True
        assert told == ["CTRL_C_EVENT", "CTRL_BREAK_EVENT"]
        answered: list[float] = []
        waiting = threading.Thread(target=lambda: answered.append(console.handler(CTRL_SHUTDOWN_EVENT) and
                                                                  time.monotonic()))
        waiting.start()
        time.sleep(0.2)
        assert not answered and told[-1] == "CTRL_SHUTDOWN_EVENT"  # held: Windows would end the process on return
        done = time.monotonic()
        finished.set()
        waiting.join(10)
        assert answered and answered[0] >= done
    assert console.removed


def test_ending_events_give_up_waiting_after_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    console = FakeConsole()
    monkeypatch.setattr(portable, "_win_console_handler", console.register)
    monkeypatch.setattr(os, "name", "nt")
    with console_stop(lambda name: None, threading.Event(), grace=0.05):
        monkeypatch.setattr(os, "name", "posix")
        assert console.handler is not None and console.handler(CTRL_CLOSE_EVENT) is True


def test_off_windows_no_console_handler_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(portable, "_win_console_handler", lambda handler: pytest.fail("registered off Windows"))
    with console_stop(lambda name: None, threading.Event()):
        pass


def test_reconcile_run_stops_after_its_cycle_on_a_console_close(estate: Estate,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    console = FakeConsole()
    answered: list[bool] = []
    returned: list[bool] = []

    def register(handler: Callable[[int], bool]) -> Callable[[], None]:
        remove = console.register(handler)
        # The window is closed while the first cycle runs: Windows calls the handler on a thread of its own.
        threading.Thread(target=lambda: answered.append(handler(CTRL_CLOSE_EVENT) and bool(returned))).start()
        return remove

    monkeypatch.setattr(portable, "_win_console_handler", register)
    monkeypatch.setattr(portable, "on_windows", lambda: True)
    result = estate.run("run", "--var", f"lab={estate.url}", "--interval", "1h", "--log-format", "json",
                        str(ON_PREMISES))
    returned.append(True)
    deadline = time.monotonic() + 10
    while not answered and time.monotonic() < deadline:
        time.sleep(0.01)
    assert result.code == 0, result.err
    events = [json.loads(line) for line in result.out.splitlines() if line.startswith("{")]
    assert any(e["event"] == "stop" and e["signal"] == "CTRL_CLOSE_EVENT" for e in events)
    assert not any(e["event"] == "cycle_sleep" for e in events)  # no second cycle was waited for
    assert console.removed
    assert answered == [True]  # the handler returned (letting Windows end the process) only after the run did


# -- which PowerShell -------------------------------------------------------------------------------


def test_snapins_choose_windows_powershell(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_executable(["Microsoft.Exchange.Management.PowerShell.SnapIn"]) == "powershell.exe"
    assert default_executable(["Microsoft.Exchange.Management.PowerShell.E2010"]) == "powershell.exe"
    assert default_executable(["SkypeForBusiness"]) == "pwsh"
    assert default_executable() == "pwsh"
    monkeypatch.setattr("shutil.which", lambda name: "C:\\Program Files\\PowerShell\\7\\pwsh.exe")
    monkeypatch.setattr(os, "name", "nt")
    with_pwsh = [default_executable(["SkypeForBusiness"]), default_executable(["x.PowerShell.SnapIn"])]
    monkeypatch.setattr("shutil.which", lambda name: None)
    without_pwsh = default_executable(["SkypeForBusiness"])
    monkeypatch.undo()
    assert with_pwsh == ["pwsh", "powershell.exe"] and without_pwsh == "powershell.exe"


def test_a_target_naming_a_snapin_starts_windows_powershell_unless_it_names_an_executable() -> None:
    def transport(**connection: object) -> PwshTransport:
        return PwshTransport.from_target(TargetSpec(name="ex", provider="exchange",
                                                    connection={"transport": "pwsh", **connection}))

    assert transport(modules=["Microsoft.Exchange.Management.PowerShell.SnapIn"]).argv == ("powershell.exe",)
    assert transport(modules=["SkypeForBusiness"]).argv == ("pwsh",)
    assert transport(modules=["Microsoft.Exchange.Management.PowerShell.SnapIn"],
                     executable="C:/Tools/pwsh.exe").argv == ("C:/Tools/pwsh.exe",)
