"""Colour for people at a terminal: the plan's symbols and summary, errors and warnings, status conditions.

Only ever applied to text that is otherwise final (the renderers stay plain and testable): `paint` adds ANSI
colour to a rendered text line by line. Off unless the stream is a terminal; `NO_COLOR` (any non-empty value,
no-color.org), `TERM=dumb` and `--no-color` turn it off there too.
"""

from __future__ import annotations

import os
import re
from typing import TextIO

RESET = "\x1b[0m"
GREEN, YELLOW, RED, MAGENTA, CYAN, BOLD = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[35m", "\x1b[36m", "\x1b[1m"

_SYMBOL = re.compile(r"^(?P<lead>\s*)(?P<symbol>-/\+|[+~-])(?P<rest>\s.*|)$")
_SYMBOL_COLOURS = {"+": GREEN, "~": YELLOW, "-": RED, "-/+": MAGENTA}
_CONDITIONS = {"Ready": GREEN, "Drifted": YELLOW, "Failing": RED, "Suspended": CYAN, "Unknown": ""}


def wanted(stream: TextIO, *, disabled: bool = False) -> bool:
    """Whether to colour what goes to `stream`."""
    if disabled or os.environ.get("NO_COLOR", "") != "" or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def _line(line: str) -> str:
    if line.startswith(("Plan:", "No changes.")):
        return f"{BOLD}{line}{RESET}"
    if line.startswith("error") or " error:" in line[:40] or "FAILED" in line:
        return f"{RED}{line}{RESET}"
    if line.startswith("warning") or " warning:" in line[:40]:
        return f"{YELLOW}{line}{RESET}"
    match = _SYMBOL.match(line)
    if match is not None:
        colour = _SYMBOL_COLOURS[match.group("symbol")]
        return f"{match.group('lead')}{colour}{match.group('symbol')}{RESET}{match.group('rest')}"
    return line


def paint(text: str) -> str:
    """A rendered plan or report with its symbols, summary, errors and warnings coloured."""
    return "\n".join(_line(line) for line in text.split("\n"))


def paint_status(text: str) -> str:
    """`reconcile status`'s table with each condition in its colour."""
    def cell(match: re.Match[str]) -> str:
        word = match.group(0)
        colour = _CONDITIONS.get(word, "")
        return f"{colour}{word}{RESET}" if colour else word

    lines = text.split("\n")
    return "\n".join([lines[0], *(re.sub(r"\b(Ready|Drifted|Failing|Suspended)\b", cell, line, count=1)
                                  for line in lines[1:])])
