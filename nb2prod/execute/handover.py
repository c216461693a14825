"""The runner -> kernel hand-over: the kernel's environment, and its run id just in time.

The kernel starts with :func:`kernel_env` (the variables of :mod:`nb2prod.protocol`). The
runner opens the MLflow run in a thread while the kernel starts and runs its first cells;
:class:`Gate` passes the run id into the kernel's environment just before the first cell that
needs it, and the engine (:mod:`nb2prod.execute.engine`) asks the gate before every cell. This
module does not import papermill: the runner uses it before papermill is loaded, and papermill
loads the engine (see the engine's module doc).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nb2prod import protocol
from nb2prod.config import Settings
from nb2prod.execute.results import Preflight

if TYPE_CHECKING:
    from nb2prod.capture.environment import EnvironmentSnapshot
    from nb2prod.tracking.runstore import RunStore

ENGINE_NAME = "nb2prod"
"""The papermill engine's name (entry point ``papermill.engine``: :mod:`nb2prod.execute.engine`)."""

NEEDS_RUN = re.compile(r"nb2prod|^\s*%run\b", re.IGNORECASE | re.MULTILINE)
"""A cell that names nb2prod (or runs other code with ``%run``) needs the run id before it runs."""


# What a kernel must not inherit from the runner's own environment: the runner sets its own.
_RUNNER_VARS = (
    *protocol.RUNNER_VARIABLES,
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
)

# Thread pools of the numeric libraries a kernel loads (OpenBLAS, MKL, OpenMP, Accelerate, numexpr).
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def kernel_env(
    settings: Settings, notebook: Path, experiment: str, threads: int | None = None
) -> dict[str, str]:
    """The kernel's environment: the runner's own, less its run variables, plus the protocol's."""
    env = {k: v for k, v in os.environ.items() if k not in _RUNNER_VARS}
    if threads is not None:
        # Kernels side by side: each library sizes its pool to every core by default, and the
        # pools' busy-waiting threads then fight over the cores (what loky and Dask's nanny also
        # cap). A value the user set wins.
        for var in _THREAD_VARS:
            env.setdefault(var, str(threads))
    env.update(
        {
            protocol.DEFER_REGISTRATION: "1",
            protocol.STRICT: "1",
            protocol.NOTEBOOK: str(notebook),
            protocol.HOME: str(settings.home),
            protocol.EXPERIMENT: experiment,
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
    )
    return env


@dataclass
class OpenedRun:
    """The run the runner opened: its store, id, experiment, pre-flight check and environment."""

    store: RunStore
    run_id: str
    experiment: str
    preflight: Preflight
    environment: EnvironmentSnapshot


class Gate:
    """Hands the run id from the store thread to the kernel, just before the first cell that needs it.

    ``%nb2prod start`` in the kernel reads ``NB2PROD_RUN_ID`` to capture into the runner's run, so
    the id must be in the kernel's environment before the first cell that names nb2prod
    (``%load_ext nb2prod``, ``%nb2prod start``, ``import nb2prod``) or runs other code with
    ``%run``. Cells before it (and every cell of a notebook that never names nb2prod) run while
    the runner still imports mlflow and opens the run; the runner's time then hides behind the
    kernel's. A cell that starts a capture session without naming nb2prod (through a helper
    module) would open a run of its own: name nb2prod in that cell, or start the session earlier.
    """

    def __init__(
        self, created: Future[str], opened: Future[OpenedRun], on_ready: Callable[[Preflight], None] | None
    ):
        self.created = created  # the run id (known early when the SQLite fast path created the run)
        self.opened = opened  # the run with its parameters, source snapshot and pre-flight recorded
        self.on_ready = on_ready
        self.handed = False  # the kernel has the run id
        self.reported = False  # on_ready was called
        self.cell_index: int | None = None  # index in the executed notebook of the cell running now
        self.frames_dir: Path | None = None  # where the kernel saves its test/reference frames at the end

    def needs_run(self, source: str) -> bool:
        return not self.handed and NEEDS_RUN.search(source) is not None

    def run_id(self) -> dict[str, str]:
        """Block until the run exists (raising the store's error)."""
        return {protocol.RUN_ID: self.created.result()}

    def wait(self) -> OpenedRun:
        """Block until the run is fully opened (raising the store's error); report the pre-flight once."""
        run = self.opened.result()
        if not self.reported:
            self.reported = True
            if self.on_ready is not None:
                self.on_ready(run.preflight)
        return run

    def poll(self) -> None:
        """Without blocking: raise the store's error, or report the pre-flight, once they are known."""
        if self.created.done() and self.created.exception() is not None:
            self.created.result()
        if self.opened.done() and (self.opened.exception() is not None or not self.reported):
            self.wait()


# Run silently in the kernel after the last cell of a reproduction: the DataFrames its capture
# session tracked with role test or reference, pickled into a folder private to the runner.
DUMP_FRAMES = """
def _nb2prod_dump(folder):
    import json, os
    try:
        from nb2prod import session
        current = session.current()
    except Exception:
        return
    index = []
    for i, (name, record) in enumerate(current.datasets.items()):
        frame = current.frames.get(name)
        if record.role in ("test", "reference") and frame is not None and hasattr(frame, "to_pickle"):
            file = f"{{i}}.pkl"
            frame.to_pickle(os.path.join(folder, file))
            index.append({{"name": name, "role": record.role, "target": record.target,
                           "digest": record.digest, "file": file}})
    with open(os.path.join(folder, "index.json"), "w", encoding="utf-8") as handle:
        json.dump(index, handle)
_nb2prod_dump({folder!r})
del _nb2prod_dump
"""
