"""Closing the loop: feedback, monitoring, retraining, promotion and rollback of a served model.

Every function here returns a dataclass and prints nothing; the CLI and the magics show them.

* :mod:`~nb2prod.lifecycle.served` — the newest Bento of a model: its prediction store,
  its manifest, the versions it carries, and its drift and quality report (``monitor``).
* :mod:`~nb2prod.lifecycle.switch` — ``promote``, ``rollback`` and ``history``: the registry
  alias is the source of truth, the service follows the control table of its store.
* :mod:`~nb2prod.lifecycle.feedback` — ground truth in bulk from a file.
* :mod:`~nb2prod.lifecycle.retrain` — re-run the notebook, score challenger and champion
  on the same rows, move the alias only when the challenger is better by the margin.
"""

from __future__ import annotations

from nb2prod.lifecycle.feedback import FeedbackImport, import_feedback
from nb2prod.lifecycle.retrain import Decision, load_registered, retrain, score
from nb2prod.lifecycle.served import carried_versions, monitor, served_manifest, store_location
from nb2prod.lifecycle.switch import Switch, history, promote, rollback
from nb2prod.metrics import HIGHER_IS_BETTER

__all__ = [
    "HIGHER_IS_BETTER",
    "Decision",
    "FeedbackImport",
    "Switch",
    "carried_versions",
    "history",
    "import_feedback",
    "load_registered",
    "monitor",
    "promote",
    "retrain",
    "rollback",
    "score",
    "served_manifest",
    "store_location",
]
