"""The notebook's code identity: its path, a digest of its code cells, and what they import.

The digest covers the code cells only, in a canonical form (line endings,
trailing whitespace and blank cells do not count), so outputs, execution
counts and markdown never change it. Imports are read with :mod:`ast` after
IPython syntax (magics, shell escapes, help) is blanked.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nb2prod.capture._records import require_field, sha256_digest
from nb2prod.exceptions import UsageError

__all__ = [
    "ImportScan",
    "NotebookInfo",
    "code_digest",
    "imports_in_code",
    "notebook_info",
    "scan_imports",
]

# 0xFF never occurs in UTF-8, so no cell's encoded source can contain it: the
# joined bytes split back into exactly the cells that were hashed.
_CELL_SEPARATOR = b"\xff"

# `x = !ls`, `files = %sx ls`: IPython assignments from a shell or a magic.
_IPY_ASSIGN = re.compile(r"^[\w.,\s()\[\]*]+=\s*[!%]")


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
            code_digest=str(require_field(data, "code_digest", "NotebookInfo")),
            n_code_cells=int(require_field(data, "n_code_cells", "NotebookInfo")),
            source=require_field(data, "source", "NotebookInfo"),
            unparsed_cells=int(data.get("unparsed_cells", 0)),
        )


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
    return sha256_digest(joined), len(cells)


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


def parameters_cell(path: str | Path) -> tuple[str, list[str]] | None:
    """The source of a notebook's cell tagged ``parameters`` and the names it assigns, in order;
    None without such a cell, or when the file cannot be read (nothing to log then)."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        tags = (cell.get("metadata") or {}).get("tags") or []
        if "parameters" in tags:
            source = _cell_text(cell.get("source") or "")
            return source, assigned_names(source)
    return None


def assigned_names(source: str) -> list[str]:
    """Top-level names a cell assigns (``x = 1``, ``x: int = 1``, ``a = b = 2``), in order."""
    try:
        tree = ast.parse(_blank_ipython_syntax(source))
    except SyntaxError:
        return []
    found: list[str] = []
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name) and target.id not in found:
                found.append(target.id)
    return found
