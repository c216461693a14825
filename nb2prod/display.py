"""Plain-text renderings of core results, shared by the magics, the CLI and the widgets' fallback."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nb2prod.capture.data import DatasetRecord
    from nb2prod.capture.environment import EnvironmentDiff, EnvironmentSnapshot
    from nb2prod.session import ModelRecord, StartResult, StatusReport


def environment_lines(env: EnvironmentSnapshot) -> list[str]:
    git = "not a git repository"
    if env.git is not None:
        state = "dirty" if env.git.dirty else "clean"
        git = f"{env.git.commit[:12]} on {env.git.branch or '(detached)'} ({state})"
    notebook = "unknown (digest of executed cells)"
    if env.notebook is not None:
        where = env.notebook.path or "kernel history"
        notebook = f"{where}, {env.notebook.n_code_cells} code cells, {env.notebook.code_digest[:19]}"
    return [
        f"python     {env.python_implementation} {env.python_version} on {env.system} {env.machine}",
        f"packages   {len(env.distributions)} installed, {len(env.imported)} imported by the notebook",
        f"git        {git}",
        f"notebook   {notebook}",
        f"env digest {env.digest[:19]}",
    ]


def diff_lines(diff: EnvironmentDiff | None, previous_run_id: str | None) -> list[str]:
    if previous_run_id is None:
        return ["changes    first recorded run of this notebook"]
    if diff is None:
        return [f"changes    previous run {previous_run_id} has no environment record"]
    if diff.is_empty:
        return [f"changes    none since run {previous_run_id}"]
    lines = [f"changes    since run {previous_run_id}:"]
    lines += [f"  {line}" for line in diff.summary()]
    return lines


def start_text(result: StartResult) -> str:
    lines = [
        f"nb2prod: capturing into run {result.run_id} "
        f"(experiment '{result.experiment}', store {result.tracking_uri})",
        *environment_lines(result.environment),
        *diff_lines(result.diff, result.previous_run_id),
    ]
    return "\n".join(lines)


def dataset_text(record: DatasetRecord) -> str:
    target = f", target '{record.target}'" if record.target else ""
    if record.n_rows is None:
        shape = f"{record.n_files} files, {record.disk_bytes} bytes"
    else:
        shape = f"{record.n_rows} rows x {record.n_cols} columns"
    return f"nb2prod: dataset '{record.name}' ({record.role}{target}): {shape}, {record.digest}"


def model_text(record: ModelRecord) -> str:
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(record.metrics.items())) or "none (no y given)"
    return "\n".join(
        [
            f"nb2prod: registered {record.model_uri} ({record.info.class_name}, flavor {record.info.flavor})",
            f"  round trip  loaded in a fresh process, {record.roundtrip.rows} predictions equal "
            f"({record.roundtrip.seconds:.1f} s)",
            f"  metrics     {metrics}",
            f"  data        {', '.join(f'{k}={v}' for k, v in record.data_digests.items() if ':' not in k)}",
            f"  artifacts   {len(record.artifact_sha256)} files hashed (sha256)",
        ]
    )


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
