"""What `reconcile history --since` accepts: a duration ago (`24h`, `7d`, `1h30m`) or an ISO 8601 time.

An ISO time without an offset is local time, as history prints its times; a date alone is its midnight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from reconciler.errors import ReconcilerError


def parse_since(text: str, clock: Callable[[], float] = time.time) -> float:
    """Epoch seconds `text` means, or ReconcilerError saying what is accepted."""
    from reconciler.scheduler import parse_duration

    value = text.strip()
    try:
        return clock() - parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise ReconcilerError(f"--since {text!r}: expected a duration ago (24h, 7d, 90m) or an ISO time "
                              "(2026-01-31, 2026-01-31T08:00, 2026-01-31T08:00:00+01:00)") from None
    return moment.astimezone().timestamp() if moment.tzinfo is None else moment.timestamp()
