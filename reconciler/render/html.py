"""`reconcile report`: one self-contained HTML page of where the estate stands, for people who do not run the CLI.

Per target its condition (reconcile status), the changes its last run found or made (the drift), the recent
runs (reconcile history) and the trust graph as a picture (Graphviz's SVG when `dot` is installed, else the DOT
source to paste into any Graphviz viewer). No script, no external resource: it opens from a mail attachment or
a CI artifact as it is. Every value is escaped: error messages and reasons come from servers.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

from reconciler.status import TargetStatus
from reconciler.store.base import RunRecord

_STYLE = """
body { font-family: Segoe UI, Helvetica, Arial, sans-serif; margin: 2em; color: #1b1b1b; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #d0d0d0; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.Ready { color: #107c10; } .Drifted { color: #986f0b; } .Failing { color: #c50f1f; }
.Suspended { color: #0063b1; } .Unknown { color: #6e6e6e; }
code, pre { font-family: Consolas, Menlo, monospace; font-size: 0.9em; }
.graph svg { max-width: 100%; height: auto; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(moment: float | None) -> str:
    return "-" if moment is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def _status_table(statuses: Sequence[TargetStatus]) -> list[str]:
    rows = ["<table>", "<tr><th>Target</th><th>Condition</th><th>Reason</th><th>Since</th><th>Last run</th>"
            "<th>Next run</th><th>Revision</th><th>Message</th></tr>"]
    for s in statuses:
        last = f"#{s.last_run.id} {s.last_run.command} {_when(s.last_run.started_at)}" if s.last_run else "-"
        message = s.message + (f"; suspended: {', '.join(s.suspended_resources)}" if s.suspended_resources else "")
        upcoming = "-" if s.next_run is None else f"{_when(s.next_run.at)} ({s.next_run.reason.value})"
        rows.append(f"<tr><td>{_e(s.target)}</td><td class=\"{_e(s.condition.value)}\">{_e(s.condition.value)}</td>"
                    f"<td>{_e(s.reason)}</td><td>{_e(_when(s.since))}</td><td>{_e(last)}</td><td>{_e(upcoming)}</td>"
                    f"<td><code>{_e((s.last_applied_revision or '-')[:12])}</code></td><td>{_e(message)}</td></tr>")
    rows.append("</table>")
    return rows


def _drift(statuses: Sequence[TargetStatus]) -> list[str]:
    out: list[str] = []
    for s in statuses:
        run = s.last_run
        if run is None:
            continue
        mine = [c for c in run.changes if c.address.startswith(f"{s.target}.")]
        if not mine:
            continue
        out += [f"<h3>{_e(s.target)}: run #{run.id} ({_e(run.command)}, {_e(run.result_word)})</h3>", "<table>",
                "<tr><th>Address</th><th>Action</th><th>Status</th><th>Reason</th></tr>"]
        out += [f"<tr><td><code>{_e(c.address)}</code></td><td>{_e('/'.join(c.actions))}</td><td>{_e(c.status)}</td>"
                f"<td>{_e(c.reason)}</td></tr>" for c in mine]
        out.append("</table>")
    return out or ["<p>No target's last run found or made a change.</p>"]


def _history(runs: Sequence[RunRecord]) -> list[str]:
    if not runs:
        return ["<p>No run recorded yet.</p>"]
    rows = ["<table>", "<tr><th>Run</th><th>Started</th><th>Command</th><th>Result</th><th>Targets</th>"
            "<th>Changes</th><th>Git</th><th>Errors</th></tr>"]
    for r in runs:
        git = (r.git.commit or "")[:12] if r.git is not None else ""
        errors = "<br>".join(_e(e) for e in r.errors[:5]) + (f"<br>… and {len(r.errors) - 5} more" if len(r.errors) > 5
                                                             else "")
        rows.append(f"<tr><td>#{_e(r.id)}</td><td>{_e(_when(r.started_at))}</td><td>{_e(r.command)}</td>"
                    f"<td>{_e(r.result_word or 'unfinished')}</td><td>{_e(', '.join(r.targets))}</td>"
                    f"<td>{len(r.changes)}</td><td><code>{_e(git)}</code></td><td>{errors}</td></tr>")
    rows.append("</table>")
    return rows


def _graph(svg: str | None, dot: str) -> list[str]:
    if svg is not None:
        start = svg.find("<svg")
        return ['<div class="graph">', svg[start:] if start >= 0 else "", "</div>"]
    return ["<p>Graphviz (<code>dot</code>) is not installed here: the graph's DOT source, for any Graphviz "
            "viewer:</p>", f"<pre>{_e(dot)}</pre>"]


def render_report(manifest: str, statuses: Sequence[TargetStatus], runs: Sequence[RunRecord], *, dot: str,
                  svg: str | None, now: float | None = None) -> str:
    """The whole page. `svg`: Graphviz's rendering of `dot` (trusted: made here), or None to show the source."""
    now = time.time() if now is None else now
    counts = {c: sum(1 for s in statuses if s.condition.value == c) for c in
              ("Ready", "Drifted", "Failing", "Suspended", "Unknown")}
    summary = ", ".join(f"{n} {c.lower()}" for c, n in counts.items() if n)
    body = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>reconcile report: {_e(manifest)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
        f"<h1>reconcile report: {_e(manifest)}</h1>",
        f"<p>Made {_e(_when(now))}: {len(statuses)} target(s), {_e(summary or 'none')}.</p>",
        "<h2>Status</h2>", *_status_table(statuses),
        "<h2>Drift: what each target's last run found or made</h2>", *_drift(statuses),
        "<h2>Trust graph</h2>", *_graph(svg, dot),
        f"<h2>History (last {len(runs)} runs)</h2>", *_history(runs),
        "</body>", "</html>",
    ]
    return "\n".join(body) + "\n"
