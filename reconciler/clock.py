"""The one clock every time-dependent decision reads: certificate dates, roll effective dates, renewal policies.

Reconcile is level-triggered: what a cycle does depends on the live state and on the time. Every such decision
(here and in the lab's emulated servers) calls `clock.utc_now()` through this module, so a test moves time for
the tool and the lab at once by replacing this one function.
"""

from __future__ import annotations

import datetime


def utc_now() -> datetime.datetime:
    """Now, in UTC (aware)."""
    return datetime.datetime.now(datetime.UTC)
