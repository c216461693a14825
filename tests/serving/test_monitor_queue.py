"""The monitor backend's bounded queue: nothing dropped silently."""

from __future__ import annotations

from pathlib import Path


def test_monitor_queue_counts_what_it_drops(tmp_path: Path) -> None:
    from nb2prod.serving.monitor import _Writer
    from nb2prod.serving.store import connect

    dropped: list[int] = []
    writer = _Writer(str(tmp_path / "p.db"), maxsize=2, on_drop=dropped.append, on_write=None)
    writer.close()  # the drain thread is gone: the queue fills up
    for i in range(5):
        writer.put((f"r{i}", 0.0, "m", "1", "{}", "{}"))
    assert writer.dropped == 3 and sum(dropped) == 3
    live = _Writer(str(tmp_path / "q.db"), maxsize=100, on_drop=None, on_write=None)
    for i in range(50):
        live.put((f"r{i}", 0.0, "m", "1", "{}", "{}"))
    live.close()
    conn = connect(tmp_path / "q.db")
    assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 50
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_writer_sketches_against_a_typed_manifest(tmp_path: Path) -> None:
    from nb2prod.serving.manifest import Manifest, Target
    from nb2prod.serving.monitor import Sketcher
    from nb2prod.serving.store import PREDICTION_COLUMN

    profile = {"drift_edges": ["-inf", 1.0, "inf"], "drift_fractions": [0.5, 0.5]}
    typed = Manifest(reference={"x": profile}, target=Target(name="y", profile=profile))
    assert set(Sketcher(typed).columns) == {"x", PREDICTION_COLUMN}
    # a manifest mapping (a Bento's JSON) is read the same way
    assert set(Sketcher(typed.to_dict()).columns) == {"x", PREDICTION_COLUMN}
    assert set(Sketcher({"reference": {"x": profile}}).columns) == {"x"}
