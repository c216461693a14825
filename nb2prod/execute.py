"""Re-execution with papermill: ``run``, ``reproduce`` and ``sweep`` as tracked MLflow runs.

The pure core behind ``nb2prod run|reproduce|sweep``: functions return dataclasses and raise
:mod:`nb2prod.exceptions` errors; nothing here formats for a terminal or imports click.

How a run talks to the capture inside the notebook: the runner opens the MLflow run itself and
starts the kernel with ``NB2PROD_RUN_ID`` (``%nb2prod start`` attaches to that run),
``NB2PROD_DEFER_REGISTRATION=1`` (models become candidates; the runner registers them only when
every cell succeeded) and ``NB2PROD_STRICT=1``. To keep ``nb2prod run`` close to plain papermill
in wall time, the store round trips happen in a thread while the kernel starts and runs (on the
default local SQLite store without importing mlflow at all: :mod:`nb2prod.tracking.runstore`); the run id
reaches the kernel just before the first cell that names nb2prod (see :class:`_Gate`).

papermill, mlflow and nbconvert are imported inside functions: ``import nb2prod`` stays light.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import itertools
import json
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import (
    ExecutionError,
    Nb2ProdError,
    ParameterError,
    PreflightError,
    UsageError,
)
from nb2prod.tracking import runstore
from nb2prod.tracking.runstore import MlflowRunStore, RunStore, SqliteRunStore

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nb2prod.capture.environment import EnvironmentDiff, EnvironmentSnapshot

# Tags and artifacts a runner writes.
TAG_KIND = "nb2prod.kind"
TAG_REEXECUTES = "nb2prod.reexecutes"
TAG_REPRODUCES = "nb2prod.reproduces"
TAG_SOURCE_DIGEST = "nb2prod.source_digest"
TAG_FAILURE = "nb2prod.failure"
TAG_PARENT = "mlflow.parentRunId"
SOURCE_ARTIFACT = "notebook/source.ipynb"
EXECUTED_ARTIFACT = "notebook/executed.ipynb"
HTML_ARTIFACT = "notebook/executed.html"
PARAMS_ARTIFACT = "nb2prod/params.json"
PREFLIGHT_ARTIFACT = "nb2prod/preflight_diff.json"
REPRODUCTION_ARTIFACT = "nb2prod/reproduction.json"
SWEEP_ARTIFACT = "nb2prod/sweep.json"

ENGINE_NAME = "nb2prod"
DASK_CONNECT_TIMEOUT = 10
"""Seconds to wait for a Dask scheduler before giving up."""
_LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "error", "mape")


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter declared in a notebook's ``parameters`` cell.

    Attributes:
        name: Variable name.
        type_name: Annotated type, else the type of the default (``"float"``, ``"str"``...), else ``"None"``.
        default: The default as written in the cell.
        help: The trailing comment, if any.
    """

    name: str
    type_name: str
    default: str
    help: str = ""


_inspected: dict[tuple[str, int, int], list[ParameterSpec] | None] = {}


def inspect_parameters(notebook: str | Path) -> list[ParameterSpec] | None:
    """The parameters a notebook declares; None when it has no cell tagged ``parameters``.

    Raises:
        UsageError: the notebook is missing or unreadable.
    """
    path = _notebook_file(notebook)
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _inspected:
        _inspected[key] = _inspect(path)
    specs = _inspected[key]
    return None if specs is None else list(specs)


def _inspect(path: Path) -> list[ParameterSpec] | None:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        return None
    import papermill

    specs = []
    for name, raw in papermill.inspect_notebook(str(path)).items():
        type_name = str(raw.get("inferred_type_name") or "None")
        default = str(raw.get("default") or "")
        if type_name == "None":
            value = _literal(default)
            if value is not _NO_VALUE and value is not None:
                type_name = type(value).__name__
        specs.append(ParameterSpec(name, type_name, default, str(raw.get("help") or "")))
    return specs


_NO_VALUE = object()


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NO_VALUE


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(spec: ParameterSpec, value: Any, from_text: bool) -> Any:
    """Give ``value`` the type of the parameter's default (a float default gets a float)."""
    kind = spec.type_name
    bad = ParameterError(
        f"parameter '{spec.name}' expects {kind} (default {spec.default}), got {value!r}",
        name=spec.name,
        hint=f"pass a {kind} value, e.g. -p {spec.name} {spec.default}",
    )
    if kind == "bool":
        if isinstance(value, bool):
            return value
        low = str(value).strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise bad
    if kind == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer() and not from_text:
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad from None
    if kind == "float":
        if isinstance(value, bool):
            raise bad
        try:
            result = float(value) if not isinstance(value, str) else float(value.strip())
        except (TypeError, ValueError):
            raise bad from None
        return result
    if kind == "str":
        return value if isinstance(value, str) else str(value)
    if from_text and isinstance(value, str):
        # No typed default (None, lists, dicts...): read the text as YAML, like papermill -y.
        import yaml

        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def check_parameters(
    notebook: str | Path, given: Mapping[str, Any], *, from_text: Iterable[str] = ()
) -> dict[str, Any]:
    """Check parameters against the notebook's ``parameters`` cell and type them like the defaults.

    Args:
        notebook: The source notebook.
        given: Name -> value.
        from_text: Names whose value is command-line text (typed from the default; other values,
            e.g. from a YAML file, are already typed and only converted where the default asks).

    Raises:
        ParameterError: unknown name (the valid ones and the nearest are named), parameters for a
            notebook without a ``parameters`` cell, or a value that does not fit its default.
    """
    if not given:
        return {}
    specs = inspect_parameters(notebook)
    path = _notebook_file(notebook)
    if specs is None:
        raise ParameterError(
            f"{path.name} has no cell tagged 'parameters', so {', '.join(sorted(given))} cannot be set",
            hint="tag the cell that holds the defaults with 'parameters' (Jupyter: View > Cell Toolbar > Tags)",
        )
    by_name = {s.name: s for s in specs}
    texts = set(from_text)
    typed: dict[str, Any] = {}
    for name, value in given.items():
        spec = by_name.get(name)
        if spec is None:
            valid = ", ".join(sorted(by_name)) or "(none)"
            near = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.5)
            hint = (
                f"did you mean '{near[0]}'? valid parameters: {valid}"
                if near
                else f"valid parameters: {valid}"
            )
            raise ParameterError(f"{path.name} has no parameter '{name}'", name=name, hint=hint)
        typed[name] = _coerce(spec, value, name in texts)
    return typed


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Parameters from a YAML (or JSON) mapping file.

    Raises:
        ParameterError: not a mapping of names to values.
    """
    import yaml

    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"cannot read parameters file {file}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ParameterError(
            f"parameters file {file} must be a mapping of names to values", hint="e.g. 'C: 0.5'"
        )
    return data


def _notebook_file(notebook: str | Path) -> Path:
    path = Path(notebook).expanduser()
    if not path.is_file():
        raise UsageError(f"notebook not found: {path}", hint="pass the path of an existing .ipynb file")
    if path.suffix != ".ipynb":
        raise UsageError(f"{path} is not a notebook (.ipynb)", hint="pass the path of an .ipynb file")
    return path.resolve()


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Preflight:
    """The environment check before a re-execution.

    Attributes:
        against_run_id: The run whose ``environment.json`` was compared (None: nothing to compare).
        diff: Differences from that run's environment to the current one.
        blocking: Differences that ``--strict`` refuses: imported packages and Python.
    """

    against_run_id: str | None
    diff: EnvironmentDiff | None
    blocking: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "against_run_id": self.against_run_id,
            "diff": self.diff.to_dict() if self.diff else None,
            "blocking": list(self.blocking),
        }


@dataclass(frozen=True)
class RunResult:
    """One re-execution of a notebook.

    Attributes:
        run_id: The MLflow run (None only when it could not be opened).
        experiment: Experiment name.
        status: ``FINISHED`` or ``FAILED``.
        notebook: The source notebook key (its path).
        parameters: The typed parameters injected.
        seconds: Wall time of the execution.
        executed_path: Local copy of the executed notebook (partial when the run failed).
        preflight: The environment check.
        error: Why it failed (None when it finished).
        registered: Model name -> registered version.
        metrics: Final metrics of the run.
        data_digests: Dataset name -> digest recorded by the notebook's captures.
        parent_run_id: The sweep run this run belongs to.
    """

    run_id: str | None
    experiment: str
    status: str
    notebook: str
    parameters: dict[str, Any]
    seconds: float
    executed_path: Path | None
    preflight: Preflight
    error: ExecutionError | None = None
    registered: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    data_digests: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == "FINISHED"

    def raise_for_failure(self) -> None:
        """Raise the :class:`ExecutionError` of a failed run."""
        if self.error is not None:
            raise self.error


# --------------------------------------------------------------------------- the papermill engine


_NEEDS_RUN = re.compile(r"nb2prod|^\s*%run\b", re.IGNORECASE | re.MULTILINE)


class _Gate:
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
        self, created: Future[str], opened: Future[_Opened], on_ready: Callable[[Preflight], None] | None
    ):
        self.created = created  # the run id (known early when the SQLite fast path created the run)
        self.opened = opened  # the run with its parameters, source snapshot and pre-flight recorded
        self.on_ready = on_ready
        self.handed = False  # the kernel has the run id
        self.reported = False  # on_ready was called
        self.cell_index: int | None = None  # index in the executed notebook of the cell running now
        self.frames_dir: Path | None = None  # where the kernel saves its test/reference frames at the end

    def needs_run(self, source: str) -> bool:
        return not self.handed and _NEEDS_RUN.search(source) is not None

    def run_id(self) -> dict[str, str]:
        """Block until the run exists (raising the store's error)."""
        return {"NB2PROD_RUN_ID": self.created.result()}

    def wait(self) -> _Opened:
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
_DUMP_FRAMES = """
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


_engine_lock = threading.Lock()
_engine_registered = False


def _register_engine() -> None:
    """Register the ``nb2prod`` papermill engine (papermill's nbclient engine plus the gate)."""
    global _engine_registered
    with _engine_lock:
        if _engine_registered:
            return
        from papermill.clientwrap import PapermillNotebookClient
        from papermill.engines import NBClientEngine, papermill_engines
        from papermill.utils import merge_kwargs, remove_args

        class _Client(PapermillNotebookClient):  # type: ignore[misc]
            def __init__(self, nb_man: Any, gate: _Gate, kernel_env: dict[str, str], **kw: Any) -> None:
                super().__init__(nb_man, **kw)
                self._gate = gate
                self._kernel_env = kernel_env

            def execute(self, **kwargs: Any) -> Any:
                return super().execute(env=self._kernel_env, **kwargs)

            def execute_cell(self, cell: Any, cell_index: int, *args: Any, **kwargs: Any) -> Any:
                self._gate.cell_index = cell_index
                if cell.get("cell_type") == "code" and self._gate.needs_run(str(cell.get("source", ""))):
                    late = self._gate.run_id()
                    code = (
                        f"import os as _nb2prod_os\n_nb2prod_os.environ.update({late!r})\ndel _nb2prod_os\n"
                    )
                    reply = self.wait_for_reply(self.kc.execute(code, silent=True, store_history=False))
                    if reply is None or reply["content"]["status"] != "ok":
                        raise RuntimeError("could not hand the MLflow run id to the kernel")
                    self._gate.handed = True
                else:
                    self._gate.poll()
                return super().execute_cell(cell, cell_index, *args, **kwargs)

            def papermill_execute_cells(self) -> None:
                super().papermill_execute_cells()
                if self._gate.frames_dir is not None:
                    code = _DUMP_FRAMES.format(folder=str(self._gate.frames_dir))
                    with contextlib.suppress(Exception):  # no frames: the comparison says so
                        self.wait_for_reply(self.kc.execute(code, silent=True, store_history=False))

        class _Engine(NBClientEngine):  # type: ignore[misc]
            @classmethod
            def execute_managed_notebook(  # type: ignore[override]
                cls,
                nb_man: Any,
                kernel_name: str,
                log_output: bool = False,
                stdout_file: Any = None,
                stderr_file: Any = None,
                start_timeout: int = 60,
                execution_timeout: int | None = None,
                nb2prod_gate: _Gate | None = None,
                nb2prod_env: dict[str, str] | None = None,
                **kwargs: Any,
            ) -> Any:
                kwargs = remove_args(["input_path"], **kwargs)
                safe = remove_args(["timeout", "startup_timeout"], **kwargs)
                final = merge_kwargs(
                    safe,
                    timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                    startup_timeout=start_timeout,
                    kernel_name=kernel_name,
                    log=__import__("papermill.log", fromlist=["logger"]).logger,
                    log_output=log_output,
                    stdout_file=stdout_file,
                    stderr_file=stderr_file,
                )
                assert nb2prod_gate is not None and nb2prod_env is not None
                return _Client(nb_man, nb2prod_gate, nb2prod_env, **final).execute()

        papermill_engines.register(ENGINE_NAME, _Engine)
        _engine_registered = True


# --------------------------------------------------------------------------- run


_RUNNER_VARS = (
    "NB2PROD_RUN_ID",
    "NB2PROD_DEFER_REGISTRATION",
    "NB2PROD_STRICT",
    "NB2PROD_NOTEBOOK",
    "NB2PROD_HOME",
    "NB2PROD_EXPERIMENT",
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


def _kernel_env(
    settings: Settings, notebook: Path, experiment: str, threads: int | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _RUNNER_VARS}
    if threads is not None:
        # Kernels side by side: each library sizes its pool to every core by default, and the
        # pools' busy-waiting threads then fight over the cores (what loky and Dask's nanny also
        # cap). A value the user set wins.
        for var in _THREAD_VARS:
            env.setdefault(var, str(threads))
    env.update(
        NB2PROD_DEFER_REGISTRATION="1",
        NB2PROD_STRICT="1",
        NB2PROD_NOTEBOOK=str(notebook),
        NB2PROD_HOME=str(settings.home),
        NB2PROD_EXPERIMENT=experiment,
        MLFLOW_TRACKING_URI=settings.tracking_uri,
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    return env


def _params_for_mlflow(params: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out[key] = text[:6000]
    return out


def current_environment(notebook: Path) -> EnvironmentSnapshot:
    """The environment a re-execution would run in (this interpreter, the notebook's imports)."""
    from nb2prod.capture import environment

    return environment.snapshot(notebook_path=notebook)


def preflight(
    store: RunStore,
    notebook_key: str,
    current: EnvironmentSnapshot,
    against: str | None = None,
) -> Preflight:
    """Compare ``current`` with the environment of ``against`` or of the notebook's last finished run.

    Raises:
        UsageError: ``against`` is not a run with a recorded environment.
    """
    from nb2prod.capture import environment
    from nb2prod.tracking import client as tracking

    baseline = against if against is not None else store.last_finished_run(notebook_key)
    if baseline is None:
        return Preflight(None, None)
    old = store.load_json(baseline, tracking.ENVIRONMENT_JSON)
    if old is None:
        if against is not None:
            raise UsageError(
                f"run {against} has no recorded environment ({tracking.ENVIRONMENT_JSON})",
                hint="pass --against a run made by %nb2prod start or nb2prod run",
            )
        return Preflight(baseline, None)
    diff = environment.diff(environment.EnvironmentSnapshot.from_dict(old), current)
    blocking = [c.line() for c in diff.imported_changed]
    if diff.python:
        blocking.insert(0, f"Python {diff.python[0]} → {diff.python[1]}")
    return Preflight(baseline, diff, blocking)


def _failure(exc: BaseException, gate: _Gate, executed: Any, source_ids: list[str | None]) -> ExecutionError:
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
    cells = [] if executed is None else [c for c in executed.cells if _ERROR_TAG not in _tags(c)]
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


_ERROR_TAG = "papermill-error-cell-tag"


def _tags(cell: Any) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def _source_index(cells: list[Any], index: int, source_ids: list[str | None]) -> int:
    """Index in the source notebook of executed cell ``index`` (by cell id, else by position)."""
    cell_id = cells[index].get("id")
    if cell_id and cell_id in source_ids:
        return source_ids.index(cell_id)
    position = index - sum(1 for c in cells[:index] if "injected-parameters" in _tags(c))
    # papermill dropped the source's old error markers before running: skip them when counting.
    kept = [i for i, cid in enumerate(source_ids) if cid != _ERROR_TAG]
    return kept[position] if position < len(kept) else position


@dataclass
class _Opened:
    store: RunStore
    run_id: str
    experiment: str
    preflight: Preflight
    environment: EnvironmentSnapshot


def run_notebook(
    notebook: str | Path,
    parameters: Mapping[str, Any] | None = None,
    *,
    experiment: str | None = None,
    timeout: int | None = None,
    kernel: str | None = None,
    against: str | None = None,
    strict: bool = False,
    settings: Settings | None = None,
    parent_run_id: str | None = None,
    reexecutes: str | None = None,
    notebook_key: str | None = None,
    cwd: str | Path | None = None,
    extra_tags: Mapping[str, str] | None = None,
    progress: bool = True,
    on_preflight: Callable[[Preflight], None] | None = None,
    params_checked: bool = False,
    register: bool = True,
    keep_frames: Path | None = None,
    threads: int | None = None,
) -> RunResult:
    """Execute a notebook with papermill in a fresh kernel as one tracked MLflow run.

    Args:
        notebook: The source notebook.
        parameters: Values for its ``parameters`` cell (checked and typed unless ``params_checked``).
        experiment: MLflow experiment (default: the notebook's ``experiment`` parameter when it
            has one, else the settings' experiment).
        timeout: Seconds a single cell may run.
        kernel: Kernel name (default: the notebook's).
        against: Run whose environment the pre-flight check compares with (default: the
            notebook's last finished run).
        strict: Refuse to run when a package the notebook imported (or Python) differs.
        settings: Resolved settings (default: :func:`~nb2prod.config.load_settings`).
        parent_run_id: Make this a child run (sweeps).
        reexecutes: The run this one re-executes (default: the pre-flight baseline).
        notebook_key: Path recorded as the notebook (default: ``notebook``'s path).
        cwd: Working directory of the kernel (default: the notebook's folder).
        extra_tags: More run tags.
        progress: Show papermill's per-cell progress bar.
        on_preflight: Called with the pre-flight check before the first cell runs.
        params_checked: ``parameters`` were checked by :func:`check_parameters` already.
        register: Register the models the notebook captured once it succeeded (a reproduction
            does not: it only checks).
        keep_frames: A private folder where the kernel saves, after the last cell, the DataFrames
            its capture session tracked with role test or reference (``index.json`` lists them);
            a reproduction re-predicts them with both models.
        threads: Size of the kernel's BLAS/OpenMP thread pools (``OMP_NUM_THREADS`` and kin,
            unless set already); a sweep running kernels side by side passes cores / workers.

    Returns:
        The run; ``error`` is set when it failed (it was marked FAILED, nothing was registered).

    Raises:
        ParameterError: bad parameters (nothing ran). PreflightError: ``strict`` refused.
        StoreError: the tracking store failed before the notebook ran.
    """
    source = _notebook_file(notebook)
    params = dict(parameters or {})
    if not params_checked:
        params = check_parameters(source, params)
    settings = settings or load_settings()
    key = notebook_key or str(source)
    exp_name = experiment or _experiment_default(source, params) or settings.experiment
    workdir = Path(cwd) if cwd is not None else source.parent

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import papermill

    _register_engine()
    from nb2prod.tracking import client as tracking

    tracking.check_reachable(settings)
    created: Future[str] = Future()
    opened: Future[_Opened] = Future()
    # The default store (local SQLite, known schema, existing experiment) is written without
    # importing mlflow; anything else goes through MLflow (see nb2prod.tracking.runstore).
    local = SqliteRunStore.open(settings, exp_name)
    names_nb2prod = any(_NEEDS_RUN.search(code) for code in _code_sources(source))

    def open_run() -> None:
        try:
            opened.set_result(
                _open_run(
                    settings,
                    source,
                    key,
                    exp_name,
                    params,
                    against,
                    strict,
                    parent_run_id,
                    reexecutes,
                    extra_tags,
                    created,
                    local,
                )
            )
        except BaseException as exc:
            if not created.done():
                created.set_exception(exc)
            opened.set_exception(exc)

    def warm() -> None:
        if not strict:
            open_run()
        _warm_html()
        if local is not None and names_nb2prod and register:
            _warm_mlflow(settings)  # the kernel may capture models, which MLflow registers at the end

    if strict:
        open_run()  # --strict decides before the kernel starts.
        opened.result()
    threading.Thread(target=warm, name="nb2prod-open-run", daemon=True).start()

    gate = _Gate(created, opened, on_preflight)
    gate.frames_dir = keep_frames
    out_dir = Path(tempfile.mkdtemp(prefix="nb2prod-run-"))
    output = out_dir / source.name
    env = _kernel_env(settings, source, exp_name, threads)
    source_ids = _cell_ids(source)
    started = time.perf_counter()
    failure: BaseException | None = None
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=params,
            engine_name=ENGINE_NAME,
            kernel_name=kernel,
            progress_bar=progress,
            execution_timeout=timeout,
            cwd=str(workdir),
            nb2prod_gate=gate,
            nb2prod_env=env,
        )
    except (Exception, KeyboardInterrupt) as exc:
        failure = exc
    seconds = time.perf_counter() - started

    # The run must exist before anything is recorded; a store failure here is the real error.
    try:
        run = gate.wait()  # a notebook that never named nb2prod ran without waiting for the run
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    executed = _read_executed(output)
    error = _failure(failure, gate, executed, source_ids) if failure is not None else None
    return _finish(
        run,
        settings,
        params,
        key,
        output if executed is not None else None,
        executed,
        error,
        seconds,
        parent_run_id,
        register,
    )


def _warm_html() -> None:
    """Import nbconvert and load its templates while the notebook runs (off the critical path)."""
    with contextlib.suppress(Exception):
        import nbformat
        from nbconvert import HTMLExporter

        HTMLExporter().from_notebook_node(nbformat.v4.new_notebook())


def _experiment_default(source: Path, params: Mapping[str, Any]) -> str | None:
    """A notebook whose parameters name its experiment (``experiment = "..."``) keeps using it."""
    if isinstance(params.get("experiment"), str):
        return str(params["experiment"])
    with contextlib.suppress(Exception):
        for spec in inspect_parameters(source) or []:
            if spec.name == "experiment":
                value = _literal(spec.default)
                if isinstance(value, str):
                    return value
    return None


def _cell_ids(source: Path) -> list[str | None]:
    """Cell ids of the source notebook; papermill's old error markers stand as ``_ERROR_TAG``."""
    try:
        nb = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [_ERROR_TAG if _ERROR_TAG in _tags(c) else c.get("id") for c in nb.get("cells", [])]


def _code_sources(source: Path) -> list[str]:
    try:
        nb = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [
        "".join(c.get("source", "")) if isinstance(c.get("source"), list) else str(c.get("source", ""))
        for c in nb.get("cells", [])
        if c.get("cell_type") == "code"
    ]


def _read_executed(output: Path) -> Any:
    import nbformat

    if not output.is_file():
        return None
    try:
        return nbformat.read(str(output), as_version=4)
    except Exception:
        return None


def _run_tags(
    source: Path,
    key: str,
    parent_run_id: str | None,
    extra_tags: Mapping[str, str] | None,
    link: str | None,
) -> dict[str, str]:
    from nb2prod.capture import environment
    from nb2prod.tracking import client as tracking

    digest = environment.notebook_info(notebook_path=source)[0]
    tags = {
        TAG_KIND: "run",
        tracking.TAG_NOTEBOOK: key,
        "mlflow.source.name": key,
        "mlflow.source.type": "NOTEBOOK",
        TAG_SOURCE_DIGEST: digest.code_digest if digest else "",
    }
    if link:
        tags[TAG_REEXECUTES] = link
    if parent_run_id:
        tags[TAG_PARENT] = parent_run_id
    tags.update(extra_tags or {})
    return tags


def _open_run(
    settings: Settings,
    source: Path,
    key: str,
    exp_name: str,
    params: Mapping[str, Any],
    against: str | None,
    strict: bool,
    parent_run_id: str | None,
    reexecutes: str | None,
    extra_tags: Mapping[str, str] | None,
    created: Future[str],
    local: SqliteRunStore | None,
) -> _Opened:
    """Pre-flight check, then the run with its parameters and source; ``created`` gets the run id
    as soon as the run exists. A store failure after that marks the run FAILED before raising."""
    from nb2prod.tracking import client as tracking

    current = current_environment(source)
    with tracking.store_call(settings, what="opening the MLflow run", not_recorded="this re-execution"):
        store: RunStore
        if local is not None:
            store = local
        else:
            client = tracking.client(settings)
            store = MlflowRunStore(client, tracking.ensure_experiment(settings, client, exp_name))
        check = preflight(store, key, current, against)
        if strict and check.blocking:
            raise PreflightError(
                "--strict: the environment differs from run "
                f"{check.against_run_id} in what the notebook imports: " + "; ".join(check.blocking),
                hint="install the recorded versions (requirements.txt of that run), or drop --strict",
            )
        link = reexecutes or check.against_run_id
        run_id = store.create_run(_run_tags(source, key, parent_run_id, extra_tags, link))
        created.set_result(run_id)
        try:
            store.log_params(run_id, _params_for_mlflow(params))
            runstore.log_json(store, run_id, dict(params), PARAMS_ARTIFACT)
            store.log_file(run_id, source, SOURCE_ARTIFACT)
            if check.diff is not None:
                runstore.log_json(store, run_id, check.to_dict(), PREFLIGHT_ARTIFACT)
        except BaseException:
            with contextlib.suppress(Exception):
                store.terminate(run_id, "FAILED")  # not left RUNNING
            raise
    return _Opened(store, run_id, exp_name, check, current)


def _warm_mlflow(settings: Settings) -> None:
    """Import mlflow and start its store while the notebook runs (off the critical path)."""
    with contextlib.suppress(Exception):
        from nb2prod.tracking import client as tracking

        tracking.client(settings)


def _finish(
    run: _Opened,
    settings: Settings,
    params: dict[str, Any],
    key: str,
    output: Path | None,
    executed: Any,
    error: ExecutionError | None,
    seconds: float,
    parent_run_id: str | None,
    register: bool,
) -> RunResult:
    from nb2prod.tracking import client as tracking
    from nb2prod.tracking import registry

    store, run_id = run.store, run.run_id
    registered: dict[str, str] = {}
    local_copy: Path | None = None
    with tracking.store_call(
        settings, what="recording the executed notebook", not_recorded="the run's outcome"
    ):
        # The kernel records the notebook it read; keep the source's key (a snapshot may have run).
        store.set_tags(run_id, {tracking.TAG_NOTEBOOK: key})
        # The runner's view of the environment, unless %nb2prod start in the kernel recorded its own
        # (which also knows what the cells imported at run time).
        if not store.has_artifact(run_id, tracking.ENVIRONMENT_JSON):
            runstore.log_json(store, run_id, run.environment.to_dict(), tracking.ENVIRONMENT_JSON)
        if output is not None:
            store.log_file(run_id, output, EXECUTED_ARTIFACT)
            html = _html(executed)
            if html is not None:
                store.log_text(run_id, html, HTML_ARTIFACT)
            local_copy = _keep_local(settings, run_id, output)
        if error is None and register and store.has_artifacts_under(run_id, registry.CANDIDATES_DIR):
            try:
                client = store.client if isinstance(store, MlflowRunStore) else tracking.client(settings)
                registered = registry.register_candidates(client, run_id)
            except Exception as exc:
                error = ExecutionError(
                    f"the notebook ran but registering its models failed ({type(exc).__name__}: {exc})",
                    kind="runner",
                    ename=type(exc).__name__,
                    evalue=str(exc),
                )
        if error is not None:
            error.run_id = run_id
            store.set_tags(run_id, {TAG_FAILURE: error.message[:5000], f"{TAG_FAILURE}.kind": error.kind})
            store.terminate(run_id, "FAILED")
        else:
            store.terminate(run_id, "FINISHED")
        metrics, tags = store.outcome(run_id)
    prefix, suffix = "nb2prod.data.", ".digest"
    digests = {
        k[len(prefix) : -len(suffix)]: v
        for k, v in tags.items()
        if k.startswith(prefix) and k.endswith(suffix)
    }
    return RunResult(
        run_id=run_id,
        experiment=run.experiment,
        status="FAILED" if error is not None else "FINISHED",
        notebook=key,
        parameters=params,
        seconds=seconds,
        executed_path=local_copy,
        preflight=run.preflight,
        error=error,
        registered=registered,
        metrics=metrics,
        data_digests=digests,
        parent_run_id=parent_run_id,
    )


def _keep_local(settings: Settings, run_id: str, output: Path) -> Path:
    folder = settings.state_dir / "runs" / run_id
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "executed.ipynb"
        shutil.copyfile(output, target)
        shutil.rmtree(output.parent, ignore_errors=True)
        return target
    return output


def _html(executed: Any) -> str | None:
    if executed is None:
        return None
    try:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(executed)
        return str(body)
    except Exception:
        return None


# --------------------------------------------------------------------------- reproduce


@dataclass(frozen=True)
class Finding:
    """One comparison between the original run and its reproduction.

    Attributes:
        check: ``run``, ``environment``, ``notebook``, ``data``, ``metric``, ``prediction`` or ``artifact``.
        name: What was compared (package, dataset, metric, model...).
        ok: True when it matches (or is only informative).
        original: Value in the original run.
        new: Value in the reproduction.
        detail: Why it differs, or a note.
    """

    check: str
    name: str
    ok: bool
    original: str | None = None
    new: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "name": self.name,
            "ok": self.ok,
            "original": self.original,
            "new": self.new,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Reproduction:
    """The verdict of ``nb2prod reproduce``.

    The run is reproduced when the re-execution finished and every finding is ok: same Python and
    same versions of every package the notebook imported, same notebook code, the same data
    digests, every metric within ``rtol``, and the same predictions of every model on its recorded
    input example and on every DataFrame the notebook tracked with role test or reference
    (``%nb2prod data DF --role test``): both the original and the re-run model predict it, class
    labels must match exactly, probabilities and regression outputs within ``rtol``, and the
    number of rows that differ is reported. Other installed packages that changed are listed but
    do not count.

    Attributes:
        original_run_id: The run that was reproduced.
        run: The re-execution.
        rtol: Relative tolerance used for metrics and predictions.
        findings: Every comparison made.
    """

    original_run_id: str
    run: RunResult
    rtol: float
    findings: list[Finding]

    @property
    def reproduced(self) -> bool:
        return self.run.ok and all(f.ok for f in self.findings)

    @property
    def reasons(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_run_id": self.original_run_id,
            "run_id": self.run.run_id,
            "reproduced": self.reproduced,
            "rtol": self.rtol,
            "findings": [f.to_dict() for f in self.findings],
        }


def reproduce(
    run_id: str,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-12,
    timeout: int | None = None,
    kernel: str | None = None,
    settings: Settings | None = None,
    progress: bool = True,
    on_preflight: Callable[[Preflight], None] | None = None,
) -> Reproduction:
    """Re-run the notebook snapshot stored with ``run_id`` with its parameters, and compare.

    Raises:
        UsageError: no such run, or it has no notebook snapshot (and the notebook on disk changed).
        StoreError: the store failed.
    """
    from nb2prod.tracking import client as tracking

    settings = settings or load_settings()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tracking.store_call(settings, what=f"reading run {run_id}", not_recorded="nothing (read only)"):
        client = tracking.client(settings)
        try:
            original = client.get_run(run_id)
        except Exception as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc):
                raise UsageError(
                    f"no run {run_id} in {tracking.redact_uri(settings.tracking_uri)}",
                    hint="copy the run id from nb2prod run's output or the MLflow UI",
                ) from None
            raise
        experiment = client.get_experiment(original.info.experiment_id).name
        workdir = Path(tempfile.mkdtemp(prefix="nb2prod-reproduce-"))
        frames_dir = workdir / "reference"
        frames_dir.mkdir(mode=0o700)
        snapshot = _snapshot_of(client, original, workdir)
        stored = tracking.load_json_artifact(client, run_id, PARAMS_ARTIFACT)
    key = original.data.tags.get(tracking.TAG_NOTEBOOK) or str(snapshot)
    if stored is None:
        # A run captured interactively: its notebook ran with its own defaults.
        params: dict[str, Any] = {}
    else:
        params = check_parameters(snapshot, stored)
    key_path = Path(key)
    cwd = key_path.parent if key_path.parent.is_dir() else snapshot.parent
    result = run_notebook(
        snapshot,
        params,
        experiment=experiment,
        timeout=timeout,
        kernel=kernel,
        against=run_id,
        settings=settings,
        reexecutes=run_id,
        notebook_key=key,
        cwd=cwd,
        extra_tags={TAG_REPRODUCES: run_id, TAG_KIND: "reproduce"},
        progress=progress,
        on_preflight=on_preflight,
        params_checked=True,
        register=False,
        keep_frames=frames_dir,
    )
    # The original's own stored test/reference rows first (recorded at capture, digest checked);
    # the frames the re-execution tracked for those it did not store.
    stored = [
        ReferenceFrame(
            str(rec.get("name")), str(rec.get("role")), rec.get("target"), str(rec.get("digest")), frame
        )
        for rec, frame, matches in tracking.load_holdouts(client, run_id)
        if matches
    ]
    dumped = [ref for ref in _load_reference(frames_dir) if ref.name not in {s.name for s in stored}]
    findings = compare_runs(client, original, result, rtol=rtol, atol=atol, reference=[*stored, *dumped])
    verdict = Reproduction(run_id, result, rtol, findings)
    if result.run_id is not None:
        with contextlib.suppress(Exception):
            tracking.log_json(client, result.run_id, verdict.to_dict(), REPRODUCTION_ARTIFACT)
            client.set_tag(result.run_id, "nb2prod.reproduced", str(verdict.reproduced).lower())
    shutil.rmtree(workdir, ignore_errors=True)
    return verdict


def _snapshot_of(client: MlflowClient, run: Any, folder: Path) -> Path:
    """The notebook as it was when ``run`` ran: its stored snapshot, else the file if unchanged."""
    from nb2prod.capture import environment
    from nb2prod.tracking import client as tracking

    try:
        local = client.download_artifacts(run.info.run_id, SOURCE_ARTIFACT, dst_path=str(folder))
        return Path(local)
    except Exception:
        pass
    key = run.data.tags.get(tracking.TAG_NOTEBOOK)
    recorded = run.data.tags.get(tracking.TAG_NOTEBOOK_DIGEST)
    if key and recorded and Path(key).is_file():
        info, _ = environment.notebook_info(notebook_path=key)
        if info is not None and info.code_digest == recorded:
            target = folder / Path(key).name
            shutil.copyfile(key, target)
            return target
        raise UsageError(
            f"run {run.info.run_id} stored no notebook snapshot, and {key} has changed since "
            f"(code digest {info.code_digest if info else '?'} != recorded {recorded})",
            hint="restore the notebook from version control at the run's git commit",
        )
    raise UsageError(
        f"run {run.info.run_id} has no notebook snapshot ({SOURCE_ARTIFACT}) and no notebook file to fall back on",
        hint="reproduce runs made by nb2prod run, or by %nb2prod start in a saved notebook",
    )


def _fmt(value: Any) -> str | None:
    return None if value is None else str(value)


def compare_runs(
    client: MlflowClient,
    original: Any,
    result: RunResult,
    *,
    rtol: float,
    atol: float = 1e-12,
    reference: Sequence[ReferenceFrame] = (),
) -> list[Finding]:
    """Every comparison between ``original`` (an MLflow run) and its re-execution ``result``.

    ``reference``: test/reference DataFrames of the re-execution, which every model pair
    re-predicts (see :func:`_compare_models`).
    """
    from nb2prod.capture import environment
    from nb2prod.tracking import client as tracking

    findings: list[Finding] = []
    if not result.ok:
        findings.append(
            Finding(
                "run",
                "status",
                False,
                original.info.status,
                result.status,
                result.error.message if result.error else "",
            )
        )
        if result.run_id is None:
            return findings
    new = client.get_run(result.run_id)
    old_id = original.info.run_id

    # Environment: Python and what the notebook imported decide; other packages are listed.
    old_env = tracking.load_json_artifact(client, old_id, tracking.ENVIRONMENT_JSON)
    new_env = tracking.load_json_artifact(client, result.run_id, tracking.ENVIRONMENT_JSON)
    if old_env is None or new_env is None:
        which = "original" if old_env is None else "reproduction"
        findings.append(
            Finding("environment", "environment.json", False, detail=f"the {which} recorded no environment")
        )
    else:
        diff = environment.diff(
            environment.EnvironmentSnapshot.from_dict(old_env),
            environment.EnvironmentSnapshot.from_dict(new_env),
        )
        if diff.python:
            findings.append(Finding("environment", "python", False, diff.python[0], diff.python[1]))
        for change in diff.imported_changed:
            findings.append(
                Finding(
                    "environment",
                    change.name,
                    False,
                    change.old,
                    change.new,
                    f"imported by the notebook ({change.kind})",
                )
            )
        others = len(diff.changed) + len(diff.added) + len(diff.removed) - len(diff.imported_changed)
        findings.append(
            Finding(
                "environment",
                "other packages",
                True,
                detail=f"{others} installed packages the notebook does not import differ"
                if others
                else "identical",
            )
        )

    # Notebook code.
    old_digest = original.data.tags.get(tracking.TAG_NOTEBOOK_DIGEST)
    new_digest = new.data.tags.get(tracking.TAG_NOTEBOOK_DIGEST) or new.data.tags.get(TAG_SOURCE_DIGEST)
    if old_digest:
        findings.append(Finding("notebook", "code digest", old_digest == new_digest, old_digest, new_digest))

    # Data digests.
    prefix, suffix = "nb2prod.data.", ".digest"

    def digests(tags: Mapping[str, str]) -> dict[str, str]:
        return {
            k[len(prefix) : -len(suffix)]: v
            for k, v in tags.items()
            if k.startswith(prefix) and k.endswith(suffix)
        }

    old_data, new_data = digests(original.data.tags), digests(new.data.tags)
    for name in sorted(old_data.keys() | new_data.keys()):
        a, b = old_data.get(name), new_data.get(name)
        detail = (
            ""
            if a == b
            else (
                "not captured by the reproduction"
                if b is None
                else "new in the reproduction"
                if a is None
                else "content differs"
            )
        )
        findings.append(Finding("data", name, a == b, a, b, detail))

    # Metrics.
    old_metrics, new_metrics = dict(original.data.metrics), dict(new.data.metrics)
    for name in sorted(old_metrics.keys() | new_metrics.keys()):
        a, b = old_metrics.get(name), new_metrics.get(name)
        if a is None or b is None:
            findings.append(
                Finding(
                    "metric",
                    name,
                    False,
                    _fmt(a),
                    _fmt(b),
                    "missing in the reproduction" if b is None else "new in the reproduction",
                )
            )
            continue
        same = math.isclose(a, b, rel_tol=rtol, abs_tol=atol) or (math.isnan(a) and math.isnan(b))
        rel = abs(a - b) / max(abs(a), abs(b)) if not same and max(abs(a), abs(b)) > 0 else 0.0
        findings.append(
            Finding(
                "metric",
                name,
                same,
                repr(a),
                repr(b),
                "" if same else f"relative difference {rel:.3g} > rtol {rtol:g}",
            )
        )

    findings.extend(
        _compare_models(
            client, old_id, result.run_id, rtol=rtol, atol=atol, reference=reference, old_data=old_data
        )
    )
    return findings


def _model_records(client: MlflowClient, run_id: str) -> dict[str, dict[str, Any]]:
    from nb2prod.tracking import client as tracking

    records: dict[str, dict[str, Any]] = {}
    try:
        files = client.list_artifacts(run_id, "models")
    except Exception:
        return records
    for item in files:
        if item.path.endswith(".json"):
            data = tracking.load_json_artifact(client, run_id, item.path)
            if data and data.get("model_id"):
                records[str(data.get("name") or Path(item.path).stem)] = data
    return records


@dataclass(frozen=True)
class ReferenceFrame:
    """A test or reference DataFrame the re-execution tracked, to re-predict with both models.

    Attributes:
        name: Dataset name (as in ``%nb2prod data DF --name``).
        role: ``test`` or ``reference``.
        target: The label column (dropped before predicting), if recorded.
        digest: The frame's content digest in the re-execution.
        frame: The data.
    """

    name: str
    role: str
    target: str | None
    digest: str
    frame: Any


def _load_reference(folder: Path) -> list[ReferenceFrame]:
    """The frames the kernel saved in ``folder`` (our own private folder: see ``_DUMP_FRAMES``)."""
    import pandas as pd

    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    frames = []
    for item in index:
        with contextlib.suppress(Exception):
            frame = pd.read_pickle(folder / item["file"])
            frames.append(
                ReferenceFrame(item["name"], item["role"], item.get("target"), item["digest"], frame)
            )
    return frames


def _compare_models(
    client: MlflowClient,
    old_id: str,
    new_id: str,
    *,
    rtol: float,
    atol: float,
    reference: Sequence[ReferenceFrame] = (),
    old_data: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Predictions of each original model and its reproduction: on the original's input example,
    and on every test/reference frame of the reproduction (class labels exactly, probabilities and
    regression outputs within ``rtol``/``atol``), with the number of rows that differ."""
    old_models, new_models = _model_records(client, old_id), _model_records(client, new_id)
    findings: list[Finding] = []
    for name in sorted(old_models.keys() | new_models.keys()):
        a, b = old_models.get(name), new_models.get(name)
        if a is None or b is None:
            findings.append(
                Finding(
                    "prediction",
                    name,
                    False,
                    a and a["model_id"],
                    b and b["model_id"],
                    "model missing in the reproduction" if b is None else "model new in the reproduction",
                )
            )
            continue
        findings.extend(
            _prediction_findings(name, a["model_id"], b["model_id"], reference, old_data or {}, rtol, atol)
        )
        same_files = a.get("artifact_sha256") == b.get("artifact_sha256")
        findings.append(
            Finding(
                "artifact",
                name,
                True,
                detail="saved model files are byte-identical"
                if same_files
                else "saved model files differ byte-wise (informative only)",
            )
        )
    return findings


def _why(exc: BaseException) -> str:
    return f"could not compare: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _prediction_findings(
    name: str,
    old_model: str,
    new_model: str,
    reference: Sequence[ReferenceFrame],
    old_data: Mapping[str, str],
    rtol: float,
    atol: float,
) -> list[Finding]:
    import mlflow
    from mlflow.models import Model

    findings: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="nb2prod-compare-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{old_model}", dst_path=tmp)
            example = Model.load(local).load_input_example(local)
            old = mlflow.pyfunc.load_model(local)
            new = mlflow.pyfunc.load_model(f"models:/{new_model}")
        except Exception as exc:
            return [Finding("prediction", name, False, old_model, new_model, _why(exc))]
        if example is None:
            detail: str | None = "the original model has no recorded input example"
        else:
            try:
                detail = _prediction_difference(old, new, example, rtol=rtol, atol=atol)
            except Exception as exc:
                detail = _why(exc)
        findings.append(
            Finding(
                "prediction",
                name,
                detail is None,
                old_model,
                new_model,
                detail or "same predictions on the recorded input example",
            )
        )
        for ref in reference:
            label = f"{name} on {ref.name}"
            try:
                features = _features_for(old, ref)
                detail = _prediction_difference(old, new, features, rtol=rtol, atol=atol)
            except Exception as exc:
                findings.append(Finding("prediction", label, False, old_model, new_model, _why(exc)))
                continue
            origin = (
                "the original's data (same digest)"
                if old_data.get(ref.name) == ref.digest
                else "the reproduction's data (its digest differs from the original's)"
            )
            findings.append(
                Finding(
                    "prediction",
                    label,
                    detail is None,
                    old_model,
                    new_model,
                    f"{detail} of {ref.role} data '{ref.name}', {origin}"
                    if detail
                    else f"same predictions on all {len(features)} rows of {ref.role} data '{ref.name}', {origin}",
                )
            )
    return findings


def _features_for(model: Any, ref: ReferenceFrame) -> Any:
    """The columns of ``ref`` the model takes: its signature's inputs, else all but the target."""
    frame = ref.frame
    if ref.target and ref.target in getattr(frame, "columns", ()):
        frame = frame.drop(columns=[ref.target])
    schema = model.metadata.get_input_schema() if model.metadata is not None else None
    names = schema.input_names() if schema is not None and schema.has_input_names() else None
    if names and all(n in frame.columns for n in names):
        frame = frame[list(names)]
    return frame


def _prediction_difference(old: Any, new: Any, data: Any, *, rtol: float, atol: float) -> str | None:
    """How the two pyfunc models' outputs on ``data`` differ (None: they agree)."""
    import numpy as np

    from nb2prod.capture.models import to_signature_types

    outputs = [("predictions", old.predict(data), new.predict(data))]
    raw_old, raw_new = old.get_raw_model(), new.get_raw_model()
    if hasattr(raw_old, "predict_proba") and hasattr(raw_new, "predict_proba"):
        frame = to_signature_types(data)
        outputs.append(("probabilities", raw_old.predict_proba(frame), raw_new.predict_proba(frame)))
    problems = []
    for label, x, y in outputs:
        xa, ya = np.asarray(x), np.asarray(y)
        if xa.shape != ya.shape:
            problems.append(f"{label}: shape {xa.shape} vs {ya.shape}")
            continue
        if xa.dtype.kind in "fc" and ya.dtype.kind in "fc":
            bad = ~np.isclose(xa, ya, rtol=rtol, atol=atol, equal_nan=True)
            how = f"beyond rtol {rtol:g}"
        else:
            bad = xa.astype(str) != ya.astype(str)
            how = "(exact)"
        if bad.any():
            rows = int(bad.reshape(bad.shape[0], -1).any(axis=1).sum()) if bad.ndim else 1
            total = xa.shape[0] if xa.ndim else 1
            problems.append(f"{label}: {rows} of {total} rows differ {how}")
    return "; ".join(problems) or None


# --------------------------------------------------------------------------- sweep


@dataclass(frozen=True)
class SweepResult:
    """A grid of runs under one parent run.

    Attributes:
        parent_run_id: The sweep's own MLflow run; every run of the grid is its child.
        experiment: Experiment name.
        runs: One result per grid point, ranked best first (failed runs last).
        rank_by: Metric used for the ranking (None when no common metric was found).
        ascending: True when lower is better for ``rank_by``.
        where: ``"local processes (N)"`` or the Dask scheduler address.
        seconds: Wall time of the whole sweep.
    """

    parent_run_id: str
    experiment: str
    runs: list[RunResult]
    rank_by: str | None
    ascending: bool
    where: str
    seconds: float

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.runs if not r.ok]

    @property
    def best(self) -> RunResult | None:
        ok = [r for r in self.runs if r.ok and self.rank_by in r.metrics]
        return ok[0] if ok else None


@dataclass(frozen=True)
class _Task:
    """What one grid point needs, picklable: it travels to a worker process or a Dask worker."""

    notebook_name: str
    notebook_bytes: bytes
    notebook_key: str
    source_dir: str
    parameters: dict[str, Any]
    experiment: str
    timeout: int | None
    kernel: str | None
    settings: Settings
    parent_run_id: str
    threads: int | None = None  # the kernel's BLAS/OpenMP pool size (local workers side by side)


def parse_grid(spec: Mapping[str, str | Sequence[Any]]) -> dict[str, list[Any]]:
    """``{"C": "0.1,1,10"}`` -> ``{"C": ["0.1", "1", "10"]}`` (lists are kept as they are)."""
    grid: dict[str, list[Any]] = {}
    for name, values in spec.items():
        items = [v.strip() for v in values.split(",")] if isinstance(values, str) else list(values)
        if not items or any(v == "" for v in items):
            raise ParameterError(f"sweep values for '{name}' are empty", name=name, hint="e.g. -p C 0.1,1,10")
        grid[name] = items
    return grid


def expand_grid(
    notebook: str | Path, grid: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every combination of the grid, checked and typed like the notebook's defaults.

    Raises:
        ParameterError: a name or value that the notebook does not accept.
    """
    names = list(grid)
    points = []
    for combo in itertools.product(*(grid[n] for n in names)):
        raw = {**(fixed or {}), **dict(zip(names, combo, strict=True))}
        texts = [n for n, v in zip(names, combo, strict=True) if isinstance(v, str)]
        points.append(check_parameters(notebook, raw, from_text=texts))
    return points


def _run_task(task: _Task) -> RunResult:
    """Run one grid point in this process (a local worker or a Dask worker)."""
    folder = Path(tempfile.mkdtemp(prefix="nb2prod-sweep-"))
    try:
        path = folder / task.notebook_name
        path.write_bytes(task.notebook_bytes)
        source_dir = Path(task.source_dir)
        cwd = source_dir if source_dir.is_dir() else folder
        try:
            return run_notebook(
                path,
                task.parameters,
                experiment=task.experiment,
                timeout=task.timeout,
                kernel=task.kernel,
                settings=task.settings,
                parent_run_id=task.parent_run_id,
                notebook_key=task.notebook_key,
                cwd=cwd,
                progress=False,
                params_checked=True,
                threads=task.threads,
            )
        except Nb2ProdError as exc:
            error = ExecutionError(str(exc), kind="runner", ename=type(exc).__name__, evalue=str(exc))
            return _failed_task(task, error)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _lower_is_better(metric: str) -> bool:
    low = metric.lower()
    return any(word in low for word in _LOWER_IS_BETTER)


def _default_metric(runs: Sequence[RunResult]) -> str | None:
    finished = [r for r in runs if r.ok and r.metrics]
    if not finished:
        return None
    common = set.intersection(*(set(r.metrics) for r in finished))
    for prefix in ("test_", "val", "training_", ""):
        candidates = sorted(m for m in common if m.startswith(prefix))
        if candidates:
            return candidates[0]
    return None


def rank(
    runs: Sequence[RunResult], metric: str | None, ascending: bool | None = None
) -> tuple[list[RunResult], bool]:
    """Finished runs with the metric, best first; then finished runs without it; failed runs last."""
    asc = _lower_is_better(metric) if (ascending is None and metric) else bool(ascending)
    scored = [r for r in runs if r.ok and metric in r.metrics]
    scored.sort(key=lambda r: r.metrics[metric] if asc else -r.metrics[metric])  # type: ignore[index]
    rest = [r for r in runs if r.ok and r not in scored]
    failed = [r for r in runs if not r.ok]
    return scored + rest + failed, asc


def _local_hosts() -> set[str]:
    hosts = {"127.0.0.1", "localhost", "::1", socket.gethostname()}
    with contextlib.suppress(OSError):
        hosts.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    return hosts


def sweep(
    notebook: str | Path,
    grid: Mapping[str, str | Sequence[Any]],
    *,
    fixed: Mapping[str, Any] | None = None,
    jobs: int | None = None,
    scheduler: str | None = None,
    rank_by: str | None = None,
    ascending: bool | None = None,
    experiment: str | None = None,
    timeout: int | None = None,
    kernel: str | None = None,
    settings: Settings | None = None,
    on_start: Callable[[int, str], None] | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> SweepResult:
    """Run every combination of ``grid`` as a child run of one parent run.

    Local worker processes by default (``jobs``, default: the number of cores); with
    ``scheduler`` (``tcp://HOST:8786``) each grid point is a task on that Dask cluster, and the
    notebook and its parameters travel with the task. A failed run is recorded as failed and does
    not stop the others.

    Raises:
        ParameterError: a bad name or value (nothing ran). UsageError: a local SQLite store with a
            Dask cluster whose workers are on other machines. StoreError: the store failed.
    """
    from nb2prod.tracking import client as tracking

    source = _notebook_file(notebook)
    settings = settings or load_settings()
    context = None
    if scheduler is None and (jobs or os.cpu_count() or 1) > 1:
        # Its imports (papermill, mlflow, nbconvert) run on the other core while this process
        # checks the grid and opens the parent run, instead of delaying the first grid point.
        context = _worker_context()
    parsed = parse_grid(grid)
    typed_fixed = check_parameters(
        source, dict(fixed or {}), from_text=[k for k, v in (fixed or {}).items() if isinstance(v, str)]
    )
    points = expand_grid(source, parsed, typed_fixed)
    exp_name = experiment or _experiment_default(source, points[0]) or settings.experiment
    workers = max(1, min(jobs or os.cpu_count() or 1, len(points)))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    dask_client = None
    if scheduler is not None:
        dask_client = _dask_client(scheduler, settings)
        where = f"Dask scheduler {scheduler}"
    else:
        where = f"{workers} local worker process{'es' if workers > 1 else ''}"

    tracking.check_reachable(settings)
    with tracking.store_call(settings, what="opening the sweep run", not_recorded="the sweep"):
        # On the default store the parent run opens without mlflow (nb2prod.tracking.runstore), so the grid
        # points start at once; mlflow loads behind them for the summary (its best-metric value).
        store: RunStore | None = SqliteRunStore.open(settings, exp_name)
        client_ready: Future[MlflowClient] = Future()
        if store is None:
            client = tracking.client(settings)
            store = MlflowRunStore(client, tracking.ensure_experiment(settings, client, exp_name))
            client_ready.set_result(client)
        else:
            threading.Thread(
                target=_load_client, args=(settings, client_ready), name="nb2prod-mlflow", daemon=True
            ).start()
        # Not tagged nb2prod.notebook: the parent ran no notebook, so it is never "the last run" of one.
        parent_id = store.create_run(
            {TAG_KIND: "sweep", "nb2prod.sweep.notebook": str(source), "mlflow.source.name": str(source)}
        )
        runstore.log_json(
            store, parent_id, {"grid": parsed, "fixed": typed_fixed, "points": points}, SWEEP_ARTIFACT
        )
        store.log_file(parent_id, source, SOURCE_ARTIFACT)
    if on_start is not None:
        on_start(len(points), parent_id)

    tasks = [
        _Task(
            source.name,
            source.read_bytes(),
            str(source),
            str(source.parent),
            p,
            exp_name,
            timeout,
            kernel,
            settings,
            parent_id,
            # Local workers side by side share the cores; a Dask nanny caps its workers itself.
            threads=max(1, (os.cpu_count() or 1) // workers) if dask_client is None and workers > 1 else None,
        )
        for p in points
    ]
    started = time.perf_counter()
    results: list[RunResult] = []
    try:
        if dask_client is not None:
            results = _sweep_dask(dask_client, tasks, on_result)
        else:
            results = _sweep_local(tasks, workers, on_result, context)
    except BaseException:
        with contextlib.suppress(Exception):
            store.terminate(parent_id, "KILLED")
        raise
    finally:
        if dask_client is not None:
            with contextlib.suppress(Exception):
                dask_client.close()
    seconds = time.perf_counter() - started

    metric = rank_by or _default_metric(results)
    ranked, asc = rank(results, metric, ascending)
    summary = SweepResult(parent_id, exp_name, ranked, metric, asc, where, seconds)
    with tracking.store_call(settings, what="closing the sweep run", not_recorded="the sweep summary"):
        table = [
            {
                "run_id": r.run_id,
                "status": r.status,
                "parameters": r.parameters,
                "metrics": r.metrics,
                "error": r.error.message if r.error else None,
            }
            for r in ranked
        ]
        runstore.log_json(
            store,
            parent_id,
            {
                "grid": parsed,
                "points": points,
                "rank_by": metric,
                "ascending": asc,
                "runs": table,
                "where": where,
            },
            SWEEP_ARTIFACT,
        )
        best = summary.best
        if best is not None and metric is not None:
            store.set_tags(parent_id, {"nb2prod.sweep.best_run": best.run_id or ""})
            client_ready.result().log_metric(parent_id, f"best_{metric}", best.metrics[metric])
        store.set_tags(parent_id, {"nb2prod.sweep.failed": str(len(summary.failed))})
        all_failed = len(summary.failed) == len(ranked)
        store.terminate(parent_id, "FAILED" if all_failed else "FINISHED")
    return summary


def _load_client(settings: Settings, ready: Future[MlflowClient]) -> None:
    from nb2prod.tracking import client as tracking

    try:
        ready.set_result(tracking.client(settings))
    except BaseException as exc:
        ready.set_exception(exc)


def _worker_context() -> Any:
    """The multiprocessing context of local sweep workers, its fork server already starting.

    Not fork: the parent holds threads and SQLite connections. A fork server imports papermill,
    mlflow and nbconvert once (single-threaded, no store opened) and forks every worker from it:
    spawned workers each imported them again (~5 CPU s per worker here), CPU the sequential sweep
    never spends since its process has them already. Started before the parent run is opened,
    the server's imports overlap the parent's instead of delaying the first grid point (~2-4 s).
    """
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        context.set_forkserver_preload(["nb2prod.execute", "papermill", "mlflow", "nbconvert"])
        forkserver.ensure_running()
    return context


def _sweep_local(
    tasks: list[_Task], workers: int, on_result: Callable[[RunResult], None] | None, context: Any = None
) -> list[RunResult]:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results: list[RunResult] = []
    if workers == 1:
        for task in tasks:
            result = _run_task(task)
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results
    with ProcessPoolExecutor(max_workers=workers, mp_context=context or _worker_context()) as pool:
        futures = {pool.submit(_run_task, t): t for t in tasks}
        results.extend(_gather(as_completed(futures), futures, on_result))
    return results


def _gather(
    done: Iterable[Any], futures: Mapping[Any, _Task], on_result: Callable[[RunResult], None] | None
) -> list[RunResult]:
    """The result of each future as it completes (local processes or Dask alike); a task or worker
    that died is that grid point's failure, and the others go on."""
    results: list[RunResult] = []
    for future in done:
        task = futures[future]
        try:
            result = future.result()
        except BaseException as exc:
            result = _lost(task, exc)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _lost(task: _Task, exc: BaseException) -> RunResult:
    error = ExecutionError(
        f"the worker running this grid point was lost ({type(exc).__name__}: {exc})",
        kind="runner",
        ename=type(exc).__name__,
        evalue=str(exc),
    )
    return _failed_task(task, error)


def _dask_client(scheduler: str, settings: Settings) -> Any:
    """Connect to the scheduler; refuse a local SQLite store when a worker is on another machine."""
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise UsageError(
            "--scheduler needs dask.distributed", hint="pip install 'dask[distributed]'"
        ) from exc
    try:
        client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT)
    except OSError as exc:
        raise UsageError(
            f"cannot reach the Dask scheduler at {scheduler} ({exc})",
            hint="start one with `dask scheduler` and `dask worker tcp://HOST:8786`, or drop --scheduler",
        ) from None
    if settings.is_local_store:
        workers = client.scheduler_info().get("workers", {})
        local = _local_hosts()
        remote = sorted({_host(addr) for addr in workers} - local)
        if remote:
            client.close()
            raise UsageError(
                f"the tracking store is a local SQLite file ({settings.tracking_uri}); Dask workers on "
                f"{', '.join(remote)} cannot write to it",
                hint="run an MLflow tracking server the workers reach and set MLFLOW_TRACKING_URI=http://HOST:5000 "
                "(a local SQLite store only works when every worker runs on this machine, e.g. a LocalCluster)",
            )
    return client


def _host(address: str) -> str:
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):
        return rest[1 : rest.index("]")]
    return rest.rsplit(":", 1)[0]


def _sweep_dask(
    client: Any, tasks: list[_Task], on_result: Callable[[RunResult], None] | None
) -> list[RunResult]:
    from distributed import as_completed

    futures = {
        client.submit(_run_task, t, pure=False, key=f"nb2prod-run-{i}-{t.parent_run_id}"): t
        for i, t in enumerate(tasks)
    }
    return _gather(as_completed(list(futures)), futures, on_result)


def _failed_task(task: _Task, error: ExecutionError) -> RunResult:
    """The result of a grid point that failed before or outside its notebook run."""
    return RunResult(
        run_id=None,
        experiment=task.experiment,
        status="FAILED",
        notebook=task.notebook_key,
        parameters=task.parameters,
        seconds=0.0,
        executed_path=None,
        preflight=Preflight(None, None),
        error=error,
        parent_run_id=task.parent_run_id,
    )
