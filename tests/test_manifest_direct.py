"""The direct path of the manifest parser (built from the parser's events, without composing nodes) gives what the
composing path gives: the same data and lines, and through the loader the same DesiredState or the same problems."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.errors import ManifestError
from reconciler.manifest import load_manifest, positions
from reconciler.manifest.loader import _notable
from tests.test_manifest import GOOD, registry

USUAL = ["app", "Full", "Partial", "true", "7", "1.5", "http://h/x", "https://a.example/m/json/1", "${lab}/m",
         "00000003-0000-0ff1-ce00-000000000000", "'quoted'", '"double"', "[a, b]", "{a: 1}"]
SCALARS = [
    "x", "Full", "Partial", "true", "false", "~", "null", "7", "-3", "0x1F", "1_000", "0o17", "1.5", ".inf", "1e3",
    "2001-12-14", "2001-12-14t21:59:43.10-05:00", "00000003-0000-0ff1-ce00-000000000000",
    "12345678-1234-1234-1234-123456789012", "http://h/x", "https://a.example/m/json/1", "${lab}", "${lab}/x",
    "${missing}", "$${lab}", "${a}${a}", "'${lab}'", '"quoted"', "'single'", '"\\x01"', '"\\ud800"', '"a\\tb"',
    '"http://h:99999/x"', '"http://' + "h" * 300 + '/"', "'" + "y" * 2100 + "'", "[a, b]", "{a: 1}", "[]", "{}",
    "!!str 3", "!!int '4'", "!custom x", "<<", "|\n    block text\n", ">\n    folded\n", "'#not a comment'",
    "&anchor v", "*anchor", "1:2", "'it''s'", "é", "$",
]
KEYS = ["target", "kind", "identity", "ensure", "mode", "metadataUrl", "applicationIdentifier", "applicationTrustLevel",
        "enabled", "useOAuthServer", "realm", "certificateFile", "unknownField", "'quoted key'", '"\\x02key"',
        "<<", "? complex", "1", "null", "'${lab}'", "k" * 300]


def _mostly(draw: st.DrawFn, usual: str, *others: str) -> str:
    """`usual` four times in five, else one of `others`."""
    return usual if draw(st.integers(0, 4)) or not others else draw(st.sampled_from(others))


@st.composite
def manifests(draw: st.DrawFn) -> str:
    """Manifest text from parts a manifest holds, with now and then a value, key or feature the loader refuses."""
    lab = _mostly(draw, "http://127.0.0.1:8470", "x", "${a}", '"\\x01"', "7")
    lines = ["apiVersion: reconciler/v1", "variables:", f"  lab: {lab}",
             f"  a: {_mostly(draw, 'b', '${lab}', 'http://h', '[1]')}"]
    host = _mostly(draw, "h", '"${lab}"', "7", "http://h")
    lines += ["targets:", "  pool:", "    provider: skype", f"    connection: {{transport: lab, host: {host}}}"]
    if draw(st.booleans()):
        host = _mostly(draw, "h2", "${a}", '"a\\x01"')
        lines += ["  ex:", "    provider: exchange", "    connection:", "      transport: lab", f"      host: {host}"]
    count = draw(st.integers(0, 4))
    lines.append("resources:" if count else "resources: []")
    for index in range(count):
        kind = _mostly(draw, "PartnerApplication", "OAuthServer", "OAuthConfiguration", "Nope")
        lines += [f"  - target: {_mostly(draw, 'pool', 'ex', 'missing')}", f"    kind: {kind}",
                  f"    identity: {_mostly(draw, f'app{index}', 'App', '${lab}', 'x' * 3, 'other')}",
                  _mostly(draw, "    useOAuthServer: true", "    metadataUrl: ${lab}/m/json/1",
                          "    metadataUrl: https://h/m", "    realm: r.example")]
        used = {line.split(":")[0].strip("- ") for line in lines[-4:]}
        for _ in range(draw(st.integers(0, 2))):
            unusual = draw(st.integers(0, 29)) == 0
            key = draw(st.sampled_from(KEYS if unusual else KEYS[3:12]))
            value = draw(st.sampled_from(SCALARS if unusual else USUAL))
            if not unusual and key in used:
                continue  # a duplicate key only now and then
            used.add(key)
            lines.append(f"    {key}: {textwrap.indent(value, '  ').lstrip()}")
    if draw(st.booleans()):
        check = _mostly(draw, "x", '"${lab}"')
        lines += ["verify:", f"  - {{target: pool, check: {check}}}"]
    if draw(st.integers(0, 5)) == 0:  # a top-level extra: an anchor, a merge, a second document, a deep or bad line
        lines.append(draw(st.sampled_from([
            "defaults: &d {a: 1}", "other: {<<: {a: 1}, b: 2}", "---\nsecond: 1", "deep: " + "[" * 70 + "]" * 70,
            "bad: [unclosed", "apiVersion: again", "tagged: !!map {a: 1}", "\tindent: tab", "list: !!seq [1]"])))
    return "\n".join(lines) + "\n"


def _composed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(positions, "_by_lines", lambda text, notable: None)
    monkeypatch.setattr(positions, "_direct", lambda text, notable: None)


def _outcome(path: Path) -> Any:
    try:
        return load_manifest(path, registry())
    except ManifestError as exc:
        return [str(p) for p in exc.problems]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=manifests())
def test_the_direct_path_parses_as_the_composing_path(text: str) -> None:
    direct = positions.parse(text, _notable)
    composed = positions.parse(text)
    assert (direct.data, dict(direct.lines), direct.problems, direct.opaque) == (
        composed.data, dict(composed.lines), composed.problems, composed.opaque)
    if direct.notable is not None:  # every key and text value the loader acts on is listed, in document order
        assert not direct.problems
        assert direct.notable == tuple((path, is_key) for path, is_key, text in _texts(direct.data, ())
                                       if _notable(text))
    # One path's line, and one collection's lines, without working out every path's (what a load asks)
    fresh = positions.parse(text, _notable)
    for path, line in composed.lines.items():
        assert fresh.lines.get(path) == line, path
    assert fresh.lines.get(("no such key",)) is None
    for path, value in _collections(composed.data, ()):
        keys = list(value) if isinstance(value, dict) else range(len(value))
        assert list(fresh.lines_of(path, value)) == [composed.lines.get((*path, k)) for k in keys], path
    if isinstance(fresh.lines, positions.ContainerLines):
        assert fresh.lines._flat is None


def _collections(value: Any, path: tuple[Any, ...]) -> Any:
    """(path, value) of every mapping and list, the root first."""
    if isinstance(value, dict | list):
        yield path, value
        for k, v in (value.items() if isinstance(value, dict) else enumerate(value)):
            yield from _collections(v, (*path, k))


def test_lines_of_a_collection_that_changed_since_the_parse_are_looked_up_one_by_one() -> None:
    doc = positions.parse("a:\n  b: 1\n  c: 2\n", _notable)
    assert isinstance(doc.lines, positions.ContainerLines)
    assert list(doc.lines_of(("a",), doc.data["a"])) == [2, 3]
    doc.data["a"]["d"] = 4  # a key the document did not have: no line of its own
    assert list(doc.lines_of(("a",), doc.data["a"])) == [2, 3, None]


def _texts(value: Any, path: tuple[Any, ...]) -> Any:
    """(path, is a key, text) of every key and text value, in document order."""
    if isinstance(value, str):
        yield path, False, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield (*path, k), True, k
            yield from _texts(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _texts(v, (*path, i))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=manifests())
def test_the_loader_gives_the_same_state_or_problems_either_way(tmp_path: Path, text: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    direct = _outcome(path)
    with pytest.MonkeyPatch.context() as patch:
        _composed(patch)
        composed = _outcome(path)
    assert direct == composed


def test_a_plain_manifest_takes_the_direct_path_and_loads_as_composed(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "sp.cer").write_bytes(b"cert")
    path = Path("manifests") / "x.yaml"
    path.write_text(GOOD, encoding="utf-8")
    assert positions.parse(GOOD, _notable).notable is not None
    direct = load_manifest(path, registry())
    _composed(monkeypatch)
    assert load_manifest(path, registry()) == direct


@pytest.mark.parametrize("text", [
    "a: &x 1\nb: *x\n", "a: 1\na: 2\n", "a: !!str 1\n", "<<: {a: 1}\n", "a: 1\n---\nb: 2\n", "", "[1, 2\n",
    "a: <<\n", "? [a]\n: 1\n", "a: " + "[" * 70 + "]" * 70 + "\n",
])
def test_unusual_documents_go_the_composing_way(text: str) -> None:
    assert positions.parse(text, _notable).notable is None
    assert positions.parse(text, _notable) == positions.parse(text)


PLAIN = ["~", "null", "Null", "NULL", "true", "True", "TRUE", "yes", "No", "on", "OFF", "y", "n", "t", "f", "0",
         "012", "0x1f", "0o17", "0b101", "1_000", "1:20", "-1", "+1", ".5", ".inf", "-.Inf", ".nan", "1e3",
         "6.8523015e+5", "2001-12-14", "2001-12-14 21:59:43.10 -5", "=", "bare", "Yes please", "once", "Orange",
         "Nothing", "~x", "+x", "-x", "2001", "190:20:30.15", "00000003-0000-0ff1-ce00-000000000000", "é"]


@pytest.mark.parametrize("value", PLAIN)
def test_a_plain_scalar_means_the_same_either_way(value: str) -> None:
    text = f"key: {value}\nlist: [{value}]\n"
    direct, composed = positions.parse(text, _notable), positions.parse(text)
    assert (direct.data, dict(direct.lines), direct.problems) == (
        composed.data, dict(composed.lines), composed.problems)
    if value not in ("=",):  # '=' resolves to a tag the builder refuses: the composing path says so
        assert direct.notable is not None


def test_the_direct_path_makes_one_string_per_distinct_key() -> None:
    """The resources' dicts share their keys' strings (what the read-ahead sends once, and what the loader hashes
    once): the same data as before, fewer objects."""
    text = "resources:\n" + "".join(f"  - target: pool\n    kind: K\n    identity: i{n}\n" for n in range(3))
    doc = positions.parse(text, _notable)
    assert doc.notable is not None  # read by the direct path
    first, *rest = doc.data["resources"]
    for other in rest:
        assert all(a is b for a, b in zip(first, other, strict=True))
    assert doc.data == positions.parse(text).data
