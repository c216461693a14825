"""Closing the loop: feedback, monitoring, retraining, promotion and rollback of a served model.

Every function here returns a dataclass and prints nothing; the CLI and the magics show them.

* :mod:`~nb2prod.lifecycle.served` — the newest Bento of a model: its prediction store,
  its manifest, the versions it carries, and its drift and quality report (``monitor``).
* :mod:`~nb2prod.lifecycle.switch` — ``promote``, ``rollback`` and ``history``: the registry
  alias is the source of truth, the service follows the control table of its store.
* :mod:`~nb2prod.lifecycle.feedback` — ground truth in bulk from a file.
* :mod:`~nb2prod.lifecycle.retrain` — re-run the notebook, score challenger and champion
  on the same rows, move the alias only when the challenger is better by the margin.
* :mod:`~nb2prod.lifecycle.shadow` — a challenger scores the answered rows off the request
  path; promote it only when it beat the champion on the same labelled rows.
* :mod:`~nb2prod.lifecycle.trace` — from one prediction back to its Bento, version, run,
  notebook, data and environment, every hash checked.
"""

from __future__ import annotations

from nb2prod.lifecycle.feedback import FeedbackImport, import_feedback
from nb2prod.lifecycle.retrain import Decision, load_registered, retrain, score
from nb2prod.lifecycle.served import carried_versions, monitor, served_manifest, store_location
from nb2prod.lifecycle.shadow import ShadowDecision, ShadowStart, decide_shadow, start_shadow
from nb2prod.lifecycle.switch import Switch, history, promote, rollback
from nb2prod.lifecycle.trace import Link, Trace, trace
from nb2prod.metrics import HIGHER_IS_BETTER

__all__ = [
    "HIGHER_IS_BETTER",
    "Decision",
    "FeedbackImport",
    "Link",
    "ShadowDecision",
    "ShadowStart",
    "Switch",
    "Trace",
    "carried_versions",
    "decide_shadow",
    "history",
    "import_feedback",
    "load_registered",
    "monitor",
    "promote",
    "retrain",
    "rollback",
    "score",
    "served_manifest",
    "start_shadow",
    "store_location",
    "trace",
]
