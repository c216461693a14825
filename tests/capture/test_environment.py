"""Environment snapshot: real interpreters, real distributions, real git."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest

from nb2prod.capture.environment import (
    EnvironmentSnapshot,
    GitInfo,
    PackageChange,
    code_digest,
    diff,
    environment_json,
    imported_distributions,
    imports_in_code,
    installed_distributions,
    normalize_name,
    packages_distributions,
    requirements_txt,
    scan_imports,
    snapshot,
)
from nb2prod.exceptions import UsageError

FAKE = "fakepkg_nb2prod"
FAKE_DIST = "fakepkg-nb2prod"
HAVE_GIT = shutil.which("git") is not None


# --------------------------------------------------------------------------- helpers


def install_fake(site: Path, version: str | None) -> None:
    """Install (or, with None, remove) the fake distribution in ``site``, as pip would."""
    for old in site.glob(f"{FAKE}-*.dist-info"):
        shutil.rmtree(old)
    shutil.rmtree(site / FAKE, ignore_errors=True)
    if version is None:
        return
    info = site / f"{FAKE}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {FAKE_DIST}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{FAKE}\n")
    (site / FAKE).mkdir()
    (site / FAKE / "__init__.py").write_text(f"__version__ = {version!r}\n")


def snapshot_in_subprocess(
    cwd: Path, *, pythonpath: Path | None = None, modules: list[str] | None = None
) -> EnvironmentSnapshot:
    """Take a snapshot in a fresh interpreter and read it back from its JSON."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    code = (
        "import json, sys\n"
        "from nb2prod.capture.environment import environment_json, snapshot\n"
        "print(environment_json(snapshot(imported_modules=json.loads(sys.argv[1]))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(modules or [])],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return EnvironmentSnapshot.from_dict(json.loads(done.stdout))


def write_notebook(path: Path, cells: list[dict]) -> Path:
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return path


def code(source: str | list[str], outputs: list | None = None, count: int | None = None) -> dict:
    return {
        "cell_type": "code",
        "source": source,
        "metadata": {},
        "execution_count": count,
        "outputs": outputs or [],
    }


def markdown(source: str) -> dict:
    return {"cell_type": "markdown", "source": source, "metadata": {}}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def no_parent_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp folder in which git cannot discover a repository above it."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    return tmp_path


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


# --------------------------------------------------------------------------- a real package change


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


# --------------------------------------------------------------------------- imports in code


def test_imports_in_code_plain_and_from() -> None:
    cells = [
        "import numpy as np, pandas\nimport os.path\n",
        "from sklearn.ensemble import RandomForestClassifier\nfrom collections import abc",
        "def f():\n    import scipy.stats\n    return 1\n",
        "try:\n    import xgboost\nexcept ImportError:\n    pass\n",
    ]
    assert imports_in_code(cells) == {"numpy", "pandas", "os", "sklearn", "collections", "scipy", "xgboost"}


def test_imports_in_code_relative_imports_ignored() -> None:
    assert imports_in_code(["from . import helpers\nfrom .utils import x\nfrom ..pkg import y"]) == set()


def test_imports_in_code_blanks_ipython_syntax() -> None:
    cells = [
        "%matplotlib inline\nimport matplotlib.pyplot as plt",
        "!pip install requests\nimport requests",
        "files = !ls\nout = %sx echo hi\nimport yaml",
        "np.array?\n??plt\nimport json",
        "for i in range(3):\n    %time f(i)\nimport toml",
        "%%time\nimport polars\n",
        "%load_ext nb2prod",
    ]
    scan = scan_imports(cells)
    assert scan.modules == {"matplotlib", "requests", "yaml", "json", "toml", "polars"}
    assert scan.unparsed_cells == ()


def test_imports_in_code_skips_and_counts_unparsable_cells() -> None:
    cells = [
        "import numpy",
        "def broken(:\n    import pandas",
        "%%bash\nimport this is shell\necho $HOME",
        ["import ", "scipy\n"],  # nbformat list-of-lines form
    ]
    scan = scan_imports(cells)  # type: ignore[arg-type]
    assert scan.modules == {"numpy", "scipy"}
    assert scan.unparsed_cells == (1, 2)
    assert imports_in_code(cells) == {"numpy", "scipy"}  # type: ignore[arg-type]


# --------------------------------------------------------------------------- notebook code digest


def test_notebook_digest_from_file(tmp_path: Path) -> None:
    base = [markdown("# Title"), code("import json\nx = 1", count=1), code("y = x + 1")]
    nb = write_notebook(tmp_path / "a.ipynb", base)
    snap = snapshot(notebook_path=nb)
    info = snap.notebook
    assert info is not None
    assert info.source == "file" and info.path == str(nb.resolve()) and info.n_code_cells == 2
    assert info.code_digest.startswith("sha256:")
    assert snap.imported == {}  # json is stdlib

    # Outputs, execution counts, markdown, CRLF, trailing whitespace, list form: same code.
    noisy = [
        markdown("# Other title"),
        code(
            ["import json   \r\n", "x = 1\t\r\n", "\n"],
            outputs=[{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}],
            count=7,
        ),
        markdown("more prose"),
        code("y = x + 1\n\n"),
        code(""),
    ]
    noisy_nb = write_notebook(tmp_path / "b.ipynb", noisy)
    assert snapshot(notebook_path=noisy_nb).notebook.code_digest == info.code_digest  # type: ignore[union-attr]

    changed = write_notebook(tmp_path / "c.ipynb", [*base[:2], code("y = x + 2")])
    assert snapshot(notebook_path=changed).notebook.code_digest != info.code_digest  # type: ignore[union-attr]

    # Moving a cell boundary changes the code's identity too.
    merged = write_notebook(tmp_path / "d.ipynb", [code("import json\nx = 1\ny = x + 1")])
    assert snapshot(notebook_path=merged).notebook.code_digest != info.code_digest  # type: ignore[union-attr]

    # The kernel's history gives the same digest for the same code.
    history = snapshot(code_cells=["import json\nx = 1\n", "y = x + 1"]).notebook
    assert history is not None and history.source == "history" and history.path is None
    assert history.code_digest == info.code_digest


def test_notebook_imports_are_recorded(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "n.ipynb", [code("%load_ext nb2prod\nimport pytest"), code("def oops(:")])
    snap = snapshot(notebook_path=nb)
    assert snap.imported == {"pytest": metadata.version("pytest")}
    assert snap.notebook is not None and snap.notebook.unparsed_cells == 1


def test_code_digest_is_unambiguous() -> None:
    assert code_digest(["a", "b"]) != code_digest(["a\nb"])
    assert code_digest(["a", "b"]) != code_digest(["b", "a"])
    assert code_digest(["a", "", "  \n", "b"]) == code_digest(["a", "b"])
    assert code_digest(["a", "b"])[1] == 2


def test_missing_or_invalid_notebook_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ipynb"
    with pytest.raises(UsageError, match=re.escape(str(missing))):
        snapshot(notebook_path=missing)
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match=re.escape(str(bad))):
        snapshot(notebook_path=bad)
    wrong = tmp_path / "wrong.ipynb"
    wrong.write_text("[1, 2]")
    with pytest.raises(UsageError, match=re.escape(str(wrong))):
        snapshot(notebook_path=wrong)


# --------------------------------------------------------------------------- git


@pytest.mark.skipif(not HAVE_GIT, reason="git is not installed")
def test_git_info_in_a_repository(no_parent_repo: Path, tmp_path: Path) -> None:
    repo = no_parent_repo / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")

    fresh = snapshot(cwd=repo).git
    assert fresh == GitInfo(commit=None, branch="main", dirty=False, root=str(repo.resolve()))

    nb = write_notebook(repo / "train.ipynb", [code("x = 1")])
    git(repo, "add", "train.ipynb")
    git(repo, "commit", "-q", "-m", "first")
    head = git(repo, "rev-parse", "HEAD")

    # Git state comes from the notebook's folder, not the working directory.
    clean = snapshot(notebook_path=nb, cwd=tmp_path).git
    assert clean == GitInfo(commit=head, branch="main", dirty=False, root=str(repo.resolve()))

    write_notebook(nb, [code("x = 2")])
    assert snapshot(notebook_path=nb).git.dirty is True  # type: ignore[union-attr]

    git(repo, "checkout", "-q", "train.ipynb")
    (repo / "untracked.py").write_text("y = 1\n")
    assert snapshot(cwd=repo).git.dirty is True  # type: ignore[union-attr]
    (repo / "untracked.py").unlink()

    git(repo, "checkout", "-q", "--detach")
    detached = snapshot(cwd=repo).git
    assert detached is not None and detached.branch is None and detached.commit == head
    assert detached.dirty is False

    sub = repo / "sub"
    sub.mkdir()
    assert snapshot(cwd=sub).git.root == str(repo.resolve())  # type: ignore[union-attr]


def test_git_info_none_outside_a_repository(no_parent_repo: Path) -> None:
    assert snapshot(cwd=no_parent_repo).git is None
    assert snapshot(cwd=no_parent_repo / "does-not-exist").git is None


def test_git_info_none_without_git(no_parent_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(no_parent_repo))  # no git executable on PATH
    assert snapshot(cwd=Path(__file__).parent).git is None


def test_snapshot_time_measured() -> None:
    start = time.perf_counter()
    snapshot(imported_modules={"pytest"})
    assert time.perf_counter() - start < 0.5
