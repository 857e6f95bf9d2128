"""Every command and option says what it does, and the README's command table matches the parser."""

from __future__ import annotations

import argparse
import re

from reconciler.cli import _parser
from tests.e2e import REPO


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def walk(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(prefix, parser)]
    for name, sub in subcommands(parser).items():
        out += walk(sub, f"{prefix} {name}")
    return out


def test_every_command_and_option_has_help_text() -> None:
    missing = []
    for name, parser in walk(_parser(), "reconcile"):
        if name != "reconcile" and not parser.description:
            missing.append(f"{name}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction | argparse._VersionAction):
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def readme_rows() -> dict[str, str]:
    """`reconcile CMD ...` rows of the README's command table: command -> the row's first cell."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Commands"):text.index("### Exit codes")]
    rows: dict[str, str] = {}
    for line in table.splitlines():
        for cell in re.findall(r"`reconcile ([a-z]+)([^`]*)`", line.split(" | ")[0]):
            rows[cell[0]] = rows.get(cell[0], "") + cell[1]
    return rows


def test_the_readme_command_table_lists_every_command_with_options_that_exist() -> None:
    commands = subcommands(_parser())
    rows = readme_rows()
    assert set(commands) - {"lab"} <= set(rows), set(commands) - set(rows)
    for name, cell in rows.items():
        assert name in commands, f"README lists `reconcile {name}`, which does not exist"
        options = {o for a in commands[name]._actions for o in a.option_strings}
        for option in re.findall(r"--[a-z][a-z-]*", cell):
            assert option in options, f"README: `reconcile {name} {option}` is not an option of the command"


def test_the_common_options_the_readme_names_exist_on_every_manifest_command() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    common = text[text.index("Common options:"):text.index("### Exit codes")]
    named = set(re.findall(r"`(--[a-z][a-z-]*)", common))
    assert {"--var", "--var-file", "--state-dir", "--store"} <= named
    for name in ("validate", "plan", "apply", "drift", "run", "verify", "graph", "status", "discover", "export"):
        options = {o for a in subcommands(_parser())[name]._actions for o in a.option_strings}
        assert named <= options, (name, named - options)


def _described(parser: argparse.ArgumentParser) -> list[tuple[str, str, list[tuple[object, ...]]]]:
    """Each parser's name, its help text and its arguments, as argparse holds them."""
    return [(name, p.format_help(), [(a.option_strings, a.dest, a.default, a.choices, a.help, a.nargs, a.metavar)
                                     for a in p._actions if not isinstance(a, argparse._SubParsersAction)])
            for name, p in walk(parser, "reconcile")]


def test_a_named_command_gets_the_parser_the_whole_command_line_has() -> None:
    """`reconcile plan ...` makes only plan's arguments (the others' are not made): what plan parses and shows is
    the same, and the command list (a misspelt command, `reconcile --help`) still names every command."""
    whole = dict((name, described) for name, *described in _described(_parser()))
    for name in subcommands(_parser()):
        made = dict((n, d) for n, *d in _described(_parser(name)))
        own = {n: d for n, d in made.items() if n == f"reconcile {name}" or n.startswith(f"reconcile {name} ")}
        assert own == {n: d for n, d in whole.items() if n in own}, name
        assert len(own) == sum(1 for n in whole if n == f"reconcile {name}" or n.startswith(f"reconcile {name} "))
        assert made["reconcile"][0] == whole["reconcile"][0]  # `reconcile --help` and the command list
    assert "reconcile plan --var" not in str(made)


def test_a_parse_of_a_named_command_equals_the_whole_parse() -> None:
    from reconciler.cli import _named_command, parse

    def parsed(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, object]:
        values = vars(parse(parser, argv))
        func = values["func"]  # the lab's handlers are wrapped anew by each parser
        return {**values, "usage_parser": values["usage_parser"].prog, "func": getattr(func, "__wrapped__", func)}

    for argv in (["history", "--result", "failed", "--limit", "3"], ["plan", "--var", "a=b", "--allow-deletions", "3",
                                                                       "m.yaml"], ["lab", "stats", "--json"]):
        assert parsed(_parser(_named_command(argv)), argv) == parsed(_parser(), argv)
    assert _named_command(["-h", "plan"]) is None and _named_command([]) is None
