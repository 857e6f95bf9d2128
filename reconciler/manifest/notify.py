"""The manifest's `notify:` section: where reconcile tells people about drift, failed applies, handlers and
certificates about to expire (delivered by reconciler.notify).

A destination names the environment variable that holds its URL (`urlEnv`), never the URL: a webhook URL
is a secret (anyone who has it can post), so it stays out of the manifest, the plan, the logs and the
state directory.
"""

from __future__ import annotations

from typing import Any

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
