"""Notifications end to end: the lab drifts, reconcile tells a real HTTP receiver on 127.0.0.1 (webhook, Teams,
Slack)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.errors import DeliveryError
from reconciler.notify import Notice, Run, notices, post, slack_payload, teams_payload
from tests.e2e import CROSS_PREMISES, ON_PREMISES, Estate

TOKEN = "s3cret-webhook-token-9f8e7d"


@dataclass
class Receiver:
    """A local HTTP server that records every POST and answers with scripted statuses (then 200)."""

    server: ThreadingHTTPServer
    received: list[tuple[str, Any]] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/{path}/{TOKEN}"

    def posts(self, path: str) -> list[Any]:
        return [body for where, body in self.received if where == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            me = box[0]
            path = self.path.strip("/").split("/")[0]
            me.attempts[path] = me.attempts.get(path, 0) + 1
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            status, headers = (me.script.get(path) or [(200, {})]).pop(0) if me.script.get(path) else (200, {})
            if status < 300:
                assert self.headers["Content-Type"] == "application/json"
                me.received.append((path, json.loads(body)))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()


NOTIFY = """
notify:
  - type: webhook
    urlEnv: NOTIFY_WEBHOOK_URL
  - type: teams
    urlEnv: NOTIFY_TEAMS_URL
    events: [drift, apply_failed, handler]
  - type: slack
    urlEnv: NOTIFY_SLACK_URL
    events: [handler, apply_failed]
    minInterval: 0s
"""


def manifest_with_notify(estate: Estate, base: Path = ON_PREMISES, text: str = NOTIFY) -> Path:
    return estate.write("notified.yaml", base.read_text(encoding="utf-8") + text)


def connect(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    for name, path in (("NOTIFY_WEBHOOK_URL", "webhook"), ("NOTIFY_TEAMS_URL", "teams"), ("NOTIFY_SLACK_URL", "slack")):
        monkeypatch.setenv(name, receiver.url(path))


def no_secret_anywhere(estate: Estate, *outputs: str) -> None:
    for text in outputs:
        assert TOKEN not in text
    for path in (estate.root / ".reconciler").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_drift_and_handler_runs_are_told_once_per_interval(estate: Estate, receiver: Receiver,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    connect(monkeypatch, receiver)
    manifest = manifest_with_notify(estate)
    drift = estate.reconcile("drift", manifest, "--log-format", "json")
    assert drift.code == 2, drift.out + drift.err
    [hook] = receiver.posts("webhook")
    assert hook["source"] == "reconcile" and hook["command"] == "drift" and hook["result"] == "changes"
    assert {(n["event"], n["target"]) for n in hook["notifications"]} == {
        ("drift", "litware-pool"), ("drift", "litware-exchange")}
    pool = next(n for n in hook["notifications"] if n["target"] == "litware-pool")
    assert "+ litware-pool.PartnerApplication.microsoft.sharepoint: not found on the target" in pool["details"]
    [card] = receiver.posts("teams")
    assert card["type"] == "message"
    attachment = card["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    content = attachment["content"]
    assert content["type"] == "AdaptiveCard" and content["version"] == "1.4"
    texts = [b.get("text", "") for b in content["body"]]
    assert "Drift on litware-pool: 4 change(s) needed" in texts
    assert receiver.posts("slack") == []  # slack is told only handler runs and failures
    events = [json.loads(line) for line in drift.out.splitlines()]
    sent = [e for e in events if e["event"] == "notify"]
    assert {(e["destination"], e["status"]) for e in sent} == {
        ("webhook (NOTIFY_WEBHOOK_URL)", "sent"), ("teams (NOTIFY_TEAMS_URL)", "sent")}

    # the same drift again within the interval: held back, nothing posted
    again = estate.reconcile("drift", manifest, "--log-format", "json")
    assert again.code == 2
    assert len(receiver.posts("webhook")) == 1 and len(receiver.posts("teams")) == 1
    assert '"status": "held back"' in again.out

    # the loop repairs it; the iisreset that ran is told (drift on the same targets is still held back)
    loop = estate.reconcile("run", manifest, "--once", "--log-format", "json")
    assert loop.code == 0, loop.out + loop.err
    hook = receiver.posts("webhook")[-1]
    assert [(n["event"], n["target"], n["title"]) for n in hook["notifications"]] == [
        ("handler", "litware-exchange", "Handler litware-exchange.handler.iisreset ran")]
    assert hook["notifications"][0]["details"] == ["iisreset atl-exchange-001", "iisreset atl-exchange-002"]
    [slack] = receiver.posts("slack")
    assert slack["text"].startswith("reconcile run: handler (notified.yaml, result applied)")
    assert slack["blocks"][0]["type"] == "header"
    assert "*Handler litware-exchange.handler.iisreset ran*" in slack["blocks"][2]["text"]["text"]
    no_secret_anywhere(estate, drift.out, drift.err, again.out, loop.out, loop.err)
    state = json.loads((estate.root / ".reconciler" / "notify-state.json").read_text(encoding="utf-8"))
    assert "webhook:NOTIFY_WEBHOOK_URL:drift:litware-pool" in state


def test_a_failed_apply_is_told_and_delivery_is_retried(estate: Estate, receiver: Receiver,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    connect(monkeypatch, receiver)
    receiver.script["slack"] = [(503, {"Retry-After": "0"}), (429, {"Retry-After": "0"})]
    receiver.script["teams"] = [(500, {"Retry-After": "0"})] * 10  # never accepted
    manifest = manifest_with_notify(estate, text=NOTIFY.replace("minInterval: 0s", "minInterval: 1h"))
    manifest.write_text(manifest.read_text(encoding="utf-8").replace(
        "servers: [atl-exchange-001, atl-exchange-002]", "servers: [atl-exchange-001, atl-exchange-404]"),
        encoding="utf-8")
    run = estate.reconcile("apply", str(manifest), "--auto-approve")
    assert run.code == 1  # the failed handler fails the apply; notifications do not change that
    [slack] = receiver.posts("slack")
    assert receiver.attempts["slack"] == 3  # 503, 429, then delivered
    titles = [b["text"]["text"].split("\n")[0] for b in slack["blocks"][2:]]
    assert titles == ["*Handler litware-exchange.handler.iisreset FAILED*", "*Apply failed on litware-exchange*"]
    assert receiver.attempts["teams"] == 4 and receiver.posts("teams") == []  # bounded: 4 attempts, then given up
    assert "error: notify: destination=teams (NOTIFY_TEAMS_URL), status=failed, notices=2, error=HTTP 500 after 4 " \
           "attempts" in run.err
    assert [n["event"] for n in receiver.posts("webhook")[0]["notifications"]] == ["handler", "apply_failed"]
    no_secret_anywhere(estate, run.out, run.err)


def test_an_unset_url_variable_is_reported_not_fatal(estate: Estate, receiver: Receiver,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", receiver.url("webhook"))
    monkeypatch.delenv("NOTIFY_TEAMS_URL", raising=False)
    drift = estate.reconcile("drift", manifest_with_notify(estate))
    assert drift.code == 2
    assert "notify destination=\"teams (NOTIFY_TEAMS_URL)\" status=\"not sent\"" in drift.out
    assert "the environment variable NOTIFY_TEAMS_URL is not set" in drift.out
    assert len(receiver.posts("webhook")) == 1
    # a plan at a terminal tells nobody
    assert estate.reconcile("plan", manifest_with_notify(estate)).code == 0
    assert len(receiver.posts("webhook")) == 1


def test_an_expiring_certificate_is_told(estate: Estate, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from tests.test_office365_e2e import make_cert
    connect(monkeypatch, receiver)
    shutil.copytree(CROSS_PREMISES.parent / "certs", estate.root / "certs", dirs_exist_ok=True)
    make_cert(estate.root / "soon.cer", "soon", -10, 12)
    text = CROSS_PREMISES.read_text(encoding="utf-8").replace(
        "      - certificateFile: certs/fabrikam-oauth.cer\n", "      - certificateFile: soon.cer\n")
    manifest = estate.write("cross.yaml", text + "notify:\n  - type: webhook\n    urlEnv: NOTIFY_WEBHOOK_URL\n"
                                                 "    events: [certificate_expiring]\n")
    drift = estate.reconcile("drift", manifest)
    assert drift.code == 2, drift.out + drift.err
    [hook] = receiver.posts("webhook")
    [notice] = hook["notifications"]  # one per target, however many of its certificates
    assert notice["event"] == "certificate_expiring" and notice["target"] == "fabrikam-tenant"
    assert notice["level"] == "warning" and len(notice["details"]) == 2
    assert all("soon.cer expires in 11 days" in line for line in notice["details"])


def test_the_manifest_section_is_checked(estate: Estate) -> None:
    bad = manifest_with_notify(estate, text="notify:\n  - type: teams-connector\n    url: https://example.invalid/x\n"
                                            "    events: [drift, everything]\n")
    run = estate.run("validate", str(bad))
    assert run.code == 1
    assert "notify[0].type: 'teams-connector' is not one of webhook, teams, slack" in run.err
    assert "notify[0]" in run.err and "urlEnv" in run.err
    assert "everything" in run.err


def test_post_retries_are_bounded_and_never_name_the_url(receiver: Receiver) -> None:
    receiver.script["webhook"] = [(502, {})] * 3
    naps: list[float] = []
    with httpx.Client(timeout=5) as client:
        assert post(client, receiver.url("webhook"), {"a": 1}, attempts=4, backoff=0.5, sleep=naps.append) == 4
        assert naps == [0.5, 1.0, 2.0]
        receiver.script["webhook"] = [(404, {})]
        with pytest.raises(DeliveryError, match=r"HTTP 404 \(not retried\)") as refused:
            post(client, receiver.url("webhook"), {}, sleep=naps.append)
        assert TOKEN not in str(refused.value)
        host, port = receiver.server.server_address[:2]
        with pytest.raises(DeliveryError, match="ConnectError") as failed:
            post(client, f"http://127.0.0.1:1/{TOKEN}", {}, attempts=2, sleep=naps.append)
        assert TOKEN not in str(failed.value)
        with pytest.raises(DeliveryError, match="not an http"):
            post(client, f"ftp://{host!s}:{port}/{TOKEN}", {}, sleep=naps.append)


def test_payloads_stay_within_the_channels_limits() -> None:
    run = Run("run", "failed", "/m/manifest.yaml", 7)
    many = [Notice("drift", f"t{i}", f"Drift on t{i} <b>&", tuple(f"line {j} ```" for j in range(40)))
            for i in range(60)]
    slack = slack_payload(run, many, 0.0)
    assert len(slack["blocks"]) <= 50 and all(len(b.get("text", {}).get("text", "")) <= 3000 for b in slack["blocks"])
    assert "&lt;b&gt;&amp;" in slack["blocks"][2]["text"]["text"] and "line 19" in slack["blocks"][2]["text"]["text"]
    assert "... and 20 more" in slack["blocks"][2]["text"]["text"]
    card = teams_payload(run, many[:2], 0.0)["attachments"][0]["content"]
    assert card["body"][1]["facts"][3] == {"title": "Run", "value": "7"}
    assert notices("plan", "changes", None, None, ()) == []


def test_notifications_from_a_file_of_their_own(estate: Estate, receiver: Receiver,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The destinations kept apart from the manifest (one file for every manifest a runner reconciles): given with
    --notify-file or RECONCILE_NOTIFY_FILE, told as well as the manifest's own, URLs still only in the environment."""
    connect(monkeypatch, receiver)
    ops = estate.write("notify.yaml", "notify:\n  - type: slack\n    urlEnv: NOTIFY_SLACK_URL\n"
                                      "    events: [drift]\n    minInterval: 0s\n")
    manifest = manifest_with_notify(estate, text="notify:\n  - type: webhook\n    urlEnv: NOTIFY_WEBHOOK_URL\n"
                                                 "    minInterval: 0s\n")
    drift = estate.reconcile("drift", manifest, "--notify-file", str(ops))
    assert drift.code == 2, drift.err
    assert len(receiver.posts("webhook")) == 1
    [slack] = receiver.posts("slack")
    assert "Drift on litware-pool" in json.dumps(slack)

    monkeypatch.setenv("RECONCILE_NOTIFY_FILE", str(ops))
    assert estate.reconcile("drift", ON_PREMISES).code == 2  # a manifest with no notify: section of its own
    assert len(receiver.posts("slack")) == 2 and len(receiver.posts("webhook")) == 1
    estate.lab("fail", "atl-cs-001", "Remove-CsPartnerApplication")
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 1
    assert len(receiver.posts("slack")) == 2  # apply_failed is not among the file's events
    no_secret_anywhere(estate, drift.out, drift.err)


def test_a_notifications_file_is_checked_before_any_work(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = estate.write("notify.yaml", "notify:\n  - type: slack\n    url: https://hooks.example.invalid/x\n")
    run = estate.reconcile("drift", ON_PREMISES, "--notify-file", str(bad))
    assert run.code == 1
    assert f"{bad}:3: notify[0]" in run.err and "urlEnv" in run.err
    assert estate.round_trips("atl-cs-001") == 0
    missing = estate.reconcile("apply", ON_PREMISES, "--auto-approve", "--notify-file", "nowhere.yaml")
    assert missing.code == 1 and "nowhere.yaml:1: cannot read the notifications file" in missing.err
    assert estate.app("atl-cs-001", "app") is not None  # nothing was changed
    monkeypatch.setenv("RECONCILE_NOTIFY_FILE", str(estate.write("empty.yaml", "")))
    assert "got an empty file" in estate.reconcile("run", ON_PREMISES, "--once").err
