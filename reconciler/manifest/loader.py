"""Manifest file -> DesiredState, or a ManifestError listing every problem found.

Order of work: YAML (with lines) -> variables -> expand `${...}` in targets and resources ->
schema (document, then each resource against its exact kind) -> semantic checks (targets exist,
kinds belong to the target's provider, no duplicates) -> each kind's `prepare`. Problems are
collected, never raised one by one: a user fixes a manifest in one pass, not one error per run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import FieldProblem, ManifestError, ManifestProblem
from reconciler.kinds.spec import KindSpec
from reconciler.manifest.positions import Document, FieldPath, format_path, parse
from reconciler.manifest.schema import COMMON_FIELDS, SchemaChecker, SchemaIssue
from reconciler.manifest.variables import Variables, resolve
from reconciler.model import (
    DesiredResource,
    DesiredState,
    Ensure,
    JSONValue,
    Mode,
    ResourceKey,
    SourceLocation,
    TargetSpec,
    VerifyCheck,
)
from reconciler.providers.base import Registry, checks_of

SINGLETON_IDENTITY = "Global"


@dataclass
class _Run:
    """The state of one load: where problems go and which paths already have one."""

    file: str
    doc: Document
    problems: list[ManifestProblem] = field(default_factory=list)
    reported: set[FieldPath] = field(default_factory=set)

    def add(self, path: FieldPath, message: str, line: int | None = None, *, mark: bool = True) -> None:
        """Record a problem; `mark` silences later complaints at or under `path`."""
        line = self.doc.line(path) if line is None else line
        self.problems.append(ManifestProblem(self.file, line, format_path(path), message))
        if mark:
            self.reported.add(path)

    def troubled(self, base: FieldPath) -> bool:
        """True when anything at or under `base` has a problem."""
        return any(p[:len(base)] == base for p in self.reported | self.doc.opaque)

    def silent(self, path: FieldPath) -> bool:
        """True when `path` or an ancestor already has a problem (one message per mistake)."""
        blocked = self.reported | self.doc.opaque
        return any(path[:end] in blocked for end in range(len(path) + 1))

    def add_issues(self, base: FieldPath, issues: list[SchemaIssue]) -> None:
        fresh = [(base + i.path, i.message) for i in issues if not self.silent(base + i.path)]
        for path, message in fresh:
            self.add(path, message)


def load_manifest(path: Path, registry: Registry, overrides: Mapping[str, str] | None = None) -> DesiredState:
    """Read and check a manifest. Raises ManifestError with all problems; never another exception."""
    file = str(path)
    overrides = dict(overrides or {})
    try:
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL byte
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ManifestError([ManifestProblem(file, 1, "", f"cannot read the manifest: {reason}")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ManifestError([ManifestProblem(file, line, "", "the manifest is not UTF-8 text")]) from None

    doc = parse(text)
    run = _Run(file, doc)
    for problem in doc.problems:
        # Not marked: a duplicate key must not hide problems in the first occurrence's value.
        run.add(problem.path, problem.message, problem.line, mark=False)
    if doc.data is None:
        raise ManifestError(run.problems)
    if not isinstance(doc.data, dict):
        run.add((), "the top level must be a mapping (apiVersion, variables, targets, resources)")
        raise ManifestError(run.problems)

    data: dict[str, Any] = doc.data
    variables = _variables(run, data.get("variables"), overrides)
    expanded = {**data}
    for section in ("targets", "resources", "verify"):
        if section in data:
            expanded[section] = _expand(run, variables, data[section], (section,))

    checker = SchemaChecker(registry)
    run.add_issues((), checker.check_document(expanded))
    targets = _targets(run, registry, expanded.get("targets"))
    items = expanded.get("resources")
    resources = _resources(run, registry, checker, targets, items if isinstance(items, list) else [],
                           path.parent)
    checks = _checks(run, registry, targets, expanded.get("verify"))
    if run.problems:
        raise ManifestError(list(dict.fromkeys(run.problems)))
    return DesiredState(
        manifest_path=file,
        manifest_sha256=_fingerprint(raw, overrides),
        targets={name: spec for name, spec in (targets or {}).items() if spec is not None},
        resources=tuple(resources),
        checks=tuple(checks),
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
                run.add((*base, "target"), f"no target named {name!r} (defined: {defined})")
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


def _fingerprint(raw: bytes, overrides: Mapping[str, str]) -> str:
    """sha256 of the file; with --var overrides, of the file plus the sorted overrides.

    Without overrides it is the plain file hash, so `sha256sum` can confirm it.
    """
    digest = hashlib.sha256(raw)
    if overrides:
        digest.update(b"\0" + json.dumps(sorted(overrides.items()), ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def _variables(run: _Run, section: Any, overrides: Mapping[str, str]) -> Variables:
    """Resolve the `variables` section plus overrides; report problems at each variable's line."""
    section = section if isinstance(section, dict) else {}
    templates = {k: v for k, v in section.items() if isinstance(v, str)}
    unusable = frozenset(k for k, v in section.items() if not isinstance(v, str))
    variables, problems = resolve(templates, overrides, unusable)
    for problem in problems:
        run.add(("variables", problem.name), problem.message)
    return variables


def _expand(run: _Run, variables: Variables, value: Any, path: FieldPath) -> Any:
    """Substitute variables in every string of a section (keys stay literal)."""
    if isinstance(value, str):
        result = variables.expand(value)
        for message in result.errors:
            run.add(path, message)
        if result.tainted:
            run.reported.add(path)
        return result.text
    if isinstance(value, dict):
        return {k: _expand(run, variables, v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(run, variables, v, (*path, i)) for i, v in enumerate(value)]
    return value


def _targets(run: _Run, registry: Registry, section: Any) -> dict[str, TargetSpec | None] | None:
    """Targets by name (None for a target too broken to use); None when `targets` itself is unusable."""
    if not isinstance(section, dict):
        return None
    out: dict[str, TargetSpec | None] = {}
    for name, spec in section.items():
        provider = spec.get("provider") if isinstance(spec, dict) else None
        connection = spec.get("connection") if isinstance(spec, dict) else None
        prune = spec.get("prune", []) if isinstance(spec, dict) else None
        if (isinstance(provider, str) and provider in registry.providers and isinstance(connection, dict)
                and isinstance(prune, list)):
            where = SourceLocation(run.file, run.doc.line(("targets", name)), f"targets.{name}")
            mode = spec.get("mode", Mode.ENFORCE.value)
            handlers = spec.get("handlers") if isinstance(spec.get("handlers"), dict) else {}
            out[name] = TargetSpec(name, provider, connection, frozenset(str(k) for k in prune), where,
                                   Mode(mode) if mode in set(Mode) else Mode.ENFORCE,
                                   {str(k): dict(v) for k, v in handlers.items() if isinstance(v, dict)})
        else:
            out[name] = None
    return out


def _resources(run: _Run, registry: Registry, checker: SchemaChecker, targets: dict[str, TargetSpec | None] | None,
               items: list[Any], manifest_dir: Path) -> list[DesiredResource]:
    out: list[DesiredResource] = []
    first_seen: dict[tuple[str, str, str], int] = {}
    for index, item in enumerate(items):
        base: FieldPath = ("resources", index)
        if not isinstance(item, dict):
            continue  # the document check already said it must be a mapping
        provider, spec = _kind_spec(run, registry, targets, item, base)
        if spec is not None:
            run.add_issues(base, checker.check_resource(item, provider, spec.kind))
        elif not run.silent((*base, "kind")):
            run.add_issues(base, checker.check_resource(item, None, None))

        target = item.get("target")
        identity = item.get("identity")
        if "identity" not in item and spec is not None:
            if spec.singleton:
                identity = SINGLETON_IDENTITY
            elif "identity" not in spec.schema.get("required", ()):
                run.add(base, "missing required field 'identity'")  # else the kind schema said so
        ensure = item.get("ensure", Ensure.PRESENT.value)
        if spec is not None and spec.singleton and ensure == Ensure.ABSENT.value and not run.troubled(base):
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
        if not isinstance(target, str) or not isinstance(identity, str) or ensure not in {e.value for e in Ensure}:
            # Kind schemas type these (and so does the common part); this only guards the types.
            run.add(base, "target and identity must be strings and ensure present or absent")
            continue
        fields = _prepare(run, spec, item, base, manifest_dir)
        if fields is None:
            continue
        line = run.doc.line(base)
        out.append(DesiredResource(
            key=ResourceKey(target, spec.kind, identity),
            ensure=Ensure(ensure),
            fields=fields,
            location=SourceLocation(run.file, line, format_path(base)),
            field_lines={k: run.doc.line((*base, k)) if k in item else line for k in fields},
            mode=Mode(item["mode"]) if item.get("mode") in set(Mode) else None,
        ))
    return out


def _kind_spec(run: _Run, registry: Registry, targets: dict[str, TargetSpec | None] | None,
               item: dict[str, Any], base: FieldPath) -> tuple[str | None, KindSpec | None]:
    """The exact KindSpec of a resource, via its target's provider; reports a missing target or kind."""
    target, kind = item.get("target"), item.get("kind")
    if targets is None or not isinstance(target, str) or run.silent((*base, "target")):
        return None, None
    if target not in targets:
        names = sorted(targets)
        known = f"defined: {', '.join(names)}" if names else "no targets are defined"
        run.add((*base, "target"), f"no target named '{target}' ({known})")
        return None, None
    spec = targets[target]
    if spec is None or not isinstance(kind, str) or run.silent((*base, "kind")):
        return None, None
    kinds = registry.providers[spec.provider].kinds
    if kind not in kinds:
        run.add((*base, "kind"), f"'{kind}' is not a kind of provider '{spec.provider}' used by target "
                                 f"'{target}' (kinds: {', '.join(sorted(kinds))})")
        return None, None
    return spec.provider, kinds[kind]


def _prepare(run: _Run, spec: KindSpec, item: dict[str, Any], base: FieldPath,
             manifest_dir: Path) -> dict[str, JSONValue] | None:
    """The kind's fields, through the provider's `prepare` (file reads etc.); None after a problem."""
    fields: dict[str, JSONValue] = {k: v for k, v in item.items() if k not in COMMON_FIELDS}
    if spec.prepare is None:
        return fields
    try:
        return spec.prepare(dict(fields), manifest_dir)
    except FieldProblem as problem:
        run.add((*base, problem.field), problem.message)
    except (OSError, ValueError) as exc:
        run.add(base, f"cannot prepare {spec.kind}: {exc}")
    return None
