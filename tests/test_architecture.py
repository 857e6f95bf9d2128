"""The direction of flow is enforced, not just drawn: each layer imports only the layers below it.

manifest -> desired model -> discovery -> planner -> plan -> executor -> providers -> transports.
The planner knows no provider module; providers know no planner, executor or CLI; the lab (an
emulated remote system) knows nothing of the tool that drives it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reconciler"

FORBIDDEN = {
    "reconciler.planner": ["reconciler.providers.skype", "reconciler.transports.", "reconciler.lab",
                           "reconciler.executor", "reconciler.cli", "reconciler.runner"],
    "reconciler.plan": ["reconciler.providers.skype", "reconciler.lab", "reconciler.executor", "reconciler.cli"],
    "reconciler.model": ["reconciler."],
    "reconciler.changes": ["reconciler.providers", "reconciler.planner", "reconciler.lab"],
    "reconciler.providers": ["reconciler.planner", "reconciler.executor", "reconciler.runner", "reconciler.cli",
                             "reconciler.lab", "reconciler.manifest"],
    "reconciler.transports": ["reconciler.providers", "reconciler.planner", "reconciler.executor",
                              "reconciler.cli", "reconciler.lab", "reconciler.manifest"],
    "reconciler.manifest": ["reconciler.planner", "reconciler.executor", "reconciler.runner", "reconciler.cli",
                            "reconciler.lab", "reconciler.providers.skype"],
    "reconciler.executor": ["reconciler.providers.skype", "reconciler.lab", "reconciler.cli", "reconciler.manifest"],
    "reconciler.lab": ["reconciler.providers", "reconciler.planner", "reconciler.executor", "reconciler.runner",
                       "reconciler.manifest", "reconciler.plan", "reconciler.changes"],
}


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith("reconciler")}


@pytest.mark.parametrize("name,path", modules(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_layer_imports_only_downwards(name: str, path: Path) -> None:
    for layer, forbidden in FORBIDDEN.items():
        if name == layer or name.startswith(layer + "."):
            bad = sorted(i for i in imports_of(path) for f in forbidden
                         if (i == f or i.startswith(f if f.endswith(".") else f + ".") or i == f.rstrip("."))
                         and not i.startswith(name))
            assert not bad, f"{name} must not import {bad}"


def test_the_check_sees_a_violation() -> None:
    assert "reconciler.providers.base" in imports_of(PACKAGE / "providers" / "skype.py")
