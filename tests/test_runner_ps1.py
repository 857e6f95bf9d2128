"""runner.ps1 read by a real PowerShell grammar (tree-sitter-powershell), not by regular expressions.

No PowerShell runs here. What the syntax tree proves:

* the script parses: no ERROR or MISSING node anywhere (each one reported as line:column);
* the calls that run a command named in a request (`& $target ...`, `& $executable ...`) pass
  values only by splatting (`@params`, `@arguments`), never as strings, plain variables or
  subexpressions that PowerShell would have to interpret;
* nothing turns text into code: no Invoke-Expression / iex, no [scriptblock]::Create, no Add-Type.

Each check is also run on broken or hostile snippets, so a check that cannot fail would show.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import tree_sitter_powershell
from tree_sitter import Language, Node, Parser, Tree

from reconciler.transports.pwsh import RUNNER

POWERSHELL = Language(tree_sitter_powershell.language())

FORBIDDEN_COMMANDS = frozenset({"invoke-expression", "iex", "add-type"})
"""Commands that compile or evaluate text."""
SCRIPTBLOCK_TYPES = frozenset({"scriptblock", "system.management.automation.scriptblock"})
FORBIDDEN_METHODS = frozenset({"newscriptblock", "invokescript"})
"""$ExecutionContext.InvokeCommand methods that turn text into a script block or run it."""
UNSAFE_TOKEN = frozenset("$@()`{};\"'")
"""Characters that would make a bare word in a command line more than a constant."""


def parse(source: bytes) -> Tree:
    return Parser(POWERSHELL).parse(source)


def runner_source() -> bytes:
    return RUNNER.read_bytes()


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def where(node: Node) -> str:
    """line:column, both 1-based, as an editor shows them."""
    row, column = node.start_point
    return f"{row + 1}:{column + 1}"


def text(node: Node) -> str:
    return (node.text or b"").decode("utf-8", errors="replace")


def syntax_errors(tree: Tree) -> list[str]:
    """Every ERROR and MISSING node, as `line:column: ...`."""
    found = []
    for node in walk(tree.root_node):
        if node.is_missing:
            found.append(f"{where(node)}: missing {node.type!r}")
        elif node.is_error:
            found.append(f"{where(node)}: syntax error at {text(node)[:60]!r}")
    if tree.root_node.has_error and not found:  # has_error with no node to show: still an error
        found.append(f"{where(tree.root_node)}: syntax error")
    return found


# --- the static checks --------------------------------------------------------------------------


@dataclass(frozen=True)
class DynamicCall:
    """A command run through `&` (or `.`): the command is whatever a variable holds at run time."""

    node: Node

    @property
    def name(self) -> str:
        name = self.node.child_by_field_name("command_name")
        return text(name) if name is not None else ""

    @property
    def splats(self) -> list[str]:
        return [text(e) for e in self.elements() if _splat(e) is not None]

    def elements(self) -> list[Node]:
        elements = self.node.child_by_field_name("command_elements")
        return list(elements.named_children) if elements is not None else []

    def violations(self) -> list[str]:
        """Everything but splats, constant `-Switch`/`-Name Word` pairs and redirections."""
        problems = []
        name = self.node.child_by_field_name("command_name")
        target = name.named_children[0] if name is not None and name.named_children else None
        if (target is None or target.type != "path_command_name" or len(target.named_children) != 1
                or target.named_children[0].type != "variable" or text(target).startswith("@")):
            problems.append(f"{where(self.node)}: the command is not a plain variable: {self.name!r}")
        for element in self.elements():
            if element.type in ("command_argument_sep", "redirection") or _splat(element) is not None:
                continue
            if element.type == "command_parameter" and not text(element).endswith(":"):
                continue
            if element.type == "generic_token" and not element.named_children and not set(text(element)) & UNSAFE_TOKEN:
                continue
            problems.append(f"{where(element)}: {text(element)[:60]!r} is passed as {element.type}, not splatted")
        return problems


def _splat(element: Node) -> str | None:
    """`@name` as a command argument (array_literal_expression > unary_expression > variable), else None."""
    node = element
    for expected in ("array_literal_expression", "unary_expression"):
        if node.type != expected or len(node.named_children) != 1:
            return None
        node = node.named_children[0]
    if node.type == "variable" and text(node).startswith("@") and not node.named_children:
        return text(node)
    return None


def dynamic_calls(tree: Tree) -> list[DynamicCall]:
    return [DynamicCall(node) for node in walk(tree.root_node)
            if node.type == "command" and node.children and node.children[0].type == "command_invokation_operator"]


def text_to_code(tree: Tree) -> list[str]:
    """Every construct that compiles or evaluates text, as `line:column: ...`."""
    found = []
    for node in walk(tree.root_node):
        if node.type == "command_name" and text(node).lower() in FORBIDDEN_COMMANDS:
            found.append(f"{where(node)}: {text(node)}")
        elif node.type == "invokation_expression":
            member = next((c for c in node.named_children if c.type == "member_name"), None)
            method = text(member).lower() if member is not None else ""
            kind = node.named_children[0] if node.named_children else None
            if (kind is not None and kind.type == "type_literal" and method == "create"
                    and text(kind).strip("[]").replace(" ", "").lower() in SCRIPTBLOCK_TYPES):
                found.append(f"{where(node)}: {text(kind)}::Create")
            elif member is not None and method in FORBIDDEN_METHODS:
                found.append(f"{where(node)}: .{text(member)}()")
    return found


# --- the runner ---------------------------------------------------------------------------------------


def test_runner_ps1_parses_without_a_syntax_error() -> None:
    tree = parse(runner_source())
    errors = syntax_errors(tree)
    assert not errors, "runner.ps1 does not parse:\n" + "\n".join(errors)
    assert tree.root_node.type == "program"
    functions = {text(n.named_children[0]) for n in walk(tree.root_node) if n.type == "function_statement"}
    assert {"Invoke-OneCommand", "Invoke-NativeCommand", "Invoke-Request", "Write-ProtocolLine"} <= functions


@pytest.mark.parametrize("breakage,line", [
    # an unclosed brace: the function body runs to the end of the file
    (lambda s: s.replace(b"function Get-Field {", b"function Get-Field { {", 1), None),
    # an operator with nothing on its right: reported where the next line closes the block
    (lambda s: s.replace(b"$exitCode = $LASTEXITCODE", b"$exitCode = $LASTEXITCODE -ne", 1), "$LASTEXITCODE -ne"),
    # an unterminated string
    (lambda s: s.replace(b"-f $name) }", b"-f $name) } '", 1), None),
], ids=["unclosed-brace", "dangling-operator", "unterminated-string"])
def test_a_broken_copy_of_the_runner_is_caught(breakage: Callable[[bytes], bytes], line: str | None) -> None:
    original = runner_source()
    broken = breakage(original)
    assert broken != original, "the breakage must change the script"
    errors = syntax_errors(parse(broken))
    assert errors, "a broken runner.ps1 parsed cleanly: the check cannot fail"
    assert all(e.split(":", 2)[0].isdigit() and e.split(":", 2)[1].isdigit() for e in errors)
    if line is not None:
        number = next(i for i, t in enumerate(broken.decode().splitlines(), 1) if line in t)
        assert any(int(e.split(":")[0]) in (number, number + 1) for e in errors), errors


def test_errors_are_reported_at_their_line_and_column() -> None:
    assert syntax_errors(parse(b"Write-Output 'fine'\n")) == []
    errors = syntax_errors(parse(b"Write-Output 'fine'\nif ($a) {\n  Write-Output 'no closing brace'\n"))
    assert errors and all(e.split(":")[0] in ("1", "2", "3", "4") for e in errors), errors


def test_calls_of_requested_commands_pass_values_only_by_splatting() -> None:
    calls = dynamic_calls(parse(runner_source()))
    assert sorted(c.name for c in calls) == ["$executable", "$target"], [text(c.node) for c in calls]
    by_name = {c.name: c for c in calls}
    assert by_name["$target"].splats == ["@params"]  # the cmdlet: its parameter hashtable
    assert by_name["$executable"].splats == ["@arguments"]  # the executable: its argument array
    for call in calls:
        assert call.violations() == [], text(call.node)


@pytest.mark.parametrize("snippet", [
    b'& $target "-Identity $identity"',  # a parameter built as a string
    b"& $target -Identity $identity",  # a value as a plain variable
    b"& $target -Identity:$identity",
    b"& $target @params $(Get-Value)",  # a subexpression
    b"& $target @($list)",  # an array expression, not a splat
    b"& $target @{ Identity = $identity }",  # an inline hashtable, not a splat
    b"& $executable --% $arguments",  # stop-parsing: the rest is a raw command line
    b"& $target -Identity foo$identity",
    b'& "Get-$noun" @params',  # the command name built as a string
    b"& ($verb + '-Item') @params",
    b"& { Remove-Item $path } @params",
], ids=lambda s: s.decode())
def test_the_splat_check_flags_values_that_are_not_splatted(snippet: bytes) -> None:
    tree = parse(snippet)
    assert syntax_errors(tree) == []
    (call,) = dynamic_calls(tree)
    assert call.violations(), f"not flagged: {snippet.decode()}"


def test_the_splat_check_accepts_the_safe_forms() -> None:
    tree = parse(b"$out = & $target @params -ErrorAction Stop *>&1\n$lines = @() | & $executable @arguments 2>&1\n")
    calls = dynamic_calls(tree)
    assert len(calls) == 2 and all(c.violations() == [] for c in calls)


def test_runner_turns_no_text_into_code() -> None:
    assert text_to_code(parse(runner_source())) == []


@pytest.mark.parametrize("snippet", [
    b"iex $line",
    b"IEX $line",
    b"Invoke-Expression -Command $line",
    b"$line | Invoke-Expression",
    b"[scriptblock]::Create($line)",
    b"[ScriptBlock]::Create($line).Invoke()",
    b"[System.Management.Automation.ScriptBlock]::Create($line)",
    b"Add-Type -TypeDefinition $source",
    b"$ExecutionContext.InvokeCommand.NewScriptBlock($line)",
    b"$ExecutionContext.InvokeCommand.InvokeScript($line)",
], ids=lambda s: s.decode())
def test_the_text_to_code_check_flags_each_construct(snippet: bytes) -> None:
    tree = parse(snippet)
    assert syntax_errors(tree) == []
    assert text_to_code(tree), f"not flagged: {snippet.decode()}"
