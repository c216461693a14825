"""The ``%nb2prod status --panel`` panel: an ipywidgets Tab, shown after the status's HTML.

The status itself is rich HTML (:func:`nb2prod.render.notebook_html.status_shown`), saved with
the notebook; the panel is only an addition for the live kernel: a widget's view is not saved
and reads "model not found" after a restart, so its saved output says so in text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nb2prod.render import notebook as text
from nb2prod.render import notebook_html as html

if TYPE_CHECKING:
    from nb2prod.session import StatusReport

PANEL_PLAIN = "nb2prod status panel (interactive; the status above is the saved record)"


def status_panel(report: StatusReport) -> Any:
    """An ipywidgets Tab with the run, environment, datasets and models of a session."""
    import ipywidgets as w

    env_rows = [
        *text.environment_rows(report.environment),
        text.diff_row(report.diff, report.previous_run_id),
    ]
    if report.diff is not None and not report.diff.is_empty:
        env_rows += [("", line) for line in report.diff.summary()]
    run_rows = [("run", report.run_id), ("experiment", report.experiment), ("store", report.tracking_uri)]
    run_rows += [("not recorded", item) for item in report.not_recorded]
    data_html = html.table(
        ["name", "role", "rows", "cols", "target", "digest"],
        [[r.name, r.role, str(r.n_rows), str(r.n_cols), r.target or "", r.digest] for r in report.datasets],
    )
    model_html = "".join(
        html.table(
            ["model", "class", "round trip"],
            [[m.model_uri, m.info.class_name, f"{m.roundtrip.rows} rows equal"]],
        )
        + html.metrics_table(m.metrics)
        for m in report.models
    )
    tab = w.Tab(
        children=[
            w.HTML(_fields(run_rows)),
            w.HTML(_fields(env_rows)),
            w.HTML(data_html if report.datasets else "<i>no dataset tracked yet</i>"),
            w.HTML(model_html or "<i>no model registered yet</i>"),
        ]
    )
    for index, title in enumerate(
        ["Run", "Environment", f"Data ({len(report.datasets)})", f"Models ({len(report.models)})"]
    ):
        tab.set_title(index, title)
    return tab


def _fields(rows: list[tuple[str, str]]) -> str:
    from html import escape

    return html.fields([(label, escape(value)) for label, value in rows])


def show_panel(report: StatusReport, shell: Any) -> None:
    """Display the panel in a kernel (a terminal has no widgets: nothing to add there)."""
    from IPython.display import display

    if getattr(shell, "kernel", None) is None:
        return
    bundle = status_panel(report)._repr_mimebundle_() or {}
    if isinstance(bundle, tuple):
        bundle = bundle[0]
    bundle = dict(bundle)
    bundle["text/plain"] = PANEL_PLAIN
    display(bundle, raw=True)
