"""The shadow challenger without a server: switches, the bounded scorer, and the spool's key."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest


class _Threshold:
    """A model answering 1 where x exceeds its threshold."""

    classes_ = [0, 1]

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def predict(self, frame: Any) -> Any:
        if (frame["x"] < -100).any():
            raise ValueError("x far below anything seen")
        return (frame["x"] > self.threshold).astype(int).to_numpy()


def _runtime() -> Any:
    from nb2prod.serving.runtime import Runtime

    manifest = {
        "name": "m",
        "model_version": "2",
        "fallback": "1",
        "exported_at": "2026-01-01T00:00:00+00:00",
        "schema": [{"name": "x", "kind": "float", "dtype": "float64"}],
        "model": {"flavor": "sklearn"},
        "models": {"2": {"flavor": "sklearn"}, "1": {"flavor": "sklearn"}, "3": {"flavor": "sklearn"}},
        "serving": {},
    }
    runtime = Runtime(manifest, {"2": "/nowhere/2", "1": "/nowhere/1", "3": "/nowhere/3"}, background=True)
    time.sleep(0.2)  # the loader fails on the missing files; put live models in
    for version, threshold in (("2", 1.0), ("1", 2.0)):
        slot = runtime.slots[version]
        slot.model, slot.classes, slot.ready, slot.failure = _Threshold(threshold), [0, 1], True, None
    return runtime


def test_the_shadow_switch_follows_the_control_table_and_refuses_what_cannot_shadow() -> None:
    runtime = _runtime()
    now = time.time()
    changed = runtime.apply_control({"shadow": ({"version": "1"}, now)})
    assert runtime.shadow == "1" and runtime.shadow_state() == {"version": "1"} and changed
    assert runtime.metadata()["shadow"] == {"version": "1"}
    # the shadow never answers: routing is untouched
    assert runtime.route(["a", "b"]) == ["2", "2"]
    assert runtime.score("1", [{"x": 1.5}, {"x": 2.5}]) == [0, 1]
    with pytest.raises(ValueError, match="is the active model"):
        runtime.set_shadow("2")
    with pytest.raises(ValueError, match="not in this Bento"):
        runtime.set_shadow("9")
    with pytest.raises(ValueError, match="not loaded"):
        runtime.set_shadow("3")
    runtime.apply_control({"shadow": ("1", now + 1)})  # not {"version": V}: refused, named, kept
    assert runtime.shadow == "1" and "shadow" in runtime.control_refusals
    runtime.apply_control({"shadow": (None, now + 2)})
    assert runtime.shadow is None and "shadow" not in runtime.control_refusals
    runtime.set_shadow("1")
    runtime.set_active("1")  # promoted: it answers now, nothing left to shadow
    assert runtime.active == "1" and runtime.shadow is None


def _scorer(runtime: Any, logged: list[tuple[Any, ...]], **kwargs: Any) -> Any:
    from nb2prod.serving.shadow import ShadowScorer

    return ShadowScorer(runtime.score, logged.extend, **kwargs)


def test_the_scorer_logs_every_row_with_its_request_id_or_counts_it_dropped() -> None:
    runtime = _runtime()
    logged: list[tuple[Any, ...]] = []
    scorer = _scorer(runtime, logged, linger=0.01)
    scorer.submit("1", [("r1", 1.0, {"x": 1.5}), ("r2", 1.0, {"x": 2.5})])
    scorer.submit("1", [("r3", 2.0, {"x": -500.0})])  # the challenger raises: counted, not logged
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and scorer.scored + sum(scorer.dropped.values()) < 3:
        time.sleep(0.02)
    assert logged == [
        ("r1", 1.0, "shadow", "1", {"x": 1.5}, {"prediction": 0}),
        ("r2", 1.0, "shadow", "1", {"x": 2.5}, {"prediction": 1}),
    ]
    assert scorer.dropped == {"challenger_error": 1}
    assert scorer.stats("1") == {
        "version": "1",
        "scored": 2,
        "dropped": {"challenger_error": 1},
        "queued_batches": 0,
    }
    scorer.close()
    scorer.submit("1", [("r4", 3.0, {"x": 1.0})])  # after the stop: counted
    assert scorer.dropped == {"challenger_error": 1, "stopped": 1}


def test_a_full_queue_drops_and_counts_and_a_stop_scores_what_is_queued() -> None:
    runtime = _runtime()
    gate = threading.Event()
    logged: list[tuple[Any, ...]] = []

    def slow_score(version: str, rows: Any) -> list[Any]:
        gate.wait(10)
        return list(runtime.score(version, rows))

    from nb2prod.serving.shadow import ShadowScorer

    scorer = ShadowScorer(slow_score, logged.extend, maxsize=2, linger=0.0)
    scorer.submit("1", [("a", 1.0, {"x": 3.0})])  # taken by the thread, which waits at the gate
    time.sleep(0.2)
    scorer.submit("1", [("b", 1.0, {"x": 3.0})])
    scorer.submit("1", [("c", 1.0, {"x": 3.0}), ("d", 1.0, {"x": 0.0})])
    scorer.submit("1", [("e", 1.0, {"x": 3.0})])  # the queue holds 2 batches: dropped
    assert scorer.dropped == {"queue_full": 1}
    gate.set()
    scorer.close(timeout=10)  # what is queued is scored before the writer drains
    assert [row[0] for row in logged] == ["a", "b", "c", "d"]
    assert scorer.scored == 4


def test_the_spool_replays_a_shadow_row_whose_answered_row_is_stored(tmp_path: Path) -> None:
    from nb2prod.serving.spool import missing_rows
    from nb2prod.serving.store import SQL_INSERT_PREDICTION, Store

    store = Store(str(tmp_path / "p.db"))

    def row(rid: str, monitor: str, version: str) -> dict[str, Any]:
        return {"request_id": rid, "ts": 1.0, "monitor": monitor, "model_version": version,
                "features": "{}", "prediction": '{"prediction": 1}'}  # fmt: skip

    store.write(SQL_INSERT_PREDICTION, [row("r1", "online", "2"), row("r2", "shadow", "1")])
    spooled = [
        row("r1", "online", "2"),
        row("r1", "shadow", "1"),
        row("r2", "online", "2"),
        row("r2", "shadow", "1"),
    ]
    missing = missing_rows(store, spooled)
    assert [(r["request_id"], r["monitor"]) for r in missing] == [("r1", "shadow"), ("r2", "online")]
    store.close()


def test_the_live_drift_window_leaves_shadow_rows_out(tmp_path: Path) -> None:
    from nb2prod.serving.monitor import recent
    from nb2prod.serving.store import SQL_INSERT_PREDICTION, Store

    store = Store(str(tmp_path / "p.db"))
    store.write(
        SQL_INSERT_PREDICTION,
        [
            {"request_id": f"r{i}", "ts": float(i), "monitor": monitor, "model_version": version,
             "features": f'{{"x": {i}}}', "prediction": '{"prediction": 1}'}
            for i in range(3)
            for monitor, version in (("online", "2"), ("shadow", "1"))
        ],
    )  # fmt: skip
    store.close()
    assert recent(str(tmp_path / "p.db"), 10) == [(f'{{"x": {i}}}', '{"prediction": 1}') for i in (2, 1, 0)]
