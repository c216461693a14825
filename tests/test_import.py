"""`import nb2prod` and `%load_ext nb2prod` stay light (timings are in bench/bench_import.py)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("mlflow", "bentoml", "papermill", "sklearn", "pandas", "skops", "nbclient")


def _loaded(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_nb2prod_pulls_in_nothing_heavy() -> None:
    assert _loaded("import nb2prod") == []


def test_load_ext_pulls_in_nothing_heavy() -> None:
    code = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'nb2prod')\n"
        "assert 'nb2prod' in ip.magics_manager.magics['line']"
    )
    assert _loaded(code) == []


def test_unload_removes_magic_and_hook() -> None:
    code = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "before = len(ip.events.callbacks['post_run_cell'])\n"
        "ip.run_line_magic('load_ext', 'nb2prod')\n"
        "ip.run_line_magic('unload_ext', 'nb2prod')\n"
        "assert 'nb2prod' not in ip.magics_manager.magics['line']\n"
        "assert len(ip.events.callbacks['post_run_cell']) == before\n"
    )
    assert _loaded(code) == []
