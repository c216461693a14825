"""Rendering of the capture session's results for a notebook: plain text (the magics' output and the
widgets' fallback), the rows the status panel shows, and the monitor report's notebook display.

The core (:mod:`nb2prod.session`, :mod:`nb2prod.export`, :mod:`nb2prod.lifecycle`) returns
dataclasses; everything a notebook user reads is written here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nb2prod.batch import ScoreResult
    from nb2prod.capture.data import DatasetRecord
    from nb2prod.capture.environment import EnvironmentDiff, EnvironmentSnapshot
    from nb2prod.export import ExportResult
    from nb2prod.session import ModelRecord, StartResult, StatusReport

Row = tuple[str, str]
"""A label and its value: one line of text, one row of a panel's table."""

_LABEL_WIDTH = 10


def _lines(rows: list[Row]) -> list[str]:
    return [f"{label:<{_LABEL_WIDTH}} {value}" for label, value in rows]


def environment_rows(env: EnvironmentSnapshot) -> list[Row]:
    """Python, packages, git, notebook and digest of an environment snapshot."""
    git = "not a git repository"
    if env.git is not None:
        state = "dirty" if env.git.dirty else "clean"
        files = list(getattr(env.git, "dirty_files", ()) or ())
        if env.git.dirty and files:
            shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
            state = f"dirty: {shown}"
        commit = env.git.commit[:12] if env.git.commit else "no commit yet"
        git = f"{commit} on {env.git.branch or '(detached)'} ({state})"
    notebook = "unknown (digest of executed cells)"
    if env.notebook is not None:
        where = env.notebook.path or "kernel history"
        notebook = f"{where}, {env.notebook.n_code_cells} code cells, {env.notebook.code_digest[:19]}"
    return [
        ("python", f"{env.python_implementation} {env.python_version} on {env.system} {env.machine}"),
        ("packages", f"{len(env.distributions)} installed, {len(env.imported)} imported by the notebook"),
        ("git", git),
        ("notebook", notebook),
        ("env digest", env.digest[:19]),
    ]


def diff_row(diff: EnvironmentDiff | None, previous_run_id: str | None) -> Row:
    """What changed since the previous run, in one row (the changes themselves: ``diff.summary()``)."""
    if previous_run_id is None:
        return ("changes", "first recorded run of this notebook")
    if diff is None:
        return ("changes", f"previous run {previous_run_id} has no environment record")
    if diff.is_empty:
        return ("changes", f"none since run {previous_run_id}")
    return ("changes", f"since run {previous_run_id}:")


def environment_lines(env: EnvironmentSnapshot) -> list[str]:
    return _lines(environment_rows(env))


def diff_lines(diff: EnvironmentDiff | None, previous_run_id: str | None) -> list[str]:
    lines = _lines([diff_row(diff, previous_run_id)])
    if previous_run_id is not None and diff is not None and not diff.is_empty:
        lines += [f"  {line}" for line in diff.summary()]
    return lines


def gitignore_note(added: tuple[str, ...] | list[str]) -> str | None:
    """Says which lines nb2prod added to the project's ``.gitignore`` (None when none)."""
    if not added:
        return None
    return f"added {', '.join(added)} to .gitignore (nb2prod's local state): commit it"


def start_text(result: StartResult) -> str:
    lines = [
        f"nb2prod: capturing into run {result.run_id} "
        f"(experiment '{result.experiment}', store {result.tracking_uri})",
        *environment_lines(result.environment),
        *diff_lines(result.diff, result.previous_run_id),
    ]
    note = gitignore_note(result.gitignored)
    if note:
        lines.append(f"nb2prod: {note}")
    return "\n".join(lines)


def dataset_text(record: DatasetRecord) -> str:
    target = f", target '{record.target}'" if record.target else ""
    if record.n_rows is None:
        shape = f"{record.n_files} files, {record.disk_bytes} bytes"
    else:
        shape = f"{record.n_rows} rows x {record.n_cols} columns"
    return f"nb2prod: dataset '{record.name}' ({record.role}{target}): {shape}, {record.digest}"


def metrics_text(metrics: dict[str, float]) -> str:
    """``name=value, ...`` sorted by name, 4 significant digits."""
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))


def model_headline(record: ModelRecord) -> str:
    """What became of a captured model: registered (as champion), skipped as identical, or left to
    the runner."""
    what = f"{record.model_uri} ({record.info.class_name}, flavor {record.info.flavor})"
    if record.registered:
        champion = f"; it is {record.name}@champion (first version)" if record.champion else ""
        return f"registered {what}{champion}"
    if record.identical_to is not None and record.version is None and not _deferred_record(record):
        return (
            f"not registered: identical to {record.name} version {record.identical_to} "
            f"(same code, data and metrics); logged as {what}"
        )
    return f"logged {what}; the runner registers it when the notebook succeeds"


def _deferred_record(record: ModelRecord) -> bool:
    import os

    from nb2prod import protocol

    return os.environ.get(protocol.DEFER_REGISTRATION, "").strip().lower() in ("1", "true", "yes")


def identical_note(record: ModelRecord) -> str | None:
    """``identical to version N ...`` when an earlier version is the same model."""
    if record.identical_to is None:
        return None
    return (
        f"identical to version {record.identical_to} (same code, data and metrics); "
        f"%nb2prod model ... --skip-identical registers nothing then"
    )


def model_text(record: ModelRecord) -> str:
    metrics = metrics_text(record.metrics) or "none (no y given)"
    lines = [f"nb2prod: {model_headline(record)}"]
    note = identical_note(record) if record.registered else None
    if note:
        lines.append(f"  identical   {note.removeprefix('identical ')}")
    lines += [
        f"  round trip  loaded in a fresh process, {record.roundtrip.rows} predictions equal "
        f"({record.roundtrip.seconds:.1f} s)",
        f"  metrics     {metrics}",
        f"  data        {', '.join(f'{k}={v}' for k, v in record.data_digests.items() if ':' not in k)}",
        f"  artifacts   {len(record.artifact_sha256)} files hashed (sha256)",
    ]
    return "\n".join(lines)


def status_text(report: StatusReport) -> str:
    lines = [
        f"run        {report.run_id} (experiment '{report.experiment}', store {report.tracking_uri})",
        *environment_lines(report.environment),
        *diff_lines(report.diff, report.previous_run_id),
        f"datasets   {len(report.datasets)}",
    ]
    for record in report.datasets:
        lines.append(
            f"  {record.name:<16} {record.role:<9} {record.n_rows or '-':>9} x {record.n_cols or '-':<4} "
            f"{record.digest}"
        )
    lines.append(f"models     {len(report.models)}")
    for model in report.models:
        lines.append(f"  {model.model_uri:<24} {model.info.class_name}  run {model.run_id[:8]}")
    if report.not_recorded:
        lines.append(f"NOT RECORDED ({len(report.not_recorded)}): " + "; ".join(report.not_recorded))
    return "\n".join(lines)


def end_text(run_id: str | None) -> str:
    return f"nb2prod: run {run_id} ended" if run_id else "nb2prod: no capture session was open"


def score_text(result: ScoreResult) -> str:
    """A batch scoring's outcome, a line per fact (the CLI's lines)."""
    return "\n".join(f"nb2prod: {line}" for line in result.summary())


def export_text(result: ExportResult) -> str:
    state = "built" if result.built else "already built (no change)"
    versions = ", v".join(result.versions or (result.model_version,))
    return "\n".join(
        [
            f"nb2prod: {result.tag} {state}; carries v{versions}",
            f"nb2prod: service source in {result.source_dir}; serve it with: nb2prod serve {result.name}",
        ]
    )


class MonitorView:
    """A monitor report shown as the compact, scoped HTML report in a notebook, as the text table elsewhere."""

    def __init__(self, report: Any) -> None:
        self.report = report

    def _repr_html_(self) -> str:
        from nb2prod.render.report_notebook import render_notebook_html

        return str(render_notebook_html(self.report))

    def __repr__(self) -> str:
        from nb2prod.render.report import render_text

        return str(render_text(self.report))
