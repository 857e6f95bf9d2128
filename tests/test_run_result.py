"""A run's result is one enum (RunResult) from the workflow to the store, and its word everywhere it is shown.

The words are what schedulers and dashboards switch on, so they are pinned here; an unknown word read back from
a store (a newer version wrote it) is kept and shown as stored, never a crash and never written back.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.errors import LockError, TransportError
from reconciler.events import EventLog
from reconciler.metrics import Metrics
from reconciler.model import TargetSpec
from reconciler.notify import Run, notices, slack_payload, teams_payload, webhook_payload
from reconciler.recording import Recorder
from reconciler.status import Condition, target_status
from reconciler.store import (
    RESULTS,
    RunRecord,
    RunResult,
    SQLiteRunStore,
    UnknownResult,
    format_run,
    format_runs,
    run_to_json,
)
from reconciler.store.base import check_result, read_result
from reconciler.workflow import Verdict
from tests.e2e import ON_PREMISES, Estate

T0 = 1_700_000_000.0
WORDS = ["no-changes", "changes", "applied", "partial", "failed", "error", "refused", "interrupted"]
"""The words as they were strings, before the enum: they must not change."""


def test_the_words_are_the_ones_recorded_before() -> None:
    assert [r.value for r in RunResult] == WORDS
    assert sorted(RESULTS) == sorted(WORDS)


def test_every_verdict_is_recorded_as_the_result_of_its_word() -> None:
    for verdict in Verdict:
        assert type(verdict.result) is RunResult and verdict.result.value == verdict.value
        assert Verdict.of(verdict.result) is verdict
    assert Verdict.of(RunResult.INTERRUPTED) is None  # no verdict ends a run so: KeyboardInterrupt does
    assert Verdict.of(UnknownResult("skipped")) is None


@pytest.mark.parametrize("result", list(RunResult), ids=lambda r: r.value)
def test_every_result_round_trips_through_the_sqlite_store(tmp_path: Path, result: RunResult) -> None:
    path = tmp_path / "runs.sqlite3"
    with SQLiteRunStore(path) as store:
        finished = store.start(RunRecord(None, "apply", T0, "/m.yaml"))
        store.finish(finished, result=result, ended_at=T0 + 1)
        started = store.start(RunRecord(None, "run", T0 + 2, "/m.yaml", ended_at=T0 + 3, result=result))
        got = store.get(finished)
        listed = store.list(result=result)
    assert got is not None and got.result is result and got.result_word == result.value
    assert [r.id for r in listed] == [started, finished] and all(r.result is result for r in listed)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT DISTINCT result FROM runs").fetchall() == [(result.value,)]
    assert run_to_json(got)["result"] == result.value and type(run_to_json(got)["result"]) is str
    assert f"Run {finished}: apply {result.value}\n" in format_run(got)
    assert format_runs([got]).splitlines()[1].split()[3] == result.value


def test_a_word_that_is_not_a_result_is_refused_and_never_written(tmp_path: Path) -> None:
    with SQLiteRunStore(tmp_path / "runs.sqlite3") as store:
        run_id = store.start(RunRecord(None, "apply", T0, "/m.yaml"))
        with pytest.raises(ValueError, match="unknown run result 'skipped'"):
            store.finish(run_id, result=UnknownResult("skipped"))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown run result 'skipped'"):
            store.start(RunRecord(None, "apply", T0, "/m.yaml", result=UnknownResult("skipped")))
        with pytest.raises(ValueError, match="unknown run result 'aplied'"):
            store.list(result="aplied")  # type: ignore[arg-type]
        got = store.get(run_id)
        assert got is not None and got.result is None and len(store.list()) == 1
    assert check_result("applied") is RunResult.APPLIED and check_result(RunResult.FAILED) is RunResult.FAILED
    assert read_result(None) is None and read_result("partial") is RunResult.PARTIAL
    assert read_result("skipped") == UnknownResult("skipped")


def _store_with_an_unknown_word(path: Path) -> tuple[int, int]:
    """Two finished runs; the newer's result rewritten to a word this version does not know."""
    with SQLiteRunStore(path) as store:
        known = store.start(RunRecord(None, "plan", T0, "/m.yaml"))
        store.finish(known, result=RunResult.CHANGES, ended_at=T0 + 1)
        unknown = store.start(RunRecord(None, "apply", T0 + 10, "/m.yaml"))
        store.finish(unknown, result=RunResult.APPLIED, ended_at=T0 + 11)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE runs SET result = 'skipped' WHERE id = ?", (unknown,))
    return known, unknown


def test_history_shows_an_unknown_stored_word_as_stored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs.sqlite3"
    known, unknown = _store_with_an_unknown_word(path)
    with SQLiteRunStore(path) as store:
        got = store.get(unknown)
        assert got is not None and got.result == UnknownResult("skipped") and got.finished
        assert [r.result for r in store.list()] == [UnknownResult("skipped"), RunResult.CHANGES]
        assert [r.id for r in store.list(result=RunResult.APPLIED)] == []  # the row no longer says applied

    assert main(["history", "--store", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    rows = [line.split() for line in out.splitlines()[1:] if line]
    assert [(int(r[0]), r[2], r[3]) for r in rows] == [(unknown, "apply", "skipped"), (known, "plan", "changes")]

    assert main(["history", "--store", str(path), "--json"]) == 0
    out, _ = capsys.readouterr()
    assert [r["result"] for r in json.loads(out)] == ["skipped", "changes"]
    assert main(["history", "--store", str(path), str(unknown)]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith(f"Run {unknown}: apply skipped\n")
    assert main(["history", "--store", str(path), "--result", "changes", "--json"]) == 0
    out, _ = capsys.readouterr()
    assert [r["id"] for r in json.loads(out)] == [known]


def test_status_calls_a_target_unknown_when_its_last_result_is_an_unknown_word() -> None:
    target = TargetSpec("pool", "skype", {"transport": "lab"})
    applied = RunRecord(2, "apply", T0, "/m.yaml", targets=("pool",), ended_at=T0 + 1, result=RunResult.APPLIED)
    skipped = RunRecord(3, "apply", T0 + 10, "/m.yaml", targets=("pool",), ended_at=T0 + 11,
                        result=UnknownResult("skipped"))
    status = target_status(target, [skipped, applied])
    assert (status.condition, status.reason) == (Condition.UNKNOWN, "UnknownResult")
    assert "'skipped'" in status.message and status.last_run is skipped and status.since == skipped.started_at
    assert target_status(target, [applied]).condition is Condition.READY


def test_an_unknown_word_in_the_store_through_the_cli(estate: Estate) -> None:
    """`status` and `history` read a row a newer version wrote: no traceback, the word shown as stored."""
    assert estate.reconcile("plan", ON_PREMISES).code == 0
    with sqlite3.connect(Path(".reconciler") / "runs.sqlite3") as db:
        db.execute("UPDATE runs SET result = 'skipped'")
    status = estate.reconcile("status", ON_PREMISES, "--json")
    assert status.code == 0, status.err
    assert {(s["condition"], s["reason"]) for s in json.loads(status.out)} == {("Unknown", "UnknownResult")}
    history = estate.run("history", "--json")
    assert history.code == 0 and [r["result"] for r in json.loads(history.out)] == ["skipped"]


def _recorded(tmp_path: Path, exc: BaseException | None, result: RunResult | None = None) -> tuple[str, str, str]:
    """A run recorded by a Recorder that ends with `exc` raised (or `result`): the stored word, the run_end event's
    result and the metrics' runs_total line."""
    events = io.StringIO()
    metrics = Metrics()
    tmp_path.mkdir(exist_ok=True)
    manifest = tmp_path / "m.yaml"
    manifest.write_text("targets: {}\n", encoding="utf-8")
    with SQLiteRunStore(tmp_path / "runs.sqlite3") as store:
        recorder = Recorder("apply", manifest, store=store, events=EventLog(events, fmt="json"), metrics=metrics)
        with pytest.raises(type(exc)) if exc is not None else contextlib.nullcontext(), recorder:
            if result is not None:
                recorder.finish(result)
            if exc is not None:
                raise exc
        assert recorder.result is not None and type(recorder.result) is RunResult
        assert recorder.run_id is not None
        got = store.get(recorder.run_id)
    assert got is not None and type(got.result) is RunResult
    end = next(json.loads(line) for line in events.getvalue().splitlines() if json.loads(line)["event"] == "run_end")
    line = next(x for x in metrics.render().splitlines() if x.startswith("reconcile_runs_total{"))
    return got.result.value, end["result"], line


@pytest.mark.parametrize("exc,word", [
    (None, "no-changes"), (LockError("held"), "refused"), (TransportError("unreachable"), "error"),
    (KeyboardInterrupt(), "interrupted"),
])
def test_the_recorder_records_the_word_in_the_store_events_and_metrics(tmp_path: Path, exc: BaseException | None,
                                                                       word: str) -> None:
    stored, event, line = _recorded(tmp_path, exc)
    assert (stored, event, line) == (word, word, f'reconcile_runs_total{{command="apply",result="{word}"}} 1')


def test_the_recorder_takes_the_enum_or_its_word_and_refuses_another(tmp_path: Path) -> None:
    assert _recorded(tmp_path / "a", None, RunResult.PARTIAL)[:2] == ("partial", "partial")
    assert _recorded(tmp_path / "b", None, "applied")[:2] == ("applied", "applied")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown run result 'aplied'"):
        _recorded(tmp_path / "c", None, "aplied")  # type: ignore[arg-type]


def test_metrics_count_the_enum_and_its_word_as_one_series() -> None:
    metrics = Metrics()
    for result in (RunResult.APPLIED, "applied"):
        metrics.observe_run(command="run", result=result, duration_seconds=1, finished_at=1,  # type: ignore[arg-type]
                            drifted={}, success=True)
    assert [x for x in metrics.render().splitlines() if x.startswith("reconcile_runs_total{")] == [
        'reconcile_runs_total{command="run",result="applied"} 2']


def test_notifications_say_the_word() -> None:
    run = Run("apply", RunResult.PARTIAL, "/m/manifest.yaml", 4)
    items = notices("apply", RunResult.PARTIAL, None, None, ["pool: broken"])
    assert [n.event for n in items] == ["apply_failed"]
    assert notices("apply", RunResult.APPLIED, None, None, ["pool: broken"]) == []
    hook = webhook_payload(run, items, 0.0)
    assert type(hook["result"]) is str and '"result": "partial"' in json.dumps(hook)
    assert hook["summary"] == "reconcile apply: apply failed (manifest.yaml, result partial)"
    card = teams_payload(run, items, 0.0)["attachments"][0]["content"]
    assert {"title": "Result", "value": "partial"} in card["body"][1]["facts"]
    assert "result partial · run 4" in slack_payload(run, items, 0.0)["blocks"][1]["elements"][0]["text"]
    assert Run("apply", "failed", "/m.yaml").result is RunResult.FAILED  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown run result 'skipped'"):
        Run("apply", "skipped", "/m.yaml")  # type: ignore[arg-type]
