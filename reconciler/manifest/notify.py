"""The manifest's `notify:` section: where reconcile tells people about drift, failed applies, handlers and
certificates about to expire (delivered by reconciler.notify).

A destination names the environment variable that holds its URL (`urlEnv`), never the URL: a webhook URL
is a secret (anyone who has it can post), so it stays out of the manifest, the plan, the logs and the
state directory.

The same `notify:` list may instead (or as well) live in a file of its own (`--notify-file`, or the
environment variable RECONCILE_NOTIFY_FILE): one set of destinations for every manifest a runner
reconciles, kept by whoever runs the service rather than in the manifests' repository.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import ManifestError, ManifestProblem
from reconciler.model import NotifyDestination

TYPES = ("webhook", "teams", "slack")
EVENTS = ("drift", "apply_failed", "handler", "certificate_expiring")
ENV_NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"
DURATION_PATTERN = r"^\s*((\d+(\.\d+)?[smhd]?)+)\s*$"
DEFAULT_INTERVAL = "1h"

SCHEMA: dict[str, Any] = {
    "type": "array",
    "description": "Notifications: a generic JSON webhook, Microsoft Teams (a Workflows webhook, Adaptive Card) "
                   "or Slack (incoming webhook), each told about the events it lists.",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["type", "urlEnv"],
        "properties": {
            "type": {"enum": list(TYPES), "description": "webhook (JSON), teams (Workflows webhook) or slack"},
            "urlEnv": {"type": "string", "pattern": ENV_NAME_PATTERN,
                       "description": "the environment variable that holds the destination's URL (a secret: "
                                      "never written in the manifest)"},
            "events": {"type": "array", "uniqueItems": True, "minItems": 1, "items": {"enum": list(EVENTS)},
                       "description": "what to tell (default: all of " + ", ".join(EVENTS) + ")"},
            "minInterval": {"type": "string", "pattern": DURATION_PATTERN,
                            "description": "the same event for the same target at most once per interval "
                                           f"(default {DEFAULT_INTERVAL}; 0s: every time)"},
        },
    },
}

FILE_ENV = "RECONCILE_NOTIFY_FILE"
FILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["notify"],
    "properties": {"notify": SCHEMA},
}


def destination(data: Mapping[str, Any]) -> NotifyDestination:
    """A `notify:` entry its schema accepted, as the record the rest of the tool passes along (defaults filled)."""
    return NotifyDestination(str(data["type"]), str(data["urlEnv"]), tuple(data.get("events") or EVENTS),
                             str(data.get("minInterval", DEFAULT_INTERVAL)))


def load_notify_file(path: Path) -> tuple[NotifyDestination, ...]:
    """The destinations of a notifications file (`notify:` as in a manifest). Raises ManifestError with every
    problem, each at its file and line, as a manifest's are reported."""
    from jsonschema import Draft202012Validator

    from reconciler.manifest.loader import encoding_problem, printable
    from reconciler.manifest.positions import format_path, parse
    from reconciler.manifest.schema import explain

    file = str(path)
    try:
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ManifestError([ManifestProblem(file, 1, "", f"cannot read the notifications file: {reason}")]) from None
    problem = encoding_problem(raw)
    if problem is not None:
        raise ManifestError([ManifestProblem(file, problem[0], "", f"the file is {problem[1]}")])
    text = raw.decode("utf-8-sig")
    if not text.strip():
        raise ManifestError([ManifestProblem(file, 1, "", "expected a mapping with `notify:`, got an empty file")])
    doc = parse(text)
    problems = [ManifestProblem(file, p.line, printable(format_path(p.path)), printable(p.message))
                for p in doc.problems]
    if not problems:
        problems += [ManifestProblem(file, doc.line(i.path), printable(format_path(i.path)), printable(i.message))
                     for i in explain(Draft202012Validator(FILE_SCHEMA), doc.data)]
    if problems:
        raise ManifestError(problems)
    return tuple(destination(d) for d in doc.data["notify"])
