"""Installed distributions, the ones a notebook imported, and their requirement pins.

Reading the distribution metadata is done with a small header parser instead
of ``email`` parsing, and the module-to-distribution index is cached until
the set of installed distributions changes, so a snapshot is cheap enough to
take at every ``%nb2prod start``.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nb2prod.capture.environment import EnvironmentSnapshot

__all__ = [
    "imported_distributions",
    "installed_distributions",
    "normalize_name",
    "packages_distributions",
    "requirements_txt",
]

_NAME_RUN = re.compile(r"[-_.]+")


def normalize_name(name: str) -> str:
    """Return the PEP 503 normal form of a distribution name (``Scikit_Learn`` → ``scikit-learn``)."""
    return _NAME_RUN.sub("-", name).lower()


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


def requirements_txt(snap: EnvironmentSnapshot) -> str:
    """Return pinned ``name==version`` lines of the imported distributions, sorted."""
    lines = [
        f"# imported by the notebook; {snap.python_implementation} {snap.python_version}"
        f" on {snap.system} {snap.machine}",
        f"# python_version == {snap.python_version}",
    ]
    lines += [f"{name}=={version}" for name, version in sorted(snap.imported.items())]
    return "\n".join(lines) + "\n"
