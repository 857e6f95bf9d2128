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
    pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    parse(container["args"])
    # it exports metrics into a mounted volume, and mounts a krb5.conf for Kerberos to Skype and Exchange
    metrics = Path(container["args"][container["args"].index("--metrics-file") + 1])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"] for v in pod["volumes"]}
    assert mounts.get(str(metrics.parent)) in volumes
    assert mounts.get("/etc/krb5.conf") in volumes


def test_the_container_image_installs_the_winrm_and_kerberos_extras_and_the_kerberos_client() -> None:
    dockerfile = (EXAMPLES / "Dockerfile").read_text(encoding="utf-8")
    assert "'/src[winrm,kerberos]'" in dockerfile and "krb5-user" in dockerfile
    from importlib.metadata import distribution

    extras = distribution("s2s-trust-reconciler").metadata.get_all("Provides-Extra") or []
    assert {"winrm", "kerberos"} <= set(extras)


def test_the_container_image_installs_the_tested_versions() -> None:
    """The image installs with constraints/tested.txt, whose pins lie within the ranges pyproject.toml declares."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement

    dockerfile = (EXAMPLES / "Dockerfile").read_text(encoding="utf-8")
    assert "-c /src/constraints/tested.txt" in dockerfile
    pins = {}
    for line in (EXAMPLES.parent.parent / "constraints" / "tested.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    declared = [Requirement(r) for r in distribution("s2s-trust-reconciler").requires or []]
    checked = 0
    for requirement in declared:
        pin = pins.get(requirement.name.lower().replace("_", "-"))
        if pin is not None and requirement.marker is None:
            assert requirement.specifier.contains(pin, prereleases=True), (requirement, pin)
            checked += 1
    assert checked >= 5


def test_ci_workflow_commands() -> None:
    doc = yaml.safe_load((EXAMPLES / "github-workflow.yml").read_text(encoding="utf-8"))
    commands = [step["run"] for job in doc["jobs"].values() for step in job["steps"]
                if str(step.get("run", "")).startswith("reconcile ")]
    assert len(commands) >= 4
    for command in commands:
        parse(shlex.split(command.split("||")[0])[1:])


TASK = "{http://schemas.microsoft.com/windows/2004/02/mit/task}"


def windows_args(text: str) -> list[str]:
    """A Windows command line's arguments (backslashes are path separators there, never escapes)."""
    return shlex.split(text, posix=False)


def test_windows_task_scheduler_task() -> None:
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.parse(EXAMPLES / "reconcile-task.xml").getroot()  # well-formed, or this raises
    assert root.tag == f"{TASK}Task" and root.get("version") == "1.2"
    (command,) = root.iter(f"{TASK}Command")
    assert command.text is not None and command.text.endswith("\\Scripts\\reconcile.exe")
    (arguments,) = root.iter(f"{TASK}Arguments")
    assert arguments.text is not None
    argv = windows_args(arguments.text)
    parse(argv)
    args = _parser().parse_args(argv)
    assert args.func.__name__ == "cmd_run" and args.once  # Task Scheduler ends a task without notice: one cycle
    assert str(args.state_dir).startswith("C:\\") and args.store.startswith("sqlite:///C:/")
    assert root.findtext(f"{TASK}Settings/{TASK}MultipleInstancesPolicy") == "IgnoreNew"
    assert root.findtext(f"{TASK}Triggers/{TASK}TimeTrigger/{TASK}Repetition/{TASK}Interval") == "PT15M"
    (action,) = root.iter(f"{TASK}Actions")
    assert action.get("Context") == root.find(f"{TASK}Principals/{TASK}Principal").get("id")  # type: ignore[union-attr]


def test_windows_powershell_quick_start() -> None:
    text = (EXAMPLES / "quickstart.ps1").read_text(encoding="utf-8")
    assert text.isascii()  # Windows PowerShell 5.1 reads a BOM-less script as the ANSI code page
    assert "pip install s2s-trust-reconciler" in text and "pip install reconciler" not in text
    values = {"$Manifest": "C:\\ProgramData\\reconcile\\manifests\\estate.yaml", "$Root": "C:\\ProgramData\\reconcile"}
    invocations = []
    for line in text.splitlines():
        line = line.strip().removeprefix("#").strip()
        if not line.startswith("& $reconcile "):
            continue
        for name, value in values.items():
            line = line.replace(name, value)
        invocations.append(line)
        argv = [a.strip('"') for a in windows_args(line)[2:]]
        if argv != ["--version"]:
            parse(argv)
    assert len(invocations) >= 4 and any(" apply " in i for i in invocations)
    assert 'schtasks /create /xml "$PSScriptRoot\\reconcile-task.xml"' in text
    assert (EXAMPLES / "reconcile-task.xml").is_file()


def exported_metric_names() -> set[str]:
    """Every series name reconcile's metrics can hold (one run of each kind observed, histogram suffixes included)."""
    from reconciler.metrics import Metrics

    metrics = Metrics()
    metrics.observe_run(command="run", result="applied", duration_seconds=1.0, finished_at=1.0,
                        drifted={"t": 1}, success=True)
    return {line.split("{")[0].split(" ")[0] for line in metrics.render().splitlines() if not line.startswith("#")}


def metric_names(expr: str) -> set[str]:
    import re

    return set(re.findall(r"\breconcile_[a-z_]+", expr))


def test_prometheus_alert_rules_use_only_exported_metrics() -> None:
    doc = yaml.safe_load((EXAMPLES / "prometheus-alerts.yaml").read_text(encoding="utf-8"))
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert {"ReconcileDrifted", "ReconcileLastSuccessTooOld"} <= names  # drifted > 0, last success too old
    known = exported_metric_names()
    for rule in rules:
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in ("warning", "critical")
        used = metric_names(rule["expr"])
        assert used and used <= known, (rule["alert"], used - known)


def test_grafana_dashboard_is_valid_and_uses_only_exported_metrics() -> None:
    import json

    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text(encoding="utf-8"))
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    known = exported_metric_names()
    cells: set[tuple[int, int]] = set()
    for p in panels:
        assert p["type"] in ("stat", "timeseries") and p["datasource"]["type"] == "prometheus"
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        columns, rows = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        mine = {(x, y) for x in columns for y in rows}
        assert not mine & cells, f"panel {p['title']} overlaps another"
        cells |= mine
        for target in p["targets"]:
            used = metric_names(target["expr"])
            assert used and used <= known, (p["title"], used - known)
    assert any("reconcile_drifted_resources" in t["expr"] for p in panels for t in p["targets"])
