"""Helpers for end-to-end tests: the CLI run in-process against a lab started for the test."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main
from reconciler.lab.admin import init_lab
from reconciler.lab.estate import LAB_CLIENT_SECRET
from reconciler.lab.server import LabServer
from reconciler.lab.state import LabStore

REPO = Path(__file__).resolve().parent.parent
ON_PREMISES = REPO / "manifests" / "on-premises.yaml"
CROSS_PREMISES = REPO / "manifests" / "cross-premises.yaml"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


@dataclass
class Estate:
    """A lab estate in the test's working directory, its metadata served on a free loopback port."""

    root: Path
    state: Path
    url: str
    capsys: pytest.CaptureFixture[str]

    def run(self, *argv: str | Path) -> Run:
        self.capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = self.capsys.readouterr()
        assert "Traceback" not in captured.err
        return Run(code, captured.out, captured.err)

    def reconcile(self, command: str, manifest: Path, *extra: str) -> Run:
        """The CLI on a manifest; `--var lab=<this lab>` when the manifest declares `lab` (an undeclared --var
        is an error)."""
        declares_lab = "\n  lab:" in Path(manifest).read_text(encoding="utf-8")
        lab = ("--var", f"lab={self.url}") if declares_lab else ()
        return self.run(command, *lab, *extra, manifest)

    def lab(self, *argv: str) -> Run:
        return self.run("lab", *argv, "--state", str(self.state))

    def snapshot(self) -> dict[str, Any]:
        return dict(LabStore(self.state).read())

    def objects(self, host: str, kind: str) -> Any:
        return self.snapshot()["hosts"][host]["objects"][kind]

    def app(self, host: str, identity: str) -> dict[str, Any] | None:
        for obj in self.objects(host, "PartnerApplication"):
            if obj["Identity"].lower() == identity.lower():
                return dict(obj)
        return None

    def round_trips(self, host: str) -> int:
        return int(self.snapshot()["hosts"][host]["roundTrips"])

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text, encoding="utf-8")
        return path


def make_estate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                default_estate: dict[str, Any]) -> Iterator[Estate]:
    monkeypatch.chdir(tmp_path)
    # The lab tenant's client secret, from the environment as in production (never in the manifest).
    monkeypatch.setenv("RECONCILE_GRAPH_CLIENT_SECRET", LAB_CLIENT_SECRET)
    state = tmp_path / ".lab" / "state.json"
    init_lab(state, estate=copy.deepcopy(default_estate))
    with LabServer(state, host="127.0.0.1", port=0) as server:
        yield Estate(tmp_path, state, server.base_url, capsys)


def spawn(estate: Estate, *args: str) -> subprocess.Popen[str]:
    """`reconcile <args>` as a process of its own in the estate's folder (output captured)."""
    return subprocess.Popen([sys.executable, "-m", "reconciler", *args], cwd=estate.root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


@contextlib.contextmanager
def loop_process(estate: Estate, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`reconcile <args>` (a `run` loop) for the block, which ends it with `stop`; killed if the block fails first."""
    process = spawn(estate, *args)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stop(process: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Ask a loop to stop as a service manager does (SIGTERM) and wait for it: its stdout and stderr."""
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=timeout)
    return out, err
