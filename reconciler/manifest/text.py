"""Text the loader acts on, which the YAML reading lists as it goes (`positions.parse(text, notable)`).

Its own small module: `reconciler.manifest.ahead` reads the YAML in a second process that imports this and the
parser only, not the loader (which brings the providers, jsonschema and httpx).
"""

from __future__ import annotations

import re

MAX_VALUE = 64 * 1024
"""The longest text (in characters) one variable or one field may expand to (reconciler.manifest.variables)."""
SURROGATES = "\ud800-\udfff"
CONTROLS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
"""C0 and C1 control characters and DEL; tab and line breaks are text."""
_NOTABLE = re.compile(f"[${SURROGATES}{CONTROLS}]|://")
"""`$` (a variable may be used), a lone surrogate or a control character (what the loader's text check refuses), or
a URL: text `notable` lists (as does a long one)."""


def notable(text: str) -> bool:
    """Text the loader's `_expand` or `_check_text` would act on (a `$`, or what `_plain` does not pass)."""
    return len(text) > MAX_VALUE or _NOTABLE.search(text) is not None
