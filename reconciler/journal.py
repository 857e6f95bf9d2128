"""An append-only journal of what apply did, one JSON line per event.

Written before a batch runs (with the live record of every object a replace will remove) and after
it (with each change's outcome), so an interrupted apply leaves a record of what it was doing and
of any object it had removed. Secrets never reach it: commands are stored masked.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class Journal:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()  # targets are applied concurrently

    def record(self, event: str, **data: Any) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **data},
                          sort_keys=True, default=str)
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
