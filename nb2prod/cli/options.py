"""Options, parameter parsing and exit codes shared by the command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

FAILURE_EXIT = {"cell": 3, "dead_kernel": 4, "timeout": 5, "runner": 3, "interrupted": 130}
"""Exit code of a failed notebook, by :attr:`nb2prod.exceptions.ExecutionError.kind`."""


def typed_params(
    notebook: Path, params: tuple[tuple[str, str], ...], params_file: Path | None
) -> dict[str, Any]:
    """Parameters from ``-f`` then ``-p`` (``-p`` wins), checked and typed against the notebook.

    Raises:
        ParameterError: an unknown parameter, or a value that does not fit its default.
    """
    from nb2prod.execute import check_parameters, load_params_file

    values: dict[str, Any] = dict(load_params_file(params_file)) if params_file else {}
    values.update(params)
    return check_parameters(notebook, values, from_text=[name for name, _ in params])


notebook_arg = click.argument("notebook", type=click.Path(dir_okay=False, path_type=Path))
params_opt = click.option(
    "-p", "--param", "params", nargs=2, multiple=True, metavar="NAME VALUE", help="A parameter (repeat)."
)
file_opt = click.option(
    "-f",
    "--params-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="YAML file of parameters (-p wins).",
)
timeout_opt = click.option("--timeout", type=click.IntRange(min=1), help="Seconds a single cell may run.")
kernel_opt = click.option("--kernel", help="Kernel name (default: the notebook's).")
experiment_opt = click.option(
    "--experiment", help="MLflow experiment (default: the notebook's 'experiment' parameter, else settings)."
)
no_progress_opt = click.option("--no-progress", is_flag=True, help="No per-cell progress bar.")


def echo_lines(lines: list[str], *, err: bool = False) -> None:
    """Print rendered lines (on stderr with ``err``)."""
    for line in lines:
        click.echo(line, err=err)
