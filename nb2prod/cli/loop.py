"""Closing the loop: ``promote``, ``rollback``, ``history``, ``feedback``, ``monitor``, ``retrain``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nb2prod.cli.options import (
    FAILURE_EXIT,
    echo_lines,
    file_opt,
    kernel_opt,
    no_progress_opt,
    params_opt,
    timeout_opt,
    typed_params,
)
from nb2prod.metrics import HIGHER_IS_BETTER
from nb2prod.render import terminal

if TYPE_CHECKING:
    from nb2prod.lifecycle.switch import Switch

_MONITOR_EXIT_CODES = """\b
Exit codes:
  0    no drift (or too few rows to tell; the report says so)
  1    drift: a feature or the predictions moved beyond the thresholds
  2    error: no Bento of NAME, unreadable store, bad --since"""

_RETRAIN_EXIT_CODES = """\b
Exit codes:
  0    promoted (or canary started), or --if-drift / --if-degraded found nothing to do
  1    the challenger was not better by the margin: refused, champion unchanged
  2    nothing decided: no champion rows to score, unknown model, store unreachable
  3-5  the notebook failed (as for nb2prod run): nothing registered; 130 interrupted"""

_SWITCH_EXIT_CODES = """\b
Exit codes:
  0    switched, and every running service of NAME (nb2prod serve) reports it
  1    switched in the registry and the store, but a running service did not follow (named)
  2    nothing switched: unknown model or version, nothing to do"""

_METRICS = ", ".join(HIGHER_IS_BETTER)


_wait_opt = click.option(
    "--wait",
    type=click.FloatRange(0, 120),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for the running services of NAME (nb2prod serve) to report the switch; 0: do not wait.",
)


@click.command(
    epilog=_SWITCH_EXIT_CODES + "\n  (--if-shadow-better: 1 also when the challenger was not shown better)"
)
@click.argument("name")
@click.argument("version")
@click.option(
    "--canary",
    type=click.FloatRange(0, 100),
    default=None,
    help="Send this percent of the rows to VERSION instead of making it the champion (0 stops a canary).",
)
@click.option(
    "--shadow",
    is_flag=True,
    help="VERSION scores the answered rows off the request path and answers no one (VERSION 'none' stops it).",
)
@click.option(
    "--if-shadow-better",
    is_flag=True,
    help="Promote only if VERSION beat the champion on the labelled shadow rows (paired test).",
)
@click.option(
    "--min-improvement",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="With --if-shadow-better: the margin VERSION must win by.",
)
@click.option(
    "--metric", help="With --if-shadow-better: accuracy (McNemar), f1_macro, mae or rmse (bootstrap)."
)
@click.option("--since", metavar="T", help="With --if-shadow-better: shadow rows since T (e.g. 7d).")
@click.option("--json", "as_json", is_flag=True, help="With --shadow/--if-shadow-better: print JSON.")
@_wait_opt
def promote(
    name: str,
    version: str,
    canary: float | None,
    shadow: bool,
    if_shadow_better: bool,
    min_improvement: float,
    metric: str | None,
    since: str | None,
    as_json: bool,
    wait: float,
) -> None:
    """Make VERSION the champion of NAME (alias history kept); a running service follows.

    With --canary, VERSION becomes the challenger and gets that share of the traffic. With
    --shadow, VERSION scores the same rows as the champion but answers no one; then
    --if-shadow-better promotes it only when it won on the shadow rows that got labels.
    """
    import json

    from nb2prod.lifecycle import promote as promote_core

    if sum([canary is not None, shadow, if_shadow_better]) > 1:
        raise click.UsageError("give one of --canary, --shadow, --if-shadow-better")
    if shadow:
        from nb2prod.lifecycle.shadow import start_shadow

        started = start_shadow(name, None if version.lower() in ("none", "off") else version)
        if as_json:
            click.echo(json.dumps(started.to_dict(), indent=2, default=str))
        else:
            echo_lines(terminal.shadow_start_lines(started))
        return
    if if_shadow_better:
        from nb2prod.lifecycle.shadow import decide_shadow

        decision = decide_shadow(
            name, version, metric=metric, min_improvement=min_improvement, since=since, wait=wait
        )
        if as_json:
            click.echo(json.dumps(decision.to_dict(), indent=2, default=str))
        else:
            echo_lines(terminal.shadow_decision_lines(decision))
        if decision.switch is not None and decision.switch.refused:
            _report_switch(decision.switch)
        sys.exit(0 if decision.promote else 1)
    _report_switch(promote_core(name, version, canary=canary, wait=wait))


@click.command(epilog=_SWITCH_EXIT_CODES)
@click.argument("name")
@click.option("--to", "to", metavar="VERSION", help="Roll back to this version (default: the one replaced).")
@_wait_opt
def rollback(name: str, to: str | None, wait: float) -> None:
    """Give the champion of NAME back to the version it replaced; a running service follows."""
    from nb2prod.lifecycle import rollback as rollback_core

    _report_switch(rollback_core(name, to=to, wait=wait))


def _report_switch(switch: Switch) -> None:
    echo_lines(terminal.switch_lines(switch))
    if switch.refused:
        urls = ", ".join(ack.url for ack in switch.refused)
        click.echo(
            f"error: the switch is recorded, but {urls} did not follow it (see above): fix the service "
            "or switch back",
            err=True,
        )
        sys.exit(1)


@click.command("history")
@click.argument("name")
def history_cmd(name: str) -> None:
    """Every move of NAME's aliases (champion, challenger): when, from, to, why."""
    from nb2prod.lifecycle import history

    echo_lines(terminal.history_lines(name, history(name)))


@click.command()
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--id-column", default="request_id", show_default=True, help="Column of request ids.")
@click.option("--label-column", default=None, help="Column of labels (default: label, the target, or y).")
def feedback(name: str, file: Path, id_column: str, label_column: str | None) -> None:
    """Import ground truth for served predictions from FILE (CSV or Parquet)."""
    from nb2prod.lifecycle import import_feedback

    result = import_feedback(name, file, id_column=id_column, label_column=label_column)
    echo_lines(terminal.feedback_lines(result))


@click.command(epilog=_MONITOR_EXIT_CODES)
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
    from nb2prod.render.report import render_html, render_text

    if html_path is not None and not html_path.expanduser().parent.is_dir():
        # checked before anything runs; the folder is the user's to create, never ours
        raise click.BadParameter(
            f"the folder {html_path.expanduser().parent} does not exist: create it, or write the "
            "report somewhere that exists",
            param_hint="--html",
        )
    report = monitor_core(name, since=since, until=until, psi_threshold=psi_threshold)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        click.echo(render_text(report))
    if html_path is not None:
        html_path.expanduser().write_text(render_html(report), encoding="utf-8")
        click.echo(f"HTML report: {html_path}")
    sys.exit(1 if report.status == "drift" else 0)


@click.command(epilog=_RETRAIN_EXIT_CODES)
@click.argument("name")
@click.option("--notebook", "notebook", required=True, type=click.Path(dir_okay=False, path_type=Path))
@params_opt
@file_opt
@timeout_opt
@kernel_opt
@click.option("--if-drift", is_flag=True, help="Retrain only when the service's traffic drifted.")
@click.option(
    "--if-degraded",
    is_flag=True,
    help="Retrain only when the estimated accuracy of the served traffic (no labels needed) fell.",
)
@click.option(
    "--min-estimated-drop",
    type=click.FloatRange(0),
    default=0.02,
    show_default=True,
    help="With --if-degraded: the fall below the test accuracy that triggers.",
)
@click.option(
    "--since", metavar="T", help="With --if-drift/--if-degraded: look at traffic since T (e.g. 24h)."
)
@click.option(
    "--min-improvement", type=float, default=0.0, show_default=True, help="Margin the challenger must win by."
)
@click.option("--metric", help=f"{_METRICS} (default: accuracy / rmse).")
@click.option("--holdout", type=click.Path(dir_okay=False, path_type=Path), help="Score on this file.")
@click.option("--target", help="Label column of --holdout.")
@click.option("--on-feedback", is_flag=True, help="Score on served rows that got labels.")
@click.option("--canary", type=click.FloatRange(0, 100, min_open=True), help="Start the winner as a canary.")
@click.option("--no-export", is_flag=True, help="Do not re-export the Bento after a promotion.")
@no_progress_opt
def retrain(
    name: str,
    notebook: Path,
    params: tuple[tuple[str, str], ...],
    params_file: Path | None,
    timeout: int | None,
    kernel: str | None,
    if_drift: bool,
    if_degraded: bool,
    min_estimated_drop: float,
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
    from nb2prod.lifecycle import retrain as retrain_core
    from nb2prod.lifecycle.retrain import DEPRECATED_METRICS

    if metric in DEPRECATED_METRICS:
        click.echo(
            f"nb2prod: warning: --metric {metric} is deprecated; use --metric {DEPRECATED_METRICS[metric]}",
            err=True,
        )
        metric = DEPRECATED_METRICS[metric]
    typed = typed_params(notebook, params, params_file)
    try:
        decision = retrain_core(
            name,
            notebook,
            typed,
            if_drift=if_drift,
            if_degraded=if_degraded,
            min_estimated_drop=min_estimated_drop,
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
        sys.exit(FAILURE_EXIT.get(exc.kind, 3))
    except KeyboardInterrupt:
        click.echo("nb2prod: interrupted; the champion is unchanged", err=True)
        sys.exit(130)
    echo_lines(terminal.decision_lines(name, decision))
    sys.exit(1 if decision.action == "refused" else 0)
