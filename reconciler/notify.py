"""Notifications: tell a chat channel or a webhook about drift, failed applies, handlers and expiring certificates.

Configured in the manifest (`notify:`, see reconciler.manifest.notify); called once a run is recorded
(Recorder.on_finish), for drift, apply and run (a `plan` at a terminal tells nobody). What is told:

- `drift`: drift and run found changes on a target (one notice per target, its changes listed);
- `apply_failed`: apply or run ended failed, partial or error (per target where the failure has one);
- `handler`: a handler ran, or failed (e.g. iisreset on Exchange: users notice it);
- `certificate_expiring`: the plan warns that a declared certificate expires soon (or has expired).

Destinations: `webhook` (a JSON document of our own), `teams` (a Teams Workflows webhook: a message with
one Adaptive Card; the retired Office 365 connector webhooks are not supported) and `slack` (an incoming
webhook: `text` plus Block Kit blocks). One POST per destination per run, over httpx.

URLs are secrets: they come from the environment variable a destination names, and no message, event or
file of ours contains one (errors name the destination by its type and variable). Delivery is retried on
429 and 5xx and on connection errors, a bounded number of times, honouring Retry-After up to a cap.
Rate limit: the same event for the same target reaches a destination at most once per `minInterval`
(default 1h), remembered in STATE_DIR/notify-state.json, so a flapping estate does not flood a channel.
A notification that cannot be delivered never changes a run's result or exit code; it is reported as a
`notify` event (or on stderr where there is no event log).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import __version__
from reconciler.errors import DeliveryError
from reconciler.events import EventLog
from reconciler.model import NotifyDestination, Severity
from reconciler.store.base import RunResult, check_result

if TYPE_CHECKING:
    import httpx

    from reconciler.plan import Plan
    from reconciler.recording import Recorder
    from reconciler.runner import ApplyResult

STATE_FILE = "notify-state.json"
ATTEMPTS = 4
BACKOFF = 1.0
MAX_DELAY = 30.0
TIMEOUT = 10.0
MAX_LINES = 20
"""Lines shown per notice; the rest is counted ("... and 12 more")."""
FAILED_RESULTS = frozenset({RunResult.FAILED, RunResult.PARTIAL, RunResult.ERROR})
"""Results of an apply or run whose failures are told (`apply_failed`)."""
_EXPIRY = re.compile(r"\b(expires in \d+ days?|expired \()")
_SYMBOLS = {("create",): "+", ("update",): "~", ("delete",): "-", ("delete", "create"): "-/+"}
TITLES = {"drift": "Drift", "apply_failed": "Apply failed", "handler": "Handler",
          "certificate_expiring": "Certificate expiring"}


@dataclass(frozen=True)
class Notice:
    """One thing to tell: an event about one target (None: the whole run)."""

    event: str
    target: str | None
    title: str
    details: tuple[str, ...] = ()
    level: str = "warning"  # info | warning | error


@dataclass(frozen=True)
class Run:
    """What a notification says about the run it comes from."""

    command: str
    result: RunResult
    manifest: str
    run_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "result", check_result(self.result))  # a caller without types may pass the word


def duration(text: str) -> float:
    """A minInterval: `0`/`0s` (no limit), `90`, `30s`, `15m`, `1h30m`, `2d`."""
    from reconciler.scheduler import parse_duration

    if re.fullmatch(r"\s*0+(\.0+)?[smhd]?\s*", text):
        return 0.0
    return parse_duration(text)


def notices(command: str, result: RunResult, plan: Plan | None, applied: ApplyResult | None,
            errors: Sequence[str]) -> list[Notice]:
    """What a run has to tell, in a stable order: drift, certificates, handlers, failures."""
    found: list[Notice] = []
    if plan is not None and command in ("drift", "run"):
        for target in plan.targets:
            changes = plan.for_target(target)
            if changes:
                found.append(Notice("drift", target, f"Drift on {target}: {len(changes)} change(s) needed",
                                    tuple(f"{c.symbol} {c.key.address}: {c.reason}" for c in changes)))
    if plan is not None:
        expiring: dict[str | None, list[str]] = {}
        severe: set[str | None] = set()
        for diagnostic in plan.diagnostics:
            if _EXPIRY.search(diagnostic.message):
                owner = next((t for t in plan.targets if (diagnostic.address or "").startswith(f"{t}.")), None)
                expiring.setdefault(owner, []).append(str(diagnostic))
                if diagnostic.severity == Severity.ERROR:
                    severe.add(owner)
        found += [Notice("certificate_expiring", owner, f"Certificate expiring{' on ' + owner if owner else ''}",
                         tuple(lines), "error" if owner in severe else "warning")
                  for owner, lines in expiring.items()]
    if applied is not None:
        for handler in applied.handlers:
            if handler.error:
                found.append(Notice("handler", handler.run.target, f"Handler {handler.run.address} FAILED",
                                    (handler.error, *(c.display() for c in handler.run.commands)), "error"))
            elif handler.ran:
                found.append(Notice("handler", handler.run.target, f"Handler {handler.run.address} ran",
                                    tuple(c.display() for c in handler.run.commands), "info"))
    if command in ("apply", "run") and result in FAILED_RESULTS:
        found += _failures(applied, errors)
    return found


def _failures(applied: ApplyResult | None, errors: Sequence[str]) -> list[Notice]:
    per_target: dict[str, list[str]] = {}
    if applied is not None:
        for outcome in applied.outcomes:
            if outcome.error:
                per_target.setdefault(outcome.change.key.target, []).append(
                    f"{outcome.change.key.address}: {outcome.error}")
        for handler in applied.handlers:
            if handler.error:
                per_target.setdefault(handler.run.target, []).append(f"{handler.run.address}: {handler.error}")
        for target, left in applied.remaining.items():
            if left:
                per_target.setdefault(target, []).append(f"not converged: {len(left)} change(s) still needed")
    if not per_target:
        return [Notice("apply_failed", None, "Apply failed", tuple(errors) or ("(no message)",), "error")]
    return [Notice("apply_failed", target, f"Apply failed on {target}", tuple(lines), "error")
            for target, lines in per_target.items()]


# -- payloads ------------------------------------------------------------------------------------


def _shown(details: Sequence[str]) -> list[str]:
    shown = [" ".join(line.split()) for line in details[:MAX_LINES]]
    if len(details) > MAX_LINES:
        shown.append(f"... and {len(details) - MAX_LINES} more")
    return shown


def _headline(run: Run, items: Sequence[Notice]) -> str:
    kinds = ", ".join(dict.fromkeys(TITLES[n.event].lower() for n in items))
    return f"reconcile {run.command}: {kinds} ({Path(run.manifest).name}, result {run.result.value})"


def webhook_payload(run: Run, items: Sequence[Notice], now: float) -> dict[str, Any]:
    return {
        "source": "reconcile",
        "version": __version__,
        "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "command": run.command,
        "result": run.result.value,
        "manifest": run.manifest,
        "run_id": run.run_id,
        "summary": _headline(run, items),
        "notifications": [{"event": n.event, "target": n.target, "level": n.level, "title": n.title,
                           "details": list(n.details)} for n in items],
    }


_TEAMS_COLOURS = {"error": "Attention", "warning": "Warning", "info": "Good"}


def teams_payload(run: Run, items: Sequence[Notice], now: float) -> dict[str, Any]:
    """A Teams Workflows webhook message: one Adaptive Card (schema 1.4), a fact set, a section per notice."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": _headline(run, items), "weight": "Bolder", "size": "Medium", "wrap": True},
        {"type": "FactSet", "facts": [{"title": "Manifest", "value": run.manifest},
                                      {"title": "Command", "value": run.command},
                                      {"title": "Result", "value": run.result.value},
                                      {"title": "Run", "value": str(run.run_id) if run.run_id is not None else "-"}]},
    ]
    for n in items:
        body.append({"type": "TextBlock", "text": n.title, "weight": "Bolder", "wrap": True, "separator": True,
                     "color": _TEAMS_COLOURS.get(n.level, "Default")})
        shown = _shown(n.details)
        if shown:
            body.append({"type": "TextBlock", "text": "\n\n".join(shown), "wrap": True, "fontType": "Monospace",
                         "size": "Small"})
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4", "msteams": {"width": "Full"}, "body": body}
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(run: Run, items: Sequence[Notice], now: float) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (the fallback and notification line) plus blocks (at most 50)."""
    headline = _headline(run, items)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(
            f"{run.manifest} · {run.command} · result {run.result.value}"
            + (f" · run {run.run_id}" if run.run_id is not None else ""))}]},
    ]
    for n in items[:47]:
        text = f"*{_slack_escape(n.title)}*"
        shown = _shown(n.details)
        if shown:
            text += "\n```" + _slack_escape("\n".join(shown)).replace("```", "'''") + "```"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:2990]}})
    if len(items) > 47:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"... and {len(items) - 47} more"}]})
    return {"text": headline, "blocks": blocks}


PAYLOADS: dict[str, Callable[[Run, Sequence[Notice], float], dict[str, Any]]] = {
    "webhook": webhook_payload, "teams": teams_payload, "slack": slack_payload}


# -- delivery --------------------------------------------------------------------------------------


class RateLimit:
    """When each (destination, event, target) was last told, in a JSON file in the state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)} \
            if isinstance(data, dict) else {}

    @staticmethod
    def key(destination: NotifyDestination, notice: Notice) -> str:
        return f"{destination.type}:{destination.url_env}:{notice.event}:{notice.target or '*'}"

    def due(self, destination: NotifyDestination, items: Sequence[Notice],
            now: float) -> tuple[list[Notice], list[Notice]]:
        """(to send, held back) by the destination's interval."""
        sent = self._read()
        interval = duration(destination.min_interval)
        due: list[Notice] = []
        held: list[Notice] = []
        for n in items:
            last = sent.get(self.key(destination, n))
            (held if last is not None and now - last < interval else due).append(n)
        return due, held

    def mark(self, destination: NotifyDestination, items: Sequence[Notice], now: float) -> None:
        sent = self._read()
        sent.update({self.key(destination, n): now for n in items})
        horizon = now - 30 * 86400  # forget what is a month old: the file stays small
        sent = {k: v for k, v in sent.items() if v >= horizon}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(sent, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temporary, self.path)


def post(client: httpx.Client, url: str, payload: Mapping[str, Any], *, attempts: int = ATTEMPTS,
         backoff: float = BACKOFF, max_delay: float = MAX_DELAY,
         sleep: Callable[[float], None] = time.sleep) -> int:
    """POST JSON; retried on 429, 5xx and connection errors. Returns the number of attempts it took."""
    import httpx

    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    problem = ""
    for attempt in range(1, attempts + 1):
        delay = backoff * 2 ** (attempt - 1)
        try:
            response = client.post(url, content=body, headers={"Content-Type": "application/json"})
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError):
            raise DeliveryError("its URL is not an http(s) URL (not retried)") from None
        except httpx.HTTPError as exc:  # its text may hold the URL: only the kind of failure is kept
            problem = f"{type(exc).__name__} (no HTTP response)"
        else:
            if response.status_code < 300:
                return attempt
            problem = f"HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                raise DeliveryError(f"{problem} (not retried)")
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.strip().isdigit():
                delay = float(retry_after.strip())
        if attempt < attempts:
            sleep(min(delay, max_delay))
    raise DeliveryError(f"{problem} after {attempts} attempts")


class Notifier:
    """Delivers a run's notices to the manifest's destinations; never raises into the run."""

    def __init__(self, destinations: Sequence[NotifyDestination], state_dir: Path, *, events: EventLog | None = None,
                 environ: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time,
                 attempts: int = ATTEMPTS, backoff: float = BACKOFF) -> None:
        self.destinations = tuple(destinations)
        self.limits = RateLimit(state_dir / STATE_FILE)
        self.events = events
        self.environ = os.environ if environ is None else environ
        self.clock = clock
        self.attempts = attempts
        self.backoff = backoff

    def on_finish(self, record: Recorder) -> None:
        try:
            result = record.result or RunResult.ERROR
            items = notices(record.command, result, record.plan, record.apply_result, record.errors)
            self.deliver(Run(record.command, result, str(record.manifest), record.run_id), items)
        except Exception as exc:  # a bug here must not cost the run its result
            self._say("error", destination="-", status="crashed", error=f"{type(exc).__name__}: {exc}")

    def deliver(self, run: Run, items: Sequence[Notice]) -> None:
        import httpx

        if not items:
            return
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
            for destination in self.destinations:
                wanted = [n for n in items if n.event in destination.events]
                if not wanted:
                    continue
                now = self.clock()
                due, held = self.limits.due(destination, wanted, now)
                if held:
                    self._say("info", destination=destination.name, status="held back", notices=len(held),
                              note=f"told within the last {duration(destination.min_interval):g}s")
                if not due:
                    continue
                url = self.environ.get(destination.url_env, "").strip()
                if not url:
                    self._say("warning", destination=destination.name, status="not sent", notices=len(due),
                              error=f"the environment variable {destination.url_env} is not set")
                    continue
                try:
                    tries = post(client, url, PAYLOADS[destination.type](run, due, now), attempts=self.attempts,
                                 backoff=self.backoff)
                except DeliveryError as exc:
                    self._say("error", destination=destination.name, status="failed", notices=len(due),
                              error=str(exc))
                    continue
                with contextlib.suppress(OSError):
                    self.limits.mark(destination, due, now)
                self._say("info", destination=destination.name, status="sent", notices=len(due), attempts=tries,
                          events=sorted({n.event for n in due}))

    def _say(self, level: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.emit("notify", level=level, **fields)
        elif level != "info":
            detail = ", ".join(f"{k}={v}" for k, v in fields.items())
            print(f"{level}: notify: {detail}", file=sys.stderr)
