"""``nb2prod`` on the command line: parses, calls the core, prints. Only this module imports click."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from nb2prod import __version__
from nb2prod.exceptions import Nb2ProdError


class _Group(click.Group):
    """Shows an nb2prod error as one message and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except Nb2ProdError as exc:
            click.echo(f"nb2prod: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nb2prod")
def main() -> None:
    """From a Jupyter notebook to a production model service.

    Exit codes: 0 success, 1 the job ran and found a problem, 2 an error (bad input,
    failed notebook, unreachable store).
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
    _demo_serve(console, report.project)


def _demo_serve(console: Any, project: Path) -> None:
    """The demo's last step: export the model, serve it, call it."""
    from rich.table import Table

    from nb2prod.demo import serve_demo

    with console.status("exporting the model as a Bento, serving it, calling it..."):
        served = serve_demo(project)
    console.print(f"Bento [bold]{served.tag}[/bold] built; source in {served.source_dir}")
    table = Table(title=f"POST {served.url}/predict (server stopped again)")
    for column in ("row", "served", "MLflow model", "P(benign)", "request id"):
        table.add_column(column)
    for i, (got, want) in enumerate(zip(served.predictions, served.expected, strict=True)):
        proba = got.get("probabilities", {}).get("1", 0.0)
        table.add_row(str(i), str(got["prediction"]), str(want), f"{proba:.3f}", got["request_id"][:12])
    console.print(table)
    status, body = served.bad_request
    console.print(f"a bad request got {status}: {body.get('message')}")
    meta = served.metadata
    console.print(f"/metadata: model {meta['model']} v{meta['model_version']}, run {meta['run_id']}")
    console.print(f"/drift: {served.drift.get('status')} ({served.drift.get('window_rows')} rows logged)")


@main.command("export")
@click.argument("ref", metavar="NAME[@alias|/version]")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the Bento as a portable archive (FILE.bento).",
)
def export_cmd(ref: str, output: Path | None) -> None:
    """Write bentos/NAME/ and build the immutable Bento NAME:<version> of a registered model."""
    from nb2prod.export import export_model

    result = export_model(ref, output=output)
    state = "built" if result.built else "already built (no change)"
    click.echo(f"{result.tag} {state} in {result.bentoml_home} ({result.seconds:.1f} s)")
    click.echo(f"model {result.name} version {result.model_version}; service source in {result.source_dir}")
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


if __name__ == "__main__":  # pragma: no cover
    main()
