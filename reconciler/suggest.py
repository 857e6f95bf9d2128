""""Did you mean …?": the nearest of the names a user could have meant, for misspelt fields, kinds, targets,
variables and addresses.

A name that differs only in case is the first suggestion (PowerShell habits: `MetadataUrl` for `metadataUrl`,
and PowerShell itself is case-insensitive), then the closest spelling by difflib's ratio.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def nearest(word: str, names: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The name `word` most likely stands for, or None when none is close."""
    candidates = [n for n in dict.fromkeys(names) if n != word]
    same = [n for n in candidates if n.casefold() == word.casefold()]
    if same:
        return same[0]
    folded = {n.casefold(): n for n in candidates}
    close = difflib.get_close_matches(word.casefold(), list(folded), n=1, cutoff=cutoff)
    return folded[close[0]] if close else None


def did_you_mean(word: str, names: Iterable[str], *, cutoff: float = 0.6) -> str:
    """`; did you mean 'x'?` to end a message with, or nothing."""
    found = nearest(word, names, cutoff=cutoff)
    return f"; did you mean {found!r}?" if found is not None else ""
