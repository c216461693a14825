"""``nb2prod trace``: the parts that need no served model (the served chain and the tampering
are in test_loop.py, on its one running service)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nb2prod.lifecycle.trace import Link, _agree, _state_at
from nb2prod.tracking.registry import AliasEvent


def _event(seq: int, alias: str, to: str | None, at: str, reason: str = "promote") -> AliasEvent:
    return AliasEvent(seq=seq, alias=alias, from_version=None, to_version=to, at=at, reason=reason, actor="t")


def _ts(at: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(at).timestamp()


def test_the_route_at_the_rows_time_is_replayed_from_alias_moves_and_http_switches() -> None:
    events = [
        _event(1, "champion", "1", "2026-01-01T10:00:00+00:00"),
        _event(2, "champion", "2", "2026-01-01T11:00:00+00:00"),
        _event(3, "challenger", "3", "2026-01-01T12:00:00+00:00", reason="canary 20%"),
        _event(0, "service:canary", None, "2026-01-01T13:00:00+00:00", reason="switched over HTTP"),
        _event(4, "champion", "1", "2026-01-01T14:00:00+00:00", reason="rollback from 2"),
    ]
    assert _state_at(events, _ts("2026-01-01T10:30:00+00:00"))[1] == {"active": "1", "canary": None}
    assert _state_at(events, _ts("2026-01-01T12:30:00+00:00"))[1] == {"active": "2", "canary": "3"}
    assert _state_at(events, _ts("2026-01-01T13:30:00+00:00"))[1] == {"active": "2", "canary": None}
    aliases, then = _state_at(events, _ts("2026-01-01T14:30:00+00:00"))
    assert then == {"active": "1", "canary": None} and aliases == {"champion": "1", "challenger": "3"}


def test_a_disagreeing_hash_names_where_it_was_read_and_both_values() -> None:
    same = _agree(
        "data digest of 'train'", "digest", {"run tag": "xxh3_128:aa", "the Bento manifest": "xxh3_128:aa"}
    )
    assert same.ok is True and "run tag" in same.detail
    broken = _agree(
        "data digest of 'train'", "digest", {"run tag": "xxh3_128:aa", "the Bento manifest": "xxh3_128:bb"}
    )
    assert broken == Link(
        "data digest of 'train'",
        False,
        "digest differs: run tag has xxh3_128:aa, the Bento manifest has xxh3_128:bb",
        artifact="the Bento manifest",
        expected="xxh3_128:aa",
        actual="xxh3_128:bb",
    )
    assert _agree("x", "digest", {"a": None}).ok is None  # nothing recorded: not checkable, not broken


def test_an_unknown_request_id_is_one_clear_error(project: Path) -> None:
    from nb2prod.exceptions import LifecycleError
    from nb2prod.lifecycle import trace

    with pytest.raises(LifecycleError, match="no prediction with request id 'r-404'") as err:
        trace("m", "r-404")
    assert err.value.hint is not None and "request_id" in err.value.hint
