"""The loop's timing rules, with a fake cycle and no real sleeping beyond a few milliseconds."""

from __future__ import annotations

import io
import json
import threading

import pytest

from reconciler.errors import ReconcilerError
from reconciler.events import EventLog
from reconciler.scheduler import Schedule, parse_duration, run_loop
from reconciler.workflow import Verdict


@pytest.mark.parametrize("text,seconds", [("90", 90), ("30s", 30), ("15m", 900), ("1h30m", 5400), ("2d", 172800),
                                          ("0.5s", 0.5)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15x", "-1m", "0", "1h 2"])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_interval_is_jittered_within_bounds() -> None:
    schedule = Schedule(interval=100, jitter=0.1)
    assert schedule.delay(0, rand=lambda: 0.0) == (90.0, "interval")
    assert schedule.delay(0, rand=lambda: 1.0) == (110.0, "interval")
    assert schedule.delay(0, rand=lambda: 0.5) == (100.0, "interval")


def test_backoff_doubles_from_retry_base_and_is_capped() -> None:
    schedule = Schedule(interval=60, retry_base=10)
    assert [schedule.delay(n)[0] for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
    assert schedule.delay(3)[1] == "backoff"
    assert Schedule(interval=60, retry_base=10, max_backoff=25).delay(3)[0] == 25


def events_of(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_loop_backs_off_after_errors_resets_after_success_and_survives_a_crash() -> None:
    verdicts = iter(["error", Verdict.FAILED, Verdict.APPLIED, "crash", Verdict.NO_CHANGES])

    def cycle() -> Verdict:
        verdict = next(verdicts)
        if verdict == "crash":
            raise RuntimeError("bug")
        if verdict == "error":
            raise ReconcilerError("recorded elsewhere")
        assert isinstance(verdict, Verdict)
        return verdict

    stream = io.StringIO()
    code = run_loop(cycle, Schedule(interval=0.002, jitter=0, retry_base=0.001), threading.Event(),
                    EventLog(stream, fmt="json"), max_cycles=5)
    assert code == 0
    sleeps = [(e["reason"], e["failures"]) for e in events_of(stream) if e["event"] == "cycle_sleep"]
    assert sleeps == [("backoff", 1), ("backoff", 2), ("interval", 0), ("backoff", 1)]
    assert any(e["event"] == "cycle_crashed" and "RuntimeError: bug" in str(e["error"]) for e in events_of(stream))


def test_a_stop_request_ends_the_loop_during_its_sleep_without_another_cycle() -> None:
    stop = threading.Event()
    calls: list[int] = []

    def cycle() -> Verdict:
        calls.append(1)
        threading.Timer(0.05, stop.set).start()
        return Verdict.NO_CHANGES

    code = run_loop(cycle, Schedule(interval=3600), stop, EventLog(io.StringIO()))
    assert code == 0 and calls == [1]


@pytest.mark.parametrize("verdict,code", [(Verdict.NO_CHANGES, 0), (Verdict.APPLIED, 0), (Verdict.CHANGES, 2),
                                          (Verdict.FAILED, 1), (Verdict.REFUSED, 1), (Verdict.PARTIAL, 1)])
def test_once_exit_codes(verdict: Verdict, code: int) -> None:
    assert run_loop(lambda: verdict, Schedule(interval=1), threading.Event(), EventLog(io.StringIO()),
                    max_cycles=1) == code
