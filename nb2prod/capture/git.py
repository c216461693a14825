"""Git state of the folder a notebook lives in: commit, branch, dirty, root.

Read with ``git status --porcelain=v2 --branch`` under a short timeout and
without taking the index lock, so a slow or missing git never stalls capture.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2prod.capture._records import require_field

__all__ = ["GIT_TIMEOUT_S", "GitInfo", "git_info"]

GIT_TIMEOUT_S = 2.0
"""Seconds each ``git`` call may take before git info is given up."""
MAX_DIRTY_FILES = 20
"""How many of the files that make a tree dirty are recorded."""


@dataclass(frozen=True)
class GitInfo:
    """Git state of the folder the notebook lives in.

    Attributes:
        commit: Full hash of ``HEAD``; None in a repository without commits.
        branch: Current branch; None when ``HEAD`` is detached.
        dirty: True when tracked files differ from ``HEAD`` or untracked,
            non-ignored files exist (what ``git status`` reports).
        root: Absolute path of the work tree's top folder.
        dirty_files: The files that make it dirty (relative to ``root``, at most
            :data:`MAX_DIRTY_FILES`; ``dirty`` may be True with more of them).
    """

    commit: str | None
    branch: str | None
    dirty: bool
    root: str
    dirty_files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "commit": self.commit,
            "branch": self.branch,
            "dirty": self.dirty,
            "root": self.root,
            "dirty_files": list(self.dirty_files),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GitInfo:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            commit=data.get("commit"),
            branch=data.get("branch"),
            dirty=bool(require_field(data, "dirty", "GitInfo")),
            root=str(require_field(data, "root", "GitInfo")),
            dirty_files=tuple(str(f) for f in data.get("dirty_files") or ()),
        )


def _git(args: list[str], cwd: Path) -> str | None:
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C")  # read-only: never take index.lock
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_info(folder: Path) -> GitInfo | None:
    """Return the git state of ``folder``; None without git or outside a repository."""
    if not folder.is_dir():
        return None
    root = _git(["rev-parse", "--show-toplevel"], folder)
    if root is None:
        return None
    status = _git(["status", "--porcelain=v2", "--branch"], folder)
    if status is None:
        return None
    commit = branch = None
    dirty = False
    files: list[str] = []
    for line in status.splitlines():
        if line.startswith("# branch.oid "):
            oid = line[len("# branch.oid ") :].strip()
            commit = None if oid == "(initial)" else oid
        elif line.startswith("# branch.head "):
            head = line[len("# branch.head ") :].strip()
            branch = None if head == "(detached)" else head
        elif line and not line.startswith("#"):
            dirty = True
            path = _status_path(line)
            if path and len(files) < MAX_DIRTY_FILES:
                files.append(path)
    return GitInfo(commit=commit, branch=branch, dirty=dirty, root=root.strip(), dirty_files=tuple(files))


def _status_path(line: str) -> str | None:
    """The path of one ``git status --porcelain=v2`` entry (a rename: its new path)."""
    kind = line[:1]
    if kind in ("?", "!"):
        return line[2:]
    fields = {"1": 8, "2": 9, "u": 10}.get(kind)
    if fields is None:
        return None
    parts = line.split(" ", fields)
    if len(parts) <= fields:
        return None
    path = parts[fields]
    return path.split("\t", 1)[0] if kind == "2" else path
