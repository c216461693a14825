"""Routing, canary, control and fallback inside the service runtime, and its sketch writer: no server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest


class _Raises:
    """A model that raises on rows whose x is negative (stands for an encoder meeting the unknown)."""

    classes_ = [0, 1]

    def predict(self, frame: Any) -> Any:
        if (frame["x"] < 0).any():
            raise ValueError("negative x")
        return (frame["x"] > 1).astype(int).to_numpy()


class _Plain:
    classes_ = [0, 1]

    def predict(self, frame: Any) -> Any:
        return (frame["x"] > 2).astype(int).to_numpy()


def _runtime(exported_at: str = "2026-01-01T00:00:00+00:00") -> Any:
    from nb2prod.serving.runtime import Runtime

    manifest = {
        "name": "m",
        "model_version": "2",
        "fallback": "1",
        "exported_at": exported_at,
        "schema": [{"name": "x", "kind": "float", "dtype": "float64"}],
        "model": {"flavor": "sklearn"},
        "models": {"2": {"flavor": "sklearn"}, "1": {"flavor": "sklearn"}},
        "serving": {},
    }
    runtime = Runtime(manifest, {"2": "/nowhere/2", "1": "/nowhere/1"}, background=True)
    time.sleep(0.2)  # the loader fails on the missing files; put live models in
    for version, model in (("2", _Raises()), ("1", _Plain())):
        slot = runtime.slots[version]
        slot.model, slot.classes, slot.ready, slot.failure = model, [0, 1], True, None
    return runtime


def test_rows_the_active_model_raises_on_are_answered_by_the_previous_version() -> None:
    runtime = _runtime()
    rows = [{"x": 3.0}, {"x": -1.0}, {"x": 1.5}]
    result = runtime.predict_routed(rows, runtime.route(["a", "b", "c"]))
    # the batch is one call per version: v2 raised on it, so v1 answered all three
    assert result.versions == ["1", "1", "1"] and result.predictions == [1, 0, 0]
    assert result.failed == {"2": 3} and runtime.fallbacks == {"2": 3}
    ok = runtime.predict_routed([{"x": 3.0}], ["2"])
    assert ok.versions == ["2"] and ok.predictions == [1] and ok.fallbacks == 0


def test_canary_routes_a_stable_share_by_request_id() -> None:
    runtime = _runtime()
    runtime.set_canary("1", 20)
    ids = [f"req-{i}" for i in range(5000)]
    routes = runtime.route(ids)
    share = routes.count("1") / len(ids)
    assert 0.18 < share < 0.22
    assert runtime.route(ids) == routes  # the same id always takes the same route
    with pytest.raises(ValueError, match="already the active"):
        runtime.set_canary("2", 10)
    with pytest.raises(ValueError, match="not in this Bento"):
        runtime.set_active("7")


def test_control_older_than_the_bento_is_ignored_newer_is_followed() -> None:
    runtime = _runtime(exported_at="2026-06-01T00:00:00+00:00")
    old = time.mktime((2026, 5, 1, 0, 0, 0, 0, 0, 0))
    assert runtime.apply_control({"active": ("1", old)}) == []
    assert runtime.active == "2"
    changed = runtime.apply_control({"active": ("1", time.time()), "canary": (None, time.time())})
    assert runtime.active == "1" and "version 1" in changed[0]
    assert runtime.apply_control({"active": ("9", time.time() + 1)}) == []  # not carried: logged, kept
    assert runtime.active == "1"


def test_writer_sketches_every_row_and_flushes_when_traffic_pauses(
    tmp_path: Path, breast_cancer: Any
) -> None:
    from nb2prod.capture.data import profile_frame
    from nb2prod.monitoring.report import build_report
    from nb2prod.serving.monitor import _Writer
    from nb2prod.serving.store import Store

    frame = breast_cancer
    profile = {name: p.to_dict() for name, p in profile_frame(frame).items()}
    features = [c for c in frame.columns if c != "target"][:5]
    manifest = {
        "reference": {f: profile[f] for f in features},
        "target": {"name": "target", "profile": profile["target"]},
        "model": {"is_classifier": True, "classes": [0, 1]},
        "schema": [{"name": f, "kind": "float"} for f in features],
    }
    store = str(tmp_path / "p.db")
    writer = _Writer(store, maxsize=1000, on_drop=None, on_write=None)
    writer.set_manifest(manifest)
    now = time.time()
    for i, row in enumerate(frame.head(120).to_dict(orient="records")):
        writer.put(
            (f"r{i}", now, "m", "1", {f: row[f] for f in features}, {"prediction": int(row["target"])})
        )
    time.sleep(2.0)  # no close, no further rows: the idle writer still flushes its sketches
    sketched = Store(store, readonly=True).query("SELECT col, SUM(n) FROM sketches GROUP BY col")
    assert dict(sketched) == {**{f: 120 for f in features}, "__prediction__": 120}
    report = build_report(store, manifest)
    assert report.source == "sketches" and report.rows == 120
    writer.close()


def test_a_switch_read_while_its_version_loads_is_applied_once_loaded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a restart: the follower reads the control table before version 1 is verified and loaded
    runtime = _runtime()
    loading = runtime.slots["1"]
    loading.ready, loading.failure = False, None
    control = {"active": ("1", time.time())}
    with caplog.at_level("WARNING", logger="nb2prod.serving"):
        assert runtime.apply_control(control) == []
        assert runtime.apply_control(control) == []
    assert runtime.active == "2" and "waits until that version is loaded" in caplog.text
    assert caplog.text.count("waits until") == 1  # said once, not every second
    loading.ready = True
    changed = runtime.apply_control(control)
    assert runtime.active == "1" and changed == ["active model is now version 1 (control table)"]
    assert runtime.metadata()["control_refusals"] == {}


def test_a_switch_to_a_version_that_failed_is_refused_and_reported() -> None:
    runtime = _runtime()
    broken = runtime.slots["1"]
    broken.ready, broken.failure = False, "integrity check failed: file model.skops has sha256:..."
    assert runtime.apply_control({"active": ("1", time.time())}) == []
    assert runtime.active == "2"
    refusal = runtime.metadata()["control_refusals"]["active"]
    assert "not loaded" in refusal and "integrity check failed" in refusal


def test_a_canary_record_of_the_version_made_active_is_stale_not_a_refusal() -> None:
    runtime = _runtime()
    now = time.time()
    # /admin/active made 1 active after a canary of 1 was set: the canary record is stale
    changed = runtime.apply_control(
        {"active": ("1", now), "canary": ({"version": "1", "percent": 10}, now - 5)}
    )
    assert runtime.active == "1" and runtime.canary is None
    assert runtime.control_refusals == {} and changed[-1] == "canary: None (control table)"
