"""The capture session of one notebook: the pure core behind ``%nb2prod``.

One :class:`Session` per kernel, bound to one MLflow run. Each public function
(``start``, ``data``, ``model``, ``status``, ``end``) is what the magic of the same name
calls, and what a script calls without IPython. They return dataclasses, never text.

| module | owns |
| --- | --- |
| :mod:`~nb2prod.session.state` | the Session, the open one (``current``/``active``), the shell helpers |
| :mod:`~nb2prod.session.runs` | ``start``, ``status``, ``end``: the run; its parameters (``sync_parameters``) |
| :mod:`~nb2prod.session.datasets` | ``data``: dataset records, holdout rows |
| :mod:`~nb2prod.session.models` | ``model``: logging, round trip, registration, metrics |
| :mod:`~nb2prod.session.gitignore` | the project's ``.gitignore`` for nb2prod's local state |
| :mod:`~nb2prod.session.quiet` | silencing library chatter on the first start |
"""

from __future__ import annotations

from typing import Any

from nb2prod.session.datasets import HOLDOUT_ROLES, ROLES, data
from nb2prod.session.models import ModelRecord, model
from nb2prod.session.runs import StartResult, StatusReport, end, start, status, sync_parameters
from nb2prod.session.state import Session, active, current, note_not_recorded, tracking_call

__all__ = [
    "HOLDOUT_ROLES",
    "ROLES",
    "ModelRecord",
    "Session",
    "StartResult",
    "StatusReport",
    "active",
    "current",
    "data",
    "end",
    "model",
    "note_not_recorded",
    "start",
    "status",
    "sync_parameters",
    "tracking_call",
]


def __getattr__(name: str) -> Any:
    # ``session._current`` was a module global before the split; it lives in ``state`` now and is
    # read live from there (a re-exported global would be a stale copy). Prefer ``active()``.
    if name == "_current":
        from nb2prod.session import state

        return state._current
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
