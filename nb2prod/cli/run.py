"""``nb2prod run``, ``reproduce`` and ``sweep``: re-execution of notebooks as tracked runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from nb2prod.cli.options import (
    FAILURE_EXIT,
    echo_lines,
    experiment_opt,
    file_opt,
    kernel_opt,
    no_progress_opt,
    notebook_arg,
    params_opt,
    timeout_opt,
    typed_params,
)
from nb2prod.exceptions import UsageError
from nb2prod.render import terminal

if TYPE_CHECKING:
    from nb2prod.execute import Preflight

_RUN_EXIT_CODES = """\b
Exit codes:
  0    the notebook ran to the end; its models were registered
  2    nothing ran: bad parameter, unknown run, --strict refused, store unreachable
  3    a cell raised (SystemExit with a non-zero code included)
  4    the kernel died (os._exit, out of memory, a native crash)
  5    a cell ran past --timeout
  130  interrupted (Ctrl-C)
On 3, 4, 5 and 130 the MLflow run is marked FAILED, the partial executed notebook is
kept as its artifact, and no model version is registered."""

_REPRODUCE_EXIT_CODES = """\b
Exit codes:
  0    reproduced: same imported packages and Python, notebook, data digests,
       metrics within --rtol, and model predictions on the recorded input example
       and on the test/reference data the notebook tracked
  1    not reproduced (the reasons are listed)
  2    nothing ran: unknown run, no notebook snapshot, store unreachable
  3-5  the re-execution failed (as for nb2prod run); 130 interrupted"""

_SWEEP_EXIT_CODES = """\b
Exit codes:
  0    every run of the grid finished
  1    some runs failed (listed; the others ran to the end)
  2    nothing ran: bad parameter, scheduler unreachable, SQLite store with remote workers"""


def _echo_preflight(check: Preflight) -> None:
    echo_lines(terminal.preflight_lines(check), err=True)


def _interrupted() -> NoReturn:
    click.echo("nb2prod: interrupted before the run was recorded", err=True)
    sys.exit(130)


@click.command(epilog=_RUN_EXIT_CODES)
@notebook_arg
@params_opt
@file_opt
@experiment_opt
@timeout_opt
@kernel_opt
@click.option(
    "--against", metavar="RUN_ID", help="Compare the environment with this run (default: the last one)."
)
@click.option("--strict", is_flag=True, help="Refuse to run when a package the notebook imported differs.")
@no_progress_opt
def run(
    notebook: Path,
    params: tuple[tuple[str, str], ...],
    params_file: Path | None,
    experiment: str | None,
    timeout: int | None,
    kernel: str | None,
    against: str | None,
    strict: bool,
    no_progress: bool,
) -> None:
    """Execute NOTEBOOK with papermill in a fresh kernel as a tracked MLflow run.

    Parameters are checked against the notebook's 'parameters' cell and typed like its
    defaults before anything runs.
    """
    from nb2prod.execute import run_notebook

    typed = typed_params(notebook, params, params_file)
    try:
        result = run_notebook(
            notebook,
            typed,
            experiment=experiment,
            timeout=timeout,
            kernel=kernel,
            against=against,
            strict=strict,
            progress=not no_progress,
            on_preflight=_echo_preflight,
            params_checked=True,
        )
    except KeyboardInterrupt:
        _interrupted()
    echo_lines(terminal.run_lines(result))
    if result.error is not None:
        click.echo(terminal.run_failure(result), err=True)
        sys.exit(FAILURE_EXIT.get(result.error.kind, 3))


@click.command(epilog=_REPRODUCE_EXIT_CODES)
@click.argument("run_id")
@click.option(
    "--rtol",
    type=float,
    default=1e-7,
    show_default=True,
    help="Relative tolerance for metrics and predictions.",
)
@timeout_opt
@kernel_opt
@no_progress_opt
def reproduce(run_id: str, rtol: float, timeout: int | None, kernel: str | None, no_progress: bool) -> None:
    """Re-run the notebook snapshot of RUN_ID with its parameters and say whether it reproduced."""
    from nb2prod.execute import reproduce as reproduce_run

    try:
        verdict = reproduce_run(
            run_id,
            rtol=rtol,
            timeout=timeout,
            kernel=kernel,
            progress=not no_progress,
            on_preflight=_echo_preflight,
        )
    except KeyboardInterrupt:
        _interrupted()
    echo_lines(terminal.run_lines(verdict.run))
    echo_lines(terminal.finding_lines(verdict))
    if verdict.run.error is not None:
        click.echo(f"nb2prod: error: {verdict.run.error}", err=True)
        sys.exit(FAILURE_EXIT.get(verdict.run.error.kind, 3))
    click.echo(terminal.verdict_line(verdict, run_id))
    if not verdict.reproduced:
        sys.exit(1)


@click.command(epilog=_SWEEP_EXIT_CODES)
@notebook_arg
@click.option(
    "-p", "--param", "params", nargs=2, multiple=True, metavar="NAME V1,V2,...", help="A grid axis (repeat)."
)
@file_opt
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    help="Local worker processes (default: the number of cores); each kernel's BLAS/OpenMP "
    "threads are capped at cores / jobs unless OMP_NUM_THREADS etc. are set.",
)
@click.option(
    "--scheduler", metavar="tcp://HOST:8786", help="Run each grid point as a task on this Dask cluster."
)
@click.option(
    "--rank-by", metavar="METRIC", help="Metric to rank by (default: the first common test_* metric)."
)
@click.option(
    "--ascending/--descending", default=None, help="Lower/higher is better (default: from the name)."
)
@experiment_opt
@timeout_opt
@kernel_opt
def sweep(
    notebook: Path,
    params: tuple[tuple[str, str], ...],
    params_file: Path | None,
    jobs: int | None,
    scheduler: str | None,
    rank_by: str | None,
    ascending: bool | None,
    experiment: str | None,
    timeout: int | None,
    kernel: str | None,
) -> None:
    """Run the grid of parameters over NOTEBOOK as child runs of one parent run.

    With --scheduler the runs write to the same MLflow store from the Dask workers: use a
    tracking server they reach. A local SQLite store only works when every worker runs on
    this machine (a LocalCluster); nb2prod refuses it when a worker is elsewhere.
    """
    from rich.console import Console

    from nb2prod.execute import load_params_file
    from nb2prod.execute import sweep as run_sweep

    if not params:
        raise UsageError("give at least one grid axis", hint="e.g. -p C 0.1,1,10 -p penalty l1,l2")
    fixed = load_params_file(params_file) if params_file else {}
    grid = dict(params)
    console = Console(stderr=True)
    if scheduler:
        from nb2prod.config import load_settings

        settings = load_settings()
        if settings.is_local_store:
            console.print(
                f"note: the tracking store is a local SQLite file ({settings.tracking_uri}). Dask workers on "
                "this machine (a LocalCluster) can write to it; workers on other machines cannot: for a real "
                "cluster set MLFLOW_TRACKING_URI to an MLflow server they reach."
            )
    progress = terminal.SweepProgress(console)
    try:
        summary = run_sweep(
            notebook,
            grid,
            fixed=fixed,
            jobs=jobs,
            scheduler=scheduler,
            rank_by=rank_by,
            ascending=ascending,
            experiment=experiment,
            timeout=timeout,
            kernel=kernel,
            on_start=progress.started,
            on_result=progress.finished,
        )
    finally:
        progress.stop()
    Console().print(terminal.sweep_table(summary, list(grid)))
    echo_lines(terminal.sweep_failure_lines(summary, list(grid)))
    if summary.failed:
        sys.exit(1)
