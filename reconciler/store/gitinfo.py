"""Which commit of the manifest a run used, so history can answer "what was applied, from where"; and which
manifest it is, the same from every clone of its repository (ManifestKey), so runners and operators on different
checkouts sharing one run store see each other's records.

Asked of the git binary rather than read from .git files: worktrees, submodules, packed refs and
`safe.directory` rules are git's business, and a wrong guess would be worse than no answer. Every
call has a short timeout and no failure escapes: recording a run must never fail because git is
missing, slow or broken. The worst case is a run recorded without (or with partial) git details.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

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
    # One rev-parse answers in order: inside a work tree?, HEAD's commit, HEAD's branch (`HEAD` when detached). In a
    # repository without commits it prints the first line, then fails on HEAD.
    out, ok = _git_output(directory, timeout, "rev-parse", "--is-inside-work-tree", "HEAD", "--abbrev-ref", "HEAD")
    lines = out.splitlines() if out is not None else []
    if not lines or lines[0].strip() != "true":
        return None
    commit = (lines[1].strip() or None) if ok and len(lines) == 3 else None
    ref = lines[2].strip() if commit else ""
    branch = ref if ref not in ("", "HEAD") else None
    status = _git(directory, timeout, "status", "--porcelain", "--", pathspec)
    dirty = bool(status.strip()) if status is not None else None
    return GitInfo(commit=commit, branch=branch, dirty=dirty)


@dataclass(frozen=True)
class ManifestKey:
    """What the run store knows a manifest by, worked out once per command.

    identity: what new records are keyed by. `git+<normalised remote URL>#<path in the repository>` when the manifest
    is in a git work tree with a remote (so every clone of one repository, on any machine, shares suspensions,
    run requests, the loop's next run and history); otherwise the resolved absolute path.
    local: the resolved absolute path on this machine: what records written before manifests had an identity are
    keyed by, and what a person recognises.
    """

    identity: str
    local: str

    @property
    def keys(self) -> tuple[str, ...]:
        """What reads match: the identity, and the local path that older records are keyed by."""
        return (self.identity,) if self.identity == self.local else (self.identity, self.local)

    def shown(self, key: str) -> str:
        """A stored key as a person reads it: this manifest's own key as its local path."""
        return self.local if key in self.keys else key


def manifest_key(path: Path, *, timeout: float = GIT_TIMEOUT) -> ManifestKey:
    """The manifest's identity (see ManifestKey). Never raises: without git, a remote or a usable remote URL, the
    identity is the resolved absolute path, as records were keyed before."""
    local = Path(path).resolve()
    identity = _git_identity(local, timeout)
    return ManifestKey(identity=identity or str(local), local=str(local))


def _git_identity(path: Path, timeout: float) -> str | None:
    directory, name = (path, "") if path.is_dir() else (path.parent, path.name)
    where = _git(directory, timeout, "rev-parse", "--show-toplevel", "--show-prefix")
    lines = where.splitlines() if where is not None else []
    if len(lines) not in (1, 2):
        return None  # not in a work tree (or git is missing)
    top, prefix = lines[0], lines[1] if len(lines) == 2 else ""  # the prefix line is empty at the top
    remotes = (_git(directory, timeout, "remote") or "").split()
    remote = "origin" if "origin" in remotes else remotes[0] if len(remotes) == 1 else None
    url = _git(directory, timeout, "remote", "get-url", remote) if remote is not None else None
    # Through git, so `url.<base>.insteadOf` rewriting applies as it does for a fetch.
    try:
        repository = normalise_remote(url.strip(), Path(top)) if url else None
    except (OSError, RuntimeError, ValueError):  # a path that cannot be resolved (a symlink loop, ...)
        return None
    if repository is None:
        return None
    inside = str(PurePosixPath(prefix, name)).strip("/") or "."
    return f"git+{repository}#{inside}"


_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>.*)$")


def normalise_remote(url: str, base: Path) -> str | None:
    """One spelling per repository, never with credentials; None when `url` cannot be read as a repository's.

    - `scheme://[userinfo@]host[:port]/path` (https, http, ssh, git, ...) and scp-like `[user@]host:path` read
      as `https://host/path`: the scheme, user name, password or token and port say how to reach a repository,
      not which one it is. The host is lowercased; the path keeps its case.
    - a local path or `file://` URL reads as `file://<absolute path>` (a relative path from the work tree's top).
    - in the path, repeated and trailing slashes and a trailing `.git` are dropped; query and fragment too.
    So https://host/org/repo.git, https://user:token@host/org/repo and git@host:org/repo.git are one repository:
    https://host/org/repo.
    """
    if not url or "::" in url.split("/", 1)[0]:
        return None  # `helper::address`: the remote helper decides what the address means
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme.lower() == "file":
            return _local(Path(parts.path), base)
        try:
            host = parts.hostname
        except ValueError:
            return None
        return _https(host, parts.path)
    scp = _SCP_LIKE.match(url)
    if scp is not None and len(scp.group("host")) > 1:  # `C:\repo` is a Windows drive, not a host
        return _https(scp.group("host"), scp.group("path"))
    return _local(Path(url), base)


def _https(host: str | None, path: str) -> str | None:
    segments = [s for s in path.split("/") if s]
    if not host or not segments:
        return None
    if segments[-1].endswith(".git"):
        segments[-1] = segments[-1][:-4]
    segments = [s for s in segments if s]
    return f"https://{host.lower()}/{'/'.join(segments)}" if segments else None


def _local(path: Path, base: Path) -> str:
    resolved = (base / path).resolve()
    if resolved.name == ".git":
        resolved = resolved.parent
    text = resolved.as_posix().rstrip("/")
    if text.endswith(".git"):
        text = text[:-4]
    return "file://" + ("" if text.startswith("/") else "/") + text


def _git(directory: Path, timeout: float, *args: str) -> str | None:
    """stdout of one git command, or None on any failure (missing binary, error exit, timeout)."""
    out, ok = _git_output(directory, timeout, *args)
    return out if ok else None


def _git_output(directory: Path, timeout: float, *args: str) -> tuple[str | None, bool]:
    """stdout of one git command (None when it could not run: a missing binary, a timeout) and whether it
    succeeded."""
    env = {k: v for k, v in os.environ.items() if k not in _REPOSITORY_OVERRIDES}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # status must not take index.lock while a person is committing
    env["GIT_TERMINAL_PROMPT"] = "0"
    command = ["git", "--literal-pathspecs", "-C", str(directory), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, check=False, encoding="utf-8", errors="replace")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None, False
    return done.stdout, done.returncode == 0
