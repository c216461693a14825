"""Helpers for tests that run notebooks in real kernels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def run_notebook(
    path: Path, home: Path, extra_env: dict[str, str] | None = None, allow_errors: bool = False
) -> Any:
    """Execute a notebook in a real kernel (nbclient), in its folder, against ``home``'s store."""
    import nbformat
    from nbclient import NotebookClient

    from nb2prod.demo import kernel_env

    nb = nbformat.read(str(path), as_version=4)
    env = kernel_env(home, path, extra_env)
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute(env=env)
    return nb


def make_notebook(path: Path, cells: Sequence[str | tuple[str, list[str]]]) -> Path:
    """Write a notebook of code cells (a ``(source, tags)`` pair gives a cell tags)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = []
    for cell in cells:
        source, tags = (cell, []) if isinstance(cell, str) else cell
        code = nbformat.v4.new_code_cell(source)
        if tags:
            code.metadata["tags"] = list(tags)
        nb.cells.append(code)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def outputs_text(cell: Any) -> str:
    """All text a cell printed or displayed (streams, text/plain, error lines)."""
    parts: list[str] = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts.append(out["data"].get("text/plain", ""))
        elif out["output_type"] == "error":
            parts.append("\n".join(out["traceback"]))
    return "\n".join(parts)
