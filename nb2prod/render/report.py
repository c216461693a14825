"""The monitoring report (``nb2prod.monitoring.MonitorReport``) as terminal text and as an HTML page.

:func:`render_text` is plain aligned text for a terminal. :func:`render_html` is one
self-contained HTML page: inline SVG, no script, no network. Sections: the verdict,
the drift table, drift over time (PSI per column, one line each), live quality over
time, per-column reference vs live distributions (bars on the PSI bins or
categories), model versions and refused inputs. Every text that comes from data
(column names, categories, reasons) is escaped. Both share the table rows
(:func:`drift_row`, :func:`version_rows`, :func:`quality_table`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from nb2prod.monitoring.quality import CLASSIFICATION, metric_names
from nb2prod.monitoring.window import iso
from nb2prod.serving.store import PREDICTION_COLUMN

if TYPE_CHECKING:
    from nb2prod.monitoring.report import MonitorReport
    from nb2prod.monitoring.stats import ColumnDrift

__all__ = [
    "VERSION_HEADERS",
    "drift_row",
    "estimate_note",
    "estimate_table",
    "format_value",
    "quality_table",
    "render_html",
    "render_text",
    "shadow_table",
    "table",
    "traffic_table",
    "version_rows",
]

# --------------------------------------------------------------------------- shared rows


def format_value(x: Any, digits: int = 4) -> str:
    """A number for a table cell: ``-`` for missing, thousands separators, small values in e-notation."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != 0 and abs(x) < 10 ** -(digits - 1):
            return f"{x:.2e}"
        return f"{x:.{digits}f}"
    return str(x)


VERSION_HEADERS = ["version", "rows", "share", "fallbacks", "errors", "drifted"]
DRIFT_HEADERS = ["column", "n", "nulls", "psi", "test", "statistic", "p_value", "effect", ""]


def version_rows(report: MonitorReport) -> list[list[str]]:
    """One row per model version (columns :data:`VERSION_HEADERS`), for the text and HTML reports."""
    return [
        [
            v,
            format_value(info["rows"]),
            f"{100 * info['share']:.1f}%",
            format_value(info["fallbacks"]),
            format_value(info["errors"]),
            ", ".join(info["drifted"]) or "-",
        ]
        for v, info in report.versions.items()
    ]


def quality_table(quality: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (all labelled rows, then each version) of the live-quality table."""
    names = metric_names(quality.get("task") == CLASSIFICATION)
    rows = [["all", format_value(quality.get("labelled", 0)), *(format_value(quality.get(m)) for m in names)]]
    rows += [
        [v, format_value(m["labelled"]), *(format_value(m.get(k)) for k in names)]
        for v, m in quality.get("by_version", {}).items()
    ]
    return ["version", "labelled", *names], rows


ESTIMATE_HEADERS = [
    "version",
    "rows",
    "est. accuracy",
    "accuracy",
    "est. F1",
    "F1",
    "est. ROC AUC",
    "ROC AUC",
    "labelled",
]


def estimate_table(estimate: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (all, then each version) of the estimated quality, the realized value beside each."""

    def row(label: str, e: Mapping[str, Any]) -> list[str]:
        return [
            label,
            format_value(e.get("estimated", 0)),
            format_value(e.get("estimated_accuracy")),
            format_value(e.get("accuracy")),
            format_value(e.get("estimated_f1_macro")),
            format_value(e.get("f1_macro")),
            format_value(e.get("estimated_roc_auc")),
            format_value(e.get("roc_auc")),
            format_value(e.get("labelled", 0)),
        ]

    rows = [row("all", estimate)]
    rows += [row(v, e) for v, e in (estimate.get("by_version") or {}).items()]
    return ESTIMATE_HEADERS, rows


def estimate_note(estimate: Mapping[str, Any]) -> str:
    """One line: calibrated or not, and the drop from the test accuracy."""
    parts = ["calibrated at capture" if estimate.get("calibrated") else "raw probabilities (no calibration)"]
    if estimate.get("reference_accuracy") is not None:
        parts.append(
            f"test accuracy {format_value(estimate['reference_accuracy'])}, "
            f"estimated drop {format_value(estimate.get('estimated_drop'))}"
        )
    return "; ".join(parts)


def traffic_table(traffic: Mapping[str, Mapping[str, int]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the logged rows per source (online, batch, shadow) and version."""
    rows = [
        [source, v or "-", format_value(n)]
        for source in ("online", "batch", "shadow")
        for v, n in sorted((traffic.get(source) or {}).items())
    ]
    return ["source", "version", "rows"], rows


def shadow_table(shadow: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the shadow: agreement, the challenger's prediction drift, both versions' quality."""
    drift = shadow.get("prediction_drift") or {}
    rows = [
        [
            "shadow versions",
            ", ".join(f"{v} ({n:,} rows)" for v, n in (shadow.get("versions") or {}).items()),
        ],
        ["paired with an answered row", format_value(shadow.get("paired"))],
    ]
    if shadow.get("agreement") is not None:
        rows.append(["agreement with the champion", format_value(shadow["agreement"])])
    if shadow.get("mean_abs_difference") is not None:
        rows.append(["mean |challenger - champion|", format_value(shadow["mean_abs_difference"])])
    if drift:
        rows.append(
            [
                "challenger prediction drift",
                f"PSI {format_value(drift.get('psi'))}" + (" DRIFT" if drift.get("drifted") else ""),
            ]
        )
    rows.append(["labelled shadow rows", format_value(shadow.get("labelled"))])
    for who in ("champion", "challenger"):
        q = shadow.get(who) or {}
        figures = ", ".join(f"{k} {format_value(v)}" for k, v in q.items() if k != "labelled")
        rows.append([f"{who} on those rows", figures or "-"])
    return ["shadow", ""], rows


def drift_row(name: str, d: ColumnDrift) -> list[str]:
    """One row of the drift table (the terminal table and the HTML report share it)."""
    return [
        name,
        format_value(d.n),
        format_value(d.nulls),
        format_value(d.psi),
        d.test or "-",
        format_value(d.statistic),
        format_value(d.p_value),
        format_value(d.effect),
        "DRIFT" if d.drifted else "",
    ]


def _drift_items(report: MonitorReport) -> list[tuple[str, ColumnDrift]]:
    """The features' drift, then the prediction's."""
    items = list(report.features.items())
    if report.prediction is not None:
        items.append((PREDICTION_COLUMN, report.prediction))
    return items


def _count_rows(counts: Mapping[str, int]) -> list[list[str]]:
    return [[k or "-", format_value(c)] for k, c in counts.items()]


# --------------------------------------------------------------------------- text


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[bool] | None = None
) -> str:
    """Plain-text table: columns padded to their widest cell, numbers right-aligned."""
    right = list(right) if right is not None else [False] + [True] * (len(headers) - 1)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render_text(report: MonitorReport) -> str:
    """The report as plain aligned text for a terminal."""
    out = [
        f"status: {report.status}   rows: {report.rows:,}   window: {iso(report.since)} .. {iso(report.until)}",
        f"source: {report.source}   thresholds: PSI > {report.thresholds['psi']}, "
        f"p < {report.thresholds['p_value']} with effect >= {report.thresholds['min_effect']}",
    ]
    if report.status == "insufficient_data":
        out.append(f"fewer than {report.min_rows} logged rows in the window: no verdict")
    if report.drifted:
        out.append("drifted: " + ", ".join(report.drifted))
    out.append("")
    rows = [drift_row(name, d) for name, d in _drift_items(report)]
    if rows:
        out += [
            "Drift",
            table(DRIFT_HEADERS, rows, right=[False, True, True, True, False, True, True, True, False]),
            "",
        ]
    if report.versions:
        out += [
            "Model versions",
            table(VERSION_HEADERS, version_rows(report), right=[False, True, True, True, True, False]),
            "",
        ]
    q = report.quality
    headers, qrows = quality_table(q)
    out += [f"Live quality ({q.get('task', '-')}, from feedback)", table(headers, qrows), ""]
    if report.estimate:
        out += [
            f"Estimated quality (no labels needed; {estimate_note(report.estimate)})",
            table(*estimate_table(report.estimate)),
            "",
        ]
    if report.traffic:
        out += ["Traffic", table(*traffic_table(report.traffic), right=[False, False, True]), ""]
    if report.shadow:
        out += ["Shadow", table(*shadow_table(report.shadow), right=[False, False]), ""]
    inv = report.events["invalid"]
    out.append(f"Invalid inputs: {inv['total']:,}")
    if inv["by_reason"]:
        out.append(table(["reason", "count"], _count_rows(inv["by_reason"])))
    if inv["by_field"]:
        out.append(table(["field", "count"], _count_rows(inv["by_field"])))
    if report.skipped_sketches:
        out.append(f"skipped sketches (do not fit the reference): {report.skipped_sketches:,}")
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- HTML

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
SCOPE = "nb2prod-report"
"""The class of the report's outer element: every rule of :data:`CSS` is scoped under it, so the
report shown in a notebook never restyles the page around it."""
_RULES = (
    ("", "font:14px/1.4 system-ui,sans-serif;color:#222"),
    ("h1", "font-size:18px;margin:4px 0"),
    ("h2", "font-size:15px;margin:20px 0 4px;border-bottom:1px solid #ddd"),
    ("table", "border-collapse:collapse;margin:8px 0"),
    ("td, th", "padding:3px 8px;border-bottom:1px solid #eee;text-align:right"),
    ("td:first-child, th:first-child", "text-align:left"),
    (".drift", "color:#b00;font-weight:600"),
    (".status", "display:inline-block;padding:2px 8px;border-radius:4px;color:#fff"),
    (".ok", "background:#2a7"),
    (".drift-s", "background:#c33"),
    (".insufficient_data", "background:#888"),
    (".grid", "display:flex;flex-wrap:wrap;gap:12px"),
    (".card", "border:1px solid #ddd;border-radius:4px;padding:6px"),
    (".legend span", "margin-right:12px"),
    ("svg text", "font-size:10px;fill:#444"),
    ("summary", "cursor:pointer;font-weight:600"),
)
CSS = "\n".join(
    ", ".join(f".{SCOPE} {sel}".rstrip() for sel in selectors.split(", ")) + "{" + rules + "}"
    for selectors, rules in _RULES
)
_PAGE_CSS = "body{margin:24px;max-width:1200px}"


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%m-%d %H:%M")


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] | None = None
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _bars(labels: Sequence[str], reference: Sequence[float], live: Sequence[float]) -> str:
    """Reference (grey) and live (blue) bars per bin, as an inline SVG."""
    k = max(1, len(labels))
    width, height, pad = max(240, 22 * k), 130, 18
    top = max([*reference, *live, 1e-9])
    slot = (width - 10) / k
    bw = max(1.0, slot / 2 - 1)
    parts = [f'<svg width="{width}" height="{height + pad}" role="img">']
    for i, label in enumerate(labels):
        x = 5 + i * slot
        for j, (value, color) in enumerate(((reference[i], "#bbb"), (live[i], "#1f77b4"))):
            h = (height - 10) * value / top
            parts.append(
                f'<rect x="{x + j * bw:.1f}" y="{height - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{escape(label)}: {"reference" if j == 0 else "live"} '
                f"{100 * value:.1f}%</title></rect>"
            )
    first, last = escape(labels[0]) if labels else "", escape(labels[-1]) if labels else ""
    parts.append(f'<text x="2" y="{height + 12}">{first}</text>')
    parts.append(f'<text x="{width - 2}" y="{height + 12}" text-anchor="end">{last}</text>')
    parts.append("</svg>")
    return "".join(parts)


def data_span(rows: Sequence[int]) -> slice:
    """The buckets from the first to the last one holding rows (all of them when none does)."""
    held = [i for i, n in enumerate(rows) if n]
    return slice(held[0], held[-1] + 1) if held else slice(0, len(rows))


def _lines(
    times: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    threshold: float | None,
    from_zero: bool = True,
) -> str:
    """One polyline per series over the time buckets (gaps where a value is None); a series with
    no value (no label came back) is left out, legend included.

    The value axis stops at the data (and the threshold): from 0 (``from_zero``) or from the
    smallest value, to the largest; a flat line gets 5 % of its value above and below.
    """
    width, height, left, bottom = 720, 200, 44, 20
    values = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if not values or not times:
        return "<p>no data in the window</p>"
    extra = [] if threshold is None else [threshold]
    top = max([*values, *extra])
    low = 0.0 if from_zero else min([*values, *extra])
    if top - low <= 0:
        pad = abs(top) * 0.05 or 0.5
        top, low = (top + pad, low - pad) if not from_zero else (top or 1.0, 0.0)
    n = len(times)

    def xy(i: int, v: float) -> str:
        x = left + (width - left - 8) * (i / max(1, n - 1))
        y = height - bottom - (height - bottom - 8) * ((v - low) / (top - low))
        return f"{x:.1f},{y:.1f}"

    parts = [f'<svg width="{width}" height="{height}" role="img">']
    parts.append(
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#999"/>'
    )
    parts.append(f'<text x="2" y="12">{top:.3g}</text><text x="2" y="{height - bottom}">{low:.3g}</text>')
    parts.append(f'<text x="{left}" y="{height - 4}">{_time(times[0])}</text>')
    parts.append(f'<text x="{width - 4}" y="{height - 4}" text-anchor="end">{_time(times[-1])}</text>')
    if threshold is not None:
        y = xy(0, threshold).split(",")[1]
        parts.append(
            f'<line x1="{left}" y1="{y}" x2="{width}" y2="{y}" stroke="#c33" stroke-dasharray="4 3">'
            f"<title>threshold {threshold}</title></line>"
        )
    legend = []
    shown = {k: s for k, s in series.items() if any(v is not None and math.isfinite(v) for v in s)}
    for k, (name, s) in enumerate(shown.items()):
        color = _PALETTE[k % len(_PALETTE)]
        runs: list[list[str]] = [[]]
        for i, v in enumerate(s):
            if v is None or not math.isfinite(v):
                runs.append([])
            else:
                runs[-1].append(xy(i, v))
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>')
            elif run:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(run)}">'
                    f"<title>{escape(name)}</title></polyline>"
                )
        legend.append(f'<span style="color:{color}">&#9632; {escape(name)}</span>')
    parts.append("</svg>")
    return "".join(parts) + f'<div class="legend">{"".join(legend)}</div>'


def _drift_rows(report: MonitorReport) -> tuple[list[list[str]], list[str]]:
    items = _drift_items(report)
    rows = [drift_row(name, d) for name, d in items]
    return rows, ["drift" if d.drifted else "" for _, d in items]


def status_badge(report: MonitorReport) -> str:
    status_cls = "drift-s" if report.status == "drift" else escape(report.status)
    return f"<span class='status {status_cls}'>{escape(report.status)}</span>"


def over_time_html(report: MonitorReport, *, top_n: int = 8) -> list[str]:
    """Drift, rows and live quality over time, cut to the buckets that hold data."""
    ot = report.over_time
    if not ot.get("times") or not any(ot["rows"]):
        return []
    span = data_span(ot["rows"])
    times = ot["times"][span]
    step = ot.get("step", 60)
    unit = f"{step // 3600} h" if step >= 3600 and step % 3600 == 0 else f"{step // 60} min"
    order = sorted(ot["psi"].items(), key=lambda kv: -max((v for v in kv[1] if v is not None), default=0.0))
    body = [f"<h2>Drift over time (PSI per {unit})</h2>"]
    body.append(_lines(times, {k: v[span] for k, v in order[:top_n]}, threshold=report.thresholds["psi"]))
    if len(order) > top_n:
        body.append(f"<p>the {top_n} columns with the highest PSI of {len(order)}</p>")
    body.append("<h2>Rows over time</h2>")
    body.append(_lines(times, {"rows": ot["rows"][span]}, threshold=None))
    q = {k: v[span] for k, v in (ot.get("quality") or {}).items()}
    estimated = (ot.get("estimated") or {}).get("accuracy")
    if estimated:
        q["estimated accuracy"] = estimated[span]
    if any(v is not None for s in q.values() for v in s):
        body.append("<h2>Live quality over time (from feedback; estimated: no labels needed)</h2>")
        body.append(_lines(times, q, threshold=None, from_zero=False))
    return body


def render_html(report: MonitorReport) -> str:
    """The report as one self-contained HTML page (a string)."""
    since = "the first record" if report.since is None else escape(_time(report.since))
    body = [
        f"<h1>nb2prod monitor {status_badge(report)}</h1>",
        f"<p>{report.rows:,} logged rows from {since} to {escape(_time(report.until))} UTC "
        f"(source: {escape(report.source)}). Drift: PSI &gt; {report.thresholds['psi']}, or p &lt; "
        f"{report.thresholds['p_value']} with effect &ge; {report.thresholds['min_effect']}.</p>",
    ]
    if report.status == "insufficient_data":
        body.append(f"<p>Fewer than {report.min_rows} logged rows in the window: no verdict.</p>")
    if report.drifted:
        body.append("<p class='drift'>Drifted: " + escape(", ".join(report.drifted)) + "</p>")
    rows, classes = _drift_rows(report)
    body.append("<h2>Drift</h2>")
    body.append(
        _table(["column", "n", "nulls", "PSI", "test", "statistic", "p-value", "effect", ""], rows, classes)
        if rows
        else "<p>no rows</p>"
    )
    body += over_time_html(report)
    quality = report.quality
    if quality:
        body.append(f"<h2>Live quality ({escape(str(quality.get('task')))})</h2>")
        body.append(_table(*quality_table(quality)))
    if report.estimate:
        body.append(
            f"<h2>Estimated quality (no labels needed)</h2><p>{escape(estimate_note(report.estimate))}</p>"
        )
        body.append(_table(*estimate_table(report.estimate)))
    if report.traffic:
        body.append("<h2>Traffic</h2>")
        body.append(_table(*traffic_table(report.traffic)))
    if report.shadow:
        body.append("<h2>Shadow</h2>")
        body.append(_table(*shadow_table(report.shadow)))
    if report.distributions:
        body.append(
            "<h2>Distributions: reference (grey) vs live (blue)</h2><div class='grid'>"
            + "".join(
                f"<div class='card'><b>{escape(col)}</b>"
                + (" <span class='drift'>DRIFT</span>" if col in report.drifted else "")
                + _bars(d["labels"], d["reference"], d["live"])
                + "</div>"
                for col, d in report.distributions.items()
            )
            + "</div>"
        )
    if report.versions:
        body.append("<h2>Model versions</h2>")
        body.append(_table(VERSION_HEADERS, version_rows(report)))
    inv = report.events["invalid"]
    body.append(f"<h2>Invalid inputs: {inv['total']:,}</h2>")
    if inv["by_reason"]:
        body.append(_table(["reason", "count"], _count_rows(inv["by_reason"])))
        body.append(_table(["field", "count"], _count_rows(inv["by_field"])))
    if report.skipped_sketches:
        body.append(
            f"<p>{report.skipped_sketches:,} stored sketches did not fit the reference and were skipped.</p>"
        )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>nb2prod monitor: {escape(report.status)}</title><style>{_PAGE_CSS}\n{CSS}</style></head>"
        f"<body><div class='{SCOPE}'>{''.join(body)}</div></body></html>\n"
    )
