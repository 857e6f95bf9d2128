"""Structured log lines: one line per event, JSON for log shippers or a readable form for people.

A reconcile loop runs unattended, so what it did has to be readable after the fact by a person
tailing a terminal and by a log shipper alike, from the same call. Every event is exactly one line
whatever its values hold (newlines and Unicode line separators are escaped), so a line-oriented
shipper never splits an event and `grep` always finds a whole one.

Events the callers emit, with their fields:

- `run_start`: `command` (plan|apply|drift|run), `manifest` (path), `git_commit` (of the manifest's
  checkout, or None outside git)
- `change`: `address` (target.Kind.identity), `actions` (list: create, update, delete), `reason`,
  `mode` (plan|apply), `status` (planned|applied|failed|skipped)
- `handler`: `address` (target.handler.name), `status` (ran|failed|not needed), `reason` (its commands,
  and the changes that triggered it); level error when it failed
- `run_end`: `command`, `result` (as in reconciler.store.RESULTS), `duration_seconds`,
  `drifted` (target -> count), `errors` (count)
- `cycle_sleep`: `seconds`, `reason` (interval|backoff)
- `stop`: `signal` (its name, e.g. SIGTERM)

Forms:

    {"time": "2026-11-23T07:40:37.123Z", "level": "info", "event": "change", "address": "...", ...}
    2026-11-23T07:40:37.123Z info  change address=pool.PartnerApplication.app actions=delete reason="ensure: absent"

Sensitive values never reach the providers' events (they are masked where they are rendered), but a
field whose NAME says secret, password, token, client secret or private key is masked here as well:
defence in depth, at the last point before text leaves the process.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
MASK = "(sensitive value)"
SENSITIVE_NAME_PARTS = ("secret", "password", "token", "clientsecret", "privatekey")
RESERVED = ("time", "level", "event")
_MAX_DEPTH = 8
# Characters JSON leaves raw with ensure_ascii=False that str.splitlines() (and some shippers) break on.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def is_sensitive(name: str) -> bool:
    """A field name that says it holds a secret (`clientSecret`, `private_key`, `API-Token`, ...)."""
    folded = "".join(c for c in str(name).lower() if c.isalnum())
    return any(part in folded for part in SENSITIVE_NAME_PARTS)


def format_time(timestamp: float) -> str:
    """RFC 3339 in UTC with milliseconds: `2026-11-23T07:40:37.123Z`."""
    try:
        seconds, millis = divmod(round(timestamp * 1000), 1000)
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"
    except (OverflowError, ValueError, OSError, TypeError):
        return "0000-00-00T00:00:00.000Z"  # an unusable clock value must not cost the event


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unprintable {type(value).__name__}>"


def plain(value: object, depth: int = 0) -> Any:
    """`value` as plain JSON data, sensitive keys masked; anything odd becomes its string form.

    Cycles end at a fixed depth, non-finite floats become strings (bare NaN is not JSON) and sets are
    sorted so the same value always gives the same line.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _safe_str(value)
    if depth >= _MAX_DEPTH:
        return _safe_str(value)
    if isinstance(value, Mapping):
        try:
            items = list(value.items())
        except Exception:
            return _safe_str(value)
        return {_safe_str(k): MASK if is_sensitive(_safe_str(k)) else plain(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((plain(v, depth + 1) for v in value), key=_safe_str)
    return _safe_str(value)


def _one_line_json(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, default=_safe_str)
    for raw, escaped in _LINE_BREAKS.items():
        text = text.replace(raw, escaped)
    return text


def _text_scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _safe_str(value)


def text_value(value: Any) -> str:
    """A field value for the text form: lists joined with commas, mappings as `k:v,...`, quoted when needed."""
    if isinstance(value, dict):
        text = ",".join(f"{k}:{_text_scalar(v) if not isinstance(v, dict | list) else _one_line_json(v)}"
                        for k, v in value.items())
    elif isinstance(value, list):
        text = ",".join(_text_scalar(v) if not isinstance(v, dict | list) else _one_line_json(v) for v in value)
    else:
        text = _text_scalar(value)
    if text and not any(c.isspace() or c in '"=\\' or not c.isprintable() for c in text):
        return text
    return _one_line_json(text)


def _text_token(text: str) -> str:
    """An event name, level or field name: never empty, never a space or `=` that would break parsing."""
    cleaned = "".join(c if c.isprintable() and not c.isspace() and c not in '="' else "_" for c in text)
    return cleaned or "_"


class EventLog:
    """One line per event: JSON (for log shippers) or a readable form (for people). Never raises on odd values.

    Nor on a broken stream: like `logging`, a log that cannot be written must not stop the reconcile
    loop it reports on. A lock keeps lines from several threads whole.
    """

    def __init__(self, stream: TextIO, *, fmt: str = "text", clock: Callable[[], float] = time.time) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown event log format {fmt!r} (expected one of: {', '.join(FORMATS)})")
        self.stream = stream
        self.fmt = fmt
        self.clock = clock
        self._lock = threading.Lock()

    def emit(self, event: str, *, level: str = "info", **fields: Any) -> None:
        """Write one line for `event`; fields keep their order, sensitive ones are masked."""
        try:
            line = self.format(event, level=level, **fields)
        except Exception as exc:  # a bug here must not cost the loop; say so in the log instead
            line = self.format("event_log_error", level="error", failed_event=_safe_str(event), error=repr(exc))
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def format(self, event: str, *, level: str = "info", **fields: Any) -> str:
        """The line `emit` writes, without the newline."""
        try:
            now = float(self.clock())
        except Exception:
            now = time.time()
        stamp = format_time(now)
        values: dict[str, Any] = {}
        for name, value in fields.items():
            key = f"field_{name}" if name in RESERVED else name
            values[key] = MASK if is_sensitive(name) else plain(value)
        if self.fmt == "json":
            return _one_line_json({"time": stamp, "level": _safe_str(level), "event": _safe_str(event), **values})
        parts = [stamp, f"{_text_token(_safe_str(level)):<5}", _text_token(_safe_str(event))]
        parts.extend(f"{_text_token(name)}={text_value(value)}" for name, value in values.items())
        return " ".join(parts)
