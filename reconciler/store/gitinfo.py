"""Which commit of the manifest a run used, so history can answer "what was applied, from where".

Asked of the git binary rather than read from .git files: worktrees, submodules, packed refs and
`safe.directory` rules are git's business, and a wrong guess would be worse than no answer. Every
call has a short timeout and no failure escapes: recording a run must never fail because git is
missing, slow or broken. The worst case is a run recorded without (or with partial) git details.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT = 5.0

# Variables that would point git at another repository than the one holding the manifest (a cron
# job or a git hook may have them set); the manifest's own directory must decide.
_REPOSITORY_OVERRIDES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")


@dataclass(frozen=True)
class GitInfo:
    """The manifest's git context when a run started.

    commit: full HEAD hash (None in a repository without commits, or when git failed);
    branch: the checked-out branch (None when HEAD is detached or unknown);
    dirty: whether the manifest file differs from HEAD or is untracked (None when unknown).
    """

    commit: str | None
    branch: str | None
    dirty: bool | None


def git_info(path: Path, *, timeout: float = GIT_TIMEOUT) -> GitInfo | None:
    """Git details for the manifest at `path` (a file, or a directory of manifests).

    None when the directory is not inside a git work tree or git is not installed. Never raises.
    """
    path = Path(path).absolute()
    directory, pathspec = (path, ".") if path.is_dir() else (path.parent, path.name)
    inside = _git(directory, timeout, "rev-parse", "--is-inside-work-tree")
    if inside is None or inside.strip() != "true":
        return None
    head = _git(directory, timeout, "rev-parse", "--verify", "--quiet", "HEAD")
    commit = (head.strip() or None) if head is not None else None
    ref = _git(directory, timeout, "rev-parse", "--abbrev-ref", "HEAD") if commit else None
    branch = ref.strip() if ref is not None and ref.strip() not in ("", "HEAD") else None
    status = _git(directory, timeout, "status", "--porcelain", "--", pathspec)
    dirty = bool(status.strip()) if status is not None else None
    return GitInfo(commit=commit, branch=branch, dirty=dirty)


def _git(directory: Path, timeout: float, *args: str) -> str | None:
    """stdout of one git command, or None on any failure (missing binary, error exit, timeout)."""
    env = {k: v for k, v in os.environ.items() if k not in _REPOSITORY_OVERRIDES}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # status must not take index.lock while a person is committing
    env["GIT_TERMINAL_PROMPT"] = "0"
    command = ["git", "--literal-pathspecs", "-C", str(directory), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, check=False, encoding="utf-8", errors="replace")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.stdout if done.returncode == 0 else None
