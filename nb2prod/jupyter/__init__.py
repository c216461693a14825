"""nb2prod's Jupyter Server extension: the REST API of the JupyterLab panel under ``/nb2prod/api/``.

Installed with nb2prod and enabled by ``jupyter-config/jupyter_server_config.d/nb2prod.json``
(shipped in the wheel), so ``jupyter lab`` in a project serves it. Loading it imports
nothing heavy: MLflow and BentoML are imported by the first request that needs them.

The project home is ``NB2PROD_HOME`` or the nearest marked parent of the server's root
directory (:func:`nb2prod.config.find_home`); the panel never reads a file outside it.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

__all__ = ["_jupyter_labextension_paths", "_jupyter_server_extension_points"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "nb2prod.jupyter"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "nb2prod-lab"}]


def _warm() -> None:
    """Import MLflow and papermill in the background: the panel's first request does not wait for them."""
    with contextlib.suppress(Exception):
        import mlflow.tracking  # noqa: F401
        import papermill  # noqa: F401  (the parameters cell is read through it)


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from nb2prod.config import find_home, load_settings
    from nb2prod.jupyter.actions import ActionManager
    from nb2prod.jupyter.handlers import handlers

    root_dir = Path(serverapp.root_dir).expanduser().resolve()
    settings = load_settings(find_home(root_dir))
    web_app = serverapp.web_app
    manager = ActionManager(settings, log=serverapp.log)
    web_app.settings["nb2prod_settings"] = settings
    web_app.settings["nb2prod_root_dir"] = str(root_dir)
    web_app.settings["nb2prod_actions"] = manager
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
    threading.Thread(target=_warm, name="nb2prod-warm", daemon=True).start()
    serverapp.log.info(
        "nb2prod: REST API at %snb2prod/api/ for the project %s", web_app.settings["base_url"], settings.home
    )
