"""Terminal rendering: lines built from the results' fields, never from other rendered text."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from nb2prod.capture.environment import EnvironmentDiff, PackageChange
from nb2prod.render import terminal


def _diff(packages: int) -> EnvironmentDiff:
    changed = [PackageChange(f"pkg{i:02d}", "1.0", "2.0", "upgraded") for i in range(packages)]
    imported = [changed[-1]]
    return EnvironmentDiff(
        added={"newpkg": "0.1"},
        removed={"gitpython": "3.1"},  # a package named git... is not the git commit
        changed=changed,
        python=("3.11.9", "3.12.1"),
        git_commit=("a" * 40, "b" * 40),
        imported_changed=imported,
    )


def test_preflight_shows_python_git_and_imported_first_then_the_rest_up_to_eight() -> None:
    diff = _diff(10)
    lines = terminal.preflight_lines(SimpleNamespace(against_run_id="r1", diff=diff))  # type: ignore[arg-type]
    assert lines[0] == "\npre-flight: environment vs run r1 (14 differences)"
    shown = [line.strip() for line in lines[1:-1]]
    assert shown[:3] == [
        "Python 3.11.9 → 3.12.1",
        "git commit aaaaaaaaaaaa → bbbbbbbbbbbb",
        "pkg09 1.0 → 2.0 (upgraded) [imported]",
    ]
    assert shown[3:] == [f"pkg{i:02d} 1.0 → 2.0 (upgraded)" for i in range(5)]
    assert lines[-1] == "  ... and 6 more (nb2prod/preflight_diff.json)"
    # every shown line is one of the diff's own summary lines
    assert set(shown) <= set(diff.summary())


def test_preflight_without_differences_or_history() -> None:
    none: Any = SimpleNamespace(against_run_id=None, diff=None)
    assert "no earlier finished run" in terminal.preflight_lines(none)[0]
    empty: Any = SimpleNamespace(against_run_id="r1", diff=EnvironmentDiff())
    assert terminal.preflight_lines(empty) == ["\npre-flight: environment identical to run r1"]


def test_switch_lines_say_whether_the_bento_follows() -> None:
    from nb2prod.lifecycle import Switch
    from nb2prod.tracking.registry import AliasEvent

    event = AliasEvent(
        seq=3, alias="champion", from_version="1", to_version="2", at="t", reason="promote", actor="a@b"
    )
    follows = Switch("m", event, "2", None, "m:v2", ["2", "1"], True, "/s.db")
    assert terminal.switch_lines(follows) == [
        "m@champion: 1 -> 2 (promote; history #3)",
        "active: v2",
        "m:v2 carries v2, v1: a running service follows within seconds",
    ]
    stale = Switch("m", None, "3", {"version": "2", "percent": 10.0}, "m:v2", ["2"], False, "/s.db")
    assert terminal.switch_lines(stale)[0] == "active: v3, canary v2 at 10%"
    assert "export and deploy the new champion" in terminal.switch_lines(stale)[1]
    none = Switch("m", None, "1", None, None, [], False, "/s.db")
    assert terminal.switch_lines(none)[-1] == "no Bento of m yet: nb2prod export m@champion"
    assert terminal.history_lines("m", []) == ["no alias moves recorded for m"]
