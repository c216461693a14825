"""A built Bento whose manifest or service source was edited serves nothing, and says which file.

The Bento is a copy of the shared ``TUMOR`` export in another BentoML home; each test edits
one file of its ``src/`` and starts ``bentoml serve`` on it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.captures import TUMOR, TUMOR_MODEL
from tests.served import CapturedProject, free_port, serving

pytestmark = pytest.mark.slow

CAPTURE = TUMOR
MODEL = TUMOR_MODEL


def _copy(exported: Any, tmp_path: Path) -> tuple[Path, Path]:
    home = tmp_path / "bentoml"
    shutil.copytree(
        exported.bentoml_home, home, ignore=shutil.ignore_patterns(".staging-*", ".nb2prod-locks")
    )
    name, version = exported.tag.split(":")
    return home, home / "bentos" / name / version / "src"


def test_the_built_source_verifies_and_an_edit_is_named_from_outside(exported: Any, tmp_path: Path) -> None:
    from nb2prod.exceptions import ExportError
    from nb2prod.export.bento_store import verify_built_source

    home, src = _copy(exported, tmp_path)
    verify_built_source(home, exported.tag)
    service = src / "service.py"
    service.write_text(service.read_text() + "\n# edited after the build\n")
    with pytest.raises(
        ExportError, match=r"was changed after it was built: file service\.py of the Bento source"
    ):
        verify_built_source(home, exported.tag)


def test_a_column_removed_from_the_manifest_keeps_the_service_not_ready(
    captured_project: CapturedProject, exported: Any, tmp_path: Path
) -> None:
    from nb2prod.export import serve_command

    home, src = _copy(exported, tmp_path)
    manifest_path = src / "nb2prod_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    removed = manifest["schema"].pop()["name"]
    manifest_path.write_text(json.dumps(manifest, indent=2))
    cmd = serve_command(MODEL, port=free_port(), settings=captured_project.settings, tag=exported.tag)
    env = dict(cmd.env, NB2PROD_PREDICTION_STORE=str(tmp_path / "p.db"), BENTOML_HOME=str(home))
    with serving(cmd.argv, env, tmp_path / "serve.log", ready=False) as srv:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "NOT SERVED" not in srv.log_text():
            assert srv.get("/readyz", timeout=2)[0] != 200
            time.sleep(0.3)
        log = srv.log_text()
        assert "the Bento's source failed its integrity check" in log
        assert "file nb2prod_manifest.json of the Bento source differs from what was built" in log
        assert srv.get("/readyz", timeout=2)[0] == 503
        row = {k: v for k, v in captured_project.data["expected"]["rows"][0].items() if k != removed}
        status, body, _ = srv.post("/predict", json.dumps(row).encode())
        assert status == 503, body  # never the 500 a wrong contract gave
        meta = json.loads(srv.get("/metadata")[1])
        assert meta["ready"] is False and "nb2prod_manifest.json" in meta["failure"]
