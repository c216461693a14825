"""``nb2prod score``: a file scored by a registered model under its service's contract."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


@click.command("score")
@click.argument("ref", metavar="NAME[@alias|/version]")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Predictions: Parquet, or CSV when it ends in .csv (with --scheduler: a directory of parts).",
)
@click.option(
    "--rejects",
    type=click.Path(path_type=Path),
    default=None,
    help="Refused rows with their reason and field (Parquet, or CSV by name).",
)
@click.option(
    "--id-column", default=None, metavar="C", help="Input column copied to the output as the row id."
)
@click.option(
    "--scheduler",
    default=None,
    metavar="tcp://HOST:8786",
    help="Score each Parquet part on this Dask cluster.",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=65_536,
    show_default=True,
    help="Rows read and scored at a time (memory is bounded by it).",
)
@click.option(
    "--bento", is_flag=True, help="Score with the newest Bento of NAME: the version its services answer with."
)
@click.option("--no-log", is_flag=True, help="Do not log the scored rows into the prediction store.")
@click.option(
    "--store",
    default=None,
    metavar="PATH|URL",
    help="Prediction store to log into (default: the served model's own; "
    "postgresql+psycopg://... for a cluster whose workers run elsewhere).",
)
def score_cmd(
    ref: str,
    input_path: Path,
    output: Path,
    rejects: Path | None,
    id_column: str | None,
    scheduler: str | None,
    chunk_rows: int,
    bento: bool,
    no_log: bool,
    store: str | None,
) -> None:
    """Score INPUT (CSV, Parquet, or a directory of Parquet parts) with a registered model.

    NAME alone is NAME@champion, the version production answers with; with --bento, the
    version the newest Bento's services answer with (after promote or rollback). Rows are
    checked against the same contract as the service; refused rows go to --rejects with the
    reason and field the service would answer. Scored rows are logged to the model's
    prediction store as source `batch`, so `nb2prod monitor` and `nb2prod feedback` see them.
    Exit code 1 when rows were refused.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from nb2prod.batch import score

    columns = (
        TextColumn("scoring"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.fields[total_text]} rows"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("score", total=None, total_text="?", speed="")

        def started(model: Any, source: Any) -> None:
            rows = source.rows
            bar.update(task, total=rows, total_text=f"{rows:,}" if rows is not None else "?")

        def progress(scored: int, refused: int) -> None:
            bar.advance(task, scored + refused)
            elapsed = bar.tasks[0].elapsed or 0.0
            done = bar.tasks[0].completed
            bar.update(task, speed=f"{done / elapsed:,.0f} rows/s" if elapsed > 0 else "")

        result = score(
            ref,
            input_path,
            output,
            rejects=rejects,
            id_column=id_column,
            scheduler=scheduler,
            chunk_rows=chunk_rows,
            bento=bento,
            log=not no_log,
            store=store,
            on_progress=progress,
            on_start=started,
        )
    for line in result.summary():
        click.echo(line)
    if result.rejected:
        sys.exit(1)
