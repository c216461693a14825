"""One :class:`~nb2prod.exceptions.ExecutionError` for whatever failed a notebook run.

papermill, nbclient, the kernel and the user each fail in their own way (a cell's exception,
a timeout, a dead kernel, Ctrl-C in the runner); the error names the cell by its index in the
source notebook, which papermill's injected-parameters and error-marker cells shift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nb2prod.exceptions import ExecutionError
from nb2prod.execute.handover import Gate

ERROR_TAG = "papermill-error-cell-tag"
"""The tag of the markdown cells papermill inserts above a failed cell."""


def execution_error(
    exc: BaseException, gate: Gate, executed: Any, source_ids: list[str | None]
) -> ExecutionError:
    """One :class:`ExecutionError` for whatever papermill, nbclient or the user raised."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    index = gate.cell_index
    ename, evalue = type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, PapermillExecutionError):
        kind, index, ename, evalue = "cell", exc.cell_index, exc.ename, exc.evalue
    elif isinstance(exc, CellTimeoutError):
        kind = "timeout"
    elif isinstance(exc, DeadKernelError):
        kind = "dead_kernel"
    elif isinstance(exc, KeyboardInterrupt):
        kind, evalue = "interrupted", "the runner was interrupted (Ctrl-C)"
    else:
        kind = "runner"
    exec_count = None
    source_index = None
    # papermill inserted error markdown cells after the run; indices refer to the notebook without them.
    cells = [] if executed is None else [c for c in executed.cells if ERROR_TAG not in _tags(c)]
    if index is not None and index < len(cells):
        exec_count = cells[index].get("execution_count")
        source_index = _source_index(cells, index, source_ids)
    where = f"cell {source_index}" if source_index is not None else "before the first cell"
    if exec_count:
        where += f" (execution count {exec_count})"
    what = {
        "cell": f"{ename}: {evalue}" if evalue else ename,
        "timeout": f"the cell ran past the timeout ({evalue})",
        "dead_kernel": f"the kernel died ({evalue or 'no reply'})",
        "interrupted": evalue,
        "runner": f"{ename}: {evalue}",
    }[kind]
    hints = {
        "cell": "open the executed notebook artifact to see the traceback",
        "timeout": "raise --timeout, or make the cell faster",
        "dead_kernel": "the process exited (os._exit, out of memory, a crash in native code)",
        "interrupted": None,
        "runner": None,
    }
    return ExecutionError(
        f"the notebook failed in {where}: {what}",
        kind=kind,
        cell_index=source_index,
        executed_index=index,
        exec_count=exec_count,
        ename=ename,
        evalue=evalue,
        hint=hints[kind],
    )


def _tags(cell: Any) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def _source_index(cells: list[Any], index: int, source_ids: list[str | None]) -> int:
    """Index in the source notebook of executed cell ``index`` (by cell id, else by position)."""
    cell_id = cells[index].get("id")
    if cell_id and cell_id in source_ids:
        return source_ids.index(cell_id)
    position = index - sum(1 for c in cells[:index] if "injected-parameters" in _tags(c))
    # papermill dropped the source's old error markers before running: skip them when counting.
    kept = [i for i, cid in enumerate(source_ids) if cid != ERROR_TAG]
    return kept[position] if position < len(kept) else position


def read_cells(source: Path) -> list[dict[str, Any]]:
    """The cells of a notebook file as JSON (none when it cannot be read)."""
    try:
        nb = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return list(nb.get("cells", []))


def cell_ids(source: Path) -> list[str | None]:
    """Cell ids of the source notebook; papermill's old error markers stand as ``ERROR_TAG``."""
    return [ERROR_TAG if ERROR_TAG in _tags(c) else c.get("id") for c in read_cells(source)]
