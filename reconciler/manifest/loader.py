"""Manifest file -> DesiredState, or a ManifestError listing every problem found.

Order of work: YAML (with lines) -> variables -> expand `${...}` in targets and resources -> text
every system can carry (no lone surrogates or control characters, bounded lengths, URLs httpx can
send; names of secrets' environment variables, never shown) -> schema (document, then each resource
against its exact kind) -> semantic checks (targets exist, kinds belong to the target's provider, no
duplicates) -> each kind's `prepare`. Problems are collected, never raised one by one: a user fixes
a manifest in one pass, not one error per run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from reconciler import known_after_apply
from reconciler.errors import FieldProblem, ManifestError, ManifestProblem, ReconcilerError
from reconciler.kinds.spec import KindSpec
from reconciler.manifest import ahead
from reconciler.manifest.collector import collector_paused
from reconciler.manifest.notify import destination
from reconciler.manifest.positions import Document, FieldPath, format_path, parse
from reconciler.manifest.schema import COMMON_FIELDS, SchemaChecker, SchemaIssue
from reconciler.manifest.text import CONTROLS as _CONTROLS
from reconciler.manifest.text import MAX_VALUE
from reconciler.manifest.text import SURROGATES as _SURROGATES
from reconciler.manifest.text import notable as _notable
from reconciler.manifest.variables import MAX_TOTAL, Variables, resolve
from reconciler.model import (
    DesiredResource,
    DesiredState,
    Ensure,
    JSONValue,
    Mode,
    SourceLocation,
    TargetSpec,
    VerifyCheck,
    desired_resource,
)
from reconciler.providers.base import Registry, checks_of
from reconciler.suggest import did_you_mean
from reconciler.transports.graph_auth import NOT_A_NAME, is_env_name

SINGLETON_IDENTITY = "Global"
EXPECTED_TOP = "a mapping with apiVersion, targets and resources"
MAX_URL = 2048
"""The longest URL a manifest may give (browsers and servers commonly stop near here)."""

_SURROGATE = re.compile(f"[{_SURROGATES}]")
_CONTROL = re.compile(f"[{_CONTROLS}]")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_MODES = frozenset(Mode)
_ENSURES = frozenset(e.value for e in Ensure)
_ENSURE_OF = {e.value: e for e in Ensure}
_PRESENT, _ABSENT = Ensure.PRESENT.value, Ensure.ABSENT.value
_UNSAFE = re.compile(f"[{_SURROGATES}{_CONTROLS}]")
"""Either of the above: one search answers the common case (nothing wrong)."""
_ATOMS = (str, int, float, bool, type(None))
"""What YAML scalars build: a value no walk of the document descends into."""


@dataclass
class _Run:
    """The state of one load: where problems go and which paths already have one."""

    file: str
    doc: Document
    problems: list[ManifestProblem] = field(default_factory=list)
    reported: set[FieldPath] = field(default_factory=set)
    expanded: int = 0
    """Characters substituted into fields so far (bounded by MAX_TOTAL)."""

    def add(self, path: FieldPath, message: str, line: int | None = None, *, mark: bool = True) -> None:
        """Record a problem; `mark` silences later complaints at or under `path`."""
        line = self.doc.line(path) if line is None else line
        self.problems.append(ManifestProblem(self.file, line, printable(format_path(path)), printable(message)))
        if mark:
            self.reported.add(path)

    def troubled(self, base: FieldPath) -> bool:
        """True when anything at or under `base` has a problem."""
        if not self.reported and not self.doc.opaque:
            return False
        return any(p[:len(base)] == base for p in self.reported | self.doc.opaque)

    def silent(self, path: FieldPath) -> bool:
        """True when `path` or an ancestor already has a problem (one message per mistake)."""
        if not self.reported and not self.doc.opaque:
            return False
        blocked = self.reported | self.doc.opaque
        return any(path[:end] in blocked for end in range(len(path) + 1))

    def add_issues(self, base: FieldPath, issues: list[SchemaIssue]) -> None:
        if not issues:
            return
        fresh = [(base + i.path, i.message) for i in issues if not self.silent(base + i.path)]
        for path, message in fresh:
            self.add(path, message)


def load_manifest(path: Path, registry: Registry, overrides: Mapping[str, str] | None = None) -> DesiredState:
    """Read and check a manifest. Raises ManifestError with all problems; never another exception."""
    with collector_paused():  # what a load allocates is not cyclic
        return _load(path, registry, overrides)


def _load(path: Path, registry: Registry, overrides: Mapping[str, str] | None) -> DesiredState:
    file = str(path)
    overrides = dict(overrides or {})
    try:
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL byte
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ManifestError([ManifestProblem(file, 1, "", f"cannot read the manifest: {reason}")]) from None
    encoding = encoding_problem(raw)
    if encoding is not None:
        line, message = encoding
        raise ManifestError([ManifestProblem(file, line, "", f"the manifest is {message}")]) from None
    text = raw.decode("utf-8-sig")

    checker = SchemaChecker(registry)
    digest = hashlib.sha256(raw)  # what the read-ahead is compared with, and the manifest's fingerprint
    # read meanwhile by a second process (reconciler.manifest.ahead), if it was; the schema's check made while waiting
    taken = ahead.take(path, digest.digest(), checker.prepare)
    doc = taken if taken is not None else parse(text, _notable)
    run = _Run(file, doc)
    for problem in doc.problems:
        # Not marked: a duplicate key must not hide problems in the first occurrence's value.
        run.add(problem.path, problem.message, problem.line, mark=False)
    if doc.data is None and not doc.problems:
        run.add((), f"expected {EXPECTED_TOP}, got null")
    if doc.data is None:
        raise ManifestError(run.problems)
    if not isinstance(doc.data, dict):
        run.add((), f"expected {EXPECTED_TOP} at the top level, got {_kind_of(doc.data)}")
        raise ManifestError(run.problems)

    data: dict[str, Any] = doc.data
    variables = _variables(run, data.get("variables"), overrides)
    expanded = {**data}
    if doc.notable is None:
        for section in ("targets", "resources", "verify"):
            if section in data:
                expanded[section] = _expand(run, variables, data[section], (section,))
    else:
        _expand_notable(run, variables, expanded, doc.notable)
    _check_secret_names(run, expanded.get("targets"))
    if doc.notable is None:
        _check_text(run, expanded, ())
    else:
        _check_notable(run, expanded, doc.notable)

    run.add_issues((), checker.check_document(expanded))
    targets = _targets(run, registry, expanded.get("targets"))
    items = expanded.get("resources")
    resources = _resources(run, registry, checker, targets, items if isinstance(items, list) else [],
                           path.parent)
    checks = _checks(run, registry, targets, expanded.get("verify"))
    _references(run, resources)
    if run.problems:
        raise ManifestError(list(dict.fromkeys(run.problems)))
    return DesiredState(
        manifest_path=file,
        manifest_sha256=_fingerprint(digest, overrides),
        targets={name: spec for name, spec in (targets or {}).items() if spec is not None},
        resources=tuple(resources),
        checks=tuple(checks),
        notify=tuple(destination(d) for d in expanded.get("notify") or () if isinstance(d, dict)),
    )


def _checks(run: _Run, registry: Registry, targets: dict[str, TargetSpec | None] | None,
            items: Any) -> list[VerifyCheck]:
    """`verify:` entries: each names a defined target and a check its provider offers."""
    out: list[VerifyCheck] = []
    for index, item in enumerate(items if isinstance(items, list) else []):
        base: FieldPath = ("verify", index)
        if not isinstance(item, dict) or run.troubled(base):
            continue
        name, check = item.get("target"), item.get("check")
        target = (targets or {}).get(str(name))
        if target is None:
            if targets is not None and name not in targets:
                defined = ", ".join(sorted(targets)) or "none"
                run.add((*base, "target"), f"no target named {name!r} (defined: {defined})"
                                           f"{did_you_mean(str(name), targets)}")
            continue
        offered = checks_of(registry.provider(target.provider))
        if check not in offered:
            run.add((*base, "check"), f"provider {target.provider!r} of target {name!r} has no check {check!r} "
                                      f"(it has: {', '.join(sorted(offered)) or 'none'})")
            continue
        arguments = {k: v for k, v in item.items() if k not in ("target", "check")}
        out.append(VerifyCheck(str(name), str(check), arguments,
                               SourceLocation(run.file, run.doc.line(base), format_path(base))))
    return out


def _fingerprint(file: hashlib._Hash, overrides: Mapping[str, str]) -> str:
    """sha256 of the file (`file`: its digest so far); with --var overrides, of the file plus the sorted overrides.

    Without overrides it is the plain file hash, so `sha256sum` can confirm it.
    """
    digest = file.copy()
    if overrides:
        digest.update(b"\0" + json.dumps(sorted(overrides.items()), ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def _variables(run: _Run, section: Any, overrides: Mapping[str, str]) -> Variables:
    """Resolve the `variables` section plus overrides; report problems at each variable's line.

    A variable whose text cannot be carried is reported once, at itself; its uses stay silent.
    """
    section = section if isinstance(section, dict) else {}
    unusable = {k for k, v in section.items() if not isinstance(v, str)}
    for name, value in section.items():
        problem = text_problem(value, url=False) if isinstance(value, str) else None
        if problem is not None:
            run.add(("variables", name), problem)
            unusable.add(name)
    literals: dict[str, str] = {}
    for name, value in overrides.items():
        if name not in section:  # a misspelt --var would otherwise be ignored without a word
            declared = ", ".join(sorted(section)) or "none"
            run.add(("variables",), f"--var {name}: the manifest declares no variable of that name "
                                    f"(declared: {declared})")
            continue
        problem = text_problem(value)
        if problem is not None:
            run.add(("variables", name), f"--var {name}: the value {problem}")
            unusable.add(name)
            continue
        literals[name] = value
    templates = {k: v for k, v in section.items() if isinstance(v, str) and k not in unusable}
    variables, problems = resolve(templates, literals, frozenset(unusable - set(literals)))
    for variable in problems:
        run.add(("variables", variable.name), variable.message)
    return variables


def _expand(run: _Run, variables: Variables, value: Any, path: FieldPath) -> Any:
    """Substitute variables in every string of a section (keys stay literal)."""
    if isinstance(value, str):
        if "$" not in value:
            return value  # nothing to substitute (most strings): what `expand` would give, without the work
        result = variables.expand(value)
        if _names_a_variable(path):
            # Never echoed: _check_secret_names says what is wrong without the text.
            return result.text
        if not result.errors and not result.tainted and run.expanded + result.inserted > MAX_TOTAL:
            run.add(path, f"variables (most of all ${{{result.largest}}}) expand to more than {MAX_TOTAL:,} "
                          "characters in this manifest's fields")
            return value
        run.expanded += result.inserted
        for message in result.errors:
            run.add(path, message)
        if result.tainted:
            run.reported.add(path)
        return result.text
    # A collection in which nothing was substituted is returned as it is (most of a manifest): no copy is made.
    if isinstance(value, dict):
        out: dict[str, Any] | None = None
        for index, (k, v) in enumerate(value.items()):
            # An atom other than text with a `$` is what _expand returns for it: the value itself.
            new = v if type(v) in _ATOMS and not (type(v) is str and "$" in v) else _expand(run, variables, v,
                                                                                             (*path, k))
            if out is None and new is not v:
                out = dict(itertools.islice(value.items(), index))
            if out is not None:
                out[k] = new
        return value if out is None else out
    if isinstance(value, list):
        copied: list[Any] | None = None
        for i, v in enumerate(value):
            new = v if type(v) in _ATOMS and not (type(v) is str and "$" in v) else _expand(run, variables, v,
                                                                                             (*path, i))
            if copied is None and new is not v:
                copied = value[:i]
            if copied is not None:
                copied.append(new)
        return value if copied is None else copied
    return value


def _at(value: Any, path: FieldPath) -> Any:
    for part in path:
        value = value[part]
    return value


def _expand_notable(run: _Run, variables: Variables, expanded: dict[str, Any],
                    notable: tuple[tuple[FieldPath, bool], ...]) -> None:
    """`_expand` of each section, visiting only the text the parser listed (every value with a `$` is listed).

    Substitutes in place: a document read by the direct path is built for this load alone and shares nothing
    (no alias), so this gives what `_expand`'s copies give; the top level is `expanded`, already a copy.
    """
    for section in ("targets", "resources", "verify"):
        for path, is_key in notable:
            if is_key or path[0] != section:
                continue
            parent = _at(expanded, path[:-1])
            value = parent[path[-1]]
            if type(value) is str and "$" in value:
                new = _expand(run, variables, value, path)
                if new is not value:
                    parent[path[-1]] = new


def _check_notable(run: _Run, expanded: dict[str, Any], notable: tuple[tuple[FieldPath, bool], ...]) -> None:
    """`_check_text(run, expanded, ())` for a document whose keys and text outside `notable` `_plain` passes:
    the same checks of the listed ones, in the same order (a key before its value), each silenced as there."""
    found: dict[tuple[str, bool], str | None] = {}  # text_problem of text met again (a URL used by many resources)
    for path, is_key in notable:
        if is_key:
            key = path[-1]
            if (isinstance(key, str) and (len(key) > MAX_VALUE or _UNSAFE.search(key) is not None)
                    and not run.silent(path[:-1])):
                problem = text_problem(key, url=False)
                if problem is not None:
                    run.add(path, f"the key {problem}")
            continue
        value = _at(expanded, path)
        if type(value) is str and not _plain(value) and not run.silent(path):
            url = path[0] != "variables"
            problem = found.get((value, url), "")
            if problem == "":
                problem = found[(value, url)] = text_problem(value, url=url)
            if problem is not None:
                run.add(path, problem)


def _names_a_variable(path: FieldPath) -> bool:
    """`targets.<name>.connection.<something>Env`: a setting that names an environment variable (of a secret)."""
    return (len(path) == 4 and path[0] == "targets" and path[2] == "connection" and isinstance(path[3], str)
            and path[3].endswith("Env"))


def _check_secret_names(run: _Run, targets: Any) -> None:
    """Settings that name an environment variable hold a name; anything else may be the secret: not shown."""
    for name, spec in (targets.items() if isinstance(targets, dict) else ()):
        connection = spec.get("connection") if isinstance(spec, dict) else None
        for key, value in (connection.items() if isinstance(connection, dict) else ()):
            path: FieldPath = ("targets", name, "connection", key)
            if _names_a_variable(path) and not is_env_name(value) and not run.silent(path):
                run.add(path, NOT_A_NAME)


UTF16 = ("UTF-16 text (Notepad's \"Unicode\", or what PowerShell 5's `>` and Out-File write): save it as UTF-8 "
         "(Notepad: Save As, Encoding: UTF-8; PowerShell: Set-Content -Encoding utf8)")


def encoding_problem(raw: bytes) -> tuple[int, str] | None:
    """None for UTF-8 text (a BOM allowed), else the line and what the file is instead ("UTF-16 text ...")."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(raw) >= 2 and b"\x00" in raw[:2]
                                                       and raw[:400].count(b"\x00") * 3 >= min(len(raw), 400)):
        return 1, UTF16
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return raw.count(b"\n", 0, exc.start) + 1, "not UTF-8 text"
    return None


def decode_text(raw: bytes, what: str) -> str:
    """UTF-8 text of a file the user wrote, or a ReconcilerError saying what it is instead (UTF-16 by name)."""
    problem = encoding_problem(raw)
    if problem is not None:
        line, message = problem
        raise ReconcilerError(f"{what}:{line}: the file is {message}")
    return raw.decode("utf-8-sig")


def printable(text: str) -> str:
    """`text` on one line that any terminal, log and UTF-8 store can take: what is not printable is escaped.

    Messages quote what the user wrote (a key, a value), which may hold a line break, a control
    character or a lone surrogate; each becomes its Python escape (\\n, \\x1f, \\ud800).
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def text_problem(value: str, *, url: bool = True) -> str | None:
    """What makes `value` text a target cannot be given, in words (without echoing it); None when fine.

    Refused: lone surrogates (not Unicode: nothing can encode them), control characters other than
    tab and line breaks, more than MAX_VALUE characters, and a URL (`scheme://...`) longer than
    MAX_URL or one httpx cannot send (`url=False`: not checked, for `${...}` templates).
    """
    if len(value) <= MAX_VALUE and (not url or "://" not in value) and _UNSAFE.search(value) is None:
        return None  # the common case, in one pass: no surrogate, no control character, not a URL
    found = _SURROGATE.search(value)
    if found:
        return (f"contains a lone surrogate (U+{ord(found.group()):04X}) at character {found.start() + 1}: it is "
                "not Unicode text, and neither PowerShell nor HTTP can carry it")
    found = _CONTROL.search(value)
    if found:
        return (f"contains the control character U+{ord(found.group()):04X} at character {found.start() + 1} "
                "(only tab and line breaks are allowed)")
    if url and _URL.match(value):
        if len(value) > MAX_URL:
            return f"is a URL of {len(value):,} characters; at most {MAX_URL:,} are allowed"
        try:
            parsed = httpx.URL(value)
        except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
            return f"is not a URL that HTTP can carry ({_reason(exc)})"
        problem = _host_problem(parsed)
        if problem is not None:
            return f"is not a URL that HTTP can carry ({problem})"
    if len(value) > MAX_VALUE:
        return f"is {len(value):,} characters long; at most {MAX_VALUE:,} are allowed"
    return None


def _host_problem(url: httpx.URL) -> str | None:
    """What DNS or the socket layer would refuse later (out of httpx's own checks), in words."""
    if url.port is not None and not 0 < url.port <= 65535:
        return f"port {url.port}: a port is 1 to 65535"
    host = url.raw_host.decode("ascii", "replace")
    if ":" in host:  # an IPv6 literal; httpx has checked it
        return None
    if len(host) > 253 or any(len(label) > 63 for label in host.rstrip(".").split(".")):
        return "a host name is at most 253 characters, each part between dots at most 63"
    return None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _check_text(run: _Run, value: Any, path: FieldPath, *, url: bool = True) -> None:
    """Every key and string of the (expanded) document, through `text_problem`, at its own path."""
    if run.silent(path):
        return
    if isinstance(value, str):
        problem = text_problem(value, url=url)
        if problem is not None:
            run.add(path, problem)
    elif isinstance(value, dict):
        for key, item in value.items():
            # The common cases answered here, as text_problem answers them: a key and a value with nothing wrong
            # (no surrogate or control character, not too long; a value that is no URL), a number, true, null.
            if type(key) is not str or (len(key) > MAX_VALUE or _UNSAFE.search(key) is not None):
                problem = text_problem(key, url=False) if isinstance(key, str) else None
                if problem is not None:
                    run.add((*path, key), f"the key {problem}")
                    continue
            if type(item) in _ATOMS and (type(item) is not str or _plain(item)):
                continue
            # `variables` holds templates (`${host}:${port}` is no URL yet); their uses are checked.
            _check_text(run, item, (*path, key), url=url and (*path, key) != ("variables",))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if type(item) in _ATOMS and (type(item) is not str or _plain(item)):
                continue
            _check_text(run, item, (*path, index), url=url)


def _plain(value: str) -> bool:
    """True for text text_problem passes whether or not URLs are checked (short, no URL, nothing unsafe)."""
    return len(value) <= MAX_VALUE and "://" not in value and _UNSAFE.search(value) is None


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    return "a single value"


def _targets(run: _Run, registry: Registry, section: Any) -> dict[str, TargetSpec | None] | None:
    """Targets by name (None for a target too broken to use); None when `targets` itself is unusable."""
    if not isinstance(section, dict):
        return None
    out: dict[str, TargetSpec | None] = {}
    lines = run.doc.lines_of(("targets",), section)
    for (name, spec), line in zip(section.items(), lines, strict=True):
        provider = spec.get("provider") if isinstance(spec, dict) else None
        connection = spec.get("connection") if isinstance(spec, dict) else None
        prune = spec.get("prune", []) if isinstance(spec, dict) else None
        if (isinstance(provider, str) and provider in registry.providers and isinstance(connection, dict)
                and isinstance(prune, list)):
            where = SourceLocation(run.file, line or run.doc.line(("targets", name)), f"targets.{name}")
            mode = spec.get("mode", Mode.ENFORCE.value)
            handlers = spec.get("handlers") if isinstance(spec.get("handlers"), dict) else {}
            protect = spec.get("protect") if isinstance(spec.get("protect"), list) else []
            out[name] = TargetSpec(name, provider, connection, frozenset(str(k) for k in prune), where,
                                   Mode(mode) if mode in _MODES else Mode.ENFORCE,
                                   {str(k): dict(v) for k, v in handlers.items() if isinstance(v, dict)},
                                   frozenset(str(p).casefold() for p in protect))
        else:
            out[name] = None
    return out


def _resources(run: _Run, registry: Registry, checker: SchemaChecker, targets: dict[str, TargetSpec | None] | None,
               items: list[Any], manifest_dir: Path) -> list[DesiredResource]:
    out: list[DesiredResource] = []
    first_seen: dict[tuple[str, str, str], int] = {}
    item_lines = run.doc.lines_of(("resources",), items)
    checks: dict[tuple[str | None, str], Callable[[Any], list[SchemaIssue]]] = {}
    # A target and kind that resolved once resolve the same way while no problem is reported and no value was dropped
    # (what `_kind_spec` would be silent about): (provider, spec, check)
    known: dict[tuple[Any, Any], tuple[str, KindSpec, Callable[[Any], list[SchemaIssue]]]] = {}
    for index, item in enumerate(items):
        base: FieldPath = ("resources", index)
        if not isinstance(item, dict):
            continue  # the document check already said it must be a mapping
        pair = (item.get("target"), item.get("kind"))
        resolved = known.get(pair) if not run.reported and not run.doc.opaque else None
        provider: str | None
        spec: KindSpec | None
        if resolved is not None:
            provider, spec, check = resolved
        else:
            provider, spec = _kind_spec(run, registry, targets, item, base)
            if spec is not None:
                check = checks.get((provider, spec.kind)) or checks.setdefault(
                    (provider, spec.kind), checker.resource_check(provider, spec.kind))
                if provider is not None and not run.reported and isinstance(pair[0], str) and isinstance(pair[1], str):
                    known[pair] = (provider, spec, check)
        if spec is not None:
            issues = check(item)
            if issues:
                run.add_issues(base, issues)
        elif not run.silent((*base, "kind")):
            run.add_issues(base, _without_target(registry, checker, targets, item))

        target = item.get("target")
        identity = item.get("identity")
        if "identity" not in item and spec is not None:
            if spec.singleton:
                identity = SINGLETON_IDENTITY
            elif "identity" not in spec.schema.get("required", ()):
                run.add(base, "missing required field 'identity'")  # else the kind schema said so
        ensure = item.get("ensure", _PRESENT)
        if spec is not None and spec.singleton and ensure == _ABSENT and not run.troubled(base):
            run.add((*base, "ensure"), f"{spec.kind} always exists (one per target), so it cannot be absent")
        if isinstance(target, str) and spec is not None and isinstance(identity, str):
            dedupe = (target, spec.kind, identity.casefold())
            if dedupe in first_seen:
                other = first_seen[dedupe]
                where = (*base, "identity") if "identity" in item else base
                run.add(where, f"duplicate of resources[{other}] at line {run.doc.line(('resources', other))}")
            else:
                first_seen[dedupe] = index

        if spec is None or run.troubled(base):
            continue
        if not isinstance(target, str) or not isinstance(identity, str) or ensure not in _ENSURES:
            # Kind schemas type these (and so does the common part); this only guards the types.
            run.add(base, "target and identity must be strings and ensure present or absent")
            continue
        fields = _prepare(run, spec, item, base, manifest_dir)
        if fields is None:
            continue
        line = item_lines[index] or run.doc.line(base)
        key_lines = dict(zip(item, run.doc.lines_of(base, item), strict=True))
        field_lines: dict[str, int] = {}
        for k in fields:
            found = key_lines.get(k) if k in item else line  # a field prepare added: the resource's line
            field_lines[k] = found or run.doc.line((*base, k))
        mode = item.get("mode")
        out.append(desired_resource(
            target, spec.kind, identity, _ENSURE_OF[ensure], fields,
            run.file, line, f"resources[{index}]",  # format_path(base)
            field_lines, None if mode is None else Mode(mode) if mode in _MODES else None))
    return out


def _references(run: _Run, resources: list[DesiredResource]) -> None:
    """A field that refers to another target's object: the rules of reconciler.known_after_apply."""
    if not any(known_after_apply.references(r) for r in resources):
        return
    provisional = DesiredState(manifest_path=run.file, manifest_sha256="", targets={}, resources=tuple(resources))
    for resource, name, message in known_after_apply.problems(provisional):
        index = int(resource.location.path.removeprefix("resources[").split("]", 1)[0])
        run.add(("resources", index, name), message, resource.field_lines.get(name, resource.location.line))


def _without_target(registry: Registry, checker: SchemaChecker, targets: dict[str, TargetSpec | None] | None,
                    item: dict[str, Any]) -> list[SchemaIssue]:
    """The schema's word on a resource whose kind could not be taken from its target's provider.

    When the target is not defined (already reported) and the kind belongs to several providers (PartnerApplication:
    Skype's and Exchange's), its fields are not checked: against one provider's kind they would read as wrong when they
    are right for the other (`metadataUrl` on a Skype partner application). A kind of one provider is checked against
    it; an unknown kind, as before.
    """
    target, kind = item.get("target"), item.get("kind")
    if targets is not None and isinstance(target, str) and target not in targets and isinstance(kind, str):
        owners = [name for name, provider in sorted(registry.providers.items()) if kind in provider.kinds]
        if len(owners) > 1:
            return []
        if owners:
            return checker.check_resource(item, owners[0], kind)
    return checker.check_resource(item, None, None)


def _kind_spec(run: _Run, registry: Registry, targets: dict[str, TargetSpec | None] | None,
               item: dict[str, Any], base: FieldPath) -> tuple[str | None, KindSpec | None]:
    """The exact KindSpec of a resource, via its target's provider; reports a missing target or kind."""
    target, kind = item.get("target"), item.get("kind")
    if targets is None or not isinstance(target, str) or run.silent((*base, "target")):
        return None, None
    if target not in targets:
        names = sorted(targets)
        known = f"defined: {', '.join(names)}" if names else "no targets are defined"
        run.add((*base, "target"), f"no target named '{target}' ({known}){did_you_mean(target, names)}")
        return None, None
    spec = targets[target]
    if spec is None or not isinstance(kind, str) or run.silent((*base, "kind")):
        return None, None
    kinds = registry.providers[spec.provider].kinds
    if kind not in kinds:
        run.add((*base, "kind"), f"'{kind}' is not a kind of provider '{spec.provider}' used by target "
                                 f"'{target}' (kinds: {', '.join(sorted(kinds))}){did_you_mean(kind, kinds)}")
        return None, None
    return spec.provider, kinds[kind]


def _prepare(run: _Run, spec: KindSpec, item: dict[str, Any], base: FieldPath,
             manifest_dir: Path) -> dict[str, JSONValue] | None:
    """The kind's fields, through the provider's `prepare` (file reads etc.); None after a problem."""
    fields: dict[str, JSONValue] = {k: v for k, v in item.items() if k not in COMMON_FIELDS}
    if spec.prepare is None:
        return fields
    try:
        return spec.prepare(fields, manifest_dir)  # its own copy: nothing else holds it
    except FieldProblem as problem:
        run.add((*base, problem.field), problem.message)
    except (OSError, ValueError) as exc:
        run.add(base, f"cannot prepare {spec.kind}: {exc}")
    return None
