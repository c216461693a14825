"""nb2prod: from a Jupyter notebook to a production model service.

In a notebook::

    %load_ext nb2prod
    %nb2prod start churn
    %nb2prod data train --role train --target churned
    %nb2prod model clf --name churn

From Python, the same functions: ``nb2prod.start``, ``nb2prod.data``,
``nb2prod.model``, ``nb2prod.status``, ``nb2prod.end``, ``nb2prod.score``, ``nb2prod.monitor``.

``import nb2prod`` and ``%load_ext nb2prod`` stay light: mlflow, bentoml,
papermill, scikit-learn and pandas are imported where they are used.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from nb2prod._version import __version__
from nb2prod.exceptions import Nb2ProdError
from nb2prod.session import data, end, model, start, status

if TYPE_CHECKING:
    from pathlib import Path

    from nb2prod.batch import ScoreResult
    from nb2prod.monitoring import MonitorReport

__all__ = [
    "Nb2ProdError",
    "__version__",
    "data",
    "end",
    "load_ipython_extension",
    "model",
    "monitor",
    "score",
    "start",
    "status",
]

_magics: Any = None


def monitor(name: str, *, since: str | None = None, until: str | None = None) -> MonitorReport:
    """The drift and quality report of the service of ``name`` (as ``nb2prod monitor NAME``)."""
    from nb2prod import lifecycle

    return lifecycle.monitor(name, since=since, until=until)


def score(ref: str, input: str | Path, output: str | Path, **options: Any) -> ScoreResult:
    """Batch-score ``input`` with ``ref`` (``NAME[@alias|/version]``) into ``output``, under the
    service's contract (as ``nb2prod score``); ``options`` are :func:`nb2prod.batch.score`'s."""
    from nb2prod.batch import score as batch_score

    return batch_score(ref, input, output, **options)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nb2prod``: register ``%nb2prod`` and the cell hook; start nothing heavy."""
    global _magics
    from nb2prod.magics import Nb2ProdMagics

    if _magics is not None:
        unload_ipython_extension(ipython)
    _magics = Nb2ProdMagics(ipython)
    ipython.register_magics(_magics)
    ipython.events.register("post_run_cell", _magics.post_run_cell)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nb2prod``: remove the magic and the hook."""
    global _magics
    if _magics is None:
        return
    with contextlib.suppress(ValueError):
        ipython.events.unregister("post_run_cell", _magics.post_run_cell)
    ipython.magics_manager.magics["line"].pop("nb2prod", None)
    _magics = None
