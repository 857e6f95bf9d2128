"""The manifest's YAML read line by line (positions._by_lines): for a document in the plain block style it gives
exactly what the parser's events give (positions._direct) and what the composing path builds, the same values of
the same types, the same lines and the same notable paths; anything else it leaves to them (None)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.manifest import positions
from reconciler.manifest.text import notable

ROOT = Path(__file__).resolve().parent.parent

KEYS = ["target", "kind", "identity", "metadataUrl", "a", "b.c", "x-y", "under_score", "a/b", "k$", "1", "yes",
        "on", "null", "True", "ünï", "k" * 40]
SCALARS = ["x", "Full", "true", "False", "yes", "No", "on", "OFF", "y", "~", "null", "NULL", "7", "-3", "+1", "012",
           "0x1F", "0o17", "0b101", "1_000", "1:20", "190:20:30.15", "1.5", ".5", "-.Inf", ".nan", "1e3",
           "6.8523015e+5", "2001-12-14", "2001-12-14 21:59:43.10 -5", "2001-12-14t21:59:43.10-05:00",
           "00000003-0000-0ff1-ce00-000000000000", "12345678-1234-1234-1234-12345678901A", "http://h/x",
           "https://a.example/m/json/1", "${lab}", "${lab}/x", "$${lab}", "$", "a#b", "a b", "a  b", "é", "-x", "~x",
           "=", "<<", "x,y", "a'b", 'a"b', "'quoted'", "'it''s'", "''", '""', '"double"', '"a # b"', "'a # b'",
           '"${lab}"', "'${lab}/x'", "[]", "[a, b]", "[ a ,b ]", "[1, true, ~]", '[ "${lab}" ]', "['x', y]",
           "[a, [b]]", "[a,, b]", "[a, b,]", "[a:b]", "[x?]", "[{a}]", "{a: 1}", "{}", "|", ">-", "&anchor v", "*alias",
           "!!str 3", "!tag x", "%x", "@x", "`x", "?x", ":x", "- x", "-", "a: b", "a:", "---", "...x", '"a\\tb"',
           "'open", '"open', "'a' b", '"a" # c', "'a'  # c", "x # comment", "x #", "x\t# tab",
           "y" * 300]
ODD_LINES = ["\tkey: tab", "key: |\n  block", "key: >-\n  folded", "  continued", "- item", "? complex\n: v",
             "---", "...", "%YAML 1.1", "&a key: v", "'quoted key': v", '"k": v', "key:value", "key :v", "- - a",
             "-\n  - a", "key: v\r", "k\u0085: v", "k: \ufeffv", "k: \x01", "k: \u2028", "<<: {a: 1}", "k: v # c"]


@st.composite
def block_documents(draw: st.DrawFn) -> str:
    """YAML text in the block style, indented 1 to 4 spaces, sequences under or beside their key, with comments,
    blank lines, trailing spaces, CRLF now and then, and now and then a line `_by_lines` must leave alone."""
    step = draw(st.integers(1, 4))
    out: list[str] = []

    def scalar() -> str:
        return draw(st.sampled_from(SCALARS[:12] if draw(st.integers(0, 2)) else SCALARS))

    def extras(indent: int) -> None:
        roll = draw(st.integers(0, 19))
        if roll == 0:
            out.append(" " * draw(st.integers(0, 8)) + "# a comment: with [things] & *more*")
        elif roll == 1:
            out.append(" " * draw(st.integers(0, 3)))
        elif roll == 2:
            out.append(" " * indent + draw(st.sampled_from(ODD_LINES)))

    def tail() -> str:
        return draw(st.sampled_from(["", "", "", "", " ", "  # note", "   #x"]))

    def mapping(indent: int, depth: int, first: str | None = None) -> None:
        """Keys at `indent`; `first`: the text before the first key (a sequence item's dash)."""
        used: set[str] = set()
        for index in range(draw(st.integers(1, 4))):
            key = draw(st.sampled_from(KEYS))
            if key in used and draw(st.integers(0, 9)):
                continue  # a duplicate only now and then
            used.add(key)
            lead = first if index == 0 and first is not None else " " * indent
            value(lead + key + ":", indent, depth)
            extras(indent)

    def value(head: str, indent: int, depth: int) -> None:
        shape = draw(st.integers(0, 9)) if depth < 4 else 0
        if shape <= 5:
            out.append(head + " " * draw(st.integers(1, 2)) + scalar() + tail())
        elif shape == 6:
            out.append(head + tail())  # nothing: null, or a collection that never comes
        elif shape in (7, 8):
            out.append(head + tail())
            mapping(indent + step, depth + 1)
        else:
            out.append(head + tail())
            sequence(indent + draw(st.sampled_from([0, step])), depth + 1)

    def sequence(indent: int, depth: int) -> None:
        for _ in range(draw(st.integers(1, 3))):
            dash = " " * indent + "-" + " " * draw(st.integers(1, 2))
            if draw(st.booleans()):
                out.append(dash + scalar() + tail())
            else:
                mapping(len(dash), depth + 1, first=dash)
            extras(indent)

    mapping(0, 0)
    text = "\n".join(out) + draw(st.sampled_from(["\n", "", "\n\n"]))
    return text.replace("\n", "\r\n") if draw(st.integers(0, 9)) == 0 else text


def typed(value: Any) -> Any:
    """`value` with every scalar's type beside it (1 == True == 1.0 in Python; not in a manifest)."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return type(value).__name__, repr(value)


def same_as_the_parser(text: str) -> positions.Document:
    """`_by_lines`' document for `text`, after checking it is `_direct`'s and the composing path's."""
    read = positions._by_lines(text, notable)
    assert read is not None
    direct = positions._direct(text, notable)
    assert direct is not None
    assert typed(read.data) == typed(direct.data)
    assert isinstance(read.lines, positions.ContainerLines) and isinstance(direct.lines, positions.ContainerLines)
    assert (read.lines.root_line, read.lines.by_collection) == (direct.lines.root_line, direct.lines.by_collection)
    assert read.notable == direct.notable
    composed = positions.parse(text)
    assert composed.problems == ()
    assert typed(read.data) == typed(composed.data)
    assert dict(read.lines) == dict(composed.lines)
    return read


@settings(max_examples=600, deadline=None)
@given(text=block_documents())
def test_what_it_reads_is_what_the_parser_reads(text: str) -> None:
    if positions._by_lines(text, notable) is not None:
        same_as_the_parser(text)


def test_the_shipped_manifests_are_read_line_by_line() -> None:
    manifests = sorted((ROOT / "manifests").glob("*.yaml"))
    assert manifests
    for path in manifests:
        same_as_the_parser(path.read_text(encoding="utf-8-sig"))


def test_a_large_manifest_in_the_benchmarks_shape_is_read_line_by_line() -> None:
    resources = "".join(
        f"- target: pool-{n % 7:03d}\n  kind: PartnerApplication\n  identity: partner-{n:03d}.bench.example\n"
        f"  applicationIdentifier: d833c2da-2694-5d21-8d23-{n:012d}\n  useOAuthServer: true\n"
        f"  metadataUrl: ${{lab}}/partner-{n:02d}/metadata/json/1\n" for n in range(300))
    targets = "".join(f"  pool-{n:03d}:\n    provider: skype\n    connection:\n      transport: lab\n"
                      f"      host: bench-cs-{n:03d}\n      latencyMs: 50.0\n" for n in range(7))
    text = f"apiVersion: reconciler/v1\nvariables:\n  lab: http://127.0.0.1:8470\ntargets:\n{targets}resources:\n" \
           + resources
    doc = same_as_the_parser(text)
    assert len(doc.data["resources"]) == 300
    assert doc.data["resources"][0]["useOAuthServer"] is True
    assert doc.data["targets"]["pool-000"]["connection"]["latencyMs"] == 50.0


@pytest.mark.parametrize("text", [
    "a:\n  b: 1\n  c: [x, 'y']\nd:\n- 1\n- e: f\n  g: ~\nh:\n",
    "# head\n\na: 1  # one\nb:   # a mapping follows\n   c: 'it''s'   # quoted\n   d: \"x # y\"\n",
    "a:\r\n  - b\r\n  - c\r\n",
    "list:\n  - [a, b]\n  - []\n  -  spaced\n",
])
def test_block_documents_are_read_as_the_parser_reads_them(text: str) -> None:
    same_as_the_parser(text)


@pytest.mark.parametrize("text", [
    "", "# only a comment\n", "- a\n", "just text\n", "a: {b: 1}\n", "a: |\n  b\n", "a: >-\n  b\n", "a: &x 1\n",
    "a: *x\n", "a: !!str 1\n", "a: 1\na: 2\n", "a:\tb\n", "a: b\n  c\n", "a:\n  b\n", "a:b\n", "'a': 1\n",
    "a:\n- # a comment, the item on the next line\n  b\n", "a:\n  - - b\n", "a: b\r", "a: b\x85", "a: \ufeffb\n",
    "a: \x01\n", "---\na: 1\n", "a: 1\n...\n", "%YAML 1.1\n---\na: 1\n", 'a: "b\\tc"\n', "a: 'b\n", "a: 'b' c\n",
    "a: b: c\n", "a: b:\n", "a: - b\n", "a: [b, [c]]\n", "a: [b{c]\n", "a: [b}]\n",
    "a: [b: c]\n", "a: [b,, c]\n", "a: [{b}]\n", "a: <<\n",
    "<<: {a: 1}\n", "a: ?b\n", "  a: 1\n", "a:\n    b: 1\n  c: 2\n",
])
def test_anything_else_is_left_to_the_parser(text: str) -> None:
    assert positions._by_lines(text, notable) is None
    assert positions.parse(text, notable) == (positions._direct(text, notable) or positions._parse(text))


def _nested(depth: int) -> str:
    return "".join(" " * level + f"k{level}:\n" for level in range(depth - 1)) + " " * (depth - 1) + "leaf: 1\n"


def test_nesting_as_deep_as_the_parser_allows_is_read_and_deeper_is_left_to_it() -> None:
    deepest = _nested(positions.MAX_DEPTH)
    assert same_as_the_parser(deepest) is not None
    too_deep = _nested(positions.MAX_DEPTH + 1)
    assert positions._by_lines(too_deep, notable) is None
    assert positions._direct(too_deep, notable) is None
    assert "nested more than" in positions.parse(too_deep, notable).problems[0].message
