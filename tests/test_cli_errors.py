"""Bad input through the real CLI and the real Skype schema: one clear line each, exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli import main

HEAD = """\
apiVersion: reconciler/v1
variables:
  lab: http://127.0.0.1:8470
targets:
  pool:
    provider: skype
    connection: {transport: lab, host: atl-cs-001}
resources:
"""

APP = """\
  - target: pool
    kind: PartnerApplication
    identity: microsoft.exchange
"""

CASES = {
    "yaml syntax": (HEAD + "  - target: pool\n    kind: [PartnerApplication\n", ":11:", "invalid YAML"),
    "unknown field": (HEAD + APP + "    metadataURL: http://x/m\n    applicationTrustLevel: Full\n",
                      ":12: resources[0].metadataURL:", "unknown field 'metadataURL'"),
    "enum": (HEAD + APP + "    metadataUrl: http://x/m\n    applicationTrustLevel: Fulll\n",
             ":13: resources[0].applicationTrustLevel:", "'Fulll' is not one of Full, Application, User"),
    "type": (HEAD + APP + "    metadataUrl: http://x/m\n    applicationTrustLevel: Full\n    enabled: maybe\n",
             ":14: resources[0].enabled:", "boolean"),
    "guid": (HEAD + APP + "    applicationIdentifier: 0002-x\n    useOAuthServer: true\n"
             "    applicationTrustLevel: Full\n",
             ":12: resources[0].applicationIdentifier:", "is not a GUID"),
    "url": (HEAD + APP + "    metadataUrl: ftp:/x\n    applicationTrustLevel: Full\n",
            ":12: resources[0].metadataUrl:", "is not an http(s) URL"),
    "mixed forms": (HEAD + APP + "    metadataUrl: http://x/m\n    applicationIdentifier: "
                    "00000002-0000-0ff1-ce00-000000000000\n    useOAuthServer: true\n    applicationTrustLevel: Full\n",
                    "resources[0]", "exactly one of"),
    "realm with metadataUrl": (HEAD + APP + "    metadataUrl: http://x/m\n    realm: contoso.com\n"
                               "    applicationTrustLevel: Full\n",
                               ":13: resources[0].realm:", "realm cannot be set together with metadataUrl"),
    "duplicate identity": (HEAD + APP + "    metadataUrl: http://x/m\n    applicationTrustLevel: Full\n"
                           "  - target: pool\n    kind: PartnerApplication\n    identity: Microsoft.Exchange\n"
                           "    metadataUrl: http://x/m\n    applicationTrustLevel: Full\n",
                           ":16: resources[1].identity:", "duplicate of resources[0] at line 9"),
    "undefined target": (HEAD + "  - target: pool2\n    kind: OAuthConfiguration\n    serviceName: "
                         "00000004-0000-0ff1-ce00-000000000000\n",
                         ":9: resources[0].target:", "no target named 'pool2'"),
    "undefined variable": (HEAD + APP + "    metadataUrl: ${exchange}/m\n    applicationTrustLevel: Full\n",
                           ":12: resources[0].metadataUrl:", "undefined variable 'exchange'"),
    "unreadable certificate": (HEAD + APP + "    applicationIdentifier: 00000002-0000-0ff1-ce00-000000000000\n"
                               "    certificateFile: missing.cer\n    realm: litwareinc.com\n"
                               "    applicationTrustLevel: Full\n",
                               ":13: resources[0].certificateFile:", "cannot read certificate file 'missing.cer'"),
    "not a certificate": (HEAD + APP + "    applicationIdentifier: 00000002-0000-0ff1-ce00-000000000000\n"
                          "    certificateFile: junk.cer\n    realm: litwareinc.com\n    applicationTrustLevel: Full\n",
                          ":13: resources[0].certificateFile:", "is not an X.509 certificate"),
    "missing trust level": (HEAD + APP + "    metadataUrl: http://x/m\n",
                            ":9: resources[0]", "applicationTrustLevel"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_manifest_gets_file_line_path_and_exit_1(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    text, where, what = CASES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.cer").write_bytes(b"not a certificate")
    (tmp_path / "m.yaml").write_text(text, encoding="utf-8")
    for command in ("validate", "plan", "apply"):
        code = main([command, "m.yaml"])
        err = capsys.readouterr().err
        assert code == 1
        assert "Traceback" not in err
        first = err.splitlines()[0]
        assert first.startswith("error: m.yaml:"), err
        assert where in first, err
        assert what in first, err
        assert "nothing was changed" in err


def test_every_problem_in_a_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    text = HEAD + APP + "    metadataUrl: http://x/m\n    applicationTrustLevel: Fulll\n    enabled: 3\n"
    (tmp_path / "m.yaml").write_text(text, encoding="utf-8")
    assert main(["validate", "m.yaml"]) == 1
    err = capsys.readouterr().err
    assert "m.yaml:13:" in err and "m.yaml:14:" in err
    assert "2 problem(s) in the manifest" in err


def test_a_missing_manifest_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "nope.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: nope.yaml") and "Traceback" not in err


def test_unknown_lab_host_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(HEAD + "  - target: pool\n    kind: OAuthConfiguration\n    serviceName: "
                                     "00000004-0000-0ff1-ce00-000000000000\n", encoding="utf-8")
    assert main(["plan", "m.yaml"]) == 1
    err = capsys.readouterr().err
    assert "lab init" in err and "Traceback" not in err


def test_an_undeclared_var_is_an_error_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("apiVersion: reconciler/v1\nvariables:\n  lab: http://127.0.0.1:1\ntargets: {}\n"
                        "resources: []\n", encoding="utf-8")
    assert main(["validate", "--var", "lba=http://x", str(manifest)]) == 1
    err = capsys.readouterr().err
    assert "--var lba: the manifest declares no variable of that name (declared: lab)" in err
    assert "Traceback" not in err


def test_a_broken_plugin_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import reconciler.providers.base as base

    broken = EntryPoint("nope", "reconciler.providers.nope:NopeProvider", "reconciler.providers")
    monkeypatch.setattr(base, "entry_points", lambda group: [broken] if group == "reconciler.providers" else [])
    manifest = tmp_path / "m.yaml"
    manifest.write_text("apiVersion: reconciler/v1\ntargets: {}\nresources: []\n", encoding="utf-8")
    assert main(["validate", str(manifest)]) == 1
    err = capsys.readouterr().err
    assert "the provider plugin 'nope' (reconciler.providers.nope:NopeProvider) cannot be loaded: " \
           "ModuleNotFoundError" in err and "Traceback" not in err
