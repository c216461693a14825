"""``nb2prod sweep``: a grid of runs under one parent run, on local processes or a Dask cluster.

The grid is checked against the notebook's ``parameters`` cell before anything runs; each grid
point is one :func:`~nb2prod.execute.run.run_notebook` in a worker (a process forked from a
fork server that has papermill, mlflow and nbconvert loaded, or a Dask task that carries the
notebook with it), and the finished runs are ranked by one metric
(:func:`nb2prod.metrics.lower_is_better` says which way).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import ExecutionError, Nb2ProdError, ParameterError, UsageError
from nb2prod.execute.parameters import check_parameters, experiment_default, notebook_file
from nb2prod.execute.results import Preflight, RunResult, SweepResult
from nb2prod.execute.run import run_notebook
from nb2prod.metrics import lower_is_better
from nb2prod.tracking import names, runstore
from nb2prod.tracking.runstore import MlflowRunStore, open_run_store

if TYPE_CHECKING:
    from mlflow import MlflowClient

DASK_CONNECT_TIMEOUT = 10
"""Seconds to wait for a Dask scheduler before giving up."""

# What a local worker imports before it is forked (see _worker_context): this module (and with
# it the runner), papermill (which loads nb2prod's engine through its entry point), mlflow and
# nbconvert. nb2prod.execute.engine must not come before papermill: papermill imports it.
_PRELOAD = ["nb2prod.execute.sweep", "papermill", "mlflow", "nbconvert"]


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
    asc = lower_is_better(metric) if (ascending is None and metric) else bool(ascending)
    scored = [r for r in runs if r.ok and metric in r.metrics]
    scored.sort(key=lambda r: r.metrics[metric] if asc else -r.metrics[metric])  # type: ignore[index]
    rest = [r for r in runs if r.ok and r not in scored]
    failed = [r for r in runs if not r.ok]
    return scored + rest + failed, asc


def _local_hosts() -> set[str]:
    hosts = {"127.0.0.1", "localhost", "::1", socket.gethostname()}
    with contextlib.suppress(OSError):
        hosts.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None))
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

    source = notebook_file(notebook)
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
    exp_name = experiment or experiment_default(source, points[0]) or settings.experiment
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
        store = open_run_store(settings, exp_name)
        client_ready: Future[MlflowClient] = Future()
        if isinstance(store, MlflowRunStore):
            client_ready.set_result(store.client)
        else:
            threading.Thread(
                target=_load_client, args=(settings, client_ready), name="nb2prod-mlflow", daemon=True
            ).start()
        # Not tagged nb2prod.notebook: the parent ran no notebook, so it is never "the last run" of one.
        parent_id = store.create_run(
            {
                names.TAG_KIND: "sweep",
                names.TAG_SWEEP_NOTEBOOK: str(source),
                names.TAG_SOURCE_NAME: str(source),
            }
        )
        runstore.log_json(
            store, parent_id, {"grid": parsed, "fixed": typed_fixed, "points": points}, names.SWEEP_ARTIFACT
        )
        store.log_file(parent_id, source, names.SOURCE_ARTIFACT)
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
            names.SWEEP_ARTIFACT,
        )
        best = summary.best
        if best is not None and metric is not None:
            store.set_tags(parent_id, {names.TAG_SWEEP_BEST_RUN: best.run_id or ""})
            client_ready.result().log_metric(parent_id, f"best_{metric}", best.metrics[metric])
        store.set_tags(parent_id, {names.TAG_SWEEP_FAILED: str(len(summary.failed))})
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

        context.set_forkserver_preload(_PRELOAD)
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
