"""Alias history, promote and rollback: the switches of the loop, on a real MLflow store, no server."""

from __future__ import annotations

import os
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


def test_recorded_services_forget_dead_processes_and_a_stopped_one_is_not_waited_for(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from nb2prod.config import load_settings
    from nb2prod.export.serve import free_port
    from nb2prod.lifecycle.services import await_switch, record_service, recorded_services

    settings = load_settings(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record_service(settings, "m", url="http://127.0.0.1:1", pid=dead.pid, tag="m:v1-0")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    record_service(settings, "m", url=url, pid=os.getpid(), tag="m:v1-0")
    running = recorded_services(settings, "m")
    assert [r["url"] for r in running] == [url]  # the dead one's record is gone
    started = time.monotonic()
    (ack,) = await_switch(running, "2", None, timeout=5)
    assert not ack.reachable and not ack.followed and time.monotonic() - started < 3


def test_a_service_record_keeps_workers_and_the_store_without_its_password(tmp_path: Path) -> None:
    import json

    from nb2prod.cli.export import _configured_workers
    from nb2prod.config import load_settings
    from nb2prod.lifecycle.services import await_switch, record_service, recorded_services, store_digest

    settings = load_settings(tmp_path)
    store = "postgresql+psycopg://team:s3cret-pw@db.internal:5432/preds"
    path = record_service(
        settings, "m", url="http://127.0.0.1:1", pid=os.getpid(), tag="m:v1-0", workers=2, store=store
    )
    text = path.read_text()
    assert "s3cret-pw" not in text
    record = json.loads(text)
    assert (
        record["workers"] == 2 and record["store"] == "postgresql+psycopg://team:***@db.internal:5432/preds"
    )
    assert record["store_digest"] == store_digest(store) != store_digest(store.replace("preds", "other"))
    # a switch written to another store cannot reach it: named at once, not waited for
    (ack,) = await_switch(recorded_services(settings, "m"), "2", None, timeout=5, store="/tmp/other.db")
    assert not ack.followed and "logs to another prediction store" in ack.refused
    assert "s3cret-pw" not in ack.refused and ack.expected_workers == 2
    # the workers nb2prod serve records: --workers, else BENTOML_CONFIG_OPTIONS, else BentoML's 1
    assert _configured_workers({"BENTOML_CONFIG_OPTIONS": 'services."m".workers=3'}, "m:v1-0") == 3
    assert _configured_workers({}, "m:v1-0") == 1
    assert _configured_workers({"BENTOML_CONFIG": "/etc/bentoml.yaml"}, "m:v1-0") is None
