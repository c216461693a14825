"""The monitor backend's bounded queue and write-ahead spool: nothing dropped silently."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_full_queue_keeps_the_rows_in_the_spool_and_replays_them(tmp_path: Path) -> None:
    from nb2prod.serving.monitor import _Writer
    from nb2prod.serving.spool import Spool, read_segment, replay
    from nb2prod.serving.store import Store

    dropped: list[int] = []
    writer = _Writer(str(tmp_path / "p.db"), maxsize=2, on_drop=dropped.append, on_write=None)
    writer.close()  # the drain thread is gone: the queue fills up
    assert writer.spool is not None
    writer.spool = Spool(writer.spool.directory)  # a segment as a live process has one
    for i in range(5):
        writer.put((f"r{i}", 0.0, "m", "1", "{}", "{}"))
    # three rows did not fit in memory: not dropped, but held by the spool (all five are there)
    assert writer.dropped == 0 and dropped == [] and writer.spool.unsettled_lost == 3
    assert [r["request_id"] for r in read_segment(writer.spool.path)] == [f"r{i}" for i in range(5)]
    writer.spool.close()  # the process "dies": its segment is left for a replay
    store = Store(str(tmp_path / "p.db"))
    store.write(
        "INSERT INTO predictions (request_id, ts, monitor, model_version, features, prediction) "
        "VALUES ('r0', 0, 'm', '1', '{}', '{}')",
        [{}],
    )
    assert replay(writer.spool.directory, store) == 4  # r0 was already stored: never twice
    assert sorted(r[0] for r in store.query("SELECT request_id FROM predictions")) == [
        f"r{i}" for i in range(5)
    ]
    assert list(writer.spool.directory.glob("*.jsonl")) == []


def test_without_a_spool_a_full_queue_counts_what_it_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nb2prod.serving.monitor import _Writer

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    monkeypatch.setenv("NB2PROD_SPOOL_DIR", str(blocked / "spool"))  # cannot be created
    dropped: list[int] = []
    writer = _Writer(str(tmp_path / "p.db"), maxsize=2, on_drop=dropped.append, on_write=None)
    assert writer.spool is None
    writer.close()
    for i in range(5):
        writer.put((f"r{i}", 0.0, "m", "1", "{}", "{}"))
    assert writer.dropped == 3 and sum(dropped) == 3


def test_the_writer_commits_and_leaves_no_spool_behind(tmp_path: Path) -> None:
    from nb2prod.serving.monitor import _Writer
    from nb2prod.serving.store import connect

    live = _Writer(str(tmp_path / "q.db"), maxsize=100, on_drop=None, on_write=None)
    for i in range(50):
        live.put((f"r{i}", 0.0, "m", "1", "{}", "{}"))
    live.close()
    conn = connect(tmp_path / "q.db")
    assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 50
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert list((tmp_path / "q.db.spool").glob("*.jsonl")) == []


def test_durable_mode_follows_the_environment_over_the_bento(monkeypatch: pytest.MonkeyPatch) -> None:
    from nb2prod.serving.manifest import Manifest, ServingOptions
    from nb2prod.serving.monitor import durable_setting

    durable = Manifest(serving=ServingOptions(durable=True))
    monkeypatch.delenv("NB2PROD_DURABLE", raising=False)
    assert durable_setting(durable) and not durable_setting(Manifest()) and not durable_setting(None)
    monkeypatch.setenv("NB2PROD_DURABLE", "0")
    assert not durable_setting(durable)
    monkeypatch.setenv("NB2PROD_DURABLE", "1")
    assert durable_setting(Manifest())
    # the setting round-trips, and manifests written before it read back unchanged
    assert ServingOptions.from_dict(durable.serving.to_dict()).durable
    assert "durable" not in ServingOptions().to_dict()


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
