"""The magics' output as rich notebook output that survives save, restart and reload.

Every magic displays a :class:`Shown`: a ``text/html`` rendering with its ``text/plain`` twin
(:mod:`nb2prod.render.notebook`) in one mimebundle. Both are stored in the saved notebook, so
the cell reads the same after a kernel restart, on GitHub and in nbviewer, where a widget
would only say "model not found". The HTML uses inline styles only: a ``<style>`` element in
a notebook's output restyles the whole page (and GitHub strips it anyway). Cells are
left-aligned: JupyterLab right-aligns table cells by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nb2prod.render import notebook as text

if TYPE_CHECKING:
    from nb2prod.batch import ScoreResult
    from nb2prod.capture.data import DatasetRecord
    from nb2prod.export import ExportResult
    from nb2prod.lifecycle.trace import Trace
    from nb2prod.session import ModelRecord, StartResult, StatusReport

TRAIN = "training_"
TEST = "test_"
_CELL = "text-align:left;padding:2px 10px 2px 0;vertical-align:top"
_LABEL = _CELL + ";white-space:nowrap;font-weight:600"
_BOX = "font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;line-height:1.4"


@dataclass(frozen=True)
class Shown:
    """One magic's output: ``text/html`` for a notebook, ``text/plain`` for everything else."""

    plain: str
    html: str

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.plain, "text/html": self.html}

    def __repr__(self) -> str:
        return self.plain


def box(*parts: str) -> str:
    """The outer element of every output (a class for tests and user CSS, styles inline)."""
    return f'<div class="nb2prod-output" style="{_BOX}">{"".join(parts)}</div>'


def code(value: str) -> str:
    return f"<code>{escape(value)}</code>"


def link(label: str, url: str | None) -> str:
    """``label`` escaped, as a link when there is a URL."""
    if not url:
        return escape(label)
    return f'<a href="{escape(url, quote=True)}" target="_blank" rel="noopener">{escape(label)}</a>'


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, raw: bool = False) -> str:
    """A left-aligned table; ``raw`` cells are HTML already (otherwise escaped)."""
    head = "".join(f'<th style="{_LABEL}">{escape(h)}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{c if raw else escape(str(c))}</td>' for c in row) + "</tr>"
        for row in rows
    )
    return f'<table style="border-collapse:collapse;margin:4px 0"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def fields(rows: Sequence[tuple[str, str]]) -> str:
    """Label/value rows (labels never wrap, values are HTML already)."""
    body = "".join(
        f'<tr><th style="{_LABEL}">{escape(label)}</th><td style="{_CELL}">{value}</td></tr>'
        for label, value in rows
    )
    return f'<table style="border-collapse:collapse;margin:4px 0"><tbody>{body}</tbody></table>'


def section(title: str, content: str, *, open_: bool = True) -> str:
    state = " open" if open_ else ""
    return (
        f'<details{state} style="margin:4px 0"><summary style="cursor:pointer;font-weight:600">'
        f"{escape(title)}</summary>{content}</details>"
    )


def ui_base(tracking_uri: str) -> str | None:
    """The MLflow UI behind an http(s) tracking URI (credentials dropped); None for a file or database."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path.rstrip('/')}"


def run_url(ui: str | None, experiment_id: str | None, run_id: str) -> str | None:
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}" if ui and experiment_id else None


def version_url(ui: str | None, name: str, version: str | None) -> str | None:
    return f"{ui}/#/models/{name}/versions/{version}" if ui and version else None


def metrics_rows(metrics: Mapping[str, float]) -> list[list[str]]:
    """``[metric, train, test]`` rows: ``training_X`` and ``test_X`` side by side."""
    keys: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith(TRAIN):
            keys.setdefault(key[len(TRAIN) :], {})["train"] = value
        elif key.startswith(TEST):
            keys.setdefault(key[len(TEST) :], {})["test"] = value
        else:
            keys.setdefault(key, {})["train"] = value
    return [
        [name, *(f"{v[col]:.4g}" if col in v else "-" for col in ("train", "test"))]
        for name, v in sorted(keys.items())
    ]


def metrics_table(metrics: Mapping[str, float]) -> str:
    if not metrics:
        return "<i>no metrics (no labels given)</i>"
    return table(["metric", "train", "test"], metrics_rows(metrics))


# --------------------------------------------------------------------------- the magics


def start_shown(result: StartResult) -> Shown:
    head = (
        f"<b>nb2prod</b>: capturing into run {code(result.run_id)} "
        f"(experiment <b>{escape(result.experiment)}</b>, store {code(result.tracking_uri)})"
    )
    note = text.gitignore_note(result.gitignored)
    extra = f"<div>{escape(note)}</div>" if note else ""
    return Shown(text.start_text(result), box(head, extra, _environment(result, open_=False)))


def _environment(result: StartResult, *, open_: bool) -> str:
    rows = [(label, escape(value)) for label, value in text.environment_rows(result.environment)]
    label, value = text.diff_row(result.diff, result.previous_run_id)
    changes = escape(value)
    if result.diff is not None and not result.diff.is_empty:
        changes += "<ul style='margin:2px 0'>" + "".join(
            f"<li>{escape(line)}</li>" for line in result.diff.summary()
        )
        changes += "</ul>"
        open_ = True
    rows.append((label, changes))
    return section("Environment", fields(rows), open_=open_)


def _dataset_rows(records: Sequence[DatasetRecord]) -> list[list[str]]:
    return [
        [
            r.name,
            r.role,
            "-" if r.n_rows is None else f"{r.n_rows:,}",
            "-" if r.n_cols is None else str(r.n_cols),
            r.target or "",
            r.digest,
        ]
        for r in records
    ]


def dataset_shown(record: DatasetRecord) -> Shown:
    html = box(
        f"<b>nb2prod</b>: dataset <b>{escape(record.name)}</b> tracked",
        table(["name", "role", "rows", "cols", "target", "digest"], _dataset_rows([record])),
    )
    return Shown(text.dataset_text(record), html)


def _model_fields(
    record: ModelRecord,
    aliases: Sequence[str],
    ui: str | None,
    experiment_id: str | None,
    bento: str | None = None,
) -> list[tuple[str, str]]:
    trip = record.roundtrip
    digests = ", ".join(f"{k}={v}" for k, v in record.data_digests.items() if ":" not in k)
    rows = [
        ("model", link(record.model_uri, version_url(ui, record.name, record.version))),
        ("aliases", escape(", ".join(f"@{a}" for a in aliases)) or "<i>none</i>"),
    ]
    note = text.identical_note(record)
    if note:
        rows.append(("identical", escape(note.removeprefix("identical "))))
    if record.version is not None:
        rows.append(
            (
                "bento",
                escape(bento)
                if bento
                else f"<i>not exported yet</i> ({code(f'nb2prod export {record.name}')})",
            )
        )
    return [
        *rows,
        ("class", f"{code(record.info.class_name)} (flavor {escape(record.info.flavor)})"),
        ("logged model", code(record.model_id)),
        ("run", link(record.run_id, run_url(ui, experiment_id, record.run_id))),
        (
            "round trip",
            escape(f"loaded in a fresh process, {trip.rows} predictions equal ({trip.seconds:.1f} s)"),
        ),
        ("data", escape(digests)),
        ("artifacts", escape(f"{len(record.artifact_sha256)} files hashed (sha256)")),
    ]


def model_shown(
    record: ModelRecord,
    aliases: Sequence[str] = (),
    ui: str | None = None,
    experiment_id: str | None = None,
) -> Shown:
    html = box(
        f"<b>nb2prod</b>: {escape(text.model_headline(record))}",
        fields(_model_fields(record, aliases, ui, experiment_id)),
        metrics_table(record.metrics),
    )
    return Shown(text.model_text(record), html)


def progress_shown(steps: Sequence[str], current: str | None) -> Shown:
    """The steps done (with a check mark) and the one under way."""
    done = [f"✓ {s}" for s in steps]
    lines = done + ([f"… {current}"] if current else [])
    plain = "\n".join(f"nb2prod: {line}" for line in lines)
    html = box("<br>".join(escape(line) for line in lines))
    return Shown(plain, html)


def status_shown(
    report: StatusReport,
    aliases: Mapping[str, Sequence[str]] | None = None,
    experiment_id: str | None = None,
    bentos: Mapping[str, str] | None = None,
) -> Shown:
    """The status panel as HTML: run, environment, data and models, each a collapsible section."""
    ui = ui_base(report.tracking_uri)
    aliases = aliases or {}
    run_rows = [
        ("run", link(report.run_id, run_url(ui, experiment_id, report.run_id))),
        ("experiment", escape(report.experiment)),
        ("store", code(report.tracking_uri)),
    ]
    if report.not_recorded:
        run_rows.append(
            (
                "not recorded",
                "<span style='color:#b00'>" + escape("; ".join(report.not_recorded)) + "</span>",
            )
        )
    parts = [section("Run", fields(run_rows)), _environment(report, open_=False)]
    if report.datasets:
        data = table(["name", "role", "rows", "cols", "target", "digest"], _dataset_rows(report.datasets))
    else:
        data = "<i>no dataset tracked yet</i>"
    parts.append(section(f"Data ({len(report.datasets)})", data))
    models = (
        "".join(
            fields(
                _model_fields(
                    m, aliases.get(m.model_uri, ()), ui, experiment_id, (bentos or {}).get(m.model_uri)
                )
            )
            + metrics_table(m.metrics)
            for m in report.models
        )
        or "<i>no model registered yet</i>"
    )
    parts.append(section(f"Models ({len(report.models)})", models))
    return Shown(text.status_text(report), box(*parts))


def end_shown(run_id: str | None) -> Shown:
    plain = text.end_text(run_id)
    return Shown(plain, box(escape(plain)))


def export_shown(result: ExportResult) -> Shown:
    """``%nb2prod export``: the Bento, the versions it carries, where its source is, how to serve it."""
    state = "built" if result.built else "already built (no change)"
    versions = ", ".join(f"v{v}" for v in (result.versions or (result.model_version,)))
    rows = [
        ("bento", f"{code(result.tag)} {escape(state)}"),
        ("carries", escape(versions)),
        ("source", code(str(result.source_dir))),
        ("serve", code(f"nb2prod serve {result.name}")),
    ]
    return Shown(text.export_text(result), box(f"<b>nb2prod</b>: exported {code(result.tag)}", fields(rows)))


def score_shown(result: ScoreResult) -> Shown:
    """``%nb2prod score``: what the batch scored, refused and logged."""
    lines = result.summary()
    html = box(
        f"<b>nb2prod</b>: {escape(lines[0])}",
        "".join(f"<div>{escape(line)}</div>" for line in lines[1:]),
    )
    return Shown(text.score_text(result), html)


def trace_shown(found: Trace) -> Shown:
    """``%nb2prod trace``: one prediction's chain back to its notebook, every link checked."""
    from nb2prod.render.terminal import trace_lines

    lines = trace_lines(found)
    verdict = "every link verified" if found.ok else f"{len(found.broken)} broken link(s)"
    color = "#1a7f37" if found.ok else "#cf222e"
    html = box(
        f'<b>nb2prod</b>: trace of {code(found.request_id)} — <span style="color:{color}">{escape(verdict)}</span>',
        '<pre style="margin:4px 0 0 0;white-space:pre-wrap">' + escape("\n".join(lines)) + "</pre>",
    )
    return Shown("\n".join(lines), html)
