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
