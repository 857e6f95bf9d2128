"""Structured event lines: JSON that parses, a readable text form, one line per event, secrets masked."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.events import MASK, EventLog, format_time, is_sensitive

STAMP = datetime(2026, 11, 23, 7, 40, 37, 123000, tzinfo=UTC).timestamp()


def log(fmt: str) -> tuple[EventLog, io.StringIO]:
    stream = io.StringIO()
    return EventLog(stream, fmt=fmt, clock=lambda: STAMP), stream


def lines(stream: io.StringIO) -> list[str]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return text.splitlines()  # splits on \u2028, \x85 ... too: a stricter reader than most shippers


def test_json_lines_parse_and_carry_the_fields() -> None:
    events, stream = log("json")
    events.emit("run_start", command="apply", manifest="manifests/on-premises.yaml", git_commit=None)
    events.emit("change", address="pool.PartnerApplication.app", actions=["delete"], reason="ensure: absent",
                mode="apply", status="applied")
    events.emit("run_end", level="warning", command="apply", result="failed", duration_seconds=1.5,
                drifted={"pool": 2}, errors=1)
    parsed = [json.loads(line) for line in lines(stream)]
    assert parsed[0] == {"time": "2026-11-23T07:40:37.123Z", "level": "info", "event": "run_start",
                         "command": "apply", "manifest": "manifests/on-premises.yaml", "git_commit": None}
    assert list(parsed[1]) == ["time", "level", "event", "address", "actions", "reason", "mode", "status"]
    assert parsed[1]["actions"] == ["delete"]
    assert parsed[2]["level"] == "warning"
    assert parsed[2]["drifted"] == {"pool": 2}
    assert parsed[2]["duration_seconds"] == 1.5


def test_odd_values_never_raise_and_stay_on_one_line() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no")

    cyclic: list[Any] = []
    cyclic.append(cyclic)
    odd: dict[str, Any] = {
        "multiline": "first\nsecond\r\nthird",
        "separators": "a\u2028b\u2029c\x85d",
        "unicode": "Zürich ✓",
        "path": Path("manifests/x.yaml"),
        "nan": math.nan,
        "inf": math.inf,
        "raw": b"\x00\xff",
        "tuple_keys": {("a", 1): "x"},
        "a_set": {"b", "a"},
        "error": ValueError("bad\nthing"),
        "unprintable": Unprintable(),
        "cyclic": cyclic,
        "obj": object(),
    }
    for fmt in ("json", "text"):
        events, stream = log(fmt)
        events.emit("change", **odd)
        events.emit("stop", signal="SIGTERM")
        assert len(lines(stream)) == 2, stream.getvalue()
        if fmt == "json":
            first = json.loads(lines(stream)[0], parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
            assert first["multiline"] == "first\nsecond\r\nthird"
            assert first["separators"] == "a\u2028b\u2029c\x85d"
            assert first["unicode"] == "Zürich ✓"  # ensure_ascii=False: readable, and round-trips
            assert "Zürich" in stream.getvalue()
            assert first["path"] == str(Path("manifests/x.yaml"))
            assert first["nan"] == "nan"
            assert first["a_set"] == ["a", "b"]
            assert first["tuple_keys"] == {"('a', 1)": "x"}
            assert first["unprintable"].startswith("<unprintable")


def test_a_broken_stream_does_not_stop_the_caller() -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("broken pipe")

    EventLog(Closed(), fmt="json").emit("stop", signal="SIGTERM")


def test_text_form() -> None:
    events, stream = log("text")
    events.emit("change", address="pool.PartnerApplication.app", actions=["delete"], reason="ensure: absent",
                status="applied")
    events.emit("change", level="error", address="pool.OAuthServer.microsoft.sts", actions=["delete", "create"],
                status="failed")
    events.emit("run_end", command="plan", drifted={"pool": 2, "edge": 0}, git_commit=None, ok=True,
                empty="", message='say "hi"\nthen go')
    assert lines(stream) == [
        '2026-11-23T07:40:37.123Z info  change address=pool.PartnerApplication.app actions=delete '
        'reason="ensure: absent" status=applied',
        '2026-11-23T07:40:37.123Z error change address=pool.OAuthServer.microsoft.sts actions=delete,create '
        'status=failed',
        '2026-11-23T07:40:37.123Z info  run_end command=plan drifted=pool:2,edge:0 git_commit=- ok=true '
        'empty="" message="say \\"hi\\"\\nthen go"',
    ]


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("name", ["secret", "client_secret", "clientSecret", "ClientSecret", "password",
                                  "adminPassword", "token", "access_token", "API-Token", "privateKey",
                                  "private_key", "PRIVATEKEY"])
def test_sensitive_field_names_are_masked(fmt: str, name: str) -> None:
    events, stream = log(fmt)
    events.emit("change", address="pool.PartnerApplication.app", **{name: "hunter2-Zx9"})
    out = stream.getvalue()
    assert "hunter2-Zx9" not in out
    assert MASK in out
    assert "pool.PartnerApplication.app" in out


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_sensitive_keys_inside_values_are_masked(fmt: str) -> None:
    events, stream = log(fmt)
    events.emit("change", parameters={"Identity": "app", "ClientSecret": "hunter2-Zx9"},
                batch=[{"password": "hunter2-Zx9"}])
    out = stream.getvalue()
    assert "hunter2-Zx9" not in out
    assert "app" in out
    if fmt == "json":
        record = json.loads(out)
        assert record["parameters"] == {"Identity": "app", "ClientSecret": MASK}
        assert record["batch"] == [{"password": MASK}]


@pytest.mark.parametrize("name,expected", [
    ("address", False), ("reason", False), ("keyinfo", False), ("monkey", False), ("actions", False),
    ("client_secret", True), ("tokens", True), ("Private-Key", True), ("PassWord", True),
])
def test_is_sensitive(name: str, expected: bool) -> None:
    assert is_sensitive(name) is expected


def test_a_field_named_like_the_header_does_not_replace_it() -> None:
    events, stream = log("json")
    events.emit("cycle_sleep", seconds=30, reason="backoff", time="forged")
    record = json.loads(stream.getvalue())
    assert record["time"] == "2026-11-23T07:40:37.123Z"
    assert record["field_time"] == "forged"
    assert record["seconds"] == 30


@pytest.mark.parametrize("timestamp,text", [
    (0.0, "1970-01-01T00:00:00.000Z"),
    (STAMP, "2026-11-23T07:40:37.123Z"),
    (59.9996, "1970-01-01T00:01:00.000Z"),  # rounds to the millisecond, carrying into the seconds
])
def test_format_time(timestamp: float, text: str) -> None:
    assert format_time(timestamp) == text


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        EventLog(io.StringIO(), fmt="yaml")


def test_each_emit_writes_and_flushes_one_line() -> None:
    class Counting(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    stream = Counting()
    events = EventLog(stream, fmt="text", clock=lambda: STAMP)
    events.emit("stop", signal="SIGINT")
    assert stream.getvalue() == "2026-11-23T07:40:37.123Z info  stop signal=SIGINT\n"
    assert stream.flushes == 1
