"""`${name}` variables: resolution (with cycle detection) and expansion inside strings.

Variables keep one manifest usable for the lab and for production (`--var lab=...`). They are
plain text substitution in string values only: no expressions, so a manifest stays readable
and a value can never become code. `$${` writes a literal `${`.

Values given on the command line (overrides) are taken literally: the shell has already had
its turn at `$`, and a second round of substitution would surprise.

Expansion is bounded, so a small manifest cannot ask for gigabytes (`a: ${b}${b}`, `b: ${c}${c}`, ...):
a variable may reference variables at most MAX_DEPTH levels deep, no value (a variable's or a field's)
may expand to more than MAX_VALUE characters, and all the text substituted in one manifest is at
most MAX_TOTAL characters. Sizes are added up before any text is joined, so the bounds hold for the
memory too. Each refusal names the variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.manifest.text import MAX_VALUE
from reconciler.suggest import did_you_mean

NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"
_NAME = re.compile(NAME_PATTERN)

MAX_DEPTH = 8
"""How many levels of variables one variable may go through (`a: ${b}` is one level)."""
MAX_TOTAL = 4 * 1024 * 1024
"""The most text variables may produce in one manifest: resolved variables, and again the fields using them."""


@dataclass(frozen=True)
class _Ref:
    name: str


_Part = str | _Ref


@dataclass(frozen=True)
class Template:
    """A string split into literal text and variable references, or the reason it cannot be."""

    parts: tuple[_Part, ...]
    error: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts if isinstance(p, _Ref))


def parse_template(text: str) -> Template:
    """Split `text` at `${name}` references; `$${` is a literal `${`."""
    parts: list[_Part] = []
    literal: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            literal.append(text[i:])
            break
        literal.append(text[i:j])
        if text.startswith("$${", j):
            literal.append("${")
            i = j + 3
        elif text.startswith("${", j):
            end = text.find("}", j + 2)
            if end < 0:
                return Template((), f"unclosed '${{' in {text!r} (write $${{ for a literal ${{)")
            name = text[j + 2:end]
            if not _NAME.match(name):
                return Template((), f"malformed variable reference '${{{name}}}' "
                                    "(a name is letters, digits and _; write $${ for a literal ${)")
            parts.append("".join(literal))
            literal = []
            parts.append(_Ref(name))
            i = end + 1
        else:
            literal.append("$")
            i = j + 1
    parts.append("".join(literal))
    return Template(tuple(p for p in parts if p != ""))


@dataclass(frozen=True)
class Expansion:
    """The result of expanding one string.

    `tainted` means it used a variable that is itself broken (a cycle, an undefined reference):
    that was reported once at the variable, so the use site stays silent.
    """

    text: str
    errors: tuple[str, ...] = ()
    tainted: bool = False
    inserted: int = 0
    """Characters the substituted variables added (counted against MAX_TOTAL by the caller)."""
    largest: str | None = None
    """The variable that added the most of them (named when the total is exceeded)."""


@dataclass(frozen=True)
class VariableProblem:
    """A problem with one variable's definition (reported at that variable's line)."""

    name: str
    message: str


@dataclass(frozen=True)
class Variables:
    """Resolved values, plus the names that could not be resolved (already reported)."""

    values: Mapping[str, str]
    broken: frozenset[str] = frozenset()

    @property
    def defined(self) -> list[str]:
        return sorted({*self.values, *self.broken}, key=lambda n: (n.casefold(), n))

    def undefined(self, name: str) -> str:
        names = self.defined
        known = f"defined: {', '.join(names)}" if names else "no variables are defined"
        return f"undefined variable '{name}' ({known}){did_you_mean(name, names)}"

    def expand(self, text: str, limit: int = MAX_VALUE) -> Expansion:
        """`text` with its variables substituted, unless that would be longer than `limit` characters."""
        template = parse_template(text)
        if template.error is not None:
            return Expansion(text, (template.error,))
        out: list[str] = []
        errors: list[str] = []
        tainted = False
        added: dict[str, int] = {}
        for part in template.parts:
            if isinstance(part, str):
                out.append(part)
            elif part.name in self.values:
                out.append(self.values[part.name])
                added[part.name] = added.get(part.name, 0) + len(self.values[part.name])
            elif part.name in self.broken:
                tainted = True
            else:
                errors.append(self.undefined(part.name))
        if errors or tainted:
            return Expansion(text, tuple(errors), tainted)
        size = sum(len(p) for p in out)  # before joining: an oversized value is never built
        largest = max(added, key=lambda n: added[n]) if added else None
        if size > limit and added:  # text that is long as written is the caller's to judge
            names = ", ".join(f"${{{n}}}" for n in sorted(added, key=lambda n: -added[n]))
            return Expansion(text, (f"expands to {size:,} characters through {names}; at most {limit:,} "
                                    "are allowed",))
        return Expansion("".join(out), inserted=sum(added.values()), largest=largest)


def resolve(templates: Mapping[str, str], literals: Mapping[str, str],
            unusable: frozenset[str] = frozenset()) -> tuple[Variables, list[VariableProblem]]:
    """Resolve manifest variables (which may reference each other) and literal overrides.

    `unusable` names variables whose definition is wrong in another way (not a string; reported
    by the schema): they count as defined but broken. Iterative (no recursion), so any number
    of variables is fine. Each cycle is reported once, at its first member in manifest order.
    A variable nested deeper than MAX_DEPTH, longer than MAX_VALUE, or past MAX_TOTAL for all
    variables together is reported at that variable (and those using it stay silent).
    """
    order = list(templates)
    broken: set[str] = set(unusable) - set(literals)
    problems: list[VariableProblem] = []
    deps: dict[str, tuple[str, ...]] = {}
    parsed: dict[str, Template] = {}
    known = {*templates, *literals, *unusable}
    probe = Variables({n: "" for n in known})
    for name in order:
        if name in literals:
            continue
        template = parse_template(templates[name])
        parsed[name] = template
        if template.error is not None:
            problems.append(VariableProblem(name, template.error))
            broken.add(name)
            continue
        missing = [ref for ref in template.names if ref not in known]
        if missing:
            problems.extend(VariableProblem(name, probe.undefined(ref)) for ref in missing)
            broken.add(name)
        deps[name] = template.names

    pending = {n for n in parsed if n not in broken and n not in literals}
    values: dict[str, str] = dict(literals)
    depth: dict[str, int] = dict.fromkeys(literals, 0)
    deepest: dict[str, str] = {}  # name -> the reference its depth comes through
    total = 0
    crossed = False  # MAX_TOTAL is reported once, at the variable that crossed it
    progress = True
    while pending and progress:
        progress = False
        for name in [n for n in order if n in pending]:
            refs = [r for r in deps[name] if r not in literals]
            if any(r in broken for r in refs):
                broken.add(name)
            elif all(r in values for r in refs):
                outcome = _bounded(name, templates[name], values, depth, deepest)
                if isinstance(outcome, VariableProblem):
                    problems.append(outcome)
                    broken.add(name)
                elif total + outcome.inserted > MAX_TOTAL:
                    if not crossed:
                        problems.append(VariableProblem(name, f"variable '{name}' takes the text all variables "
                                                              f"expand to past {MAX_TOTAL:,} characters"))
                    crossed = True
                    broken.add(name)
                else:
                    values[name] = outcome.text
                    total += outcome.inserted
            else:
                continue
            pending.discard(name)
            progress = True

    # Whatever is still pending is in a cycle or depends on one.
    reported: set[str] = set()
    for start in [n for n in order if n in pending]:
        walk = [start]
        while True:
            nxt = next(r for r in deps[walk[-1]] if r in pending)
            if nxt in reported:
                break
            if nxt in walk:
                cycle = walk[walk.index(nxt):]
                first = min(cycle, key=order.index)
                k = cycle.index(first)
                shown = [*cycle[k:], *cycle[:k], first]
                problems.append(VariableProblem(first, "variable cycle: " + " -> ".join(shown)))
                reported.update(cycle)
                break
            walk.append(nxt)
        broken.update(walk)
    broken.update(pending)
    return Variables(values, frozenset(broken - set(values))), problems


def _bounded(name: str, template: str, values: Mapping[str, str], depth: dict[str, int],
             deepest: dict[str, str]) -> Expansion | VariableProblem:
    """Expand one variable whose references are all resolved, or say which bound it breaks."""
    refs = parse_template(template).names
    if refs:
        via = max(refs, key=lambda r: depth.get(r, 0))
        depth[name] = depth.get(via, 0) + 1
        deepest[name] = via
    else:
        depth[name] = 0
    if depth[name] > MAX_DEPTH:
        chain = [name]
        while chain[-1] in deepest and len(chain) <= MAX_DEPTH + 1:
            chain.append(deepest[chain[-1]])
        shown = " -> ".join(chain) + (" -> ..." if chain[-1] in deepest else "")
        return VariableProblem(name, f"variable '{name}' nests variables more than {MAX_DEPTH} levels deep "
                                     f"({shown})")
    expansion = Variables(values).expand(template)
    if expansion.errors:
        return VariableProblem(name, f"variable '{name}' {expansion.errors[0]}")
    return expansion
