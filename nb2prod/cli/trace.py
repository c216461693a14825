"""``nb2prod trace NAME REQUEST_ID``: one prediction back to its notebook, every hash checked."""

from __future__ import annotations

import json
import sys

import click

from nb2prod.cli.options import echo_lines
from nb2prod.render import terminal

_TRACE_EXIT_CODES = """\b
Exit codes:
  0    every link of the chain that could be checked holds
  1    a broken link: an artifact whose hash differs (named)
  2    error: no such request id in the store, unknown model"""


@click.command("trace", epilog=_TRACE_EXIT_CODES)
@click.argument("name")
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="Print the chain as JSON.")
def trace_cmd(name: str, request_id: str, as_json: bool) -> None:
    """From the prediction logged under REQUEST_ID back to the Bento, version, run, notebook, data
    and environment of NAME, verifying every hash on the way."""
    from nb2prod.lifecycle.trace import trace

    found = trace(name, request_id)
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2, default=str))
    else:
        echo_lines(terminal.trace_lines(found))
    sys.exit(0 if found.ok else 1)
