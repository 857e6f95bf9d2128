"""Metrics in the Prometheus text format: exact rendering, escaping, the textfile and the HTTP endpoint."""

from __future__ import annotations

import math
import os
import re
import socket
import stat
import sys
import threading
from pathlib import Path

import httpx
import pytest

from reconciler.metrics import CONTENT_TYPE, ERROR_KINDS, Metrics, MetricsServer, format_value, is_loopback

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = rf'({_NAME})="((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE = re.compile(rf"^(?P<name>{_NAME})(?:\{{(?P<labels>{_LABEL}(?:,{_LABEL})*)?\}})? (?P<value>\S+)$")
_COMMENT = re.compile(rf"^# (?:HELP {_NAME} .*|TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped))$")


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """A tiny parser of the text format: every line a comment or `name{labels} value`; fails otherwise."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    typed: dict[str, str] = {}
    samples = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            match = _COMMENT.match(line)
            assert match, f"line {number}: bad comment {line!r}"
            if match.group(1):
                typed[match.group(1)] = match.group(2)
            continue
        match = _SAMPLE.match(line)
        assert match, f"line {number}: not `name{{labels}} value`: {line!r}"
        name, label_text, value = match["name"], match["labels"] or "", match["value"]
        labels = {
            m.group(1): re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), m.group(2))
            for m in re.finditer(_LABEL, label_text)
        }
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        assert family in typed, f"line {number}: sample of {name} before its # TYPE line"
        samples.append((name, labels, float(value)))  # float() accepts +Inf, -Inf and NaN
    return samples


def observed() -> Metrics:
    metrics = Metrics(buckets=(0.5, 1, 2.5))
    metrics.observe_run(command="plan", result="changes", duration_seconds=0.25, finished_at=1000,
                        drifted={"pool": 2, "edge": 1}, success=True)
    metrics.observe_run(command="plan", result="no-changes", duration_seconds=1, finished_at=1060.5,
                        drifted={"pool": 0}, success=True)
    metrics.observe_run(command="apply", result="failed", duration_seconds=7.5, finished_at=1100.25,
                        drifted={"pool": 3}, success=False)
    metrics.observe_run(command="plan", result="changes", duration_seconds=2, finished_at=1200,
                        drifted={}, success=True)
    metrics.observe_error("apply")
    metrics.observe_error("transport")
    metrics.observe_error("apply")
    return metrics


EXPECTED = """\
# HELP reconcile_run_duration_seconds Wall-clock duration of a reconcile run.
# TYPE reconcile_run_duration_seconds histogram
reconcile_run_duration_seconds_bucket{command="apply",le="0.5"} 0
reconcile_run_duration_seconds_bucket{command="apply",le="1"} 0
reconcile_run_duration_seconds_bucket{command="apply",le="2.5"} 0
reconcile_run_duration_seconds_bucket{command="apply",le="+Inf"} 1
reconcile_run_duration_seconds_sum{command="apply"} 7.5
reconcile_run_duration_seconds_count{command="apply"} 1
reconcile_run_duration_seconds_bucket{command="plan",le="0.5"} 1
reconcile_run_duration_seconds_bucket{command="plan",le="1"} 2
reconcile_run_duration_seconds_bucket{command="plan",le="2.5"} 3
reconcile_run_duration_seconds_bucket{command="plan",le="+Inf"} 3
reconcile_run_duration_seconds_sum{command="plan"} 3.25
reconcile_run_duration_seconds_count{command="plan"} 3
# HELP reconcile_runs_total Reconcile runs, by command and result.
# TYPE reconcile_runs_total counter
reconcile_runs_total{command="apply",result="failed"} 1
reconcile_runs_total{command="plan",result="changes"} 2
reconcile_runs_total{command="plan",result="no-changes"} 1
# HELP reconcile_drifted_resources Resources of a target that differed from the manifest at the last run.
# TYPE reconcile_drifted_resources gauge
reconcile_drifted_resources{target="edge"} 1
reconcile_drifted_resources{target="pool"} 3
# HELP reconcile_last_run_timestamp_seconds Unix time the last run of a command finished.
# TYPE reconcile_last_run_timestamp_seconds gauge
reconcile_last_run_timestamp_seconds{command="apply"} 1100.25
reconcile_last_run_timestamp_seconds{command="plan"} 1200
# HELP reconcile_last_success_timestamp_seconds Unix time the last successful run of a command finished.
# TYPE reconcile_last_success_timestamp_seconds gauge
reconcile_last_success_timestamp_seconds{command="plan"} 1200
# HELP reconcile_errors_total Errors met during runs, by kind.
# TYPE reconcile_errors_total counter
reconcile_errors_total{kind="apply"} 2
reconcile_errors_total{kind="discovery"} 0
reconcile_errors_total{kind="lock"} 0
reconcile_errors_total{kind="manifest"} 0
reconcile_errors_total{kind="metadata"} 0
reconcile_errors_total{kind="other"} 0
reconcile_errors_total{kind="stale_plan"} 0
reconcile_errors_total{kind="transport"} 1
# HELP reconcile_up 1 while the process that exposes these metrics is alive (or wrote this file).
# TYPE reconcile_up gauge
reconcile_up 1
"""


def test_exact_rendering_after_a_sequence_of_runs() -> None:
    # buckets cumulative (1 <= le="1": bounds are inclusive), counters accumulate, gauges replace,
    # a failed run moves last_run but not last_success, targets a run does not name keep their value
    assert observed().render() == EXPECTED


def test_rendering_is_accepted_by_the_parser_and_histograms_are_consistent() -> None:
    samples = parse(observed().render())
    for command in ("apply", "plan"):
        buckets = [(labels["le"], v) for n, labels, v in samples
                   if n == "reconcile_run_duration_seconds_bucket" and labels["command"] == command]
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), "buckets must be cumulative"
        assert buckets[-1][0] == "+Inf"
        count = next(v for n, labels, v in samples
                     if n == "reconcile_run_duration_seconds_count" and labels["command"] == command)
        assert buckets[-1][1] == count


def test_a_fresh_process_has_up_and_every_error_kind_at_zero() -> None:
    samples = parse(Metrics().render())
    assert ("reconcile_up", {}, 1.0) in samples
    errors = {labels["kind"]: v for n, labels, v in samples if n == "reconcile_errors_total"}
    assert errors == dict.fromkeys(ERROR_KINDS, 0.0)
    assert not [s for s in samples if s[0].startswith("reconcile_run_duration_seconds")]


def test_default_buckets_are_rendered_like_prometheus() -> None:
    metrics = Metrics()
    metrics.observe_run(command="run", result="applied", duration_seconds=0.05, finished_at=1, drifted={},
                        success=True)
    bounds = re.findall(r'le="([^"]+)"', metrics.render())
    assert bounds == ["0.1", "0.5", "1", "2.5", "5", "10", "30", "60", "120", "300", "+Inf"]


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    awkward = 'back\\slash "quoted"\nnext line'
    metrics.observe_run(command="drift", result="changes", duration_seconds=1, finished_at=1,
                        drifted={awkward: 4}, success=True)
    text = metrics.render()
    assert 'reconcile_drifted_resources{target="back\\\\slash \\"quoted\\"\\nnext line"} 4\n' in text
    samples = parse(text)
    assert ("reconcile_drifted_resources", {"target": awkward}, 4.0) in samples


@pytest.mark.parametrize("value,text", [
    (1.0, "1"), (0.5, "0.5"), (0, "0"), (2.5, "2.5"), (1763883637.123, "1763883637.123"),
    (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"), (-3.0, "-3"),
])
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize("call", [
    lambda m: m.observe_run(command="destroy", result="applied", duration_seconds=1, finished_at=1,
                            drifted={}, success=True),
    lambda m: m.observe_run(command="plan", result="ok", duration_seconds=1, finished_at=1,
                            drifted={}, success=True),
    lambda m: m.observe_run(command="plan", result="changes", duration_seconds=-1, finished_at=1,
                            drifted={}, success=True),
    lambda m: m.observe_run(command="plan", result="changes", duration_seconds=1, finished_at=1,
                            drifted={"pool": -1}, success=True),
    lambda m: m.observe_error("oops"),
], ids=["command", "result", "duration", "drifted", "error-kind"])
def test_values_outside_the_documented_sets_are_refused(call: object) -> None:
    metrics = Metrics()
    before = metrics.render()
    with pytest.raises(ValueError):
        call(metrics)  # type: ignore[operator]
    assert metrics.render() == before, "a refused observation must change nothing"


@pytest.mark.parametrize("buckets", [(1, 0.5), (1, 1), (0.5, math.nan)])
def test_bad_buckets_are_refused(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="buckets"):
        Metrics(buckets=buckets)


def test_an_explicit_inf_bucket_is_not_doubled() -> None:
    metrics = Metrics(buckets=(1, math.inf))
    metrics.observe_run(command="plan", result="changes", duration_seconds=3, finished_at=1, drifted={},
                        success=True)
    assert re.findall(r'le="([^"]+)"', metrics.render()) == ["1", "+Inf"]


def test_textfile_is_written_atomically_with_mode_0644(tmp_path: Path) -> None:
    metrics = observed()
    target = tmp_path / "reconcile.prom"
    target.write_text("old content\n", encoding="utf-8")
    metrics.write_textfile(target)
    assert target.read_text(encoding="utf-8") == metrics.render()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reconcile.prom"], "no temporary file left behind"
    if os.name == "posix":
        assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_failed_textfile_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "reconcile.prom"
    target.write_text("old content\n", encoding="utf-8")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        observed().write_textfile(target)
    assert target.read_text(encoding="utf-8") == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reconcile.prom"]


def test_the_server_answers_metrics_and_healthz_over_loopback() -> None:
    metrics = observed()
    with MetricsServer(metrics) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        response = httpx.get(server.base_url + "/metrics", timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"] == CONTENT_TYPE
        assert response.text == EXPECTED
        assert parse(response.text)

        metrics.observe_error("lock")  # the endpoint is live: the next scrape sees it
        again = parse(httpx.get(server.base_url + "/metrics", timeout=5).text)
        assert ("reconcile_errors_total", {"kind": "lock"}, 1.0) in again

        health = httpx.get(server.base_url + "/healthz", timeout=5)
        assert (health.status_code, health.text) == (200, "ok\n")
        assert httpx.get(server.base_url + "/other", timeout=5).status_code == 404
    with pytest.raises(RuntimeError):
        _ = server.base_url  # stopped


def test_the_server_stops_listening_when_stopped() -> None:
    server = MetricsServer(Metrics()).start()
    port = int(server.base_url.rsplit(":", 1)[1])
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback here")
def test_the_server_binds_the_ipv6_loopback() -> None:
    with MetricsServer(Metrics(), host="::1") as server:
        assert server.base_url.startswith("http://[::1]:")
        assert httpx.get(server.base_url + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.0.2.10", "metrics.example.org"])
def test_non_loopback_bind_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="allow_remote"):
        MetricsServer(Metrics(), host=host)


def test_allow_remote_lifts_the_refusal() -> None:
    server = MetricsServer(Metrics(), host="0.0.0.0", allow_remote=True)  # not started: no bind needed
    assert server.host == "0.0.0.0"


@pytest.mark.parametrize("host,expected", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("LOCALHOST", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("10.0.0.1", False), ("example.org", False), ("", False),
])
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_concurrent_observe_and_render_do_not_crash() -> None:
    metrics = Metrics()
    errors: list[BaseException] = []
    stop = threading.Event()
    writers, runs = 8, 200

    def write(index: int) -> None:
        try:
            for i in range(runs):
                metrics.observe_run(command="run", result="applied", duration_seconds=(i % 7) * 0.3,
                                    finished_at=float(i), drifted={f"target-{index}-{i}": i}, success=True)
                metrics.observe_error("other")
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            while not stop.is_set():
                parse(metrics.render())
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so a missing lock shows up as a crash here
    try:
        for thread in readers + threads:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        for thread in readers:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    samples = parse(metrics.render())
    assert ("reconcile_runs_total", {"command": "run", "result": "applied"}, float(writers * runs)) in samples
    assert ("reconcile_run_duration_seconds_count", {"command": "run"}, float(writers * runs)) in samples
    assert ("reconcile_errors_total", {"kind": "other"}, float(writers * runs)) in samples
    assert len([s for s in samples if s[0] == "reconcile_drifted_resources"]) == writers * runs  # new series all along
