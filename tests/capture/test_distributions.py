"""Installed and imported distributions, requirement pins: real distributions on sys.path."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from nb2prod.capture.distributions import (
    imported_distributions,
    installed_distributions,
    normalize_name,
    packages_distributions,
    requirements_txt,
)
from tests.capture.environments import FAKE, FAKE_DIST, install_fake, snapshot_in_subprocess


def test_every_installed_distribution_with_its_version() -> None:
    seen: dict[str, str] = {}
    for dist in metadata.distributions():  # sys.path order: first one wins
        seen.setdefault(normalize_name(dist.metadata["Name"]), dist.version)
    assert installed_distributions() == seen


def test_module_index_agrees_with_importlib() -> None:
    reference = {
        module: sorted({normalize_name(n) for n in names})
        for module, names in metadata.packages_distributions().items()
    }
    assert {m: sorted(n) for m, n in packages_distributions().items()} == reference


def test_imported_distributions_finds_the_fake_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake(tmp_path, "1.0")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert imported_distributions({FAKE}) == {FAKE_DIST: "1.0"}
    assert imported_distributions({f"{FAKE}.sub", "os", "no_such_module_xyz"}) == {FAKE_DIST: "1.0"}
    assert installed_distributions()[FAKE_DIST] == "1.0"


def test_first_distribution_on_sys_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    install_fake(first, "3.0")
    install_fake(second, "1.0")
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    assert installed_distributions()[FAKE_DIST] == "3.0" == metadata.version(FAKE_DIST)
    assert imported_distributions({FAKE}) == {FAKE_DIST: "3.0"}


def test_known_module_to_distribution_names() -> None:
    pytest.importorskip("sklearn")
    assert imported_distributions({"sklearn", "sys", "collections"}) == {
        "scikit-learn": metadata.version("scikit-learn")
    }


def test_requirements_txt_pins_imported(tmp_path: Path) -> None:
    install_fake(tmp_path / "site", "1.0")
    snap = snapshot_in_subprocess(tmp_path, pythonpath=tmp_path / "site", modules=[FAKE, "pytest"])
    text = requirements_txt(snap)
    lines = text.splitlines()
    assert lines[0].startswith("#") and snap.python_version in lines[0]
    pins = [line for line in lines if not line.startswith("#")]
    assert pins == sorted([f"{FAKE_DIST}==1.0", f"pytest=={metadata.version('pytest')}"])
    assert text.endswith("\n")
