"""The package is usable as installed: console script, `python -m`, and an up-to-date schema file."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

from reconciler import __version__
from reconciler.manifest import build_schema
from reconciler.providers.base import Registry
from tests.e2e import ON_PREMISES, REPO, Estate


def test_python_dash_m_runs_the_cli() -> None:
    run = subprocess.run([sys.executable, "-m", "reconciler", "--version"], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0
    assert run.stdout.strip() == f"reconcile {__version__}"


def test_console_script_is_installed() -> None:
    script = shutil.which("reconcile", path=str(Path(sys.executable).parent))
    assert script is not None
    run = subprocess.run([script, "validate", str(ON_PREMISES)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "valid" in run.stdout


def test_committed_schema_matches_the_installed_providers() -> None:
    committed = json.loads((REPO / "schemas" / "manifest.schema.json").read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(build_schema(Registry.from_entry_points()))), \
        "schemas/manifest.schema.json is out of date: run `make schema`"
    Draft202012Validator.check_schema(committed)


def test_entry_points_register_the_skype_provider_and_lab_transport() -> None:
    registry = Registry.from_entry_points()
    assert set(registry.provider("skype").kinds) == {"OAuthConfiguration", "OAuthServer", "PartnerApplication",
                                                           "OAuthCertificate"}
    assert "lab" in registry.transports


def test_apply_on_a_terminal_asks_and_proceeds_only_on_yes(estate: Estate) -> None:
    def apply_typing(answer: str) -> tuple[int, str]:
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "reconciler", "apply", "--var", f"lab={estate.url}",
                                 str(ON_PREMISES)], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd=estate.root, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        os.close(slave)
        os.write(master, answer.encode() + b"\n")
        out, _ = proc.communicate(timeout=60)
        os.close(master)
        return proc.returncode, out

    code, out = apply_typing("no")
    assert code == 1 and "Only 'yes' will be accepted" in out and "Apply cancelled" in out
    assert estate.app("atl-cs-001", "app") is not None
    code, out = apply_typing("yes")
    assert code == 0, out
    assert "Apply complete" in out
    assert estate.app("atl-cs-001", "app") is None


def test_the_distribution_has_its_own_name_and_its_dependencies_allow_what_the_tests_run_against() -> None:
    from importlib.metadata import distribution, version

    from packaging.requirements import Requirement

    dist = distribution("s2s-trust-reconciler")  # `reconciler` and `reconcile` on PyPI are other projects
    assert dist.version == __version__
    assert [e.value for e in dist.entry_points if e.group == "console_scripts"] == ["reconciler.cli:run"]
    runtime = [Requirement(r) for r in dist.requires or [] if "extra ==" not in r]
    assert {r.name for r in runtime} >= {"pyyaml", "jsonschema", "httpx", "cryptography", "filelock"}
    for requirement in runtime:
        assert any(s.operator == "<" for s in requirement.specifier), f"{requirement} has no upper bound"
        assert requirement.specifier.contains(version(requirement.name)), \
            f"{requirement}: the tests run against {version(requirement.name)}, outside it"
