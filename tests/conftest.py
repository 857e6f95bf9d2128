"""Shared fixtures: a lab state file and a running lab server (reused by the end-to-end tests)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.lab.admin import init_lab
from reconciler.lab.estate import default_estate
from reconciler.lab.server import LabServer


@pytest.fixture(scope="session", autouse=True)
def _one_lock_directory_per_test_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tests' applies lock the lab's systems in a directory of this test run (inherited by the processes it
    starts), not the machine-wide one: two test runs on one machine (CI, a developer's second checkout) must not
    wait on each other's lab hosts. Tests of the machine-wide default set or clear the variable themselves."""
    import os

    from reconciler.locks import LOCK_DIR_ENV

    previous = os.environ.get(LOCK_DIR_ENV)
    os.environ[LOCK_DIR_ENV] = str(tmp_path_factory.mktemp("locks"))
    yield
    if previous is None:
        os.environ.pop(LOCK_DIR_ENV, None)
    else:
        os.environ[LOCK_DIR_ENV] = previous


@pytest.fixture(scope="session", autouse=True)
def _lab_reads_checked() -> Iterator[None]:
    """Every lab round trip of the tests (and of the processes they start) that reads only checks that it changed
    nothing its platform does not declare: the lab keeps no copy of the state for such a batch otherwise."""
    import os

    from reconciler.lab.transport import CHECK_READS_ENV

    previous = os.environ.get(CHECK_READS_ENV)
    os.environ[CHECK_READS_ENV] = "1"
    yield
    if previous is None:
        os.environ.pop(CHECK_READS_ENV, None)
    else:
        os.environ[CHECK_READS_ENV] = previous


@pytest.fixture(scope="session")
def lab_default_estate() -> dict[str, Any]:
    """The default estate, generated once per session (RSA key generation is the slow part)."""
    return default_estate()


@pytest.fixture
def lab_state(tmp_path: Path, lab_default_estate: dict[str, Any]) -> Path:
    """A state file in tmp_path initialised with the default estate."""
    path = tmp_path / "lab" / "state.json"
    init_lab(path, estate=copy.deepcopy(lab_default_estate))
    return path


@pytest.fixture
def lab_server(lab_state: Path) -> Iterator[LabServer]:
    """A running lab server for `lab_state` on 127.0.0.1 and a free port (`.base_url`)."""
    with LabServer(lab_state, host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
def estate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           lab_default_estate: dict[str, Any]) -> Iterator[Any]:
    """The default lab estate in the test's working directory (as `make demo` has it), served on a free port."""
    from tests.e2e import make_estate

    yield from make_estate(tmp_path, monkeypatch, capsys, lab_default_estate)
