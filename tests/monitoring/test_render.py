"""The monitoring report as terminal text and as an HTML page (``nb2prod.render.report``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nb2prod.monitoring.report import build_report
from nb2prod.render.report import format_value, quality_table, render_html, render_text, table
from nb2prod.serving.store import SQL_UPSERT_SKETCH, Store
from tests.monitoring.stores import SHIFTED, T0, held_out_store, regression_store, shifted_store


def test_text_and_html_of_a_report_without_drift(data: dict[str, Any], tmp_path: Path) -> None:
    held_out_store(str(tmp_path / "p.db"), data)
    report = build_report(str(tmp_path / "p.db"), data["manifest"], until=T0 + 3600, now=T0 + 3600)
    text = render_text(report)
    assert "status: ok" in text and SHIFTED in text and "accuracy" in text
    assert "f1_macro" in text and "macro_f1" not in text
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<script" not in page
    for f in data["features"]:
        assert f in page


def test_html_of_a_report_with_drift(data: dict[str, Any], tmp_path: Path) -> None:
    shifted_store(str(tmp_path / "p.db"), data)
    report = build_report(str(tmp_path / "p.db"), data["manifest"], until=T0 + 10_800, now=T0 + 10_800)
    page = render_html(report)
    assert "DRIFT" in page and "mean radius" in page


def test_text_of_a_regression_report(tmp_path: Path) -> None:
    logged = regression_store(str(tmp_path / "p.db"))
    report = build_report(str(tmp_path / "p.db"), logged["manifest"], until=T0 + 600)
    assert "mae" in render_text(report)


def test_text_and_html_of_empty_reports(data: dict[str, Any], tmp_path: Path) -> None:
    manifest = data["manifest"]
    Store(str(tmp_path / "empty.db")).write(SQL_UPSERT_SKETCH, [])
    Store(str(tmp_path / "empty.db")).add_events([])
    empty = build_report(f"sqlite:///{tmp_path / 'empty.db'}", manifest, since=T0, until=T0 + 60)
    assert "insufficient_data" in render_text(empty)
    assert "<svg" in render_html(empty) or "no rows" in render_html(empty)
    missing = build_report(str(tmp_path / "nope" / "p.db"), manifest)
    assert "insufficient_data" in render_text(missing) and "Invalid inputs: 0" in render_text(missing)


def test_quality_table_and_cells() -> None:
    quality = {
        "task": "classification",
        "labelled": 3,
        "accuracy": 2 / 3,
        "f1_macro": 0.5,
        "by_version": {"1": {"labelled": 3, "accuracy": 2 / 3, "f1_macro": 0.5}},
    }
    headers, rows = quality_table(quality)
    assert headers == ["version", "labelled", "accuracy", "f1_macro"]
    assert rows == [["all", "3", "0.6667", "0.5000"], ["1", "3", "0.6667", "0.5000"]]
    assert quality_table({"task": "regression"}) == (
        ["version", "labelled", "mae", "rmse"],
        [["all", "0", "-", "-"]],
    )
    assert [format_value(x) for x in (None, float("nan"), True, 12345, 0.00001, 0.5, "x")] == [
        "-",
        "-",
        "yes",
        "12,345",
        "1.00e-05",
        "0.5000",
        "x",
    ]
    assert table(["a", "n"], [["x", "1"], ["yy", "22"]]) == "a    n\n--  --\nx    1\nyy  22"


def _selectors(page: str) -> list[str]:
    import re

    (css,) = re.findall(r"<style>(.*?)</style>", page, flags=re.S)
    return [sel.strip() for rule in css.split("}") if "{" in rule for sel in rule.split("{")[0].split(",")]


def test_notebook_report_scopes_every_css_rule(data: dict[str, Any], tmp_path: Path) -> None:
    from nb2prod.render.report import SCOPE
    from nb2prod.render.report_notebook import render_notebook_html

    shifted_store(str(tmp_path / "p.db"), data)
    report = build_report(str(tmp_path / "p.db"), data["manifest"], until=T0 + 10_800, now=T0 + 10_800)
    fragment = render_notebook_html(report)
    assert fragment.startswith(f"<div class='{SCOPE}'>") and "<body" not in fragment
    selectors = _selectors(fragment)
    assert len(selectors) > 10 and all(s.startswith(f".{SCOPE}") for s in selectors), selectors
    # the standalone page (nb2prod monitor --html) keeps its page style, the report itself is scoped
    page = render_html(report)
    assert "body{" in page and f"<div class='{SCOPE}'>" in page
    assert all(s.startswith(f".{SCOPE}") or s == "body" for s in _selectors(page))


def test_notebook_report_puts_drift_first_and_collapses_the_stable(
    data: dict[str, Any], tmp_path: Path
) -> None:
    from nb2prod.render.report_notebook import render_notebook_html, sorted_drift

    shifted_store(str(tmp_path / "p.db"), data)
    report = build_report(str(tmp_path / "p.db"), data["manifest"], until=T0 + 10_800, now=T0 + 10_800)
    assert report.status == "drift"
    order = sorted_drift(report)
    flags = [d.drifted for _, d in order]
    assert flags == sorted(flags, reverse=True)  # every drifted column before every stable one
    stable_psi = [d.psi for _, d in order if not d.drifted and d.psi is not None]
    assert stable_psi == sorted(stable_psi, reverse=True)
    fragment = render_notebook_html(report)
    assert fragment.index("Drifted: ") < fragment.index(SHIFTED) < fragment.index("<details>")
    n_stable = sum(1 for f in flags if not f)
    assert f"{n_stable} stable columns, by PSI</summary>" in fragment


def test_notebook_report_with_too_little_data_has_no_table_of_dashes(
    data: dict[str, Any], tmp_path: Path
) -> None:
    from nb2prod.render.report_notebook import render_notebook_html

    Store(str(tmp_path / "empty.db")).write(SQL_UPSERT_SKETCH, [])
    Store(str(tmp_path / "empty.db")).add_events([])
    empty = build_report(f"sqlite:///{tmp_path / 'empty.db'}", data["manifest"], since=T0, until=T0 + 86_400)
    fragment = render_notebook_html(empty)
    assert "Too little data for a verdict" in fragment and "0 of the 50 rows" in fragment
    assert "<table" not in fragment and "<svg" not in fragment


def test_charts_stop_at_the_data(data: dict[str, Any], tmp_path: Path) -> None:
    """The value axis ends at the largest value (accuracy no longer to 1.09); the time axis at the
    last bucket that holds rows, not at the end of a longer window."""
    import re

    from nb2prod.render.report import _lines, data_span

    chart = _lines([0.0, 60.0, 120.0], {"accuracy": [0.9, 1.0, 0.95]}, threshold=None, from_zero=False)
    labels = re.findall(r"<text x=\"2\" y=\"\d+\">([^<]*)</text>", chart)
    assert labels == ["1", "0.9"]
    # no label came back: only the estimate is drawn and named; a flat line is not drawn to 1.5
    chart = _lines(
        [0.0, 60.0],
        {"accuracy": [None, None], "estimated accuracy": [1.0, 1.0]},
        threshold=None,
        from_zero=False,
    )
    assert "estimated accuracy" in chart and "&#9632; accuracy" not in chart
    assert re.findall(r"<text x=\"2\" y=\"\d+\">([^<]*)</text>", chart) == ["1.05", "0.95"]
    assert data_span([0, 0, 5, 0, 3, 0, 0]) == slice(2, 5) and data_span([0, 0]) == slice(0, 2)
    held_out_store(str(tmp_path / "p.db"), data)
    wide = build_report(str(tmp_path / "p.db"), data["manifest"], until=T0 + 86_400 * 2, now=T0 + 86_400 * 2)
    page = render_html(wide)
    last = max(t for t, n in zip(wide.over_time["times"], wide.over_time["rows"], strict=True) if n)
    from nb2prod.render.report import _time

    assert _time(last) in page
    assert wide.over_time["times"][-1] == last  # the series itself stops at the data (not 2 days on)
    assert wide.over_time["times"][-1] < T0 + 86_400
