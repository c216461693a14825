"""``nb2prod demo``: the whole loop on a bundled dataset, in a temp project."""

from __future__ import annotations

from pathlib import Path

import click

from nb2prod.render import terminal


@click.command()
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

    from nb2prod.demo import run_demo, run_rerun_demo, serve_demo

    console = Console()
    with console.status("executing the example notebook in a fresh kernel..."):
        report = run_demo(folder)
    terminal.print_demo_capture(console, report)
    with console.status("nb2prod run with C=0.5, then nb2prod reproduce of the first run..."):
        again = run_rerun_demo(report)
    terminal.print_demo_rerun(console, report, again)
    with console.status("promote, retrain (refused), export, serve, call, drift, rollback..."):
        served = serve_demo(report.project)
    terminal.print_demo_serve(console, served)
