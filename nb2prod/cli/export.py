"""``nb2prod export`` and ``serve``: a registered model as a Bento, and the Bento as a service."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nb2prod.cli.options import echo_lines
from nb2prod.render import terminal


@click.command("export")
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
    echo_lines(terminal.export_lines(result))


@click.command("serve")
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
