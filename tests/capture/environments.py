"""Fake distributions, notebooks and git repositories for the environment capture tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from nb2prod.capture.environment import EnvironmentSnapshot

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
