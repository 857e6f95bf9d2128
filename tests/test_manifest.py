"""Manifest loading: the exact DesiredState of a good manifest, and one exact message per mistake.

The registry is built by hand (a small fake Skype-like provider, a fake Exchange-like provider
sharing a kind name, and a fake transport), so these tests do not depend on the real providers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from reconciler.errors import FieldProblem, ManifestError
from reconciler.kinds.spec import FieldSpec, KindSpec
from reconciler.manifest import build_schema, load_manifest, write_schema
from reconciler.model import (
    DesiredResource,
    DesiredState,
    Ensure,
    JSONValue,
    Mode,
    ResourceKey,
    SourceLocation,
    TargetSpec,
)
from reconciler.providers.base import Registry

GUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
TRUST_LEVELS = ["Full", "Application", "User"]


def _entry(kind: str, fields: dict[str, Any], *, identity_required: bool = True,
           **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["target", "kind", "identity"] if identity_required else ["target", "kind"],
        "properties": {
            "target": {"type": "string"},
            "kind": {"const": kind},
            "identity": {"type": "string", "minLength": 1},
            "ensure": {"enum": ["present", "absent"]},
            **fields,
        },
        **extra,
    }


def _prepare_partner(fields: dict[str, JSONValue], manifest_dir: Path) -> dict[str, JSONValue]:
    out = dict(fields)
    if "certificateFile" in out:
        name = str(out.pop("certificateFile"))
        try:
            data = (manifest_dir / name).read_bytes()
        except OSError:
            raise FieldProblem("certificateFile", f"cannot read certificate file '{name}'") from None
        out["certificateRawData"] = base64.b64encode(data).decode("ascii")
    return out


PARTNER = KindSpec(
    kind="PartnerApplication",
    fields={"metadataUrl": FieldSpec("metadataUrl", metadata_url=True)},
    prepare=_prepare_partner,
    schema=_entry("PartnerApplication", {
        "metadataUrl": {"type": "string", "pattern": "^https?://", "errorMessage": "is not an http(s) URL"},
        "applicationIdentifier": {
            "type": "string", "pattern": GUID_PATTERN,
            "errorMessage": "is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"},
        "applicationTrustLevel": {"enum": TRUST_LEVELS},
        "enabled": {"type": "boolean"},
        "useOAuthServer": {"const": True},
        "certificateFile": {"type": "string"},
        "realm": {"type": "string", "pattern": "^[a-z0-9.]+$", "description": "a lower-case DNS name"},
    }, oneOf=[{"required": ["metadataUrl"]}, {"required": ["useOAuthServer"]},
              {"required": ["certificateFile"]}]),
)
SERVER = KindSpec(
    kind="OAuthServer",
    fields={},
    schema=_entry("OAuthServer", {
        "metadataUrl": {"type": "string", "pattern": "^https?://", "errorMessage": "is not an http(s) URL"},
        "type": {"type": "string"},
    }, required=["target", "kind", "identity", "metadataUrl"]),
)
CONFIGURATION = KindSpec(
    kind="OAuthConfiguration",
    fields={},
    singleton=True,
    schema=_entry("OAuthConfiguration", {"realm": {"type": "string"}}, identity_required=False),
)
EXCHANGE_PARTNER = KindSpec(
    kind="PartnerApplication",
    fields={},
    schema=_entry("PartnerApplication", {
        "authMetadataUrl": {"type": "string"},
        "linkedAccount": {"type": "string"},
    }),
)


class FakeSkype:
    name = "skype"
    kinds = {k.kind: k for k in (PARTNER, SERVER, CONFIGURATION)}


class FakeExchange:
    name = "exchange"
    kinds = {"PartnerApplication": EXCHANGE_PARTNER}


class FakeTransport:
    connection_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["host"],
        "properties": {"host": {"type": "string"}, "port": {"type": "integer"}},
    }

    @classmethod
    def from_target(cls, target: TargetSpec) -> Any:
        raise NotImplementedError


def registry() -> Registry:
    # The fakes carry only what the manifest layer uses (name, kinds, connection_schema).
    providers: dict[str, Any] = {"skype": FakeSkype(), "exchange": FakeExchange()}
    transports: dict[str, Any] = {"lab": FakeTransport}
    return Registry(providers=providers, transports=transports)


HEADER = """\
apiVersion: reconciler/v1
targets:
  pool:
    provider: skype
    connection: {transport: lab, host: atl-cs-001}
resources:
"""
"""Seven lines: resources written after it start on line 7."""


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Write a manifest under manifests/ and return the path as a user would type it (relative)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "manifests").mkdir()

    def _write(text: str, name: str = "x.yaml") -> Path:
        path = Path("manifests") / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write


def problems(path: Path, overrides: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, registry(), overrides)
    return [str(p) for p in caught.value.problems]


GOOD = """\
# yaml-language-server: $schema=../schemas/manifest.schema.json
apiVersion: reconciler/v1
variables:
  lab: http://127.0.0.1:8470
  exchangeHost: ${lab}/atl-exchange-001.litwareinc.com
targets:
  litware-pool:
    provider: skype
    connection:
      transport: lab
      host: atl-cs-001
    prune: [PartnerApplication]
  exchange-org:
    provider: exchange
    connection: {transport: lab, host: "${lab}", port: 8470}
resources:
  - target: litware-pool
    kind: PartnerApplication
    identity: microsoft.exchange
    metadataUrl: ${exchangeHost}/autodiscover/metadata/json/1
    applicationTrustLevel: Full
    enabled: true
  - target: litware-pool
    kind: PartnerApplication
    identity: sharepoint
    certificateFile: sp.cer
    applicationIdentifier: 00000003-0000-0ff1-ce00-000000000000
  - target: litware-pool
    kind: OAuthConfiguration
    realm: $${not a variable}
  - target: litware-pool
    kind: OAuthServer
    identity: microsoft.sts
    ensure: absent
    metadataUrl: https://accounts.accesscontrol.windows.net/metadata/json/1
  - target: exchange-org
    kind: PartnerApplication
    identity: Skype
    authMetadataUrl: ${lab}/x
"""


def test_good_manifest_gives_exact_desired_state(write: Any) -> None:
    path = write(GOOD)
    (path.parent / "sp.cer").write_bytes(b"\x30\x82cert")
    state = load_manifest(path, registry())
    file = "manifests/x.yaml"
    assert state == DesiredState(
        manifest_path=file,
        manifest_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        targets={
            "litware-pool": TargetSpec("litware-pool", "skype", {"transport": "lab", "host": "atl-cs-001"},
                                       frozenset({"PartnerApplication"}),
                                       SourceLocation(file, 7, "targets.litware-pool")),
            "exchange-org": TargetSpec("exchange-org", "exchange",
                                       {"transport": "lab", "host": "http://127.0.0.1:8470", "port": 8470},
                                       frozenset(), SourceLocation(file, 13, "targets.exchange-org")),
        },
        resources=(
            DesiredResource(
                ResourceKey("litware-pool", "PartnerApplication", "microsoft.exchange"), Ensure.PRESENT,
                {"metadataUrl": "http://127.0.0.1:8470/atl-exchange-001.litwareinc.com/autodiscover/metadata/json/1",
                 "applicationTrustLevel": "Full", "enabled": True},
                SourceLocation(file, 17, "resources[0]"),
                {"metadataUrl": 20, "applicationTrustLevel": 21, "enabled": 22}),
            DesiredResource(
                ResourceKey("litware-pool", "PartnerApplication", "sharepoint"), Ensure.PRESENT,
                {"applicationIdentifier": "00000003-0000-0ff1-ce00-000000000000",
                 "certificateRawData": base64.b64encode(b"\x30\x82cert").decode()},
                SourceLocation(file, 23, "resources[1]"),
                {"applicationIdentifier": 27, "certificateRawData": 23}),
            DesiredResource(
                ResourceKey("litware-pool", "OAuthConfiguration", "Global"), Ensure.PRESENT,
                {"realm": "${not a variable}"},
                SourceLocation(file, 28, "resources[2]"), {"realm": 30}),
            DesiredResource(
                ResourceKey("litware-pool", "OAuthServer", "microsoft.sts"), Ensure.ABSENT,
                {"metadataUrl": "https://accounts.accesscontrol.windows.net/metadata/json/1"},
                SourceLocation(file, 31, "resources[3]"), {"metadataUrl": 35}),
            DesiredResource(
                ResourceKey("exchange-org", "PartnerApplication", "Skype"), Ensure.PRESENT,
                {"authMetadataUrl": "http://127.0.0.1:8470/x"},
                SourceLocation(file, 36, "resources[4]"), {"authMetadataUrl": 39}),
        ),
    )


def test_overrides_replace_declared_variables_and_change_the_fingerprint(write: Any) -> None:
    path = write(GOOD.replace("host: atl-cs-001", "host: ${poolHost}").replace(
        "variables:\n", "variables:\n  poolHost: atl-cs-001\n"))
    (path.parent / "sp.cer").write_bytes(b"c")
    state = load_manifest(path, registry(), {"lab": "https://lab.example", "poolHost": "pool01"})
    assert state.targets["litware-pool"].connection["host"] == "pool01"
    assert state.resources[0].fields["metadataUrl"] == \
        "https://lab.example/atl-exchange-001.litwareinc.com/autodiscover/metadata/json/1"
    other = load_manifest(path, registry(), {"lab": "https://lab.example", "poolHost": "pool02"})
    plain = hashlib.sha256(path.read_bytes()).hexdigest()
    assert len({state.manifest_sha256, other.manifest_sha256, plain}) == 3


def test_override_values_are_literal(write: Any) -> None:
    path = write(HEADER.replace("apiVersion: reconciler/v1\n", "apiVersion: reconciler/v1\nvariables: {r: ''}\n")
                 + """\
  - {target: pool, kind: OAuthConfiguration, realm: "${r}"}
""")
    state = load_manifest(path, registry(), {"r": "${x}"})
    assert state.resources[0].fields == {"realm": "${x}"}


def test_yaml_syntax_error_points_at_the_mark(write: Any) -> None:
    path = write("apiVersion: reconciler/v1\ntargets:\n  pool: [a, b\nresources: []\n")
    assert problems(path) == [
        "manifests/x.yaml:4: invalid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence at line 3)"]


def test_empty_file(write: Any) -> None:
    assert problems(write("# nothing here\n")) == [
        "manifests/x.yaml:1: the manifest is empty: expected a mapping with apiVersion, targets and resources"]


def test_a_null_manifest_says_what_was_expected(write: Any) -> None:
    assert problems(write("null\n")) == [
        "manifests/x.yaml:1: expected a mapping with apiVersion, targets and resources, got null"]


def test_top_level_must_be_a_mapping(write: Any) -> None:
    assert problems(write("- apiVersion: reconciler/v1\n")) == [
        "manifests/x.yaml:1: expected a mapping with apiVersion, targets and resources at the top level, got a list"]


def test_unreadable_file_is_a_manifest_error(tmp_path: Path) -> None:
    assert problems(tmp_path / "missing.yaml") == [
        f"{tmp_path / 'missing.yaml'}:1: cannot read the manifest: No such file or directory"]


def test_duplicate_key_reports_second_occurrence_and_keeps_checking_the_first(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: PartnerApplication
    identity: a
    metadataUrl: http://x
    applicationTrustLevel: Fulll
    metadataUrl: http://y
""")
    assert problems(path) == [
        "manifests/x.yaml:11: resources[0].applicationTrustLevel: 'Fulll' is not one of Full, Application, User",
        "manifests/x.yaml:12: resources[0].metadataUrl: duplicate key 'metadataUrl' (first at line 10)",
    ]


def test_anchors_and_merge_keys_work(write: Any) -> None:
    path = write(HEADER + """\
  - &base
    target: pool
    kind: PartnerApplication
    identity: a
    metadataUrl: http://x
  - <<: *base
    identity: b
""")
    state = load_manifest(path, registry())
    assert [(r.key.identity, dict(r.fields), r.location.line) for r in state.resources] == [
        ("a", {"metadataUrl": "http://x"}, 7), ("b", {"metadataUrl": "http://x"}, 12)]


@pytest.mark.parametrize(("text", "expected"), [
    ("apiVersion: !!python/object:os.system x\n",
     "manifests/x.yaml:1: apiVersion: unsupported YAML tag 'tag:yaml.org,2002:python/object:os.system'"),
    ("a: &x [*x]\n", "manifests/x.yaml:1: a[0]: an alias refers to a value that contains it (recursive alias)"),
    ("a: !!binary aGVsbG8=\n", "manifests/x.yaml:1: a: unsupported YAML tag 'tag:yaml.org,2002:binary'"),
])
def test_unsupported_yaml_features_are_reported_not_crashed_on(write: Any, text: str, expected: str) -> None:
    assert expected in problems(write(text))


@pytest.mark.parametrize("text", [
    "\t- x", "[" * 5000, "a: [}", "--- a\n--- b\n", "a: 1\n\x01", "- - - -", "? [a]\n: b\n",
    "a: &a [" + ", ".join(["*a"] * 3) + "]\n",
    "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [" + ",".join([f"*{p}"] * 10) + "]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
    "apiVersion: reconciler/v1\ntargets: 5\nresources: {a: b}\n",
    "apiVersion: reconciler/v1\ntargets: {p: {provider: skype, connection: 5}}\nresources: [{target: p}, 5]\n",
    "apiVersion: 1\ntargets: {p: [], q: {provider: [], connection: {transport: {}}}}\nresources: [[], {}]\n",
    "apiVersion: reconciler/v1\nvariables: [a]\ntargets: {p: {provider: exchange}}\nresources:\n- {target: p}\n",
])
def test_never_a_traceback(write: Any, text: str) -> None:
    found = problems(write(text))
    assert found
    assert all(p.startswith("manifests/x.yaml:") for p in found)


def test_not_utf8(write: Any) -> None:
    path = write("")
    path.write_bytes(b"apiVersion: reconciler/v1\n# \xff\n")
    assert problems(path) == ["manifests/x.yaml:2: the manifest is not UTF-8 text"]


def test_unknown_fields_each_at_their_own_line(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: OAuthServer
    identity: microsoft.sts
    metadataUrl: https://x
    colour: blue
    size: 3
""")
    expected = "expected one of: ensure, identity, kind, metadataUrl, target, type"
    assert problems(path) == [
        f"manifests/x.yaml:11: resources[0].colour: unknown field 'colour' ({expected})",
        f"manifests/x.yaml:12: resources[0].size: unknown field 'size' ({expected})",
    ]


def test_misspelt_field_is_one_line_not_also_a_missing_one(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: OAuthServer
    identity: microsoft.sts
    metadataURL: https://x
""")
    assert problems(path) == [
        "manifests/x.yaml:10: resources[0].metadataURL: unknown field 'metadataURL' "
        "(expected one of: ensure, identity, kind, metadataUrl, target, type); did you mean 'metadataUrl'?"]


def test_enum_message(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: PartnerApplication
    identity: microsoft.exchange
    metadataUrl: http://x
    applicationTrustLevel: Fulll
""")
    assert problems(path) == [
        "manifests/x.yaml:11: resources[0].applicationTrustLevel: 'Fulll' is not one of Full, Application, User"]


def test_type_message_and_only_the_type_for_a_wrong_type(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: PartnerApplication
    identity: microsoft.exchange
    metadataUrl: http://x
    enabled: 'yes'
    applicationTrustLevel: [Full]
    realm: no
""")
    assert problems(path) == [
        "manifests/x.yaml:11: resources[0].enabled: expected a boolean, got 'yes'",
        "manifests/x.yaml:12: resources[0].applicationTrustLevel: expected one of Full, Application, User, "
        "got a list",
        "manifests/x.yaml:13: resources[0].realm: expected a string, got false (put it in quotes to keep it as text)",
    ]


def test_pattern_uses_error_message_or_description(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: PartnerApplication
    identity: microsoft.exchange
    useOAuthServer: true
    applicationIdentifier: 0002-x
    realm: Litware.COM
""")
    assert problems(path) == [
        "manifests/x.yaml:11: resources[0].applicationIdentifier: "
        "'0002-x' is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
        "manifests/x.yaml:12: resources[0].realm: 'Litware.COM' does not match ^[a-z0-9.]+$ "
        "(a lower-case DNS name)",
    ]


def test_required_names_the_missing_field_at_the_object(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: OAuthServer
    type: ACS
""")
    assert problems(path) == [
        "manifests/x.yaml:7: resources[0]: missing required field 'identity'",
        "manifests/x.yaml:7: resources[0]: missing required field 'metadataUrl'",
    ]


def test_one_of_required_alternatives_is_one_line(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: PartnerApplication
    identity: a
    applicationTrustLevel: Full
  - target: pool
    kind: PartnerApplication
    identity: b
    metadataUrl: http://x
    useOAuthServer: true
""")
    assert problems(path) == [
        "manifests/x.yaml:7: resources[0]: needs one of: metadataUrl | useOAuthServer | certificateFile",
        "manifests/x.yaml:11: resources[1]: set only one of: metadataUrl | useOAuthServer | certificateFile",
    ]


def test_top_level_and_target_checks(write: Any) -> None:
    path = write("""\
apiVersion: reconciler/v2
targets:
  pool:
    provider: skype
    connection:
      transport: lab
      hots: atl-cs-001
    prune: [PartnerApplication, Mailbox]
  2nd pool:
    provider: skipe
    connection: {transport: ssh, host: x}
  ok:
    provider: exchange
    connection: {transport: lab}
extra: 1
""")
    assert problems(path) == [
        "manifests/x.yaml:1: apiVersion: expected reconciler/v1, got 'reconciler/v2'",
        "manifests/x.yaml:7: targets.pool.connection.hots: unknown field 'hots' (expected one of: host, port, "
        "transport); did you mean 'host'?",
        "manifests/x.yaml:8: targets.pool.prune[1]: 'Mailbox' is not one of OAuthConfiguration, OAuthServer, "
        "PartnerApplication",
        "manifests/x.yaml:9: targets.2nd pool: '2nd pool' is not a valid target name (letters, digits, _ . -, "
        "starting with a letter or digit)",
        "manifests/x.yaml:10: targets.2nd pool.provider: 'skipe' is not one of exchange, skype",
        "manifests/x.yaml:11: targets.2nd pool.connection.transport: 'ssh' is not one of lab",
        "manifests/x.yaml:14: targets.ok.connection: missing required field 'host'",
        "manifests/x.yaml:15: extra: unknown field 'extra' (expected one of: apiVersion, notify, resources, targets, "
        "variables, verify)",
    ]


def test_missing_sections(write: Any) -> None:
    assert problems(write("variables: {}\n")) == [
        "manifests/x.yaml:1: missing required field 'apiVersion'",
        "manifests/x.yaml:1: missing required field 'targets'",
    ]
    assert problems(write("apiVersion: reconciler/v1\ntargets: {}\n", "y.yaml")) == [
        "manifests/y.yaml:2: targets: must not be empty"]


def test_undefined_target(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: OAuthConfiguration
  - target: pool2
    kind: OAuthConfiguration
""")
    assert problems(path) == ["manifests/x.yaml:9: resources[1].target: no target named 'pool2' (defined: pool)"
                              "; did you mean 'pool'?"]


def test_kind_not_owned_by_the_targets_provider(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: Mailbox
    identity: a
  - target: pool
    kind: PartnerApplication
    identity: b
    authMetadataUrl: http://x
""")
    assert problems(path) == [
        "manifests/x.yaml:8: resources[0].kind: 'Mailbox' is not a kind of provider 'skype' used by target "
        "'pool' (kinds: OAuthConfiguration, OAuthServer, PartnerApplication)",
        "manifests/x.yaml:13: resources[1].authMetadataUrl: unknown field 'authMetadataUrl' (expected one of: "
        "applicationIdentifier, applicationTrustLevel, certificateFile, enabled, ensure, identity, kind, "
        "metadataUrl, realm, target, useOAuthServer); did you mean 'metadataUrl'?",
    ]


def test_unknown_target_still_checks_the_kind(write: Any) -> None:
    path = write(HEADER + """\
  - target: nowhere
    kind: Mailbox
""")
    assert problems(path) == [
        "manifests/x.yaml:7: resources[0].target: no target named 'nowhere' (defined: pool)",
        "manifests/x.yaml:8: resources[0].kind: 'Mailbox' is not one of OAuthConfiguration, OAuthServer, "
        "PartnerApplication",
    ]


def test_unknown_target_of_a_kind_two_providers_have_reports_the_target_alone(write: Any) -> None:
    # Skype's and Exchange's PartnerApplication differ: checked against either, the fields right for the other would
    # read as wrong (metadataUrl "unknown", from Exchange's). The target's name is what to fix; its fields are checked
    # once it names a target.
    path = write(HEADER + """\
  - target: pol
    kind: PartnerApplication
    identity: b
    metadataUrl: http://x
    colour: blue
  - target: pol
    kind: OAuthConfiguration
    realm: x
    colour: blue
""")
    assert problems(path) == [
        "manifests/x.yaml:7: resources[0].target: no target named 'pol' (defined: pool); did you mean 'pool'?",
        "manifests/x.yaml:12: resources[1].target: no target named 'pol' (defined: pool); did you mean 'pool'?",
        "manifests/x.yaml:15: resources[1].colour: unknown field 'colour' (expected one of: ensure, identity, kind, "
        "realm, target)",
    ]


def test_duplicate_identity_is_case_insensitive(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: OAuthServer
    identity: microsoft.sts
    metadataUrl: http://x
  - target: pool
    kind: OAuthServer
    identity: Microsoft.STS
    metadataUrl: http://y
  - target: pool
    kind: OAuthConfiguration
  - target: pool
    kind: OAuthConfiguration
    identity: GLOBAL
""")
    assert problems(path) == [
        "manifests/x.yaml:13: resources[1].identity: duplicate of resources[0] at line 7",
        "manifests/x.yaml:19: resources[3].identity: duplicate of resources[2] at line 15",
    ]


def test_undefined_variable(write: Any) -> None:
    path = write("""\
apiVersion: reconciler/v1
variables:
  lab: http://lab
  tenantId: 00000001-0000-0000-0000-000000000000
targets:
  pool:
    provider: skype
    connection: {transport: lab, host: x}
resources:
  - target: pool
    kind: OAuthServer
    identity: a
    metadataUrl: ${tenant}/x
""")
    assert problems(path) == [
        "manifests/x.yaml:13: resources[0].metadataUrl: undefined variable 'tenant' (defined: lab, tenantId)"
        "; did you mean 'tenantId'?"]


def test_variable_problems_are_reported_once_at_the_variable(write: Any) -> None:
    path = write("""\
apiVersion: reconciler/v1
variables:
  a: ${b}/x
  b: ${c}
  c: ${a}
  d: ${nope}
  e: ${bad name}
  port: 8470
targets:
  pool:
    provider: skype
    connection: {transport: lab, host: "${a}${d}${port}"}
resources: []
""")
    assert problems(path) == [
        "manifests/x.yaml:3: variables.a: variable cycle: a -> b -> c -> a",
        "manifests/x.yaml:6: variables.d: undefined variable 'nope' (defined: a, b, c, d, e, port)",
        "manifests/x.yaml:7: variables.e: malformed variable reference '${bad name}' "
        "(a name is letters, digits and _; write $${ for a literal ${)",
        "manifests/x.yaml:8: variables.port: expected a string, got 8470 (put it in quotes to keep it as text)",
    ]


def test_self_reference_and_unclosed_reference(write: Any) -> None:
    path = write(HEADER.replace("host: atl-cs-001", "host: '${h'").replace(
        "apiVersion: reconciler/v1\n", "apiVersion: reconciler/v1\nvariables: {h: y}\n") + """\
  - {target: pool, kind: OAuthConfiguration, realm: "${r}"}
""")
    assert problems(path, {"h": "x"}) == [
        "manifests/x.yaml:6: targets.pool.connection.host: unclosed '${' in '${h' (write $${ for a literal ${)",
        "manifests/x.yaml:8: resources[0].realm: undefined variable 'r' (defined: h)",
    ]
    cyclic = write("apiVersion: reconciler/v1\nvariables: {s: 'x${s}'}\ntargets: {}\n", "c.yaml")
    assert problems(cyclic) == [
        "manifests/c.yaml:2: variables.s: variable cycle: s -> s",
        "manifests/c.yaml:3: targets: must not be empty",
    ]


def test_singleton_identity_defaults_and_it_cannot_be_absent(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: OAuthConfiguration
    ensure: absent
""")
    assert problems(path) == [
        "manifests/x.yaml:9: resources[0].ensure: OAuthConfiguration always exists (one per target), "
        "so it cannot be absent"]


def test_prepare_problem_is_reported_at_the_field(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: PartnerApplication
    identity: sp
    certificateFile: missing.cer
""")
    assert problems(path) == [
        "manifests/x.yaml:10: resources[0].certificateFile: cannot read certificate file 'missing.cer'"]


def test_prepare_is_not_called_after_a_schema_problem(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: PartnerApplication
    identity: sp
    certificateFile: missing.cer
    enabled: 1
""")
    assert problems(path) == ["manifests/x.yaml:11: resources[0].enabled: expected a boolean, got 1"]


def test_all_problems_are_collected_and_sorted_by_line(write: Any) -> None:
    path = write("""\
apiVersion: reconciler/v1
targets:
  pool:
    provider: skype
    connection: {transport: lab, host: x, port: eighty}
resources:
  - target: pool
    kind: OAuthServer
    identity: a
    metadataUrl: ftp://x
  - target: pool
    kind: OAuthConfiguration
    realm: 5
  - kind: OAuthConfiguration
""")
    assert problems(path) == [
        "manifests/x.yaml:5: targets.pool.connection.port: expected an integer, got 'eighty'",
        "manifests/x.yaml:10: resources[0].metadataUrl: 'ftp://x' is not an http(s) URL",
        "manifests/x.yaml:13: resources[1].realm: expected a string, got 5 (put it in quotes to keep it as text)",
        "manifests/x.yaml:14: resources[2]: missing required field 'target'",
    ]


def test_shared_kind_name_is_resolved_by_the_targets_provider(write: Any) -> None:
    path = write(HEADER + """\
  - target: pool
    kind: PartnerApplication
    identity: a
    metadataUrl: http://x
""").read_text()
    text = path.replace("resources:\n", "  org:\n    provider: exchange\n    connection: {transport: lab, host: y}\n"
                                         "resources:\n  - {target: org, kind: PartnerApplication, identity: b, "
                                         "linkedAccount: svc}\n")
    state = load_manifest(write(text, "y.yaml"), registry())
    assert [(r.key.target, dict(r.fields)) for r in state.resources] == [
        ("org", {"linkedAccount": "svc"}), ("pool", {"metadataUrl": "http://x"})]


def test_combined_schema_is_valid_and_shaped_for_editors(tmp_path: Path) -> None:
    schema = build_schema(registry())
    Draft202012Validator.check_schema(schema)
    defs = schema["$defs"]
    assert set(defs) >= {"skype.PartnerApplication", "exchange.PartnerApplication", "skype.OAuthServer"}
    rules = {r["if"]["properties"]["kind"]["const"]: r["then"] for r in defs["resource"]["allOf"]}
    assert rules["OAuthServer"] == {"$ref": "#/$defs/skype.OAuthServer"}
    assert rules["PartnerApplication"] == {"anyOf": [{"$ref": "#/$defs/exchange.PartnerApplication"},
                                                     {"$ref": "#/$defs/skype.PartnerApplication"}]}
    connection_then = defs["connection"]["allOf"][0]["then"]
    assert connection_then["properties"]["transport"] == {"const": "lab"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["apiVersion"] == {"const": "reconciler/v1"}
    out = tmp_path / "schemas" / "manifest.schema.json"
    write_schema(registry(), out)
    text = out.read_text()
    assert text.endswith("}\n")
    assert text == json.dumps(schema, indent=2, sort_keys=True) + "\n"


def test_combined_schema_accepts_the_good_manifest_as_editors_see_it() -> None:
    import yaml

    validator = Draft202012Validator(build_schema(registry()))
    data = yaml.safe_load(GOOD.replace("${exchangeHost}", "http://h"))
    assert [e.message for e in validator.iter_errors(data)] == []
    data["resources"][0]["applicationTrustLevel"] = "Fulll"
    assert [e.message for e in validator.iter_errors(data)] != []


@given(st.text(max_size=8), st.text(max_size=8), st.text(max_size=8), st.sampled_from(list(Ensure)),
       st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
       st.integers(min_value=1), st.sampled_from([None, *Mode]))
def test_a_resource_made_without_the_classes_init_is_the_one_their_init_makes(
        target: str, kind: str, identity: str, ensure: Ensure, fields: dict[str, Any], line: int,
        mode: Mode | None) -> None:
    """What the loader and the manifest cache make per resource (model.desired_resource) is what the frozen classes'
    __init__ makes: equal, hashed alike, frozen, with the same attributes."""
    from reconciler.model import desired_resource

    lines = {name: line for name in fields}
    made = desired_resource(target, kind, identity, ensure, fields, "m.yaml", line, "resources[0]", lines, mode)
    expected = DesiredResource(ResourceKey(target, kind, identity), ensure, fields,
                               SourceLocation("m.yaml", line, "resources[0]"), lines, mode)
    assert made == expected and hash(made.key) == hash(expected.key) and made.key < ResourceKey(target, kind,
                                                                                                identity + "z")
    assert vars(made) == vars(expected) and vars(made.key) == vars(expected.key)
    assert vars(made.location) == vars(expected.location)
    with pytest.raises(AttributeError):
        made.key.target = "other"  # type: ignore[misc]
