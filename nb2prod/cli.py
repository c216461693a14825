"""``nb2prod`` on the command line: parses, calls the core, prints. Only this module imports click."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from nb2prod._version import __version__
from nb2prod.exceptions import Nb2ProdError, UsageError


class _Group(click.Group):
    """Shows an nb2prod error as one message and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            result = super().invoke(ctx)
        except Nb2ProdError as exc:
            click.echo(f"nb2prod: error: {exc}", err=True)
            _exit_now(ctx, 2)
            sys.exit(2)
        except SystemExit as exc:
            _exit_now(ctx, exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1)
            raise
        _exit_now(ctx, 0)
        return result


def _exit_now(ctx: click.Context, code: int) -> None:
    """End run/reproduce/sweep at once, once everything is recorded and printed.

    They load mlflow, SQLAlchemy, nbconvert and pandas (~2,800 modules); the interpreter's
    teardown of them took ~2 s here, after the work was done. Only as the nb2prod process itself
    (console script or ``python -m nb2prod``), never inside another program such as a test runner.
    """
    if ctx.invoked_subcommand not in {"run", "reproduce", "sweep"}:
        return
    if Path(sys.argv[0]).name not in {"nb2prod", "__main__.py"}:
        return
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nb2prod")
def main() -> None:
    """From a Jupyter notebook to a production model service.

    Exit codes: 0 success, 1 the job ran and found a problem, 2 an error (bad input,
    unreachable store); run/reproduce/sweep list their own codes for a failed notebook.
    """


@main.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Project folder to use (default: a new temp folder).",
)
def demo(folder: Path | None) -> None:
    """Run the example notebook in a temp project and show what nb2prod captured."""
    from rich.console import Console
    from rich.table import Table

    from nb2prod.demo import run_demo

    console = Console()
    with console.status("executing the example notebook in a fresh kernel..."):
        report = run_demo(folder)
    env = report.environment
    console.print(f"[bold]nb2prod demo[/bold]: notebook ran in {report.seconds:.1f} s in {report.project}")
    console.print(f"MLflow run {report.run_id} in {report.tracking_uri}")

    table = Table(title="Environment", show_header=False)
    table.add_row("python", f"{env['python_implementation']} {env['python_version']} ({env['system']})")
    table.add_row("packages", f"{len(env['distributions'])} installed, {len(env['imported'])} imported")
    table.add_row("imported", ", ".join(f"{k}=={v}" for k, v in sorted(env["imported"].items())))
    table.add_row("notebook", f"{env['notebook']['path']} ({env['notebook']['code_digest'][:23]}...)")
    table.add_row("env digest", env["digest"])
    console.print(table)

    data = Table(title="Datasets")
    for column in ("name", "role", "digest"):
        data.add_column(column)
    for item in report.datasets:
        data.add_row(item["name"], item["context"], item["digest"])
    console.print(data)

    models = Table(title="Registered models")
    for column in ("model", "version", "run", "data digests"):
        models.add_column(column)
    for mv in report.model_versions:
        digests = "\n".join(f"{k}: {v}" for k, v in mv["tags"].items() if k.startswith("nb2prod.data."))
        models.add_row(mv["name"], str(mv["version"]), mv["tags"].get("nb2prod.run_id", ""), digests)
    console.print(models)
    console.print(f"Executed notebook: {report.notebook}")

    from nb2prod.demo import run_rerun_demo

    with console.status("nb2prod run with C=0.5, then nb2prod reproduce of the first run..."):
        again = run_rerun_demo(report)
    rerun = again.rerun
    console.print(
        f"[bold]nb2prod run[/bold] -p C 0.5: run {rerun.run_id} {rerun.status}, "
        + ", ".join(
            f"{k}={_format_value(v)}" for k, v in sorted(rerun.metrics.items()) if k.startswith("test_")
        )
        + "".join(f", registered {n} version {v}" for n, v in rerun.registered.items())
    )
    verdict = again.reproduction
    checks = Table(title=f"nb2prod reproduce {report.run_id}")
    for column in ("check", "name", "ok", "detail"):
        checks.add_column(column)
    for finding in verdict.findings:
        checks.add_row(finding.check, finding.name, "yes" if finding.ok else "NO", finding.detail)
    console.print(checks)
    word = "REPRODUCED" if verdict.reproduced else "NOT REPRODUCED"
    console.print(
        f"[bold]{word}[/bold]: run {verdict.run.run_id} re-executed the notebook of {report.run_id}"
    )
    _demo_serve(console, report.project)


def _demo_serve(console: Any, project: Path) -> None:
    """The demo's last step: export the model, serve it, call it."""
    from rich.table import Table

    from nb2prod.demo import serve_demo

    with console.status("promote, retrain (refused), export, serve, call, drift, rollback..."):
        served = serve_demo(project)
    refused = served.refused
    console.print(f"[bold]nb2prod retrain[/bold] -p C 0.0001: {refused.action.upper()}: {refused.reason}")
    console.print(f"Bento [bold]{served.tag}[/bold] built; source in {served.source_dir}")
    table = Table(title=f"POST {served.url}/predict (server stopped again)")
    for column in ("row", "served", "MLflow model", "P(benign)", "request id"):
        table.add_column(column)
    for i, (got, want) in enumerate(zip(served.predictions, served.expected, strict=True)):
        proba = got.get("probabilities", {}).get("1", 0.0)
        table.add_row(str(i), str(got["prediction"]), str(want), f"{proba:.3f}", got["request_id"][-16:])
    console.print(table)
    status, body = served.bad_request
    console.print(f"a bad request got {status}: {body.get('message')}")
    meta = served.metadata
    console.print(f"/metadata: model {meta['model']} v{meta['model_version']}, run {meta['run_id']}")
    console.print(f"/drift: {served.drift.get('status')} ({served.drift.get('window_rows')} rows logged)")
    from nb2prod.monitoring.report import render_text

    console.print(
        f"[bold]nb2prod monitor[/bold] after 200 rows of the dataset (and their labels, "
        f"through /feedback): {served.quiet.status}"
    )
    console.print("[bold]nb2prod monitor[/bold] after 400 rows with 'mean radius' x1.5, 'mean area' x2:")
    console.print(render_text(served.drifted), markup=False, highlight=False, soft_wrap=True)
    back = served.rollback
    event = back.event
    took = f"{served.switch_seconds:.1f} s" if served.switch_seconds is not None else "NOT within 10 s"
    console.print(
        f"[bold]nb2prod rollback[/bold]: champion {event.from_version} -> {event.to_version}; "
        f"the live service answered from v{back.active} after {took}, no rebuild, no restart"
    )


@main.command("export")
@click.argument("ref", metavar="NAME[@alias|/version]")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the Bento as a portable archive (FILE.bento).",
)
@click.option(
    "--with", "with_versions", multiple=True, metavar="VERSION", help="Also carry this version (repeat)."
)
@click.option(
    "--canary",
    nargs=2,
    type=(str, click.FloatRange(0, 100, min_open=True)),
    default=None,
    metavar="VERSION PERCENT",
    help="Start the service sending PERCENT of the rows to VERSION.",
)
def export_cmd(
    ref: str, output: Path | None, with_versions: tuple[str, ...], canary: tuple[str, float] | None
) -> None:
    """Write bentos/NAME/ and build the immutable Bento NAME:<version> of a registered model.

    The Bento also carries the version the exported one replaced as champion (for rollback
    and fallback without a rebuild) and the challenger, if one is set.
    """
    from nb2prod.export import export_model

    result = export_model(ref, output=output, with_versions=with_versions, canary=canary)
    state = "built" if result.built else "already built (no change)"
    click.echo(f"{result.tag} {state} in {result.bentoml_home} ({result.seconds:.1f} s)")
    click.echo(f"model {result.name} version {result.model_version}; service source in {result.source_dir}")
    if len(result.versions) > 1:
        fallback = f"; fallback v{result.fallback}" if result.fallback else ""
        click.echo(f"carries versions {', '.join(result.versions)}{fallback}")
    if result.archive is not None:
        click.echo(f"archive: {result.archive}")
    click.echo(f"serve it: nb2prod serve {result.name}")


@main.command("serve")
@click.argument("name")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=3000, show_default=True, help="Port to listen on."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
def serve_cmd(name: str, port: int, host: str) -> None:
    """Run `bentoml serve` on the newest built Bento of NAME (Ctrl+C stops it)."""
    import os

    from nb2prod.export import serve_command

    cmd = serve_command(name, port=port, host=host)
    click.echo(f"serving {cmd.tag} on http://{host}:{port} (predictions logged to {cmd.prediction_store})")
    sys.stdout.flush()
    os.execvpe(cmd.argv[0], cmd.argv, cmd.env)


# --------------------------------------------------------------------------- run, reproduce, sweep

_FAILURE_EXIT = {"cell": 3, "dead_kernel": 4, "timeout": 5, "runner": 3, "interrupted": 130}

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


def _echo_preflight(check: object) -> None:
    from nb2prod.execute import Preflight

    assert isinstance(check, Preflight)
    if check.against_run_id is None:
        click.echo("\npre-flight: no earlier finished run of this notebook to compare with", err=True)
        return
    if check.diff is None:
        click.echo(f"\npre-flight: run {check.against_run_id} recorded no environment", err=True)
        return
    lines = check.diff.summary()
    if not lines:
        click.echo(f"\npre-flight: environment identical to run {check.against_run_id}", err=True)
        return
    click.echo(
        f"\npre-flight: environment vs run {check.against_run_id} ({len(lines)} differences)", err=True
    )
    shown = [line for line in lines if "[imported]" in line or line.startswith(("Python", "git"))]
    shown += [line for line in lines if line not in shown][: max(0, 8 - len(shown))]
    for line in shown:
        click.echo(f"  {line}", err=True)
    if len(lines) > len(shown):
        click.echo(f"  ... and {len(lines) - len(shown)} more (nb2prod/preflight_diff.json)", err=True)


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _echo_run(result: object) -> None:
    from nb2prod.execute import RunResult

    assert isinstance(result, RunResult)
    click.echo(
        f"run {result.run_id} {result.status} in {result.seconds:.1f} s (experiment {result.experiment})"
    )
    if result.parameters:
        click.echo("  parameters: " + ", ".join(f"{k}={v!r}" for k, v in result.parameters.items()))
    if result.metrics:
        click.echo(
            "  metrics: " + ", ".join(f"{k}={_format_value(v)}" for k, v in sorted(result.metrics.items()))
        )
    for name, digest in sorted(result.data_digests.items()):
        click.echo(f"  data {name}: {digest}")
    for name, version in sorted(result.registered.items()):
        click.echo(f"  registered: {name} version {version}")
    if result.preflight.against_run_id:
        click.echo(f"  re-executes: {result.preflight.against_run_id}")
    if result.executed_path:
        click.echo(f"  executed notebook: {result.executed_path}")


def _collect_params(
    params: tuple[tuple[str, str], ...], params_file: Path | None
) -> tuple[dict[str, object], list[str]]:
    from nb2prod.execute import load_params_file

    values: dict[str, object] = dict(load_params_file(params_file)) if params_file else {}
    texts = []
    for name, value in params:
        values[name] = value
        texts.append(name)
    return values, texts


_notebook_arg = click.argument("notebook", type=click.Path(dir_okay=False, path_type=Path))
_params_opt = click.option(
    "-p", "--param", "params", nargs=2, multiple=True, metavar="NAME VALUE", help="A parameter (repeat)."
)
_file_opt = click.option(
    "-f",
    "--params-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="YAML file of parameters (-p wins).",
)
_timeout_opt = click.option("--timeout", type=click.IntRange(min=1), help="Seconds a single cell may run.")
_kernel_opt = click.option("--kernel", help="Kernel name (default: the notebook's).")
_experiment_opt = click.option(
    "--experiment", help="MLflow experiment (default: the notebook's 'experiment' parameter, else settings)."
)


@main.command(epilog=_RUN_EXIT_CODES)
@_notebook_arg
@_params_opt
@_file_opt
@_experiment_opt
@_timeout_opt
@_kernel_opt
@click.option(
    "--against", metavar="RUN_ID", help="Compare the environment with this run (default: the last one)."
)
@click.option("--strict", is_flag=True, help="Refuse to run when a package the notebook imported differs.")
@click.option("--no-progress", is_flag=True, help="No per-cell progress bar.")
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
    from nb2prod.execute import check_parameters, run_notebook

    values, texts = _collect_params(params, params_file)
    typed = check_parameters(notebook, values, from_text=texts)
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
        click.echo("nb2prod: interrupted before the run was recorded", err=True)
        sys.exit(130)
    _echo_run(result)
    if result.error is not None:
        extra = f"\n  run {result.run_id} marked FAILED; nothing registered"
        if result.executed_path:
            extra += f"; partial executed notebook: {result.executed_path}"
        click.echo(f"nb2prod: error: {result.error}{extra}", err=True)
        sys.exit(_FAILURE_EXIT.get(result.error.kind, 3))


_REPRODUCE_EXIT_CODES = """\b
Exit codes:
  0    reproduced: same imported packages and Python, notebook, data digests,
       metrics within --rtol, and model predictions on the recorded input example
       and on the test/reference data the notebook tracked
  1    not reproduced (the reasons are listed)
  2    nothing ran: unknown run, no notebook snapshot, store unreachable
  3-5  the re-execution failed (as for nb2prod run); 130 interrupted"""


@main.command(epilog=_REPRODUCE_EXIT_CODES)
@click.argument("run_id")
@click.option(
    "--rtol",
    type=float,
    default=1e-7,
    show_default=True,
    help="Relative tolerance for metrics and predictions.",
)
@_timeout_opt
@_kernel_opt
@click.option("--no-progress", is_flag=True, help="No per-cell progress bar.")
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
        click.echo("nb2prod: interrupted before the run was recorded", err=True)
        sys.exit(130)
    _echo_run(verdict.run)
    for finding in verdict.findings:
        mark = "ok  " if finding.ok else "DIFF"
        values = ""
        if finding.original is not None or finding.new is not None:
            values = (
                f" {finding.original} -> {finding.new}"
                if finding.original != finding.new
                else f" {finding.new}"
            )
        note = f" ({finding.detail})" if finding.detail else ""
        click.echo(f"  {mark} {finding.check:<11} {finding.name}{values}{note}")
    if verdict.run.error is not None:
        click.echo(f"nb2prod: error: {verdict.run.error}", err=True)
        sys.exit(_FAILURE_EXIT.get(verdict.run.error.kind, 3))
    if verdict.reproduced:
        click.echo(f"REPRODUCED: run {verdict.run.run_id} reproduces {run_id}")
        return
    click.echo(
        f"NOT REPRODUCED: {len(verdict.reasons)} difference(s) between {run_id} and {verdict.run.run_id}"
    )
    sys.exit(1)


_SWEEP_EXIT_CODES = """\b
Exit codes:
  0    every run of the grid finished
  1    some runs failed (listed; the others ran to the end)
  2    nothing ran: bad parameter, scheduler unreachable, SQLite store with remote workers"""


@main.command(epilog=_SWEEP_EXIT_CODES)
@_notebook_arg
@click.option(
    "-p", "--param", "params", nargs=2, multiple=True, metavar="NAME V1,V2,...", help="A grid axis (repeat)."
)
@_file_opt
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
@_experiment_opt
@_timeout_opt
@_kernel_opt
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

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
    progress = Progress(
        TextColumn("sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
    )
    state: dict[str, object] = {}

    def started(total: int, parent: str) -> None:
        state["task"] = progress.add_task("runs", total=total, note=f"parent run {parent}")
        progress.start()

    def finished(result: object) -> None:
        from nb2prod.execute import RunResult

        assert isinstance(result, RunResult)
        note = "ok" if result.ok else f"FAILED {result.parameters}"
        progress.update(state["task"], advance=1, note=note)  # type: ignore[arg-type]

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
            on_start=started,
            on_result=finished,
        )
    finally:
        progress.stop()
    out = Console()
    metric = summary.rank_by
    title = f"sweep {summary.parent_run_id}: {len(summary.runs)} runs on {summary.where} in {summary.seconds:.1f} s"
    table = Table(title=title)
    table.add_column("#")
    for name in grid:
        table.add_column(name)
    table.add_column(
        f"{metric} ({'lower' if summary.ascending else 'higher'} is better)" if metric else "metric"
    )
    table.add_column("status")
    table.add_column("run")
    for rank_no, result in enumerate(summary.runs, 1):
        value = _format_value(result.metrics[metric]) if metric and metric in result.metrics else "-"
        where = result.error.cell_index if result.error is not None else None
        status = result.status if result.ok else "FAILED" + (f" (cell {where})" if where is not None else "")
        table.add_row(
            str(rank_no) if result.ok else "-",
            *[_format_value(result.parameters.get(n)) for n in grid],
            value,
            status,
            result.run_id or "-",
        )
    out.print(table)
    for result in summary.failed:
        params = ", ".join(f"{k}={_format_value(v)}" for k, v in result.parameters.items() if k in grid)
        click.echo(f"FAILED {params}: {result.error.message if result.error else 'unknown error'}")
    if summary.failed:
        sys.exit(1)


# --------------------------------------------------------------------------- close the loop


def _echo_switch(switch: Any) -> None:
    event = switch.event
    if event is not None:
        moved = f"{event.from_version or '-'} -> {event.to_version or '-'}"
        click.echo(f"{switch.name}@{event.alias}: {moved} ({event.reason}; history #{event.seq})")
    canary = switch.canary
    split = f", canary v{canary['version']} at {canary['percent']:g}%" if canary else ""
    click.echo(f"active: v{switch.active}{split}")
    if switch.bento is None:
        click.echo(f"no Bento of {switch.name} yet: nb2prod export {switch.name}@champion")
    elif switch.follows:
        click.echo(
            f"{switch.bento} carries v{', v'.join(switch.carried)}: a running service follows within seconds"
        )
    else:
        click.echo(
            f"{switch.bento} carries only v{', v'.join(switch.carried)}: export and deploy the new champion "
            f"(nb2prod export {switch.name}@champion), a running service keeps what it has"
        )


@main.command()
@click.argument("name")
@click.argument("version")
@click.option(
    "--canary",
    type=click.FloatRange(0, 100),
    default=None,
    help="Send this percent of the rows to VERSION instead of making it the champion (0 stops a canary).",
)
def promote(name: str, version: str, canary: float | None) -> None:
    """Make VERSION the champion of NAME (alias history kept); a running service follows.

    With --canary, VERSION becomes the challenger and gets that share of the traffic.
    """
    from nb2prod.lifecycle import promote as promote_core

    _echo_switch(promote_core(name, version, canary=canary))


@main.command()
@click.argument("name")
@click.option("--to", "to", metavar="VERSION", help="Roll back to this version (default: the one replaced).")
def rollback(name: str, to: str | None) -> None:
    """Give the champion of NAME back to the version it replaced; a running service follows."""
    from nb2prod.lifecycle import rollback as rollback_core

    _echo_switch(rollback_core(name, to=to))


@main.command("history")
@click.argument("name")
def history_cmd(name: str) -> None:
    """Every move of NAME's aliases (champion, challenger): when, from, to, why."""
    from nb2prod.lifecycle import history

    events = history(name)
    if not events:
        click.echo(f"no alias moves recorded for {name}")
    for e in events:
        click.echo(
            f"#{e.seq:<4} {e.at}  {e.alias:<10} {e.from_version or '-':>4} -> {e.to_version or '-':<4} "
            f"{e.reason} ({e.actor})"
        )


@main.command()
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--id-column", default="request_id", show_default=True, help="Column of request ids.")
@click.option("--label-column", default=None, help="Column of labels (default: label, the target, or y).")
def feedback(name: str, file: Path, id_column: str, label_column: str | None) -> None:
    """Import ground truth for served predictions from FILE (CSV or Parquet)."""
    from nb2prod.lifecycle import import_feedback

    result = import_feedback(name, file, id_column=id_column, label_column=label_column)
    click.echo(f"{result.stored} labels stored in {result.store}; {result.matched} match a logged prediction")
    if result.unmatched_examples:
        click.echo(
            f"{result.stored - result.matched} have no logged prediction yet "
            f"(e.g. {', '.join(result.unmatched_examples)}): kept, joined when it arrives"
        )


_MONITOR_EXIT_CODES = """\b
Exit codes:
  0    no drift (or too few rows to tell; the report says so)
  1    drift: a feature or the predictions moved beyond the thresholds
  2    error: no Bento of NAME, unreadable store, bad --since"""


@main.command(epilog=_MONITOR_EXIT_CODES)
@click.argument("name")
@click.option(
    "--since", metavar="T", help="ISO-8601 time (UTC unless it says otherwise) or a duration: 30m, 2h, 7d."
)
@click.option("--until", metavar="T", help="End of the window, as --since.")
@click.option(
    "--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), help="Write an HTML report."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--psi-threshold", type=float, default=None, help="PSI above which a feature drifted.")
def monitor(
    name: str,
    since: str | None,
    until: str | None,
    html_path: Path | None,
    as_json: bool,
    psi_threshold: float | None,
) -> None:
    """Drift, prediction drift, live quality from feedback and refused inputs of NAME's service."""
    import json

    from nb2prod.lifecycle import monitor as monitor_core
    from nb2prod.monitoring.report import render_text

    report = monitor_core(name, since=since, until=until, psi_threshold=psi_threshold)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        click.echo(render_text(report))
    if html_path is not None:
        from nb2prod.monitoring.html import render_html

        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(report), encoding="utf-8")
        click.echo(f"HTML report: {html_path}")
    sys.exit(1 if report.status == "drift" else 0)


_RETRAIN_EXIT_CODES = """\b
Exit codes:
  0    promoted (or canary started), or --if-drift found no drift
  1    the challenger was not better by the margin: refused, champion unchanged
  2    nothing decided: no champion rows to score, unknown model, store unreachable
  3-5  the notebook failed (as for nb2prod run): nothing registered; 130 interrupted"""


@main.command(epilog=_RETRAIN_EXIT_CODES)
@click.argument("name")
@click.option("--notebook", "notebook", required=True, type=click.Path(dir_okay=False, path_type=Path))
@_params_opt
@_file_opt
@_timeout_opt
@_kernel_opt
@click.option("--if-drift", is_flag=True, help="Retrain only when the service's traffic drifted.")
@click.option("--since", metavar="T", help="With --if-drift: look at traffic since T (e.g. 24h).")
@click.option(
    "--min-improvement", type=float, default=0.0, show_default=True, help="Margin the challenger must win by."
)
@click.option("--metric", help="accuracy, f1, roc_auc, r2, rmse or mae (default: accuracy / rmse).")
@click.option("--holdout", type=click.Path(dir_okay=False, path_type=Path), help="Score on this file.")
@click.option("--target", help="Label column of --holdout.")
@click.option("--on-feedback", is_flag=True, help="Score on served rows that got labels.")
@click.option("--canary", type=click.FloatRange(0, 100, min_open=True), help="Start the winner as a canary.")
@click.option("--no-export", is_flag=True, help="Do not re-export the Bento after a promotion.")
@click.option("--no-progress", is_flag=True, help="No per-cell progress bar.")
def retrain(
    name: str,
    notebook: Path,
    params: tuple[tuple[str, str], ...],
    params_file: Path | None,
    timeout: int | None,
    kernel: str | None,
    if_drift: bool,
    since: str | None,
    min_improvement: float,
    metric: str | None,
    holdout: Path | None,
    target: str | None,
    on_feedback: bool,
    canary: float | None,
    no_export: bool,
    no_progress: bool,
) -> None:
    """Re-run NOTEBOOK, score challenger and champion on the same rows, promote only if better."""
    from nb2prod.exceptions import ExecutionError
    from nb2prod.execute import check_parameters
    from nb2prod.lifecycle import retrain as retrain_core

    values, texts = _collect_params(params, params_file)
    typed = check_parameters(notebook, values, from_text=texts)
    try:
        decision = retrain_core(
            name,
            notebook,
            typed,
            if_drift=if_drift,
            since=since,
            min_improvement=min_improvement,
            metric=metric,
            holdout=holdout,
            target=target,
            on_feedback=on_feedback,
            canary=canary,
            export=not no_export,
            timeout=timeout,
            kernel=kernel,
            progress=not no_progress,
            params_checked=True,
        )
    except ExecutionError as exc:
        click.echo(f"nb2prod: error: {exc}\n  nothing registered; the champion is unchanged", err=True)
        sys.exit(_FAILURE_EXIT.get(exc.kind, 3))
    except KeyboardInterrupt:
        click.echo("nb2prod: interrupted; the champion is unchanged", err=True)
        sys.exit(130)
    click.echo(f"{decision.action.upper()}: {decision.reason}")
    if decision.run_id:
        click.echo(f"run {decision.run_id}; challenger {name}/{decision.challenger}")
    if decision.switch is not None:
        _echo_switch(decision.switch)
    if decision.bento:
        click.echo(f"exported {decision.bento}: deploy it with nb2prod serve {name}")
    sys.exit(1 if decision.action == "refused" else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
