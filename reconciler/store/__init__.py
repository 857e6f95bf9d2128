"""The run store: every plan, apply, drift check and scheduled cycle, recorded for `reconcile history`.

Depends on nothing above it (only reconciler.errors), so any command can record runs.
"""

from reconciler.store.base import (
    COMMANDS,
    DEFAULT_STORE,
    RESULTS,
    ChangeRecord,
    RunRecord,
    RunResult,
    RunStore,
    UnknownResult,
    open_store,
)
from reconciler.store.gitinfo import GitInfo, git_info
from reconciler.store.render import format_run, format_runs, run_to_json, runs_to_json
from reconciler.store.sqlite import MIGRATIONS, Migration, SQLiteRunStore

__all__ = [
    "COMMANDS",
    "DEFAULT_STORE",
    "MIGRATIONS",
    "RESULTS",
    "ChangeRecord",
    "GitInfo",
    "Migration",
    "RunRecord",
    "RunResult",
    "RunStore",
    "SQLiteRunStore",
    "UnknownResult",
    "format_run",
    "format_runs",
    "git_info",
    "open_store",
    "run_to_json",
    "runs_to_json",
]
