"""Environment snapshot and diff: real interpreters, real distributions."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest

from nb2prod.capture.environment import (
    DiffEntry,
    EnvironmentDiff,
    EnvironmentSnapshot,
    GitInfo,
    PackageChange,
    diff,
    environment_json,
    snapshot,
)
from nb2prod.exceptions import UsageError
from tests.capture.environments import FAKE, FAKE_DIST, install_fake, snapshot_in_subprocess

# --------------------------------------------------------------------------- snapshot


def test_snapshot_fields_are_populated() -> None:
    snap = snapshot(imported_modules={"pytest", "os", "json"})
    assert snap.python_version == ".".join(map(str, sys.version_info[:3]))
    assert snap.python_implementation == "CPython"
    assert snap.executable == sys.executable
    assert snap.os and snap.system and snap.machine
    assert isinstance(snap.cpu_model, str)
    assert snap.cpu_count and snap.cpu_count >= 1
    assert snap.distributions["pytest"] == metadata.version("pytest")
    assert len(snap.distributions) >= 10
    # stdlib modules are not distributions
    assert snap.imported == {"pytest": metadata.version("pytest")}
    assert snap.env_var_names == sorted(os.environ)
    assert snap.captured_at.endswith("Z") and "T" in snap.captured_at
    assert snap.notebook is None
    assert snap.digest.startswith("sha256:") and len(snap.digest) == len("sha256:") + 64


def test_environment_variable_values_never_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-live-9f8e7d6c5b4a-DO-NOT-LEAK"
    monkeypatch.setenv("NB2PROD_TEST_API_TOKEN", secret)
    monkeypatch.setenv("NB2PROD_TEST_PASSWORD", secret + "-2")
    snap = snapshot()
    text = json.dumps(snap.to_dict())
    assert secret not in text
    assert secret not in environment_json(snap)
    assert "NB2PROD_TEST_API_TOKEN" in snap.env_var_names
    assert "NB2PROD_TEST_PASSWORD" in snap.to_dict()["env_var_names"]


def test_json_round_trip() -> None:
    snap = snapshot(code_cells=["import json\nx = 1"], imported_modules={"pytest"})
    back = EnvironmentSnapshot.from_dict(json.loads(environment_json(snap)))
    assert back == snap
    assert back.digest == snap.digest
    assert json.loads(environment_json(snap))["digest"] == snap.digest


def test_from_dict_names_the_missing_field() -> None:
    with pytest.raises(UsageError, match="distributions"):
        EnvironmentSnapshot.from_dict(
            {
                "python_version": "3.11.7",
                "python_implementation": "CPython",
                "system": "Linux",
                "machine": "x",
            }
        )


def test_digest_same_in_process_and_in_a_fresh_interpreter() -> None:
    first, second = snapshot(), snapshot()
    assert first.digest == second.digest
    # Same interpreter and sys.path (cwd matters: it is on sys.path too).
    other = snapshot_in_subprocess(Path.cwd(), pythonpath=None)
    assert other.digest == first.digest


def test_digest_ignores_time_git_and_env_but_not_distributions() -> None:
    snap = snapshot()
    same = replace(
        snap,
        captured_at="2000-01-01T00:00:00.000Z",
        env_var_names=["ONLY_THIS"],
        git=GitInfo("0" * 40, "main", True, "/x"),
        executable="/elsewhere/python",
    )
    assert same.digest == snap.digest
    bumped = dict(snap.distributions, pytest="0.0.1")
    assert replace(snap, distributions=bumped).digest != snap.digest
    assert replace(snap, python_version="3.99.0").digest != snap.digest


# --------------------------------------------------------------------------- diff


def test_real_package_upgrade_removal_and_addition(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    work = tmp_path / "work"
    work.mkdir()

    install_fake(site, "1.0")
    v1 = snapshot_in_subprocess(work, pythonpath=site, modules=[FAKE])
    install_fake(site, "2.0")
    v2 = snapshot_in_subprocess(work, pythonpath=site, modules=[FAKE])
    install_fake(site, None)
    gone = snapshot_in_subprocess(work, pythonpath=site, modules=[FAKE])

    assert v1.distributions[FAKE_DIST] == "1.0"
    assert v1.imported == {FAKE_DIST: "1.0"}
    assert v2.imported == {FAKE_DIST: "2.0"}
    assert FAKE_DIST not in gone.distributions and gone.imported == {}
    assert len({v1.digest, v2.digest, gone.digest}) == 3

    up = diff(v1, v2)
    assert up.changed == [PackageChange(FAKE_DIST, "1.0", "2.0", "upgraded")]
    assert up.added == {} and up.removed == {}
    assert up.imported_changed == up.changed
    assert up.python is None and up.git_commit is None
    assert not up.is_empty
    assert up.summary() == [f"{FAKE_DIST} 1.0 → 2.0 (upgraded) [imported]"]

    assert diff(v2, v1).changed[0].kind == "downgraded"

    removed = diff(v2, gone)
    assert removed.removed == {FAKE_DIST: "2.0"}
    assert removed.changed == [] and removed.added == {}
    assert removed.imported_changed == [PackageChange(FAKE_DIST, "2.0", None, "removed")]
    assert removed.summary() == [f"{FAKE_DIST} 2.0 (removed) [imported]"]

    added = diff(gone, v1)
    assert added.added == {FAKE_DIST: "1.0"}
    assert added.imported_changed == []  # the old notebook did not import it
    assert added.summary() == [f"{FAKE_DIST} 1.0 (added)"]

    assert diff(v1, v1).is_empty and diff(v1, v1).summary() == []
    assert json.loads(json.dumps(up.to_dict()))["changed"][0]["kind"] == "upgraded"


def test_diff_python_and_git_commit() -> None:
    snap = snapshot()
    a = replace(snap, git=GitInfo("a" * 40, "main", False, "/r"))
    b = replace(snap, python_version="3.12.1", git=GitInfo("b" * 40, "main", False, "/r"))
    d = diff(a, b)
    assert d.python == (snap.python_version, "3.12.1")
    assert d.git_commit == ("a" * 40, "b" * 40)
    assert not d.is_empty
    assert d.summary()[:2] == [
        f"Python {snap.python_version} → 3.12.1",
        f"git commit {'a' * 12} → {'b' * 12}",
    ]
    unparseable = diff(
        replace(snap, distributions={"x": "not a version"}), replace(snap, distributions={"x": "other"})
    )
    assert unparseable.changed == [PackageChange("x", "not a version", "other", "changed")]


def test_diff_entries_are_the_summary_as_data() -> None:
    snap = snapshot()
    old = replace(
        snap,
        python_version="3.11.0",
        git=GitInfo("a" * 40, "main", False, "/r"),
        distributions={"gitpython": "3.0", "numpy": "1.26.0", "pandas": "2.2.0", "six": "1.0", "zlib": "1.0"},
        imported={"numpy": "1.26.0", "six": "1.0"},
    )
    new = replace(
        snap,
        python_version="3.11.7",
        git=None,
        distributions={"gitpython": "3.1", "numpy": "2.0.0", "pandas": "2.1.0", "wheel": "0.4"},
    )
    d = diff(old, new)
    entries = d.entries()
    assert [e.line() for e in entries] == d.summary()
    assert entries == [
        DiffEntry("python", "Python", "3.11.0", "3.11.7", "changed"),
        DiffEntry("git_commit", "git commit", "a" * 40, None, "changed"),
        DiffEntry("package", "gitpython", "3.0", "3.1", "upgraded"),
        DiffEntry("package", "numpy", "1.26.0", "2.0.0", "upgraded", imported=True),
        DiffEntry("package", "pandas", "2.2.0", "2.1.0", "downgraded"),
        DiffEntry("package", "six", "1.0", None, "removed", imported=True),
        DiffEntry("package", "zlib", "1.0", None, "removed"),
        DiffEntry("package", "wheel", None, "0.4", "added"),
    ]
    assert d.summary() == [
        "Python 3.11.0 → 3.11.7",
        f"git commit {'a' * 12} → none",
        "gitpython 3.0 → 3.1 (upgraded)",
        "numpy 1.26.0 → 2.0.0 (upgraded) [imported]",
        "pandas 2.2.0 → 2.1.0 (downgraded)",
        "six 1.0 (removed) [imported]",
        "zlib 1.0 (removed)",
        "wheel 0.4 (added)",
    ]
    # A renderer picks by field, not by the text: gitpython is a package, not a git change.
    assert [e.name for e in entries if e.notable] == ["Python", "git commit", "numpy", "six"]
    assert [c.name for c in d.upgraded] == ["gitpython", "numpy"]
    assert [c.name for c in d.downgraded] == ["pandas"]
    assert d.imported_names == frozenset({"numpy", "six"})


def test_empty_diff_has_no_entries() -> None:
    snap = snapshot()
    d = diff(snap, replace(snap, captured_at="2000-01-01T00:00:00.000Z"))
    assert d == EnvironmentDiff()
    assert d.is_empty and d.entries() == [] and d.upgraded == [] and d.downgraded == []
    assert d.imported_names == frozenset()
