"""``nb2prod`` on the command line: parses, calls the core, prints. Only this package imports click.

One module per command group: :mod:`~nb2prod.cli.run` (run, reproduce, sweep),
:mod:`~nb2prod.cli.export` (export, serve), :mod:`~nb2prod.cli.loop` (promote, rollback,
history, feedback, monitor, retrain) and :mod:`~nb2prod.cli.demo`. Output is rendered by
:mod:`nb2prod.render.terminal`. The console script is ``nb2prod = "nb2prod.cli:main"``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nb2prod._version import __version__
from nb2prod.cli import demo, export, loop, run
from nb2prod.cli import score as score_cli
from nb2prod.cli import trace as trace_cli
from nb2prod.exceptions import Nb2ProdError
from nb2prod.serving.store_schema import PredictionStoreError

__all__ = ["main"]

_FAST_EXIT = {"run", "reproduce", "sweep"}


class _Group(click.Group):
    """Shows an nb2prod error as one message and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            result = super().invoke(ctx)
        except Nb2ProdError as exc:
            click.echo(f"nb2prod: error: {exc}", err=True)
            _exit_now(ctx, 2)
            sys.exit(2)
        except PredictionStoreError as exc:  # the service's own error type (serving/ knows no nb2prod)
            shown = f"{exc.message}\n  fix: {exc.hint}" if exc.hint else exc.message
            click.echo(f"nb2prod: error: {shown}", err=True)
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
    if ctx.invoked_subcommand not in _FAST_EXIT:
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


for _command in (
    demo.demo,
    export.export_cmd,
    export.serve_cmd,
    run.run,
    run.reproduce,
    run.sweep,
    loop.promote,
    loop.rollback,
    loop.history_cmd,
    loop.feedback,
    loop.monitor,
    loop.retrain,
    score_cli.score_cmd,
    trace_cli.trace_cmd,
):
    main.add_command(_command)
