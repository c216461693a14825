"""The wheel ships the prebuilt panel and enables the server extension: ``pip install nb2prod``, no node.

The wheel is built from this tree (after ``make setup`` built the panel) and installed with
``--no-deps`` into a fresh venv; that venv reaches its dependencies through a path entry to
the test venv's site-packages (listed after its own, so ``nb2prod`` is the wheel's).
JupyterLab's and Jupyter Server's own listings, run in the fresh venv, must show both.
"""

from __future__ import annotations

import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jupyter.servers import LABEXTENSION, REPO, require

pytestmark = pytest.mark.slow


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _run(*argv: str | Path, cwd: Path | None = None) -> str:
    # not from the repository: `python -c` would import the source tree in the cwd
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=600, cwd=cwd or Path("/"), check=False
    )
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def test_wheel_installs_the_panel_and_enables_the_server_extension(tmp_path: Path) -> None:
    require((LABEXTENSION / "package.json").is_file(), "the panel is not built (make setup builds it)")
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", wheels, REPO)
    (wheel,) = wheels.glob("nb2prod-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--quiet", wheel)
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (purelib / "zz_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    # the package is the wheel's, with its data, entry points and console script
    where = _run(python, "-c", "import nb2prod, nb2prod.jupyter; print(nb2prod.__file__)")
    assert where.strip().startswith(str(venv)), where
    assert (purelib / "nb2prod" / "export" / "service.py.tmpl").is_file()
    engines = _run(
        python,
        "-c",
        "from importlib.metadata import entry_points; print(entry_points(group='papermill.engine'))",
    )
    assert "nb2prod.execute.engine:Nb2ProdEngine" in engines
    assert "Usage" in _run(venv / "bin" / "nb2prod", "--help")

    # the prebuilt panel and the enable file, where Jupyter looks in that venv
    share = venv / "share" / "jupyter" / "labextensions" / "nb2prod-lab"
    assert (share / "package.json").is_file()
    assert list((share / "static").glob("remoteEntry.*.js"))
    assert (venv / "etc" / "jupyter" / "jupyter_server_config.d" / "nb2prod.json").is_file()
    labextensions = _plain(
        _run(
            python,
            "-c",
            "from jupyterlab.labextensions import LabExtensionApp as A; A.launch_instance(argv=['list'])",
        )
    )
    assert f"{venv}/share/jupyter/labextensions\n        nb2prod-lab v0.1.0 enabled OK" in labextensions, (
        labextensions
    )
    server = _plain(
        _run(
            python,
            "-c",
            "from jupyter_server.extension.serverextension import ServerExtensionApp as A; A.launch_instance(argv=['list'])",
        )
    )
    assert f"Config dir: {venv}/etc/jupyter\n    nb2prod.jupyter enabled" in server, server
    assert "nb2prod.jupyter  OK" in server, server
