"""The ``nb2prod`` papermill engine: papermill's nbclient engine plus the run-id hand-over.

papermill finds it through the ``papermill.engine`` entry point (``pyproject.toml``) and
imports it while ``papermill.engines`` itself is being imported: so this module imports only
what papermill has loaded by then (its engines, client wrapper, log and utils) and nb2prod's
light modules. Never import it before papermill: ``import papermill`` loads it, and then
``papermill.engines.papermill_engines.get_engine("nb2prod")`` is :class:`Nb2ProdEngine`.

The runner passes two extra keyword arguments through ``papermill.execute_notebook``:
``nb2prod_gate`` (the :class:`~nb2prod.execute.handover.Gate` that hands the kernel its run
id) and ``nb2prod_env`` (the kernel's environment).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

if "papermill.engines" not in sys.modules:  # pragma: no cover - a programming error
    # Imported first, this module would import papermill, which imports it again through the
    # entry point while it is half-initialized: papermill's import would fail.
    raise ImportError("import papermill, not nb2prod.execute.engine: papermill loads the engine itself")

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine
from papermill.log import logger
from papermill.utils import merge_kwargs, remove_args

from nb2prod.exceptions import ExecutionError
from nb2prod.execute.handover import DUMP_FRAMES, ENGINE_NAME, Gate

__all__ = ["ENGINE_NAME", "GatedClient", "Nb2ProdEngine"]


class GatedClient(PapermillNotebookClient):
    """papermill's notebook client that asks the gate before each cell and runs in ``kernel_env``."""

    def __init__(self, nb_man: Any, gate: Gate, kernel_env: dict[str, str], **kw: Any) -> None:
        super().__init__(nb_man, **kw)
        self._gate = gate
        self._kernel_env = kernel_env

    def execute(self, **kwargs: Any) -> Any:
        return super().execute(env=self._kernel_env, **kwargs)

    def execute_cell(self, cell: Any, cell_index: int, *args: Any, **kwargs: Any) -> Any:
        self._gate.cell_index = cell_index
        if cell.get("cell_type") == "code" and self._gate.needs_run(str(cell.get("source", ""))):
            late = self._gate.run_id()
            code = f"import os as _nb2prod_os\n_nb2prod_os.environ.update({late!r})\ndel _nb2prod_os\n"
            reply = self.wait_for_reply(self.kc.execute(code, silent=True, store_history=False))
            if reply is None or reply["content"]["status"] != "ok":
                raise ExecutionError("could not hand the MLflow run id to the kernel", kind="runner")
            self._gate.handed = True
        else:
            self._gate.poll()
        return super().execute_cell(cell, cell_index, *args, **kwargs)

    def papermill_execute_cells(self) -> None:
        super().papermill_execute_cells()
        if self._gate.frames_dir is not None:
            code = DUMP_FRAMES.format(folder=str(self._gate.frames_dir))
            with contextlib.suppress(Exception):  # no frames: the comparison says so
                self.wait_for_reply(self.kc.execute(code, silent=True, store_history=False))


class Nb2ProdEngine(NBClientEngine):
    """papermill's nbclient engine, executing with :class:`GatedClient`."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: int | None = None,
        nb2prod_gate: Gate | None = None,
        nb2prod_env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        if nb2prod_gate is None or nb2prod_env is None:
            raise ExecutionError(
                "the nb2prod papermill engine runs notebooks for nb2prod run only",
                kind="runner",
                hint="run the notebook with `nb2prod run`, or use papermill's default engine",
            )
        kwargs = remove_args(["input_path"], **kwargs)
        safe = remove_args(["timeout", "startup_timeout"], **kwargs)
        final = merge_kwargs(
            safe,
            timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=logger,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
        )
        return GatedClient(nb_man, nb2prod_gate, nb2prod_env, **final).execute()
