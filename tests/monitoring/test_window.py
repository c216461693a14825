"""The store queries of the monitoring report: the time window, sketches, labelled rows, events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import accuracy_score

from nb2prod.exceptions import MonitorError
from nb2prod.monitoring.report import build_report, parse_since, reference_of
from nb2prod.monitoring.window import BUCKET, read_window
from nb2prod.serving.store import Store
from tests.monitoring.stores import T0, held_out_store, log_rows


def test_since_until_filter_sketches_feedback_and_events(data: dict[str, Any], tmp_path: Path) -> None:
    store = Store(str(tmp_path / "p.db"))
    held, manifest, model = data["held"], data["manifest"], data["model"]
    preds = model.predict(held[data["features"]])
    ids = log_rows(store, manifest, held, preds, start=T0, per_minute=20)  # minutes T0 .. T0+8*60
    store.add_feedback(zip(ids, held["target"].tolist(), strict=True), source="test")
    store.add_events([{"kind": "invalid", "reason": "missing", "field": "x", "ts": T0 + 200}])
    store.close()
    path = str(tmp_path / "p.db")
    # minutes starting in [T0+120, T0+240): rows 40..79
    part = build_report(path, manifest, since=T0 + 120, until=T0 + 240)
    assert part.rows == 40
    assert part.quality["labelled"] == 40
    assert part.quality["accuracy"] == pytest.approx(accuracy_score(held["target"][40:80], preds[40:80]))
    assert part.events["invalid"]["total"] == 1
    assert part.status == "insufficient_data"
    # since inside a minute: that whole minute's sketch is counted (minute resolution)
    assert build_report(path, manifest, since=T0 + 130, until=T0 + 240).rows == 40
    none = build_report(path, manifest, since=T0 - 600, until=T0)
    assert none.rows == 0 and none.quality["labelled"] == 0 and none.events["invalid"]["total"] == 0
    with pytest.raises(MonitorError, match="window is empty"):
        build_report(path, manifest, since=T0, until=T0)


def test_rows_without_sketches_are_sketched_from_predictions(data: dict[str, Any], tmp_path: Path) -> None:
    store = Store(str(tmp_path / "p.db"))
    held, manifest, model = data["held"], data["manifest"], data["model"]
    preds = model.predict(held[data["features"]])
    log_rows(store, manifest, held, preds, start=T0)
    with_sketches = build_report(str(tmp_path / "p.db"), manifest, until=T0 + 3600)
    store.write("DELETE FROM sketches", [{}])
    store.close()
    scanned = build_report(str(tmp_path / "p.db"), manifest, until=T0 + 3600)
    assert scanned.source == "predictions" and scanned.rows == with_sketches.rows
    for f in data["features"]:
        assert scanned.features[f].statistic == with_sketches.features[f].statistic
        assert scanned.features[f].psi == pytest.approx(with_sketches.features[f].psi, rel=1e-12)


def test_read_window_returns_sketches_labelled_rows_and_events(data: dict[str, Any], tmp_path: Path) -> None:
    path = str(tmp_path / "p.db")
    logged = held_out_store(path, data)
    columns = reference_of(data["manifest"]).columns
    window = read_window(path, columns, None, T0 + 3600)
    assert window.source == "sketches"
    minutes = -(-len(data["held"]) // 20)
    # a sketch per minute, writer (2) and column (features + the prediction)
    assert len(window.sketches) == minutes * 2 * len(columns)
    assert {row[0] for row in window.sketches} == {int(T0) + BUCKET * k for k in range(minutes)}
    assert sum(row[3] for row in window.sketches if row[2] == data["features"][0]) == len(data["held"])
    assert len(window.labelled) == len(logged["labelled"])
    assert sorted(int(y) for _, _, _, y in window.labelled) == sorted(logged["truth"].tolist())
    assert {v for _, v, _, _ in window.labelled} == {"1"}
    assert window.events == {
        "invalid": {"total": 2, "by_reason": {"missing": 1, "not_finite": 1}, "by_field": {"mean area": 2}},
        "fallback": {"1": 1},
        "error": {},
    }
    # since rounds down to its minute; until is exclusive
    late = read_window(path, columns, T0 + 61, T0 + 120)
    assert {row[0] for row in late.sketches} == {int(T0) + BUCKET}
    assert late.events["invalid"]["total"] == 0 and late.events["fallback"] == {}


def test_read_window_of_a_missing_store_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    window = read_window(str(tmp_path / "none" / "p.db"), {}, None, T0)
    assert window.source == "none" and window.sketches == [] and window.labelled == []
    assert window.events["invalid"]["total"] == 0
    assert not (tmp_path / "none").exists()


def test_an_unreadable_store_is_a_monitor_error_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(MonitorError, match="cannot read the prediction store") as info:
        read_window(str(path), {}, None, T0)
    assert info.value.hint and "NB2PROD_PREDICTION_STORE" in info.value.hint


@pytest.mark.parametrize(
    "text,want",
    [
        ("30s", T0 - 30),
        ("30m", T0 - 1800),
        ("2h", T0 - 7200),
        ("7d", T0 - 7 * 86400),
        (" 1.5h ", T0 - 5400),
        ("2027-01-15T08:00:00", 1_800_000_000.0),
        ("2027-01-15T08:00:00Z", 1_800_000_000.0),
        ("2027-01-15T10:00:00+02:00", 1_800_000_000.0),
        ("2027-01-15", 1_799_971_200.0),
    ],
)
def test_parse_since(text: str, want: float) -> None:
    assert parse_since(text, now=T0) == want


@pytest.mark.parametrize("text", ["", "yesterday", "30", "5 minutes", "-2h", "2027-13-01"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(MonitorError, match="cannot read") as info:
        parse_since(text, now=T0)
    assert info.value.hint and "30m" in info.value.hint
