"""Batch scoring: the service's model, contract and monitoring for files (``nb2prod score``).

:func:`score` is the whole command; :mod:`.source` reads the input in chunks, :mod:`.model`
loads the verified model (registry or Bento), :mod:`.score` checks and scores chunks with the
service's contract (:mod:`nb2prod.serving.contract`), :mod:`.log` logs them into the
prediction store, :mod:`.dask` runs the parts on a Dask cluster.
"""

from __future__ import annotations

from nb2prod.batch.model import ScoreError
from nb2prod.batch.score import ScoreResult, score

__all__ = ["ScoreError", "ScoreResult", "score"]
