"""Bad input that used to pass validate and crash later (or print a traceback): one clear line each, exit 1.

Each manifest case is a file under tests/fixtures/bad_input/ and goes through validate, plan and
apply: the first line names file:line, the field path and what was expected. Then the command-line
mistakes (files, ports, numbers, options), the secret pasted into clientSecretEnv (never echoed,
stored or shown by history), and a property: random text in identities and fields either loads or
is a ManifestError with a location, through validate and plan against the lab.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.cli import main
from reconciler.errors import ManifestError, MetricsFileError
from reconciler.manifest import load_manifest
from reconciler.manifest.text import MAX_VALUE
from reconciler.manifest.variables import Variables, resolve
from reconciler.providers.base import Registry
from reconciler.store.base import RunRecord
from reconciler.store.sqlite import SQLiteRunStore
from tests.e2e import Estate

FIXTURES = Path(__file__).parent / "fixtures" / "bad_input"
SURROGATE = "contains a lone surrogate (U+D800) at character 19: it is not Unicode text"
NOT_A_NAME = ("targets.tenant.connection.clientSecretEnv: must name an environment variable "
              "(the value given is not a name; it was not shown)")

CASES = {
    "lone_surrogate_identity": ":12: resources[0].identity: " + SURROGATE,
    "lone_surrogate_key": ":15: resources[0].enabled\\udfff: the key contains a lone surrogate (U+DFFF)",
    "control_character": ":15: resources[0].realm: contains the control character U+0007 at character 8 "
                         "(only tab and line breaks are allowed)",
    "control_character_in_url": ":13: resources[0].metadataUrl: contains the control character U+0001",
    "url_too_long": ":13: resources[0].metadataUrl: is a URL of 3,000 characters; at most 2,048 are allowed",
    "url_httpx_cannot_carry": ":13: resources[0].metadataUrl: is not a URL that HTTP can carry "
                              "(Invalid IDNA hostname",
    "variables_too_big": ":11: variables.v6: variable 'v6' expands to 262,144 characters through ${v5}; "
                         "at most 65,536 are allowed",
    "variables_too_deep": ":14: variables.v9: variable 'v9' nests variables more than 8 levels deep "
                          "(v9 -> v8 -> v7",
    "yaml_too_deep": ":6: targets.pool.connection[0][0]",
    "null": ":2: expected a mapping with apiVersion, targets and resources, got null",
    "empty": ":1: the manifest is empty: expected a mapping with apiVersion, targets and resources",
    "secret_in_client_secret_env": ":10: " + NOT_A_NAME,
    "random_secret_in_client_secret_env": ":10: " + NOT_A_NAME,
}


def test_every_case_has_its_fixture_and_every_fixture_its_case() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_manifest_is_one_clear_line_at_validate_plan_and_apply(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(FIXTURES / f"{case}.yaml", tmp_path / "m.yaml")
    monkeypatch.chdir(tmp_path)
    for command in ("validate", "plan", "apply"):
        code = main([command, "m.yaml"])
        captured = capsys.readouterr()
        assert code == 1, captured.err
        assert "Traceback" not in captured.err
        lines = captured.err.splitlines()
        assert lines[0].startswith("error: m.yaml" + CASES[case]), captured.err
        assert lines[-1] == "1 problem(s) in the manifest; nothing was changed."
        assert len(lines) == 2, captured.err  # one line per mistake
        assert "TOPSECRET" not in captured.err + captured.out


def test_expansion_is_bounded_before_any_text_is_built() -> None:
    # 4 x 4 x ... : the sizes are added up first, so the 64 KiB refusal costs no memory.
    big = Variables({"a": "x" * 40_000})
    result = big.expand("${a}${a}")
    assert result.errors == (f"expands to 80,000 characters through ${{a}}; at most {MAX_VALUE:,} are allowed",)
    assert result.text == "${a}${a}"
    many = {"a": "y" * 60_000, **{f"b{i}": "${a}" for i in range(80)}}
    _, problems = resolve(many, {})
    assert [p.name for p in problems] == ["b69"]  # past 4 MiB in total: once, at the variable that crossed it
    assert "past 4,194,304 characters" in problems[0].message


def test_a_secret_pasted_into_client_secret_env_reaches_no_error_store_or_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for case in ("secret_in_client_secret_env", "random_secret_in_client_secret_env"):
        shutil.copy(FIXTURES / f"{case}.yaml", tmp_path / f"{case}.yaml")
        for command in ("validate", "plan", "apply", "drift"):
            assert main([command, f"{case}.yaml"]) == 1
    assert main(["drift", "--log-format", "json", "secret_in_client_secret_env.yaml"]) == 1
    assert main(["history"]) == 0
    assert main(["history", "--json"]) == 0
    assert main(["history", "1"]) == 0
    captured = capsys.readouterr()
    assert NOT_A_NAME in captured.err
    assert "TOPSECRET" not in captured.out + captured.err
    stored = b"".join(p.read_bytes() for p in (tmp_path / ".reconciler").rglob("*") if p.is_file())
    assert b"TOPSECRET" not in stored
    with sqlite3.connect(tmp_path / ".reconciler" / "runs.sqlite3") as db:
        errors = [row[0] for row in db.execute("SELECT errors FROM runs")]
    assert len(errors) == 7 and all("it was not shown" in e for e in errors)


def test_the_graph_transport_does_not_show_a_secret_given_as_the_variable_name() -> None:
    from reconciler.errors import TransportError
    from reconciler.transports.graph_auth import ClientSecret, is_env_name

    assert is_env_name("RECONCILE_GRAPH_CLIENT_SECRET") and is_env_name("AZURE_SECRET_2024")
    for pasted in ("Xq8~TOPSECRET.Zk", "TOPSECRETaB3dEf9hIj2kLm4nOpQr7sT", "a-b", "1ABC", "", "A" * 129):
        assert not is_env_name(pasted)
    credential = ClientSecret.from_env("TOPSECRETaB3dEf9hIj2kLm4nOpQr7sT", {})
    with pytest.raises(TransportError) as caught:
        credential.form_fields("https://login.example/t", "client", 0.0)
    assert "TOPSECRET" not in str(caught.value) + repr(credential)
    assert "clientSecretEnv must name an environment variable" in str(caught.value)


def test_the_run_store_keeps_text_it_cannot_encode_as_a_replacement_character(tmp_path: Path) -> None:
    with SQLiteRunStore(tmp_path / "runs.sqlite3") as store:
        run = store.start(RunRecord(None, "plan", 1.0, "/m\udcff.yaml"))
        store.finish(run, result="error", errors=("pool/PartnerApplication/x\ud800: broken",))
        record = store.get(run)
        assert record is not None
        assert record.manifest_path == "/m\ufffd.yaml"
        assert record.errors == ("pool/PartnerApplication/x\ufffd: broken",)
        assert [r.id for r in store.list(manifest_path="/m\udcff.yaml")] == [run]


# -- the command line ----------------------------------------------------------------------------------

GOOD = (FIXTURES / "control_character.yaml").read_text(encoding="utf-8").replace('    realm: "contoso\\a.com"\n', "")


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m.yaml"
    path.write_text(GOOD, encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


@pytest.mark.parametrize(("argv", "usage", "message"), [
    (["validate", "--bogus", "m.yaml"], "usage: reconcile validate", "unrecognized arguments: --bogus"),
    (["plan", "--detialed-exitcode", "m.yaml"], "usage: reconcile plan", "unrecognized arguments: --detialed"),
    (["plan"], "usage: reconcile plan", "the following arguments are required: manifest"),
    (["drift", "m.yaml", "--log-format"], "usage: reconcile drift", "expected one argument"),
    (["history", "--limit", "-1"], "usage: reconcile history", "argument --limit: must be 0 or more, got -1"),
    (["history", "--limit", "many"], "usage: reconcile history", "expected a whole number, got 'many'"),
    (["plan", "--parallel", "0", "m.yaml"], "usage: reconcile plan", "must be at least 1, got 0"),
    (["apply", "--lock-timeout", "-1", "m.yaml"], "usage: reconcile apply",
     "argument --lock-timeout: must be 0 or more seconds, got -1"),
    (["run", "--lock-timeout", "nan", "m.yaml"], "usage: reconcile run", "must be 0 or more seconds, got nan"),
    (["run", "--jitter", "1", "m.yaml"], "usage: reconcile run", "--jitter: must be 0 or more and below 1, got 1"),
    (["run", "--jitter", "-0.1", "m.yaml"], "usage: reconcile run", "must be 0 or more and below 1, got -0.1"),
    (["run", "--jitter", "nan", "m.yaml"], "usage: reconcile run", "must be 0 or more and below 1, got nan"),
    (["apply", "--lock-timeout", "soon", "m.yaml"], "usage: reconcile apply",
     "expected a number of seconds, got 'soon'"),
    (["run", "--metrics-port", "70000", "m.yaml"], "usage: reconcile run",
     "argument --metrics-port: a port is 0 (any free port) to 65535, got 70000"),
    (["run", "--metrics-port", "-1", "m.yaml"], "usage: reconcile run", "a port is 0 (any free port) to 65535"),
    (["lab", "serve", "--port", "65536"], "usage: reconcile lab serve", "a port is 0 (any free port) to 65535"),
    (["lab", "graph", "show", "--bogus"], "usage: reconcile lab graph show", "unrecognized arguments: --bogus"),
    (["lab", "init", "--forse"], "usage: reconcile lab init", "unrecognized arguments: --forse"),
    (["bogus"], "usage: reconcile ", "invalid choice: 'bogus'"),
])
def test_usage_errors_exit_1_with_the_commands_usage(manifest: Path, capsys: pytest.CaptureFixture[str],
                                                     argv: list[str], usage: str, message: str) -> None:
    code, err = _run(capsys, *argv)
    assert code == 1  # never 2: schedulers read 2 as "changes"
    assert err.startswith(usage), err
    assert message in err.splitlines()[-1]


def test_the_lab_module_alone_exits_1_on_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.lab.cli import main as lab_main

    assert lab_main(["lab", "show", "--bogus"]) == 1
    assert capsys.readouterr().err.startswith("usage: reconcile lab show")


def test_a_var_without_a_name_is_not_echoed(manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, "plan", "--var", "TOPSECRETvalue", "m.yaml")
    assert code == 1
    assert err == "error: --var: expected NAME=VALUE (one was given without a name and '='; it is not shown)\n"


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--out", "a-folder", "error: --out a-folder: it is a directory; expected a file path"),
    ("--out", "a-folder/", "argument --out: 'a-folder/' is a directory; expected a file path"),
    ("--out", "missing/plan.json", "error: --out missing/plan.json: the folder missing does not exist"),
])
def test_plan_out_must_be_a_file_in_a_folder_that_exists(manifest: Path, capsys: pytest.CaptureFixture[str],
                                                        option: str, value: str, message: str) -> None:
    (manifest.parent / "a-folder").mkdir()
    code, err = _run(capsys, "plan", option, value, "m.yaml")
    assert code == 1
    assert message in err
    assert not (manifest.parent / ".reconciler").exists()  # refused before anything ran or was recorded


@pytest.mark.parametrize(("value", "message"), [
    ("textfile", "error: --metrics-file textfile: it is a directory; expected a file path"),
    ("textfile/", "argument --metrics-file: 'textfile/' is a directory; expected a file path"),
    ("/", "argument --metrics-file: '/' is a directory; expected a file path"),
    ("missing/reconcile.prom", "error: --metrics-file missing/reconcile.prom: the folder missing does not exist"),
])
def test_metrics_file_must_be_a_file_and_no_temp_file_is_written_anywhere(
        manifest: Path, capsys: pytest.CaptureFixture[str], value: str, message: str) -> None:
    root = manifest.parent
    (root / "textfile").mkdir()
    before = sorted(str(p) for p in root.rglob("*"))
    for command in ("drift", "run"):
        extra = ["--once"] if command == "run" else []
        code, err = _run(capsys, command, *extra, "--metrics-file", value, "m.yaml")
        assert code == 1
        assert message in err
    assert sorted(str(p) for p in root.rglob("*")) == before


def test_metrics_textfile_refuses_a_directory_before_making_a_temp_file(tmp_path: Path) -> None:
    from reconciler.metrics import Metrics

    for target in (tmp_path, tmp_path / "missing" / "x.prom"):
        with pytest.raises(MetricsFileError, match="cannot write metrics to"):
            Metrics().write_textfile(target)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def test_a_metrics_port_in_use_is_one_line(manifest: Path, capsys: pytest.CaptureFixture[str],
                                           busy_port: int) -> None:
    code, err = _run(capsys, "run", "--once", "--metrics-port", str(busy_port), "m.yaml")
    assert code == 1
    assert err.startswith(f"error: cannot serve metrics on 127.0.0.1:{busy_port}: Address already in use "
                          "(another process listens there; choose another --metrics-port, or 0 for any free port)")


def test_a_lab_port_in_use_is_one_line(lab_state: Path, capsys: pytest.CaptureFixture[str], busy_port: int) -> None:
    code, err = _run(capsys, "lab", "serve", "--state", str(lab_state), "--port", str(busy_port))
    assert code == 1
    assert err.startswith(f"error: cannot serve the lab on 127.0.0.1:{busy_port}: Address already in use")


# -- property: random text never becomes a traceback ---------------------------------------------------

# Hypothesis leaves out surrogates by default; the characters that broke plan are mixed in explicitly.
_ODD = st.sampled_from(["\ud800", "\udfff", "\x00", "\x01", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff",
                        "$", "${", "}", "$${", "'", '"', "`", "\n", "\t", ":", "#", "/", "%", "\\"])
TEXT = st.lists(st.one_of(st.text(max_size=8), _ODD), max_size=8).map("".join)
URL_TEXT = st.one_of(TEXT, TEXT.map(lambda t: "http://" + t), TEXT.map(lambda t: "${lab}/" + t),
                     st.integers(0, 5000).map(lambda n: "http://127.0.0.1:8470/" + "a" * n))


def _manifest(identity: str, realm: str, url: str, key: str) -> str:
    def q(text: str) -> str:  # a JSON string is a YAML double-quoted scalar; \ud800 stays a lone surrogate
        return json.dumps(text)

    return (f"apiVersion: reconciler/v1\nvariables:\n  lab: http://127.0.0.1:8470\ntargets:\n  pool:\n"
            f"    provider: skype\n    connection: {{transport: lab, host: atl-cs-001}}\nresources:\n"
            f"  - target: pool\n    kind: PartnerApplication\n    identity: {q(identity)}\n"
            f"    metadataUrl: {q(url)}\n    applicationTrustLevel: Full\n"
            f"  - target: pool\n    kind: OAuthConfiguration\n    realm: {q(realm)}\n    {q(key)}: x\n")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(identity=TEXT, realm=TEXT, url=URL_TEXT, key=TEXT)
def test_random_text_loads_or_is_a_located_manifest_error(estate: Estate, identity: str, realm: str, url: str,
                                                          key: str) -> None:
    path = estate.root / "random.yaml"
    path.write_text(_manifest(identity, realm, url, key), encoding="utf-8")
    try:
        load_manifest(path, Registry.from_entry_points(), {"lab": estate.url})
    except ManifestError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file == str(path) and problem.line >= 1
            assert problem.message and problem.message.isprintable()
    for command in ("validate", "plan"):
        run = estate.reconcile(command, path)  # asserts no traceback
        assert run.code in (0, 1), run.err
        if run.code == 1:
            assert run.err.startswith(("error: ", "usage: ")), run.err
        printable = set(string.printable)
        assert all(c in printable or c.isprintable() for c in run.err)
