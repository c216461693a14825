"""Git state of the notebook's folder: real git repositories."""

from __future__ import annotations

from pathlib import Path

import pytest

from nb2prod.capture.environment import snapshot
from nb2prod.capture.git import GitInfo
from tests.capture.environments import HAVE_GIT, code, git, write_notebook


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
