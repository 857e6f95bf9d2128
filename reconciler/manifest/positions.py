"""YAML to plain data, remembering the line of every value.

PyYAML's `safe_load` forgets where things were and silently keeps the last of two duplicate keys.
Both matter for a manifest: every message must point at a line, and a duplicated key is almost
always a copy-paste mistake. So we compose the node tree ourselves and build plain data from it
with SafeLoader's scalar rules, recording `path -> line` on the way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.manifest.collector import collector_paused

FieldPath = tuple[str | int, ...]
"""Where a value sits in the document: mapping keys and list indexes, e.g. ("resources", 2, "kind")."""

MAX_DEPTH = 64
"""Deeper nesting than this is certainly not a manifest; refusing it keeps recursion bounded."""

MAX_ALIASED = 100_000
"""Values built through aliases, at most: aliases can expand exponentially ("billion laughs"). Only
expansions count (a value reached again through an alias, and everything under it), so a large manifest
written out in full (1,000 targets x 50 resources is about 600,000 values) loads."""

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"
_TIMESTAMP = _TAG + "timestamp"
_STR = _TAG + "str"


@dataclass(frozen=True)
class YamlProblem:
    """Something wrong at the YAML level, before any manifest meaning is applied."""

    line: int
    path: FieldPath
    message: str


@dataclass(frozen=True)
class Document:
    """Plain data (None when the text could not be parsed at all) plus the line of each path.

    `opaque` lists paths whose value was dropped because of a YAML problem (an unsupported tag,
    a recursive alias): later checks stay silent there so each mistake gets one message.
    """

    data: Any
    lines: Mapping[FieldPath, int]
    problems: tuple[YamlProblem, ...]
    opaque: frozenset[FieldPath] = frozenset()
    notable: tuple[tuple[FieldPath, bool], ...] | None = None
    """From `parse(text, notable=...)` when the document was read by the direct path: every key (True, at its
    own path) and text value (False) the predicate picked, in document order; its `data` is then freshly built,
    shared with no one (no alias). None: not recorded, every value has to be visited."""

    def line(self, path: FieldPath) -> int:
        """The line of `path`, or of its nearest ancestor that exists (a missing field's object)."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return 1

    def lines_of(self, path: FieldPath, container: Mapping[str, Any] | list[Any]) -> Sequence[int | None]:
        """The line of each key (or item) of `container`, the value at `path`, in its order: what a load asks of
        every resource (at one lookup per container, not one per field, with the direct path's lines)."""
        if isinstance(self.lines, ContainerLines):
            found = self.lines.aligned(path, len(container))
            if found is not None:
                return found
        keys = container if isinstance(container, Mapping) else range(len(container))
        return [self.lines.get((*path, k)) for k in keys]


class ContainerLines(Mapping[FieldPath, int]):
    """The lines of a document read by the direct path, kept per collection: for each mapping the line of each key,
    for each sequence the line of each item, in order (a path built per collection, not per value: the parse makes
    ~7 values a line, and the lines cross from the process that read ahead). As a mapping (path -> line, what the
    composing path builds) it is worked out from the data when first asked, for a message or a test."""

    def __init__(self, data: Any, root_line: int, by_collection: dict[FieldPath, list[int]]) -> None:
        self.data = data
        self.root_line = root_line
        self.by_collection = by_collection
        self._flat: dict[FieldPath, int] | None = None

    def aligned(self, path: FieldPath, size: int) -> Sequence[int] | None:
        """The lines of the collection at `path` if it still has `size` keys or items (it was read so), else None."""
        found = self.by_collection.get(path)
        return found if found is not None and len(found) == size else None

    def _keys_at(self, path: FieldPath) -> Sequence[str | int] | None:
        """The keys (a mapping's) or indexes (a list's) of the collection now at `path`; None where there is none."""
        value = self.data
        try:
            for part in path:
                value = value[part]
        except (KeyError, IndexError, TypeError):
            return None  # not there any more: nothing to say of it
        if isinstance(value, dict):
            return list(value)
        return range(len(value)) if isinstance(value, list) else None

    def _paths(self) -> dict[FieldPath, int]:
        if self._flat is None:
            flat: dict[FieldPath, int] = {(): self.root_line}
            for path, lines in self.by_collection.items():
                keys = self._keys_at(path)
                for key, line in zip(keys or (), lines, strict=False):  # a collection changed since: its first lines
                    flat[(*path, key)] = line
            self._flat = flat
        return self._flat

    def get(self, path: FieldPath, default: Any = None) -> Any:
        """The line of one path, found through its collection (nothing worked out for the others)."""
        if self._flat is not None:
            return self._flat.get(path, default)
        if not path:
            return self.root_line
        lines = self.by_collection.get(path[:-1])
        keys = self._keys_at(path[:-1]) if lines is not None else None
        if lines is None or keys is None or path[-1] not in keys:
            return default
        index = keys.index(path[-1])
        return lines[index] if index < len(lines) else default

    def __getitem__(self, path: FieldPath) -> int:
        found = self.get(path)
        if found is None:
            raise KeyError(path)
        return int(found)

    def __iter__(self) -> Iterator[FieldPath]:
        return iter(self._paths())

    def __len__(self) -> int:
        return len(self._paths())


def format_path(path: FieldPath) -> str:
    """`("resources", 2, "kind")` -> `resources[2].kind`, the form every message uses."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


# libyaml's composer (when PyYAML was built with it) is several times faster on large manifests;
# the marks (line numbers) and scalar rules are the same.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse(text: str, notable: Callable[[str], bool] | None = None) -> Document:
    """Compose `text` as one YAML document and build plain data with line numbers. Never raises.

    With `notable`, a document that has nothing unusual (see `_direct`) is built straight from the parser's
    events, and `Document.notable` lists the keys and text values the predicate picked; one written in the plain
    block style most manifests use is read line by line first (`_by_lines`: the same result, in about 60% of the
    time).
    """
    with collector_paused():
        if notable is not None:
            direct = _by_lines(text, notable) or _direct(text, notable)
            if direct is not None:
                return direct
        return _parse(text)


def _parse(text: str) -> Document:
    try:
        try:
            root = yaml.compose(text, Loader=_LOADER)
        except yaml.YAMLError:
            # Re-read with the pure-Python loader: same verdict, clearer wording ("but got ':'").
            root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        return Document(None, {}, (_syntax_problem(exc),))
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        return Document(None, {}, (YamlProblem(line, (), f"invalid YAML: {exc.reason}"),))
    except yaml.YAMLError as exc:
        return Document(None, {}, (YamlProblem(1, (), f"invalid YAML: {exc}"),))
    except RecursionError:
        return Document(None, {}, (_too_deep(text),))
    if root is None:
        return Document(None, {}, (YamlProblem(
            1, (), "the manifest is empty: expected a mapping with apiVersion, targets and resources"),))
    # Without an anchor ('&' nowhere in the text) there is no alias: no node is reached twice, and the alias
    # accounting (a set of every node built) can be skipped; an '&' inside a string only costs that speed.
    builder = _Builder(aliases="&" in text)
    try:
        data = builder.build(root, (), 0)
    except _TooBig:
        problem = YamlProblem(1, (), f"aliases expand to more than {MAX_ALIASED:,} values (alias bomb?)")
        return Document(None, {}, (problem,))
    return Document(data, builder.lines, tuple(builder.problems), frozenset(builder.opaque))


@dataclass
class _Open:
    """A collection being read by `_too_deep`: its path, and where the next value in it goes."""

    path: FieldPath
    mapping: bool
    key: str | int | None = None  # the mapping key just read (the next value's); None: a key comes next
    index: int = 0


def _too_deep(text: str) -> YamlProblem:
    """Where the nesting first passes MAX_DEPTH: its line and path, from the parser's events.

    Composing a document nested thousands deep runs out of stack, but the parser is a state
    machine: reading its events keeps no recursion, so the place can still be named.
    """
    stack: list[_Open] = []
    message = f"nested more than {MAX_DEPTH} levels deep"
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionEndEvent):
                stack.pop()
                _advance(stack)
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            top = stack[-1] if stack else None
            is_key = top is not None and top.mapping and top.key is None
            where: FieldPath = () if top is None else top.path if is_key else (
                (*top.path, top.key) if top.mapping and top.key is not None else (*top.path, top.index))
            if isinstance(event, yaml.CollectionStartEvent):
                if len(stack) >= MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark is not None else 1
                    return YamlProblem(line, where, message)
                stack.append(_Open(where, isinstance(event, yaml.MappingStartEvent)))
            elif is_key and top is not None:
                top.key = str(event.value) if isinstance(event, yaml.ScalarEvent) else "*"
            else:
                _advance(stack)
    except yaml.YAMLError as exc:
        if isinstance(exc, yaml.MarkedYAMLError):
            return _syntax_problem(exc)
    return YamlProblem(1, (), f"invalid YAML: the document is {message}")


def _advance(stack: list[_Open]) -> None:
    """A value of the innermost open collection is complete."""
    if not stack:
        return
    top = stack[-1]
    if top.mapping:
        top.key = "?" if top.key is None else None  # a complex key (a collection) reads as "?"
    else:
        top.index += 1


def _syntax_problem(exc: yaml.MarkedYAMLError) -> YamlProblem:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    problem = (exc.problem or "syntax error").removeprefix("but ")
    message = f"invalid YAML: {problem}"
    if exc.context:
        where = ""
        if exc.context_mark is not None and exc.context_mark.line + 1 != line:
            where = f" at line {exc.context_mark.line + 1}"
        message += f" ({exc.context}{where})"
    if "'\\t'" in message:  # PyYAML: found character '\t' that cannot start any token
        message += "; YAML is indented with spaces, not tabs: replace the tab with spaces"
    return YamlProblem(line, (), message)


class _TooBig(Exception):
    """Raised when alias expansion exceeds MAX_ALIASED; aborts the whole build."""


class _Builder:
    """One build of one document: collects lines and problems as it goes (never shared)."""

    def __init__(self, *, aliases: bool = True) -> None:
        self.lines: dict[FieldPath, int] = {}
        self._aliases = aliases  # False: the document has no anchor, so no node can be reached twice
        self.problems: list[YamlProblem] = []
        self.opaque: set[FieldPath] = set()
        self._active: set[int] = set()
        self._built: set[int] = set()  # nodes built once: building one again is an alias expansion
        self._aliasing = 0  # > 0 while building through an alias
        self._aliased = 0
        constructor = SafeConstructor()
        self._scalars: dict[str, Callable[[ScalarNode], Any]] = {
            _TAG + "null": constructor.construct_yaml_null,
            _TAG + "bool": constructor.construct_yaml_bool,
            _TAG + "int": constructor.construct_yaml_int,
            _TAG + "float": constructor.construct_yaml_float,
            _TAG + "str": constructor.construct_yaml_str,
        }

    def _reject(self, node: Node, path: FieldPath, message: str) -> None:
        self.problems.append(YamlProblem(node.start_mark.line + 1, path, message))
        self.opaque.add(path)

    def build(self, node: Node, path: FieldPath, depth: int) -> Any:
        if not self._aliases:
            return self._build(node, path, depth)
        again = id(node) in self._built
        if again or self._aliasing:
            self._aliased += 1
            if self._aliased > MAX_ALIASED:
                raise _TooBig
        else:
            self._built.add(id(node))
        if not again:
            return self._build(node, path, depth)
        self._aliasing += 1
        try:
            return self._build(node, path, depth)
        finally:
            self._aliasing -= 1

    def _build(self, node: Node, path: FieldPath, depth: int) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if depth > MAX_DEPTH:
            self._reject(node, path, f"nested more than {MAX_DEPTH} levels deep")
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if not self._aliases:
            return self._collection(node, path, depth)
        if id(node) in self._active:
            self._reject(node, path, "an alias refers to a value that contains it (recursive alias)")
            return None
        self._active.add(id(node))
        try:
            return self._collection(node, path, depth)
        finally:
            self._active.discard(id(node))

    def _collection(self, node: Node, path: FieldPath, depth: int) -> Any:
        if isinstance(node, SequenceNode) and node.tag == _TAG + "seq":
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode) and node.tag == _TAG + "map":
            return self._mapping(node, path, depth)
        self._reject(node, path, f"unsupported YAML tag '{node.tag}'")
        return None

    def _scalar(self, node: ScalarNode, path: FieldPath) -> Any:
        if node.tag == _STR:
            return node.value  # what SafeConstructor.construct_yaml_str gives, without its two calls
        if node.tag == _TIMESTAMP or (node.style is None and _GUID.match(node.value)):
            return node.value  # dates stay text (JSON has no dates); GUIDs are always strings
        construct = self._scalars.get(node.tag)
        if construct is None:
            self._reject(node, path, f"unsupported YAML tag '{node.tag}'")
            return None
        try:
            return construct(node)
        except (ValueError, yaml.YAMLError):
            self._reject(node, path, f"cannot read value {node.value!r}")
            return None

    def _mapping(self, node: MappingNode, path: FieldPath, depth: int) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        explicit: dict[str, Any] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.update(self._merge(value_node, path, depth))
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self.problems.append(YamlProblem(line, path, "a mapping key must be a plain value"))
                continue
            key = str(key_node.value)
            if key in key_lines:
                self.problems.append(YamlProblem(
                    line, (*path, key), f"duplicate key '{key}' (first at line {key_lines[key]})"))
                continue
            key_lines[key] = line
            self.lines[(*path, key)] = line
            explicit[key] = self.build(value_node, (*path, key), depth + 1)
        return {**{k: v for k, v in merged.items() if k not in explicit}, **explicit}

    def _merge(self, node: Node, path: FieldPath, depth: int) -> dict[str, Any]:
        """`<<: *defaults` (or a list of them): the merged keys, explicit keys win as in PyYAML."""
        sources = node.value if isinstance(node, SequenceNode) else [node]
        out: dict[str, Any] = {}
        for source in reversed(sources):  # earlier sources win, like SafeConstructor.flatten_mapping
            if not isinstance(source, MappingNode):
                self.problems.append(YamlProblem(
                    source.start_mark.line + 1, path, "'<<' must merge a mapping or a list of mappings"))
                continue
            value = self.build(source, path, depth)
            if isinstance(value, dict):
                out.update(value)
        return out


# --- the direct path ----------------------------------------------------------------------------


class _Unusual(Exception):
    """The direct path does not take this document: the composing path reads it (and reports what is wrong)."""


_SCALAR_EVENT = yaml.ScalarEvent
_MAPPING_START = yaml.MappingStartEvent
_SEQUENCE_START = yaml.SequenceStartEvent
_COLLECTION_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_MISSING = object()
_scalar_node: Callable[..., ScalarNode] = ScalarNode


def _direct(text: str, notable: Callable[[str], bool]) -> Document | None:
    """`text` built from the parser's events without composing nodes, or None for the composing path.

    Taken only by a document with nothing that path would treat specially or report: one document, no anchor,
    alias or explicit tag, no merge key, no duplicate key, no value it cannot read, at most MAX_DEPTH deep.
    For such a document the data and lines are what the composing path builds (the same parser, resolver and
    scalar rules), with no problem; anything else (and any YAML error) returns None, so every message comes
    from the composing path as before.
    """
    loader = _LOADER(text)
    try:
        return _from_events(loader, notable, "&" in text or "!" in text)
    except (_Unusual, yaml.YAMLError, ValueError, TypeError):
        return None
    finally:
        loader.dispose()


def _from_events(loader: yaml.SafeLoader, notable: Callable[[str], bool], special: bool) -> Document:
    """The document from `loader`'s events; `special`: the text may hold an anchor or a tag ('&' or '!' in it).

    Lines are kept per collection (`ContainerLines`): each key's or item's line appended to its collection's list,
    a path made only for a collection (and for a value `notable` picks)."""
    get: Callable[[], Any] = loader.get_event
    if not isinstance(get(), yaml.StreamStartEvent) or not isinstance(get(), yaml.DocumentStartEvent):
        raise _Unusual  # an empty stream: the composing path says so
    scalars = _Scalars(loader)
    plain: dict[str, tuple[Any, bool]] = {}  # a plain scalar's text -> its value, notable (by text alone)
    notable_keys: dict[str, tuple[str, bool]] = {}  # a key's text -> the one string used for it, notable
    by_collection: dict[FieldPath, list[int]] = {}
    picked: list[tuple[FieldPath, bool]] = []
    stack: list[tuple[Any, FieldPath, bool, list[int]]] = []  # the collections that enclose `current`
    current: Any = None  # the open collection (None: the root value comes next)
    cpath: FieldPath = ()
    is_map = False
    at: list[int] = []  # the lines of the open collection's keys or items
    root: Any = _MISSING
    root_line = 1
    key: str | int = 0
    while True:
        event = get()
        cls = type(event)
        if cls in _COLLECTION_END:
            current, cpath, is_map, at = stack.pop()
            if current is None:
                break
            continue
        if is_map:  # a key, then its value (at the key's path; its line is the key's)
            if cls is not _SCALAR_EVENT:
                raise _Unusual  # a key that is a collection or an alias
            text_key: str = event.value
            if (special and (event.anchor is not None or event.tag is not None)) or text_key in current or (
                    text_key == "<<" and event.implicit[0]):
                raise _Unusual  # a merge, a duplicate
            at.append(event.start_mark.line + 1)
            known = notable_keys.get(text_key)
            if known is None:
                known = notable_keys[text_key] = (text_key, notable(text_key))
            key, pick = known  # one string per distinct key: dicts share it, and marshal sends it once
            if pick:
                picked.append(((*cpath, key), True))
            event = get()
            cls = type(event)
        elif current is not None:  # a list item
            key = len(current)
            at.append(event.start_mark.line + 1)
        else:
            root_line = event.start_mark.line + 1
        if special and (event.anchor is not None or event.tag is not None):
            raise _Unusual
        if cls is _SCALAR_EVENT:
            text_ = event.value
            if event.implicit[0]:
                found = plain.get(text_)
                if found is None:
                    value = scalars.plain(text_, event.style)
                    found = plain[text_] = (value, type(value) is str and notable(value))
                value, pick = found
            else:
                value, pick = text_, notable(text_)  # quoted or a block scalar: text
            if pick:
                picked.append(((*cpath, key) if current is not None else (), False))
            if is_map:
                current[key] = value
            elif current is not None:
                current.append(value)
            else:
                root = value
                break
            continue
        if cls is _MAPPING_START:
            child: Any = {}
        elif cls is _SEQUENCE_START:
            child = []
        else:
            raise _Unusual  # an alias
        if len(stack) >= MAX_DEPTH:
            raise _Unusual  # its items might be nested too deep: the composing path decides
        if is_map:
            current[key] = child
            path: FieldPath = (*cpath, key)
        elif current is not None:
            current.append(child)
            path = (*cpath, key)
        else:
            root = child
            path = ()
        stack.append((current, cpath, is_map, at))
        at = by_collection[path] = []
        current, cpath, is_map = child, path, cls is _MAPPING_START
    if not isinstance(get(), yaml.DocumentEndEvent) or not isinstance(get(), yaml.StreamEndEvent):
        raise _Unusual  # more than one document
    return Document(root, ContainerLines(root, root_line, by_collection), (), frozenset(), tuple(picked))


_LINE = re.compile(r"^( *)(- +)?(?:([A-Za-z0-9_][\w.\-/$]*):(?: +|$))?(.*)$", re.MULTILINE)
"""One line of the block style `_by_lines` reads: its indentation, a sequence item's dash, a plain key and what
follows (a value, or nothing when a collection follows on the next lines)."""
_NOT_LINES = re.compile(r"[\t\r\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u2028\u2029\ud800-\udfff\ufffe\uffff]")
"""What `_by_lines` leaves to the parser: tabs, line breaks other than LF (and CRLF), what YAML does not print."""
_NOT_PLAIN_FIRST = frozenset(",[]{}#&*!|>%@`?:")
_QUOTED = re.compile(r"'((?:[^']|'')*)'" r'|"([^"\\]*)"')
"""A quoted value `_by_lines` reads: single-quoted, or double-quoted without an escape."""
_LINE_END = re.compile(r"(?: +#.*)? *")
"""What may follow a value on its line: spaces, a comment."""
_FLOW = re.compile(r"\[([^\[\]#:?]*)\](?: +#.*)? *")
"""A one-line flow sequence `_by_lines` reads: `[a, "${b}"]`, whose items hold no `:`, `?` or `#` (nor `,` in
quotes, nor braces unquoted)."""
_Frame = tuple[int, Any, bool, FieldPath, list[int]]
"""An open collection of `_by_lines`: its indentation, the dict or list, whether a mapping, its path, its lines."""


def _by_lines(text: str, notable: Callable[[str], bool]) -> Document | None:
    """`text` read line by line, or None for the parser (`_direct`, then the composing path).

    Taken only by a document in the plain block style: a mapping at the top, every line a comment, blank, `key:`,
    `key: value`, `- value` or `- key: value` (a sequence indented under its key or not), where a key is plain text
    of letters, digits and `_ . - / $`, and a value fits on its line: plain text that cannot mean anything else to
    YAML (no `: `, no indicator first), quoted without escapes, or a one-line list `[a, b]` (`_FLOW`), a comment
    after it allowed. Everything else (flow mappings and nested lists, block scalars, anchors, tags, a value
    continued on the next line, tabs, a duplicate key, deeper than MAX_DEPTH, anything wrong) returns None, so the
    parser reads it and reports. What it returns is
    what `_direct` builds for the same text: the same resolver and scalar rules (`_Scalars`), the same lines, the
    same notable paths (tests/test_manifest_lines.py holds the two equal over generated documents)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if _NOT_LINES.search(text):
        return None
    scalars = _Scalars(_LOADER(""))
    plain: dict[str, tuple[Any, bool]] = {}  # a value's text -> its value, notable
    keys: dict[str, tuple[str, bool]] = {}  # a key's text -> the one string used for it, notable
    by_collection: dict[FieldPath, list[int]] = {}
    picked: list[tuple[FieldPath, bool]] = []

    def value_of(raw: str) -> tuple[Any, bool]:
        """The value written on a line (after `key: ` or `- `), and whether `notable` picks it."""
        found = plain.get(raw)
        if found is not None:
            return found
        first = raw[0]
        if first == "'" or first == '"':
            quoted = _QUOTED.match(raw)
            if quoted is None or not _LINE_END.fullmatch(raw, quoted.end()):
                raise _Unusual  # an escape, or more than a comment after the closing quote
            single = quoted.group(1)
            text_ = quoted.group(2) if single is None else single.replace("''", "'")
            return text_, notable(text_)
        cut = raw.find(" #")  # a comment ends the line
        text_ = (raw if cut < 0 else raw[:cut]).rstrip(" ")
        if first in _NOT_PLAIN_FIRST or (first == "-" and (len(text_) == 1 or text_[1] == " ")) or \
                ": " in text_ or text_[-1] == ":" or text_.startswith(("---", "...")):
            raise _Unusual
        value = scalars.plain(text_, None)
        found = plain[raw] = (value, type(value) is str and notable(value))
        return found

    def flow_of(raw: str, path: FieldPath, line: int) -> list[Any]:
        """A sequence written on one line in brackets: `[a, b]`, `[]` (`_FLOW`)."""
        flow = _FLOW.fullmatch(raw)
        if flow is None:
            raise _Unusual
        inside = flow.group(1).strip(" ")
        items: list[Any] = []
        for index, part in enumerate(inside.split(",") if inside else ()):
            part = part.strip(" ")
            if not part or (part[0] not in "'\"" and ("{" in part or "}" in part)):
                raise _Unusual
            value, pick = value_of(part)
            items.append(value)
            if pick:
                picked.append(((*path, index), False))
        by_collection[path] = [line] * len(items)
        return items

    root: dict[str, Any] | None = None
    stack: list[_Frame] = []
    top: _Frame | None = None
    pending: tuple[dict[str, Any], str, FieldPath, int] | None = None  # a key whose value starts on the next line
    line = root_line = 0
    try:
        for match in _LINE.finditer(text):
            line += 1
            spaces, dash, text_key, rest = match.groups()
            if dash is None and text_key is None:
                if not rest or rest[0] == "#":
                    continue  # blank, or a comment
                raise _Unusual
            indent = len(spaces)
            if top is None:
                if dash is not None or indent:
                    raise _Unusual  # the composing path reads a document that is not a mapping
                root = {}
                frame: _Frame = (0, root, True, (), by_collection.setdefault((), []))
                stack.append(top := frame)
                root_line = line
            elif pending is not None:
                owner, owner_key, path, key_indent = pending
                pending = None
                if indent > key_indent or (dash is not None and indent == key_indent):
                    opened: Any = [] if dash is not None else {}
                    owner[owner_key] = opened
                    top = (indent, opened, dash is None, path, by_collection.setdefault(path, []))
                    stack.append(top)
                    if len(stack) > MAX_DEPTH:
                        raise _Unusual  # as `_direct`: the composing path reports the depth
                else:
                    owner[owner_key] = scalars.plain("", None)
            if top[0] != indent or top[2] is (dash is not None):
                while stack[-1][0] > indent:
                    stack.pop()
                top = stack[-1]
                if dash is None and not top[2] and top[0] == indent and len(stack) > 1:
                    stack.pop()  # a sequence as indented as its key ends at the next key
                    top = stack[-1]
                if top[0] != indent or top[2] is (dash is not None):
                    raise _Unusual
            if dash is not None:
                items: list[Any] = top[1]
                top[4].append(line)
                index = len(items)
                if text_key is None:
                    if not rest or rest[0] == "#":
                        raise _Unusual  # an item on the next lines
                    if rest[0] == "[":
                        items.append(flow_of(rest, (*top[3], index), line))
                        continue
                    value, pick = value_of(rest)
                    items.append(value)
                    if pick:
                        picked.append(((*top[3], index), False))
                    continue
                item: dict[str, Any] = {}
                items.append(item)
                path = (*top[3], index)
                top = (indent + len(dash), item, True, path, by_collection.setdefault(path, []))
                stack.append(top)
                if len(stack) > MAX_DEPTH:
                    raise _Unusual
            mapping: dict[str, Any] = top[1]
            if text_key in mapping:
                raise _Unusual  # a duplicate: the composing path reports it
            top[4].append(line)
            known = keys.get(text_key)
            if known is None:
                known = keys[text_key] = (text_key, notable(text_key))
            key, pick = known
            if pick:
                picked.append(((*top[3], key), True))
            if not rest or rest[0] == "#":
                pending = (mapping, key, (*top[3], key), top[0])
                continue
            if rest[0] == "[":
                mapping[key] = flow_of(rest, (*top[3], key), line)
                continue
            value, pick = value_of(rest)
            mapping[key] = value
            if pick:
                picked.append(((*top[3], key), False))
        if pending is not None:
            pending[0][pending[1]] = scalars.plain("", None)
    except (_Unusual, yaml.YAMLError, ValueError, TypeError):
        return None
    if root is None:
        return None
    return Document(root, ContainerLines(root, root_line, by_collection), (), frozenset(), tuple(picked))


class _Scalars:
    """A plain scalar's value, as `_Builder._scalar` builds it from the node the composer would make."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self._resolve: Callable[[type[Node], str, tuple[bool, bool]], str] = loader.resolve
        # Resolver.resolve tries the implicit resolvers listed under the text's first character (and under None,
        # for any): text starting with another character is text. Only while no path resolver is set.
        resolvers = loader.yaml_implicit_resolvers
        self._firsts: frozenset[str] | None = (
            None if None in resolvers or "" not in resolvers or loader.yaml_path_resolvers
            else frozenset(k for k in resolvers if k))
        constructor = SafeConstructor()
        self._construct: dict[str, Callable[[ScalarNode], Any]] = {
            _TAG + "null": constructor.construct_yaml_null,
            _TAG + "bool": constructor.construct_yaml_bool,
            _TAG + "int": constructor.construct_yaml_int,
            _TAG + "float": constructor.construct_yaml_float,
        }

    def plain(self, text: str, style: str | None) -> Any:
        if self._firsts is not None and text and text[0] not in self._firsts:
            return text
        tag = self._resolve(ScalarNode, text, (True, False))
        if tag in (_STR, _TIMESTAMP) or (style is None and _GUID.match(text)):
            return text
        construct = self._construct.get(tag)
        if construct is None:
            raise _Unusual  # a tag the builder refuses (merge as a value)
        try:
            return construct(_scalar_node(tag, text, None, None, style))
        except yaml.YAMLError:
            raise _Unusual from None
