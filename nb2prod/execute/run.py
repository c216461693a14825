"""``nb2prod run``: one notebook, executed by papermill in a fresh kernel, as one tracked run.

How a run talks to the capture inside the notebook: the runner opens the MLflow run itself and
starts the kernel with the variables of :mod:`nb2prod.protocol`: the run id (``%nb2prod start``
attaches to that run), deferred registration (models become candidates; the runner registers
them only when every cell succeeded) and strict mode. To keep ``nb2prod run`` close to plain
papermill in wall time, the store round trips happen in a thread while the kernel starts and
runs (on the default local SQLite store without importing mlflow at all:
:mod:`nb2prod.tracking.runstore`); the run id reaches the kernel just before the first cell
that names nb2prod (see :class:`~nb2prod.execute.handover.Gate`).

papermill, mlflow and nbconvert are imported inside functions: ``import nb2prod`` stays light.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import ExecutionError, Nb2ProdError, PreflightError, UsageError
from nb2prod.execute.failure import cell_ids, execution_error, read_cells
from nb2prod.execute.handover import ENGINE_NAME, NEEDS_RUN, Gate, OpenedRun, kernel_env
from nb2prod.execute.parameters import check_parameters, experiment_default, notebook_file
from nb2prod.execute.results import Preflight, RunResult
from nb2prod.tracking import names, runstore
from nb2prod.tracking.runstore import MlflowRunStore, RunStore, SqliteRunStore, open_run_store

if TYPE_CHECKING:
    from nb2prod.capture.environment import EnvironmentSnapshot


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

    baseline = against if against is not None else store.last_finished_run(notebook_key)
    if baseline is None:
        return Preflight(None, None)
    old = store.load_json(baseline, names.ENVIRONMENT_JSON)
    if old is None:
        if against is not None:
            raise UsageError(
                f"run {against} has no recorded environment ({names.ENVIRONMENT_JSON})",
                hint="pass --against a run made by %nb2prod start or nb2prod run",
            )
        return Preflight(baseline, None)
    diff = environment.diff(environment.EnvironmentSnapshot.from_dict(old), current)
    blocking = [c.line() for c in diff.imported_changed]
    if diff.python:
        blocking.insert(0, f"Python {diff.python[0]} → {diff.python[1]}")
    return Preflight(baseline, diff, blocking)


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
    source = notebook_file(notebook)
    params = dict(parameters or {})
    if not params_checked:
        params = check_parameters(source, params)
    settings = settings or load_settings()
    key = notebook_key or str(source)
    exp_name = experiment or experiment_default(source, params) or settings.experiment
    workdir = Path(cwd) if cwd is not None else source.parent

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    papermill = _papermill()
    from nb2prod.tracking import client as tracking

    tracking.check_reachable(settings)
    created: Future[str] = Future()
    opened: Future[OpenedRun] = Future()
    names_nb2prod = any(NEEDS_RUN.search(code) for code in _code_sources(source))

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
        if names_nb2prod and register and _opened_without_mlflow(opened):
            _warm_mlflow(settings)  # the kernel may capture models, which MLflow registers at the end

    if strict:
        open_run()  # --strict decides before the kernel starts.
        opened.result()
    threading.Thread(target=warm, name="nb2prod-open-run", daemon=True).start()

    gate = Gate(created, opened, on_preflight)
    gate.frames_dir = keep_frames
    out_dir = Path(tempfile.mkdtemp(prefix="nb2prod-run-"))
    output = out_dir / source.name
    env = kernel_env(settings, source, exp_name, threads)
    source_ids = cell_ids(source)
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
    error = execution_error(failure, gate, executed, source_ids) if failure is not None else None
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


def _code_sources(source: Path) -> list[str]:
    return [
        "".join(c.get("source", "")) if isinstance(c.get("source"), list) else str(c.get("source", ""))
        for c in read_cells(source)
        if c.get("cell_type") == "code"
    ]


def _papermill() -> Any:
    """papermill, with nb2prod's engine (loaded through its ``papermill.engine`` entry point).

    Raises:
        Nb2ProdError: the engine is not registered (nb2prod's metadata is not installed).
    """
    import papermill
    from papermill.engines import papermill_engines
    from papermill.exceptions import PapermillException

    try:
        papermill_engines.get_engine(ENGINE_NAME)
    except PapermillException:
        raise Nb2ProdError(
            f"papermill has no engine named '{ENGINE_NAME}': nb2prod's entry point is not installed",
            hint="install nb2prod (pip install -e . in a checkout) instead of putting it on PYTHONPATH",
        ) from None
    return papermill


def _opened_without_mlflow(opened: Future[OpenedRun]) -> bool:
    """The run was opened (``opened`` is done) on the SQLite fast path, so mlflow is not loaded yet."""
    return opened.exception() is None and isinstance(opened.result().store, SqliteRunStore)


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
    from nb2prod.capture.notebook import notebook_info

    digest = notebook_info(notebook_path=source)[0]
    tags = {
        names.TAG_KIND: "run",
        names.TAG_NOTEBOOK: key,
        names.TAG_SOURCE_NAME: key,
        names.TAG_SOURCE_TYPE: "NOTEBOOK",
        names.TAG_SOURCE_DIGEST: digest.code_digest if digest else "",
    }
    if link:
        tags[names.TAG_REEXECUTES] = link
    if parent_run_id:
        tags[names.TAG_PARENT] = parent_run_id
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
) -> OpenedRun:
    """Pre-flight check, then the run with its parameters and source; ``created`` gets the run id
    as soon as the run exists. A store failure after that marks the run FAILED before raising."""
    from nb2prod.tracking import client as tracking

    current = current_environment(source)
    with tracking.store_call(settings, what="opening the MLflow run", not_recorded="this re-execution"):
        # The default store (local SQLite, known schema, existing experiment) is written without
        # importing mlflow; anything else goes through MLflow (see nb2prod.tracking.runstore).
        store = open_run_store(settings, exp_name)
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
            runstore.log_json(store, run_id, dict(params), names.PARAMS_ARTIFACT)
            store.log_file(run_id, source, names.SOURCE_ARTIFACT)
            if check.diff is not None:
                runstore.log_json(store, run_id, check.to_dict(), names.PREFLIGHT_ARTIFACT)
        except BaseException:
            with contextlib.suppress(Exception):
                store.terminate(run_id, "FAILED")  # not left RUNNING
            raise
    return OpenedRun(store, run_id, exp_name, check, current)


def _warm_mlflow(settings: Settings) -> None:
    """Import mlflow and start its store while the notebook runs (off the critical path)."""
    with contextlib.suppress(Exception):
        from nb2prod.tracking import client as tracking

        tracking.client(settings)


def _finish(
    run: OpenedRun,
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
        store.set_tags(run_id, {names.TAG_NOTEBOOK: key})
        # The runner's view of the environment, unless %nb2prod start in the kernel recorded its own
        # (which also knows what the cells imported at run time).
        if not store.has_artifact(run_id, names.ENVIRONMENT_JSON):
            runstore.log_json(store, run_id, run.environment.to_dict(), names.ENVIRONMENT_JSON)
        if output is not None:
            store.log_file(run_id, output, names.EXECUTED_ARTIFACT)
            html = _html(executed)
            if html is not None:
                store.log_text(run_id, html, names.HTML_ARTIFACT)
            local_copy = _keep_local(settings, run_id, output)
        if error is None and register and store.has_artifacts_under(run_id, names.CANDIDATES_DIR):
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
            store.set_tags(
                run_id, {names.TAG_FAILURE: error.message[:5000], names.TAG_FAILURE_KIND: error.kind}
            )
            store.terminate(run_id, "FAILED")
        else:
            store.terminate(run_id, "FINISHED")
        metrics, tags = store.outcome(run_id)
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
        data_digests=names.data_digests(tags),
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
