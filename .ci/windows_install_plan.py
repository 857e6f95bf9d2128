"""CI: can `pip install s2s-trust-reconciler[winrm,credssp,postgresql]` succeed on 64-bit Windows with Python 3.11?

Asks pip for a win_amd64 install plan of this project (wheels only: a Windows admin has no compiler), then
checks every dependency, with the extras, resolved to a wheel that installs on win_amd64. This resolves
names and wheels; it does not run anything on Windows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

# Not kerberos: on Windows pyspnego uses SSPI and needs nothing more (gssapi and krb5 carry a
# sys_platform != "win32" marker), but pip evaluates markers for this machine, not the target platform, so
# the plan would ask for krb5, which has no Windows wheel.
EXTRAS = ("winrm", "credssp", "postgresql")
WINDOWS_PLATFORMS = ("win_amd64", "any")


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as target:
        run = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--report", "-",
             "--only-binary=:all:", "--platform", "win_amd64", "--python-version", "3.11", "--target", target,
             f".[{','.join(EXTRAS)}]"],
            cwd=root, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        print(run.stderr, file=sys.stderr)
        print("win_amd64 install plan: pip could not resolve one (see above)", file=sys.stderr)
        return 1
    report = json.loads(run.stdout)
    planned: dict[str, str] = {}
    problems: list[str] = []
    ours = None
    for item in report["install"]:
        name = canonicalize_name(item["metadata"]["name"])
        url = item["download_info"]["url"]
        if name == "s2s-trust-reconciler":
            ours = item["metadata"]
            continue
        filename = url.rsplit("/", 1)[-1]
        planned[name] = filename
        if not filename.endswith(".whl"):
            problems.append(f"{name}: not a wheel ({filename})")
            continue
        tags = parse_wheel_filename(filename)[3]
        if not any(tag.platform in WINDOWS_PLATFORMS for tag in tags):
            problems.append(f"{name}: {filename} is not for win_amd64")
    if ours is None:
        problems.append("the plan does not install s2s-trust-reconciler itself")
    else:
        for text in ours.get("requires_dist", []):
            requirement = Requirement(text)
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra, "sys_platform": "win32", "platform_system": "Windows",
                                             "os_name": "nt", "python_version": "3.11"}) for extra in ("", *EXTRAS))
            if wanted and canonicalize_name(requirement.name) not in planned:
                problems.append(f"{requirement}: not in the plan")
    for name, filename in sorted(planned.items()):
        print(f"  {name:28} {filename}")
    if problems:
        print("win_amd64 install plan: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"win_amd64 install plan: {len(planned)} dependencies resolve to Windows wheels (Python 3.11)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
