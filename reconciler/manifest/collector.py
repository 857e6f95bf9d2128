"""The cyclic garbage collector paused while a manifest is read (from YAML or from the cache)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off meanwhile (as it was, after).

    Reading a manifest allocates a node, then a value, per item and nothing cyclic: the collector, woken again
    and again by those allocations, found nothing and took a large share of the time on big manifests (its full
    collections rescan everything already read).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
