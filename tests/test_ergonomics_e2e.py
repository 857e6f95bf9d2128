"""Everyday ergonomics, end to end: variables from files and the environment, Windows encodings and tabs named
as such, the metrics bind address."""

from __future__ import annotations

import json

import pytest

from tests.e2e import ON_PREMISES, Estate


def lab_line(estate: Estate) -> str:
    return f"lab: {estate.url}\n"


def test_var_file_and_environment_set_variables_with_var_winning(estate: Estate,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    values = estate.write("lab.yaml", "# the lab's address\n" + lab_line(estate))
    plan = estate.run("plan", "--var-file", str(values), str(ON_PREMISES))
    assert plan.code == 0, plan.err
    assert "to add" in plan.out

    monkeypatch.setenv("RECONCILE_VAR_lab", estate.url)  # as Terraform's TF_VAR_lab
    monkeypatch.setenv("RECONCILE_VAR_undeclared", "ignored")  # a variable the manifest does not declare
    assert estate.run("plan", str(ON_PREMISES)).code == 0
    monkeypatch.delenv("RECONCILE_VAR_lab")
    monkeypatch.setenv("RECONCILE_VAR_LAB", estate.url)  # Windows keeps environment names in upper case
    assert estate.run("plan", str(ON_PREMISES)).code == 0

    # Precedence: the environment, then each --var-file in order, then --var.
    monkeypatch.setenv("RECONCILE_VAR_LAB", "http://127.0.0.1:9/env")
    wrong = estate.write("wrong.yaml", "lab: http://127.0.0.1:9/file\n")
    assert estate.run("plan", "--var-file", str(wrong), "--var-file", str(values), str(ON_PREMISES)).code == 0
    assert estate.run("plan", "--var-file", str(wrong), "--var", f"lab={estate.url}", str(ON_PREMISES)).code == 0
    saved = estate.run("plan", "--var-file", str(values), "--json", str(ON_PREMISES))
    assert json.loads(saved.out)["variables"] == {"lab": estate.url}  # what a saved plan is applied with


def test_a_bad_var_file_is_one_clear_line(estate: Estate) -> None:
    cases = {
        "list.yaml": ("- lab\n", "expected a mapping of variable names to values"),
        "nested.yaml": ("lab: {a: 1}\n", "lab: a variable's value is text, a number or true/false"),
        "tab.yaml": ("lab:\n\tx: 1\n", "indent with spaces, not tabs"),
    }
    for name, (text, message) in cases.items():
        run = estate.run("validate", "--var-file", str(estate.write(name, text)), str(ON_PREMISES))
        assert run.code == 1 and message in run.err, run.err
    utf16 = estate.root / "utf16.yaml"
    utf16.write_bytes(lab_line(estate).encode("utf-16"))
    run = estate.run("validate", "--var-file", str(utf16), str(ON_PREMISES))
    assert run.code == 1 and "UTF-16" in run.err and "save it as UTF-8" in run.err
    missing = estate.run("validate", "--var-file", "nowhere.yaml", str(ON_PREMISES))
    assert missing.code == 1 and "--var-file nowhere.yaml" in missing.err


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_manifest_says_to_save_it_as_utf8(estate: Estate, encoding: str) -> None:
    """Notepad's "Unicode" and PowerShell 5's `>` write UTF-16 (with a BOM; without one from some tools)."""
    manifest = estate.root / "m.yaml"
    manifest.write_bytes(ON_PREMISES.read_text(encoding="utf-8").encode(encoding))
    run = estate.run("validate", str(manifest))
    assert run.code == 1
    assert f"{manifest}:1: the manifest is UTF-16 text" in run.err and "save it as UTF-8" in run.err
    assert "Traceback" not in run.err


def test_a_tab_in_a_manifest_says_to_indent_with_spaces(estate: Estate) -> None:
    text = ON_PREMISES.read_text(encoding="utf-8").replace("    provider: skype\n", "\tprovider: skype\n", 1)
    run = estate.run("validate", str(estate.write("m.yaml", text)))
    assert run.code == 1 and "indent" in run.err and "spaces, not tabs" in run.err


def test_metrics_bind_address(estate: Estate) -> None:
    """`--metrics-bind` chooses the address (a container binds all of them); without --metrics-port it is refused."""
    run = estate.reconcile("run", ON_PREMISES, "--once", "--metrics-port", "0", "--metrics-bind", "127.0.0.2",
                           "--log-format", "json")
    assert run.code == 0, run.err
    url = next(json.loads(line)["url"] for line in run.out.splitlines() if json.loads(line)["event"] == "metrics")
    assert url.startswith("http://127.0.0.2:")
    alone = estate.reconcile("run", ON_PREMISES, "--once", "--metrics-bind", "0.0.0.0")
    assert alone.code == 1 and "give --metrics-port too" in alone.err
    unknown = estate.reconcile("run", ON_PREMISES, "--once", "--metrics-port", "0", "--metrics-bind",
                               "no-such-host.invalid")
    assert unknown.code == 1 and "cannot serve metrics on no-such-host.invalid" in unknown.err



def on_a_terminal(estate: Estate, *argv: str, env: dict[str, str] | None = None) -> str:
    """`reconcile ARGV` with its stdout on a pseudo-terminal, as a person sees it."""
    import os
    import pty
    import subprocess
    import sys

    from tests.e2e import REPO

    leader, follower = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    process = subprocess.Popen([sys.executable, "-m", "reconciler", *argv], cwd=estate.root, stdout=follower,
                               stderr=subprocess.PIPE, env={**environ, "PYTHONPATH": str(REPO), "TERM": "xterm",
                                                            **(env or {})})
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) in (0, 2), process.stderr.read() if process.stderr else ""
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(not hasattr(__import__("os"), "openpty"), reason="needs a pseudo-terminal (POSIX)")
def test_colour_on_a_terminal_only(estate: Estate) -> None:
    plan = estate.reconcile("plan", ON_PREMISES, "--out", "plan.json")
    assert plan.code == 0 and "\x1b[" not in plan.out  # captured (piped): never coloured
    coloured = on_a_terminal(estate, "show", "plan.json")
    assert "\x1b[32m+\x1b[0m" in coloured and "\x1b[31m-\x1b[0m" in coloured  # symbols
    assert "\x1b[1mPlan: " in coloured  # the summary
    assert "\x1b[" not in on_a_terminal(estate, "show", "plan.json", env={"NO_COLOR": "1"})
    assert "\x1b[" not in on_a_terminal(estate, "show", "--no-color", "plan.json")
    assert "\x1b[" not in on_a_terminal(estate, "show", "plan.json", env={"TERM": "dumb"})


def test_did_you_mean_for_fields_kinds_targets_and_variables(estate: Estate) -> None:
    """PowerShell habits (PascalCase) get the field's real spelling; typos get the nearest name."""
    manifest = estate.write("m.yaml", """\
apiVersion: reconciler/v1
variables:
  exchangeHost: https://mail.contoso.com
targets:
  litware-pool:
    provider: skype
    connection: {transport: lab, host: atl-cs-001}
resources:
  - target: litware-pool
    kind: PartnerApplication
    identity: microsoft.exchange
    MetadataUrl: ${exchangeHost}/autodiscover/metadata/json/1
    ApplicationTrustLevel: Full
  - target: litware-pool
    kind: PartnerApplicaton
    identity: x
  - target: litware-pol
    kind: OAuthServer
    identity: y
  - target: litware-pool
    kind: OAuthServer
    identity: z
    metadataUrl: ${exchangeHst}/x
""")
    run = estate.run("validate", str(manifest))
    assert run.code == 1
    for expected in ("MetadataUrl: unknown field 'MetadataUrl'", "did you mean 'metadataUrl'?",
                     "did you mean 'applicationTrustLevel'?", "did you mean 'PartnerApplication'?",
                     "no target named 'litware-pol' (defined: litware-pool); did you mean 'litware-pool'?",
                     "undefined variable 'exchangeHst' (defined: exchangeHost); did you mean 'exchangeHost'?"):
        assert expected in run.err, (expected, run.err)


def test_a_line_per_target_as_discovery_and_apply_finish(estate: Estate) -> None:
    """On stderr, so the plan (or its JSON) on stdout stays as it was; one line per target as each finishes."""
    run = estate.reconcile("apply", ON_PREMISES, "--auto-approve")
    assert run.code == 0, run.err
    lines = [line.strip() for line in run.err.splitlines()]
    assert any(line.startswith("read litware-pool: ") and " object(s) in " in line for line in lines)
    assert any(line.startswith("read litware-exchange: ") for line in lines)
    assert any(line.startswith("applied litware-pool: 4 change(s), 0 failed") for line in lines)
    assert any(line.startswith("applied litware-exchange: ") and "1 handler(s) ran" in line for line in lines)
    assert "  read litware-pool: " not in run.out
    plan = estate.reconcile("plan", ON_PREMISES, "--json")
    assert json.loads(plan.out)["format_version"]  # stdout is the JSON alone
