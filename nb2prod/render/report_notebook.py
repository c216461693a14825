"""The monitoring report in a notebook: compact, and scoped so it never restyles the page.

:func:`render_notebook_html` is what ``%nb2prod monitor`` shows (``nb2prod monitor --html``
writes the full page of :func:`nb2prod.render.report.render_html`). Every CSS rule is under
the :data:`~nb2prod.render.report.SCOPE` class of the outer element. Order: the verdict and
the drifted columns first; the columns sorted by drift, the stable ones collapsed; no drift
table while the window holds too few rows for a verdict; charts cut to the buckets that hold
data; distributions of the drifted columns open, the others collapsed.
"""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

from nb2prod.monitoring.window import iso
from nb2prod.render.report import (
    CSS,
    DRIFT_HEADERS,
    SCOPE,
    VERSION_HEADERS,
    _bars,
    _count_rows,
    _drift_items,
    _table,
    _time,
    drift_row,
    estimate_note,
    estimate_table,
    over_time_html,
    quality_table,
    shadow_table,
    status_badge,
    traffic_table,
    version_rows,
)

if TYPE_CHECKING:
    from nb2prod.monitoring.report import MonitorReport
    from nb2prod.monitoring.stats import ColumnDrift

__all__ = ["render_notebook_html", "sorted_drift"]


def sorted_drift(report: MonitorReport) -> list[tuple[str, ColumnDrift]]:
    """Columns (features and the prediction), drifted first, then by PSI, highest first."""

    def key(item: tuple[str, ColumnDrift]) -> tuple[int, float]:
        d = item[1]
        psi = d.psi if d.psi is not None and math.isfinite(d.psi) else -1.0
        return (0 if d.drifted else 1, -psi)

    return sorted(_drift_items(report), key=key)


def _headline(report: MonitorReport) -> list[str]:
    since = "the first record" if report.since is None else escape(_time(report.since))
    out = [
        f"<h1>nb2prod monitor {status_badge(report)}</h1>",
        f"<p>{report.rows:,} logged rows from {since} to {escape(_time(report.until))} UTC.",
    ]
    if report.status == "insufficient_data":
        out[-1] += (
            f" <b>Too little data for a verdict</b>: {report.rows:,} of the {report.min_rows} rows needed."
            "</p>"
        )
    elif report.drifted:
        out[-1] += f" <span class='drift'>Drifted: {escape(', '.join(report.drifted))}</span></p>"
    else:
        out[-1] += f" No drift in {len(_drift_items(report))} columns.</p>"
    return out


def render_notebook_html(report: MonitorReport) -> str:
    """The report as a compact HTML fragment for a notebook output (scoped style, no script)."""
    body = _headline(report)
    enough = report.status != "insufficient_data"
    if enough:
        items = sorted_drift(report)
        drifted = [drift_row(n, d) for n, d in items if d.drifted]
        stable = [drift_row(n, d) for n, d in items if not d.drifted]
        if drifted:
            body.append(_table(DRIFT_HEADERS, drifted, ["drift"] * len(drifted)))
        if stable:
            body.append(
                f"<details><summary>{len(stable)} stable columns, by PSI</summary>"
                + _table(DRIFT_HEADERS, stable)
                + "</details>"
            )
        body += over_time_html(report)
        body += _distributions(report, [n for n, d in items if n in report.distributions])
    quality = report.quality
    if quality and quality.get("labelled"):
        body.append(f"<h2>Live quality ({escape(str(quality.get('task')))}, from feedback)</h2>")
        body.append(_table(*quality_table(quality)))
    if report.estimate:
        body.append(
            f"<h2>Estimated quality (no labels needed)</h2><p>{escape(estimate_note(report.estimate))}</p>"
        )
        body.append(_table(*estimate_table(report.estimate)))
    if len(report.traffic) > 1:  # batch or shadow beside the online traffic
        body.append("<h2>Traffic</h2>")
        body.append(_table(*traffic_table(report.traffic)))
    if report.shadow:
        body.append("<h2>Shadow</h2>")
        body.append(_table(*shadow_table(report.shadow)))
    if len(report.versions) > 1 or any(v["fallbacks"] or v["errors"] for v in report.versions.values()):
        body.append("<h2>Model versions</h2>")
        body.append(_table(VERSION_HEADERS, version_rows(report)))
    inv = report.events["invalid"]
    if inv["total"]:
        body.append(
            f"<details><summary>Refused inputs: {inv['total']:,}</summary>"
            + _table(["reason", "count"], _count_rows(inv["by_reason"]))
            + _table(["field", "count"], _count_rows(inv["by_field"]))
            + "</details>"
        )
    th = report.thresholds
    body.append(
        f"<p style='color:#666'>Source: {escape(report.source)}; window {escape(iso(report.since))} .. "
        f"{escape(iso(report.until))}. Drift: PSI &gt; {th['psi']}, or p &lt; {th['p_value']} with "
        f"effect &ge; {th['min_effect']}.</p>"
    )
    return f"<div class='{SCOPE}'><style>{CSS}</style>{''.join(body)}</div>"


def _distributions(report: MonitorReport, order: list[str]) -> list[str]:
    if not order:
        return []

    def cards(cols: list[str]) -> str:
        return (
            "<div class='grid'>"
            + "".join(
                f"<div class='card'><b>{escape(col)}</b>"
                + (" <span class='drift'>DRIFT</span>" if col in report.drifted else "")
                + _bars(
                    report.distributions[col]["labels"],
                    report.distributions[col]["reference"],
                    report.distributions[col]["live"],
                )
                + "</div>"
                for col in cols
            )
            + "</div>"
        )

    drifted = [c for c in order if c in report.drifted]
    stable = [c for c in order if c not in report.drifted]
    out = ["<h2>Distributions: reference (grey) vs live (blue)</h2>"]
    if drifted:
        out.append(cards(drifted))
    if stable:
        out.append(f"<details><summary>{len(stable)} stable columns</summary>{cards(stable)}</details>")
    return out
