"""The project's ``.gitignore`` for what nb2prod writes in the project home.

``.nb2prod/`` holds the local MLflow store and artifacts, the BentoML store, prediction logs and
kept runs: machine state, never committed. ``bentos/NAME/`` is the reviewable service source
(DESIGN: commit it), so only the bytecode Python leaves there is ignored. ``.ipynb_checkpoints/``
is Jupyter's autosave copy of every notebook. Without these lines a freshly committed project
reads "dirty" on its first run. Written only inside a git work tree, and only the lines missing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

FILE = ".gitignore"
HEADER = "# nb2prod: its local state, and what Python and Jupyter leave beside the sources"
ENTRIES = (".nb2prod/", "bentos/**/__pycache__/", ".ipynb_checkpoints/")


def _in_git_tree(home: Path) -> bool:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--is-inside-work-tree"],
            cwd=home,
            capture_output=True,
            text=True,
            timeout=2.0,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == "true"


def _present(lines: set[str], entry: str) -> bool:
    bare = entry.rstrip("/")
    return bool({bare, bare + "/", "/" + bare, "/" + bare + "/"} & lines)


def ensure(home: Path) -> list[str]:
    """Add the missing :data:`ENTRIES` to ``home/.gitignore`` inside a git work tree; the added ones."""
    if not home.is_dir() or not _in_git_tree(home):
        return []
    path = home / FILE
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError):
        return []
    lines = {line.strip() for line in text.splitlines()}
    missing = [entry for entry in ENTRIES if not _present(lines, entry)]
    if not missing:
        return []
    block = ([HEADER] if HEADER not in lines else []) + missing
    prefix = "" if not text or text.endswith("\n") else "\n"
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(prefix + "\n".join(block) + "\n")
    except OSError:  # a read-only checkout: nothing to add then
        return []
    return missing
