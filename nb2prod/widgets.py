"""The ``%nb2prod status`` panel: ipywidgets in a notebook, plain text elsewhere.

The rows and texts come from :mod:`nb2prod.render.notebook`; this module lays them out as widgets.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from nb2prod.render import notebook as text

if TYPE_CHECKING:
    from nb2prod.session import StatusReport


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 8px'>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def status_panel(report: StatusReport) -> Any:
    """An ipywidgets Tab with the run, environment, datasets and models of a session."""
    import ipywidgets as w

    env_rows = [
        *text.environment_rows(report.environment),
        text.diff_row(report.diff, report.previous_run_id),
    ]
    if report.diff is not None and not report.diff.is_empty:
        env_rows += [("", line) for line in report.diff.summary()]
    run_html = _table(
        ["", ""],
        [["run", report.run_id], ["experiment", report.experiment], ["store", report.tracking_uri]]
        + [["not recorded", item] for item in report.not_recorded],
    )
    data_html = _table(
        ["name", "role", "rows", "cols", "target", "digest"],
        [[r.name, r.role, str(r.n_rows), str(r.n_cols), r.target or "", r.digest] for r in report.datasets],
    )
    model_html = _table(
        ["model", "class", "round trip", "metrics"],
        [
            [
                m.model_uri,
                m.info.class_name,
                f"{m.roundtrip.rows} rows equal",
                text.metrics_text(m.metrics),
            ]
            for m in report.models
        ],
    )
    tab = w.Tab(
        children=[
            w.HTML(run_html),
            w.HTML(_table(["", ""], [[k, v] for k, v in env_rows])),
            w.HTML(data_html if report.datasets else "<i>no dataset tracked yet</i>"),
            w.HTML(model_html if report.models else "<i>no model registered yet</i>"),
        ]
    )
    for index, title in enumerate(
        ["Run", "Environment", f"Data ({len(report.datasets)})", f"Models ({len(report.models)})"]
    ):
        tab.set_title(index, title)
    return tab


def show_status(report: StatusReport, shell: Any) -> None:
    """Display the panel with a plain-text fallback (a terminal, nbconvert, papermill output)."""
    from IPython.display import display

    plain = text.status_text(report)
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        print(plain)
        return
    panel = status_panel(report)
    bundle = panel._repr_mimebundle_() or {}
    if isinstance(bundle, tuple):
        bundle = bundle[0]
    bundle = dict(bundle)
    bundle["text/plain"] = plain
    display(bundle, raw=True)
