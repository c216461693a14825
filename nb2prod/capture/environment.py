"""Environment snapshot: what the notebook ran on, and what it imported.

A snapshot records the interpreter, the machine, every installed distribution
with its version, the distributions the notebook actually imported (the
service's requirements are pinned from these), the git state and a digest of
the notebook's code cells. Environment variables are recorded by name only:
no value ever enters a snapshot.

Only the standard library is used here (``packaging`` optionally, to order
versions in :func:`diff`), so a snapshot is cheap enough to take at every
``%nb2prod start``: reading the distribution metadata is done with a small
header parser instead of ``email`` parsing, and the module-to-distribution
index is cached until the set of installed distributions changes.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from nb2prod.exceptions import UsageError

__all__ = [
    "EnvironmentDiff",
    "EnvironmentSnapshot",
    "GitInfo",
    "ImportScan",
    "NotebookInfo",
    "PackageChange",
    "code_digest",
    "diff",
    "environment_json",
    "git_info",
    "imported_distributions",
    "imports_in_code",
    "installed_distributions",
    "normalize_name",
    "notebook_info",
    "packages_distributions",
    "requirements_txt",
    "scan_imports",
    "snapshot",
]

GIT_TIMEOUT_S = 2.0
"""Seconds each ``git`` call may take before git info is given up."""

# 0xFF never occurs in UTF-8, so no cell's encoded source can contain it: the
# joined bytes split back into exactly the cells that were hashed.
_CELL_SEPARATOR = b"\xff"

_NAME_RUN = re.compile(r"[-_.]+")
# `x = !ls`, `files = %sx ls`: IPython assignments from a shell or a magic.
_IPY_ASSIGN = re.compile(r"^[\w.,\s()\[\]*]+=\s*[!%]")


def normalize_name(name: str) -> str:
    """Return the PEP 503 normal form of a distribution name (``Scikit_Learn`` → ``scikit-learn``)."""
    return _NAME_RUN.sub("-", name).lower()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _require(data: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return data[key]
    except (KeyError, TypeError):
        raise UsageError(
            f"not a stored {what}: field '{key}' is missing",
            hint=f"pass the dict written by {what}.to_dict()",
        ) from None


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class GitInfo:
    """Git state of the folder the notebook lives in.

    Attributes:
        commit: Full hash of ``HEAD``; None in a repository without commits.
        branch: Current branch; None when ``HEAD`` is detached.
        dirty: True when tracked files differ from ``HEAD`` or untracked,
            non-ignored files exist (what ``git status`` reports).
        root: Absolute path of the work tree's top folder.
    """

    commit: str | None
    branch: str | None
    dirty: bool
    root: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"commit": self.commit, "branch": self.branch, "dirty": self.dirty, "root": self.root}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GitInfo:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            commit=data.get("commit"),
            branch=data.get("branch"),
            dirty=bool(_require(data, "dirty", "GitInfo")),
            root=str(_require(data, "root", "GitInfo")),
        )


@dataclass(frozen=True)
class NotebookInfo:
    """Identity of the notebook's code.

    Attributes:
        path: Absolute path of the ``.ipynb``; None when unknown.
        code_digest: ``sha256:<hex>`` of the canonical code cells (see
            :func:`code_digest`).
        n_code_cells: Non-empty code cells that went into the digest.
        source: ``"file"`` when read from an ``.ipynb``, ``"history"`` when
            built from the kernel's executed cells.
        unparsed_cells: Code cells whose imports could not be read (not
            Python even after IPython syntax was blanked).
    """

    path: str | None
    code_digest: str
    n_code_cells: int
    source: Literal["file", "history"]
    unparsed_cells: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "path": self.path,
            "code_digest": self.code_digest,
            "n_code_cells": self.n_code_cells,
            "source": self.source,
            "unparsed_cells": self.unparsed_cells,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NotebookInfo:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            path=data.get("path"),
            code_digest=str(_require(data, "code_digest", "NotebookInfo")),
            n_code_cells=int(_require(data, "n_code_cells", "NotebookInfo")),
            source=_require(data, "source", "NotebookInfo"),
            unparsed_cells=int(data.get("unparsed_cells", 0)),
        )


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
        return _sha256(
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
            python_version=str(_require(data, "python_version", what)),
            python_implementation=str(_require(data, "python_implementation", what)),
            executable=str(data.get("executable", "")),
            os=str(data.get("os", "")),
            system=str(_require(data, "system", what)),
            machine=str(_require(data, "machine", what)),
            cpu_model=str(data.get("cpu_model", "")),
            cpu_count=data.get("cpu_count"),
            distributions=dict(_require(data, "distributions", what)),
            imported=dict(data.get("imported") or {}),
            git=GitInfo.from_dict(git) if git else None,
            notebook=NotebookInfo.from_dict(nb) if nb else None,
            env_var_names=sorted(data.get("env_var_names") or []),
            captured_at=str(data.get("captured_at", "")),
        )


# --------------------------------------------------------------------------- distributions


@dataclass(frozen=True)
class _Dist:
    name: str  # PEP 503 normal form
    version: str
    top_level: tuple[str, ...]


# Key: the paths of the installed distributions, in sys.path order. A pip
# install or upgrade adds or renames a dist-info folder, which changes the key.
_index_cache: tuple[tuple[str, ...], list[_Dist]] | None = None


def _metadata_header(dist: metadata.Distribution) -> tuple[str | None, str | None]:
    # The email parser that `dist.metadata` uses costs ~0.7 ms a distribution
    # (it parses the whole long description); Name and Version head the file.
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    name = version = None
    for line in text.split("\n\n", 1)[0].splitlines():
        if name is None and line[:5].lower() == "name:":
            name = line[5:].strip()
        elif version is None and line[:8].lower() == "version:":
            version = line[8:].strip()
        if name and version:
            break
    return name, version


def _top_level(dist: metadata.Distribution) -> tuple[str, ...]:
    # Same rule as importlib.metadata.packages_distributions: top_level.txt,
    # else the first part of every .py file the distribution installed.
    declared = (dist.read_text("top_level.txt") or "").split()
    if declared:
        return tuple(dict.fromkeys(declared))
    record = dist.read_text("RECORD")
    if record is None:
        files = dist.files or []
        return tuple(
            sorted(
                {
                    f.parts[0] if len(f.parts) > 1 else f.with_suffix("").name
                    for f in files
                    if f.suffix == ".py"
                }
            )
        )
    names: set[str] = set()
    for line in record.splitlines():
        path = next(csv.reader([line]))[0] if line.startswith('"') else line.split(",", 1)[0]
        if not path.endswith(".py"):
            continue
        parts = [p for p in path.split("/") if p and p != "."]
        if not parts or parts[-1] == ".py":
            continue
        names.add(parts[0] if len(parts) > 1 else parts[0][:-3])
    return tuple(sorted(names))


def _index() -> list[_Dist]:
    """Return every installed distribution, in ``sys.path`` order (duplicates kept)."""
    global _index_cache
    dists = list(metadata.distributions())
    paths = tuple(str(getattr(d, "_path", "")) for d in dists)
    cacheable = all(paths)
    if cacheable and _index_cache is not None and _index_cache[0] == paths:
        return _index_cache[1]
    out: list[_Dist] = []
    for dist in dists:
        name, version = _metadata_header(dist)
        if not name:
            # A broken install (no METADATA): importlib.metadata skips it too.
            continue
        out.append(_Dist(normalize_name(name), version or "", _top_level(dist)))
    if cacheable:
        _index_cache = (paths, out)
    return out


def installed_distributions() -> dict[str, str]:
    """Return PEP 503 name → version of every distribution the interpreter can import.

    When two share a name, the first on ``sys.path`` wins, as with
    ``importlib.metadata.version``.
    """
    found: dict[str, str] = {}
    for dist in _index():
        found.setdefault(dist.name, dist.version)
    return dict(sorted(found.items()))


def packages_distributions() -> dict[str, list[str]]:
    """Return top-level module → PEP 503 names of the distributions providing it.

    The same mapping as ``importlib.metadata.packages_distributions()`` with
    normalised names, several times faster, and cached until the set of
    installed distributions changes.
    """
    mapping: dict[str, list[str]] = {}
    for dist in _index():
        for module in dist.top_level:
            names = mapping.setdefault(module, [])
            if dist.name not in names:
                names.append(dist.name)
    return mapping


def imported_distributions(module_names: Iterable[str]) -> dict[str, str]:
    """Map imported modules to the installed distributions that provide them.

    Args:
        module_names: Module names; only the top-level part counts
            (``sklearn.ensemble`` → ``sklearn``).

    Returns:
        PEP 503 distribution name → version, e.g. ``{"scikit-learn": "1.6.1"}``
        for ``{"sklearn"}``. Standard-library modules and modules no
        distribution provides (local files) are left out; a namespace
        package provided by several distributions maps to all of them.
    """
    tops = {m.split(".", 1)[0] for m in module_names if m}
    tops -= sys.stdlib_module_names
    if not tops:
        return {}
    by_module = packages_distributions()
    versions = installed_distributions()
    found: dict[str, str] = {}
    for module in tops:
        for name in by_module.get(module, ()):
            if name in versions:
                found[name] = versions[name]
    return dict(sorted(found.items()))


# --------------------------------------------------------------------------- notebook code


@dataclass(frozen=True)
class ImportScan:
    """What :func:`scan_imports` found.

    Attributes:
        modules: Top-level names of absolutely imported modules.
        unparsed_cells: Indexes (in the given order) of cells that are not
            Python even after IPython syntax was blanked; their imports are
            unknown.
    """

    modules: frozenset[str]
    unparsed_cells: tuple[int, ...]


def _is_ipython_line(stripped: str) -> bool:
    return (
        stripped.startswith(("%", "!", "?"))
        or (stripped.endswith("?") and not stripped.startswith("#"))
        or bool(_IPY_ASSIGN.match(stripped))
    )


def _blank_ipython_syntax(source: str) -> str:
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped and _is_ipython_line(stripped):
            # `pass` at the same indent keeps `for ...:\n    %time f()` valid.
            line = line[: len(line) - len(stripped)] + "pass"
        lines.append(line)
    return "\n".join(lines)


def scan_imports(sources: Iterable[str]) -> ImportScan:
    """Read the modules that cells import, and which cells could not be read.

    Lines starting with ``%``, ``!`` or ``?``, ending with ``?``, or
    assigning from ``!``/``%`` are IPython syntax and are blanked before
    parsing. Relative imports are ignored.

    Args:
        sources: Cell sources, in order.
    """
    modules: set[str] = set()
    unparsed: list[int] = []
    for index, source in enumerate(sources):
        try:
            tree = ast.parse(_blank_ipython_syntax(_cell_text(source)))
        except (SyntaxError, ValueError):
            unparsed.append(index)
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".", 1)[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".", 1)[0])
    return ImportScan(frozenset(modules), tuple(unparsed))


def imports_in_code(sources: Iterable[str]) -> set[str]:
    """Return the top-level modules imported by cell sources (see :func:`scan_imports`)."""
    return set(scan_imports(sources).modules)


def _cell_text(source: str | Sequence[str]) -> str:
    # nbformat stores a source either as one string or as a list of lines.
    return source if isinstance(source, str) else "".join(source)


def _canonical_cell(source: str) -> str:
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def code_digest(sources: Iterable[str | Sequence[str]]) -> tuple[str, int]:
    """Return the ``sha256:<hex>`` digest of code cells and how many went into it.

    Canonical form: line endings become ``\\n``, trailing whitespace is
    stripped from each line and leading/trailing blank lines from each cell;
    cells empty after that are left out. Each cell is UTF-8 encoded and cells
    are joined with the byte ``0xFF``, which cannot occur in UTF-8, so no
    change of cell boundaries can give the same bytes.

    Args:
        sources: Code cell sources in notebook order (strings or nbformat
            lists of lines).
    """
    cells = [c for c in (_canonical_cell(_cell_text(s)) for s in sources) if c]
    joined = _CELL_SEPARATOR.join(c.encode("utf-8", "surrogatepass") for c in cells)
    return _sha256(joined), len(cells)


def _read_code_cells(path: Path) -> list[str]:
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"notebook not found: {path}", hint="pass the path of an existing .ipynb") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"cannot read notebook {path}: {exc}", hint="pass a notebook saved by Jupyter (.ipynb JSON)"
        ) from None
    if not isinstance(nb, dict):
        raise UsageError(f"{path} is not a notebook: top level is not a JSON object")
    if isinstance(nb.get("cells"), list):  # nbformat 4
        cells, key = nb["cells"], "source"
    elif isinstance(nb.get("worksheets"), list):  # nbformat 3
        cells = [c for ws in nb["worksheets"] if isinstance(ws, dict) for c in ws.get("cells") or []]
        key = "input"
    else:
        raise UsageError(f"{path} is not a notebook: it has no 'cells'", hint="pass an .ipynb file")
    return [
        _cell_text(c.get(key) or "") for c in cells if isinstance(c, dict) and c.get("cell_type") == "code"
    ]


def notebook_info(
    *, notebook_path: str | Path | None = None, code_cells: Sequence[str] | None = None
) -> tuple[NotebookInfo | None, list[str]]:
    """Build the notebook's code identity from its file, else from executed cells.

    Returns:
        The info (None when neither is given) and the code cell sources used.

    Raises:
        UsageError: The notebook file is missing or not a notebook.
    """
    if notebook_path is not None:
        path = Path(notebook_path).expanduser().resolve()
        cells = _read_code_cells(path)
        shown: str | None = str(path)
        source: Literal["file", "history"] = "file"
    elif code_cells is not None:
        cells = [_cell_text(c) for c in code_cells]
        shown, source = None, "history"
    else:
        return None, []
    digest, n_cells = code_digest(cells)
    unparsed = len(scan_imports(cells).unparsed_cells)
    return NotebookInfo(shown, digest, n_cells, source, unparsed), cells


# --------------------------------------------------------------------------- git


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
    for line in status.splitlines():
        if line.startswith("# branch.oid "):
            oid = line[len("# branch.oid ") :].strip()
            commit = None if oid == "(initial)" else oid
        elif line.startswith("# branch.head "):
            head = line[len("# branch.head ") :].strip()
            branch = None if head == "(detached)" else head
        elif line and not line.startswith("#"):
            dirty = True
    return GitInfo(commit=commit, branch=branch, dirty=dirty, root=root.strip())


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


def requirements_txt(snap: EnvironmentSnapshot) -> str:
    """Return pinned ``name==version`` lines of the imported distributions, sorted."""
    lines = [
        f"# imported by the notebook; {snap.python_implementation} {snap.python_version}"
        f" on {snap.system} {snap.machine}",
        f"# python_version == {snap.python_version}",
    ]
    lines += [f"{name}=={version}" for name, version in sorted(snap.imported.items())]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- diff


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
        if self.new is None:
            return f"{self.name} {self.old} (removed)"
        if self.old is None:
            return f"{self.name} {self.new} (added)"
        return f"{self.name} {self.old} → {self.new} ({self.kind})"


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
        imported = {c.name for c in self.imported_changed}
        mark = " [imported]"
        lines: list[str] = []
        if self.python:
            lines.append(f"Python {self.python[0]} → {self.python[1]}")
        if self.git_commit:
            old, new = (c[:12] if c else "none" for c in self.git_commit)
            lines.append(f"git commit {old} → {new}")
        for change in self.changed:
            lines.append(change.line() + (mark if change.name in imported else ""))
        for name, version in sorted(self.removed.items()):
            lines.append(f"{name} {version} (removed)" + (mark if name in imported else ""))
        for name, version in sorted(self.added.items()):
            lines.append(f"{name} {version} (added)")
        return lines


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
