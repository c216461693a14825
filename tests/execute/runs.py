"""Helpers of the re-execution tests: the test notebooks, the CLI in a subprocess, MLflow reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
"""Test notebooks (some are papermill's own)."""


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2prod", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ,
    )


def artifacts(client: Any, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found |= artifacts(client, run_id, item.path)
        else:
            found.add(item.path)
    return found


def runs(client: Any) -> list[Any]:
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids)


def fake_baseline(client: Any, nb: Path, change: dict[str, str]) -> str:
    """A finished run whose environment.json differs from this one in ``change``."""
    from nb2prod.capture import environment

    snap = environment.snapshot(notebook_path=nb).to_dict()
    snap["distributions"].update(change)
    snap["imported"].update({k: v for k, v in change.items() if k in snap["imported"]})
    exp = client.create_experiment("baseline")
    run = client.create_run(exp, tags={"nb2prod.notebook": str(nb)})
    client.log_text(run.info.run_id, json.dumps(snap), "environment.json")
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)
