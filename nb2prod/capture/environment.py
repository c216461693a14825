"""Environment snapshot and diff: what the notebook ran on, and what changed since.

A snapshot records the interpreter, the machine, every installed distribution
with its version, the distributions the notebook actually imported (the
service's requirements are pinned from these), the git state and the
notebook's code identity. Environment variables are recorded by name only:
no value ever enters a snapshot. A diff of two snapshots is data
(:class:`EnvironmentDiff`, :class:`DiffEntry`); renderers pick from it.

Distributions live in :mod:`nb2prod.capture.distributions`, the notebook's
code identity in :mod:`nb2prod.capture.notebook`, git state in
:mod:`nb2prod.capture.git`. Only the standard library is used
(``packaging`` optionally, to order versions in :func:`diff`).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from nb2prod.capture._records import require_field, sha256_digest
from nb2prod.capture.distributions import imported_distributions, installed_distributions
from nb2prod.capture.git import GitInfo, git_info
from nb2prod.capture.notebook import NotebookInfo, imports_in_code, notebook_info

# GitInfo is re-exported: it is a snapshot field.
__all__ = [
    "DiffEntry",
    "EnvironmentDiff",
    "EnvironmentSnapshot",
    "GitInfo",
    "PackageChange",
    "diff",
    "environment_json",
    "snapshot",
]


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class EnvironmentSnapshot:
    """What a notebook ran on.

    Attributes:
        python_version: ``platform.python_version()``, e.g. ``"3.11.7"``.
        python_implementation: e.g. ``"CPython"``.
        executable: ``sys.executable``.
        os: ``platform.platform()``.
        system: ``platform.system()``, e.g. ``"Linux"``.
        machine: ``platform.machine()``, e.g. ``"x86_64"``.
        cpu_model: CPU model name (``/proc/cpuinfo``, else ``platform.processor()``).
        cpu_count: ``os.cpu_count()``.
        distributions: PEP 503 name → version of every installed distribution.
        imported: The subset of ``distributions`` the notebook imported.
        git: Git state, None outside a repository or without git.
        notebook: The notebook's code identity, None when unknown.
        env_var_names: Sorted names of the environment variables (never values).
        captured_at: ISO-8601 UTC time of capture.
    """

    python_version: str
    python_implementation: str
    executable: str
    os: str
    system: str
    machine: str
    cpu_model: str
    cpu_count: int | None
    distributions: dict[str, str]
    imported: dict[str, str]
    git: GitInfo | None
    notebook: NotebookInfo | None
    env_var_names: list[str]
    captured_at: str

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of what makes two environments equivalent.

        Covers Python version and implementation, system, machine and every
        distribution with its version; not the time, host, paths, git state
        or environment variables.
        """
        return sha256_digest(
            _canonical_json(
                {
                    "python_version": self.python_version,
                    "python_implementation": self.python_implementation,
                    "system": self.system,
                    "machine": self.machine,
                    "distributions": self.distributions,
                }
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (with ``digest``, ignored by :meth:`from_dict`)."""
        return {
            "python_version": self.python_version,
            "python_implementation": self.python_implementation,
            "executable": self.executable,
            "os": self.os,
            "system": self.system,
            "machine": self.machine,
            "cpu_model": self.cpu_model,
            "cpu_count": self.cpu_count,
            "distributions": dict(self.distributions),
            "imported": dict(self.imported),
            "git": self.git.to_dict() if self.git else None,
            "notebook": self.notebook.to_dict() if self.notebook else None,
            "env_var_names": list(self.env_var_names),
            "captured_at": self.captured_at,
            "digest": self.digest,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnvironmentSnapshot:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            UsageError: A required field is missing.
        """
        what = "EnvironmentSnapshot"
        git = data.get("git")
        nb = data.get("notebook")
        return cls(
            python_version=str(require_field(data, "python_version", what)),
            python_implementation=str(require_field(data, "python_implementation", what)),
            executable=str(data.get("executable", "")),
            os=str(data.get("os", "")),
            system=str(require_field(data, "system", what)),
            machine=str(require_field(data, "machine", what)),
            cpu_model=str(data.get("cpu_model", "")),
            cpu_count=data.get("cpu_count"),
            distributions=dict(require_field(data, "distributions", what)),
            imported=dict(data.get("imported") or {}),
            git=GitInfo.from_dict(git) if git else None,
            notebook=NotebookInfo.from_dict(nb) if nb else None,
            env_var_names=sorted(data.get("env_var_names") or []),
            captured_at=str(data.get("captured_at", "")),
        )


# --------------------------------------------------------------------------- snapshot


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor()


def snapshot(
    *,
    notebook_path: str | Path | None = None,
    code_cells: Sequence[str] | None = None,
    imported_modules: Iterable[str] = (),
    cwd: Path | None = None,
) -> EnvironmentSnapshot:
    """Take a snapshot of the running interpreter's environment.

    Args:
        notebook_path: The ``.ipynb`` to read code cells from.
        code_cells: The kernel's executed cells, used when no path is given.
        imported_modules: Modules the notebook imported (e.g. new entries of
            ``sys.modules``); joined with the imports read from the code cells.
        cwd: Folder whose git state is recorded when there is no notebook
            path; default the working directory.

    Raises:
        UsageError: ``notebook_path`` is missing or not a notebook.
    """
    notebook, cells = notebook_info(notebook_path=notebook_path, code_cells=code_cells)
    modules = set(imported_modules) | imports_in_code(cells)
    if notebook is not None and notebook.path is not None:
        folder = Path(notebook.path).parent
    else:
        folder = cwd if cwd is not None else Path.cwd()
    return EnvironmentSnapshot(
        python_version=platform.python_version(),
        python_implementation=platform.python_implementation(),
        executable=sys.executable,
        os=platform.platform(),
        system=platform.system(),
        machine=platform.machine(),
        cpu_model=_cpu_model(),
        cpu_count=os.cpu_count(),
        distributions=installed_distributions(),
        imported=imported_distributions(modules),
        git=git_info(folder),
        notebook=notebook,
        env_var_names=sorted(os.environ),
        captured_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    )


def environment_json(snap: EnvironmentSnapshot) -> str:
    """Return the snapshot as JSON (indent 2, sorted keys)."""
    return json.dumps(snap.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------- diff

ChangeKind = Literal["upgraded", "downgraded", "changed", "added", "removed"]


def _package_line(name: str, old: str | None, new: str | None, kind: str) -> str:
    if new is None:
        return f"{name} {old} (removed)"
    if old is None:
        return f"{name} {new} (added)"
    return f"{name} {old} → {new} ({kind})"


@dataclass(frozen=True)
class PackageChange:
    """One distribution whose version differs between two snapshots.

    Attributes:
        name: PEP 503 name.
        old: Version before; None when it was added.
        new: Version after; None when it was removed.
        kind: ``"upgraded"``, ``"downgraded"``, ``"changed"`` (versions not
            comparable), or ``"removed"`` in
            :attr:`EnvironmentDiff.imported_changed`.
    """

    name: str
    old: str | None
    new: str | None
    kind: Literal["upgraded", "downgraded", "changed", "removed"]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"name": self.name, "old": self.old, "new": self.new, "kind": self.kind}

    def line(self) -> str:
        """Return a short human line, e.g. ``scikit-learn 1.5.0 → 1.6.1 (upgraded)``."""
        return _package_line(self.name, self.old, self.new, self.kind)


@dataclass(frozen=True)
class DiffEntry:
    """One difference between two snapshots, as data for a renderer.

    Attributes:
        subject: ``"python"``, ``"git_commit"`` or ``"package"``.
        name: ``"Python"``, ``"git commit"`` or the distribution's PEP 503 name.
        old: Value before (version, or full commit hash); None when added or unknown.
        new: Value after; None when removed or unknown.
        kind: ``"upgraded"``, ``"downgraded"``, ``"changed"``, ``"added"`` or
            ``"removed"`` (Python and git changes are ``"changed"``).
        imported: The old snapshot's notebook imported this distribution.
    """

    subject: Literal["python", "git_commit", "package"]
    name: str
    old: str | None
    new: str | None
    kind: ChangeKind
    imported: bool = False

    @property
    def notable(self) -> bool:
        """True for a Python or git change, or a distribution the notebook imported."""
        return self.imported or self.subject != "package"

    def line(self) -> str:
        """Return the short human line :meth:`EnvironmentDiff.summary` shows for this entry."""
        if self.subject == "python":
            return f"Python {self.old} → {self.new}"
        if self.subject == "git_commit":
            old, new = (c[:12] if c else "none" for c in (self.old, self.new))
            return f"git commit {old} → {new}"
        return _package_line(self.name, self.old, self.new, self.kind) + (
            " [imported]" if self.imported else ""
        )


@dataclass(frozen=True)
class EnvironmentDiff:
    """What changed from one snapshot to another.

    Attributes:
        added: Distributions only in the new snapshot (name → version).
        removed: Distributions only in the old snapshot (name → version).
        changed: Distributions in both with different versions, by name.
        python: (old, new) Python version when it changed (prefixed with the
            implementation when that changed too), else None.
        git_commit: (old, new) commit when it changed, else None.
        imported_changed: The changed and removed distributions that the old
            snapshot's notebook imported (removed ones have ``kind="removed"``).
    """

    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: list[PackageChange] = field(default_factory=list)
    python: tuple[str, str] | None = None
    git_commit: tuple[str | None, str | None] | None = None
    imported_changed: list[PackageChange] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        """True when nothing recorded differs."""
        return not (self.added or self.removed or self.changed or self.python or self.git_commit)

    @property
    def upgraded(self) -> list[PackageChange]:
        """The changed distributions whose version went up."""
        return [c for c in self.changed if c.kind == "upgraded"]

    @property
    def downgraded(self) -> list[PackageChange]:
        """The changed distributions whose version went down."""
        return [c for c in self.changed if c.kind == "downgraded"]

    @property
    def imported_names(self) -> frozenset[str]:
        """Names of the changed or removed distributions the old notebook imported."""
        return frozenset(c.name for c in self.imported_changed)

    def entries(self) -> list[DiffEntry]:
        """Every difference, in :meth:`summary` order: Python, git commit, changed, removed, added."""
        imported = self.imported_names
        out: list[DiffEntry] = []
        if self.python:
            out.append(DiffEntry("python", "Python", self.python[0], self.python[1], "changed"))
        if self.git_commit:
            out.append(
                DiffEntry("git_commit", "git commit", self.git_commit[0], self.git_commit[1], "changed")
            )
        out += [DiffEntry("package", c.name, c.old, c.new, c.kind, c.name in imported) for c in self.changed]
        out += [
            DiffEntry("package", name, version, None, "removed", name in imported)
            for name, version in sorted(self.removed.items())
        ]
        out += [
            DiffEntry("package", name, None, version, "added") for name, version in sorted(self.added.items())
        ]
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "added": dict(self.added),
            "removed": dict(self.removed),
            "changed": [c.to_dict() for c in self.changed],
            "python": list(self.python) if self.python else None,
            "git_commit": list(self.git_commit) if self.git_commit else None,
            "imported_changed": [c.to_dict() for c in self.imported_changed],
            "is_empty": self.is_empty,
        }

    def summary(self) -> list[str]:
        """Return short human lines, one per difference; imported ones are marked."""
        return [entry.line() for entry in self.entries()]


def _change_kind(old: str, new: str) -> Literal["upgraded", "downgraded", "changed"]:
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # packaging is a dependency of our dependencies, not ours
        return "changed"
    try:
        before, after = Version(old), Version(new)
    except InvalidVersion:
        return "changed"
    if after > before:
        return "upgraded"
    if after < before:
        return "downgraded"
    return "changed"  # equal as versions, spelled differently (1.0 vs 1.0.0)


def diff(old: EnvironmentSnapshot, new: EnvironmentSnapshot) -> EnvironmentDiff:
    """Compare two snapshots: distributions, Python and git commit.

    Args:
        old: The earlier snapshot (e.g. the one stored with a run).
        new: The later snapshot (e.g. the current environment).
    """
    before, after = old.distributions, new.distributions
    added = {n: v for n, v in sorted(after.items()) if n not in before}
    removed = {n: v for n, v in sorted(before.items()) if n not in after}
    changed = [
        PackageChange(n, before[n], after[n], _change_kind(before[n], after[n]))
        for n in sorted(before.keys() & after.keys())
        if before[n] != after[n]
    ]
    imported_changed = [c for c in changed if c.name in old.imported]
    imported_changed += [
        PackageChange(n, v, None, "removed") for n, v in removed.items() if n in old.imported
    ]
    imported_changed.sort(key=lambda c: c.name)

    python = None
    if (old.python_version, old.python_implementation) != (new.python_version, new.python_implementation):
        if old.python_implementation == new.python_implementation:
            python = (old.python_version, new.python_version)
        else:
            python = (
                f"{old.python_implementation} {old.python_version}",
                f"{new.python_implementation} {new.python_version}",
            )
    old_commit = old.git.commit if old.git else None
    new_commit = new.git.commit if new.git else None
    git_commit = (old_commit, new_commit) if old_commit != new_commit else None
    return EnvironmentDiff(added, removed, changed, python, git_commit, imported_changed)
