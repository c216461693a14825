"""Alias history, routing, control and fallback: the parts of the loop that need no server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest


def _register(client: Any, name: str, n: int) -> None:
    client.create_registered_model(name)
    for _ in range(n):
        client.create_model_version(name, "file:///nowhere")


def test_alias_moves_are_kept_in_order_with_who_and_why(client: Any) -> None:
    from nb2prod.tracking import registry

    _register(client, "m", 3)
    registry.move_alias(client, "m", "champion", "1", reason="first")
    registry.move_alias(client, "m", "champion", "2", reason="better", details={"accuracy": 0.97})
    registry.move_alias(client, "m", "challenger", "3", reason="canary")
    registry.move_alias(client, "m", "challenger", None, reason="refused")
    events = registry.alias_history(client, "m")
    assert [(e.seq, e.alias, e.from_version, e.to_version) for e in events] == [
        (1, "champion", None, "1"),
        (2, "champion", "1", "2"),
        (3, "challenger", None, "3"),
        (4, "challenger", "3", None),
    ]
    assert events[1].details == {"accuracy": 0.97} and "@" in events[1].actor
    assert registry.alias_version(client, "m", "champion") == "2"
    assert registry.alias_version(client, "m", "challenger") is None
    assert registry.replaced_version(client, "m", "2") == "1"
    assert registry.replaced_version(client, "m", "1") is None


def test_concurrent_alias_moves_lose_no_event(client: Any) -> None:
    """Two promotes at once may read the same last sequence number; both events must stay."""
    import threading

    from nb2prod.tracking import registry

    _register(client, "race", 2)
    client.set_registered_model_tag(  # written by an older nb2prod: a key without the random part
        "race",
        f"{registry.HISTORY_TAG}.000001",
        '{"seq": 1, "alias": "champion", "from_version": null, '
        '"to_version": "1", "at": "2026-01-01T00:00:00+00:00", "reason": "old", "actor": "a@b"}',
    )
    barrier = threading.Barrier(2)

    def promote(version: str) -> None:
        for i in range(4):
            barrier.wait()
            registry.move_alias(client, "race", "champion", version, reason=f"{version}-{i}")

    threads = [threading.Thread(target=promote, args=(v,)) for v in ("1", "2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = registry.alias_history(client, "race")
    assert len(events) == 9
    assert sorted(e.reason for e in events[1:]) == sorted(f"{v}-{i}" for v in "12" for i in range(4))
    assert [e.seq for e in events] == sorted(e.seq for e in events)


def test_rollback_toggles_like_rollout_undo_and_refuses_without_history(project: Path, client: Any) -> None:
    from nb2prod import lifecycle
    from nb2prod.exceptions import LifecycleError
    from nb2prod.serving.store import Store
    from nb2prod.tracking import registry

    _register(client, "m", 2)
    with pytest.raises(LifecycleError, match="no champion"):
        lifecycle.rollback("m")
    first = lifecycle.promote("m", "1")
    assert first.active == "1" and first.bento is None and not first.follows
    with pytest.raises(LifecycleError, match="no version before 1"):
        lifecycle.rollback("m")
    lifecycle.promote("m", "2")
    back = lifecycle.rollback("m")
    assert back.active == "1" and back.event is not None and back.event.reason == "rollback from 2"
    assert lifecycle.rollback("m").active == "2"
    assert registry.alias_version(client, "m", "champion") == "2"
    control = Store(back.store).control()
    assert control["active"][0] == "2" and control["canary"][0] is None
    with pytest.raises(LifecycleError, match="no version 9"):
        lifecycle.promote("m", "9")
    with pytest.raises(LifecycleError, match="champion already"):
        lifecycle.promote("m", "2")
    canary = lifecycle.promote("m", "1", canary=25)
    assert canary.active == "2" and canary.canary == {"version": "1", "percent": 25.0}
    assert registry.alias_version(client, "m", "challenger") == "1"


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
