"""The deployment examples in docs/examples use only commands and options that exist."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest
import yaml

from reconciler.cli import _parser
from tests.e2e import REPO

EXAMPLES = REPO / "docs" / "examples"


def parse(argv: list[str]) -> None:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on an unknown option
        pytest.fail(f"`reconcile {' '.join(argv)}` is not a valid command line ({exc})")
    assert getattr(args, "func", None) is not None


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((EXAMPLES / name).read_text(encoding="utf-8"))
    return parser


def test_systemd_service_and_timer() -> None:
    service = unit("reconcile.service")
    command = shlex.split(service["Service"]["ExecStart"])
    assert Path(command[0]).name == "reconcile"
    parse(command[1:])
    assert service["Service"]["Type"] == "oneshot" and "2" in service["Service"]["SuccessExitStatus"]
    timer = unit("reconcile.timer")
    assert timer["Timer"]["OnUnitActiveSec"] == "15min" and timer["Install"]["WantedBy"] == "timers.target"


def test_kubernetes_cronjob() -> None:
    doc = yaml.safe_load((EXAMPLES / "cronjob.yaml").read_text(encoding="utf-8"))
    assert doc["kind"] == "CronJob" and doc["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    parse(container["args"])


def test_ci_workflow_commands() -> None:
    doc = yaml.safe_load((EXAMPLES / "github-workflow.yml").read_text(encoding="utf-8"))
    commands = [step["run"] for job in doc["jobs"].values() for step in job["steps"]
                if str(step.get("run", "")).startswith("reconcile ")]
    assert len(commands) >= 4
    for command in commands:
        parse(shlex.split(command.split("||")[0])[1:])
