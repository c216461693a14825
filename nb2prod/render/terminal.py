"""Terminal rendering of nb2prod's results: the lines and rich tables the command line prints.

The core returns dataclasses; this module turns them into text (plain lines the CLI
echoes, rich tables for the demo and the sweep). Nothing here parses text back, and
nothing here imports click: ``nb2prod.cli`` decides where each line goes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nb2prod.tracking import names

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from nb2prod.demo import DemoReport, RerunReport, ServeReport
    from nb2prod.execute import Preflight, Reproduction, RunResult, SweepResult
    from nb2prod.export import ExportResult
    from nb2prod.lifecycle import Decision, FeedbackImport, Switch
    from nb2prod.lifecycle.shadow import ShadowDecision, ShadowStart
    from nb2prod.lifecycle.trace import Trace
    from nb2prod.tracking.registry import AliasEvent

PREFLIGHT_SHOWN = 8
"""How many environment differences the pre-flight shows before '... and N more'."""


def format_value(value: object) -> str:
    """A parameter or metric value, floats to 6 significant digits."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# --------------------------------------------------------------------------- run, reproduce, sweep


def preflight_lines(check: Preflight) -> list[str]:
    """The pre-flight environment check before a run (the CLI prints it on stderr)."""
    if check.against_run_id is None:
        return ["\npre-flight: no earlier finished run of this notebook to compare with"]
    if check.diff is None:
        return [f"\npre-flight: run {check.against_run_id} recorded no environment"]
    entries = check.diff.entries()
    if not entries:
        return [f"\npre-flight: environment identical to run {check.against_run_id}"]
    # Python, git and the packages the notebook imported first, then the others up to the limit
    shown = [e for e in entries if e.notable]
    shown += [e for e in entries if not e.notable][: max(0, PREFLIGHT_SHOWN - len(shown))]
    lines = [f"\npre-flight: environment vs run {check.against_run_id} ({len(entries)} differences)"]
    lines += [f"  {e.line()}" for e in shown]
    if len(entries) > len(shown):
        lines.append(f"  ... and {len(entries) - len(shown)} more ({names.PREFLIGHT_ARTIFACT})")
    return lines


def run_lines(result: RunResult) -> list[str]:
    """What a run did: status, parameters, metrics, data digests, registrations."""
    lines = [
        f"run {result.run_id} {result.status} in {result.seconds:.1f} s (experiment {result.experiment})"
    ]
    if result.parameters:
        lines.append("  parameters: " + ", ".join(f"{k}={v!r}" for k, v in result.parameters.items()))
    if result.metrics:
        lines.append(
            "  metrics: " + ", ".join(f"{k}={format_value(v)}" for k, v in sorted(result.metrics.items()))
        )
    lines += [f"  data {name}: {digest}" for name, digest in sorted(result.data_digests.items())]
    lines += [
        f"  registered: {name} version {version}" for name, version in sorted(result.registered.items())
    ]
    if result.preflight.against_run_id:
        lines.append(f"  re-executes: {result.preflight.against_run_id}")
    if result.executed_path:
        lines.append(f"  executed notebook: {result.executed_path}")
    return lines


def run_failure(result: RunResult) -> str:
    """The error line of a failed run (stderr)."""
    extra = f"\n  run {result.run_id} marked FAILED; nothing registered"
    if result.executed_path:
        extra += f"; partial executed notebook: {result.executed_path}"
    return f"nb2prod: error: {result.error}{extra}"


def finding_lines(verdict: Reproduction) -> list[str]:
    """One line per check of a reproduction: ok or DIFF, what, the values, why."""
    lines = []
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
        lines.append(f"  {mark} {finding.check:<11} {finding.name}{values}{note}")
    return lines


def verdict_line(verdict: Reproduction, run_id: str) -> str:
    """REPRODUCED or NOT REPRODUCED, and between which runs."""
    if verdict.reproduced:
        return f"REPRODUCED: run {verdict.run.run_id} reproduces {run_id}"
    return f"NOT REPRODUCED: {len(verdict.reasons)} difference(s) between {run_id} and {verdict.run.run_id}"


class SweepProgress:
    """A progress bar of a sweep on stderr, fed by the sweep's ``on_start`` / ``on_result`` hooks."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task: Any = None

    def started(self, total: int, parent: str) -> None:
        self.task = self.progress.add_task("runs", total=total, note=f"parent run {parent}")
        self.progress.start()

    def finished(self, result: RunResult) -> None:
        note = "ok" if result.ok else f"FAILED {result.parameters}"
        self.progress.update(self.task, advance=1, note=note)

    def stop(self) -> None:
        self.progress.stop()


def sweep_table(summary: SweepResult, grid: Sequence[str]) -> Table:
    """The ranked runs of a sweep, one column per grid axis."""
    from rich.table import Table

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
        value = format_value(result.metrics[metric]) if metric and metric in result.metrics else "-"
        where = result.error.cell_index if result.error is not None else None
        status = result.status if result.ok else "FAILED" + (f" (cell {where})" if where is not None else "")
        table.add_row(
            str(rank_no) if result.ok else "-",
            *[format_value(result.parameters.get(n)) for n in grid],
            value,
            status,
            result.run_id or "-",
        )
    return table


def sweep_failure_lines(summary: SweepResult, grid: Sequence[str]) -> list[str]:
    """One line per failed run of a sweep: its grid point and its error."""
    lines = []
    for result in summary.failed:
        params = ", ".join(f"{k}={format_value(v)}" for k, v in result.parameters.items() if k in grid)
        lines.append(f"FAILED {params}: {result.error.message if result.error else 'unknown error'}")
    return lines


# --------------------------------------------------------------------------- export


def export_lines(result: ExportResult) -> list[str]:
    """What an export built, what it carries, how to serve it."""
    state = "built" if result.built else "already built (no change)"
    lines = [
        f"{result.tag} {state} in {result.bentoml_home} ({result.seconds:.1f} s)",
        f"model {result.name} version {result.model_version}; service source in {result.source_dir}",
    ]
    if len(result.versions) > 1:
        fallback = f"; fallback v{result.fallback}" if result.fallback else ""
        lines.append(f"carries versions {', '.join(result.versions)}{fallback}")
    if result.archive is not None:
        lines.append(f"archive: {result.archive}")
    lines.append(f"serve it: nb2prod serve {result.name}")
    return lines


# --------------------------------------------------------------------------- the loop


def switch_lines(switch: Switch) -> list[str]:
    """An alias move, what is active now, and whether the newest Bento follows it."""
    lines = []
    event = switch.event
    if event is not None:
        moved = f"{event.from_version or '-'} -> {event.to_version or '-'}"
        lines.append(f"{switch.name}@{event.alias}: {moved} ({event.reason}; history #{event.seq})")
    canary = switch.canary
    split = f", canary v{canary['version']} at {canary['percent']:g}%" if canary else ""
    lines.append(f"active: v{switch.active}{split}")
    if switch.bento is None:
        lines.append(f"no Bento of {switch.name} yet: nb2prod export {switch.name}@champion")
    elif switch.follows:
        lines.append(
            f"{switch.bento} carries v{', v'.join(switch.carried)}: a running service follows within seconds"
        )
    else:
        lines.append(
            f"{switch.bento} carries only v{', v'.join(switch.carried)}: export and deploy the new champion "
            f"(nb2prod export {switch.name}@champion), a running service keeps what it has"
        )
    for ack in switch.services:
        workers = len(ack.workers)
        if not ack.reachable:
            lines.append(f"service {ack.url}: not reachable (stopped?), not waited for")
        elif ack.followed:
            lines.append(
                f"service {ack.url}: switched ({workers} worker{'s' if workers != 1 else ''} confirmed)"
            )
        else:
            lines.append(f"service {ack.url}: NOT switched: {ack.refused}")
    return lines


def history_lines(name: str, events: Sequence[AliasEvent]) -> list[str]:
    """Every alias move: number, time, alias, from, to, why, who."""
    if not events:
        return [f"no alias moves recorded for {name}"]
    return [
        f"#{str(e.seq) if e.seq else '-':<4} {e.at}  {e.alias:<10} {e.from_version or '-':>4} -> "
        f"{e.to_version or '-':<4} {e.reason} ({e.actor})"
        for e in events
    ]


def feedback_lines(result: FeedbackImport) -> list[str]:
    """How many labels were stored and how many match a logged prediction."""
    lines = [f"{result.stored} labels stored in {result.store}; {result.matched} match a logged prediction"]
    if result.unmatched_examples:
        lines.append(
            f"{result.stored - result.matched} have no logged prediction yet "
            f"(e.g. {', '.join(result.unmatched_examples)}): kept, joined when it arrives"
        )
    return lines


def decision_lines(name: str, decision: Decision) -> list[str]:
    """What retrain decided, on which run, the switch it published and the Bento it exported."""
    lines = [f"{decision.action.upper()}: {decision.reason}"]
    if decision.degraded and decision.degraded.get("estimated_drop") is not None:
        d = decision.degraded
        lines.append(
            f"estimated accuracy {d['estimated_accuracy']:.4f} on {d['rows']} served rows, test accuracy "
            f"{d['reference_accuracy']:.4f}: drop {d['estimated_drop']:+.4f} (threshold {d['min_estimated_drop']:g})"
        )
    if decision.run_id:
        lines.append(f"run {decision.run_id}; challenger {name}/{decision.challenger}")
    if decision.switch is not None:
        lines += switch_lines(decision.switch)
    if decision.bento:
        lines.append(f"exported {decision.bento}: deploy it with nb2prod serve {name}")
    return lines


def shadow_start_lines(start: ShadowStart) -> list[str]:
    """A shadow started or stopped: the version, the Bento that carries it, the services told."""
    if start.version is None:
        lines = [f"shadow of {start.name} stopped (store {start.store})"]
    else:
        lines = [
            f"{start.name}/{start.version} shadows the champion: it scores the answered rows, answers no one"
        ]
        if start.bento is None:
            lines.append(f"no Bento of {start.name} yet: export one that carries {start.version}")
        elif not start.follows:
            lines.append(
                f"the Bento {start.bento} does not carry {start.version} (carries {', '.join(start.carried)}): "
                f"re-export to carry it (nb2prod export {start.name})"
            )
        else:
            lines.append(f"the Bento {start.bento} carries it; the store {start.store} says so")
    for url, answer in start.services.items():
        lines.append(f"  {url}: {answer}")
    return lines


def shadow_decision_lines(decision: ShadowDecision) -> list[str]:
    """The figures of a shadow decision, the decision, and the switch it made."""
    c = decision.comparison

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    lines = [
        f"{c.metric} on {c.rows} labelled shadow rows: champion {decision.champion or '-'} {num(c.champion)}, "
        f"challenger {decision.version} {num(c.challenger)} (improvement {num(c.improvement)}, "
        f"margin {decision.min_improvement:g})",
        f"{c.test}: one-sided p = {c.p_value:.4g} (alpha {decision.alpha:g})"
        + (
            f"; only the challenger right: {c.only_challenger}, only the champion: {c.only_champion}"
            if c.test == "mcnemar_exact"
            else ""
        ),
        f"{'PROMOTE' if decision.promote else 'REFUSED'}: {decision.reason}",
    ]
    if decision.switch is not None:
        lines += switch_lines(decision.switch)
    if decision.event is not None:
        lines.append(f"recorded in the alias history (#{decision.event.seq}, {decision.event.alias})")
    return lines


def trace_lines(found: Trace) -> list[str]:
    """The chain of one prediction, then every checked link (a broken one names artifact and hashes)."""
    row, run, reg = found.row, found.run, found.registered
    answer = row["prediction"]
    lines = [
        f"request {found.request_id} ({row['source']}, {row['at']}): {found.name}/{row['model_version']} "
        f"answered {json.dumps(answer.get('prediction') if isinstance(answer, dict) else answer)} "
        f"as {found.route}",
        f"  input: {json.dumps(row['features'])[:300]}",
    ]
    for s in found.shadow:
        lines.append(f"  shadow {s['model_version']}: {json.dumps(s['prediction'])[:120]}")
    then = found.active_then
    lines.append(
        f"  then: active {then.get('active') or '-'}"
        + (f", canary {then['canary']}" if then.get("canary") else "")
        + "; aliases "
        + (", ".join(f"{a}={v}" for a, v in found.aliases.items()) or "-")
    )
    lines.append(f"Bento {found.bento or '-'} (source listing {found.bento_digest or '-'})")
    lines.append(
        f"registered {found.name}/{reg['version']}: logged model {reg.get('model_id') or reg.get('source')}"
    )
    for e in found.history:
        lines.append(f"  {e.at} {e.alias}: {e.from_version or '-'} -> {e.to_version or '-'} ({e.reason})")
    lines.append(f"run {run.get('run_id')} ({run.get('kind') or 'capture'})")
    lines.append(f"  notebook {run.get('notebook') or '-'}, git commit {run.get('git_commit') or '-'}")
    lines.append(
        f"  code cells {run.get('notebook_digest') or '-'}, environment {run.get('env_digest') or '-'}"
    )
    for ds, digest in (run.get("data_digests") or {}).items():
        lines.append(f"  data {ds}: {digest}")
    lines.append("Checks:")
    for link in found.links:
        mark = "ok  " if link.ok else "SKIP" if link.ok is None else "FAIL"
        lines.append(f"  {mark} {link.name}: {link.detail}")
        if link.ok is False:
            lines.append(f"       artifact: {link.artifact or '-'}")
            lines.append(f"       expected: {link.expected or '-'}  actual: {link.actual or '-'}")
    broken = found.broken
    lines.append(
        "chain verified: every hash that could be checked holds"
        if not broken
        else f"BROKEN: {len(broken)} link(s): " + ", ".join(link.name for link in broken)
    )
    return lines


# --------------------------------------------------------------------------- the demo


def print_demo_capture(console: Console, report: DemoReport) -> None:
    """The demo's first step: what the capture recorded (environment, datasets, models)."""
    from rich.table import Table

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
        tags: Mapping[str, str] = mv["tags"]
        digests = "\n".join(f"{k}: {v}" for k, v in tags.items() if k.startswith(names.TAG_DATA_PREFIX))
        models.add_row(mv["name"], str(mv["version"]), tags.get(names.TAG_RUN_ID, ""), digests)
    console.print(models)
    console.print(f"Executed notebook: {report.notebook}")


def print_demo_rerun(console: Console, report: DemoReport, again: RerunReport) -> None:
    """The demo's second step: a re-run with a new parameter, and the reproduction of the first run."""
    from rich.table import Table

    rerun = again.rerun
    console.print(
        f"[bold]nb2prod run[/bold] -p C 0.5: run {rerun.run_id} {rerun.status}, "
        + ", ".join(
            f"{k}={format_value(v)}" for k, v in sorted(rerun.metrics.items()) if k.startswith("test_")
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


def print_demo_serve(console: Console, served: ServeReport) -> None:
    """The demo's last step: refused retrain, export, serve, call, monitor, rollback."""
    from rich.table import Table

    from nb2prod.render.report import render_text

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
    console.print(
        f"[bold]nb2prod monitor[/bold] after 200 rows of the dataset (and their labels, "
        f"through /feedback): {served.quiet.status}"
    )
    console.print("[bold]nb2prod monitor[/bold] after 400 rows with 'mean radius' x1.5, 'mean area' x2:")
    console.print(render_text(served.drifted), markup=False, highlight=False, soft_wrap=True)
    back = served.rollback
    event = back.event
    assert event is not None  # a rollback always moves the champion
    took = f"{served.switch_seconds:.1f} s" if served.switch_seconds is not None else "NOT within 10 s"
    console.print(
        f"[bold]nb2prod rollback[/bold]: champion {event.from_version} -> {event.to_version}; "
        f"the live service answered from v{back.active} after {took}, no rebuild, no restart"
    )
